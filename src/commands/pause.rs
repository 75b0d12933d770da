//! `matchmaker pause` / `resume`: hold an event still (a bulk import, a data
//! fix) and let it go again. The triggers keep enqueueing while it is
//! paused; resuming drains as usual, and the lists are exact again once the
//! queue is drained, as after any burst of changes.

use crate::config::DbArgs;
use crate::store::{events, ops};
use anyhow::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub db: DbArgs,
    /// The event (id or code).
    #[arg(long, env = "MATCHMAKER_EVENT")]
    pub event: String,
}

/// `pause`: waits for a batch of the event in progress, then no batch starts.
pub async fn pause(args: Args) -> Result<()> {
    let (_, pool) = super::connect(&args.db, 1).await?;
    let e = events::require(&pool, &args.event).await?;
    if ops::pause(&pool, e.id).await? {
        println!(
            "paused {}: its rows stay queued and are not claimed; `matchmaker resume --event {}` lets them go",
            e.code, e.code
        );
    } else {
        println!("{} was already paused", e.code);
    }
    Ok(())
}

/// `resume`: the event's rows are claimed again (daemons are woken at once).
pub async fn resume(args: Args) -> Result<()> {
    let (_, pool) = super::connect(&args.db, 1).await?;
    let e = events::require(&pool, &args.event).await?;
    if ops::resume(&pool, e.id).await? {
        println!("resumed {}: its queued rows are claimed again", e.code);
    } else {
        println!("{} was not paused", e.code);
    }
    Ok(())
}
