//! List summaries: what the scorer needs to know of a list without reading
//! it (full? its weakest entry, a Bloom filter of its members), packed for
//! the plans' scans.

use super::event::{Event, Lists};
use super::topk::Entry;
use uuid::Uuid;

/// What the scorer needs to know of a list without reading it: whether it
/// is full and its weakest entry, and a 64-bit fingerprint of its members.
/// Reading the list itself is a random memory access per attendee; the
/// summaries are one array in participant order.
#[derive(Debug, Clone, Copy)]
pub(super) struct ListSummary {
    /// At most K entries (a longer list, after K was lowered, takes the slow path).
    pub(super) fits: bool,
    /// The weakest entry when the list holds K entries.
    pub(super) weakest: Option<Entry>,
    /// A one-hash Bloom filter of the members (256 bits: with K = 3 a
    /// non-member looks like a member 1.2% of the time).
    pub(super) members: [u64; 4],
}

/// Summaries of the lists, by participant index, computed on first use and
/// forgotten whenever a list changes. Keep one per [`Lists`]: after the
/// lists change outside [`super::repair_with`], call [`Summaries::clear`].
///
/// [`Summaries::fill`] also packs them for [`super::plan`], which scans every list
/// for every attendee of a batch: per list a gate score (4 bytes) and the
/// member filter split by word (a newcomer reads only its own word), instead
/// of a whole summary per list and attendee.
#[derive(Debug, Default, Clone)]
pub struct Summaries {
    each: Vec<Option<ListSummary>>,
    /// Per list: the weakest score when the list is full, −∞ when it has
    /// room. A newcomer below it cannot enter; one equal to it may, on the id.
    pub(super) gate: Vec<f32>,
    /// Per word of the member filter, per list; all ones where the list must
    /// always be looked at (it does not fit, or changed since the packing).
    pub(super) members: [Vec<u64>; 4],
}

impl Summaries {
    /// Forgets every summary (the lists were replaced).
    pub fn clear(&mut self) {
        self.each.clear();
        self.gate.clear();
        for m in &mut self.members {
            m.clear();
        }
    }

    pub(super) fn get(&mut self, i: usize, owner: &Uuid, lists: &Lists, k: usize) -> ListSummary {
        if i >= self.each.len() {
            self.each.resize(i + 1, None);
        }
        if let Some(s) = self.each[i] {
            return s;
        }
        let list = lists.get(owner).map(Vec::as_slice).unwrap_or(&[]);
        let s = ListSummary {
            fits: list.len() <= k,
            weakest: if list.len() >= k { list.last().copied() } else { None },
            members: list.iter().fold([0; 4], |mut m, e| {
                let (word, bit) = fingerprint(&e.user);
                m[word] |= bit;
                m
            }),
        };
        self.each[i] = Some(s);
        s
    }

    /// Computes every missing summary and packs them all, so that [`super::plan`]
    /// can read them from several threads.
    pub fn fill(&mut self, event: &Event, lists: &Lists) {
        let k = event.k();
        let n = event.participants().len();
        for (i, p) in event.participants().iter().enumerate() {
            self.get(i, &p.user_id, lists, k);
        }
        self.gate.clear();
        for m in &mut self.members {
            m.clear();
        }
        for s in self.each.iter().take(n) {
            let (gate, members) = match s {
                Some(s) if s.fits => (s.weakest.map_or(f32::NEG_INFINITY, |w| w.score), s.members),
                _ => (f32::NEG_INFINITY, [u64::MAX; 4]),
            };
            self.gate.push(gate);
            for (w, m) in members.into_iter().enumerate() {
                self.members[w].push(m);
            }
        }
    }

    pub(super) fn peek(&self, i: usize) -> Option<ListSummary> {
        self.each.get(i).copied().flatten()
    }

    pub(super) fn forget(&mut self, i: Option<usize>) {
        let Some(i) = i else { return };
        if let Some(slot) = self.each.get_mut(i) {
            *slot = None;
        }
        for m in &mut self.members {
            if let Some(word) = m.get_mut(i) {
                *word = u64::MAX;
            }
        }
    }
}

/// One bit of 256 chosen by the id: (word, bit in word).
pub(super) fn fingerprint(user: &Uuid) -> (usize, u64) {
    let x = user.as_u128();
    let h = ((x as u64) ^ ((x >> 64) as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((h >> 62) as usize, 1u64 << ((h >> 56) & 63))
}
