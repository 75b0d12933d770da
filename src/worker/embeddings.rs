//! Provider embeddings for the attendees of a batch whose application gave
//! none: the worker's use of the embedding provider.
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

use crate::embeddings::{EmbedError, EmbedStats, Embedder, ProfileText};
use crate::matching::batch::BatchRow;
use crate::store::profile_embeddings::{self, NewVector};
use anyhow::Result;
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, warn};
use uuid::Uuid;

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

/// Steps 1 to 3 of the module docs for one batch. `stats` gets what the
/// embedder counted during the call. The provider is given until
/// `deadline`, but at most half the lease (the batch holds the event lock on
/// a session that the server ends after a lease of idleness). Only database
/// errors fail.
pub async fn attach(
    pool: &PgPool,
    embedder: &Embedder,
    event: Uuid,
    rows: &[BatchRow],
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
    let texts = profile_embeddings::texts_to_embed(pool, event, &users).await?;
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
    let mut fresh = Vec::new();
    let mut why: HashMap<Uuid, String> = HashMap::new();
    let mut transient: HashSet<Uuid> = HashSet::new();
    let mut vectors = Vec::new();
    for (t, r) in texts.iter().zip(results) {
        match r {
            Ok(v) => vectors.push((t, v)),
            Err(e) => {
                if e.is_transient() {
                    transient.insert(t.user_id);
                }
                why.insert(t.user_id, held_message(&t.algorithm, &e));
            }
        }
    }
    for (t, v) in &vectors {
        fresh.push(NewVector {
            user_id: t.user_id,
            source_xid: &t.change_xid,
            vector: v,
        });
    }
    let dims = crate::store::embedding_cache::dimensions_column(embedder.dimensions());
    profile_embeddings::store(pool, event, embedder.model(), dims, &fresh).await?;
    if !why.is_empty() {
        let example = why.values().next().cloned().unwrap_or_default();
        warn!(event.id = %event, attendees = why.len(), embedded = fresh.len(),
              "no embedding for some attendees; their rows go back to the queue: {example}");
    } else {
        debug!(event.id = %event, embedded = fresh.len(), "embedded attendees");
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
