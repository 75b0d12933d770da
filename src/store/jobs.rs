//! `matchmaking_jobs` (progress per event) and `matchmaking_runs` (one row
//! per worker invocation).

use super::DbResult;
use anyhow::Result;
use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// Records a batch's outcome on the event's job row (creating it when the
/// work came from triggers alone), and marks the job completed when the
/// event has no pending or processing rows left. Runs in the batch's write
/// transaction, after the queue rows were updated, so the completion check
/// sees this batch's own changes; a row enqueued concurrently makes the next
/// batch set the job back to running.
pub async fn record_batch(
    db: impl PgExecutor<'_>,
    event: Uuid,
    done: &[i64],
    worker: &str,
    processed: i64,
    failed: i64,
    last_error: Option<&str>,
) -> Result<Completed> {
    // One statement: the event version is bumped (the caller holds the event
    // lock, so bumps of one event are serialised and the value returned is
    // exactly this transaction's), and the job's totals and status updated.
    // The job is complete when no open row is left; that check sees this
    // transaction's own completions.
    sqlx::query_as::<_, Completed>(
        "WITH done AS (
             -- Guarded by \"still mine\": a row whose lease was taken over
             -- is not counted, and the caller rolls back.
             UPDATE matchmaking_queue
                SET status = 'done', locked_until = NULL, locked_by = NULL, finished_at = now(),
                    last_error = NULL
              WHERE id = ANY($5) AND status = 'processing' AND locked_by = $6
              RETURNING 1),
         v AS (
             INSERT INTO matchmaking_event_state AS s (event_id, version) VALUES ($1, 1)
             ON CONFLICT (event_id) DO UPDATE SET version = s.version + 1
             RETURNING version),
         -- Each probe reads the first entry of a partial index in its
         -- order (LIMIT 1 inside a subquery keeps the planner from turning
         -- it into a scan): a plain EXISTS was served by a sequential scan
         -- that stepped over every done row first, which grows with the
         -- event's progress (15 ms per batch late in a 100,000 cold start).
         open AS (
             SELECT EXISTS (SELECT 1 FROM (SELECT 1 FROM matchmaking_queue q
                                            WHERE q.event_id = $1 AND q.status = 'pending'
                                            ORDER BY q.priority DESC, q.enqueued_at, q.id LIMIT 1) p)
                    OR EXISTS (SELECT 1 FROM (SELECT 1 FROM matchmaking_queue q
                                               WHERE q.event_id = $1 AND q.status = 'processing'
                                                 -- This statement's own completions are not visible to it.
                                                 AND q.id <> ALL($5)
                                               ORDER BY q.priority DESC, q.enqueued_at, q.id LIMIT 1) r)
                    AS has_open),
         job AS (
             INSERT INTO matchmaking_jobs AS j (event_id, status, processed, failed, heartbeat_at, last_error,
                                                completed_at)
             SELECT $1,
                    CASE WHEN open.has_open THEN 'running' WHEN $3 > 0 THEN 'completed_with_errors' ELSE 'completed' END,
                    $2, $3, now(), $4, CASE WHEN open.has_open THEN NULL ELSE now() END
               FROM open
             ON CONFLICT (event_id) DO UPDATE
                SET processed = least(j.processed::bigint + EXCLUDED.processed, 2147483647)::integer,
                    failed = least(j.failed::bigint + EXCLUDED.failed, 2147483647)::integer,
                    heartbeat_at = now(),
                    last_error = coalesce(EXCLUDED.last_error, j.last_error),
                    status = CASE WHEN (SELECT has_open FROM open) THEN 'running'
                                  WHEN j.failed + EXCLUDED.failed > 0 THEN 'completed_with_errors'
                                  ELSE 'completed' END,
                    completed_at = CASE WHEN (SELECT has_open FROM open) THEN NULL
                                        ELSE coalesce(j.completed_at, now()) END
             RETURNING 1)
         -- (Data-modifying CTEs run whether or not they are read.)
         SELECT (SELECT version FROM v) AS version, (SELECT count(*) FROM done) AS completed",
    )
    .bind(event)
    .bind(saturate(processed))
    .bind(saturate(failed))
    .bind(last_error)
    .bind(done)
    .bind(worker)
    .fetch_one(db)
    .await
    .db("recording job progress")
}

/// What [`record_batch`] did.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Completed {
    /// The event version this batch's transaction wrote.
    pub version: i64,
    /// Rows marked done (fewer than asked when a lease was lost).
    pub completed: i64,
}

/// A job row as `status` and `admin-start-matching` read it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct Job {
    pub event_id: Uuid,
    pub status: String,
    pub enqueued: i32,
    pub processed: i32,
    pub failed: i32,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub input_fingerprint: Option<String>,
}

/// The job row of an event, if it has one.
pub async fn get(db: impl PgExecutor<'_>, event: Uuid) -> Result<Option<Job>> {
    sqlx::query_as::<_, Job>("SELECT * FROM matchmaking_jobs WHERE event_id = $1")
        .bind(event)
        .fetch_optional(db)
        .await
        .db("reading the job")
}

/// The current fingerprint of an event's inputs.
pub async fn fingerprint(db: impl PgExecutor<'_>, event: Uuid) -> Result<String> {
    sqlx::query_scalar("SELECT matchmaker_event_fingerprint($1)")
        .bind(event)
        .fetch_one(db)
        .await
        .db("fingerprinting the event")
}

/// Creates or resets an event's job for a fresh admin start.
pub async fn reset(db: impl PgExecutor<'_>, event: Uuid, enqueued: i64, fingerprint: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO matchmaking_jobs AS j (event_id, status, enqueued, input_fingerprint)
         VALUES ($1, 'running', $2, $3)
         ON CONFLICT (event_id) DO UPDATE
            SET status = 'running', enqueued = EXCLUDED.enqueued, processed = 0, failed = 0,
                started_at = now(), heartbeat_at = NULL, completed_at = NULL, last_error = NULL,
                input_fingerprint = EXCLUDED.input_fingerprint",
    )
    .bind(event)
    .bind(saturate(enqueued))
    .bind(fingerprint)
    .execute(db)
    .await
    .db("resetting the job")?;
    Ok(())
}

/// A count for an `integer` column (saturating rather than wrapping).
fn saturate(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(if n < 0 { 0 } else { i32::MAX })
}

fn saturate_u(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// What the run history (`matchmaking_runs`) records of a worker invocation.
#[derive(Debug, Clone, Default)]
pub struct RunRecord {
    pub batches: i64,
    pub claimed: i64,
    pub processed: i64,
    pub failed: i64,
    pub released: i64,
    /// Profiles the embedding provider was asked for.
    pub embedding_inputs: u64,
    pub embedding_cache_hits: u64,
    pub embedding_cache_misses: u64,
    /// HTTP requests to the provider, retries included.
    pub embedding_calls: u64,
    pub embedding_tokens: u64,
    /// Requests that failed for good, or were refused by the open breaker.
    pub embedding_failures: u64,
}

/// Records the start of a worker invocation in the run history.
pub async fn start_run(
    db: impl PgExecutor<'_>,
    id: Uuid,
    worker: &str,
    command: &str,
    event: Option<Uuid>,
) -> Result<()> {
    sqlx::query("INSERT INTO matchmaking_runs (id, worker_id, command, event_id) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(worker)
        .bind(command)
        .bind(event)
        .execute(db)
        .await
        .db("recording the run")?;
    Ok(())
}

/// Updates a run's totals; with `stop_reason`, also marks it finished.
pub async fn update_run(
    db: impl PgExecutor<'_>,
    id: Uuid,
    t: &RunRecord,
    stop_reason: Option<&str>,
    error: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "UPDATE matchmaking_runs
            SET batches = $2, claimed = $3, processed = $4, failed = $5, released = $6,
                heartbeat_at = now(), stop_reason = $7, error = $8,
                finished_at = CASE WHEN $7 IS NULL THEN NULL ELSE now() END,
                embedding_inputs = $9, embedding_cache_hits = $10, embedding_cache_misses = $11,
                embedding_calls = $12, embedding_tokens = $13, embedding_failures = $14
          WHERE id = $1",
    )
    .bind(id)
    .bind(saturate(t.batches))
    .bind(saturate(t.claimed))
    .bind(saturate(t.processed))
    .bind(saturate(t.failed))
    .bind(saturate(t.released))
    .bind(stop_reason)
    .bind(error)
    .bind(saturate_u(t.embedding_inputs))
    .bind(saturate_u(t.embedding_cache_hits))
    .bind(saturate_u(t.embedding_cache_misses))
    .bind(saturate_u(t.embedding_calls))
    .bind(i64::try_from(t.embedding_tokens).unwrap_or(i64::MAX))
    .bind(saturate_u(t.embedding_failures))
    .execute(db)
    .await
    .db("recording run totals")?;
    Ok(())
}
