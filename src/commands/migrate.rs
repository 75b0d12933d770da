//! `matchmaker migrate`: applies the embedded migrations.

use crate::cli::DbArgs;
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
    MIGRATOR.run(&pool).await.context("applying migrations")?;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .context("reading the migration history")?;
    println!("migrations up to date ({applied} applied)");
    Ok(())
}
