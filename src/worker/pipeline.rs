//! The batches of one event, its lock held: claim → read → score → write →
//! finish, pipelined while they come full.
//!
//! While batch i is scored on the CPU, the lock connection writes batch i-1,
//! then claims batch i+1 and reads its snapshot. That is the sequential
//! order with the database work moved into the scoring time, and it is
//! exact for the same reasons as the sequential one:
//! - batch i is scored against the lists batch i-1 left in memory, which
//!   are what batch i-1's write commits; batch i's write goes out on the
//!   same connection only after that commit. A failed write drops the
//!   cached event, and the rows of the batches behind it are released
//!   untouched ([`BatchError::untried`]).
//! - batch i+1's snapshot is read after batch i-1 committed and before
//!   batch i did. Every writer of lists and closer of queue rows bumps the
//!   event version under the event lock, which this worker holds, so that
//!   snapshot must show batch i-1's version. If it does not, or the event's
//!   settings changed, batch i is written first and the event read again,
//!   exactly as sequentially (see `cache`). Participant changes need no
//!   care: a change committed after a snapshot has an open queue row that a
//!   later batch repairs, whichever batch wrote last.
//! - the claim of batch i+1 skips batch i's rows, still `processing` under
//!   this worker's lease, which the takeover of a dead worker's rows would
//!   otherwise take (see `queue::claim`).

use super::cache::{self, CachedEvent};
use super::drain::Worker;
use super::embeddings::{self, Held};
use crate::matching::batch::{self, BatchDirty, BatchRow, Limits, Scored};
use crate::metrics::Phase;
use crate::store::jobs;
use crate::store::matches;
use crate::store::queue::{self, ClaimedRow, GiveBack};
use crate::store::snapshot::{Read, Since};
use crate::store::DbResult;
use anyhow::{Context, Result};
use sqlx::Connection;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, field, info_span, warn, Span};
use uuid::Uuid;

/// How long rows waiting on the embedding provider wait before they are
/// tried again (bounded by `--retry-base` and `--retry-max`); attempts are
/// not spent, so an outage of any length never fails them.
const DEFER: Duration = Duration::from_secs(30);

/// Extra attempts an overdue row gets, processed alone, before it is given up.
const QUARANTINE_ATTEMPTS: i32 = 3;

/// A failed stretch of batches: the error, and the claimed rows that were
/// never tried (batches queued behind the one that failed, or one scored
/// but never written), which go back without spending an attempt.
#[derive(Debug)]
pub struct BatchError {
    pub untried: Vec<i64>,
    pub source: anyhow::Error,
}

impl From<anyhow::Error> for BatchError {
    fn from(source: anyhow::Error) -> Self {
        Self {
            untried: Vec::new(),
            source,
        }
    }
}

impl BatchError {
    fn untried(source: anyhow::Error, untried: impl IntoIterator<Item = i64>) -> Self {
        Self {
            untried: untried.into_iter().collect(),
            source,
        }
    }
}

/// What [`Worker::pipeline`] did.
#[derive(Debug, Default)]
pub(super) struct Stretch {
    pub(super) claimed: usize,
    pub(super) batches: u32,
    /// Whether the last claim came back full (more work is likely).
    pub(super) last_full: bool,
}

/// Where one batch's time went, in milliseconds (recorded on its span).
#[derive(Debug, Default, Clone, Copy)]
struct Phases {
    claim: f64,
    read: f64,
    score: f64,
}

/// A claimed batch waiting to be scored.
struct Claimed {
    /// Every row claimed, quarantined ones included.
    ids: Vec<i64>,
    /// The rows to process now (see [`quarantine`]).
    rows: Vec<BatchRow>,
    /// Whether the claim came back full.
    full: bool,
    /// Overdue rows set aside, released unprocessed.
    release: Vec<i64>,
    given_up: Option<ClaimedRow>,
    held: Held,
    /// The event's snapshot, read ahead while the previous batch was scored.
    read: Option<Read>,
    t0: Instant,
    phases: Phases,
    /// `batch` {event.id, run.id, batch.size, claim_ms, read_ms, score_ms, write_ms}.
    span: Span,
    /// How long each row had waited when claimed (for the metrics).
    waited: Waited,
}

/// Seconds each claimed row had waited since it was enqueued, by row id.
type Waited = std::collections::HashMap<i64, f64>;

/// A scored batch, applied to the cached event, waiting to be written.
struct Pending {
    scored: Scored,
    release: Vec<i64>,
    given_up: Option<ClaimedRow>,
    algorithm: String,
    t0: Instant,
    span: Span,
    waited: Waited,
}

impl Worker {
    /// Claims a batch of `event` (the event lock held on the lock
    /// connection), skipping `in_flight`, rows of this worker's own batch
    /// still being scored; sets overdue rows aside (see [`quarantine`]) and
    /// fetches provider embeddings. `None` when nothing was claimable.
    async fn claim_batch(
        &mut self,
        event: Uuid,
        in_flight: &[i64],
        deadline: Option<Instant>,
    ) -> Result<Option<Claimed>> {
        let t0 = Instant::now();
        let worker_id = self.worker_id.clone();
        let (batch_size, lease) = (self.opts.batch_size, self.opts.lease);
        let conn = self.lock_conn().await?;
        let rows = queue::claim(conn, event, batch_size, &worker_id, lease, in_flight).await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let claimed = rows.len();
        self.totals.batches += 1;
        self.totals.claimed += claimed as i64;
        let span = info_span!("batch", event.id = %event, run.id = %self.run_id, batch.size = claimed,
                              claim_ms = field::Empty, read_ms = field::Empty, score_ms = field::Empty,
                              write_ms = field::Empty);
        let ids = rows.iter().map(|r| r.id).collect();
        let waited = rows.iter().map(|r| (r.id, r.waited_seconds)).collect();
        let (rows, release, given_up) = quarantine(rows, self.opts.retry.max_attempts);
        let rows: Vec<BatchRow> = rows
            .iter()
            .map(|r| BatchRow {
                id: r.id,
                user_id: r.user_id,
            })
            .collect();
        // Provider embeddings for attendees without one, committed before
        // the snapshot (see `embeddings` for why that is exact).
        let held = match (self.opts.embedder.clone(), self.opts.null_scorer) {
            (Some(e), false) => {
                let stats = &mut self.totals.embeddings;
                embeddings::attach(&self.pool, &e, event, &rows, deadline, self.opts.lease, stats).await?
            }
            _ => Held::default(),
        };
        let phases = Phases {
            claim: ms(t0),
            ..Phases::default()
        };
        span.record("claim_ms", phases.claim);
        self.observe(Phase::Claim, t0.elapsed());
        Ok(Some(Claimed {
            ids,
            rows,
            full: claimed as i64 >= batch_size,
            release,
            given_up,
            held,
            read: None,
            t0,
            phases,
            span,
            waited,
        }))
    }

    /// Batches of one event while they come full, until `until` (then the
    /// drain loop chooses again); see the module docs for the pipelining.
    pub(super) async fn pipeline(
        &mut self,
        event: Uuid,
        deadline: Option<Instant>,
        margin: Duration,
        until: Instant,
    ) -> Result<Stretch, BatchError> {
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
                span: cur.span,
                waited: cur.waited,
            };
            self.write(event, &p).await?;
            return Ok(out);
        }
        let t_read = Instant::now();
        let mut cached = self.refresh(event).await?;
        cur.phases.read = ms(t_read);
        self.observe(Phase::Read, t_read.elapsed());
        // The batch scored and applied in memory but not yet written.
        let mut pending: Option<Pending> = None;
        // A write gave rows back: the cached open rows are a guess from then on.
        let mut stale = false;
        loop {
            // The snapshot read ahead for this batch, applied now that the
            // previous batch's scoring is over.
            if let Some(read) = cur.read.take() {
                if !cached.absorb(read) {
                    debug!(event.id = %event, "the event moved under the read-ahead; writing and reading it again");
                    if let Some(p) = pending.take() {
                        self.write(event, &p)
                            .await
                            .map_err(|e| BatchError::untried(e, cur.ids.clone()))?;
                    }
                    // Not in the cache while held here: a full read.
                    let t_read = Instant::now();
                    cached = self.refresh(event).await?;
                    cur.phases.read += ms(t_read);
                    self.observe(Phase::Read, t_read.elapsed());
                    stale = false;
                }
            }
            cur.span.record("read_ms", cur.phases.read);
            let snapshot = cached.pg_snapshot.clone();
            let mut version = cached.version;
            let queue_seen = cached.queue_seen;

            // Score this batch on the blocking pool...
            let rows = std::mem::take(&mut cur.rows);
            let stop = self.shutdown.clone();
            let score_deadline = deadline.map(|d| d.into_std());
            let fault_delay = self.opts.fault_score_delay;
            let span = cur.span.clone();
            let task = tokio::task::spawn_blocking(move || {
                let _in = span.enter();
                let ts = std::time::Instant::now();
                let result = score(&mut cached, &rows, score_deadline, &|| stop.is_cancelled(), fault_delay);
                cached.touch();
                (cached, result, ts.elapsed())
            });
            let tl = Instant::now();

            // ...while the connection writes the previous one and claims
            // and reads the next.
            let lane: Result<Option<Claimed>, BatchError> = async {
                if let Some(p) = pending.take() {
                    match self.write(event, &p).await? {
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
                let t_read = Instant::now();
                let read = async {
                    let conn = self.lock_conn().await?;
                    cache::read_event(conn, event, Some(since)).await
                }
                .await
                .map_err(|e| BatchError::untried(e, next.ids.clone()))?;
                next.read = Some(read);
                next.phases.read = ms(t_read);
                self.observe(Phase::Read, t_read.elapsed());
                Ok(Some(next))
            }
            .await;
            let lane_ms = ms(tl);
            let (mut c, mut scored, score_time) = task.await.context("scoring task panicked")?;
            // The batch just scored never reaches the database if the lane failed.
            let next = lane.map_err(|mut e| {
                e.untried.extend(&cur.ids);
                e
            })?;
            cur.held
                .apply(&mut scored.done, &mut scored.problems, &mut scored.deferred);
            cur.phases.score = score_time.as_secs_f64() * 1e3;
            cur.span.record("score_ms", cur.phases.score);
            self.observe(Phase::Score, score_time);
            let phases = scored.phases;
            debug!(parent: &cur.span, lane_ms, full_recomputes = scored.full_recomputes,
                   fast_checks = scored.fast_checks, slow_checks = scored.slow_checks,
                   rows_ms = phases.rows.as_secs_f64() * 1e3, fill_ms = phases.fill.as_secs_f64() * 1e3,
                   plan_ms = phases.plan.as_secs_f64() * 1e3, repair_ms = phases.repair.as_secs_f64() * 1e3,
                   diff_ms = phases.diff.as_secs_f64() * 1e3, "scored");
            // Optimistic: the lists are what the write will commit; should
            // it fail, the cached event is dropped.
            c.commit(&scored);
            c.version = version;
            let algorithm = c.settings.algorithm.clone();
            cached = c;
            let p = Pending {
                scored,
                release: std::mem::take(&mut cur.release),
                given_up: cur.given_up.take(),
                algorithm,
                t0: cur.t0,
                span: cur.span.clone(),
                waited: std::mem::take(&mut cur.waited),
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
                    let written = self.write(event, &p).await;
                    if let Ok(v) = written {
                        cached.version = v.filter(|_| !stale);
                        self.cache.put(event, cached);
                    }
                    written?;
                    return Ok(out);
                }
            }
        }
    }

    /// Records a batch phase when metrics are on.
    fn observe(&self, phase: Phase, took: Duration) {
        if let Some(m) = &self.opts.metrics {
            m.observe_phase(phase, took);
        }
    }

    /// Brings the cached snapshot of an event up to date (or loads it).
    async fn refresh(&mut self, event: Uuid) -> Result<CachedEvent> {
        let mut cache = std::mem::take(&mut self.cache);
        let refreshed = match self.lock_conn().await {
            Ok(conn) => cache.refresh(conn, event).await,
            Err(e) => Err(e),
        };
        self.cache = cache;
        refreshed
    }

    /// Writes one scored batch in one transaction: matches, queue rows, job
    /// progress and the event version. Returns the version it wrote, or
    /// `None` when rows went back to the queue (the cached open rows must
    /// then be read again). Touches no cached event.
    async fn write(&mut self, event: Uuid, p: &Pending) -> Result<Option<i64>> {
        let tw = Instant::now();
        let written = self.write_rows(event, p).await;
        p.span.record("write_ms", ms(tw));
        if let (Some(m), Ok(_)) = (&self.opts.metrics, &written) {
            m.observe_phase(Phase::Write, tw.elapsed());
            // Claimed at p.t0 after waiting `waited`; committed now.
            let since_claim = p.t0.elapsed().as_secs_f64();
            for id in &p.scored.done {
                if let Some(w) = p.waited.get(id) {
                    m.observe_join_to_match(Duration::from_secs_f64((w + since_claim).max(0.0)));
                }
            }
        }
        debug!(parent: &p.span, total_ms = ms(p.t0), ok = written.is_ok(), "batch written");
        written
    }

    async fn write_rows(&mut self, event: Uuid, p: &Pending) -> Result<Option<i64>> {
        let Pending {
            scored,
            release,
            given_up,
            algorithm,
            ..
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
            return Ok(Some(recorded.version));
        }
        // The lock connection runs with a short lock_timeout (see
        // `Worker::lock_conn`), so this never waits long on an
        // application's lock.
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
            parent: &p.span,
            processed,
            problems = scored.problems.len(),
            released = release.len(),
            rows_written = scored.diff.rows(),
            "batch done"
        );
        // Rows given back may be pending, done or failed now.
        let gave_back = !failed_ids.is_empty() || !release.is_empty() || !deferred_ids.is_empty();
        Ok((!gave_back).then_some(version))
    }
}

/// Scores a batch against the cached event (pure; see `matching::batch`).
fn score(
    cached: &mut CachedEvent,
    rows: &[BatchRow],
    deadline: Option<std::time::Instant>,
    stop: &dyn Fn() -> bool,
    fault_delay: Duration,
) -> Scored {
    cached.claim(rows);
    let CachedEvent {
        event,
        lists,
        summaries,
        committed,
        open_count,
        open_flags,
        ..
    } = cached;
    let dirty = BatchDirty::new(event, open_count, open_flags, rows);
    let limits = Limits {
        deadline,
        stop,
        fault_delay,
    };
    batch::score_batch(event, lists, summaries, committed, dirty, rows, limits)
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, attempts: i32) -> ClaimedRow {
        ClaimedRow {
            id,
            user_id: Uuid::from_u128(id as u128),
            attempts,
            waited_seconds: 0.0,
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
