//! The worker loop: pick an event → take its lock → claim a batch → refresh
//! the event snapshot → repair each claimed attendee → write the changed
//! lists and finish the rows in one transaction → release the lock; until
//! the queue is drained, the deadline nears, or shutdown is requested.
//! While an event's batches come full, the worker keeps its lock and
//! pipelines them: batch i is scored while the connection writes batch i-1
//! and claims and reads batch i+1 (see `Worker::stretch` for why that order
//! is as exact as the sequential one).
//!
//! ## Why this is exact under concurrency and crashes
//!
//! - **One batch per event at a time.** A batch runs entirely under the
//!   event's advisory lock (a session lock on a dedicated connection), and
//!   the triggers that delete match rows take the same lock. So the lists a
//!   batch reads cannot change before it writes (no lost update between two
//!   workers bumping the same attendee), and there is a single lock per batch
//!   (no lock-ordering deadlock between workers). Different events proceed
//!   in parallel.
//! - **Fresh data.** The snapshot is refreshed *after* the claim, under the
//!   lock, so it contains every change whose queue row was claimed. A change
//!   committed after the refresh enqueued a new row in its own transaction,
//!   so its attendee stays dirty and a later batch repairs it (see
//!   [`crate::matching::engine`] for the invariant).
//! - **Memory between batches.** The event's participants, lists and open
//!   queue rows stay in memory from one batch to the next. Participants are
//!   refreshed by delta; the lists and open rows are trusted only while the
//!   event's version (`matchmaking_event_state`) is the one this worker's own
//!   last batch wrote: every other writer of lists or closer of queue rows
//!   bumps it after taking the event lock (see `snapshot::read` and the
//!   event-version migration). A failed write drops the cached event.
//! - **Crashes.** Matches and the completion of their queue rows commit in
//!   one transaction. A worker killed before that commit leaves its rows
//!   `processing`; its lock dies with its connection, and the next batch of
//!   the event takes the rows over at once (see `queue::claim`). A stalled
//!   worker loses its session after `--lease` of idleness.
//! - **Deadline.** Claims stop when the remaining time is too short for a
//!   batch; scoring stops between attendees at the deadline, the finished
//!   ones are written and the unstarted ones go back to pending with their
//!   attempt refunded. A hard stop at `max_runtime + grace` abandons whatever
//!   is still waiting on the database and releases the rows.

use crate::embeddings::attach;
use crate::matching::profile::{Participant, TagInterner};
use crate::matching::score::explain;
use crate::matching::{self, Entry, Event, EventSettings, IdMap, Lists};
use crate::store::jobs::{self, RunTotals};
use crate::store::matches::{self, Diff, Upsert};
use crate::store::queue::{self, ClaimedRow, GiveBack, RetryPolicy};
use crate::store::snapshot::{self, MatchRow, Read, SettingsRow, Since};
use crate::store::{DbResult, StoreError};
use crate::telemetry::error_chain;
use anyhow::{Context, Result};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};
use uuid::Uuid;

/// How long past `max_runtime` a run may take to abandon a stuck batch and
/// hand its rows back.
pub const HARD_STOP_GRACE: Duration = Duration::from_secs(1);

/// The longest the hand-back of rows and the run record may take after a
/// hard stop (each), so a hung database cannot hold the process.
const CLEANUP_TIMEOUT: Duration = Duration::from_millis(1500);

/// How long a worker keeps going back to the event whose batches are full
/// before it looks for the best event again.
const STICKY: Duration = Duration::from_millis(100);

/// How long rows waiting on the embedding provider wait before they are
/// tried again (bounded by `--retry-base` and `--retry-max`); attempts are
/// not spent, so an outage of any length never fails them.
const DEFER: Duration = Duration::from_secs(30);

/// Rows a run finishes between two vacuums of the queue.
const VACUUM_EVERY: i64 = 2000;
/// Rows a run finishes before its first vacuum: soon, since a bulk import
/// by the application may have left the queue's statistics stale (see
/// `queue::vacuum`), but not for the few rows of a quiet minute.
const FIRST_VACUUM: i64 = 200;
/// Vacuums per analyze of the queue (the first vacuum of a run analyzes).
const ANALYZE_EVERY: u32 = 10;

/// From this many participants, cosine-v1 batches are scored from bfloat16
/// vectors first (half the memory traffic; exact where it matters, see
/// `matching::plan_bounded`), on CPUs with AVX-512 BF16.
const APPROX_MIN_PARTICIPANTS: usize = 4_096;

/// How many event snapshots one process keeps in memory.
const CACHED_EVENTS: usize = 4;

/// Everything that shapes one worker invocation.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Rows claimed per batch.
    pub batch_size: i64,
    /// How long a claim lasts before another worker may take the rows over.
    pub lease: Duration,
    /// Stop claiming in time to return within this; `None` runs until drained.
    pub max_runtime: Option<Duration>,
    /// Only this event.
    pub event: Option<Uuid>,
    pub retry: RetryPolicy,
    /// With `event`: keep waiting (for other workers' leases and new rows)
    /// until the event has nothing pending or processing, except rows
    /// waiting out a retry after an error (cron or the daemon retries them).
    pub until_event_done: bool,
    /// Which command started the run, for the run history.
    pub command: &'static str,
    /// Done rows older than this are deleted at the start of a run.
    pub retain_done: Duration,
    /// Fault injection for tests and drills: sleep this long before scoring
    /// each attendee, as if scoring were slow.
    pub fault_score_delay: Duration,
    /// Benchmarks only: complete claimed rows without scoring (see
    /// `--bench-null-scorer`).
    pub null_scorer: bool,
    /// The embedding provider (`None`: application embeddings only); see
    /// [`crate::embeddings::attach`].
    pub embedder: Option<std::sync::Arc<crate::embeddings::Embedder>>,
    /// Session limits of the worker's lock connection (the pool's sessions
    /// get theirs when the pool connects).
    pub session: crate::db::SessionLimits,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            batch_size: 20,
            lease: Duration::from_secs(120),
            max_runtime: Some(Duration::from_secs(45)),
            event: None,
            retry: RetryPolicy {
                max_attempts: 5,
                base: Duration::from_secs(2),
                cap: Duration::from_secs(600),
            },
            until_event_done: false,
            command: "run",
            retain_done: Duration::from_secs(7 * 24 * 3600),
            fault_score_delay: Duration::ZERO,
            null_scorer: false,
            embedder: None,
            session: crate::db::SessionLimits::default(),
        }
    }
}

/// Why a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Nothing claimable is left.
    Drained,
    /// The deadline was near.
    Deadline,
    /// SIGINT/SIGTERM.
    Shutdown,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Drained => "drained",
            StopReason::Deadline => "deadline",
            StopReason::Shutdown => "shutdown",
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    pub run_id: Uuid,
    pub worker_id: String,
    pub stop_reason: StopReason,
    pub totals: RunTotals,
    pub elapsed_ms: u128,
}

/// An event held in memory between batches, refreshed by deltas: its
/// participants, its lists and its open queue rows, valid while the event's
/// version is the one recorded here (see `snapshot::read`).
struct CachedEvent {
    pg_snapshot: String,
    settings: SettingsRow,
    event: Event,
    /// `matchmaking_event_state.version` the lists and open rows match;
    /// `None` forces a reload at the next batch.
    version: Option<i64>,
    /// The lists as committed, by owner, in rank order.
    committed: IdMap<Uuid, Vec<MatchRow>>,
    /// The same lists as the scorer works on them.
    lists: Lists,
    /// Summaries of `lists` for the scorer's fast path.
    summaries: matching::Summaries,
    /// Open (pending or processing) queue rows, and how many per attendee.
    open_rows: IdMap<i64, Uuid>,
    open_count: IdMap<Uuid, u32>,
    /// By participant index: whether `open_count` has the attendee.
    open_flags: Vec<bool>,
    /// The highest queue row id seen.
    queue_seen: i64,
    last_used: Instant,
}

impl CachedEvent {
    fn add_open(&mut self, id: i64, user: Uuid) {
        if self.open_rows.insert(id, user).is_none() {
            let c = self.open_count.entry(user).or_default();
            *c += 1;
            if *c == 1 {
                self.flag_open(&user, true);
            }
        }
        self.queue_seen = self.queue_seen.max(id);
    }

    fn close(&mut self, id: i64) {
        if let Some(user) = self.open_rows.remove(&id) {
            if let Some(c) = self.open_count.get_mut(&user) {
                *c -= 1;
                if *c == 0 {
                    self.open_count.remove(&user);
                    self.flag_open(&user, false);
                }
            }
        }
    }

    fn flag_open(&mut self, user: &Uuid, open: bool) {
        if let Some(flag) = self.event.index_of(user).and_then(|i| self.open_flags.get_mut(i)) {
            *flag = open;
        }
    }

    /// Rebuilds `open_flags` from `open_count` (after a reload, or when
    /// participants were added: their rows may have been seen before them).
    fn sync_open_flags(&mut self) {
        self.open_flags = vec![false; self.event.participant_count()];
        for user in self.open_count.keys() {
            if let Some(i) = self.event.index_of(user) {
                self.open_flags[i] = true;
            }
        }
    }

    /// A batch's lists as its write commits them: the touched lists, and its
    /// done rows closed. Applied before the write lands (see
    /// `Worker::stretch`); a failed write drops the cached event.
    fn commit_lists(&mut self, scored: &Scored, algorithm: &str) {
        for owner in &scored.touched {
            match self.lists.get(owner) {
                Some(list) => {
                    let rows = list
                        .iter()
                        .enumerate()
                        .map(|(i, e)| MatchRow {
                            user_id: *owner,
                            matched_user_id: e.user,
                            rank: (i + 1) as i16,
                            score: e.score,
                            algorithm_version: algorithm.to_string(),
                        })
                        .collect();
                    self.committed.insert(*owner, rows);
                }
                None => {
                    self.committed.remove(owner);
                }
            }
        }
        for id in &scored.done {
            self.close(*id);
        }
    }

    fn set_reloaded(&mut self, r: snapshot::Reloaded) {
        self.committed = group_lists(r.lists);
        self.lists = self
            .committed
            .iter()
            .map(|(u, rs)| (*u, rs.iter().map(|r| Entry::new(r.matched_user_id, r.score)).collect()))
            .collect();
        self.summaries.clear();
        self.open_rows.clear();
        self.open_count.clear();
        for (id, user) in r.open_rows {
            self.add_open(id, user);
        }
        self.sync_open_flags();
    }
}

/// Who still has queue work during one batch: attendees with open rows
/// other than this batch's, and this batch's attendees until repaired. Kept
/// as flags by participant index, since the scorer asks for every attendee
/// of the event for every claimed one.
struct BatchDirty<'a> {
    event: &'a Event,
    other_work: Vec<bool>,
    unrepaired: Vec<bool>,
}

impl<'a> BatchDirty<'a> {
    fn new(event: &'a Event, open_count: &IdMap<Uuid, u32>, open_flags: &[bool], rows: &[ClaimedRow]) -> Self {
        let n = event.participant_count();
        let mut claimed: IdMap<Uuid, u32> = IdMap::default();
        for r in rows {
            *claimed.entry(r.user_id).or_default() += 1;
        }
        // Everyone with open rows, then this batch's attendees corrected to
        // "open rows beyond the ones claimed here".
        let mut other_work = open_flags.to_vec();
        other_work.resize(n, false);
        for (user, mine) in &claimed {
            if let Some(i) = event.index_of(user) {
                other_work[i] = open_count.get(user).copied().unwrap_or(0) > *mine;
            }
        }
        let mut unrepaired = vec![false; n];
        for r in rows {
            if let Some(i) = event.index_of(&r.user_id) {
                unrepaired[i] = true;
            }
        }
        Self {
            event,
            other_work,
            unrepaired,
        }
    }

    fn repaired(&mut self, user: &Uuid) {
        if let Some(i) = self.event.index_of(user) {
            self.unrepaired[i] = false;
        }
    }
}

impl matching::Dirty for BatchDirty<'_> {
    fn is_dirty(&self, user: &Uuid) -> bool {
        self.event.index_of(user).is_some_and(|i| self.is_dirty_at(i, user))
    }

    fn is_dirty_at(&self, i: usize, _user: &Uuid) -> bool {
        self.other_work.get(i).copied().unwrap_or(false) || self.unrepaired.get(i).copied().unwrap_or(false)
    }
}

struct Worker {
    pool: PgPool,
    connect: PgConnectOptions,
    opts: WorkerOptions,
    worker_id: String,
    run_id: Uuid,
    cache: HashMap<Uuid, CachedEvent>,
    lock_conn: Option<PgConnection>,
    totals: RunTotals,
    shutdown: CancellationToken,
    last_heartbeat: Instant,
    last_progress_log: Instant,
    /// Rows finished when the queue was last vacuumed.
    vacuumed_at: i64,
    /// Vacuums this run.
    vacuums: u32,
    /// Whether this session's role may vacuum the queue (asked once).
    may_vacuum: Option<bool>,
    /// Rows of batches behind a failed one (claimed, maybe scored, never
    /// written): `batch_failed` releases them without spending an attempt.
    innocent: Vec<i64>,
}

/// What a long-running process keeps between runs: its worker id and the
/// event snapshots (refreshed by deltas, so a daemon woken by one join does
/// not reload the whole event).
pub struct Session {
    worker_id: String,
    cache: HashMap<Uuid, CachedEvent>,
}

impl Session {
    pub fn new() -> Self {
        Self {
            worker_id: worker_id(),
            cache: HashMap::new(),
        }
    }
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

/// A worker id that tells an operator where the process runs.
pub fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let suffix: u32 = rand::random();
    format!("{host}:{}:{:08x}", std::process::id(), suffix)
}

/// Runs the worker until drained, the deadline, or `shutdown`.
///
/// `connect` opens the dedicated connection that holds event locks; `pool`
/// serves everything else.
pub async fn run(
    pool: &PgPool,
    connect: &PgConnectOptions,
    opts: WorkerOptions,
    shutdown: CancellationToken,
) -> Result<RunSummary> {
    run_in(&mut Session::new(), pool, connect, opts, shutdown).await
}

/// [`run`] within a [`Session`] that outlives it (the daemon's drains).
pub async fn run_in(
    session: &mut Session,
    pool: &PgPool,
    connect: &PgConnectOptions,
    opts: WorkerOptions,
    shutdown: CancellationToken,
) -> Result<RunSummary> {
    let started = Instant::now();
    let mut w = Worker {
        pool: pool.clone(),
        connect: connect.clone(),
        worker_id: session.worker_id.clone(),
        run_id: Uuid::new_v4(),
        cache: std::mem::take(&mut session.cache),
        lock_conn: None,
        totals: RunTotals::default(),
        shutdown,
        last_heartbeat: started,
        last_progress_log: started,
        vacuumed_at: FIRST_VACUUM - VACUUM_EVERY,
        vacuums: 0,
        may_vacuum: None,
        innocent: Vec::new(),
        opts,
    };
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
    let outcome = match deadline {
        Some(d) => match tokio::time::timeout_at(d + HARD_STOP_GRACE, w.drain(deadline)).await {
            Ok(r) => r,
            Err(_) => {
                warn!("hard stop: a database call outlived the deadline; abandoning the batch");
                Ok(StopReason::Deadline)
            }
        },
        None => w.drain(None).await,
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
    let (reason, error) = match &outcome {
        Ok(r) => (r.as_str(), None),
        Err(e) => ("error", Some(error_chain(e))),
    };
    let finish = jobs::update_run(&w.pool, w.run_id, &w.totals, Some(reason), error.as_deref());
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
        let mut conn = pool.acquire().await.context("connecting to release rows")?;
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

impl Worker {
    /// The main loop, then the release of any event lock still held.
    async fn drain(&mut self, deadline: Option<Instant>) -> Result<StopReason> {
        let stop = self.drain_batches(deadline).await;
        if stop.is_ok() {
            // Keeping to an event may have kept its lock past the last batch.
            if let Some(conn) = self.lock_conn.as_mut() {
                queue::unlock_all(conn).await?;
            }
        }
        stop
    }

    async fn drain_batches(&mut self, deadline: Option<Instant>) -> Result<StopReason> {
        let mut batch_time = Duration::from_millis(500);
        // Never so large a margin that a short run cannot claim at all.
        let max_margin = self.opts.max_runtime.map_or(Duration::MAX, |r| r / 4);
        // The event whose last batch was full, and since when this worker
        // has kept to it: the next batch goes straight back to it (no scan
        // for the best event) for up to STICKY, then the choice is made
        // again so that higher-priority work elsewhere waits little.
        let mut sticky: Option<(Uuid, Instant)> = None;
        // While it keeps to an event, the worker also keeps its lock between
        // batches (two round trips fewer per batch). A leave or exclusion of
        // that event waits for the lock at most STICKY plus one batch.
        let mut held: Option<Uuid> = None;
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(StopReason::Shutdown);
            }
            // Claim only when a batch like the last ones fits comfortably.
            let margin = (batch_time * 2).max(Duration::from_millis(500)).min(max_margin);
            if let Some(d) = deadline {
                if Instant::now() + margin >= d {
                    return Ok(StopReason::Deadline);
                }
            }
            let mut skip = Vec::new();
            let mut worked = false;
            let mut found = false;
            let mut first = sticky.filter(|(_, since)| since.elapsed() < STICKY);
            sticky = None;
            if let Some(h) = held.take() {
                if first.is_none_or(|(e, _)| e != h) {
                    let conn = self.lock_conn().await?;
                    queue::unlock_event(conn, h).await?;
                } else {
                    held = Some(h);
                }
            }
            loop {
                let event = match first.take() {
                    Some((event, since)) => {
                        sticky = Some((event, since));
                        event
                    }
                    None => match queue::next_event(&self.pool, self.opts.event, &skip).await? {
                        Some(event) => event,
                        None => break,
                    },
                };
                found = true;
                skip.push(event);
                let locked = if held == Some(event) {
                    true
                } else {
                    let conn = self.lock_conn().await?;
                    queue::try_lock_event(conn, event).await?
                };
                held = None;
                if !locked {
                    debug!(event.id = %event, "event busy with another worker");
                    sticky = None;
                } else {
                    let t0 = Instant::now();
                    let until = sticky.map_or(t0, |(_, since)| since) + STICKY;
                    self.innocent.clear();
                    let span = info_span!("batches", event.id = %event, run.id = %self.run_id);
                    match self.stretch(event, deadline, margin, until).instrument(span).await {
                        Ok(done) => {
                            let claimed = done.claimed;
                            sticky = done
                                .last_full
                                .then(|| (event, sticky.map_or_else(Instant::now, |(_, since)| since)));
                            if sticky.is_some_and(|(_, since)| since.elapsed() < STICKY) {
                                held = Some(event);
                            } else {
                                let conn = self.lock_conn().await?;
                                queue::unlock_event(conn, event).await?;
                            }
                            if claimed > 0 {
                                batch_time = (batch_time + t0.elapsed() / done.batches.max(1)) / 2;
                                worked = true;
                                break;
                            }
                            sticky = None;
                            // Every claimable row is locked by an uncommitted
                            // application transaction: try another event.
                        }
                        Err(e) => {
                            self.batch_failed(event, e).await;
                            sticky = None;
                            worked = true;
                            break;
                        }
                    }
                }
                if skip.len() >= 16 {
                    break;
                }
            }
            self.heartbeat(false).await;
            if worked {
                continue;
            }
            if !found {
                // Nothing claimable now.
                let waiting = match (self.opts.until_event_done, self.opts.event) {
                    (true, Some(event)) => queue::event_has_live_work(&self.pool, event).await?,
                    _ => false,
                };
                if !waiting {
                    return Ok(StopReason::Drained);
                }
            }
            // Work exists but is locked by other workers or waiting out a backoff.
            let pause = Duration::from_millis(100 + u64::from(rand::random::<u8>()));
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.shutdown.cancelled() => return Ok(StopReason::Shutdown),
            }
        }
    }

    async fn lock_conn(&mut self) -> Result<&mut PgConnection> {
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
            self.lock_conn = Some(conn);
        }
        self.lock_conn
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("lock connection unavailable"))
    }

    async fn heartbeat(&mut self, force: bool) {
        if !force && self.last_heartbeat.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_heartbeat = Instant::now();
        // A burst (a cold start, a settings change) leaves thousands of dead
        // index entries at the head of the claim index faster than
        // autovacuum wakes up, and every claim would step over them.
        let finished = self.totals.processed + self.totals.failed;
        if finished - self.vacuumed_at >= VACUUM_EVERY {
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
        if self.last_progress_log.elapsed() >= Duration::from_secs(10) {
            self.last_progress_log = Instant::now();
            let t = &self.totals;
            info!(run.id = %self.run_id, batches = t.batches, claimed = t.claimed, processed = t.processed,
                  failed = t.failed, "progress");
        }
        if let Err(e) = jobs::update_run(&self.pool, self.run_id, &self.totals, None, None).await {
            warn!(error = %error_chain(&e), "could not record run progress");
        }
    }

    /// After a failed batch: drop the lock connection (the session may be in
    /// any state; closing it releases the lock), forget the cached event, and
    /// hand the rows back: released with their attempt refunded when the
    /// failure was a lock conflict (not the rows' fault), else retried after
    /// a backoff or failed for good.
    async fn batch_failed(&mut self, event: Uuid, e: anyhow::Error) {
        self.lock_conn = None;
        self.cache.remove(&event);
        let msg = error_chain(&e);
        let conflict = StoreError::is_lock_conflict(&e);
        let innocent: HashSet<i64> = std::mem::take(&mut self.innocent).into_iter().collect();
        warn!(event.id = %event, error = %msg, lock_conflict = conflict, "batch failed; its rows go back to the queue");
        let attempt = async {
            let mut tx = self.pool.begin().await?;
            let held = queue::held_by(&mut *tx, &self.worker_id).await?;
            // Rows of batches queued behind the failed one were never tried.
            let (innocent, ids): (Vec<i64>, Vec<i64>) = held.into_iter().partition(|id| innocent.contains(id));
            let errors = vec![msg.clone(); ids.len()];
            let how = if conflict {
                GiveBack::Release
            } else {
                GiveBack::Retry(&errors, self.opts.retry)
            };
            let back = queue::give_back(&mut tx, &ids, &self.worker_id, how).await?;
            queue::give_back(&mut tx, &innocent, &self.worker_id, GiveBack::Release).await?;
            // Failed rows count on the job, which may now be complete.
            jobs::record_batch(&mut *tx, event, &[], &self.worker_id, 0, back.failed as i64, Some(&msg)).await?;
            tx.commit().await?;
            anyhow::Ok(back)
        };
        match attempt.await {
            Ok(r) => self.totals.failed += r.failed as i64,
            Err(e) => {
                warn!(error = %error_chain(&e), "could not hand rows back; the next batch of their event takes them over")
            }
        }
    }

    /// Claims a batch of `event` (the event lock held on `lock_conn`),
    /// skipping `in_flight`, rows of this worker's own batch still being
    /// scored; sets overdue rows aside (see [`quarantine`]) and fetches
    /// provider embeddings. `None` when nothing was claimable.
    async fn claim_batch(
        &mut self,
        event: Uuid,
        in_flight: &[i64],
        deadline: Option<Instant>,
    ) -> Result<Option<Claimed>> {
        let worker_id = self.worker_id.clone();
        let (batch_size, lease) = (self.opts.batch_size, self.opts.lease);
        let conn = self.lock_conn().await?;
        let rows = queue::claim(conn, event, batch_size, &worker_id, lease, in_flight).await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let t0 = Instant::now();
        let claimed = rows.len();
        self.totals.batches += 1;
        self.totals.claimed += claimed as i64;
        let ids = rows.iter().map(|r| r.id).collect();
        let (rows, release, given_up) = quarantine(rows, self.opts.retry.max_attempts);
        // Provider embeddings for attendees without one, committed before
        // the snapshot (see `embeddings::attach` for why that is exact).
        let held = match (self.opts.embedder.clone(), self.opts.null_scorer) {
            (Some(e), false) => {
                let stats = &mut self.totals.embeddings;
                attach::attach(&self.pool, &e, event, &rows, deadline, self.opts.lease, stats).await?
            }
            _ => attach::Held::default(),
        };
        Ok(Some(Claimed {
            ids,
            rows,
            full: claimed as i64 >= batch_size,
            release,
            given_up,
            held,
            read: None,
            t0,
        }))
    }

    /// Batches of one event while they come full, the event lock held on
    /// `lock_conn`, until `until` (then `drain_batches` chooses again).
    ///
    /// Pipelined: while batch i is scored on the CPU, the connection writes
    /// batch i-1, then claims batch i+1 and reads its snapshot. That is the
    /// sequential order with the database work moved into the scoring time,
    /// and it is exact for the same reasons as the sequential one:
    /// - batch i is scored against the lists batch i-1 left in memory, which
    ///   are what batch i-1's write commits; batch i's write goes out on the
    ///   same connection only after that commit. A failed write drops the
    ///   cached event, and the rows of the batches behind it are released
    ///   untouched.
    /// - batch i+1's snapshot is read after batch i-1 committed and before
    ///   batch i did. Every writer of lists and closer of queue rows bumps the
    ///   event version under the event lock, which this worker holds, so that
    ///   snapshot must show batch i-1's version. If it does not, or the
    ///   event's settings changed, batch i is written first and the event read
    ///   again, exactly as sequentially. Participant changes need no care: a
    ///   change committed after a snapshot has an open queue row that a later
    ///   batch repairs, whichever batch wrote last.
    /// - the claim of batch i+1 skips batch i's rows, still `processing`
    ///   under this worker's lease, which the takeover of a dead worker's
    ///   rows would otherwise take (see `queue::claim`).
    ///
    /// Returns the rows claimed, the batches, and whether the last was full.
    async fn stretch(
        &mut self,
        event: Uuid,
        deadline: Option<Instant>,
        margin: Duration,
        until: Instant,
    ) -> Result<Stretch> {
        let mut out = Stretch::default();
        let Some(mut cur) = self.claim_batch(event, &[], deadline).await? else {
            return Ok(out);
        };
        out.claimed += cur.ids.len();
        out.batches += 1;
        out.last_full = cur.full;
        if self.opts.null_scorer {
            let scored = Scored {
                done: cur.rows.iter().map(|r| r.id).collect(),
                ..Scored::default()
            };
            let p = Pending {
                scored,
                release: cur.release,
                given_up: cur.given_up,
                algorithm: String::new(),
                t0: cur.t0,
            };
            self.write_rows(event, &p).await?;
            return Ok(out);
        }
        let mut cached = self.refresh(event).await?;
        // The batch scored and applied in memory but not yet written.
        let mut pending: Option<Pending> = None;
        // A write gave rows back: the cached open rows are a guess from then on.
        let mut stale = false;
        loop {
            // The snapshot read ahead for this batch, applied now that the
            // previous batch's scoring is over.
            if let Some(read) = cur.read.take() {
                if !absorb(&mut cached, read) {
                    debug!(event.id = %event, "the event moved under the read-ahead; writing and reading it again");
                    if let Some(p) = pending.take() {
                        if let Err(e) = self.write_rows(event, &p).await {
                            self.innocent.extend(&cur.ids);
                            return Err(e);
                        }
                    }
                    // Not in `self.cache` while held here: a full read.
                    cached = self.refresh(event).await?;
                    stale = false;
                }
            }
            let read_ms = cur.t0.elapsed().as_millis();
            let snapshot = cached.pg_snapshot.clone();
            let mut version = cached.version;
            let queue_seen = cached.queue_seen;

            // Score this batch on the blocking pool...
            let rows = std::mem::take(&mut cur.rows);
            let stop = self.shutdown.clone();
            let score_deadline = deadline.map(|d| d.into_std());
            let fault_delay = self.opts.fault_score_delay;
            let task = tokio::task::spawn_blocking(move || {
                let ts = std::time::Instant::now();
                let result = score_batch(&mut cached, &rows, score_deadline, &stop, fault_delay);
                cached.last_used = Instant::now();
                (cached, result, ts.elapsed())
            });
            let tl = Instant::now();

            // ...while the connection writes the previous one and claims
            // and reads the next.
            let lane: Result<Option<Claimed>> = async {
                if let Some(p) = pending.take() {
                    match self.write_rows(event, &p).await? {
                        Some(v) => version = Some(v),
                        None => stale = true,
                    }
                }
                self.heartbeat(false).await;
                let go_on = cur.full
                    && !stale
                    && Instant::now() < until
                    && !self.shutdown.is_cancelled()
                    && deadline.is_none_or(|d| Instant::now() + margin < d);
                let Some(expected) = version.filter(|_| go_on) else {
                    return Ok(None);
                };
                let Some(mut next) = self.claim_batch(event, &cur.ids, deadline).await? else {
                    return Ok(None);
                };
                let seen = next.ids.iter().chain(&cur.ids).copied().fold(queue_seen, i64::max);
                let since = Since {
                    pg_snapshot: &snapshot,
                    version: expected,
                    queue_seen: seen,
                };
                // Should the read fail, neither batch reaches the database.
                self.innocent = next.ids.iter().chain(&cur.ids).copied().collect();
                let conn = self.lock_conn().await?;
                next.read = Some(
                    snapshot::read(conn, event, Some(since))
                        .await?
                        .ok_or_else(|| anyhow::anyhow!("event {event} no longer exists"))?,
                );
                self.innocent.clear();
                Ok(Some(next))
            }
            .await;
            let lane_ms = tl.elapsed().as_secs_f64() * 1e3;
            let (mut c, mut scored, score_time) = task.await.context("scoring task panicked")?;
            let next = match lane {
                Ok(next) => next,
                Err(e) => {
                    // The batch just scored never reaches the database.
                    self.innocent.extend(&cur.ids);
                    return Err(e);
                }
            };
            cur.held
                .apply(&mut scored.done, &mut scored.problems, &mut scored.deferred);
            // Since the claim: the wait for the lane, the refresh; then the
            // scoring, and the database work done meanwhile.
            debug!(
                read_ms = read_ms as u64,
                score_ms = score_time.as_secs_f64() * 1e3,
                lane_ms,
                full_recomputes = scored.full_recomputes,
                fast_checks = scored.fast_checks,
                slow_checks = scored.slow_checks,
                "scored"
            );
            // Optimistic: the lists are what the write will commit; should
            // it fail, the cached event is dropped.
            let algorithm = c.settings.algorithm.clone();
            c.commit_lists(&scored, &algorithm);
            c.version = version;
            cached = c;
            let p = Pending {
                scored,
                release: std::mem::take(&mut cur.release),
                given_up: cur.given_up.take(),
                algorithm,
                t0: cur.t0,
            };
            match next {
                Some(n) => {
                    pending = Some(p);
                    out.claimed += n.ids.len();
                    out.batches += 1;
                    out.last_full = n.full;
                    cur = n;
                }
                None => {
                    let written = self.write_rows(event, &p).await;
                    if let Ok(v) = written {
                        cached.version = v.filter(|_| !stale);
                        self.cache.insert(event, cached);
                    }
                    written?;
                    return Ok(out);
                }
            }
        }
    }

    /// Writes one scored batch in one transaction: matches, queue rows, job
    /// progress and the event version. Returns the version it wrote, or
    /// `None` when rows went back to the queue (the cached open rows must
    /// then be read again). Touches no cached event.
    async fn write_rows(&mut self, event: Uuid, p: &Pending) -> Result<Option<i64>> {
        let Pending {
            scored,
            release,
            given_up,
            algorithm,
            t0,
        } = p;
        let worker_id = self.worker_id.clone();
        let policy = self.opts.retry;
        let mut failed_ids: Vec<i64> = scored.problems.iter().map(|p| p.0).collect();
        let mut errors: Vec<String> = scored.problems.iter().map(|p| p.2.clone()).collect();
        if let Some(r) = given_up {
            failed_ids.push(r.id);
            errors.push(format!(
                "gave up after {} attempts: the worker holding it died or stalled past its lease each time, \
                 also when it was processed alone",
                r.attempts - 1
            ));
        }
        let mut release = release.clone();
        release.extend(&scored.unstarted);
        let deferred_ids: Vec<i64> = scored.deferred.iter().map(|d| d.0).collect();
        let processed = scored.done.len() as i64;
        let conn = self.lock_conn().await?;
        if scored.diff.rows() == 0 && failed_ids.is_empty() && release.is_empty() && deferred_ids.is_empty() {
            // Nothing to write but the completions: one statement, atomic on
            // its own. Should a row no longer be ours, completing the others
            // is still right (their repair changed nothing), and the error
            // below drops the cached event.
            let recorded = jobs::record_batch(&mut *conn, event, &scored.done, &worker_id, processed, 0, None).await?;
            anyhow::ensure!(
                recorded.completed == processed,
                "lost the lease on {} of {} rows",
                processed - recorded.completed,
                processed
            );
            self.totals.processed += processed;
            debug!(
                processed,
                total_ms = t0.elapsed().as_millis() as u64,
                "batch done (nothing to write)"
            );
            return Ok(Some(recorded.version));
        }
        // The lock connection runs with a short lock_timeout (see
        // `lock_conn`), so this never waits long on an application's lock.
        let mut tx = conn.begin().await.db("starting the write")?;
        matches::apply(&mut tx, event, algorithm, &scored.diff).await?;
        let retried = queue::give_back(&mut tx, &failed_ids, &worker_id, GiveBack::Retry(&errors, policy)).await?;
        let released = queue::give_back(&mut tx, &release, &worker_id, GiveBack::Release).await?;
        let deferred_why: Vec<String> = scored.deferred.iter().map(|d| d.2.clone()).collect();
        let wait = DEFER.clamp(policy.base, policy.cap.max(policy.base));
        let deferred =
            queue::give_back(&mut tx, &deferred_ids, &worker_id, GiveBack::Defer(&deferred_why, wait)).await?;
        let failed = retried.failed;
        // Completes the done rows too, in the same statement.
        let recorded = jobs::record_batch(
            &mut *tx,
            event,
            &scored.done,
            &worker_id,
            processed,
            failed as i64,
            errors.last().map(String::as_str),
        )
        .await?;
        anyhow::ensure!(
            recorded.completed == scored.done.len() as i64,
            "lost the lease on {} of {} rows; not writing this batch",
            scored.done.len() as i64 - recorded.completed,
            scored.done.len()
        );
        let version = recorded.version;
        tx.commit().await.db("committing the batch")?;

        self.totals.processed += processed;
        self.totals.failed += failed as i64;
        self.totals.released += release.len() as i64 - released.left_leased as i64;
        self.totals.released += deferred_ids.len() as i64 - deferred.left_leased as i64;
        for (id, user, err) in scored.problems.iter() {
            warn!(row = id, user.id = %user, error = %err, "attendee not finished (malformed data or no embedding yet)");
        }
        debug!(
            processed,
            problems = scored.problems.len(),
            released = release.len(),
            rows_written = scored.diff.rows(),
            total_ms = t0.elapsed().as_millis() as u64,
            "batch done"
        );
        // Rows given back may be pending, done or failed now.
        let gave_back = !failed_ids.is_empty() || !release.is_empty() || !deferred_ids.is_empty();
        Ok((!gave_back).then_some(version))
    }

    /// Brings the cached snapshot of an event up to date (or loads it).
    async fn refresh(&mut self, event: Uuid) -> Result<CachedEvent> {
        let previous = self.cache.remove(&event);
        if self.cache.len() >= CACHED_EVENTS {
            if let Some(oldest) = self.cache.iter().min_by_key(|(_, c)| c.last_used).map(|(k, _)| *k) {
                self.cache.remove(&oldest);
            }
        }
        if let Some(mut cached) = previous {
            let snap = cached.pg_snapshot.clone();
            let since = Since {
                pg_snapshot: &snap,
                version: cached.version.unwrap_or(-1),
                queue_seen: cached.queue_seen,
            };
            let conn = self.lock_conn().await?;
            let read = snapshot::read(conn, event, Some(since))
                .await?
                .ok_or_else(|| anyhow::anyhow!("event {event} no longer exists"))?;
            if cached.settings == read.settings {
                apply_delta(&mut cached, &read);
                let intact = match read.reloaded {
                    None => true,
                    Some(r) => {
                        let intact = cached.event.participant_count() as i64 == r.participant_count
                            && cached.event.exclusion_rows() as i64 == r.exclusion_count;
                        cached.set_reloaded(r);
                        intact
                    }
                };
                if intact {
                    for (id, user) in read.new_open_rows {
                        cached.add_open(id, user);
                    }
                    cached.pg_snapshot = read.pg_snapshot;
                    cached.version = Some(read.version);
                    return Ok(cached);
                }
                debug!(event.id = %event, "rows were deleted since the last batch; reloading the event");
            }
        }
        let conn = self.lock_conn().await?;
        let read = snapshot::read(conn, event, None)
            .await?
            .ok_or_else(|| anyhow::anyhow!("event {event} no longer exists"))?;
        let cached = load_full(event, read);
        debug!(event.id = %event, participants = cached.event.participant_count(), "loaded the event");
        Ok(cached)
    }
}

/// Extra attempts an overdue row gets, processed alone, before it is given up.
const QUARANTINE_ATTEMPTS: i32 = 3;

/// Rows past their attempts were claimed again after their worker lost them:
/// their worker died or stalled. They are usually innocent (a killed
/// deployment), so they are processed, but one at a time, so that a row that
/// really kills workers takes no other row with it; and after
/// [`QUARANTINE_ATTEMPTS`] more deaths it is given up (failed, not processed).
///
/// Returns (rows to process, rows to release untouched, row to give up).
fn quarantine(rows: Vec<ClaimedRow>, max_attempts: i32) -> (Vec<ClaimedRow>, Vec<i64>, Option<ClaimedRow>) {
    let Some(pos) = rows.iter().position(|r| r.attempts > max_attempts) else {
        return (rows, Vec::new(), None);
    };
    let mut rows = rows;
    let overdue = rows.remove(pos);
    let release = rows.iter().map(|r| r.id).collect();
    if overdue.attempts > max_attempts + QUARANTINE_ATTEMPTS {
        (Vec::new(), release, Some(overdue))
    } else {
        (vec![overdue], release, None)
    }
}

fn settings_of(event: Uuid, row: &SettingsRow) -> EventSettings {
    EventSettings {
        id: event,
        algorithm: row.algorithm.parse(),
        matches_per_user: usize::try_from(row.matches_per_user).unwrap_or(1).clamp(1, 20),
        exclude_same_company: row.exclude_same_company,
        embedding_dimensions: row.embedding_dimensions.and_then(|d| usize::try_from(d).ok()),
    }
}

fn load_full(event: Uuid, read: Read) -> CachedEvent {
    let settings = settings_of(event, &read.settings);
    let dims = settings.embedding_dimensions;
    let mut e = Event::new(settings, TagInterner::default());
    for row in &read.participants {
        let p = Participant::from_row(row, dims, &mut e.tags);
        e.upsert(p);
    }
    for (a, b) in &read.exclusions {
        e.exclude(*a, *b);
    }
    let mut cached = CachedEvent {
        pg_snapshot: read.pg_snapshot,
        settings: read.settings,
        event: e,
        version: Some(read.version),
        committed: IdMap::default(),
        lists: Lists::default(),
        summaries: matching::Summaries::default(),
        open_rows: IdMap::default(),
        open_count: IdMap::default(),
        open_flags: Vec::new(),
        queue_seen: 0,
        last_used: Instant::now(),
    };
    if let Some(r) = read.reloaded {
        cached.set_reloaded(r);
    }
    cached
}

fn apply_delta(cached: &mut CachedEvent, read: &Read) {
    let dims = cached.event.settings.embedding_dimensions;
    for row in &read.participants {
        let p = Participant::from_row(row, dims, &mut cached.event.tags);
        cached.event.upsert(p);
    }
    for (a, b) in &read.exclusions {
        cached.event.exclude(*a, *b);
    }
}

/// Current rows of every list, by owner, in rank order.
fn group_lists(rows: Vec<MatchRow>) -> IdMap<Uuid, Vec<MatchRow>> {
    let mut out: IdMap<Uuid, Vec<MatchRow>> = IdMap::default();
    for r in rows {
        out.entry(r.user_id).or_default().push(r);
    }
    out
}

/// A claimed batch waiting to be scored.
struct Claimed {
    /// Every row claimed, quarantined ones included.
    ids: Vec<i64>,
    /// The rows to process now (see [`quarantine`]).
    rows: Vec<ClaimedRow>,
    /// Whether the claim came back full (more work is likely).
    full: bool,
    /// Overdue rows set aside, released unprocessed.
    release: Vec<i64>,
    given_up: Option<ClaimedRow>,
    held: attach::Held,
    /// The event's snapshot, read ahead while the previous batch was scored.
    read: Option<Read>,
    t0: Instant,
}

/// A scored batch, applied to the cached event, waiting to be written.
struct Pending {
    scored: Scored,
    release: Vec<i64>,
    given_up: Option<ClaimedRow>,
    algorithm: String,
    t0: Instant,
}

/// What [`Worker::stretch`] did.
#[derive(Debug, Default)]
struct Stretch {
    claimed: usize,
    batches: u32,
    last_full: bool,
}

/// Applies a snapshot read ahead of the previous batch's write (see
/// [`Worker::stretch`]). False, changing nothing, unless it shows the
/// version the cached lists were written under and the same settings.
fn absorb(cached: &mut CachedEvent, read: Read) -> bool {
    if cached.settings != read.settings || read.reloaded.is_some() || cached.version != Some(read.version) {
        return false;
    }
    apply_delta(cached, &read);
    for (id, user) in read.new_open_rows {
        cached.add_open(id, user);
    }
    cached.pg_snapshot = read.pg_snapshot;
    true
}

/// The result of scoring one batch.
#[derive(Debug, Default)]
struct Scored {
    diff: Diff,
    /// Owners whose lists the diff rewrites.
    touched: BTreeSet<Uuid>,
    /// Rows repaired cleanly.
    done: Vec<i64>,
    /// Rows repaired but with malformed input to report: (row, attendee, why).
    problems: Vec<(i64, Uuid, String)>,
    /// Rows not started before the deadline or shutdown.
    unstarted: Vec<i64>,
    /// Rows repaired but waiting on the embedding provider: (row, attendee, why).
    deferred: Vec<(i64, Uuid, String)>,
    full_recomputes: usize,
    fast_checks: usize,
    slow_checks: usize,
}

/// Repairs each claimed attendee in claim order (changing `cached.lists` in
/// place), then diffs the changed lists against the committed ones.
fn score_batch(
    cached: &mut CachedEvent,
    rows: &[ClaimedRow],
    deadline: Option<std::time::Instant>,
    stop: &CancellationToken,
    fault_delay: Duration,
) -> Scored {
    for r in rows {
        // Claimed rows are open; one committed out of id order may be new.
        cached.add_open(r.id, r.user_id);
    }
    if cached.open_flags.len() != cached.event.participant_count() {
        cached.sync_open_flags();
    }
    let CachedEvent {
        event,
        lists,
        summaries,
        committed,
        open_count,
        open_flags,
        ..
    } = cached;
    let event = &*event;
    let mut dirty = BatchDirty::new(event, open_count, open_flags, rows);
    let mut out = Scored::default();
    let mut repaired = HashSet::new();
    // Every claimed attendee's scores against the event, in one kernel call.
    let mut users: Vec<&Participant> = Vec::with_capacity(rows.len());
    let mut row_of: HashMap<Uuid, usize> = HashMap::with_capacity(rows.len());
    for r in rows {
        if let Some(p) = event.participant(r.user_id).filter(|p| event.matchable(p)) {
            if let std::collections::hash_map::Entry::Vacant(slot) = row_of.entry(p.user_id) {
                slot.insert(users.len());
                users.push(p);
            }
        }
    }
    let n = event.participant_count();
    // Large cosine-v1 events: approximate rows, made exact where it matters
    // by the plans (see `matching::plan_bounded`).
    let (mut score_rows, bounds) = match (n >= APPROX_MIN_PARTICIPANTS)
        .then(|| event.approx_rows(&users))
        .flatten()
    {
        Some((rows, bounds)) => (rows, Some(bounds)),
        None => (event.score_rows(&users), None),
    };
    // Each attendee's own list and the lists their bump must look at, decided
    // in parallel against the lists as they were when the batch started.
    summaries.fill(event, lists);
    let clean: Vec<bool> = event
        .participants()
        .iter()
        .enumerate()
        .map(|(i, p)| !matching::Dirty::is_dirty_at(&dirty, i, &p.user_id))
        .collect();
    let plans = plan_all(event, summaries, &clean, &users, &mut score_rows, bounds.as_deref(), n);
    for row in rows {
        let late = deadline.is_some_and(|d| std::time::Instant::now() >= d);
        if late || stop.is_cancelled() {
            out.unstarted.push(row.id);
            continue;
        }
        if !fault_delay.is_zero() {
            std::thread::sleep(fault_delay);
        }
        dirty.repaired(&row.user_id);
        let precomputed = row_of.get(&row.user_id).map(|&i| &score_rows[i * n..(i + 1) * n]);
        let plan = row_of.get(&row.user_id).map(|&i| &plans[i]);
        let r = matching::repair_fast(event, lists, &dirty, row.user_id, precomputed, Some(summaries), plan);
        out.full_recomputes += r.full_recomputes;
        out.fast_checks += r.fast_checks;
        out.slow_checks += r.slow_checks;
        out.touched.extend(r.touched);
        // Rows pointing at a repaired attendee get fresh reasons even when
        // the score did not move (their profile text may have).
        out.touched.extend(r.holders);
        repaired.insert(row.user_id);
        match r.problem {
            Some(p) => out.problems.push((row.id, row.user_id, p)),
            None => out.done.push(row.id),
        }
    }
    out.diff = diff(event, committed, lists, &out.touched, &repaired);
    out
}

/// [`matching::plan`] for every scored attendee, on all cores; with
/// `bounds`, the rows are approximate and [`matching::plan_bounded`] makes
/// the scores that matter exact in place.
fn plan_all(
    event: &Event,
    summaries: &matching::Summaries,
    clean: &[bool],
    users: &[&Participant],
    rows: &mut [f32],
    bounds: Option<&[f32]>,
    n: usize,
) -> Vec<matching::Plan> {
    if users.is_empty() || n == 0 {
        return Vec::new();
    }
    let one = |j: usize, row: &mut [f32]| match bounds {
        Some(b) => matching::plan_bounded(event, summaries, clean, users[j], row, b[j]),
        None => matching::plan(event, summaries, clean, users[j], row),
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(users.len());
    if threads <= 1 || users.len() * n < 50_000 {
        return rows.chunks_mut(n).enumerate().map(|(j, row)| one(j, row)).collect();
    }
    let per = users.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = rows
            .chunks_mut(per * n)
            .enumerate()
            .map(|(c, chunk)| {
                let one = &one;
                s.spawn(move || {
                    chunk
                        .chunks_mut(n)
                        .enumerate()
                        .map(|(j, row)| one(c * per + j, row))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// The writes that turn the old lists into the new ones for `touched` owners.
fn diff(
    event: &Event,
    old: &IdMap<Uuid, Vec<MatchRow>>,
    new: &Lists,
    touched: &BTreeSet<Uuid>,
    repaired: &HashSet<Uuid>,
) -> Diff {
    let version = match &event.settings.algorithm {
        Ok(a) => a.as_str(),
        Err(_) => "",
    };
    let mut d = Diff::default();
    let empty = Vec::new();
    for owner in touched {
        let before = old.get(owner).unwrap_or(&empty);
        let after = new.get(owner).map(Vec::as_slice).unwrap_or(&[]);
        for (i, e) in after.iter().enumerate() {
            let rank = (i + 1) as i16;
            let prior = before.iter().find(|r| r.matched_user_id == e.user);
            let rewrite = match prior {
                None => true,
                Some(p) => {
                    repaired.contains(owner)
                        || repaired.contains(&e.user)
                        || p.score.to_bits() != e.score.to_bits()
                        || p.algorithm_version != version
                }
            };
            if rewrite {
                let reasons = match (
                    &event.settings.algorithm,
                    event.participant(*owner),
                    event.participant(e.user),
                ) {
                    (Ok(alg), Some(me), Some(other)) => explain(*alg, me, other, &event.tags).to_string(),
                    _ => "{}".to_string(),
                };
                d.upsert.push(Upsert {
                    user_id: *owner,
                    matched_user_id: e.user,
                    rank,
                    score: e.score,
                    reasons,
                });
            } else if prior.is_some_and(|p| p.rank != rank) {
                d.rerank.push((*owner, e.user, rank));
            }
        }
        for r in before {
            if !after.iter().any(|e| e.user == r.matched_user_id) {
                d.delete.push((*owner, r.matched_user_id));
            }
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, attempts: i32) -> ClaimedRow {
        ClaimedRow {
            id,
            user_id: Uuid::from_u128(id as u128),
            attempts,
        }
    }

    #[test]
    fn quarantine_processes_overdue_rows_alone_then_gives_up() {
        let (go, release, give_up) = quarantine(vec![row(1, 1), row(2, 2)], 5);
        assert_eq!((go.len(), release.len(), give_up.is_none()), (2, 0, true));
        // Overdue: processed alone, the others go back untouched.
        let (go, release, give_up) = quarantine(vec![row(1, 1), row(2, 6), row(3, 7)], 5);
        assert_eq!(go.iter().map(|r| r.id).collect::<Vec<_>>(), vec![2]);
        assert_eq!(release, vec![1, 3]);
        assert!(give_up.is_none());
        // Still killing its worker when alone: given up, not processed.
        let (go, release, give_up) = quarantine(vec![row(1, 1), row(2, 9)], 5);
        assert!(go.is_empty());
        assert_eq!(release, vec![1]);
        assert_eq!(give_up.map(|r| r.id), Some(2));
    }
}
