//! The worker: pick an event → take its lock → claim a batch → refresh the
//! event snapshot → repair each claimed attendee → write the changed lists
//! and finish the rows in one transaction → release the lock; until the
//! queue is drained, the deadline nears, or shutdown is requested.
//!
//! The files read in data-flow order:
//!
//! - [`drain`]: the loop: which event next, its lock, the deadline, pauses,
//!   what a failed batch hands back, the run record.
//! - [`pipeline`]: the batches of one event: claim → read → score → write →
//!   finish, pipelined while batches come full (batch i is scored while the
//!   connection writes batch i-1 and claims and reads batch i+1; see
//!   `pipeline` for why that order is as exact as the sequential one).
//! - [`cache`]: the events kept in memory between batches, and when what is
//!   held may be trusted.
//! - [`embeddings`]: provider vectors for a batch's attendees without one.
//!
//! The scoring itself is pure and lives in `matching::batch`.
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
//!   bumps it after taking the event lock (see [`cache`] and the
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

mod cache;
pub use cache::event_of;
mod drain;
mod embeddings;
mod pipeline;

use crate::store::jobs::RunRecord;
use crate::store::queue::RetryPolicy;
use anyhow::Result;
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

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
    /// Where to record metrics (`None`: not recorded at all).
    pub metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
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
            metrics: None,
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
    /// The name written to the run record and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Drained => "drained",
            StopReason::Deadline => "deadline",
            StopReason::Shutdown => "shutdown",
        }
    }
}

/// Totals of one worker invocation.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunTotals {
    pub batches: i64,
    pub claimed: i64,
    pub processed: i64,
    pub failed: i64,
    pub released: i64,
    /// What the embedding provider did for this run (zeros without one).
    pub embeddings: crate::embeddings::EmbedStats,
}

impl RunTotals {
    /// The totals as the run history records them.
    pub fn record(&self) -> RunRecord {
        let e = &self.embeddings;
        RunRecord {
            batches: self.batches,
            claimed: self.claimed,
            processed: self.processed,
            failed: self.failed,
            released: self.released,
            embedding_inputs: e.inputs,
            embedding_cache_hits: e.cache_hits,
            embedding_cache_misses: e.cache_misses,
            embedding_calls: e.provider_calls,
            embedding_tokens: e.tokens,
            embedding_failures: e.failed_requests + e.fast_failures,
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

/// What a long-running process keeps between runs: its worker id and the
/// event snapshots (refreshed by deltas, so a daemon woken by one join does
/// not reload the whole event).
pub struct Session {
    worker_id: String,
    cache: cache::EventCache,
    /// The lock connection of the last run, when it ended cleanly (no
    /// transaction, no event lock): the next run's, if still fresh. Opening
    /// one is most of a join's claim time otherwise.
    lock_conn: Option<KeptConn>,
}

/// A lock connection kept between runs (see [`Session`]).
struct KeptConn {
    conn: sqlx::PgConnection,
    /// When the run that used it ended.
    since: std::time::Instant,
    /// The lease it was opened for: the server ends the session after that
    /// long idle (`idle_session_timeout`).
    lease: Duration,
}

impl Session {
    pub fn new() -> Self {
        Self {
            worker_id: worker_id(),
            cache: cache::EventCache::default(),
            lock_conn: None,
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
    drain::run(session, pool, connect, opts, shutdown).await
}
