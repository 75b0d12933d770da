//! The loop of one run: which event next, its lock, the deadline and the
//! hard stop, pauses while work exists but cannot be claimed, what a failed
//! batch hands back, and the run record.

use super::cache::EventCache;
use super::pipeline::BatchError;
use super::{KeptConn, RunSummary, RunTotals, Session, StopReason, WorkerOptions};
use crate::store::jobs;
use crate::store::queue::{self, GiveBack};
use crate::store::{DbResult, StoreError};
use crate::telemetry::error_chain;
use anyhow::{Context, Result};
use sqlx::postgres::PgConnectOptions;
use sqlx::{PgConnection, PgPool};
use std::collections::HashSet;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};
use uuid::Uuid;

/// How long past `max_runtime` a run may take to abandon a stuck batch and
/// hand its rows back.
const HARD_STOP_GRACE: Duration = Duration::from_secs(1);

/// The longest the hand-back of rows and the run record may take after a
/// hard stop (each), so a hung database cannot hold the process.
const CLEANUP_TIMEOUT: Duration = Duration::from_millis(1500);

/// How long a worker keeps going back to the event whose batches are full
/// before it looks for the best event again.
const STICKY: Duration = Duration::from_millis(100);

/// Events tried per round before the loop pauses.
const EVENTS_PER_ROUND: usize = 16;

/// Rows a run finishes between two vacuums of the queue.
const VACUUM_EVERY: i64 = 2000;
/// Rows a run finishes before its first vacuum: soon, since a bulk import
/// by the application may have left the queue's statistics stale (see
/// `queue::vacuum`), but not for the few rows of a quiet minute.
const FIRST_VACUUM: i64 = 200;
/// Vacuums per analyze of the queue (the first vacuum of a run analyzes).
const ANALYZE_EVERY: u32 = 10;

/// One run's state.
pub(super) struct Worker {
    pub(super) pool: PgPool,
    connect: PgConnectOptions,
    pub(super) opts: WorkerOptions,
    pub(super) worker_id: String,
    pub(super) run_id: Uuid,
    pub(super) cache: EventCache,
    lock_conn: Option<PgConnection>,
    pub(super) totals: RunTotals,
    pub(super) shutdown: CancellationToken,
    last_heartbeat: Instant,
    last_progress_log: Instant,
    /// Rows finished when the queue was last vacuumed.
    vacuumed_at: i64,
    /// Vacuums this run.
    vacuums: u32,
    /// Whether this session's role may vacuum the queue (asked once).
    may_vacuum: Option<bool>,
    last_maintain: Instant,
}

/// Where the loop goes next.
#[derive(Debug, Clone, Copy)]
enum Focus {
    /// To the event with the best claimable row.
    Choose,
    /// Straight back to `event`, whose last batch came full, until `since +
    /// STICKY`; with its lock still held, which saves two round trips per
    /// batch (a leave or exclusion of that event waits at most STICKY plus
    /// one batch).
    Stay { event: Uuid, since: Instant },
}

/// What one round of the loop found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// A batch was worked on (or failed).
    Worked,
    /// Work exists but none could be claimed now: locked by other workers or
    /// by open application transactions, or waiting out a backoff.
    Blocked,
    /// No event has claimable work.
    Idle,
}

/// [`super::run_in`].
pub(super) async fn run(
    session: &mut Session,
    pool: &PgPool,
    connect: &PgConnectOptions,
    opts: WorkerOptions,
    shutdown: CancellationToken,
) -> Result<RunSummary> {
    let started = Instant::now();
    let lock_conn = kept_lock_conn(session, opts.lease).await;
    let mut w = Worker {
        pool: pool.clone(),
        connect: connect.clone(),
        worker_id: session.worker_id.clone(),
        run_id: Uuid::new_v4(),
        cache: std::mem::take(&mut session.cache),
        lock_conn,
        totals: RunTotals::default(),
        shutdown,
        last_heartbeat: started,
        last_progress_log: started,
        vacuumed_at: FIRST_VACUUM - VACUUM_EVERY,
        vacuums: 0,
        may_vacuum: None,
        last_maintain: started,
        opts,
    };
    if let Some(m) = &w.opts.metrics {
        m.run_started();
    }
    jobs::start_run(&w.pool, w.run_id, &w.worker_id, w.opts.command, w.opts.event).await?;
    let event_filter = w.opts.event.map(|e| e.to_string()).unwrap_or_else(|| "all".into());
    let max_runtime = w.opts.max_runtime.map(|d| humantime::format_duration(d).to_string());
    info!(run.id = %w.run_id, worker = %w.worker_id, event = %event_filter,
          max_runtime = max_runtime.as_deref().unwrap_or("none"), batch_size = w.opts.batch_size, "worker started");
    match queue::prune_done(&w.pool, w.opts.retain_done).await {
        Ok(0) => {}
        Ok(n) => info!(rows = n, "pruned old done rows"),
        Err(e) => warn!(error = %error_chain(&e), "could not prune done rows"),
    }

    let deadline = w.opts.max_runtime.map(|d| started + d);
    let span = info_span!("run", run.id = %w.run_id);
    let mut hard_stop = false;
    let outcome = match deadline {
        Some(d) => match tokio::time::timeout_at(d + HARD_STOP_GRACE, w.drain(deadline).instrument(span)).await {
            Ok(r) => r,
            Err(_) => {
                warn!("hard stop: a database call outlived the deadline; abandoning the batch");
                hard_stop = true;
                Ok(StopReason::Deadline)
            }
        },
        None => w.drain(None).instrument(span).await,
    };
    // A run that ended cleanly released its event locks (`Worker::drain`)
    // and has no transaction open: its connection may serve the next run.
    // After a hard stop or an error it may be in any state, and closing it
    // is what releases its locks.
    let keep = if outcome.is_ok() && !hard_stop {
        w.lock_conn.take()
    } else {
        None
    };
    // Whatever this worker still holds (a hard stop may have cut a claim or
    // a write short) goes back at once, found by worker id in the database.
    w.lock_conn = None;
    w.totals.released += release_held(&w.pool, &w.worker_id).await as i64;
    // The snapshots stay valid (the next run refreshes them by delta) unless
    // the run failed half-way.
    if outcome.is_ok() {
        session.cache = std::mem::take(&mut w.cache);
    }
    session.lock_conn = keep.map(|conn| KeptConn {
        conn,
        since: std::time::Instant::now(),
        lease: w.opts.lease,
    });
    let (reason, error) = match &outcome {
        Ok(r) => (r.as_str(), None),
        Err(e) => ("error", Some(error_chain(e))),
    };
    w.publish();
    if let Some(m) = &w.opts.metrics {
        m.run_finished(reason, started.elapsed());
    }
    let record = w.totals.record();
    let finish = jobs::update_run(&w.pool, w.run_id, &record, Some(reason), error.as_deref());
    if let Err(e) = tokio::time::timeout(CLEANUP_TIMEOUT, finish)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")))
    {
        warn!(error = %error_chain(&e), "could not record the end of the run");
    }
    let stop_reason = outcome?;
    let summary = RunSummary {
        run_id: w.run_id,
        worker_id: w.worker_id.clone(),
        stop_reason,
        totals: w.totals.clone(),
        elapsed_ms: started.elapsed().as_millis(),
    };
    info!(run.id = %summary.run_id, stop = stop_reason.as_str(), claimed = summary.totals.claimed,
          processed = summary.totals.processed, failed = summary.totals.failed,
          released = summary.totals.released, elapsed_ms = summary.elapsed_ms as u64, "worker stopped");
    Ok(summary)
}

/// Hands every row this worker still holds back to the queue with a fresh
/// connection, bounded in time. Returns rows released.
async fn release_held(pool: &PgPool, worker: &str) -> u64 {
    let attempt = async {
        let mut conn = pool.acquire().await.db("connecting to release rows")?;
        let ids = queue::held_by(&mut *conn, worker).await?;
        let back = queue::give_back(&mut conn, &ids, worker, GiveBack::Release).await?;
        anyhow::Ok(ids.len() as u64 - back.left_leased)
    };
    match tokio::time::timeout(CLEANUP_TIMEOUT, attempt).await {
        Ok(Ok(0)) => 0,
        Ok(Ok(n)) => {
            info!(rows = n, "released unfinished rows");
            n
        }
        Ok(Err(e)) => {
            warn!(error = %error_chain(&e), "could not release rows; the next batch of their event takes them over");
            0
        }
        Err(_) => {
            warn!("releasing rows timed out; the next batch of their event takes them over");
            0
        }
    }
}

/// The previous run's lock connection when it is safe to use again: opened
/// for this lease, idle for less than half of it (the server closes a
/// session idle for the whole lease), and answering a ping.
async fn kept_lock_conn(session: &mut Session, lease: Duration) -> Option<PgConnection> {
    let mut kept = session
        .lock_conn
        .take()
        .filter(|k| k.lease == lease && k.since.elapsed() < lease / 2)?;
    match sqlx::Connection::ping(&mut kept.conn).await {
        Ok(()) => Some(kept.conn),
        Err(e) => {
            debug!(error = %e, "the kept lock connection is gone; opening another");
            None
        }
    }
}

impl Worker {
    /// The main loop, then the release of any event lock still held.
    async fn drain(&mut self, deadline: Option<Instant>) -> Result<StopReason> {
        let stop = self.drain_rounds(deadline).await;
        if stop.is_ok() {
            // Keeping to an event may have kept its lock past the last batch.
            if let Some(conn) = self.lock_conn.as_mut() {
                queue::unlock_all(conn).await?;
            }
        }
        stop
    }

    /// Rounds until the queue is drained, the deadline nears or shutdown.
    async fn drain_rounds(&mut self, deadline: Option<Instant>) -> Result<StopReason> {
        // What a batch takes, on average: claims stop when one no longer fits.
        let mut batch_time = Duration::from_millis(500);
        // Never so large a margin that a short run cannot claim at all.
        let max_margin = self.opts.max_runtime.map_or(Duration::MAX, |r| r / 4);
        let mut focus = Focus::Choose;
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(StopReason::Shutdown);
            }
            let margin = (batch_time * 2).max(Duration::from_millis(500)).min(max_margin);
            if deadline.is_some_and(|d| Instant::now() + margin >= d) {
                return Ok(StopReason::Deadline);
            }
            let round = self.round(&mut focus, deadline, margin, &mut batch_time).await?;
            self.heartbeat(false).await;
            self.maintain().await;
            match round {
                Round::Worked => continue,
                Round::Idle => {
                    // `admin-start-matching --wait` waits for other workers'
                    // leases and new rows of its event; everyone else stops.
                    let waiting = match (self.opts.until_event_done, self.opts.event) {
                        (true, Some(event)) => queue::event_has_live_work(&self.pool, event).await?,
                        _ => false,
                    };
                    if !waiting {
                        return Ok(StopReason::Drained);
                    }
                }
                Round::Blocked => {}
            }
            let pause = Duration::from_millis(100 + u64::from(rand::random::<u8>()));
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.shutdown.cancelled() => return Ok(StopReason::Shutdown),
            }
        }
    }

    /// One round: the focused event, or the best ones in turn (at most
    /// [`EVENTS_PER_ROUND`]), until one yields a batch. `focus` says where
    /// the next round goes.
    async fn round(
        &mut self,
        focus: &mut Focus,
        deadline: Option<Instant>,
        margin: Duration,
        batch_time: &mut Duration,
    ) -> Result<Round> {
        // A stay that has lasted STICKY makes way for higher-priority work
        // elsewhere: its lock is let go and the choice is made again.
        if let Focus::Stay { event, since } = *focus {
            if since.elapsed() >= STICKY {
                self.unlock(event).await?;
                *focus = Focus::Choose;
            }
        }
        let mut tried: Vec<Uuid> = Vec::new();
        loop {
            // (event, since when the worker keeps to it, lock already held)
            let (event, since, locked) = match std::mem::replace(focus, Focus::Choose) {
                Focus::Stay { event, since } => (event, Some(since), true),
                Focus::Choose => match queue::next_event(&self.pool, self.opts.event, &tried).await? {
                    Some(event) => (event, None, false),
                    None => return Ok(if tried.is_empty() { Round::Idle } else { Round::Blocked }),
                },
            };
            tried.push(event);
            let locked = locked || {
                let conn = self.lock_conn().await?;
                queue::try_lock_event(conn, event).await?
            };
            if !locked {
                debug!(event.id = %event, "event busy with another worker");
            } else {
                let t0 = Instant::now();
                let until = since.unwrap_or(t0) + STICKY;
                match self.pipeline(event, deadline, margin, until).await {
                    Ok(done) => {
                        // Full: more is likely; stay (lock held) while STICKY lasts.
                        let stay = done
                            .last_full
                            .then(|| since.unwrap_or_else(Instant::now))
                            .filter(|s| s.elapsed() < STICKY);
                        match stay {
                            Some(since) => *focus = Focus::Stay { event, since },
                            None => self.unlock(event).await?,
                        }
                        if done.claimed > 0 {
                            *batch_time = (*batch_time + t0.elapsed() / done.batches.max(1)) / 2;
                            return Ok(Round::Worked);
                        }
                        // Every claimable row is locked by an uncommitted
                        // application transaction: try another event.
                    }
                    Err(e) => {
                        self.batch_failed(event, e).await;
                        return Ok(Round::Worked);
                    }
                }
            }
            if tried.len() >= EVENTS_PER_ROUND {
                return Ok(Round::Blocked);
            }
        }
    }

    async fn unlock(&mut self, event: Uuid) -> Result<()> {
        let conn = self.lock_conn().await?;
        queue::unlock_event(conn, event).await
    }

    /// The dedicated connection that holds event locks and does a batch's
    /// claims, reads and writes (opened on first use).
    pub(super) async fn lock_conn(&mut self) -> Result<&mut PgConnection> {
        if self.lock_conn.is_none() {
            // A worker that stalls (SIGSTOP, a frozen VM) without its socket
            // closing must not hold an event lock forever: the server ends a
            // session idle for longer than the lease, releasing the lock, and
            // the next worker takes the rows over (see `queue::claim`).
            let idle = self.opts.lease.max(Duration::from_secs(1)).as_millis().to_string();
            //
            // While a batch holds an event lock it never waits long on a lock
            // an application transaction holds: that transaction may be
            // waiting for the event lock in a trigger. Giving up first (well
            // before the 1 s deadlock detector) makes the batch, not the
            // application, retry.
            //
            // `matchmaker.worker` tells the user_matches triggers that this
            // session bumps the event version itself.
            let session = crate::db::session_sql(
                self.opts.session,
                &[
                    ("idle_session_timeout", idle.as_str()),
                    ("lock_timeout", "250ms"),
                    ("matchmaker.worker", "on"),
                ],
            );
            let conn = crate::db::connect_one(&self.connect, session)
                .await
                .context("opening the worker's lock connection")?;
            debug!("opened a lock connection");
            self.lock_conn = Some(conn);
        }
        self.lock_conn
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("lock connection unavailable"))
    }

    /// At most once a second: a progress line every 10 s, and the run
    /// record brought up to date (what `status` shows of a live run).
    pub(super) async fn heartbeat(&mut self, force: bool) {
        if let Some(m) = &self.opts.metrics {
            m.health().progress();
        }
        if !force && self.last_heartbeat.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_heartbeat = Instant::now();
        self.publish();
        if self.last_progress_log.elapsed() >= Duration::from_secs(10) {
            self.last_progress_log = Instant::now();
            let t = &self.totals;
            info!(run.id = %self.run_id, batches = t.batches, claimed = t.claimed, processed = t.processed,
                  failed = t.failed, "progress");
        }
        if let Err(e) = jobs::update_run(&self.pool, self.run_id, &self.totals.record(), None, None).await {
            warn!(error = %error_chain(&e), "could not record run progress");
        }
    }

    /// Hands the run's totals and the breaker state to the metrics.
    fn publish(&self) {
        if let Some(m) = &self.opts.metrics {
            m.publish(&self.totals);
            if let Some(e) = &self.opts.embedder {
                m.set_breaker(e.breaker_state());
            }
        }
    }

    /// After bursts (a cold start, a settings change), a vacuum of the queue:
    /// they leave thousands of dead index entries at the head of the claim
    /// index faster than autovacuum wakes up, and every claim would step
    /// over them. Needs the table's owner; otherwise skipped, once said.
    async fn maintain(&mut self) {
        let finished = self.totals.processed + self.totals.failed;
        // At most once a second, like the heartbeat.
        if finished - self.vacuumed_at < VACUUM_EVERY || self.last_maintain.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_maintain = Instant::now();
        self.vacuumed_at = finished;
        // Statistics on the first vacuum of a run and every tenth.
        let analyze = self.vacuums.is_multiple_of(ANALYZE_EVERY);
        self.vacuums += 1;
        if self.may_vacuum.is_none() {
            let may = queue::may_maintain(&self.pool).await.unwrap_or(false);
            if !may {
                info!("not vacuuming matchmaking_queue: this role does not own it (autovacuum will)");
            }
            self.may_vacuum = Some(may);
        }
        if self.may_vacuum == Some(true) {
            let t = Instant::now();
            match queue::vacuum(&self.pool, analyze).await {
                Ok(()) => debug!(elapsed_ms = t.elapsed().as_millis() as u64, "vacuumed the queue"),
                Err(e) => debug!(error = %error_chain(&e), "could not vacuum the queue (autovacuum will)"),
            }
        }
    }

    /// After a failed batch: drop the lock connection (the session may be in
    /// any state; closing it releases the lock), forget the cached event, and
    /// hand the rows back. The rows the failure says were never tried (the
    /// batches behind the failed one) go back with their attempt refunded,
    /// and so do all of them when the failure was a lock conflict (not the
    /// rows' fault); the others are retried after a backoff or failed for
    /// good. A deleted event's rows went with it.
    async fn batch_failed(&mut self, event: Uuid, e: BatchError) {
        self.lock_conn = None;
        self.cache.forget(&event);
        let BatchError { untried, source } = e;
        let msg = error_chain(&source);
        if matches!(StoreError::of(&source), Some(StoreError::EventGone(_))) {
            info!(event.id = %event, "the event was deleted; its rows went with it");
            return;
        }
        let conflict = StoreError::is_lock_conflict(&source);
        let untried: HashSet<i64> = untried.into_iter().collect();
        warn!(event.id = %event, error = %msg, lock_conflict = conflict, "batch failed; its rows go back to the queue");
        let attempt = async {
            let mut tx = self.pool.begin().await.db("starting the give-back")?;
            let held = queue::held_by(&mut *tx, &self.worker_id).await?;
            let (untried, ids): (Vec<i64>, Vec<i64>) = held.into_iter().partition(|id| untried.contains(id));
            let errors = vec![msg.clone(); ids.len()];
            let how = if conflict {
                GiveBack::Release
            } else {
                GiveBack::Retry(&errors, self.opts.retry)
            };
            let back = queue::give_back(&mut tx, &ids, &self.worker_id, how).await?;
            queue::give_back(&mut tx, &untried, &self.worker_id, GiveBack::Release).await?;
            // Failed rows count on the job, which may now be complete.
            jobs::record_batch(&mut *tx, event, &[], &self.worker_id, 0, back.failed as i64, Some(&msg)).await?;
            tx.commit().await.db("committing the give-back")?;
            anyhow::Ok(back)
        };
        match attempt.await {
            Ok(r) => self.totals.failed += r.failed as i64,
            Err(e) => {
                warn!(error = %error_chain(&e), "could not hand rows back; the next batch of their event takes them over")
            }
        }
    }
}
