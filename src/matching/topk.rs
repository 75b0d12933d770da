//! Ranking order, top-K selection and the bump rule.
//!
//! The order is total: a higher score ranks first, and equal scores rank by
//! `matched_user_id` ascending, so every list has exactly one correct answer.

use std::cmp::Ordering;
use uuid::Uuid;

/// One entry of an attendee's list: who, and how well they match.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry {
    pub user: Uuid,
    pub score: f32,
}

impl Entry {
    pub fn new(user: Uuid, score: f32) -> Self {
        Self { user, score }
    }
}

/// `Less` when `a` ranks before `b` (better), so sorting ascending by this
/// order yields rank 1 first.
pub fn rank_order(a: &Entry, b: &Entry) -> Ordering {
    b.score.total_cmp(&a.score).then_with(|| a.user.cmp(&b.user))
}

/// True when `a` ranks strictly before `b`.
pub fn beats(a: &Entry, b: &Entry) -> bool {
    rank_order(a, b) == Ordering::Less
}

/// Collects the best `k` entries of a stream, in rank order.
///
/// Keeps a sorted buffer of at most `k` entries: O(n·k) worst case with
/// k ≤ 20, and in practice O(n) because most candidates lose to the weakest
/// entry at once.
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    best: Vec<Entry>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        Self {
            k,
            best: Vec::with_capacity(k + 1),
        }
    }

    /// Offers a candidate; returns whether it entered the list.
    pub fn offer(&mut self, candidate: Entry) -> bool {
        offer(&mut self.best, self.k, candidate)
    }

    pub fn into_vec(self) -> Vec<Entry> {
        self.best
    }

    /// The lowest score a candidate needs to have a chance: the weakest
    /// entry's once the list is full (a tie may still win on the id), else
    /// −∞. A candidate scoring below it never enters.
    pub fn floor(&self) -> f32 {
        match self.best.get(self.k.wrapping_sub(1)) {
            Some(weakest) if self.best.len() >= self.k => weakest.score,
            _ => f32::NEG_INFINITY,
        }
    }
}

/// The bump rule on one list already in rank order: the candidate enters when
/// the list has fewer than `k` entries or it beats the weakest entry, which it
/// then replaces. Returns whether the list changed.
///
/// The candidate must not already be in the list.
pub fn offer(list: &mut Vec<Entry>, k: usize, candidate: Entry) -> bool {
    if k == 0 {
        return false;
    }
    if list.len() >= k {
        match list.last() {
            Some(weakest) if beats(&candidate, weakest) => {}
            _ => return false,
        }
    }
    let at = list.partition_point(|e| beats(e, &candidate));
    list.insert(at, candidate);
    list.truncate(k);
    true
}

/// Sorts a list into rank order.
pub fn sort(list: &mut [Entry]) {
    list.sort_by(rank_order);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn higher_score_ranks_first_and_ties_break_by_id() {
        let a = Entry::new(u(2), 0.5);
        let b = Entry::new(u(1), 0.5);
        let c = Entry::new(u(3), 0.9);
        let mut v = vec![a, b, c];
        sort(&mut v);
        assert_eq!(v.iter().map(|e| e.user).collect::<Vec<_>>(), vec![u(3), u(1), u(2)]);
        assert!(beats(&b, &a));
        assert!(!beats(&a, &b));
        assert!(!beats(&a, &a));
    }

    #[test]
    fn offer_fills_then_bumps_only_strictly_better() {
        let mut list = Vec::new();
        assert!(offer(&mut list, 2, Entry::new(u(5), 0.1)));
        assert!(offer(&mut list, 2, Entry::new(u(6), 0.3)));
        assert_eq!(list.len(), 2);
        // Equal score but larger id: loses the tie, no bump.
        assert!(!offer(&mut list, 2, Entry::new(u(9), 0.1)));
        // Equal score, smaller id: wins the tie and replaces the weakest.
        assert!(offer(&mut list, 2, Entry::new(u(1), 0.1)));
        assert_eq!(list, vec![Entry::new(u(6), 0.3), Entry::new(u(1), 0.1)]);
        // A clear winner goes to rank 1.
        assert!(offer(&mut list, 2, Entry::new(u(7), 0.8)));
        assert_eq!(list, vec![Entry::new(u(7), 0.8), Entry::new(u(6), 0.3)]);
    }

    #[test]
    fn offer_with_k_zero_never_inserts() {
        let mut list = Vec::new();
        assert!(!offer(&mut list, 0, Entry::new(u(1), 1.0)));
        assert!(list.is_empty());
    }

    #[test]
    fn topk_equals_sort_and_truncate_on_random_input() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for k in 1..=6 {
            for _ in 0..200 {
                let n = rng.gen_range(0..40);
                // Few distinct scores, so ties are frequent.
                let entries: Vec<Entry> = (0..n)
                    .map(|i| {
                        Entry::new(
                            u(rng.gen_range(0..1_000_000) * 100 + i),
                            rng.gen_range(0..5) as f32 / 4.0,
                        )
                    })
                    .collect();
                let mut top = TopK::new(k);
                for e in &entries {
                    top.offer(*e);
                }
                let mut expected = entries.clone();
                sort(&mut expected);
                expected.truncate(k);
                assert_eq!(top.into_vec(), expected);
            }
        }
    }

    #[test]
    fn bump_sequence_equals_recomputation() {
        // Offering newcomers one by one to an exact list keeps it exact.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..300 {
            let k = rng.gen_range(1..5);
            let all: Vec<Entry> = (0..rng.gen_range(0..30))
                .map(|i| Entry::new(u(i), rng.gen_range(0..6) as f32))
                .collect();
            let mut list = Vec::new();
            for (i, e) in all.iter().enumerate() {
                offer(&mut list, k, *e);
                let mut expected = all[..=i].to_vec();
                sort(&mut expected);
                expected.truncate(k);
                assert_eq!(list, expected);
            }
        }
    }
}
