//! `matchmaker run`: one cron invocation.

use crate::config::{parse_duration_min_1s, DbArgs, WorkerArgs};
use crate::metrics::{textfile, Metrics};
use crate::store::events;
use crate::worker;
use anyhow::Result;
use std::sync::Arc;
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
    /// At exit, write the run's metrics to this file in the Prometheus text
    /// format, atomically (for node_exporter's textfile collector: a path
    /// ending in .prom in its --collector.textfile.directory).
    #[arg(long, env = "MATCHMAKER_METRICS_FILE")]
    pub metrics_file: Option<std::path::PathBuf>,
    /// Print the run summary as JSON on stdout.
    #[arg(long, env = "MATCHMAKER_JSON", value_parser = clap::builder::BoolishValueParser::new())]
    pub json: bool,
}

pub async fn run(args: Args) -> Result<()> {
    let Some(path) = args.metrics_file.clone() else {
        return run_worker(args, None).await;
    };
    // Refuse a path that cannot be written before doing any work.
    textfile::check_dir(&path)?;
    let metrics = Arc::new(Metrics::new());
    let started = std::time::Instant::now();
    let result = run_worker(args, Some(metrics.clone())).await;
    if result.is_err() {
        metrics.set_last_run(false, started.elapsed());
    }
    // The file is written whatever happened: a failed run is what an alert
    // on matchmaker_last_run_success wants to see.
    let written = textfile::write(&path, &metrics.encode());
    match (result, written) {
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => Err(e),
        (Ok(()), Ok(())) => Ok(()),
    }
}

async fn run_worker(args: Args, metrics: Option<Arc<Metrics>>) -> Result<()> {
    let embedder = super::embedder(&args.embeddings)?;
    let (connect, pool) = super::connect(&args.db, 4).await?;
    let event = events::resolve(&pool, args.event.as_deref()).await?;
    let mut opts = args.worker.options("run");
    opts.session = args.db.limits();
    opts.embedder = embedder;
    opts.max_runtime = Some(args.max_runtime);
    opts.event = event;
    opts.metrics = metrics.clone();
    let summary = worker::run(&pool, &connect, opts, super::shutdown_on_signals()).await?;
    if let Some(m) = &metrics {
        crate::metrics::server::refresh_queue_gauges(m, &pool).await;
    }
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
