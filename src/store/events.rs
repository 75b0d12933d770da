//! Looking events up by id or code.

use super::DbResult;
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
    .db("looking up the event")
}

/// Like [`find`], but an unknown event is an error that names what was asked for.
pub async fn require(db: impl PgExecutor<'_>, id_or_code: &str) -> Result<EventInfo> {
    find(db, id_or_code)
        .await?
        .with_context(|| format!("no event with id or code {id_or_code:?}"))
}

/// Resolves an optional `--event` flag to an event id.
pub async fn resolve(db: impl PgExecutor<'_>, id_or_code: Option<&str>) -> Result<Option<Uuid>> {
    match id_or_code {
        Some(e) => Ok(Some(require(db, e).await?.id)),
        None => Ok(None),
    }
}
