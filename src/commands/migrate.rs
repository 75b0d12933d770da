//! `matchmaker migrate`: applies the embedded migrations.

use crate::config::DbArgs;
use anyhow::{Context, Result};

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub db: DbArgs,
}

pub async fn run(args: Args) -> Result<()> {
    let (_, pool) = super::connect(&args.db, 2).await?;
    let count = || async {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&pool)
            .await
            .context("reading the migration history")?;
        if !exists {
            return Ok(0);
        }
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&pool)
            .await
            .context("reading the migration history")
    };
    let before = count().await?;
    MIGRATOR.run(&pool).await.context("applying migrations")?;
    let after = count().await?;
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    match after - before {
        0 => println!("schema up to date at version {latest}; nothing applied"),
        n => println!("applied {n} migration(s); schema at version {latest}"),
    }
    Ok(())
}
