//! The operator's verbs and probes: pause and resume an event, retry failed
//! rows, and the cheap queue counts behind the metrics and `status --check`.

use super::DbResult;
use anyhow::Result;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// Queue counts for the metrics and `status --check`.
#[derive(Debug, Clone, Default, sqlx::FromRow, serde::Serialize)]
pub struct QueueGauges {
    pub pending: i64,
    pub processing: i64,
    pub done: i64,
    pub failed: i64,
    /// Age of the oldest pending row of an event that is not paused.
    pub oldest_pending_seconds: Option<f64>,
    pub paused_events: i64,
    /// Processing rows whose lease has expired (a worker died or stalled).
    pub expired_leases: i64,
    /// Pending rows waiting out a retry after an error.
    pub retrying: i64,
}

/// Reads [`QueueGauges`] for every event.
pub async fn queue_gauges(pool: &PgPool) -> Result<QueueGauges> {
    gauges_of(pool, None).await
}

/// [`queue_gauges`] of one event (or all with `None`): one pass over the
/// queue with a filter per count (one scan instead of one per count: 100,000
/// rows cost one sequential read of them, 26 ms on a busy 2-core EPYC), and the
/// paused events from their small table. Read-only, no locks taken.
pub async fn gauges_of(db: impl PgExecutor<'_>, event: Option<Uuid>) -> Result<QueueGauges> {
    sqlx::query_as::<_, QueueGauges>(
        "WITH paused AS (SELECT event_id FROM matchmaking_event_state WHERE paused_at IS NOT NULL)
         SELECT count(*) FILTER (WHERE q.status = 'pending') AS pending,
                count(*) FILTER (WHERE q.status = 'processing') AS processing,
                count(*) FILTER (WHERE q.status = 'done') AS done,
                count(*) FILTER (WHERE q.status = 'failed') AS failed,
                extract(epoch FROM now() - min(q.enqueued_at) FILTER (
                    WHERE q.status = 'pending' AND q.event_id <> ALL(ARRAY(SELECT event_id FROM paused))))::float8
                    AS oldest_pending_seconds,
                (SELECT count(*) FROM paused WHERE $1::uuid IS NULL OR event_id = $1) AS paused_events,
                count(*) FILTER (WHERE q.status = 'processing' AND q.locked_until < now()) AS expired_leases,
                count(*) FILTER (WHERE q.status = 'pending' AND q.last_error IS NOT NULL) AS retrying
           FROM matchmaking_queue q
          WHERE $1::uuid IS NULL OR q.event_id = $1",
    )
    .bind(event)
    .fetch_one(db)
    .await
    .db("counting queue rows")
}

/// Pauses an event. Returns false when it already was.
///
/// The event lock is taken first (waiting for a batch in progress to end),
/// so once this commits no batch of the event is running and every later
/// claim sees the pause (see the pause migration).
pub async fn pause(pool: &PgPool, event: Uuid) -> Result<bool> {
    let mut tx = pool.begin().await.db("starting the pause")?;
    // A batch holds the lock for its duration; wait for it, not forever.
    sqlx::query("SET LOCAL lock_timeout = '60s'")
        .execute(&mut *tx)
        .await
        .db("pausing the event")?;
    sqlx::query("SELECT pg_advisory_xact_lock(matchmaker_lock_key($1))")
        .bind(event)
        .execute(&mut *tx)
        .await
        .db("waiting for the event's running batch")?;
    // Under the event lock no other pause runs meanwhile.
    let was = paused_at(&mut *tx, event).await?;
    if was.is_none() {
        // version 0 for a new row: no worker holds a copy of the event then.
        sqlx::query(
            "INSERT INTO matchmaking_event_state AS s (event_id, version, paused_at) VALUES ($1, 0, now())
             ON CONFLICT (event_id) DO UPDATE SET paused_at = now()",
        )
        .bind(event)
        .execute(&mut *tx)
        .await
        .db("pausing the event")?;
    }
    tx.commit().await.db("pausing the event")?;
    Ok(was.is_none())
}

/// Resumes a paused event and wakes the daemons (the triggers' channel).
/// Returns false when it was not paused.
pub async fn resume(pool: &PgPool, event: Uuid) -> Result<bool> {
    let resumed: Option<Uuid> = sqlx::query_scalar(
        "UPDATE matchmaking_event_state SET paused_at = NULL
          WHERE event_id = $1 AND paused_at IS NOT NULL RETURNING event_id",
    )
    .bind(event)
    .fetch_optional(pool)
    .await
    .db("resuming the event")?;
    sqlx::query("SELECT pg_notify('matchmaking_queue', $1::text)")
        .bind(event)
        .execute(pool)
        .await
        .db("waking the daemons")?;
    Ok(resumed.is_some())
}

/// When the event was paused, if it is.
pub async fn paused_at(db: impl PgExecutor<'_>, event: Uuid) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    let at: Option<Option<chrono::DateTime<chrono::Utc>>> =
        sqlx::query_scalar("SELECT paused_at FROM matchmaking_event_state WHERE event_id = $1")
            .bind(event)
            .fetch_optional(db)
            .await
            .db("reading whether the event is paused")?;
    Ok(at.flatten())
}

/// What [`retry_failed`] did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Retried {
    /// Attendees whose newest failed row is pending again, attempts reset.
    pub requeued: Vec<Uuid>,
    /// Failed rows closed because their attendee already had a pending row
    /// (a newer change, which redoes the work) or a newer failed row.
    pub superseded: i64,
}

/// Puts an event's failed rows (of one attendee, or all) back to pending
/// with their attempts reset, in one transaction under the event lock.
///
/// At most one row per attendee may be pending: the newest failed row of
/// each attendee without a pending row goes back; the attendee's other
/// failed rows are closed as done, since that one row redoes the work. The
/// event version is bumped, because rows that were closed open again (a
/// worker's cached copy of the event's open rows is then stale; see the
/// event-version migration). The lock keeps a batch of the event from
/// running meanwhile; an enqueue by a trigger that races us is a unique
/// violation, which the caller may retry.
pub async fn retry_failed(pool: &PgPool, event: Uuid, user: Option<Uuid>) -> Result<Retried> {
    let mut tx = pool.begin().await.db("starting the retry")?;
    sqlx::query("SET LOCAL lock_timeout = '60s'")
        .execute(&mut *tx)
        .await
        .db("retrying failed rows")?;
    sqlx::query("SELECT pg_advisory_xact_lock(matchmaker_lock_key($1))")
        .bind(event)
        .execute(&mut *tx)
        .await
        .db("waiting for the event's running batch")?;
    let requeued: Vec<Uuid> = sqlx::query_scalar(
        "WITH newest AS (
             SELECT DISTINCT ON (user_id) id, user_id FROM matchmaking_queue f
              WHERE event_id = $1 AND status = 'failed' AND ($2::uuid IS NULL OR user_id = $2)
                AND NOT EXISTS (SELECT 1 FROM matchmaking_queue p
                                 WHERE p.event_id = f.event_id AND p.user_id = f.user_id AND p.status = 'pending')
              ORDER BY user_id, id DESC)
         UPDATE matchmaking_queue q
            SET status = 'pending', attempts = 0, available_at = now(), last_error = NULL,
                finished_at = NULL, claimed_at = NULL
           FROM newest WHERE q.id = newest.id
         RETURNING q.user_id",
    )
    .bind(event)
    .bind(user)
    .fetch_all(&mut *tx)
    .await
    .db("retrying failed rows")?;
    let superseded = sqlx::query(
        "UPDATE matchmaking_queue SET status = 'done', finished_at = now(),
                last_error = 'superseded: ' || coalesce(last_error, '')
          WHERE event_id = $1 AND status = 'failed' AND ($2::uuid IS NULL OR user_id = $2)",
    )
    .bind(event)
    .bind(user)
    .execute(&mut *tx)
    .await
    .db("closing superseded failed rows")?
    .rows_affected();
    let reopened = requeued.len() as i64 + superseded as i64;
    if reopened > 0 {
        sqlx::query(
            "INSERT INTO matchmaking_event_state AS s (event_id, version) VALUES ($1, 1)
             ON CONFLICT (event_id) DO UPDATE SET version = s.version + 1",
        )
        .bind(event)
        .execute(&mut *tx)
        .await
        .db("bumping the event version")?;
        // The job is running again, and its failures are being retried.
        sqlx::query(
            "UPDATE matchmaking_jobs SET status = 'running', completed_at = NULL,
                    failed = greatest(failed - $2, 0)
              WHERE event_id = $1",
        )
        .bind(event)
        .bind(i32::try_from(reopened).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await
        .db("reopening the event's job")?;
    }
    tx.commit().await.db("committing the retry")?;
    if !requeued.is_empty() {
        // Wake the daemons, as the triggers do for new rows.
        sqlx::query("SELECT pg_notify('matchmaking_queue', $1::text)")
            .bind(event)
            .execute(pool)
            .await
            .db("waking the daemons")?;
    }
    Ok(Retried {
        requeued,
        superseded: superseded as i64,
    })
}
