//! The event in memory: its settings, participants (active or not) with
//! their interned company keys and tag postings, and its exclusions; who is
//! matchable, whether two attendees are eligible partners and their score,
//! and an attendee's exact top-K from a row of scores.

use super::kernel;
use super::profile::{Embedding, Participant, TagInterner};
use super::score::Algorithm;
use super::topk::{Entry, TopK};
use super::IdMap;
use std::collections::{HashMap, HashSet};
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
    pub(super) participants: Vec<Participant>,
    pub(super) index: IdMap<Uuid, usize>,
    /// Per participant: active and matchable under the algorithm.
    pub(super) matchable: Vec<bool>,
    /// Per participant: the interned company key ([`NO_COMPANY`] when none).
    pub(super) company: Vec<u32>,
    pub(super) companies: HashMap<String, u32>,
    /// Per participant, for cosine-v1 on a CPU with an approximate kernel
    /// path: the vector in 16 or 8 bits, for [`Event::approx_rows`]. Inline, so
    /// that a batch's pass over every candidate's length and format reads
    /// this one array instead of a heap object per participant.
    pub(super) approx: Vec<Option<kernel::ApproxVector>>,
    /// At least the norm of every vector (only ever raised).
    pub(super) max_norm: f32,
    /// At least the [`kernel::ApproxVector::error`] of every `approx`
    /// vector (only ever raised).
    pub(super) max_approx_error: f32,
    /// As stored in `match_exclusions` (user, excluded user); checked both ways.
    pub(super) exclusions: HashSet<(Uuid, Uuid)>,
    /// The same pairs by attendee, in both directions.
    pub(super) excluded: IdMap<Uuid, Vec<Uuid>>,
    /// Who holds each tag id, per field (interests, looking_for, offering,
    /// keywords), by participant index: hybrid-v1 finds the attendees that
    /// share anything with someone without comparing every pair.
    pub(super) postings: [IdMap<u32, Vec<u32>>; 4],
    pub tags: TagInterner,
}

/// The company id of an attendee without a company (never equal to any).
pub(super) const NO_COMPANY: u32 = u32::MAX;

/// Adds or removes participant `i` in the postings of `p`'s tags.
fn post(postings: &mut [IdMap<u32, Vec<u32>>; 4], p: &Participant, i: usize, add: bool) {
    let Ok(at) = u32::try_from(i) else { return };
    let fields: [&[u32]; 4] = [&p.interests, &p.looking_for, &p.offering, &p.keywords];
    for (postings, tags) in postings.iter_mut().zip(fields) {
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

/// Score rows use NaN for "not an eligible pair" (real scores are never NaN).
pub(super) fn score_at(row: &[f32], i: usize) -> Option<f32> {
    row.get(i).copied().filter(|s| !s.is_nan())
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
            max_approx_error: 0.0,
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
                let approx = kernel::to_approx(v);
                self.max_approx_error = self.max_approx_error.max(approx.error());
                Some(approx)
            }
            _ => None,
        };
        let i = match self.index.get(&p.user_id) {
            Some(&i) => {
                let old = std::mem::replace(&mut self.participants[i], p);
                post(&mut self.postings, &old, i, false);
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
        post(&mut self.postings, &self.participants[i], i, true);
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
