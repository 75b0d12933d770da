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

/// How the database's migration history compares with this binary's
/// migrations: what `/readyz` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaState {
    /// Every migration of this binary is applied, and none newer.
    Current,
    /// These of this binary's migrations are not applied (oldest first);
    /// all of them when the history is missing.
    Behind(Vec<i64>),
    /// The database has a migration this binary does not know (a newer
    /// release migrated it).
    Ahead(i64),
}

/// Compares the applied migrations with [`MIGRATOR`], version by version,
/// so a migration skipped in the middle counts as well as a missing newest.
pub async fn state(pool: &PgPool) -> Result<SchemaState> {
    let applied: Vec<i64> = if has_history(pool).await? {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await
            .db("reading the migration history")?
    } else {
        Vec::new()
    };
    Ok(compare(&applied, MIGRATOR.iter().map(|m| m.version)))
}

/// [`state`] on plain version lists.
fn compare(applied: &[i64], known: impl Iterator<Item = i64>) -> SchemaState {
    let known: std::collections::BTreeSet<i64> = known.collect();
    if let Some(&v) = applied.iter().find(|v| !known.contains(v)) {
        return SchemaState::Ahead(v);
    }
    let applied: std::collections::HashSet<i64> = applied.iter().copied().collect();
    let missing: Vec<i64> = known.into_iter().filter(|v| !applied.contains(v)).collect();
    if missing.is_empty() {
        SchemaState::Current
    } else {
        SchemaState::Behind(missing)
    }
}

/// Whether sqlx's migration history table exists (not before the first `migrate`).
async fn has_history(pool: &PgPool) -> Result<bool> {
    sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await
        .db("reading the migration history")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_counts() {
        let known = || [1, 2, 3].into_iter();
        assert_eq!(compare(&[1, 2, 3], known()), SchemaState::Current);
        assert_eq!(compare(&[], known()), SchemaState::Behind(vec![1, 2, 3]));
        assert_eq!(
            compare(&[1, 3], known()),
            SchemaState::Behind(vec![2]),
            "a gap in the middle"
        );
        assert_eq!(compare(&[1, 2], known()), SchemaState::Behind(vec![3]));
        assert_eq!(compare(&[1, 2, 3, 4], known()), SchemaState::Ahead(4));
    }
}
