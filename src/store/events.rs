//! Looking events up by id or code.

use anyhow::{Context, Result};
use sqlx::PgExecutor;
use uuid::Uuid;

/// An event as operators see it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventInfo {
    pub id: Uuid,
    pub code: String,
    pub name: String,
    pub algorithm: String,
    pub matches_per_user: i16,
}

/// Finds an event by its id or its code. `None` when no event matches.
pub async fn find(db: impl PgExecutor<'_>, id_or_code: &str) -> Result<Option<EventInfo>> {
    let id = Uuid::parse_str(id_or_code.trim()).ok();
    sqlx::query_as::<_, EventInfo>(
        "SELECT id, code, name, algorithm, matches_per_user FROM events \
         WHERE ($1::uuid IS NOT NULL AND id = $1) OR code = $2 \
         ORDER BY (id = $1) DESC NULLS LAST LIMIT 1",
    )
    .bind(id)
    .bind(id_or_code.trim())
    .fetch_optional(db)
    .await
    .context("looking up the event")
}
