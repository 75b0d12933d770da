//! `matchmaker run`: one cron invocation.

use crate::config::{parse_duration_min_1s, DbArgs, WorkerArgs};
use crate::store::events;
use crate::worker;
use anyhow::Result;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub worker: WorkerArgs,
    #[command(flatten)]
    pub embeddings: crate::config::EmbeddingArgs,
    /// Stop claiming in time to return within this.
    #[arg(long, env = "MATCHMAKER_MAX_RUNTIME", default_value = "45s", value_parser = parse_duration_min_1s)]
    pub max_runtime: Duration,
    /// Only process this event (id or code).
    #[arg(long, env = "MATCHMAKER_EVENT")]
    pub event: Option<String>,
    /// Print the run summary as JSON on stdout.
    #[arg(long, env = "MATCHMAKER_JSON", value_parser = clap::builder::BoolishValueParser::new())]
    pub json: bool,
}

pub async fn run(args: Args) -> Result<()> {
    let embedder = super::embedder(&args.embeddings)?;
    let (connect, pool) = super::connect(&args.db, 4).await?;
    let event = events::resolve(&pool, args.event.as_deref()).await?;
    let mut opts = args.worker.options("run");
    opts.session = args.db.limits();
    opts.embedder = embedder;
    opts.max_runtime = Some(args.max_runtime);
    opts.event = event;
    let summary = worker::run(&pool, &connect, opts, super::shutdown_on_signals()).await?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        let t = &summary.totals;
        println!(
            "run {}: {} after {:.1}s; {} batches, {} claimed, {} processed, {} failed, {} released",
            summary.run_id,
            summary.stop_reason.as_str(),
            summary.elapsed_ms as f64 / 1000.0,
            t.batches,
            t.claimed,
            t.processed,
            t.failed,
            t.released
        );
    }
    Ok(())
}
