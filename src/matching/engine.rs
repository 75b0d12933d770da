//! The event in memory and [`repair`], the one operation the worker applies
//! per claimed attendee.
//!
//! ## Why repairing one attendee keeps every list exact
//!
//! Call a pair *dirty* when one of its two attendees has a queue row that
//! is pending or being processed. The invariant is: every list is the exact
//! top-K of its owner under the current data, for some values of its dirty
//! pairs. When the queue holds no pending or processing rows, no pair is
//! dirty, so every list is exact (the product's exactness property).
//!
//! Every change to the data enqueues the attendee whose pairs it changes, in
//! the same transaction, so the change only touches dirty pairs. `repair(u)`
//! then makes every pair involving `u` clean:
//!
//! - `u`'s own list is recomputed in full from the current data;
//! - for every other attendee `v` that is not dirty itself:
//!   - `u` not in `v`'s list: the bump rule. `v`'s list was exact for some
//!     value of `(v, u)`, so with the true value the new top-K is the top-K of
//!     the old list plus `u`;
//!   - `u` in `v`'s list with the same score: nothing changes;
//!   - `u` in `v`'s list with a higher score: only its rank can change;
//!   - `u` in `v`'s list with a lower score, or no longer eligible: someone
//!     outside the list may now beat it, so `v`'s list is recomputed in full.
//! - a dirty `v` is left alone: its own queue row will recompute its list.
//!
//! An attendee who left (or is unmatchable) is removed from every list, and
//! every clean list that lost them is recomputed in full.

use super::kernel;
use super::profile::{Embedding, Participant, TagInterner};
use super::score::{self, Algorithm};
use super::topk::{self, Entry, TopK};
use super::IdMap;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use uuid::Uuid;

/// The settings of an event that scoring depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSettings {
    pub id: Uuid,
    /// `Err` holds the unknown algorithm name, reported per attendee.
    pub algorithm: Result<Algorithm, String>,
    pub matches_per_user: usize,
    pub exclude_same_company: bool,
    pub embedding_dimensions: Option<usize>,
}

/// Every attendee's list, in rank order. Absent means empty.
pub type Lists = IdMap<Uuid, Vec<Entry>>;

/// An event as the scorers see it: settings, participants (active or not)
/// and exclusions.
#[derive(Debug, Clone)]
pub struct Event {
    pub settings: EventSettings,
    participants: Vec<Participant>,
    index: IdMap<Uuid, usize>,
    /// Per participant: active and matchable under the algorithm.
    matchable: Vec<bool>,
    /// Per participant: the interned company key ([`NO_COMPANY`] when none).
    company: Vec<u32>,
    companies: HashMap<String, u32>,
    /// Per participant, for cosine-v1 on a CPU with an approximate kernel
    /// path: the vector in 16 bits, for [`Event::approx_rows`].
    approx: Vec<Option<Arc<kernel::ApproxVector>>>,
    /// At least the norm of every vector (only ever raised).
    max_norm: f32,
    /// As stored in `match_exclusions` (user, excluded user); checked both ways.
    exclusions: HashSet<(Uuid, Uuid)>,
    /// The same pairs by attendee, in both directions.
    excluded: IdMap<Uuid, Vec<Uuid>>,
    /// Who holds each tag id, per field (interests, looking_for, offering,
    /// keywords), by participant index: hybrid-v1 finds the attendees that
    /// share anything with someone without comparing every pair.
    postings: [IdMap<u32, Vec<u32>>; 4],
    pub tags: TagInterner,
}

/// Per-thread working memory of [`Event::score_rows`]: shared-id counts by
/// participant index (all zero between rows) and which are non-zero.
struct Scratch {
    counts: Vec<score::PairCounts>,
    touched: Vec<u32>,
}

impl Scratch {
    fn new(n: usize, alg: Algorithm) -> Self {
        let n = if alg == Algorithm::HybridV1 { n } else { 0 };
        Self {
            counts: vec![score::PairCounts::default(); n],
            touched: Vec::new(),
        }
    }
}

/// The company id of an attendee without a company (never equal to any).
const NO_COMPANY: u32 = u32::MAX;

/// Score rows use NaN for "not an eligible pair" (real scores are never NaN).
fn score_at(row: &[f32], i: usize) -> Option<f32> {
    row.get(i).copied().filter(|s| !s.is_nan())
}

/// Which attendees still have queue work of their own (their lists are
/// left for that work).
pub trait Dirty {
    fn is_dirty(&self, user: &Uuid) -> bool;

    /// [`Dirty::is_dirty`] for the participant at index `i` of the event
    /// (implementations may answer from an array).
    fn is_dirty_at(&self, _i: usize, user: &Uuid) -> bool {
        self.is_dirty(user)
    }
}

impl<S: std::hash::BuildHasher> Dirty for HashSet<Uuid, S> {
    fn is_dirty(&self, user: &Uuid) -> bool {
        self.contains(user)
    }
}

/// What repairing one attendee did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RepairOutcome {
    /// Malformed input to report for this attendee (their row is retried and
    /// ends `failed` with this text); the lists are repaired regardless.
    pub problem: Option<String>,
    /// Attendees whose list may have changed, the repaired one included.
    pub touched: Vec<Uuid>,
    /// How many lists were recomputed in full (beyond the attendee's own).
    pub full_recomputes: usize,
    /// Clean lists that hold the attendee and did not otherwise change
    /// (their rows may need a fresh explanation).
    pub holders: Vec<Uuid>,
    /// Clean lists decided from their summary alone / by reading the list.
    pub fast_checks: usize,
    pub slow_checks: usize,
}

impl Event {
    pub fn new(settings: EventSettings, tags: TagInterner) -> Self {
        Self {
            settings,
            participants: Vec::new(),
            index: IdMap::default(),
            matchable: Vec::new(),
            company: Vec::new(),
            companies: HashMap::new(),
            approx: Vec::new(),
            max_norm: 0.0,
            exclusions: HashSet::new(),
            excluded: IdMap::default(),
            postings: Default::default(),
            tags,
        }
    }

    /// Adds or replaces a participant.
    pub fn upsert(&mut self, p: Participant) {
        let matchable = self.matchable(&p);
        let company = match &p.company_key {
            Some(key) => match self.companies.get(key) {
                Some(&id) => id,
                None => {
                    let id = u32::try_from(self.companies.len()).unwrap_or(NO_COMPANY - 1);
                    self.companies.insert(key.clone(), id);
                    id
                }
            },
            None => NO_COMPANY,
        };
        let half = match (&self.settings.algorithm, &p.embedding) {
            (Ok(Algorithm::CosineV1), Embedding::Valid(v)) if kernel::approx_available() => {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                self.max_norm = self.max_norm.max(norm * 1.0001);
                Some(Arc::new(kernel::to_approx(v)))
            }
            _ => None,
        };
        let i = match self.index.get(&p.user_id) {
            Some(&i) => {
                let old = std::mem::replace(&mut self.participants[i], p);
                self.post(&old, i, false);
                self.matchable[i] = matchable;
                self.company[i] = company;
                self.approx[i] = half;
                i
            }
            None => {
                let i = self.participants.len();
                self.index.insert(p.user_id, i);
                self.participants.push(p);
                self.matchable.push(matchable);
                self.company.push(company);
                self.approx.push(half);
                i
            }
        };
        let p = self.participants[i].clone();
        self.post(&p, i, true);
    }

    /// Adds or removes participant `i` in the postings of `p`'s tags.
    fn post(&mut self, p: &Participant, i: usize, add: bool) {
        let Ok(at) = u32::try_from(i) else { return };
        let fields: [&[u32]; 4] = [&p.interests, &p.looking_for, &p.offering, &p.keywords];
        for (postings, tags) in self.postings.iter_mut().zip(fields) {
            for t in tags {
                if add {
                    postings.entry(*t).or_default().push(at);
                } else if let Some(list) = postings.get_mut(t) {
                    if let Some(pos) = list.iter().position(|x| *x == at) {
                        list.swap_remove(pos);
                    }
                }
            }
        }
    }

    /// Counts, through the postings, the ids every participant shares with
    /// `u` in each of hybrid-v1's terms; the participants with any are listed
    /// in `scratch.touched` (the others share nothing: strangers).
    fn count_shared(&self, u: &Participant, scratch: &mut Scratch) {
        // (postings field, u's tags, which count): v's interests ∋ u's
        // interest; v's offering ∋ what u looks for (u gets); v's looking_for
        // ∋ what u offers (v gets); v's keywords ∋ u's keyword.
        type Field = fn(&mut score::PairCounts) -> &mut u32;
        let terms: [(usize, &[u32], Field); 4] = [
            (0, &u.interests, |c| &mut c.interests),
            (2, &u.looking_for, |c| &mut c.a_gets),
            (1, &u.offering, |c| &mut c.b_gets),
            (3, &u.keywords, |c| &mut c.keywords),
        ];
        for (field, tags, count) in terms {
            for t in tags {
                for &i in self.postings[field].get(t).into_iter().flatten() {
                    let Some(c) = scratch.counts.get_mut(i as usize) else {
                        continue;
                    };
                    if *c == score::PairCounts::default() {
                        scratch.touched.push(i);
                    }
                    *count(c) += 1;
                }
            }
        }
    }

    /// Records that `a` asked never to be matched with `b` (which works both ways).
    pub fn exclude(&mut self, a: Uuid, b: Uuid) {
        if self.exclusions.insert((a, b)) {
            self.excluded.entry(a).or_default().push(b);
            self.excluded.entry(b).or_default().push(a);
        }
    }

    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }

    /// Exclusion rows held, as in `match_exclusions`.
    pub fn exclusion_rows(&self) -> usize {
        self.exclusions.len()
    }

    pub fn participant(&self, user: Uuid) -> Option<&Participant> {
        self.index.get(&user).map(|&i| &self.participants[i])
    }

    pub fn participants(&self) -> &[Participant] {
        &self.participants
    }

    pub fn k(&self) -> usize {
        self.settings.matches_per_user
    }

    /// The attendee can appear in lists: active and matchable under the
    /// event's algorithm.
    pub fn matchable(&self, p: &Participant) -> bool {
        match self.settings.algorithm {
            Ok(alg) => p.active && alg.unmatchable_reason(p).is_none(),
            Err(_) => false,
        }
    }

    /// The position of an attendee in [`Event::participants`].
    pub fn index_of(&self, user: &Uuid) -> Option<usize> {
        self.index.get(user).copied()
    }

    /// The score of `a` and `b` when they are eligible partners, else `None`.
    pub fn pair_score(&self, a: &Participant, b: &Participant) -> Option<f32> {
        let alg = self.settings.algorithm.as_ref().ok()?;
        if a.user_id == b.user_id || !self.matchable(a) || !self.matchable(b) {
            return None;
        }
        if self.settings.exclude_same_company && a.company_key.is_some() && a.company_key == b.company_key {
            return None;
        }
        if self.exclusions.contains(&(a.user_id, b.user_id)) || self.exclusions.contains(&(b.user_id, a.user_id)) {
            return None;
        }
        alg.score(a, b)
    }

    /// The scores of each of `users` against every participant, in
    /// participant order: `rows[u * n + i]`, NaN where the pair is not
    /// eligible. The embedding similarities of all pairs come from one call
    /// of the blocked kernel (both cores), so scoring a batch costs one pass
    /// over the event's vectors; the result equals [`Event::pair_score`] pair
    /// by pair, bit for bit.
    pub fn score_rows(&self, users: &[&Participant]) -> Vec<f32> {
        let n = self.participants.len();
        let mut out = vec![f32::NAN; users.len() * n];
        let Ok(alg) = self.settings.algorithm else {
            return out;
        };
        // Similarities, where both sides have a valid embedding of one length.
        let cands: Vec<Option<&[f32]>> = self
            .participants
            .iter()
            .zip(&self.matchable)
            .map(|(p, &m)| match &p.embedding {
                Embedding::Valid(v) if m => Some(&v[..]),
                _ => None,
            })
            .collect();
        let with_vec: Vec<(usize, &[f32])> = users
            .iter()
            .enumerate()
            .filter_map(|(r, u)| match &u.embedding {
                Embedding::Valid(v) if self.matchable(u) => Some((r, &v[..])),
                _ => None,
            })
            .collect();
        let queries: Vec<&[f32]> = with_vec.iter().map(|(_, v)| *v).collect();
        // cosine-v1 with every row a query (the usual batch): the kernel
        // writes the similarities straight into the rows (NaN where the
        // candidate has no vector), and eligibility is a few passes over
        // each row instead of one visit per attendee.
        let direct = alg == Algorithm::CosineV1 && with_vec.len() == users.len();
        let sims = if direct {
            kernel::dots(&queries, &cands, &mut out);
            Vec::new()
        } else {
            let mut sims = vec![f32::NAN; with_vec.len() * n];
            kernel::dots(&queries, &cands, &mut sims);
            sims
        };
        let mut sim_row: Vec<Option<&[f32]>> = vec![None; users.len()];
        if !direct {
            for (j, (r, _)) in with_vec.iter().enumerate() {
                sim_row[*r] = Some(&sims[j * n..(j + 1) * n]);
            }
        }

        // Eligibility and the algorithm's score, one row per thread.
        let fill = |row: &mut [f32], u: &Participant, sim: Option<&[f32]>, scratch: &mut Scratch| {
            if direct {
                self.cosine_eligible(row, u);
                return;
            }
            if !self.matchable(u) {
                return;
            }
            let my_company = u.company_key.as_ref().and_then(|k| self.companies.get(k).copied());
            let same_company =
                |i: usize| self.settings.exclude_same_company && my_company.is_some_and(|c| self.company[i] == c);
            for (i, other) in self.participants.iter().enumerate() {
                if !self.matchable[i] || other.user_id == u.user_id || same_company(i) {
                    continue;
                }
                let cos = sim.and_then(|s| score_at(s, i)).map(|c| c.clamp(-1.0, 1.0));
                row[i] = match alg {
                    Algorithm::CosineV1 => match cos {
                        Some(c) => c,
                        None => continue,
                    },
                    // Strangers first: a pair with nothing in common scores
                    // from the similarity alone; the pairs with overlap are
                    // rescored below.
                    Algorithm::HybridV1 => score::stranger_score(cos),
                };
            }
            if alg == Algorithm::HybridV1 {
                self.count_shared(u, scratch);
                for &i in &scratch.touched {
                    let i = i as usize;
                    let counts = std::mem::take(&mut scratch.counts[i]);
                    if !row[i].is_nan() {
                        let cos = sim.and_then(|s| score_at(s, i)).map(|c| c.clamp(-1.0, 1.0));
                        row[i] = score::hybrid_from_counts(u, &self.participants[i], counts, cos).score;
                    }
                }
                scratch.touched.clear();
            }
            for x in self.excluded.get(&u.user_id).into_iter().flatten() {
                if let Some(&i) = self.index.get(x) {
                    row[i] = f32::NAN;
                }
            }
        };
        if n == 0 {
            return out;
        }
        let threads = std::thread::available_parallelism()
            .map_or(1, |t| t.get())
            .min(users.len());
        if threads <= 1 || users.len() * n < 50_000 {
            let mut scratch = Scratch::new(n, alg);
            for (r, row) in out.chunks_mut(n).enumerate() {
                fill(row, users[r], sim_row[r], &mut scratch);
            }
        } else {
            let per = users.len().div_ceil(threads);
            std::thread::scope(|s| {
                for (c, rows) in out.chunks_mut(per * n).enumerate() {
                    let fill = &fill;
                    let sim_row = &sim_row;
                    s.spawn(move || {
                        let mut scratch = Scratch::new(n, alg);
                        for (j, row) in rows.chunks_mut(n).enumerate() {
                            let r = c * per + j;
                            fill(row, users[r], sim_row[r], &mut scratch);
                        }
                    });
                }
            });
        }
        out
    }

    /// A cosine-v1 row of raw similarities made into scores: clamped to
    /// [−1, 1], and NaN for `u` itself, colleagues (when the event excludes
    /// them) and exclusions either way. Attendees without a vector, or not
    /// matchable, are NaN already. The same values as the general fill.
    fn cosine_eligible(&self, row: &mut [f32], u: &Participant) {
        for x in row.iter_mut() {
            *x = x.clamp(-1.0, 1.0);
        }
        if let Some(i) = self.index_of(&u.user_id) {
            row[i] = f32::NAN;
        }
        let company = u.company_key.as_ref().and_then(|k| self.companies.get(k).copied());
        if let Some(c) = company.filter(|_| self.settings.exclude_same_company) {
            for (x, &other) in row.iter_mut().zip(&self.company) {
                if other == c {
                    *x = f32::NAN;
                }
            }
        }
        for x in self.excluded.get(&u.user_id).into_iter().flatten() {
            if let Some(&i) = self.index.get(x) {
                row[i] = f32::NAN;
            }
        }
    }

    /// cosine-v1 rows of `users` (all matchable, with vectors of one length)
    /// from 16-bit vectors: every eligible pair within `bounds[r]` of its
    /// exact score in [`Event::score_rows`], and NaN exactly where that row
    /// has NaN. Half the memory traffic of the exact rows; [`plan_bounded`]
    /// then computes exactly the scores that matter. `None` when the event
    /// is not cosine-v1, the CPU has no approximate kernel, or a user does
    /// not fit.
    pub fn approx_rows(&self, users: &[&Participant]) -> Option<(Vec<f32>, Vec<f32>)> {
        if self.settings.algorithm != Ok(Algorithm::CosineV1) || !kernel::approx_available() {
            return None;
        }
        let n = self.participants.len();
        let mut queries = Vec::with_capacity(users.len());
        let mut bounds = Vec::with_capacity(users.len());
        let mut len = None;
        for u in users {
            let (Embedding::Valid(v), Some(&i)) = (&u.embedding, self.index.get(&u.user_id)) else {
                return None;
            };
            if !self.matchable(u) || *len.get_or_insert(v.len()) != v.len() {
                return None;
            }
            self.approx.get(i)?.as_ref()?;
            queries.push(&v[..]);
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt() * 1.0001;
            bounds.push(kernel::approx_error(norm, self.max_norm, v.len()));
        }
        let len = len?;
        // The same candidates as the exact rows: matchable, with a vector
        // of the queries' length.
        let cands: Vec<Option<&kernel::ApproxVector>> = self
            .participants
            .iter()
            .zip(&self.matchable)
            .zip(&self.approx)
            .map(|((p, &m), h)| match (&p.embedding, h) {
                (Embedding::Valid(v), Some(h)) if m && v.len() == len => Some(&**h),
                _ => None,
            })
            .collect();
        let mut out = vec![f32::NAN; users.len() * n];
        if !kernel::dots_approx(&queries, &cands, &mut out) {
            return None;
        }
        // Clamping moves no pair further from its exact score.
        for (row, u) in out.chunks_mut(n.max(1)).zip(users) {
            self.cosine_eligible(row, u);
        }
        Some((out, bounds))
    }

    /// The exact cosine-v1 score of `u` and participant `i` as
    /// [`Event::score_rows`] computes it, for a pair known to be eligible.
    fn cosine_exact(&self, u: &[f32], i: usize) -> f32 {
        match &self.participants[i].embedding {
            Embedding::Valid(v) => kernel::dot(u, v).clamp(-1.0, 1.0),
            _ => f32::NAN,
        }
    }

    /// The exact top-K of one participant, from scratch.
    pub fn top_k(&self, p: &Participant) -> Vec<Entry> {
        if !self.matchable(p) {
            return Vec::new();
        }
        self.top_k_of_row(&self.score_rows(&[p]))
    }

    /// The top-K of a row of [`Event::score_rows`].
    pub fn top_k_of_row(&self, row: &[f32]) -> Vec<Entry> {
        let mut top = TopK::new(self.k());
        // Only scores at or above the K-th best so far can enter (NaN never
        // does): one comparison per attendee instead of an offer.
        let mut floor = f32::NEG_INFINITY;
        for (s, other) in row.iter().zip(&self.participants) {
            if *s >= floor {
                top.offer(Entry::new(other.user_id, *s));
                floor = top.floor();
            }
        }
        top.into_vec()
    }

    /// Why an attendee who got no partner at all is stranded, when the cause
    /// is their data: under cosine-v1, an embedding whose length no other
    /// attendee shares (the event sets no `embedding_dimensions`).
    pub fn incomparable(&self, p: &Participant) -> Option<String> {
        let (Ok(Algorithm::CosineV1), Embedding::Valid(mine)) = (&self.settings.algorithm, &p.embedding) else {
            return None;
        };
        let others = || {
            self.participants.iter().filter_map(|o| match &o.embedding {
                Embedding::Valid(v) if o.user_id != p.user_id && o.active => Some(v.len()),
                _ => None,
            })
        };
        if others().any(|len| len == mine.len()) {
            return None;
        }
        let other = others().next()?;
        Some(format!(
            "embedding has {} dimensions but other attendees' have {other}: comparable with no one",
            mine.len()
        ))
    }

    /// The problem to report for an attendee, if any.
    pub fn problem(&self, p: &Participant) -> Option<String> {
        match &self.settings.algorithm {
            Err(why) => Some(why.clone()),
            Ok(alg) => alg.problem(p),
        }
    }
}

/// Makes every pair involving `user` clean (see the module docs). `dirty`
/// holds the attendees that still have queue work of their own; their lists
/// are left for that work.
pub fn repair<D: Dirty + ?Sized>(event: &Event, lists: &mut Lists, dirty: &D, user: Uuid) -> RepairOutcome {
    repair_fast(event, lists, dirty, user, None, None, None)
}

/// What the scorer needs to know of a list without reading it: whether it
/// is full and its weakest entry, and a 64-bit fingerprint of its members.
/// Reading the list itself is a random memory access per attendee; the
/// summaries are one array in participant order.
#[derive(Debug, Clone, Copy)]
struct ListSummary {
    /// At most K entries (a longer list, after K was lowered, takes the slow path).
    fits: bool,
    /// The weakest entry when the list holds K entries.
    weakest: Option<Entry>,
    /// A one-hash Bloom filter of the members (256 bits: with K = 3 a
    /// non-member looks like a member 1.2% of the time).
    members: [u64; 4],
}

/// Summaries of the lists, by participant index, computed on first use and
/// forgotten whenever a list changes. Keep one per [`Lists`]: after the
/// lists change outside [`repair_fast`], call [`Summaries::clear`].
///
/// [`Summaries::fill`] also packs them for [`plan`], which scans every list
/// for every attendee of a batch: per list a gate score (4 bytes) and the
/// member filter split by word (a newcomer reads only its own word), instead
/// of a whole summary per list and attendee.
#[derive(Debug, Default, Clone)]
pub struct Summaries {
    each: Vec<Option<ListSummary>>,
    /// Per list: the weakest score when the list is full, −∞ when it has
    /// room. A newcomer below it cannot enter; one equal to it may, on the id.
    gate: Vec<f32>,
    /// Per word of the member filter, per list; all ones where the list must
    /// always be looked at (it does not fit, or changed since the packing).
    members: [Vec<u64>; 4],
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

    fn get(&mut self, i: usize, owner: &Uuid, lists: &Lists, k: usize) -> ListSummary {
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

    /// Computes every missing summary and packs them all, so that [`plan`]
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

    fn peek(&self, i: usize) -> Option<ListSummary> {
        self.each.get(i).copied().flatten()
    }

    fn forget(&mut self, i: Option<usize>) {
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

/// What can be decided for one attendee of a batch before any of the batch
/// is repaired, and so in parallel: their own top-K, and the lists the bump
/// rule must look at.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub own: Vec<Entry>,
    /// Participant indices of lists that were clean when the batch started
    /// and that may hold the attendee or that the attendee may enter.
    pub candidates: Vec<u32>,
}

/// Plans the repair of `user` from their score row (see [`Plan`]).
///
/// Why leaving out the other lists is safe: a list left out was clean at the
/// start of the batch, did not hold `user` (its member filter says so) and
/// had K entries that `user` does not beat. During the batch such a list
/// only changes by the bump rule (its weakest entry only gets stronger, and
/// only other attendees enter) or by a full recomputation (exact under the
/// current data, `user` included), so `user` has nothing to do there when
/// its turn comes. Lists of attendees dirty at the start are repaired by
/// their own rows, or, for this batch's attendees, computed in full from
/// the same snapshot.
pub fn plan(event: &Event, summaries: &Summaries, clean: &[bool], user: &Participant, row: &[f32]) -> Plan {
    Plan {
        own: event.top_k_of_row(row),
        candidates: bump_candidates(event, summaries, clean, user, row, 0.0),
    }
}

/// [`plan`] from a row of [`Event::approx_rows`], whose scores are within
/// `bound` of the exact ones: the same plan, up to a few more candidates.
/// The scores the plan and the repair read (the candidates', and any that
/// may be among the attendee's K best) are computed exactly into `row`; the
/// others stay approximate and are never read (see [`repair_fast`]).
///
/// Why that is exact: with L the K-th largest of the lower bounds
/// `row[i] - bound`, at least K pairs score ≥ L exactly, so a pair with
/// `row[i] + bound < L` scores < L exactly and is not among the K best. A
/// list whose gate (weakest score) exceeds `row[i] + bound` is strictly
/// above the exact score too, which cannot enter it; those are the lists
/// [`plan`] leaves out, with the same argument (see its docs).
pub fn plan_bounded(
    event: &Event,
    summaries: &Summaries,
    clean: &[bool],
    user: &Participant,
    row: &mut [f32],
    bound: f32,
) -> Plan {
    let Embedding::Valid(mine) = &user.embedding else {
        return plan(event, summaries, clean, user, row);
    };
    let k = event.k();
    let participants = event.participants();
    let n = participants.len().min(row.len());
    // The K largest lower bounds, to find L; on the way, every pair whose
    // upper bound reaches the running K-th lower bound (which only rises to
    // L), a superset of those that reach L.
    let mut lows: Vec<f32> = Vec::with_capacity(k + 1);
    let mut floor = f32::NEG_INFINITY;
    let mut maybe: Vec<u32> = Vec::new();
    for (i, &s) in row[..n].iter().enumerate() {
        if s + bound >= floor {
            maybe.push(i as u32);
            let low = s - bound;
            if low > floor || lows.len() < k {
                let at = lows.partition_point(|&x| x >= low);
                lows.insert(at, low);
                lows.truncate(k);
                if lows.len() == k {
                    floor = lows[k - 1];
                }
            }
        }
    }
    let l = if lows.len() == k { floor } else { f32::NEG_INFINITY };
    let candidates = bump_candidates(event, summaries, clean, user, row, bound);
    let mut own = TopK::new(k);
    for &i in &maybe {
        let i = i as usize;
        if row[i] + bound >= l {
            row[i] = event.cosine_exact(mine, i);
            own.offer(Entry::new(participants[i].user_id, row[i]));
        }
    }
    // Candidates among the own ones are exact already; recomputing gives
    // the same bits.
    for &i in &candidates {
        let i = i as usize;
        if !row[i].is_nan() {
            row[i] = event.cosine_exact(mine, i);
        }
    }
    Plan {
        own: own.into_vec(),
        candidates,
    }
}

/// The clean lists `user` may be in or may enter, from the packed summaries
/// (see `Summaries::fill`): every list that may hold them, and every list
/// whose gate their score (give or take `slack`) reaches. A list beyond the
/// packed ones (none after a fill) is always included.
fn bump_candidates(
    event: &Event,
    summaries: &Summaries,
    clean: &[bool],
    user: &Participant,
    row: &[f32],
    slack: f32,
) -> Vec<u32> {
    let bit = fingerprint(&user.user_id);
    let participants = event.participants();
    let me = event.index_of(&user.user_id);
    let mut candidates = Vec::new();
    let members = &summaries.members[bit.0];
    let packed = summaries.gate.len().min(members.len()).min(participants.len());
    for (i, &is_clean) in clean.iter().enumerate().take(participants.len()) {
        if !is_clean || me == Some(i) {
            continue;
        }
        if i < packed && members[i] & bit.1 == 0 {
            // Not a member: look only if the attendee may enter. A NaN
            // score (not an eligible pair) compares false both ways.
            let s = row.get(i).copied().unwrap_or(f32::NAN);
            let gate = summaries.gate[i];
            let enters = if slack > 0.0 {
                s + slack >= gate
            } else {
                s > gate
                    || (s == gate
                        && summaries
                            .peek(i)
                            .and_then(|sum| sum.weakest)
                            .is_none_or(|w| topk::beats(&Entry::new(user.user_id, s), &w)))
            };
            if !enters {
                continue;
            }
        }
        candidates.push(i as u32);
    }
    candidates
}

/// One bit of 256 chosen by the id: (word, bit in word).
fn fingerprint(user: &Uuid) -> (usize, u64) {
    let x = user.as_u128();
    let h = ((x as u64) ^ ((x >> 64) as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((h >> 62) as usize, 1u64 << ((h >> 56) & 63))
}

/// [`repair`] with what a batch already has: the attendee's row of
/// [`Event::score_rows`], list summaries that let it skip, without reading
/// them, the lists the attendee is not in and cannot enter, and a [`plan`].
/// Same result.
pub fn repair_fast<D: Dirty + ?Sized>(
    event: &Event,
    lists: &mut Lists,
    dirty: &D,
    user: Uuid,
    row: Option<&[f32]>,
    mut summaries: Option<&mut Summaries>,
    plan: Option<&Plan>,
) -> RepairOutcome {
    let mut out = RepairOutcome {
        touched: vec![user],
        ..Default::default()
    };
    let me = event.participant(user);
    out.problem = match me {
        Some(p) if p.active => event.problem(p),
        _ => None,
    };
    let forget = |summaries: &mut Option<&mut Summaries>, v: &Uuid| {
        if let Some(s) = summaries.as_deref_mut() {
            s.forget(event.index_of(v));
        }
    };
    let recompute = |v: Uuid, lists: &mut Lists, out: &mut RepairOutcome, summaries: &mut Option<&mut Summaries>| {
        let list = event.participant(v).map(|p| event.top_k(p)).unwrap_or_default();
        set_list(lists, v, list);
        forget(summaries, &v);
        out.touched.push(v);
        out.full_recomputes += 1;
    };
    forget(&mut summaries, &user);

    let me = match me {
        Some(p) if event.matchable(p) => p,
        _ => {
            // Gone, left or unmatchable: in no list, and no list of their own.
            lists.remove(&user);
            let holders: Vec<Uuid> = lists
                .iter()
                .filter(|(_, l)| l.iter().any(|e| e.user == user))
                .map(|(v, _)| *v)
                .collect();
            for v in holders {
                if let Some(l) = lists.get_mut(&v) {
                    l.retain(|e| e.user != user);
                }
                forget(&mut summaries, &v);
                out.touched.push(v);
                let clean = event.participant(v).is_some_and(|p| event.matchable(p)) && !dirty.is_dirty(&v);
                if clean {
                    recompute(v, lists, &mut out, &mut summaries);
                }
            }
            return out;
        }
    };

    let k = event.k();
    let computed;
    let row = match row {
        Some(r) => r,
        None => {
            computed = event.score_rows(&[me]);
            &computed
        }
    };
    let my_bit = fingerprint(&user);
    let mut own = TopK::new(k);
    let participants = event.participants();
    // Without a plan: every attendee, building the own list on the way.
    // With one: only the lists the plan could not rule out.
    let all: Box<dyn Iterator<Item = usize>> = match plan {
        None => Box::new(0..participants.len()),
        Some(p) => Box::new(p.candidates.iter().map(|&i| i as usize)),
    };
    for i in all {
        let other = &participants[i];
        let v = other.user_id;
        let score = score_at(row, i);
        if plan.is_none() {
            if let Some(s) = score {
                own.offer(Entry::new(v, s));
            }
        }
        if v == user || dirty.is_dirty_at(i, &v) {
            continue;
        }
        // The fast path: v's list cannot hold `user` (its fingerprint says
        // so), so only the bump rule applies, and the weakest entry decides.
        if let Some(sums) = summaries.as_deref_mut() {
            let sum = sums.get(i, &v, lists, k);
            if sum.fits && sum.members[my_bit.0] & my_bit.1 == 0 {
                out.fast_checks += 1;
                let Some(s) = score else { continue };
                let candidate = Entry::new(user, s);
                if sum.weakest.is_some_and(|w| !topk::beats(&candidate, &w)) {
                    continue;
                }
                if topk::offer(lists.entry(v).or_default(), k, candidate) {
                    sums.forget(Some(i));
                    out.touched.push(v);
                }
                continue;
            }
        }
        out.slow_checks += 1;
        let Some(score) = score else {
            // Not eligible (any more): must not stay in their list.
            let holds = lists.get(&v).is_some_and(|l| l.iter().any(|e| e.user == user));
            if holds {
                recompute(v, lists, &mut out, &mut summaries);
            }
            continue;
        };
        let list = lists.entry(v).or_default();
        match list.iter().position(|e| e.user == user) {
            None => {
                if topk::offer(list, k, Entry::new(user, score)) {
                    forget(&mut summaries, &v);
                    out.touched.push(v);
                }
            }
            // Longer than K (K was lowered): only a full recomputation is exact.
            Some(_) if list.len() > k => recompute(v, lists, &mut out, &mut summaries),
            Some(i) => {
                let old = list[i].score;
                if score.to_bits() == old.to_bits() {
                    out.holders.push(v);
                    continue;
                }
                if score > old {
                    list[i].score = score;
                    topk::sort(list);
                    forget(&mut summaries, &v);
                    out.touched.push(v);
                } else {
                    recompute(v, lists, &mut out, &mut summaries);
                }
            }
        }
    }
    let own = match plan {
        Some(p) => p.own.clone(),
        None => own.into_vec(),
    };
    if own.is_empty() && out.problem.is_none() {
        out.problem = event.incomparable(me);
    }
    set_list(lists, user, own);
    forget(&mut summaries, &user);
    out.touched.sort_unstable();
    out.touched.dedup();
    out
}

fn set_list(lists: &mut Lists, user: Uuid, list: Vec<Entry>) {
    if list.is_empty() {
        lists.remove(&user);
    } else {
        lists.insert(user, list);
    }
}

/// The exact lists of every attendee, from scratch: the brute force the
/// incremental path must always agree with.
pub fn brute_force(event: &Event) -> Lists {
    let mut lists = Lists::default();
    let n = event.participants().len();
    for chunk in event.participants().chunks(64) {
        let users: Vec<&Participant> = chunk.iter().collect();
        let rows = event.score_rows(&users);
        for (p, row) in chunk.iter().zip(rows.chunks(n.max(1))) {
            let list = if event.matchable(p) {
                event.top_k_of_row(row)
            } else {
                Vec::new()
            };
            set_list(&mut lists, p.user_id, list);
        }
    }
    lists
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matching::profile::ParticipantRow;
    use rand::{Rng, SeedableRng};

    fn settings(alg: Algorithm, k: usize) -> EventSettings {
        EventSettings {
            id: Uuid::from_u128(999),
            algorithm: Ok(alg),
            matches_per_user: k,
            exclude_same_company: true,
            embedding_dimensions: None,
        }
    }

    fn random_row(rng: &mut impl Rng, id: u128) -> ParticipantRow {
        let vocab = ["ai", "rust", "climate", "music", "design", "sales", "hiring", "funding"];
        let mut pick = |n: usize| -> Option<Vec<Option<String>>> {
            Some(
                (0..rng.gen_range(0..n))
                    .map(|_| Some(vocab[rng.gen_range(0..vocab.len())].to_string()))
                    .collect(),
            )
        };
        let (interests, looking_for, offering) = (pick(4), pick(3), pick(3));
        let companies = ["Acme", " acme ", "Globex", "", "Initech"];
        ParticipantRow {
            user_id: Uuid::from_u128(id),
            active: true,
            company: Some(companies[rng.gen_range(0..companies.len())].to_string()),
            interests,
            looking_for,
            offering,
            embedding: rng
                .gen_bool(0.9)
                .then(|| (0..4).map(|_| Some(rng.gen_range(-1.0f32..1.0))).collect()),
            ..Default::default()
        }
    }

    /// The batch path (all pairs from one kernel call) and the pair-by-pair
    /// reference agree bit for bit, exclusions and companies included.
    #[test]
    fn score_rows_equal_pair_scores() {
        for seed in 0..6u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(500 + seed);
            let alg = if seed % 2 == 0 {
                Algorithm::HybridV1
            } else {
                Algorithm::CosineV1
            };
            let mut event = Event::new(settings(alg, 3), TagInterner::default());
            for id in 1..=300 {
                let mut row = random_row(&mut rng, id);
                row.active = rng.gen_bool(0.9);
                if rng.gen_bool(0.05) {
                    row.embedding = Some(vec![Some(1.0), Some(2.0)]); // another length
                }
                let p = Participant::from_row(&row, None, &mut event.tags);
                event.upsert(p);
            }
            for _ in 0..40 {
                let (a, b) = (rng.gen_range(1..=300u128), rng.gen_range(1..=300u128));
                if a != b {
                    event.exclude(Uuid::from_u128(a), Uuid::from_u128(b));
                }
            }
            // Any attendees; and only attendees with a vector, the usual
            // batch, which cosine-v1 scores in place.
            let any: Vec<&Participant> = event.participants().iter().take(37).collect();
            let with_vectors: Vec<&Participant> = event
                .participants()
                .iter()
                .filter(|p| event.matchable(p) && matches!(p.embedding, Embedding::Valid(_)))
                .take(37)
                .collect();
            for users in [any, with_vectors] {
                let rows = event.score_rows(&users);
                let n = event.participants().len();
                for (r, u) in users.iter().enumerate() {
                    for (i, v) in event.participants().iter().enumerate() {
                        let got = score_at(&rows[r * n..(r + 1) * n], i).map(f32::to_bits);
                        assert_eq!(got, event.pair_score(u, v).map(f32::to_bits), "seed {seed} {r} {i}");
                    }
                }
            }
        }
    }

    /// What the leave trigger does: drop the leaver from every list; returns
    /// the attendees who lost them (to be re-matched).
    fn leave_trigger(lists: &mut Lists, id: Uuid) -> Vec<Uuid> {
        lists.remove(&id);
        let mut losers = Vec::new();
        for (v, l) in lists.iter_mut() {
            if l.iter().any(|e| e.user == id) {
                l.retain(|e| e.user != id);
                losers.push(*v);
            }
        }
        losers
    }

    /// `changes` random edits and leaves of attendees 1..=n, as the
    /// triggers record them: the lists lose leavers, and whoever must be
    /// re-matched becomes dirty.
    fn churn(
        rng: &mut impl Rng,
        event: &mut Event,
        lists: &mut Lists,
        dirty: &mut HashSet<Uuid>,
        n: u128,
        changes: usize,
    ) {
        for _ in 0..changes {
            let id = Uuid::from_u128(rng.gen_range(1..=n));
            let mut row = random_row(rng, id.as_u128());
            row.active = rng.gen_bool(0.85);
            let p = Participant::from_row(&row, None, &mut event.tags);
            event.upsert(p);
            if !row.active {
                dirty.extend(leave_trigger(lists, id));
            }
            dirty.insert(id);
        }
    }

    /// Random joins, edits, leaves and exclusions, each followed by the
    /// trigger's enqueue and a repair: the lists must equal the brute force
    /// after every step (every change is drained at once, so nothing is dirty).
    #[test]
    fn sequential_repairs_equal_brute_force() {
        for seed in 0..40u64 {
            // Odd seeds replay the churn of the even seed before them
            // through the summary fast path.
            let mut sums = (seed % 2 == 1).then(Summaries::default);
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed / 2);
            let alg = if (seed / 2) % 2 == 0 {
                Algorithm::HybridV1
            } else {
                Algorithm::CosineV1
            };
            let k = rng.gen_range(1..5);
            let mut event = Event::new(settings(alg, k), TagInterner::default());
            let mut lists = Lists::default();
            let dirty = HashSet::new();
            let mut next_id = 1u128;
            for step in 0..150 {
                let ids: Vec<Uuid> = event.participants().iter().map(|p| p.user_id).collect();
                let op = rng.gen_range(0..10);
                let mut to_repair = Vec::new();
                if op < 4 || ids.is_empty() {
                    let row = random_row(&mut rng, next_id);
                    next_id += 1;
                    let p = Participant::from_row(&row, None, &mut event.tags);
                    to_repair.push(p.user_id);
                    event.upsert(p);
                } else if op < 7 {
                    let id = ids[rng.gen_range(0..ids.len())];
                    let mut row = random_row(&mut rng, id.as_u128());
                    row.active = rng.gen_bool(0.8);
                    let p = Participant::from_row(&row, None, &mut event.tags);
                    event.upsert(p);
                    if !row.active {
                        to_repair.extend(leave_trigger(&mut lists, id));
                    }
                    to_repair.push(id);
                } else {
                    let a = ids[rng.gen_range(0..ids.len())];
                    let b = ids[rng.gen_range(0..ids.len())];
                    if a != b {
                        event.exclude(a, b);
                        for (x, y) in [(a, b), (b, a)] {
                            if let Some(l) = lists.get_mut(&x) {
                                l.retain(|e| e.user != y);
                            }
                        }
                        to_repair.extend([a, b]);
                    }
                }
                if let Some(s) = sums.as_mut() {
                    // The triggers changed lists outside the scorer.
                    s.clear();
                }
                for u in to_repair {
                    repair_fast(&event, &mut lists, &dirty, u, None, sums.as_mut(), None);
                }
                let mut lists_now = lists.clone();
                lists_now.retain(|_, l| !l.is_empty());
                assert_eq!(lists_now, brute_force(&event), "seed {seed} step {step}");
            }
        }
    }

    /// Many changes land before any is processed (all dirty at once), then
    /// the rows are drained in random order: the end state is exact.
    #[test]
    fn batched_changes_drained_in_any_order_equal_brute_force() {
        for seed in 0..40u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(100 + seed / 2);
            let alg = if (seed / 2) % 2 == 0 {
                Algorithm::HybridV1
            } else {
                Algorithm::CosineV1
            };
            let mut event = Event::new(settings(alg, 3), TagInterner::default());
            for id in 1..=60 {
                let p = Participant::from_row(&random_row(&mut rng, id), None, &mut event.tags);
                event.upsert(p);
            }
            let mut lists = brute_force(&event);
            let mut dirty: HashSet<Uuid> = HashSet::new();
            churn(&mut rng, &mut event, &mut lists, &mut dirty, 60, 25);
            let mut queue: Vec<Uuid> = dirty.iter().copied().collect();
            queue.sort();
            let mut sums = (seed % 2 == 1).then(Summaries::default);
            while !queue.is_empty() {
                let u = queue.swap_remove(rng.gen_range(0..queue.len()));
                dirty.remove(&u);
                repair_fast(&event, &mut lists, &dirty, u, None, sums.as_mut(), None);
            }
            lists.retain(|_, l| !l.is_empty());
            assert_eq!(lists, brute_force(&event), "seed {seed}");
        }
    }

    /// A cold start (no lists, everyone queued) or a matched event (the
    /// brute force's lists, nobody queued).
    fn starting_point(event: &Event, cold: bool) -> (Lists, HashSet<Uuid>) {
        if cold {
            (
                Lists::default(),
                event.participants().iter().map(|p| p.user_id).collect(),
            )
        } else {
            (brute_force(event), HashSet::new())
        }
    }

    /// Drains `dirty` the way the worker does: random batches of up to
    /// `max_batch`, every attendee planned against the lists as they were at
    /// the start of the batch (from approximate rows and [`plan_bounded`]
    /// when [`Event::approx_rows`] allows it), then repaired in order.
    /// Returns how many batches were scored from approximate rows.
    fn drain_planned(
        rng: &mut impl Rng,
        event: &Event,
        lists: &mut Lists,
        dirty: &mut HashSet<Uuid>,
        max_batch: usize,
    ) -> usize {
        let mut approximated = 0;
        let mut queue: Vec<Uuid> = dirty.iter().copied().collect();
        queue.sort();
        let mut sums = Summaries::default();
        while !queue.is_empty() {
            let take = rng.gen_range(1..=max_batch).min(queue.len());
            let batch: Vec<Uuid> = (0..take)
                .map(|_| queue.swap_remove(rng.gen_range(0..queue.len())))
                .collect();
            // At the start of the batch: everyone queued is dirty.
            sums.fill(event, lists);
            let clean: Vec<bool> = event
                .participants()
                .iter()
                .map(|p| !dirty.contains(&p.user_id))
                .collect();
            let users: Vec<&Participant> = batch
                .iter()
                .filter_map(|u| event.participant(*u).filter(|p| event.matchable(p)))
                .collect();
            let n = event.participants().len();
            let (mut rows, bounds) = match event.approx_rows(&users) {
                Some((rows, bounds)) => {
                    approximated += 1;
                    (rows, Some(bounds))
                }
                None => (event.score_rows(&users), None),
            };
            let mut plans = Vec::new();
            for (j, row) in rows.chunks_mut(n.max(1)).enumerate().take(users.len()) {
                plans.push(match &bounds {
                    Some(b) => plan_bounded(event, &sums, &clean, users[j], row, b[j]),
                    None => plan(event, &sums, &clean, users[j], row),
                });
            }
            for u in &batch {
                dirty.remove(u);
                let j = users.iter().position(|p| p.user_id == *u);
                let row = j.map(|j| &rows[j * n..(j + 1) * n]);
                let pl = j.map(|j| &plans[j]);
                repair_fast(event, lists, dirty, *u, row, Some(&mut sums), pl);
            }
        }
        approximated
    }

    /// The worker's path: batches of up to 6 attendees, each planned in
    /// advance against the lists as they were at the start of its batch,
    /// then repaired in order. Also with a cold start (every list empty and
    /// every attendee queued).
    #[test]
    fn planned_batches_equal_brute_force() {
        for seed in 0..30u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(700 + seed);
            let alg = if seed % 2 == 0 {
                Algorithm::HybridV1
            } else {
                Algorithm::CosineV1
            };
            let mut event = Event::new(settings(alg, rng.gen_range(1..4)), TagInterner::default());
            for id in 1..=70 {
                let p = Participant::from_row(&random_row(&mut rng, id), None, &mut event.tags);
                event.upsert(p);
            }
            let cold = seed % 3 == 0;
            let (mut lists, mut dirty) = starting_point(&event, cold);
            if !cold {
                churn(&mut rng, &mut event, &mut lists, &mut dirty, 70, 25);
            }
            drain_planned(&mut rng, &event, &mut lists, &mut dirty, 6);
            lists.retain(|_, l| !l.is_empty());
            assert_eq!(lists, brute_force(&event), "seed {seed}");
        }
    }

    /// The worker's path for large cosine-v1 events: approximate 16-bit
    /// rows, planned with [`plan_bounded`], then repaired. Vectors come from
    /// a few clusters on a coarse grid, so that many pairs score within the
    /// approximation's error of each other (and many tie exactly); the lists
    /// must still equal the brute force, bit for bit.
    #[test]
    fn bounded_plans_on_approximate_rows_equal_brute_force() {
        if !kernel::approx_available() {
            eprintln!("skipped: this CPU has no approximate kernel, so the workers never take this path");
            return;
        }
        let dims = 40;
        let mut approximated = 0;
        for seed in 0..24u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(900 + seed);
            let mut event = Event::new(
                settings(Algorithm::CosineV1, rng.gen_range(1..5)),
                TagInterner::default(),
            );
            let centres: Vec<Vec<f32>> = (0..4)
                .map(|_| (0..dims).map(|_| rng.gen_range(-1.0f32..1.0)).collect())
                .collect();
            let vector = |rng: &mut rand::rngs::StdRng| -> Option<Vec<Option<f32>>> {
                let c = &centres[rng.gen_range(0..centres.len())];
                let noise = [0.0, 0.01, 0.05][rng.gen_range(0..3)];
                Some(
                    c.iter()
                        .map(|x| Some(((x + rng.gen_range(-noise..=noise)) * 64.0).round() / 64.0))
                        .collect(),
                )
            };
            let row_of = |rng: &mut rand::rngs::StdRng, id: u128| {
                let mut row = random_row(rng, id);
                row.embedding = if rng.gen_bool(0.95) { vector(rng) } else { None };
                row.active = rng.gen_bool(0.93);
                row
            };
            for id in 1..=160 {
                let row = row_of(&mut rng, id);
                let p = Participant::from_row(&row, None, &mut event.tags);
                event.upsert(p);
            }
            for _ in 0..20 {
                let (a, b) = (rng.gen_range(1..=160u128), rng.gen_range(1..=160u128));
                if a != b {
                    event.exclude(Uuid::from_u128(a), Uuid::from_u128(b));
                }
            }
            let cold = seed % 2 == 0;
            let (mut lists, mut dirty) = starting_point(&event, cold);
            if !cold {
                for _ in 0..40 {
                    let id = rng.gen_range(1..=160u128);
                    let row = row_of(&mut rng, id);
                    let p = Participant::from_row(&row, None, &mut event.tags);
                    event.upsert(p);
                    if !row.active {
                        dirty.extend(leave_trigger(&mut lists, Uuid::from_u128(id)));
                    }
                    dirty.insert(Uuid::from_u128(id));
                }
            }
            approximated += drain_planned(&mut rng, &event, &mut lists, &mut dirty, 12);
            lists.retain(|_, l| !l.is_empty());
            assert_eq!(lists, brute_force(&event), "seed {seed}");
        }
        assert!(approximated > 100, "the approximate path ran {approximated} times");
    }

    #[test]
    fn a_newcomer_only_touches_lists_it_enters() {
        let mut event = Event::new(settings(Algorithm::CosineV1, 1), TagInterner::default());
        let row = |id: u128, x: f32, y: f32| ParticipantRow {
            user_id: Uuid::from_u128(id),
            active: true,
            embedding: Some(vec![Some(x), Some(y)]),
            ..Default::default()
        };
        for (id, x, y) in [(1, 1.0, 0.0), (2, 0.9, 0.1), (3, 0.0, 1.0), (4, 0.1, 0.9)] {
            let p = Participant::from_row(&row(id, x, y), None, &mut event.tags);
            event.upsert(p);
        }
        let mut lists = brute_force(&event);
        let p = Participant::from_row(&row(5, 1.0, 0.01), None, &mut event.tags);
        event.upsert(p);
        let out = repair(&event, &mut lists, &HashSet::new(), Uuid::from_u128(5));
        // 5 is nearest to 1 and 2 only; 3 and 4 keep each other.
        assert_eq!(
            out.touched,
            vec![Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(5)]
        );
        assert_eq!(out.full_recomputes, 0);
        assert_eq!(lists, brute_force(&event));
    }

    #[test]
    fn unknown_algorithm_matches_no_one_and_reports() {
        let mut s = settings(Algorithm::HybridV1, 3);
        s.algorithm = Err("unknown algorithm \"v9\"".into());
        let mut event = Event::new(s, TagInterner::default());
        for id in 1..=3 {
            let row = ParticipantRow {
                user_id: Uuid::from_u128(id),
                active: true,
                ..Default::default()
            };
            let p = Participant::from_row(&row, None, &mut event.tags);
            event.upsert(p);
        }
        let mut lists = Lists::default();
        let out = repair(&event, &mut lists, &HashSet::new(), Uuid::from_u128(1));
        assert!(lists.is_empty());
        assert!(out.problem.unwrap_or_default().contains("v9"));
    }
}
