//! The schema: the embedded migrations and what `migrate` and the daemon ask
//! of it.

use super::DbResult;
use anyhow::{Context, Result};
use sqlx::PgPool;

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The newest migration this binary carries.
pub fn latest_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Migrations recorded as applied (0 before the first `migrate`).
pub async fn applied(pool: &PgPool) -> Result<i64> {
    if !has_history(pool).await? {
        return Ok(0);
    }
    sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .db("reading the migration history")
}

/// Applies every migration not applied yet; returns how many it applied.
pub async fn migrate(pool: &PgPool) -> Result<i64> {
    let before = applied(pool).await?;
    MIGRATOR.run(pool).await.context("applying migrations")?;
    Ok(applied(pool).await? - before)
}

/// Fails (with [`super::StoreError::SchemaMissing`]) unless the worker's
/// tables exist.
pub async fn check(pool: &PgPool) -> Result<()> {
    sqlx::query("SELECT 1 FROM matchmaking_queue LIMIT 0")
        .execute(pool)
        .await
        .db("checking the schema")?;
    Ok(())
}

/// The newest migration recorded as applied (0 before the first `migrate`):
/// what `/readyz` compares with [`latest_version`].
pub async fn newest_applied(pool: &PgPool) -> Result<i64> {
    if !has_history(pool).await? {
        return Ok(0);
    }
    let v: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .db("reading the migration history")?;
    Ok(v.unwrap_or(0))
}

/// Whether sqlx's migration history table exists (not before the first `migrate`).
async fn has_history(pool: &PgPool) -> Result<bool> {
    sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await
        .db("reading the migration history")
}
