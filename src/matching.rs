//! How a match is decided: pure functions over plain data.
//!
//! Nothing here touches the database or does I/O. The worker loads an
//! [`Event`] (settings, participants, exclusions) and the current lists,
//! calls [`repair`] once per claimed attendee, and writes back the lists that
//! changed.
//!
//! - [`profile`]: a participant normalised for scoring (interned tag keys,
//!   role and bio keywords, the attendee's own spellings, unit-length
//!   embedding, company key) and the validation of raw rows.
//! - [`score`]: the algorithms (`cosine-v1`, `hybrid-v1`, with its
//!   never-outranks guarantee) and the reasons.
//! - [`topk`]: ranking order, top-K selection and the bump rule.
//! - [`kernel`]: dot products, pair by pair or a batch against the event,
//!   with the same bits either way.
//! - [`event`]: the [`Event`]: participants, exclusions, eligibility, top-K.
//! - [`rows`]: a batch's attendees scored against the whole event at once.
//! - [`summaries`], [`plan`]: what a batch can decide in parallel before it
//!   repairs anyone (who may enter which list).
//! - [`repair`]: [`repair`] (one attendee) and why it keeps every list
//!   exact; [`brute_force`], the oracle.
//! - [`batch`]: one claimed batch, repaired in order, and its [`batch::Diff`].
//! - [`parallel`]: the one helper that splits rows across cores.
//! - [`pairing`]: meeting rounds (one partner each, no repeats, fair
//!   sit-outs) by Edmonds' blossom algorithm on a certified candidate graph.

pub mod batch;
pub mod event;
pub mod explain;
pub mod kernel;
pub mod pairing;
mod parallel;
pub mod plan;
pub mod profile;
pub mod repair;
mod rows;
pub mod score;
pub mod summaries;
#[cfg(test)]
mod tests;
pub mod topk;

/// A fast hasher for maps keyed by ids (FxHash's mixing): the scorer looks
/// attendees up hundreds of thousands of times per batch, and SipHash's
/// protection against chosen keys buys nothing for ids of one's own event.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl IdHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// Builds [`IdHasher`]s.
pub type IdHash = std::hash::BuildHasherDefault<IdHasher>;
/// A map keyed by attendee id.
pub type IdMap<K, V> = std::collections::HashMap<K, V, IdHash>;
/// A set of attendee ids.
pub type IdSet<K> = std::collections::HashSet<K, IdHash>;

pub use event::{Event, EventSettings, Lists};
pub use plan::{plan, plan_bounded, Plan};
pub use profile::{Participant, ParticipantRow, TagInterner};
pub use repair::{brute_force, repair, repair_with, Accelerators, Dirty, RepairOutcome};
pub use score::Algorithm;
pub use summaries::Summaries;
pub use topk::Entry;
