//! `matchmaker retry-failed`: failed rows back to pending, attempts reset
//! (after the data that failed them was fixed).

use crate::config::DbArgs;
use crate::store::{events, ops, StoreError};
use anyhow::Result;
use uuid::Uuid;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub db: DbArgs,
    /// The event (id or code).
    #[arg(long, env = "MATCHMAKER_EVENT")]
    pub event: String,
    /// Only this attendee's rows.
    #[arg(long)]
    pub user: Option<Uuid>,
    /// Print what was done as JSON.
    #[arg(long, env = "MATCHMAKER_JSON", value_parser = clap::builder::BoolishValueParser::new())]
    pub json: bool,
}

pub async fn run(args: Args) -> Result<()> {
    let (_, pool) = super::connect(&args.db, 1).await?;
    let e = events::require(&pool, &args.event).await?;
    // A trigger enqueueing the same attendee at the same instant makes the
    // transaction fail with a unique violation and change nothing; the
    // second try sees that row.
    let mut tries = 0;
    let r = loop {
        tries += 1;
        match ops::retry_failed(&pool, e.id, args.user).await {
            Ok(r) => break r,
            Err(err) if tries < 3 && StoreError::is_unique_violation(&err) => continue,
            Err(err) => return Err(err),
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    if r.requeued.is_empty() && r.superseded == 0 {
        println!("{}: no failed rows{}", e.code, who(args.user));
        return Ok(());
    }
    println!(
        "{}: {} attendee(s) back to pending with attempts reset{}",
        e.code,
        r.requeued.len(),
        who(args.user)
    );
    for u in &r.requeued {
        println!("  {u}");
    }
    if r.superseded > 0 {
        println!(
            "  and {} older or superseded failed row(s) closed (a pending row of the same attendee redoes the work)",
            r.superseded
        );
    }
    Ok(())
}

fn who(user: Option<Uuid>) -> String {
    user.map(|u| format!(" (attendee {u})")).unwrap_or_default()
}
