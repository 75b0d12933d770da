//! `matchmaking_queue`: choosing an event, the per-event lock, claiming,
//! completing, retrying and releasing rows.

use super::DbResult;
use anyhow::Result;
use sqlx::{PgConnection, PgExecutor};
use std::time::Duration;
use uuid::Uuid;

/// SQLSTATE of a `lock_timeout` expiry.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// A row this worker claimed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedRow {
    pub id: i64,
    pub user_id: Uuid,
    /// Attempts including this one.
    pub attempts: i32,
    /// How long ago the row was enqueued, on the database's clock.
    pub waited_seconds: f64,
}

/// The next event with claimable work, best priority first, skipping the
/// events in `skip` (their lock is held by another worker).
///
/// Claimable: pending and due, or processing (a batch in progress, whose
/// event lock will then be busy, or rows left by a worker that lost its lock;
/// see [`claim`]). Read-only and lock-free; the claim re-checks everything.
pub async fn next_event(db: impl PgExecutor<'_>, only: Option<Uuid>, skip: &[Uuid]) -> Result<Option<Uuid>> {
    sqlx::query_scalar(
        // Paused events are skipped (their rows of the best priority are
        // stepped over in the index, like the events in `skip`).
        "WITH paused AS (SELECT event_id FROM matchmaking_event_state WHERE paused_at IS NOT NULL)
         SELECT event_id FROM (
             (SELECT event_id, priority FROM matchmaking_queue
               WHERE status = 'pending' AND available_at <= now()
                 AND ($1::uuid IS NULL OR event_id = $1) AND event_id <> ALL($2)
                 AND event_id <> ALL(ARRAY(SELECT event_id FROM paused))
               ORDER BY priority DESC, available_at LIMIT 64)
             UNION ALL
             (SELECT event_id, priority FROM matchmaking_queue
               WHERE status = 'processing'
                 AND ($1::uuid IS NULL OR event_id = $1) AND event_id <> ALL($2)
                 AND event_id <> ALL(ARRAY(SELECT event_id FROM paused))
               LIMIT 64)
         ) c
         GROUP BY event_id ORDER BY max(priority) DESC, event_id LIMIT 1",
    )
    .bind(only)
    .bind(skip)
    .fetch_optional(db)
    .await
    .db("looking for queued work")
}

/// Takes the event's advisory lock for this session without waiting.
///
/// Holding it is what serialises batches of one event (see
/// `migrations/*_triggers.sql` for the contract with the triggers). It is a
/// session lock, so it does not keep a transaction open while scoring, and
/// PostgreSQL drops it when the connection dies (a killed worker never
/// strands an event).
pub async fn try_lock_event(conn: &mut PgConnection, event: Uuid) -> Result<bool> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock(matchmaker_lock_key($1))")
        .bind(event)
        .fetch_one(conn)
        .await
        .db("taking the event lock")
}

/// Releases the event's advisory lock.
pub async fn unlock_event(conn: &mut PgConnection, event: Uuid) -> Result<()> {
    let released: bool = sqlx::query_scalar("SELECT pg_advisory_unlock(matchmaker_lock_key($1))")
        .bind(event)
        .fetch_one(conn)
        .await
        .db("releasing the event lock")?;
    anyhow::ensure!(released, "the lock of event {event} was not held");
    Ok(())
}

/// Releases every advisory lock of this session.
pub async fn unlock_all(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(conn)
        .await
        .db("releasing the event locks")?;
    Ok(())
}

/// Claims up to `n` rows of one event, highest priority first, under a lease.
///
/// Committed on its own (autocommit), so no transaction stays open while the
/// batch is scored. `FOR UPDATE SKIP LOCKED` skips rows another transaction
/// holds, e.g. a trigger that is raising the priority of a pending row in an
/// uncommitted application transaction: that row is left for a later batch,
/// which will see the application's change. Attempts are counted here, so a
/// worker killed mid-batch still spends one.
///
/// The caller holds the event's lock, and that is what makes taking over
/// `processing` rows safe *before* their lease expires: every batch claims,
/// writes and finishes its rows while it holds the lock, so a processing row
/// seen under the lock belongs to no running batch. Its worker died (its
/// session, and so its lock, ended), was cut off, or stalled past the lock
/// connection's `idle_session_timeout`; if it ever wakes up, its write fails
/// on its dead connection and its give-back is refused by the `locked_by`
/// guard. So a killed worker's rows are reclaimed at once, not after the
/// lease. The one exception is the caller's own batch still in flight
/// (`in_flight`: claimed under this same lock hold, being scored while this
/// claim runs), which is not taken over.
pub async fn claim(
    conn: &mut PgConnection,
    event: Uuid,
    n: i64,
    worker: &str,
    lease: Duration,
    in_flight: &[i64],
) -> Result<Vec<ClaimedRow>> {
    sqlx::query_as::<_, ClaimedRow>(&format!(
        // Two index scans (orphaned processing rows, due pending rows), each
        // locking at most n rows, then the best n of both: never a scan of
        // the event's whole backlog. Nothing is claimed while the event is
        // paused: `pause` commits under the event lock, which the caller
        // holds, so this sees a pause that committed before the claim.
        //
        // The batch size is part of the text, not a parameter: with LIMIT
        // known, PostgreSQL's generic plan for this prepared statement is
        // the custom one, so it stops planning every claim (with LIMIT $n
        // it estimated 10% of the queue, a sequential scan, and re-planned
        // each time: 0.26 ms a claim).
        "WITH running AS (
             SELECT NOT EXISTS (SELECT 1 FROM matchmaking_event_state
                                 WHERE event_id = $1 AND paused_at IS NOT NULL) AS yes),
         orphans AS (
             SELECT id, priority, enqueued_at FROM matchmaking_queue
              WHERE event_id = $1 AND status = 'processing' AND id <> ALL($4)
                AND (SELECT yes FROM running)
              ORDER BY priority DESC, enqueued_at, id
              LIMIT {n}
              FOR UPDATE SKIP LOCKED),
         due AS (
             SELECT id, priority, enqueued_at FROM matchmaking_queue
              WHERE event_id = $1 AND status = 'pending' AND available_at <= now()
                AND (SELECT yes FROM running)
              ORDER BY priority DESC, enqueued_at, id
              LIMIT {n}
              FOR UPDATE SKIP LOCKED),
         picked AS (
             SELECT id FROM (SELECT * FROM orphans UNION ALL SELECT * FROM due) c
              ORDER BY priority DESC, enqueued_at, id
              LIMIT {n})
         UPDATE matchmaking_queue q
            SET status = 'processing', attempts = q.attempts + 1, locked_by = $2,
                locked_until = now() + make_interval(secs => $3), claimed_at = now()
           FROM picked WHERE q.id = picked.id
         RETURNING q.id, q.user_id, q.attempts,
                   extract(epoch FROM now() - q.enqueued_at)::float8 AS waited_seconds",
    ))
    .bind(event)
    .bind(worker)
    .bind(lease.as_secs_f64())
    .bind(in_flight)
    .fetch_all(conn)
    .await
    .db("claiming a batch")
}

/// How a claimed row that is not done goes back.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts before a row ends `failed`.
    pub max_attempts: i32,
    /// Delay after the first failed attempt; doubles with each attempt.
    pub base: Duration,
    /// Longest delay (applied before the ±50% jitter).
    pub cap: Duration,
}

/// What [`give_back`] does with each row.
pub enum GiveBack<'a> {
    /// Not started (deadline or shutdown): pending again at once, and the
    /// attempt the claim counted is refunded.
    Release,
    /// Failed with these errors (one per id): pending again after an
    /// exponential backoff with jitter, or `failed` after the last attempt.
    Retry(&'a [String], RetryPolicy),
    /// Waiting on something outside the row (an embedding provider that is
    /// down): pending again after this delay (with jitter) and these
    /// messages, with the attempt refunded, so an outage never fails rows.
    Defer(&'a [String], Duration),
}

/// What [`give_back`] managed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GaveBack {
    /// Rows that ended `failed`.
    pub failed: u64,
    /// Rows left `processing` because a concurrent transaction held a
    /// conflicting lock past `lock_timeout`; the next batch of their event takes them over.
    pub left_leased: u64,
}

/// Returns claimed rows to the queue (see [`GiveBack`]).
///
/// A row can only go back to `pending` if its attendee has no other pending
/// row (one pending row per attendee). When a newer change already enqueued
/// one, this row is marked done instead: the newer row redoes the work. If
/// that newer row is inserted concurrently, our UPDATE waits for it and then
/// fails with a unique violation; the statement runs in a savepoint and is
/// retried, and the retry sees the committed row. If the newer row's
/// transaction is itself waiting for this worker (a trigger waiting for the
/// event lock), the wait ends at `lock_timeout` and the rows are left to
/// the next batch rather than deadlock with the application.
pub async fn give_back(conn: &mut PgConnection, ids: &[i64], worker: &str, how: GiveBack<'_>) -> Result<GaveBack> {
    if ids.is_empty() {
        return Ok(GaveBack::default());
    }
    let (errors, policy, refund, defer) = match how {
        GiveBack::Release => (None, None, true, None),
        GiveBack::Retry(errors, policy) => (Some(errors), Some(policy), false, None),
        GiveBack::Defer(errors, delay) => (Some(errors), None, true, Some(delay.as_secs_f64())),
    };
    let mut last_err = None;
    for _ in 0..3 {
        let mut sp = sqlx::Connection::begin(&mut *conn).await.db("opening a savepoint")?;
        let result = sqlx::query_scalar::<_, i64>(
            "WITH mine AS (
                 SELECT q.id, e.err,
                        CASE
                            WHEN NOT $3 AND q.attempts >= $5 THEN 'failed'
                            -- Two claimed rows of one attendee (a reclaimed lease
                            -- and a newer change): only the newest may be pending.
                            WHEN row_number() OVER (PARTITION BY q.event_id, q.user_id ORDER BY q.id DESC) > 1
                              OR EXISTS (SELECT 1 FROM matchmaking_queue s
                                          WHERE s.event_id = q.event_id AND s.user_id = q.user_id
                                            AND s.status = 'pending') THEN 'done'
                            ELSE 'pending'
                        END AS next
                   FROM matchmaking_queue q
                   JOIN unnest($1::bigint[], $4::text[]) AS e(id, err) ON q.id = e.id
                  WHERE q.status = 'processing' AND q.locked_by = $2),
             upd AS (
                 UPDATE matchmaking_queue q SET
                     status = m.next,
                     attempts = CASE WHEN $3 THEN greatest(q.attempts - 1, 0) ELSE q.attempts END,
                     available_at = CASE WHEN $3 THEN now() + make_interval(secs => coalesce($8, 0) * (0.5 + random() / 2))
                         ELSE now() + make_interval(secs =>
                         least($7, $6 * power(2, greatest(q.attempts - 1, 0))) * (0.5 + random() / 2)) END,
                     last_error = CASE WHEN $3 THEN coalesce(nullif(m.err, ''), q.last_error) ELSE m.err END,
                     locked_until = NULL, locked_by = NULL,
                     finished_at = CASE WHEN m.next IN ('done', 'failed') THEN now() END
                   FROM mine m
                  WHERE q.id = m.id
                 RETURNING q.status)
             SELECT count(*) FILTER (WHERE status = 'failed') FROM upd",
        )
        .bind(ids)
        .bind(worker)
        .bind(refund)
        .bind(match errors {
            Some(e) => e.to_vec(),
            None => vec![String::new(); ids.len()],
        })
        .bind(policy.map_or(i32::MAX, |p| p.max_attempts))
        .bind(policy.map_or(0.0, |p| p.base.as_secs_f64()))
        .bind(policy.map_or(0.0, |p| p.cap.as_secs_f64()))
        .bind(defer)
        .fetch_one(&mut *sp)
        .await;
        match result {
            Ok(failed) => {
                sp.commit().await.db("releasing the savepoint")?;
                return Ok(GaveBack {
                    failed: u64::try_from(failed).unwrap_or(0),
                    left_leased: 0,
                });
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                sp.rollback().await.db("rolling back the savepoint")?;
                last_err = Some(e.to_string());
            }
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(LOCK_NOT_AVAILABLE) => {
                sp.rollback().await.db("rolling back the savepoint")?;
                tracing::warn!(
                    rows = ids.len(),
                    "rows left for the next batch: a concurrent enqueue holds a lock"
                );
                return Ok(GaveBack {
                    failed: 0,
                    left_leased: ids.len() as u64,
                });
            }
            Err(e) => return Err(e).db("returning rows to the queue"),
        }
    }
    anyhow::bail!(
        "returning rows to the queue kept conflicting with new rows: {}",
        last_err.unwrap_or_default()
    )
}

/// The rows this worker still holds (after a hard stop, whatever the
/// in-memory state says).
pub async fn held_by(db: impl PgExecutor<'_>, worker: &str) -> Result<Vec<i64>> {
    sqlx::query_scalar(
        "SELECT id FROM matchmaking_queue
          WHERE status = 'processing' AND locked_until IS NOT NULL AND locked_by = $1",
    )
    .bind(worker)
    .fetch_all(db)
    .await
    .db("finding this worker's rows")
}

/// Enqueues every active attendee of an event. Returns rows inserted or raised.
pub async fn enqueue_event(db: impl PgExecutor<'_>, event: Uuid, reason: &str, priority: i16) -> Result<i64> {
    let n: i32 = sqlx::query_scalar(
        "SELECT matchmaker_enqueue($1,
             ARRAY(SELECT user_id FROM event_participants WHERE event_id = $1 AND status = 'active'),
             $2, $3)",
    )
    .bind(event)
    .bind(reason)
    .bind(priority)
    .fetch_one(db)
    .await
    .db("enqueueing the event's attendees")?;
    Ok(i64::from(n))
}

/// Whether an event still has pending or processing rows.
pub async fn event_has_work(db: impl PgExecutor<'_>, event: Uuid) -> Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM matchmaking_queue
                         WHERE event_id = $1 AND status IN ('pending', 'processing'))",
    )
    .bind(event)
    .fetch_one(db)
    .await
    .db("checking the event's queue")
}

/// Whether an event has work a drain should wait for: rows pending (other
/// than those waiting out a retry after an error) or being processed, and
/// the event not paused (nothing would claim them).
pub async fn event_has_live_work(db: impl PgExecutor<'_>, event: Uuid) -> Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM matchmaking_queue
                         WHERE event_id = $1
                           AND (status = 'processing' OR (status = 'pending' AND last_error IS NULL)))
                AND NOT EXISTS (SELECT 1 FROM matchmaking_event_state
                                 WHERE event_id = $1 AND paused_at IS NOT NULL)",
    )
    .bind(event)
    .fetch_one(db)
    .await
    .db("checking the event's queue")
}

/// Rows of an event waiting out a retry after an error.
pub async fn retrying(db: impl PgExecutor<'_>, event: Uuid) -> Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM matchmaking_queue
          WHERE event_id = $1 AND status = 'pending' AND last_error IS NOT NULL",
    )
    .bind(event)
    .fetch_one(db)
    .await
    .db("counting rows waiting to retry")
}

/// Vacuums the queue table (and with `analyze`, refreshes its statistics),
/// skipping it when another vacuum holds it. Only the pages that changed
/// since the last vacuum are read (the visibility map), so after a burst this
/// costs milliseconds and makes the claim index compact again. The analyze
/// matters as much after a bulk enqueue (an import, `admin-start-matching`):
/// until then the statistics describe the table as it was, and the planner
/// serves each claim with a bitmap scan and a sort of the whole backlog
/// (28 ms per claim at 100,000 rows) instead of reading the first rows of
/// the claim index (0.1 ms). It samples the whole table, so it runs less often.
pub async fn vacuum(db: impl PgExecutor<'_>, analyze: bool) -> Result<()> {
    let sql = if analyze {
        "VACUUM (ANALYZE, SKIP_LOCKED) matchmaking_queue"
    } else {
        "VACUUM (SKIP_LOCKED) matchmaking_queue"
    };
    sqlx::query(sql).execute(db).await.db("vacuuming the queue")?;
    Ok(())
}

/// Whether this session may `VACUUM` and `ANALYZE` the queue: its owner (or
/// a member of the owner's role) or a superuser. PostgreSQL skips the table
/// with a mere warning otherwise, so callers ask first and say so once. A
/// least-privilege worker role is not the owner; autovacuum then does it.
pub async fn may_maintain(db: impl PgExecutor<'_>) -> Result<bool> {
    sqlx::query_scalar(
        "SELECT pg_has_role(current_user, c.relowner, 'USAGE')
                OR coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false)
           FROM pg_class c WHERE c.oid = 'matchmaking_queue'::regclass",
    )
    .fetch_one(db)
    .await
    .db("checking who owns the queue")
}

/// Refreshes the planner's statistics of the queue (see [`vacuum`]); for
/// after a bulk enqueue, inside or outside a transaction.
pub async fn analyze(db: impl PgExecutor<'_>) -> Result<()> {
    sqlx::query("ANALYZE matchmaking_queue")
        .execute(db)
        .await
        .db("analyzing the queue")?;
    Ok(())
}

/// Deletes done rows (at most 10,000 per call, so a run never stalls on a
/// backlog) and run-history rows finished before `older_than` ago. Returns
/// queue rows deleted.
pub async fn prune_done(db: impl PgExecutor<'_> + Copy, older_than: Duration) -> Result<u64> {
    let r = sqlx::query(
        "DELETE FROM matchmaking_queue WHERE id IN (
             SELECT id FROM matchmaking_queue
              WHERE status = 'done' AND finished_at < now() - make_interval(secs => $1)
              LIMIT 10000)",
    )
    .bind(older_than.as_secs_f64())
    .execute(db)
    .await
    .db("pruning done rows")?;
    sqlx::query("DELETE FROM matchmaking_runs WHERE finished_at < now() - make_interval(secs => $1)")
        .bind(older_than.as_secs_f64())
        .execute(db)
        .await
        .db("pruning the run history")?;
    Ok(r.rows_affected())
}
