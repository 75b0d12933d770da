//! Scoring rows: each of a batch's attendees against every participant of
//! the event in one pass (the kernel for the similarities, the postings for
//! hybrid-v1's shared tags), exactly or, for large cosine-v1 events, from
//! 8-bit (or 16-bit) copies within a proven bound.

use super::event::{score_at, Event};
use super::kernel;
use super::profile::{Embedding, Participant};
use super::score::{self, Algorithm};

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

/// How a row of [`Event::score_rows`] is completed once the kernel has
/// written the similarities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    /// cosine-v1, every row a query: the kernel wrote the similarities into
    /// the row itself; eligibility is a few passes over it.
    CosineInPlace,
    /// cosine-v1 from a separate similarity row.
    Cosine,
    /// hybrid-v1: strangers from the similarity alone, then the attendees
    /// who share anything (found through the postings) rescored in full.
    Hybrid,
}

impl Event {
    /// Completes one row of [`Event::score_rows`] for `u` (see [`Fill`]).
    fn fill_row(&self, fill: Fill, row: &mut [f32], u: &Participant, sim: Option<&[f32]>, scratch: &mut Scratch) {
        if fill == Fill::CosineInPlace {
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
            row[i] = match fill {
                Fill::Cosine | Fill::CosineInPlace => match cos {
                    Some(c) => c,
                    None => continue,
                },
                // Strangers first: a pair with nothing in common scores
                // from the similarity alone; the pairs with overlap are
                // rescored below.
                Fill::Hybrid => score::stranger_score(cos),
            };
        }
        if fill == Fill::Hybrid {
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

    /// The scores of each of `users` against every participant, in
    /// participant order: `rows[u * n + i]`, NaN where the pair is not
    /// eligible. The embedding similarities of all pairs come from one call
    /// of the blocked kernel (both cores), so scoring a batch costs one pass
    /// over the event's vectors; the result equals [`Event::pair_score`] pair
    /// by pair, bit for bit.
    pub fn score_rows(&self, users: &[&Participant]) -> Vec<f32> {
        let n = self.participants.len();
        let mut out = super::parallel::nan_filled(users.len() * n);
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

        // Eligibility and the algorithm's score, rows split across cores.
        let fill = if direct {
            Fill::CosineInPlace
        } else {
            match alg {
                Algorithm::CosineV1 => Fill::Cosine,
                Algorithm::HybridV1 => Fill::Hybrid,
            }
        };
        super::parallel::map_rows_with(
            &mut out,
            n,
            || Scratch::new(n, alg),
            |scratch, r, row| self.fill_row(fill, row, users[r], sim_row[r], scratch),
        );
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
    /// from 16- or 8-bit vectors: every eligible pair within `bounds[r]` of its
    /// exact score in [`Event::score_rows`], and NaN exactly where that row
    /// has NaN. A quarter of the memory traffic of the exact rows; [`super::plan_bounded`]
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
            if !self.matchable(u) || *len.get_or_insert(v.len()) != v.len() || !kernel::approx_fits(v.len()) {
                return None;
            }
            self.approx.get(i)?.as_ref()?;
            queries.push(&v[..]);
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt() * 1.0001;
            bounds.push(kernel::approx_error(v, norm, self.max_norm, self.max_approx_error));
        }
        let len = len?;
        // The same candidates as the exact rows: matchable, with a vector
        // of the queries' length (`approx` holds exactly the valid vectors).
        let cands: Vec<Option<&kernel::ApproxVector>> = self
            .approx
            .iter()
            .zip(&self.matchable)
            .map(|(h, &m)| h.as_ref().filter(|h| m && h.len() == len))
            .collect();
        let mut out = super::parallel::nan_filled(users.len() * n);
        if !kernel::dots_approx(&queries, &cands, &mut out) {
            return None;
        }
        // Clamping moves no pair further from its exact score.
        super::parallel::map_rows(&mut out, n, |r, row| self.cosine_eligible(row, users[r]));
        Some((out, bounds))
    }

    /// The exact cosine-v1 score of `u` and participant `i` as
    /// [`Event::score_rows`] computes it, for a pair known to be eligible.
    pub(super) fn cosine_exact(&self, u: &[f32], i: usize) -> f32 {
        match &self.participants[i].embedding {
            Embedding::Valid(v) => kernel::dot(u, v).clamp(-1.0, 1.0),
            _ => f32::NAN,
        }
    }
}
