//! Provider embeddings for the attendees of a batch whose application gave
//! none: the worker's side of issue #3.
//!
//! # The flow, per claimed batch (under the event lock, before the snapshot)
//!
//! 1. One query reads, for the batch's attendees, those that are active,
//!    have no application embedding (`embedding` NULL or empty) and no
//!    provider vector for their current row version
//!    (`matchmaking_profile_embeddings.source_xid = event_participants.change_xid`),
//!    with their profile texts and that `change_xid`.
//! 2. One [`Embedder::embed`] call for all of them (it dedupes, reads the
//!    content cache, and sends the misses in as few requests as possible).
//! 3. The vectors are upserted into `matchmaking_profile_embeddings` with
//!    `source_xid` = the `change_xid` they were computed for, stamping a fresh
//!    `change_xid`, and committed (autocommit).
//! 4. The batch then takes its snapshot (`store::snapshot::read`), which uses
//!    a provider vector as the attendee's embedding when the application
//!    supplied none and the vector is for the row version read.
//!
//! Attendees whose vector could not be had are *held*: their rows are
//! scored as usual (hybrid-v1 without the embedding term; cosine-v1 leaves
//! them unmatched), then go back to the queue with a retry backoff and a
//! readable `last_error` ([`Held::apply`]), so a later batch upgrades them.
//!
//! # Why this stays exact
//!
//! An embedding arriving is a profile change of its attendee A: A's
//! effective profile (what the snapshot reads) changes without their row
//! changing. The worker's invariant needs two things of every profile
//! change: every cached copy of the event learns it, and A is repaired after
//! it with the new profile, before A's queue work is closed.
//!
//! - *Every copy learns it.* The vector is committed with a fresh
//!   `change_xid`, and the delta read returns every participant whose
//!   provider row was written by a transaction not visible in the previous
//!   snapshot (`EMBEDDED_SINCE` in `store::snapshot`), exactly as for rows
//!   of `event_participants`. Full reads join it directly.
//! - *A is repaired with it.* The vector is written only in step 3, only
//!   for an attendee whose queue row this batch has claimed (it is
//!   `processing`, held by us, under the event lock, which every batch of the
//!   event takes), and it commits *before* this batch's snapshot. So the
//!   snapshot that scores A contains the vector, and A's row is closed only
//!   by this batch's write transaction, which also writes A's repaired lists
//!   (A scored with the vector, the bump rule applied to everyone with it).
//!   If the batch never gets there (killed, failed, out of time), A's row is
//!   still open: reclaimed, retried or released, and the batch that finally
//!   closes it reads a snapshot that includes the vector. No other worker
//!   can run a batch of the event between step 3 and the snapshot (the event
//!   lock), so no list is written from a copy that has A's vector in the
//!   database but not in memory while A is marked clean.
//! - *Stale vectors are never used.* A vector is used only while
//!   `source_xid` equals the row's current `change_xid`. An edit after step 1
//!   stamps a new `change_xid` (so the vector just written is ignored; the
//!   edit enqueued A again, and that batch computes the vector of the new
//!   text), and an application embedding supplied later takes precedence.
//! - *Held attendees* are scored with exactly what the snapshot holds (no
//!   vector), so the lists written are exact for the data as it stands; their
//!   rows stay open, so they are repaired again once a vector arrives.
//!
//! The oracle of the tests (`tests/common`) reads the event with the same
//! rule, so "exact" includes the provider's vectors.

use super::{cache, EmbedError, EmbedStats, Embedder, ProfileText};
use crate::store::queue::ClaimedRow;
use anyhow::{Context, Result};
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, warn};
use uuid::Uuid;

/// Bios are cut to this many characters before rendering (the template cuts
/// the whole text to `text::MAX_TEXT_CHARS` anyway).
const MAX_BIO_READ: i32 = 20_000;

/// Attendees of a batch that got no provider vector: their claimed rows go
/// back to the queue after scoring, with `message` as their `last_error`.
#[derive(Debug, Default)]
pub struct Held {
    /// Claimed row id → (attendee, why).
    pub rows: HashMap<i64, (Uuid, String)>,
    /// The rows among them held by a provider outage (not by their data):
    /// they wait without spending attempts.
    pub transient: HashSet<i64>,
}

impl Held {
    /// Moves the held rows among `done` to `problems` (given back with a
    /// retry), and gives held rows already among `problems` their message.
    /// Rows not started (deadline) are left alone: they are released anyway.
    pub fn apply(
        &self,
        done: &mut Vec<i64>,
        problems: &mut Vec<(i64, Uuid, String)>,
        deferred: &mut Vec<(i64, Uuid, String)>,
    ) {
        if self.rows.is_empty() {
            return;
        }
        for p in problems.iter_mut() {
            if let Some((_, why)) = self.rows.get(&p.0) {
                p.2 = why.clone();
            }
        }
        done.retain(|id| match self.rows.get(id) {
            Some((user, why)) => {
                problems.push((*id, *user, why.clone()));
                false
            }
            None => true,
        });
        // An outage is not the rows' fault: they wait, attempts refunded.
        problems.retain(|p| {
            if self.transient.contains(&p.0) {
                deferred.push(p.clone());
                false
            } else {
                true
            }
        });
    }
}

#[derive(sqlx::FromRow)]
struct TextRow {
    user_id: Uuid,
    change_xid: String,
    algorithm: String,
    role: Option<String>,
    company: Option<String>,
    interests: Vec<String>,
    looking_for: Vec<String>,
    offering: Vec<String>,
    bio: Option<String>,
}

/// Steps 1 to 3 of the module docs for one batch. `stats` gets what the
/// embedder counted during the call. The provider is given until
/// `deadline`, but at most half the lease (the batch holds the event lock on
/// a session that the server ends after a lease of idleness). Only database
/// errors fail.
pub async fn attach(
    pool: &PgPool,
    embedder: &Embedder,
    event: Uuid,
    rows: &[ClaimedRow],
    deadline: Option<Instant>,
    lease: Duration,
    stats: &mut EmbedStats,
) -> Result<Held> {
    let mut users: Vec<Uuid> = rows.iter().map(|r| r.user_id).collect();
    users.sort_unstable();
    users.dedup();
    if users.is_empty() {
        return Ok(Held::default());
    }
    let texts: Vec<TextRow> = sqlx::query_as(
        "SELECT p.user_id, p.change_xid::text AS change_xid, e.algorithm, p.role, p.company,
                ARRAY(SELECT t FROM unnest(p.interests) t WHERE t IS NOT NULL) AS interests,
                ARRAY(SELECT t FROM unnest(p.looking_for) t WHERE t IS NOT NULL) AS looking_for,
                ARRAY(SELECT t FROM unnest(p.offering) t WHERE t IS NOT NULL) AS offering,
                left(p.bio, $3) AS bio
           FROM event_participants p JOIN events e ON e.id = p.event_id
          WHERE p.event_id = $1 AND p.user_id = ANY($2) AND p.status = 'active'
            AND coalesce(cardinality(p.embedding), 0) = 0
            AND NOT EXISTS (SELECT 1 FROM matchmaking_profile_embeddings pe
                             WHERE pe.event_id = p.event_id AND pe.user_id = p.user_id
                               AND pe.source_xid = p.change_xid)
          ORDER BY p.user_id",
    )
    .bind(event)
    .bind(&users)
    .bind(MAX_BIO_READ)
    .fetch_all(pool)
    .await
    .context("reading profile texts to embed")?;
    if texts.is_empty() {
        return Ok(Held::default());
    }

    let profiles: Vec<ProfileText> = texts
        .iter()
        .map(|t| ProfileText {
            role: t.role.clone(),
            company: t.company.clone(),
            interests: t.interests.clone(),
            looking_for: t.looking_for.clone(),
            offering: t.offering.clone(),
            bio: t.bio.clone(),
        })
        .collect();
    let cap = Instant::now() + lease / 2;
    let until = deadline.map_or(cap, |d| d.min(cap));
    let before = embedder.stats();
    let results = embedder.embed(pool, &profiles, Some(until)).await;
    stats.add(&embedder.stats().since(&before));
    let results = results?;

    // Store the vectors, in one statement.
    let (mut ok_users, mut ok_xids, mut starts, mut lens, mut flat) = (vec![], vec![], vec![], vec![], vec![]);
    let mut why: HashMap<Uuid, String> = HashMap::new();
    let mut transient: HashSet<Uuid> = HashSet::new();
    for (t, r) in texts.iter().zip(results) {
        match r {
            Ok(v) => {
                ok_users.push(t.user_id);
                ok_xids.push(t.change_xid.clone());
                starts.push(i32::try_from(flat.len() + 1).unwrap_or(i32::MAX));
                lens.push(i32::try_from(v.len()).unwrap_or(i32::MAX));
                flat.extend_from_slice(&v);
            }
            Err(e) => {
                if e.is_transient() {
                    transient.insert(t.user_id);
                }
                why.insert(t.user_id, held_message(&t.algorithm, &e));
            }
        }
    }
    if !ok_users.is_empty() {
        let provider = embedder.provider();
        sqlx::query(
            "INSERT INTO matchmaking_profile_embeddings AS pe
                    (event_id, user_id, source_xid, embedding, model, dimensions)
             SELECT $1, i.user_id, i.xid::xid8, ($5::real[])[i.start : i.start + i.len - 1], $6, $7
               FROM unnest($2::uuid[], $3::text[], $4::int[], $8::int[]) AS i(user_id, xid, start, len)
             ON CONFLICT (event_id, user_id) DO UPDATE
                SET source_xid = EXCLUDED.source_xid, embedding = EXCLUDED.embedding,
                    model = EXCLUDED.model, dimensions = EXCLUDED.dimensions,
                    change_xid = pg_current_xact_id(), updated_at = now()",
        )
        .bind(event)
        .bind(&ok_users)
        .bind(&ok_xids)
        .bind(&starts)
        .bind(&flat)
        .bind(provider.model())
        .bind(cache::dimensions_column(provider.dimensions()))
        .bind(&lens)
        .execute(pool)
        .await
        .context("storing attendees' embeddings")?;
    }
    if !why.is_empty() {
        let example = why.values().next().cloned().unwrap_or_default();
        warn!(event.id = %event, attendees = why.len(), embedded = ok_users.len(),
              "no embedding for some attendees; their rows go back to the queue: {example}");
    } else {
        debug!(event.id = %event, embedded = ok_users.len(), "embedded attendees");
    }
    let mut held = Held::default();
    for r in rows {
        if let Some(w) = why.get(&r.user_id) {
            held.rows.insert(r.id, (r.user_id, w.clone()));
            if transient.contains(&r.user_id) {
                held.transient.insert(r.id);
            }
        }
    }
    Ok(held)
}

/// The `last_error` of a held row.
fn held_message(algorithm: &str, e: &EmbedError) -> String {
    match (e.is_transient(), algorithm) {
        (true, "cosine-v1") => format!("waiting for an embedding: {e}"),
        (true, _) => format!("matched without an embedding for now; retried for one: {e}"),
        (false, _) => format!("embedding from the provider is unusable: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_rows_go_back_with_their_message() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut held = Held::default();
        held.rows.insert(1, (a, "waiting".into()));
        held.rows.insert(3, (b, "later".into()));
        let mut done = vec![1, 2];
        let mut problems = vec![(3, b, "no embedding".to_string()), (4, a, "other".to_string())];
        held.apply(&mut done, &mut problems, &mut Vec::new());
        assert_eq!(done, vec![2]);
        assert_eq!(
            problems,
            vec![
                (3, b, "later".to_string()),
                (4, a, "other".to_string()),
                (1, a, "waiting".to_string())
            ]
        );
    }

    #[test]
    fn messages_say_why_attendees_wait() {
        let down = EmbedError::ProviderUnavailable("HTTP 500".into());
        assert!(
            held_message("cosine-v1", &down).starts_with("waiting for an embedding: embedding provider unavailable")
        );
        assert!(held_message("hybrid-v1", &down).contains("without an embedding"));
        let bad = EmbedError::WrongDimensions { expected: 8, got: 3 };
        assert!(held_message("cosine-v1", &bad).starts_with("embedding from the provider is unusable"));
    }
}
