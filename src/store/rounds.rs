//! Meeting rounds (`meeting_rounds`, `meeting_pairs`) and what a round is
//! computed from (`events.pairing`, `event_participants.side`, earlier
//! rounds). A round is written in one transaction that holds the event's
//! lock from [`lock_event`] to the commit, so a crash leaves no round or the
//! whole round, and two `pair` runs of one event never interleave.

use super::DbResult;
use anyhow::Result;
use sqlx::{PgExecutor, Postgres, Transaction};
use uuid::Uuid;

/// Takes the event's lock (`matchmaker_lock_key`, the key the worker and the
/// triggers use) until the transaction ends, waiting for it: the round is
/// computed from data no batch, leave or exclusion is changing meanwhile.
pub async fn lock_event(tx: &mut Transaction<'_, Postgres>, event: Uuid) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(matchmaker_lock_key($1))")
        .bind(event)
        .execute(&mut **tx)
        .await
        .db("taking the event lock")?;
    Ok(())
}

/// A round's header row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct RoundRow {
    pub round: i32,
    pub status: String,
    pub strategy: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub completed_at: chrono::DateTime<chrono::Utc>,
    pub pairs: i32,
    pub sat_out: i32,
    pub total_score: f64,
    pub upper_bound: f64,
}

impl RoundRow {
    /// How far the round's total may be below the dense optimum, in per cent
    /// of the certified upper bound (0 for a proven optimum or an empty round).
    pub fn gap_percent(&self) -> f64 {
        if self.upper_bound == 0.0 {
            0.0
        } else {
            100.0 * ((self.upper_bound - self.total_score) / self.upper_bound.abs()).max(0.0)
        }
    }
}

/// One attendee's row of a round (`partner_id` `None`: sits out).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct PairRow {
    pub user_id: Uuid,
    pub partner_id: Option<Uuid>,
    pub score: Option<f32>,
    pub reasons: Option<serde_json::Value>,
    pub table_no: Option<i32>,
}

/// The event's pairing mode (`'any'` or `'across-sides'`).
pub async fn pairing_mode(db: impl PgExecutor<'_>, event: Uuid) -> Result<Option<String>> {
    sqlx::query_scalar("SELECT pairing FROM events WHERE id = $1")
        .bind(event)
        .fetch_optional(db)
        .await
        .db("reading the event's pairing mode")
}

/// The sides set in the event (attendees without one are absent).
pub async fn sides(db: impl PgExecutor<'_>, event: Uuid) -> Result<Vec<(Uuid, String)>> {
    sqlx::query_as("SELECT user_id, side FROM event_participants WHERE event_id = $1 AND side IS NOT NULL")
        .bind(event)
        .fetch_all(db)
        .await
        .db("reading the attendees' sides")
}

/// The rounds of the event, in order.
pub async fn list(db: impl PgExecutor<'_>, event: Uuid) -> Result<Vec<RoundRow>> {
    sqlx::query_as(
        "SELECT round, status, strategy, created_at, completed_at, pairs, sat_out, total_score, upper_bound
           FROM meeting_rounds WHERE event_id = $1 ORDER BY round",
    )
    .bind(event)
    .fetch_all(db)
    .await
    .db("listing the meeting rounds")
}

/// The pairs that met in every round of the event but `round`, once per
/// pair (what a new round, or `round` redone, must not repeat).
pub async fn met_in_other_rounds(db: impl PgExecutor<'_>, event: Uuid, round: i32) -> Result<Vec<(Uuid, Uuid)>> {
    sqlx::query_as(
        "SELECT user_id, partner_id FROM meeting_pairs
          WHERE event_id = $1 AND round <> $2 AND partner_id IS NOT NULL AND user_id < partner_id",
    )
    .bind(event)
    .bind(round)
    .fetch_all(db)
    .await
    .db("reading earlier pairs")
}

/// How often each attendee sat out in every round of the event but `round`.
pub async fn sat_out_in_other_rounds(db: impl PgExecutor<'_>, event: Uuid, round: i32) -> Result<Vec<(Uuid, i64)>> {
    sqlx::query_as(
        "SELECT user_id, count(*) FROM meeting_pairs
          WHERE event_id = $1 AND round <> $2 AND partner_id IS NULL GROUP BY user_id",
    )
    .bind(event)
    .bind(round)
    .fetch_all(db)
    .await
    .db("counting earlier sit-outs")
}

/// A round's rows, by table then user (sit-outs last).
pub async fn pairs(db: impl PgExecutor<'_>, event: Uuid, round: i32) -> Result<Vec<PairRow>> {
    sqlx::query_as(
        "SELECT user_id, partner_id, score, reasons, table_no FROM meeting_pairs
          WHERE event_id = $1 AND round = $2 ORDER BY table_no NULLS LAST, user_id",
    )
    .bind(event)
    .bind(round)
    .fetch_all(db)
    .await
    .db("reading a round's pairs")
}

/// Deletes a round and its pairs (`--force`), in the caller's transaction.
pub async fn delete(tx: &mut Transaction<'_, Postgres>, event: Uuid, round: i32) -> Result<bool> {
    let done = sqlx::query("DELETE FROM meeting_rounds WHERE event_id = $1 AND round = $2")
        .bind(event)
        .bind(round)
        .execute(&mut **tx)
        .await
        .db("deleting a round")?;
    Ok(done.rows_affected() > 0)
}

/// What [`insert`] writes.
#[derive(Debug, Clone)]
pub struct NewRound {
    pub round: i32,
    pub strategy: String,
    pub total_score: f64,
    pub upper_bound: f64,
    /// One row per attendee, both directions of each pair.
    pub rows: Vec<PairRow>,
}

/// Writes a round and all its rows in the caller's transaction: two
/// statements whatever its size.
pub async fn insert(tx: &mut Transaction<'_, Postgres>, event: Uuid, new: &NewRound) -> Result<()> {
    let paired = new.rows.iter().filter(|r| r.partner_id.is_some()).count();
    let to_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    sqlx::query(
        "INSERT INTO meeting_rounds (event_id, round, strategy, pairs, sat_out, total_score, upper_bound)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(event)
    .bind(new.round)
    .bind(&new.strategy)
    .bind(to_i32(paired / 2))
    .bind(to_i32(new.rows.len() - paired))
    .bind(new.total_score)
    .bind(new.upper_bound)
    .execute(&mut **tx)
    .await
    .db("writing a round")?;
    let users: Vec<Uuid> = new.rows.iter().map(|r| r.user_id).collect();
    let partners: Vec<Option<Uuid>> = new.rows.iter().map(|r| r.partner_id).collect();
    let scores: Vec<Option<f32>> = new.rows.iter().map(|r| r.score).collect();
    let reasons: Vec<Option<serde_json::Value>> = new.rows.iter().map(|r| r.reasons.clone()).collect();
    let tables: Vec<Option<i32>> = new.rows.iter().map(|r| r.table_no).collect();
    sqlx::query(
        "INSERT INTO meeting_pairs (event_id, round, user_id, partner_id, score, reasons, table_no)
         SELECT $1, $2, u, p, s, r, t
           FROM unnest($3::uuid[], $4::uuid[], $5::real[], $6::jsonb[], $7::int4[]) AS x(u, p, s, r, t)",
    )
    .bind(event)
    .bind(new.round)
    .bind(&users)
    .bind(&partners)
    .bind(&scores)
    .bind(&reasons)
    .bind(&tables)
    .execute(&mut **tx)
    .await
    .db("writing a round's pairs")?;
    Ok(())
}

/// The attendees' display names, for printing a round.
pub async fn names(db: impl PgExecutor<'_>, event: Uuid) -> Result<Vec<(Uuid, String)>> {
    sqlx::query_as("SELECT user_id, display_name FROM event_participants WHERE event_id = $1")
        .bind(event)
        .fetch_all(db)
        .await
        .db("reading the attendees' names")
}
