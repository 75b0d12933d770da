//! The queries behind `matchmaker status`: queue counts, leases, problem
//! rows, per-event progress and recent runs. Read-only, each statement on
//! its own (a status is a snapshot per section, not one transaction).

use super::DbResult;
use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// Everything `status` reports.
#[derive(Debug, Serialize)]
pub struct Status {
    pub queue: Vec<QueueCount>,
    pub oldest_pending_seconds: Option<f64>,
    pub leases: Vec<Lease>,
    pub expired_leases: i64,
    /// The most recent failed rows (at most `--limit`) and how many there are.
    pub failed: Vec<RowProblem>,
    pub failed_total: i64,
    /// Pending rows waiting out a retry backoff, with the error that caused it.
    pub retrying: Vec<RowProblem>,
    pub retrying_total: i64,
    pub events: Vec<EventProgress>,
    pub runs: Vec<Run>,
    /// The event's meeting rounds (only with `--event`; empty otherwise).
    pub rounds: Vec<super::rounds::RoundRow>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct QueueCount {
    pub status: String,
    pub priority: i16,
    pub rows: i64,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Lease {
    pub locked_by: String,
    pub rows: i64,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct RowProblem {
    pub id: i64,
    pub event_code: String,
    pub user_id: Uuid,
    pub display_name: Option<String>,
    pub attempts: i32,
    pub last_error: Option<String>,
    /// When it failed (failed rows) or when it is tried next (retrying rows).
    pub at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct EventProgress {
    pub event_id: Uuid,
    pub code: String,
    /// `running`, `completed`, `completed_with_errors`, or `queued` (work
    /// from triggers only, no job started by an operator yet).
    pub status: String,
    pub enqueued: i32,
    pub processed: i32,
    pub failed: i32,
    pub remaining: i64,
    pub started_at: Option<DateTime<Utc>>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// When an operator paused the event (`matchmaker pause`), if it is.
    pub paused_at: Option<DateTime<Utc>>,
    /// Attendees per second since the job started.
    pub rate_per_second: Option<f64>,
    pub eta_seconds: Option<f64>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Run {
    pub id: Uuid,
    pub worker_id: String,
    pub command: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub claimed: i32,
    pub processed: i32,
    pub failed: i32,
    pub stop_reason: Option<String>,
    pub error: Option<String>,
    /// Embedding provider use (zeros without a provider): profiles asked
    /// for, distinct texts found in / missing from the cache, HTTP requests
    /// (retries included), tokens billed, requests that failed for good.
    pub embedding_inputs: i32,
    pub embedding_cache_hits: i32,
    pub embedding_cache_misses: i32,
    pub embedding_calls: i32,
    pub embedding_tokens: i64,
    pub embedding_failures: i32,
}

/// Reads the whole status, optionally for one event.
pub async fn read(pool: &PgPool, event: Option<Uuid>, limit: i64) -> Result<Status> {
    let queue = sqlx::query_as::<_, QueueCount>(
        "SELECT status, priority, count(*) AS rows FROM matchmaking_queue
          WHERE ($1::uuid IS NULL OR event_id = $1)
          GROUP BY status, priority ORDER BY status, priority DESC",
    )
    .bind(event)
    .fetch_all(pool)
    .await
    .db("counting queue rows")?;
    let oldest_pending_seconds: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM now() - min(enqueued_at))::float8 FROM matchmaking_queue
          WHERE status = 'pending' AND ($1::uuid IS NULL OR event_id = $1)",
    )
    .bind(event)
    .fetch_one(pool)
    .await
    .db("reading the oldest pending row")?;
    let leases = sqlx::query_as::<_, Lease>(
        "SELECT locked_by, count(*) AS rows, max(locked_until) AS expires_at FROM matchmaking_queue
          WHERE status = 'processing' AND locked_until >= now() AND ($1::uuid IS NULL OR event_id = $1)
          GROUP BY locked_by ORDER BY locked_by",
    )
    .bind(event)
    .fetch_all(pool)
    .await
    .db("reading leases")?;
    let expired_leases: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM matchmaking_queue
          WHERE status = 'processing' AND locked_until < now() AND ($1::uuid IS NULL OR event_id = $1)",
    )
    .bind(event)
    .fetch_one(pool)
    .await
    .db("counting expired leases")?;
    let problems = |status: &'static str| {
        sqlx::query_as::<_, RowProblem>(
            "SELECT q.id, e.code AS event_code, q.user_id, p.display_name, q.attempts, q.last_error,
                    CASE WHEN q.status = 'failed' THEN q.finished_at ELSE q.available_at END AS at
               FROM matchmaking_queue q
               JOIN events e ON e.id = q.event_id
               LEFT JOIN event_participants p ON p.event_id = q.event_id AND p.user_id = q.user_id
              WHERE q.status = $1 AND q.last_error IS NOT NULL AND ($2::uuid IS NULL OR q.event_id = $2)
              ORDER BY q.id DESC LIMIT $3",
        )
        .bind(status)
        .bind(event)
        .bind(limit)
        .fetch_all(pool)
    };
    let failed = problems("failed").await.db("reading failed rows")?;
    let retrying = problems("pending").await.db("reading retrying rows")?;
    let (failed_total, retrying_total): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'failed'),
                count(*) FILTER (WHERE status = 'pending' AND last_error IS NOT NULL)
           FROM matchmaking_queue WHERE status IN ('failed', 'pending') AND ($1::uuid IS NULL OR event_id = $1)",
    )
    .bind(event)
    .fetch_one(pool)
    .await
    .db("counting failed rows")?;
    // Every event with a job or with open work (triggers alone create no
    // job until a worker records a batch). A completed job with new work is
    // shown as running again.
    let events = sqlx::query_as::<_, EventProgress>(
        "SELECT ids.event_id, e.code,
                CASE WHEN j.event_id IS NULL THEN 'queued'
                     WHEN coalesce(w.remaining, 0) > 0 THEN 'running'
                     ELSE j.status END AS status,
                coalesce(j.enqueued, 0) AS enqueued, coalesce(j.processed, 0) AS processed,
                coalesce(j.failed, 0) AS failed, coalesce(w.remaining, 0) AS remaining,
                j.started_at, j.heartbeat_at, j.completed_at, j.last_error, st.paused_at,
                CASE WHEN j.heartbeat_at > j.started_at AND j.processed > 0
                     THEN j.processed / extract(epoch FROM j.heartbeat_at - j.started_at)::float8 END AS rate_per_second,
                CASE WHEN j.heartbeat_at > j.started_at AND j.processed > 0 AND coalesce(w.remaining, 0) > 0
                     THEN coalesce(w.remaining, 0) / (j.processed / extract(epoch FROM j.heartbeat_at - j.started_at)::float8)
                END AS eta_seconds
           FROM (SELECT event_id FROM matchmaking_jobs
                 UNION
                 SELECT DISTINCT event_id FROM matchmaking_queue WHERE status IN ('pending', 'processing')
                 UNION
                 SELECT event_id FROM matchmaking_event_state WHERE paused_at IS NOT NULL) ids
           JOIN events e ON e.id = ids.event_id
           LEFT JOIN matchmaking_event_state st ON st.event_id = ids.event_id
           LEFT JOIN matchmaking_jobs j ON j.event_id = ids.event_id
           LEFT JOIN LATERAL (SELECT count(*) AS remaining FROM matchmaking_queue q
                               WHERE q.event_id = ids.event_id AND q.status IN ('pending', 'processing')) w ON true
          WHERE ($1::uuid IS NULL OR ids.event_id = $1)
          ORDER BY j.started_at DESC NULLS FIRST, e.code LIMIT 50",
    )
    .bind(event)
    .fetch_all(pool)
    .await
    .db("reading job progress")?;
    let runs = sqlx::query_as::<_, Run>(
        "SELECT id, worker_id, command, started_at, finished_at, claimed, processed, failed, stop_reason, error,
                embedding_inputs, embedding_cache_hits, embedding_cache_misses, embedding_calls, embedding_tokens,
                embedding_failures
           FROM matchmaking_runs WHERE ($1::uuid IS NULL OR event_id = $1 OR event_id IS NULL)
          ORDER BY started_at DESC LIMIT 5",
    )
    .bind(event)
    .fetch_all(pool)
    .await
    .db("reading recent runs")?;
    let rounds = match event {
        Some(event) => super::rounds::list(pool, event).await?,
        None => Vec::new(),
    };
    Ok(Status {
        queue,
        oldest_pending_seconds,
        leases,
        expired_leases,
        failed,
        failed_total,
        retrying,
        retrying_total,
        events,
        runs,
        rounds,
    })
}
