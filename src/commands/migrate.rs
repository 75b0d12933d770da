//! `matchmaker migrate`: applies the embedded migrations.

use crate::config::DbArgs;
use crate::store::schema;
use anyhow::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub db: DbArgs,
}

pub async fn run(args: Args) -> Result<()> {
    let (_, pool) = super::connect(&args.db, 2).await?;
    let latest = schema::latest_version();
    match schema::migrate(&pool).await? {
        0 => println!("schema up to date at version {latest}; nothing applied"),
        n => println!("applied {n} migration(s); schema at version {latest}"),
    }
    Ok(())
}
