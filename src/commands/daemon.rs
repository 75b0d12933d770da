//! `matchmaker daemon`: drains on a cron schedule and at once when the
//! triggers announce new rows (LISTEN/NOTIFY); graceful on SIGTERM/SIGINT.
//!
//! tokio-cron-scheduler fires ticks; it does not guard against a slow drain
//! overlapping the next tick, does not wait for its spawned jobs on shutdown,
//! and drops job errors. So a tick here only *asks* for a drain (a message on
//! a channel), and this loop owns the single drain task: it starts one when
//! asked and none is running, remembers a request that arrives during a
//! drain, logs the drain's outcome, and waits for it on shutdown.

use crate::config::{parse_duration_min_1s, DbArgs, WorkerArgs};
use crate::metrics::{self, Metrics};
use crate::store::events;
use crate::telemetry::error_chain;
use crate::worker::{self, RunSummary, StopReason};
use anyhow::{Context, Result};
use sqlx::postgres::PgListener;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_cron_scheduler::{Job, JobScheduler};
use tracing::{info, warn};
use uuid::Uuid;

/// The channel the triggers notify (see `matchmaker_enqueue`).
pub const CHANNEL: &str = "matchmaking_queue";

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub worker: WorkerArgs,
    #[command(flatten)]
    pub embeddings: crate::config::EmbeddingArgs,
    /// When to drain even without notifications: six-field cron, seconds first, UTC.
    #[arg(long, env = "MATCHMAKER_SCHEDULE", default_value = "0 * * * * *", value_parser = parse_schedule)]
    pub schedule: String,
    /// Longest single drain; a longer backlog continues in the next drain at once.
    #[arg(long, env = "MATCHMAKER_MAX_RUNTIME", default_value = "45s", value_parser = parse_duration_min_1s)]
    pub max_runtime: Duration,
    /// Only process this event (id or code).
    #[arg(long, env = "MATCHMAKER_EVENT")]
    pub event: Option<String>,
    /// Serve /metrics, /healthz and /readyz on this address, e.g.
    /// 127.0.0.1:9187 (off by default).
    #[arg(long, env = "MATCHMAKER_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// /healthz answers 503 when a drain has made no progress, or every
    /// drain has failed, for this long (must exceed --max-runtime by 5s).
    #[arg(long, env = "MATCHMAKER_HEALTH_TIMEOUT", default_value = "2m", value_parser = parse_duration_min_1s)]
    pub health_timeout: Duration,
}

/// A connection that LISTENs for new queue rows.
async fn listen_on(pool: &sqlx::PgPool) -> Result<PgListener> {
    let mut listener = PgListener::connect_with(pool)
        .await
        .context("opening the LISTEN connection")?;
    listener.listen(CHANNEL).await.context("listening for new queue rows")?;
    Ok(listener)
}

/// Checks a cron schedule the way the scheduler will read it, so that a bad
/// one is a usage error.
fn parse_schedule(s: &str) -> Result<String, String> {
    let fields = s.split_whitespace().count();
    if !(6..=7).contains(&fields) {
        return Err(format!(
            "{s:?} has {fields} fields; write six (seconds first, UTC; an optional seventh is the year), \
             e.g. \"0 * * * * *\" for every minute"
        ));
    }
    Job::new_async(s, |_, _| Box::pin(async {}))
        .map(|_| s.to_string())
        .map_err(|_| format!("{s:?} is not a valid cron schedule (six fields, seconds first, e.g. \"0 * * * * *\")"))
}

pub async fn run(args: Args) -> Result<()> {
    if args.metrics_addr.is_some() && args.health_timeout < args.max_runtime + Duration::from_secs(5) {
        anyhow::bail!(
            "--health-timeout ({}) must exceed --max-runtime ({}) by at least 5s: a drain may legitimately run that long",
            humantime::format_duration(args.health_timeout),
            humantime::format_duration(args.max_runtime)
        );
    }
    let embedder = super::embedder(&args.embeddings)?;
    let (connect, pool) = super::connect(&args.db, 6).await?;
    let event: Option<Uuid> = events::resolve(&pool, args.event.as_deref()).await?;
    // Refuse to start (rather than warn every second) without the schema.
    crate::store::schema::check(&pool).await?;
    let (wake_tx, mut wake_rx) = mpsc::channel::<()>(1);
    let tick = wake_tx.clone();
    let job = Job::new_async(args.schedule.as_str(), move |_, _| {
        let tick = tick.clone();
        Box::pin(async move {
            // A full channel means a drain is already requested.
            let _ = tick.try_send(());
        })
    })
    .context("scheduling the drain")?;
    let mut scheduler = JobScheduler::new().await.context("starting the scheduler")?;
    scheduler.add(job).await.context("scheduling the drain")?;

    // LISTEN before the first drain: a row enqueued after the drain looked
    // at the queue still wakes us.
    let listener = listen_on(&pool).await?;
    scheduler.start().await.context("starting the scheduler")?;
    let shutdown = super::shutdown_on_signals();
    let metrics = args.metrics_addr.map(|_| Arc::new(Metrics::new()));
    let server = match (args.metrics_addr, &metrics) {
        (Some(addr), Some(m)) => {
            let (_, task) =
                metrics::server::start(addr, m.clone(), pool.clone(), args.health_timeout, shutdown.clone()).await?;
            Some(task)
        }
        _ => None,
    };
    let filter = event.map(|e| e.to_string()).unwrap_or_else(|| "all".into());
    info!(schedule = %args.schedule, event = %filter, "daemon started");

    // The listener runs in its own task, so no select! ever cancels a read
    // half-way through a notification.
    let wake = wake_tx.clone();
    let listen_pool = pool.clone();
    let listen = tokio::spawn(async move {
        let mut listener = Some(listener);
        loop {
            let Some(l) = listener.as_mut() else {
                // A fresh LISTEN connection after a failure; notifications
                // sent meanwhile are lost, so a drain follows it.
                match listen_on(&listen_pool).await {
                    Ok(l) => {
                        info!("LISTEN connection re-established");
                        listener = Some(l);
                        let _ = wake.try_send(());
                    }
                    Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                }
                continue;
            };
            match l.try_recv().await {
                Ok(Some(n)) => {
                    if event.is_none_or(|e| n.payload() == e.to_string()) {
                        let _ = wake.try_send(());
                    }
                }
                Ok(None) => {
                    // The connection dropped; sqlx re-establishes it on the
                    // next call and notifications in between are lost: drain.
                    warn!("LISTEN connection lost; reconnecting");
                    let _ = wake.try_send(());
                }
                Err(e) => {
                    // sqlx keeps a connection that failed this way (a reset,
                    // for one) and may wait on it forever: start afresh.
                    // Notifications may have been lost: drain (a drain that
                    // fails tells /healthz).
                    warn!(error = %e, "LISTEN failed; reconnecting every 1s");
                    listener = None;
                    let _ = wake.try_send(());
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });

    let mut opts = args.worker.options("daemon");
    opts.session = args.db.limits();
    opts.embedder = embedder;
    opts.max_runtime = Some(args.max_runtime);
    opts.event = event;
    opts.metrics = metrics.clone();
    let health = metrics.clone();
    // One session across drains: event snapshots are refreshed by delta.
    let mut session = Some(worker::Session::new());
    let mut drain: Option<JoinHandle<(worker::Session, Result<RunSummary>)>> = None;
    let mut wanted = true;
    loop {
        if wanted && drain.is_none() && !shutdown.is_cancelled() {
            wanted = false;
            let (pool, connect, opts, stop) = (pool.clone(), connect.clone(), opts.clone(), shutdown.clone());
            let mut s = session.take().unwrap_or_default();
            if let Some(m) = &health {
                m.health().drain_started();
            }
            drain = Some(tokio::spawn(async move {
                let r = worker::run_in(&mut s, &pool, &connect, opts, stop).await;
                (s, r)
            }));
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(()) = wake_rx.recv() => wanted = true,
            done = async { drain.as_mut().expect("guarded by the select condition").await }, if drain.is_some() => {
                drain = None;
                let done = done.map(|(s, r)| {
                    session = Some(s);
                    r
                });
                if let Some(m) = &health {
                    let error = match &done {
                        Ok(Ok(_)) => None,
                        Ok(Err(e)) => Some(error_chain(e)),
                        Err(e) => Some(e.to_string()),
                    };
                    m.health().drain_finished(error.as_deref());
                }
                match done {
                    Ok(Ok(s)) if s.stop_reason == StopReason::Deadline => wanted = true,
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        warn!(error = %error_chain(&e), "drain failed; retrying in 1s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        wanted = true;
                    }
                    Err(e) => warn!(error = %e, "drain task panicked"),
                }
            }
        }
    }
    listen.abort();
    info!("shutting down: waiting for the current batch");
    if let Some(d) = drain {
        match d.await {
            Ok((_, Ok(_))) => {}
            Ok((_, Err(e))) => warn!(error = %error_chain(&e), "last drain failed"),
            Err(e) => warn!(error = %e, "last drain panicked"),
        }
    }
    if let Some(task) = server {
        let _ = task.await;
    }
    if let Err(e) = scheduler.shutdown().await {
        warn!(error = %e, "scheduler did not shut down cleanly");
    }
    info!("daemon stopped");
    Ok(())
}
