//! List summaries: what the scorer needs to know of a list without reading
//! it (full? its weakest entry, a Bloom filter of its members, and the
//! members themselves when there are few), packed for the plans' scans.

use super::event::{Event, Lists};
use super::topk::Entry;
use uuid::Uuid;

/// Lists of at most this many entries (every list at the default K = 3)
/// keep their members' ids beside the Bloom filter, so that "may hold" is
/// exact for them. The filter alone lets 1.2% of the lists through per
/// attendee at K = 3: at 100,000 attendees, 24,000 needless checks per
/// batch of 20 once most lists are filled, growing with the event.
const EXACT_MEMBERS: usize = 4;

/// The members of a short list (at most [`EXACT_MEMBERS`]), or `None` for
/// a longer one.
type Members = Option<([Uuid; EXACT_MEMBERS], u8)>;

/// What the scorer needs to know of a list without reading it: whether it
/// is full and its weakest entry, and a 256-bit fingerprint of its members
/// (the members themselves, for a short list, are in [`Summaries`]).
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
    /// The member filters transposed, 256 bit planes of `stride` words:
    /// bit `i` of plane `b` (word `b·stride + i/64`) is bit `b` of list
    /// `i`'s packed filter (`members[b/64][i]`), zero past the packed
    /// lists. A newcomer's plan reads its own plane, 12.5 KB at 100,000
    /// lists, instead of a word per list.
    planes: Vec<u64>,
    stride: usize,
    /// Per list, its members when it is short; valid where `each` is `Some`
    /// (both are set together, and a change forgets `each`).
    held: Vec<Members>,
    /// Lists forgotten since the last packing (duplicates allowed): the
    /// only packed entries the next [`Summaries::fill`] recomputes.
    stale: Vec<usize>,
    /// The K the summaries were computed for (`fits` and `weakest` depend on it).
    k: usize,
}

/// A summary as the plans' scan reads it: the gate score and the member
/// filter's words; a list that must always be looked at (longer than K)
/// gets −∞ and all ones.
fn packed(s: ListSummary) -> (f32, [u64; 4]) {
    if s.fits {
        (s.weakest.map_or(f32::NEG_INFINITY, |w| w.score), s.members)
    } else {
        (f32::NEG_INFINITY, [u64::MAX; 4])
    }
}

impl Summaries {
    /// Forgets every summary (the lists were replaced).
    pub fn clear(&mut self) {
        self.each.clear();
        self.held.clear();
        self.stale.clear();
        self.gate.clear();
        for m in &mut self.members {
            m.clear();
        }
        self.planes.clear();
        self.stride = 0;
    }

    /// The bit plane of filter bit `bit` (see `planes`): one word per 64
    /// lists, from list 0.
    pub(super) fn plane(&self, bit: (usize, u64)) -> &[u64] {
        let b = bit.0 * 64 + bit.1.trailing_zeros() as usize;
        self.planes.get(b * self.stride..(b + 1) * self.stride).unwrap_or(&[])
    }

    /// Sets (`on`) or clears the bits of list `i`'s filter `words` in the
    /// planes.
    fn mark(&mut self, i: usize, words: [u64; 4], on: bool) {
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        for (w, mut m) in words.into_iter().enumerate() {
            while m != 0 {
                let b = w * 64 + m.trailing_zeros() as usize;
                m &= m - 1;
                let at = &mut self.planes[b * self.stride + word];
                if on {
                    *at |= bit;
                } else {
                    *at &= !bit;
                }
            }
        }
    }

    /// The filter words of packed list `i`.
    fn words(&self, i: usize) -> [u64; 4] {
        std::array::from_fn(|w| self.members[w][i])
    }

    pub(super) fn get(&mut self, i: usize, owner: &Uuid, lists: &Lists, k: usize) -> ListSummary {
        if i >= self.each.len() {
            self.each.resize(i + 1, None);
            self.held.resize(i + 1, None);
        }
        if let Some(s) = self.each[i] {
            return s;
        }
        let list = lists.get(owner).map(Vec::as_slice).unwrap_or(&[]);
        self.held[i] = (list.len() <= EXACT_MEMBERS).then(|| {
            let mut ids = [Uuid::nil(); EXACT_MEMBERS];
            for (slot, e) in ids.iter_mut().zip(list) {
                *slot = e.user;
            }
            (ids, list.len() as u8)
        });
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

    /// Computes every missing summary and packs them, so that [`super::plan`]
    /// can read them from several threads. Only the lists forgotten since
    /// the last fill and the participants added since are recomputed: the
    /// other packed entries come from summaries that have not changed (a
    /// summary only changes by [`Summaries::forget`] or [`Summaries::clear`]).
    pub fn fill(&mut self, event: &Event, lists: &Lists) {
        let participants = event.participants();
        self.pack(event.k(), participants.len(), |i| participants[i].user_id, lists);
    }

    /// [`Summaries::fill`] for `n` lists, list `i` owned by `owner(i)`.
    fn pack(&mut self, k: usize, n: usize, owner: impl Fn(usize) -> Uuid, lists: &Lists) {
        if k != self.k || self.gate.len() > n {
            self.clear();
            self.k = k;
        }
        // The forgotten lists among those packed, then the new ones.
        let was = self.gate.len();
        self.gate.resize(n, f32::NEG_INFINITY);
        for m in &mut self.members {
            m.resize(n, u64::MAX);
        }
        let stale = std::mem::take(&mut self.stale);
        // The planes are updated in place while the lists are the same
        // ones, and rebuilt when the event grew (their stride changes).
        let rebuild = n != was || self.stride != n.div_ceil(64);
        for i in stale.into_iter().filter(|&i| i < was).chain(was..n) {
            let (gate, members) = packed(self.get(i, &owner(i), lists, k));
            self.gate[i] = gate;
            if !rebuild {
                self.mark(i, self.words(i), false);
                self.mark(i, members, true);
            }
            for (w, m) in members.into_iter().enumerate() {
                self.members[w][i] = m;
            }
        }
        if rebuild {
            self.stride = n.div_ceil(64);
            self.planes.clear();
            self.planes.resize(256 * self.stride, 0);
            for i in 0..n {
                self.mark(i, self.words(i), true);
            }
        }
    }

    /// Whether list `i` may hold `user`: its member filter says so and,
    /// for a short list whose summary is current, its members do. Never
    /// `false` for a list that holds `user`.
    pub(super) fn may_hold(&self, i: usize, user: &Uuid, bit: (usize, u64)) -> bool {
        if self.members[bit.0].get(i).is_some_and(|w| w & bit.1 == 0) {
            return false;
        }
        match (self.each.get(i), self.held.get(i)) {
            (Some(Some(_)), Some(Some((ids, n)))) => ids[..usize::from(*n)].contains(user),
            _ => true,
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
        if i < self.gate.len() && self.stride == self.gate.len().div_ceil(64) {
            self.mark(i, [u64::MAX; 4], true);
        }
        for m in &mut self.members {
            if let Some(word) = m.get_mut(i) {
                *word = u64::MAX;
            }
        }
        self.stale.push(i);
    }
}

/// One bit of 256 chosen by the id: (word, bit in word).
pub(super) fn fingerprint(user: &Uuid) -> (usize, u64) {
    let x = user.as_u128();
    let h = ((x as u64) ^ ((x >> 64) as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((h >> 62) as usize, 1u64 << ((h >> 56) & 63))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Two ids of the same filter bit, the first of them from `start` on.
    fn colliding(start: u128) -> (Uuid, Uuid) {
        let a = Uuid::from_u128(start);
        let bit = fingerprint(&a);
        let b = (start + 1..)
            .map(Uuid::from_u128)
            .find(|b| fingerprint(b) == bit)
            .expect("256 buckets: a collision comes quickly");
        (a, b)
    }

    /// Random lists of 0 to 5 entries over a pool of ids.
    fn random_list(rng: &mut impl Rng, pool: &[Uuid]) -> Vec<Entry> {
        (0..rng.gen_range(0..6))
            .map(|r| Entry::new(pool[rng.gen_range(0..pool.len())], 0.9 - r as f32 * 0.1))
            .collect()
    }

    #[test]
    fn packing_only_the_forgotten_lists_equals_packing_all() {
        let owners: Vec<Uuid> = (0..300u128).map(|i| Uuid::from_u128(i * 7_919 + 1)).collect();
        let pool: Vec<Uuid> = (0..50u128).map(|i| Uuid::from_u128(1 << 64 | i)).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(14);
        let mut lists = Lists::default();
        for o in &owners[..200] {
            lists.insert(*o, random_list(&mut rng, &pool));
        }
        let mut kept = Summaries::default();
        kept.pack(3, 200, |i| owners[i], &lists);
        for round in 0..5 {
            // Some lists change (and are forgotten, as the repairs do), and
            // the event grows.
            for step in 0..40 {
                let i = (round * 53 + step * 31) % 200;
                lists.insert(owners[i], random_list(&mut rng, &pool));
                kept.forget(Some(i));
            }
            let n = 200 + 20 * (round + 1);
            for o in &owners[n - 20..n] {
                lists.insert(*o, random_list(&mut rng, &pool));
            }
            kept.pack(3, n, |i| owners[i], &lists);
            let mut fresh = Summaries::default();
            fresh.pack(3, n, |i| owners[i], &lists);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&kept.gate), bits(&fresh.gate), "round {round}");
            assert_eq!(kept.members, fresh.members, "round {round}");
            assert_eq!(kept.planes, fresh.planes, "round {round}");
            for (i, _) in owners.iter().enumerate().take(n) {
                for b in 0..256 {
                    let word = kept.members[b / 64][i];
                    let plane = kept.plane((b / 64, 1 << (b % 64)));
                    assert_eq!(plane[i / 64] >> (i % 64) & 1, word >> (b % 64) & 1, "list {i} bit {b}");
                }
            }
            for (i, u) in pool.iter().enumerate() {
                let bit = fingerprint(u);
                assert_eq!(kept.may_hold(i, u, bit), fresh.may_hold(i, u, bit));
            }
        }
        // Changes without growth update the planes in place.
        for step in 0..60 {
            let i = (step * 37) % 300;
            lists.insert(owners[i], random_list(&mut rng, &pool));
            kept.forget(Some(i));
        }
        kept.pack(3, 300, |i| owners[i], &lists);
        let mut fresh = Summaries::default();
        fresh.pack(3, 300, |i| owners[i], &lists);
        assert_eq!(kept.members, fresh.members);
        assert_eq!(kept.planes, fresh.planes);
        // Another K recomputes everything.
        kept.pack(2, 300, |i| owners[i], &lists);
        let mut fresh = Summaries::default();
        fresh.pack(2, 300, |i| owners[i], &lists);
        assert_eq!(kept.members, fresh.members);
        assert_eq!(kept.gate.len(), 300);
    }

    #[test]
    fn a_short_list_answers_may_hold_exactly_and_a_long_one_conservatively() {
        let (member, stranger) = colliding(1);
        let bit = fingerprint(&stranger);
        let owner = Uuid::from_u128(u128::MAX);
        let mut lists = Lists::default();
        let short: Vec<Entry> = [member, Uuid::from_u128(900), Uuid::from_u128(901)]
            .iter()
            .enumerate()
            .map(|(r, &u)| Entry::new(u, 0.9 - r as f32 * 0.1))
            .collect();
        lists.insert(owner, short);
        let mut s = Summaries::default();
        let sum = s.get(0, &owner, &lists, 3);
        // The filter alone cannot tell the stranger from the member...
        assert_ne!(sum.members[bit.0] & bit.1, 0);
        // ...the members can.
        assert!(s.may_hold(0, &member, fingerprint(&member)));
        assert!(!s.may_hold(0, &stranger, bit));

        // A list longer than EXACT_MEMBERS keeps only the filter: "maybe".
        let long: Vec<Entry> = std::iter::once(member)
            .chain((0..EXACT_MEMBERS as u128).map(|i| Uuid::from_u128(1_000 + i)))
            .enumerate()
            .map(|(r, u)| Entry::new(u, 0.9 - r as f32 * 0.01))
            .collect();
        lists.insert(owner, long);
        s.forget(Some(0));
        s.get(0, &owner, &lists, 3);
        assert!(s.may_hold(0, &stranger, bit));

        // A forgotten summary says "maybe" until it is computed again.
        lists.insert(owner, vec![Entry::new(Uuid::from_u128(7), 0.5)]);
        s.forget(Some(0));
        assert!(s.may_hold(0, &stranger, bit));
        s.get(0, &owner, &lists, 3);
        assert!(!s.may_hold(0, &stranger, bit));
    }
}
