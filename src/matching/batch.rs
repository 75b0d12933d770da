//! One claimed batch, scored: every claimed attendee repaired in claim order
//! against the event held in memory, and the writes that turn the committed
//! lists into the repaired ones. Pure: the worker hands in the event, the
//! lists as committed and who still has queue work, and writes what comes
//! out (`store::matches::apply`).
//!
//! The batch's own attendees are dirty until repaired, and so is everyone
//! with other open queue rows ([`BatchDirty`]); see `matching::repair` for
//! why repairing them one by one in that state keeps every list exact.

use super::profile::Participant;
use super::score::explain;
use super::{Dirty, Event, IdMap, Lists, Plan, Summaries};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// From this many participants, cosine-v1 batches are scored from 8-bit
/// copies of the vectors first (a quarter of the memory traffic; exact
/// where it matters, see [`super::plan_bounded`]).
pub const APPROX_MIN_PARTICIPANTS: usize = 4_096;

/// A claimed queue row: its id and its attendee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRow {
    pub id: i64,
    pub user_id: Uuid,
}

/// One row of a list as committed in `user_matches` (without the reasons).
#[derive(Debug, Clone, PartialEq)]
pub struct CommittedEntry {
    pub matched_user_id: Uuid,
    pub rank: i16,
    pub score: f32,
    pub algorithm_version: String,
}

/// The lists as committed, by owner, in rank order.
pub type Committed = IdMap<Uuid, Vec<CommittedEntry>>;

/// A row to insert or rewrite in full.
#[derive(Debug, Clone, PartialEq)]
pub struct Upsert {
    pub user_id: Uuid,
    pub matched_user_id: Uuid,
    pub rank: i16,
    pub score: f32,
    /// The `reasons` jsonb, as text.
    pub reasons: String,
}

/// The writes that turn the committed lists into the new ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diff {
    /// (user, matched user) rows to delete.
    pub delete: Vec<(Uuid, Uuid)>,
    /// Rows to insert or rewrite in full.
    pub upsert: Vec<Upsert>,
    /// Existing rows whose only change is their rank.
    pub rerank: Vec<(Uuid, Uuid, i16)>,
}

impl Diff {
    /// Rows written (deleted, inserted or updated).
    pub fn rows(&self) -> usize {
        self.delete.len() + self.upsert.len() + self.rerank.len()
    }
}

/// Who still has queue work during one batch: attendees with open rows
/// other than this batch's, and this batch's attendees until repaired. Kept
/// as flags by participant index, since the scorer asks about every
/// attendee of the event for every claimed one.
pub struct BatchDirty<'a> {
    event: &'a Event,
    other_work: Vec<bool>,
    unrepaired: Vec<bool>,
}

impl<'a> BatchDirty<'a> {
    /// `open_count`: open queue rows per attendee, this batch's included;
    /// `open_flags`: the same as flags by participant index.
    pub fn new(event: &'a Event, open_count: &IdMap<Uuid, u32>, open_flags: &[bool], rows: &[BatchRow]) -> Self {
        let n = event.participant_count();
        let mut claimed: IdMap<Uuid, u32> = IdMap::default();
        for r in rows {
            *claimed.entry(r.user_id).or_default() += 1;
        }
        // Everyone with open rows, then this batch's attendees corrected to
        // "open rows beyond the ones claimed here".
        let mut other_work = open_flags.to_vec();
        other_work.resize(n, false);
        for (user, mine) in &claimed {
            if let Some(i) = event.index_of(user) {
                other_work[i] = open_count.get(user).copied().unwrap_or(0) > *mine;
            }
        }
        let mut unrepaired = vec![false; n];
        for r in rows {
            if let Some(i) = event.index_of(&r.user_id) {
                unrepaired[i] = true;
            }
        }
        Self {
            event,
            other_work,
            unrepaired,
        }
    }

    /// Per participant index: no queue work at the start of the batch
    /// (neither other open rows nor a row of this batch).
    fn clean(&self) -> Vec<bool> {
        self.other_work
            .iter()
            .zip(&self.unrepaired)
            .map(|(&other, &mine)| !(other | mine))
            .collect()
    }

    fn repaired(&mut self, user: &Uuid) {
        if let Some(i) = self.event.index_of(user) {
            self.unrepaired[i] = false;
        }
    }
}

impl Dirty for BatchDirty<'_> {
    fn is_dirty(&self, user: &Uuid) -> bool {
        self.event.index_of(user).is_some_and(|i| self.is_dirty_at(i, user))
    }

    fn is_dirty_at(&self, i: usize, _user: &Uuid) -> bool {
        self.other_work.get(i).copied().unwrap_or(false) || self.unrepaired.get(i).copied().unwrap_or(false)
    }
}

/// When to stop starting attendees, and the test hook that slows them.
#[derive(Clone, Copy)]
pub struct Limits<'a> {
    /// No attendee is started after this.
    pub deadline: Option<std::time::Instant>,
    /// Shutdown requested: no attendee is started either.
    pub stop: &'a dyn Fn() -> bool,
    /// Fault injection: sleep this long before each attendee.
    pub fault_delay: Duration,
}

/// The result of scoring one batch.
#[derive(Debug, Default)]
pub struct Scored {
    pub diff: Diff,
    /// Owners whose lists the diff rewrites.
    pub touched: BTreeSet<Uuid>,
    /// Rows repaired cleanly.
    pub done: Vec<i64>,
    /// Rows repaired but with malformed input to report: (row, attendee, why).
    pub problems: Vec<(i64, Uuid, String)>,
    /// Rows not started before the deadline or shutdown.
    pub unstarted: Vec<i64>,
    /// Rows repaired but waiting on the embedding provider: (row, attendee,
    /// why); filled by the worker, which knows who waits.
    pub deferred: Vec<(i64, Uuid, String)>,
    pub full_recomputes: usize,
    pub fast_checks: usize,
    pub slow_checks: usize,
    pub phases: ScorePhases,
}

/// Where a batch's scoring time went (the worker logs it at debug level).
#[derive(Debug, Default, Clone, Copy)]
pub struct ScorePhases {
    /// The claimed attendees' score rows against the event (the kernel).
    pub rows: Duration,
    /// Packing the list summaries.
    pub fill: Duration,
    /// The plans: own lists and bump candidates.
    pub plan: Duration,
    /// The repairs, one attendee after another.
    pub repair: Duration,
    /// The writes that turn the committed lists into the new ones.
    pub diff: Duration,
}

/// Repairs each claimed attendee in claim order (changing `lists` in place,
/// `summaries` kept in step), then diffs the changed lists against
/// `committed`. `dirty` says who still has queue work (see [`BatchDirty`]).
pub fn score_batch(
    event: &Event,
    lists: &mut Lists,
    summaries: &mut Summaries,
    committed: &Committed,
    mut dirty: BatchDirty<'_>,
    rows: &[BatchRow],
    limits: Limits<'_>,
) -> Scored {
    let mut out = Scored::default();
    let mut repaired = HashSet::new();
    // Every claimed attendee's scores against the event, in one kernel call.
    let mut users: Vec<&Participant> = Vec::with_capacity(rows.len());
    let mut row_of: HashMap<Uuid, usize> = HashMap::with_capacity(rows.len());
    for r in rows {
        if let Some(p) = event.participant(r.user_id).filter(|p| event.matchable(p)) {
            if let std::collections::hash_map::Entry::Vacant(slot) = row_of.entry(p.user_id) {
                slot.insert(users.len());
                users.push(p);
            }
        }
    }
    let n = event.participant_count();
    let t0 = Instant::now();
    // Large cosine-v1 events: approximate rows, made exact where it matters
    // by the plans (see `matching::plan_bounded`).
    let (mut score_rows, bounds) = match (n >= APPROX_MIN_PARTICIPANTS)
        .then(|| event.approx_rows(&users))
        .flatten()
    {
        Some((rows, bounds)) => (rows, Some(bounds)),
        None => (event.score_rows(&users), None),
    };
    let t1 = Instant::now();
    // Each attendee's own list and the lists their bump must look at, decided
    // in parallel against the lists as they were when the batch started.
    summaries.fill(event, lists);
    let clean = dirty.clean();
    let t2 = Instant::now();
    let plans = plan_all(event, summaries, &clean, &users, &mut score_rows, bounds.as_deref());
    let t3 = Instant::now();
    for row in rows {
        let late = limits.deadline.is_some_and(|d| std::time::Instant::now() >= d);
        if late || (limits.stop)() {
            out.unstarted.push(row.id);
            continue;
        }
        if !limits.fault_delay.is_zero() {
            std::thread::sleep(limits.fault_delay);
        }
        dirty.repaired(&row.user_id);
        let at = row_of.get(&row.user_id).copied();
        let with = super::Accelerators {
            row: at.map(|i| &score_rows[i * n..(i + 1) * n]),
            summaries: Some(&mut *summaries),
            plan: at.map(|i| &plans[i]),
        };
        let r = super::repair_with(event, lists, &dirty, row.user_id, with);
        out.full_recomputes += r.full_recomputes;
        out.fast_checks += r.fast_checks;
        out.slow_checks += r.slow_checks;
        out.touched.extend(r.touched);
        // Rows pointing at a repaired attendee get fresh reasons even when
        // the score did not move (their profile text may have).
        out.touched.extend(r.holders);
        repaired.insert(row.user_id);
        match r.problem {
            Some(p) => out.problems.push((row.id, row.user_id, p)),
            None => out.done.push(row.id),
        }
    }
    let t4 = Instant::now();
    out.diff = diff(event, committed, lists, &out.touched, &repaired);
    out.phases = ScorePhases {
        rows: t1 - t0,
        fill: t2 - t1,
        plan: t3 - t2,
        repair: t4 - t3,
        diff: t4.elapsed(),
    };
    out
}

/// [`super::plan`] for every scored attendee, on all cores; with `bounds`,
/// the rows are approximate and [`super::plan_bounded`] makes the scores
/// that matter exact in place.
fn plan_all(
    event: &Event,
    summaries: &Summaries,
    clean: &[bool],
    users: &[&Participant],
    rows: &mut [f32],
    bounds: Option<&[f32]>,
) -> Vec<Plan> {
    let n = event.participant_count();
    if users.is_empty() || n == 0 {
        return Vec::new();
    }
    super::parallel::map_rows(rows, n, |j, row| match bounds {
        Some(b) => super::plan_bounded(event, summaries, clean, users[j], row, b[j]),
        None => super::plan(event, summaries, clean, users[j], row),
    })
}

/// The writes that turn the `old` lists into the `new` ones for `touched`
/// owners. A row is rewritten in full (new reasons) when it is new, when
/// its score or algorithm changed, or when either side was `repaired` (their
/// profile text, hence the explanation, may have changed); a row that only
/// moved gets a new rank; rows that left are deleted.
pub fn diff(event: &Event, old: &Committed, new: &Lists, touched: &BTreeSet<Uuid>, repaired: &HashSet<Uuid>) -> Diff {
    let version = match &event.settings.algorithm {
        Ok(a) => a.as_str(),
        Err(_) => "",
    };
    let mut d = Diff::default();
    let empty = Vec::new();
    for owner in touched {
        let before = old.get(owner).unwrap_or(&empty);
        let after = new.get(owner).map(Vec::as_slice).unwrap_or(&[]);
        for (i, e) in after.iter().enumerate() {
            let rank = (i + 1) as i16;
            let prior = before.iter().find(|r| r.matched_user_id == e.user);
            let rewrite = match prior {
                None => true,
                Some(p) => {
                    repaired.contains(owner)
                        || repaired.contains(&e.user)
                        || p.score.to_bits() != e.score.to_bits()
                        || p.algorithm_version != version
                }
            };
            if rewrite {
                let reasons = match (
                    &event.settings.algorithm,
                    event.participant(*owner),
                    event.participant(e.user),
                ) {
                    (Ok(alg), Some(me), Some(other)) => explain(*alg, me, other, &event.tags).to_string(),
                    _ => "{}".to_string(),
                };
                d.upsert.push(Upsert {
                    user_id: *owner,
                    matched_user_id: e.user,
                    rank,
                    score: e.score,
                    reasons,
                });
            } else if prior.is_some_and(|p| p.rank != rank) {
                d.rerank.push((*owner, e.user, rank));
            }
        }
        for r in before {
            if !after.iter().any(|e| e.user == r.matched_user_id) {
                d.delete.push((*owner, r.matched_user_id));
            }
        }
    }
    d
}

/// `committed` as the lists the scorer works on.
pub fn lists_of(committed: &Committed) -> Lists {
    committed
        .iter()
        .map(|(u, rs)| {
            (
                *u,
                rs.iter()
                    .map(|r| super::Entry::new(r.matched_user_id, r.score))
                    .collect(),
            )
        })
        .collect()
}

/// The committed form of `lists` for `owners`, as a write of them leaves
/// `user_matches` (ranks from 1, the event's algorithm).
pub fn commit(committed: &mut Committed, lists: &Lists, owners: &BTreeSet<Uuid>, algorithm: &str) {
    for owner in owners {
        match lists.get(owner).filter(|l| !l.is_empty()) {
            Some(list) => {
                let rows = list
                    .iter()
                    .enumerate()
                    .map(|(i, e)| CommittedEntry {
                        matched_user_id: e.user,
                        rank: (i + 1) as i16,
                        score: e.score,
                        algorithm_version: algorithm.to_string(),
                    })
                    .collect();
                committed.insert(*owner, rows);
            }
            None => {
                committed.remove(owner);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matching::profile::{ParticipantRow, TagInterner};
    use crate::matching::{brute_force, Algorithm, EventSettings};
    use rand::{Rng, SeedableRng};

    fn event(rng: &mut impl Rng, alg: Algorithm, n: u128, k: usize) -> Event {
        let settings = EventSettings {
            id: Uuid::from_u128(7),
            algorithm: Ok(alg),
            matches_per_user: k,
            exclude_same_company: true,
            embedding_dimensions: None,
        };
        let mut e = Event::new(settings, TagInterner::default());
        let vocab = ["ai", "rust", "climate", "music", "design", "sales", "hiring", "funding"];
        for id in 1..=n {
            let mut pick = |m: usize| -> Option<Vec<Option<String>>> {
                Some(
                    (0..rng.gen_range(0..m))
                        .map(|_| Some(vocab[rng.gen_range(0..vocab.len())].to_string()))
                        .collect(),
                )
            };
            let (interests, looking_for, offering) = (pick(4), pick(3), pick(3));
            let row = ParticipantRow {
                user_id: Uuid::from_u128(id),
                active: rng.gen_bool(0.95),
                company: Some(["Acme", "Globex", "", "Initech"][rng.gen_range(0..4)].to_string()),
                interests,
                looking_for,
                offering,
                embedding: Some((0..4).map(|_| Some(rng.gen_range(-1.0f32..1.0))).collect()),
                ..Default::default()
            };
            let p = Participant::from_row(&row, None, &mut e.tags);
            e.upsert(p);
        }
        e
    }

    /// Applies a diff to committed lists, as `store::matches::apply` does.
    fn apply(committed: &mut Committed, d: &Diff, version: &str) {
        for (u, m) in &d.delete {
            if let Some(l) = committed.get_mut(u) {
                l.retain(|r| r.matched_user_id != *m);
            }
        }
        for (u, m, rank) in &d.rerank {
            let row = committed
                .get_mut(u)
                .and_then(|l| l.iter_mut().find(|r| r.matched_user_id == *m));
            row.expect("a rerank of an existing row").rank = *rank;
        }
        for up in &d.upsert {
            let l = committed.entry(up.user_id).or_default();
            l.retain(|r| r.matched_user_id != up.matched_user_id);
            l.push(CommittedEntry {
                matched_user_id: up.matched_user_id,
                rank: up.rank,
                score: up.score,
                algorithm_version: version.to_string(),
            });
        }
        for l in committed.values_mut() {
            l.sort_by_key(|r| r.rank);
        }
        committed.retain(|_, l| !l.is_empty());
    }

    fn no_stop() -> bool {
        false
    }

    /// A cold start and random churn, drained in random batches exactly as
    /// the worker drains them (open rows, the batch's own rows dirty until
    /// repaired), with every batch's diff applied to the committed lists:
    /// the committed lists end equal to the brute force, ranks included.
    #[test]
    fn batches_drained_like_the_worker_equal_brute_force() {
        for seed in 0..24u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(900 + seed);
            let alg = if seed % 2 == 0 {
                Algorithm::HybridV1
            } else {
                Algorithm::CosineV1
            };
            let k = rng.gen_range(1..4);
            let mut ev = event(&mut rng, alg, 60, k);
            let mut committed = Committed::default();
            let mut lists = Lists::default();
            let mut summaries = Summaries::default();
            let mut queue: Vec<BatchRow> = (1..=60u128)
                .map(|i| BatchRow {
                    id: i as i64,
                    user_id: Uuid::from_u128(i),
                })
                .collect();
            let mut next_id = 100;
            let mut round = 0;
            while !queue.is_empty() {
                round += 1;
                // Now and then a profile edit lands, with its queue row.
                if round % 3 == 0 {
                    let u = Uuid::from_u128(rng.gen_range(1..=60u128));
                    let mut fresh = event(&mut rng, alg, 1, 1).participants()[0].clone();
                    fresh.user_id = u;
                    ev.upsert(fresh);
                    next_id += 1;
                    queue.push(BatchRow {
                        id: next_id,
                        user_id: u,
                    });
                }
                let take = rng.gen_range(1..=7).min(queue.len());
                let batch: Vec<BatchRow> = (0..take)
                    .map(|_| queue.swap_remove(rng.gen_range(0..queue.len())))
                    .collect();
                let mut open_count: IdMap<Uuid, u32> = IdMap::default();
                for r in queue.iter().chain(&batch) {
                    *open_count.entry(r.user_id).or_default() += 1;
                }
                let flags: Vec<bool> = ev
                    .participants()
                    .iter()
                    .map(|p| open_count.contains_key(&p.user_id))
                    .collect();
                let dirty = BatchDirty::new(&ev, &open_count, &flags, &batch);
                let limits = Limits {
                    deadline: None,
                    stop: &no_stop,
                    fault_delay: Duration::ZERO,
                };
                let s = score_batch(&ev, &mut lists, &mut summaries, &committed, dirty, &batch, limits);
                assert_eq!(s.done.len() + s.problems.len(), batch.len());
                apply(&mut committed, &s.diff, alg.as_str());
                let mut expect = committed.clone();
                commit(&mut expect, &lists, &s.touched, alg.as_str());
                assert_eq!(committed, expect, "seed {seed}: the diff must commit exactly the lists");
            }
            assert_eq!(lists_of(&committed), brute_force(&ev), "seed {seed}");
        }
    }

    /// The diff itself: deletes what left, reranks what only moved, rewrites
    /// what is new, rescored, or involves a repaired attendee.
    #[test]
    fn diff_writes_only_what_changed() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let ev = event(&mut rng, Algorithm::CosineV1, 6, 3);
        let u = |i: u128| Uuid::from_u128(i);
        let entry = |m: u128, rank: i16, score: f32| CommittedEntry {
            matched_user_id: u(m),
            rank,
            score,
            algorithm_version: "cosine-v1".into(),
        };
        let mut committed = Committed::default();
        committed.insert(u(1), vec![entry(2, 1, 0.9), entry(3, 2, 0.8), entry(4, 3, 0.7)]);
        let mut lists = Lists::default();
        lists.insert(
            u(1),
            vec![
                crate::matching::Entry::new(u(3), 0.8),
                crate::matching::Entry::new(u(5), 0.75),
                crate::matching::Entry::new(u(4), 0.71),
            ],
        );
        let touched: BTreeSet<Uuid> = [u(1), u(6)].into_iter().collect();
        let d = diff(&ev, &committed, &lists, &touched, &HashSet::new());
        assert_eq!(d.delete, vec![(u(1), u(2))]);
        assert_eq!(d.rerank, vec![(u(1), u(3), 1)]);
        let upserted: Vec<(Uuid, i16)> = d.upsert.iter().map(|x| (x.matched_user_id, x.rank)).collect();
        assert_eq!(upserted, vec![(u(5), 2), (u(4), 3)], "new, then rescored");
        // A repaired attendee's rows get new reasons even at the same score.
        lists.insert(u(1), vec![crate::matching::Entry::new(u(2), 0.9)]);
        committed.insert(u(1), vec![entry(2, 1, 0.9)]);
        let repaired: HashSet<Uuid> = [u(2)].into_iter().collect();
        let d = diff(&ev, &committed, &lists, &touched, &repaired);
        assert_eq!(d.upsert.len(), 1);
        assert!(d.delete.is_empty() && d.rerank.is_empty());
        let d = diff(&ev, &committed, &lists, &touched, &HashSet::new());
        assert_eq!(d.rows(), 0, "nothing changed");
    }
}
