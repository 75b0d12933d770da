//! `matchmaker admin-start-matching`: enqueue a whole event.

use crate::config::{parse_duration_min_1s, DbArgs, WorkerArgs};
use crate::store::{events, jobs, queue};
use crate::worker;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub db: DbArgs,
    /// The event, by id or code.
    #[arg(long, env = "MATCHMAKER_EVENT")]
    pub event: String,
    /// Queue priority, 0 (lowest) to 3 (highest; what new attendees get).
    #[arg(long, env = "MATCHMAKER_PRIORITY", default_value_t = 1, value_parser = clap::value_parser!(i16).range(0..=3))]
    pub priority: i16,
    /// Re-enqueue even when the event is completed and unchanged.
    #[arg(long, env = "MATCHMAKER_FORCE", value_parser = clap::builder::BoolishValueParser::new())]
    pub force: bool,
    /// Drain the event in this process, with a progress bar.
    #[arg(long, env = "MATCHMAKER_WAIT", value_parser = clap::builder::BoolishValueParser::new())]
    pub wait: bool,
    /// With --wait: give up waiting after this long (the queue keeps the rest).
    #[arg(long, env = "MATCHMAKER_WAIT_MAX_RUNTIME", value_parser = parse_duration_min_1s)]
    pub max_runtime: Option<Duration>,
    #[command(flatten)]
    pub worker: WorkerArgs,
    #[command(flatten)]
    pub embeddings: crate::config::EmbeddingArgs,
}

pub async fn run(args: Args) -> Result<()> {
    let embedder = super::embedder(&args.embeddings)?;
    let (connect, pool) = super::connect(&args.db, 4).await?;
    let event = events::require(&pool, &args.event).await?;
    let label = format!("{} ({})", event.code, event.id);

    let fingerprint = jobs::fingerprint(&pool, event.id).await?;
    let job = jobs::get(&pool, event.id).await?;
    let same_inputs = |j: &jobs::Job| j.input_fingerprint.as_deref() == Some(fingerprint.as_str());
    let has_work = queue::event_has_work(&pool, event.id).await?;
    let total = match &job {
        Some(j) if !args.force && !has_work && j.status == "completed" && same_inputs(j) => {
            println!(
                "event {label} is already matched and unchanged since its last start; nothing enqueued \
                 (use --force to re-match)"
            );
            return Ok(());
        }
        Some(j) if !args.force && has_work && j.status == "running" && same_inputs(j) => {
            // An interrupted start (Ctrl-C, a crash): its rows are still queued.
            println!(
                "event {label} has a running job ({} processed, {} failed so far); resuming it rather than \
                 starting over (use --force to start over)",
                j.processed, j.failed
            );
            i64::from(j.enqueued)
        }
        _ => {
            let mut tx = pool.begin().await.context("starting the enqueue")?;
            let n = queue::enqueue_event(&mut *tx, event.id, "admin", args.priority).await?;
            jobs::reset(&mut *tx, event.id, n, &fingerprint).await?;
            if n == 0 {
                jobs::record_batch(&mut *tx, event.id, &[], "", 0, 0, None).await?;
            }
            tx.commit().await.context("committing the enqueue")?;
            // The queue may have grown a hundredfold: without fresh
            // statistics every claim would sort the whole backlog.
            if n > 0 {
                match queue::may_maintain(&pool).await {
                    Ok(true) => {
                        if let Err(e) = queue::analyze(&pool).await {
                            tracing::warn!(error = %crate::telemetry::error_chain(&e), "could not analyze the queue (autovacuum will)");
                        }
                    }
                    Ok(false) => tracing::info!(
                        "not analyzing matchmaking_queue after the enqueue: this role does not own it (autovacuum will)"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %crate::telemetry::error_chain(&e), "could not analyze the queue (autovacuum will)")
                    }
                }
            }
            println!(
                "enqueued {n} active attendees of event {label} at priority {} or higher (algorithm {}, K={})",
                args.priority, event.algorithm, event.matches_per_user
            );
            n
        }
    };
    if !args.wait || total == 0 {
        return Ok(());
    }
    if crate::store::ops::paused_at(&pool, event.id).await?.is_some() {
        anyhow::bail!(
            "{} is paused: its rows are queued but not claimed; `matchmaker resume --event {}` first, then wait",
            event.code,
            event.code
        );
    }

    let mut opts = args.worker.options("admin-start-matching");
    opts.session = args.db.limits();
    opts.embedder = embedder;
    opts.max_runtime = args.max_runtime;
    opts.event = Some(event.id);
    opts.until_event_done = true;
    let shutdown = super::shutdown_on_signals();
    let bar = ProgressBar::new(total as u64).with_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} attendees ({per_sec}, ETA {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let drain = tokio::spawn({
        let (pool, connect) = (pool.clone(), connect.clone());
        async move { worker::run(&pool, &connect, opts, shutdown).await }
    });
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    while !drain.is_finished() {
        ticker.tick().await;
        if let Ok(Some(j)) = jobs::get(&pool, event.id).await {
            bar.set_position((j.processed + j.failed).max(0) as u64);
        }
    }
    let summary = drain.await.context("the drain task panicked")??;
    bar.finish_and_clear();
    let job = jobs::get(&pool, event.id).await?;
    match job {
        Some(j) => println!(
            "event {label}: {} — {} processed, {} failed in {:.1}s ({})",
            j.status,
            j.processed,
            j.failed,
            summary.elapsed_ms as f64 / 1000.0,
            summary.stop_reason.as_str()
        ),
        None => println!("event {label}: {}", summary.stop_reason.as_str()),
    }
    let retrying = queue::retrying(&pool, event.id).await?;
    if retrying > 0 {
        println!(
            "{retrying} attendee(s) are waiting to retry after an error; `matchmaker run` (cron) or the daemon \
             retries them, and `matchmaker status --event {}` shows why",
            event.code
        );
    }
    Ok(())
}
