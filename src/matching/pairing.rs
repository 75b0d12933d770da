//! Meeting rounds: one partner per attendee, the most pairs first, then the
//! fairest sit-outs, then the highest total score; never a pair that met in
//! an earlier round. Pure: scores come from a [`Scores`] source (the event's
//! batch scorer in production, a matrix in tests).
//!
//! # The objective, as one integer weight
//!
//! Every eligible pair `(u, v)` with score `s ∈ [-1, 1]` (both algorithms
//! score in that range) gets the weight
//!
//! ```text
//! w(u, v) = K + B·(r(u) + r(v)) + q(u, v),   q = round(S·(s + 1)) ∈ [0, 2S]
//! ```
//!
//! with `S = 2²⁰` (scores are kept to about 10⁻⁶; the matching found is optimal
//! for the rounded scores, so its f32 total is within `pairs / 2²¹` of the
//! true optimum), `r(v)` the attendee's past sit-outs minus the fewest of
//! anyone in the round, `B = n·S + 1` (more than any difference of total `q`
//! between two matchings) and `K = n·(B·r_max + S) + 1` (more than any total
//! of the other two terms). A maximum-weight matching under `w` is therefore
//! lexicographically best in (number of pairs, Σ r over the paired, total
//! score): weights are integers, so the result is exact and the same on every
//! machine. Ties fall to the blossom algorithm's deterministic order.
//!
//! # What the sit-out rule guarantees
//!
//! Among maximum-cardinality matchings, the one chosen minimises the total
//! past sit-outs of this round's sit-outs. Hence: if `a` sits out and `b` is
//! paired though `b` sat out fewer times, no maximum matching leaves out the
//! same people with `b` in `a`'s place (else it would have a smaller total).
//! When any k attendees could be the ones left out (an odd count in `any` on
//! a graph with enough unmet pairs; the larger side in `across-sides`), the
//! k with the fewest past sit-outs sit out: nobody sits out twice while
//! someone eligible has not sat out as often. A sit-out with no eligible
//! partner at all (everyone met, excluded or of the same side) is forced and
//! counts too.
//!
//! # Scale: a candidate graph and a certificate
//!
//! [`plan_round`] never builds the dense graph. Pass 1 reads every score row
//! once (the kernel's batch path) and keeps each attendee's best `L`
//! partners, plus the pairs of the greedy round (so the graph always holds a
//! matching as large as greedy's); [`blossom`] finds the optimum of that graph exactly, with its
//! LP duals. Pass 2 reads the rows again and checks every dense pair against
//! the duals: if all are covered, the duals are a feasible solution of the
//! dense matching LP whose objective equals the matching's weight, so the
//! matching is optimal for the **dense** graph (`certified`). Otherwise the
//! uncovered pairs are added and the graph solved again, up to
//! `max_passes`. The reported `upper_bound` always comes from a dual that
//! covers every dense pair (the vertex cover of the last duals, raised row
//! by row where a pair is uncovered), converted back to score units:
//! `(W_ub − K·c − B·Σr)/S − c·(1 − 1/(2S))` where `c` is the pairs found
//! (the dense optimum has at least as many pairs and at least the sit-out
//! term, so subtracting ours is safe). For `across-sides` the graph is
//! bipartite and the same algorithm is the Hungarian method.

pub mod blossom;
#[cfg(test)]
mod tests;

use super::event::Event;
use super::profile::Participant;
use super::IdMap;
use std::str::FromStr;
use uuid::Uuid;

/// Who may meet whom (`events.pairing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Anyone with anyone eligible.
    Any,
    /// Only attendees whose `side` differ (both set).
    AcrossSides,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Any => "any",
            Mode::AcrossSides => "across-sides",
        }
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "any" => Ok(Mode::Any),
            "across-sides" => Ok(Mode::AcrossSides),
            other => Err(format!("unknown pairing mode {other:?} (expected any or across-sides)")),
        }
    }
}

/// How a round is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The lexicographic optimum (pairs, sit-outs, score).
    Optimal,
    /// The old systems' baseline: pairs by descending weight (sit-out
    /// priority, then score), taken when both are free.
    Greedy,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Optimal => "optimal",
            Strategy::Greedy => "greedy",
        }
    }
}

impl FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "optimal" => Ok(Strategy::Optimal),
            "greedy" => Ok(Strategy::Greedy),
            other => Err(format!("unknown strategy {other:?} (expected optimal or greedy)")),
        }
    }
}

/// Score rows of a round's attendees `0..len()` against each other.
pub trait Scores: Sync {
    /// Number of attendees.
    fn len(&self) -> usize;
    /// Whether there is no attendee.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Writes the row of each of `users` into `out` (`users.len() × len()`):
    /// the pair score where the pair may meet this round, NaN otherwise
    /// (itself, ineligible, met before, same side). Must be symmetric.
    fn rows(&self, users: &[usize], out: &mut [f32]);
}

/// Tuning of [`plan_round`].
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Candidate partners kept per attendee (`L`).
    pub candidates: usize,
    /// Dense passes at most (each reads every row once; 2 or more).
    pub max_passes: usize,
    /// Rows scored per call of [`Scores::rows`].
    pub chunk: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            candidates: 16,
            max_passes: 4,
            chunk: 256,
        }
    }
}

/// A computed round, in attendee indices.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundPlan {
    /// Per attendee: partner and pair score, or `None` for a sit-out.
    pub mate: Vec<Option<(u32, f32)>>,
    pub pairs: usize,
    pub sat_out: usize,
    /// Σ of pair scores.
    pub total_score: f64,
    /// A certified upper bound on the total score of the dense optimum.
    pub upper_bound: f64,
    /// The matching is proven optimal on the dense graph.
    pub certified: bool,
    /// Dense passes read.
    pub passes: usize,
    /// Edges of the last graph solved.
    pub edges: usize,
    /// Attendees whose partner is among their own 3 best eligible partners.
    pub in_top3: usize,
    /// The total integer weight (see the module docs), for tests.
    pub weight: i128,
}

impl RoundPlan {
    /// `(upper_bound − total) / |upper_bound|`, 0 when both are 0.
    pub fn gap(&self) -> f64 {
        if self.upper_bound == 0.0 {
            0.0
        } else {
            ((self.upper_bound - self.total_score) / self.upper_bound.abs()).max(0.0)
        }
    }

    /// The pairs `(a, b, score)` with `a < b`, by `a`.
    pub fn pair_list(&self) -> Vec<(u32, u32, f32)> {
        self.mate
            .iter()
            .enumerate()
            .filter_map(|(a, m)| m.filter(|(b, _)| (a as u32) < *b).map(|(b, s)| (a as u32, b, s)))
            .collect()
    }
}

/// Rounding scale of scores.
pub const SCALE: i64 = 1 << 20;

/// The integer weights of one round (see the module docs).
#[derive(Debug, Clone)]
pub struct Weights {
    r: Vec<i64>,
    b: i64,
    k: i64,
}

impl Weights {
    /// From each attendee's past sit-outs. Differences above what fits in
    /// `i64` (hundreds of thousands of rounds at 10,000 attendees) are capped.
    pub fn new(sat_out: &[u32]) -> Self {
        let n = sat_out.len().max(1) as i128;
        let min = sat_out.iter().copied().min().unwrap_or(0);
        let b = n * i128::from(SCALE) + 1;
        // Largest r_max with K + 2B·r_max + 2S ≤ i64::MAX / 4.
        let limit = i128::from(i64::MAX / 4);
        let cap = ((limit - n * i128::from(SCALE) - 1 - 2 * i128::from(SCALE)) / (b * (n + 2))).max(0);
        let r: Vec<i64> = sat_out.iter().map(|&c| i128::from(c - min).min(cap) as i64).collect();
        let r_max = i128::from(r.iter().copied().max().unwrap_or(0));
        let k = n * (b * r_max + i128::from(SCALE)) + 1;
        Self {
            r,
            b: b as i64,
            k: k as i64,
        }
    }

    /// The score rounded to the scale, shifted to `[0, 2S]`.
    pub fn q(score: f32) -> i64 {
        ((f64::from(score.clamp(-1.0, 1.0)) + 1.0) * SCALE as f64).round() as i64
    }

    /// The weight of pair `(u, v)` at `score`.
    pub fn weight(&self, u: usize, v: usize, score: f32) -> i64 {
        self.k + self.b * (self.r[u] + self.r[v]) + Self::q(score)
    }
}

/// Keeps the best `l` (score, partner) of a row, best first.
fn best_of_row(row: &[f32], me: usize, l: usize, out: &mut Vec<(f32, u32)>) {
    out.clear();
    for (v, &s) in row.iter().enumerate() {
        if v == me || s.is_nan() {
            continue;
        }
        if out.len() == l {
            match out.last() {
                Some(&(worst, wv)) if s > worst || (s == worst && (v as u32) < wv) => {
                    out.pop();
                }
                _ => continue,
            }
        }
        let at = out.partition_point(|&(t, tv)| t > s || (t == s && tv < v as u32));
        out.insert(at, (s, v as u32));
    }
}

/// Reads every row once, in chunks, calling `f(u, row)`.
fn each_row(scores: &dyn Scores, chunk: usize, progress: &mut dyn FnMut(usize), mut f: impl FnMut(usize, &[f32])) {
    let n = scores.len();
    let chunk = chunk.max(1);
    let mut buf = vec![f32::NAN; chunk.min(n.max(1)) * n];
    let mut start = 0;
    while start < n {
        let end = (start + chunk).min(n);
        let users: Vec<usize> = (start..end).collect();
        let out = &mut buf[..users.len() * n];
        out.fill(f32::NAN);
        scores.rows(&users, out);
        for (i, &u) in users.iter().enumerate() {
            f(u, &out[i * n..(i + 1) * n]);
        }
        progress(end - start);
        start = end;
    }
}

/// Computes a round. `sat_out[v]` is attendee `v`'s past sit-outs;
/// `progress` is called with the number of rows read (there are
/// `passes × len()` in all, at most `max_passes × len()`).
pub fn plan_round(
    scores: &dyn Scores,
    sat_out: &[u32],
    strategy: Strategy,
    options: Options,
    progress: &mut dyn FnMut(usize),
) -> RoundPlan {
    let n = scores.len();
    let weights = Weights::new(sat_out);
    let l = options.candidates.max(3);
    // Pass 1: candidates and each attendee's top 3.
    let mut edges: Vec<(u32, u32, f32)> = Vec::new();
    let mut top3: Vec<[u32; 3]> = vec![[u32::MAX; 3]; n];
    let mut best = Vec::new();
    each_row(scores, options.chunk, progress, |u, row| {
        best_of_row(row, u, l, &mut best);
        for (i, &(_, v)) in best.iter().take(3).enumerate() {
            top3[u][i] = v;
        }
        for &(s, v) in &best {
            let (a, b) = if (u as u32) < v { (u as u32, v) } else { (v, u as u32) };
            edges.push((a, b, s));
        }
    });
    edges.sort_unstable_by_key(|e| (e.0, e.1));
    edges.dedup_by_key(|e| (e.0, e.1));
    let mut passes = 1;
    let (mate, certified, bound2) = match strategy {
        Strategy::Greedy => {
            let mate = greedy(n, &edges, &weights);
            let mate = complete_greedy(scores, mate, &weights, options.chunk);
            (mate, false, None)
        }
        Strategy::Optimal => {
            // Greedy's pairs join the graph (its completion may pair
            // attendees outside each other's candidates), so the graph holds
            // a matching as large as greedy's and the optimum is never worse.
            let seed = complete_greedy(scores, greedy(n, &edges, &weights), &weights, options.chunk);
            let outside: Vec<(u32, u32)> = (0..n as u32)
                .filter_map(|u| seed[u as usize].filter(|&v| u < v).map(|v| (u, v)))
                .filter(|key| edges.binary_search_by_key(key, |e| (e.0, e.1)).is_err())
                .collect();
            if !outside.is_empty() {
                let s = scores_of(scores, &outside, options.chunk);
                edges.extend(outside.iter().zip(s).map(|(&(u, v), s)| (u, v, s)));
                edges.sort_unstable_by_key(|e| (e.0, e.1));
                edges.dedup_by_key(|e| (e.0, e.1));
            }
            let mut last = None;
            while passes < options.max_passes.max(2) {
                let graph: Vec<blossom::Edge> = edges
                    .iter()
                    .map(|&(a, b, s)| (a, b, weights.weight(a as usize, b as usize, s)))
                    .collect();
                let sol = blossom::max_weight_matching(n, &graph);
                passes += 1;
                let (uncovered, cover2) = check_dense(scores, &sol, &weights, l, options.chunk, progress);
                let mate: Vec<Option<u32>> = sol.mate.clone();
                if uncovered.is_empty() {
                    last = Some((mate, true, Some(sol.dual_objective2())));
                    break;
                }
                last = Some((mate, false, Some(cover2)));
                edges.extend(uncovered);
                edges.sort_unstable_by_key(|e| (e.0, e.1));
                edges.dedup_by_key(|e| (e.0, e.1));
            }
            last.unwrap_or((vec![None; n], false, None))
        }
    };
    // Scores of the chosen pairs, from the graph's edges.
    let score_of: IdMap<(u32, u32), f32> = edges.iter().map(|&(a, b, s)| ((a, b), s)).collect();
    let mut extra = Vec::new();
    let mut plan_mate: Vec<Option<(u32, f32)>> = vec![None; n];
    for (u, m) in mate.iter().enumerate() {
        if let Some(v) = *m {
            let key = ((u as u32).min(v), (u as u32).max(v));
            match score_of.get(&key) {
                Some(&s) => plan_mate[u] = Some((v, s)),
                None => extra.push(u),
            }
        }
    }
    // Pairs found outside the candidate graph (greedy's completion): score them.
    let extra: Vec<(u32, u32)> = extra.iter().filter_map(|&u| mate[u].map(|v| (u as u32, v))).collect();
    for (&(u, v), s) in extra.iter().zip(scores_of(scores, &extra, options.chunk)) {
        plan_mate[u as usize] = Some((v, s));
    }
    let pairs = plan_mate.iter().flatten().count() / 2;
    let mut weight: i128 = 0;
    let mut total = 0.0f64;
    let mut bonus: i128 = 0;
    let mut in_top3 = 0;
    for (a, b, s) in pair_list(&plan_mate) {
        weight += i128::from(weights.weight(a as usize, b as usize, s));
        bonus += i128::from(weights.r[a as usize] + weights.r[b as usize]);
        total += f64::from(s);
    }
    for (u, m) in plan_mate.iter().enumerate() {
        if let Some((v, _)) = m {
            if top3[u].contains(v) {
                in_top3 += 1;
            }
        }
    }
    let upper_bound = match bound2 {
        Some(b2) => {
            let w_ub = (b2 + 1) / 2;
            let c = pairs as i128;
            let q_ub = w_ub - i128::from(weights.k) * c - i128::from(weights.b) * bonus;
            q_ub as f64 / SCALE as f64 - pairs as f64 * (1.0 - 0.5 / SCALE as f64)
        }
        None => total,
    };
    RoundPlan {
        pairs,
        sat_out: n - 2 * pairs,
        total_score: total,
        upper_bound: upper_bound.max(total),
        certified,
        passes,
        edges: edges.len(),
        in_top3,
        weight,
        mate: plan_mate,
    }
}

fn pair_list(mate: &[Option<(u32, f32)>]) -> Vec<(u32, u32, f32)> {
    mate.iter()
        .enumerate()
        .filter_map(|(a, m)| m.filter(|(b, _)| (a as u32) < *b).map(|(b, s)| (a as u32, b, s)))
        .collect()
}

/// One dense pass: the pairs the duals do not cover (at most `l` per row,
/// the most uncovered first) and twice the objective of a vertex cover of
/// every dense pair (the duals' vertex cover, raised where a pair is not
/// covered: raising `Y(u)` to `2w − Y(v)` covers `(u, v)` for good, since
/// covers only ever rise).
fn check_dense(
    scores: &dyn Scores,
    sol: &blossom::Solution,
    weights: &Weights,
    l: usize,
    chunk: usize,
    progress: &mut dyn FnMut(usize),
) -> (Vec<(u32, u32, f32)>, i128) {
    let mut cover = sol.vertex_cover2();
    let mut uncovered = Vec::new();
    let mut worst: Vec<(i128, u32, f32)> = Vec::new();
    // A cheap test first. With y = 2u the duals' vertex part, a pair with
    // y(u) + y(v) ≥ 2w has slack ≥ 0 (blossom terms only add) and is covered
    // by `cover` (which is ≥ y everywhere and only rises), so it needs no
    // exact look. 2w = 2K + 2B(r(u) + r(v)) + 2q and 2q ≤ 2S(s + 1) + 1 (q
    // rounds (s + 1)·S), so the pair is skipped when
    // g = (y(u) − 2K − 2B·r(u)) + (y(v) − 2B·r(v)) ≥ 2S(s + 1) + 2; the
    // extra unit absorbs the f64 rounding of both sides (g is an exact
    // integer, converted exactly below 2^53 and far above the threshold
    // otherwise).
    let y = sol.vertex_duals2();
    let two_b = 2 * i128::from(weights.b);
    let d: Vec<i128> = (0..y.len())
        .map(|v| i128::from(y[v]) - two_b * i128::from(weights.r[v]))
        .collect();
    let two_s = 2.0 * SCALE as f64;
    each_row(scores, chunk, progress, |u, row| {
        worst.clear();
        let c = d[u] - 2 * i128::from(weights.k);
        for (v, &s) in row.iter().enumerate() {
            if v == u || s.is_nan() {
                continue;
            }
            if ((c + d[v]) as f64) >= two_s * (f64::from(s) + 1.0) + 2.0 {
                continue;
            }
            let w = weights.weight(u, v, s);
            let slack = sol.slack2(u, v, w);
            if slack < 0 {
                worst.push((slack, v as u32, s));
            }
            let need = 2 * i128::from(w) - i128::from(cover[v]);
            if need > i128::from(cover[u]) {
                cover[u] = need.min(i128::from(i64::MAX)) as i64;
            }
        }
        worst.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        for &(_, v, s) in worst.iter().take(l) {
            let (a, b) = if (u as u32) < v { (u as u32, v) } else { (v, u as u32) };
            uncovered.push((a, b, s));
        }
    });
    (uncovered, cover.iter().map(|&y| i128::from(y)).sum())
}

/// Greedy: edges by descending weight (sit-out priority, then score; ties
/// by the pair), each taken when both ends are free.
pub fn greedy(n: usize, edges: &[(u32, u32, f32)], weights: &Weights) -> Vec<Option<u32>> {
    let mut order: Vec<(i64, u32, u32)> = edges
        .iter()
        .map(|&(a, b, s)| (weights.weight(a as usize, b as usize, s), a, b))
        .collect();
    order.sort_unstable_by(|x, y| y.0.cmp(&x.0).then((x.1, x.2).cmp(&(y.1, y.2))));
    let mut mate = vec![None; n];
    for (_, a, b) in order {
        if mate[a as usize].is_none() && mate[b as usize].is_none() {
            mate[a as usize] = Some(b);
            mate[b as usize] = Some(a);
        }
    }
    mate
}

/// The scores of `pairs`, reading the rows of their first ends `chunk` at a
/// time (never a row per pair held at once: at 10,000 attendees greedy's
/// 5,000 pairs would be 200 MB of rows).
fn scores_of(scores: &dyn Scores, pairs: &[(u32, u32)], chunk: usize) -> Vec<f32> {
    let n = scores.len();
    let mut out = vec![f32::NAN; pairs.len()];
    let mut buf = Vec::new();
    let chunk = chunk.max(1);
    for (group, slots) in pairs.chunks(chunk).zip(out.chunks_mut(chunk)) {
        let users: Vec<usize> = group.iter().map(|&(u, _)| u as usize).collect();
        buf.clear();
        buf.resize(users.len() * n, f32::NAN);
        scores.rows(&users, &mut buf);
        for (i, (&(_, v), slot)) in group.iter().zip(slots).enumerate() {
            *slot = buf[i * n + v as usize];
        }
    }
    out
}

/// Greedy over the candidates can strand attendees whose candidates were all
/// taken; the old systems would pair them among themselves, so do that.
fn complete_greedy(
    scores: &dyn Scores,
    mut mate: Vec<Option<u32>>,
    weights: &Weights,
    chunk: usize,
) -> Vec<Option<u32>> {
    let n = scores.len();
    let free: Vec<usize> = (0..n).filter(|&u| mate[u].is_none()).collect();
    if free.len() < 2 {
        return mate;
    }
    let mut rows = Vec::new();
    let mut edges = Vec::new();
    for group in free.chunks(chunk.max(1)) {
        rows.clear();
        rows.resize(group.len() * n, f32::NAN);
        scores.rows(group, &mut rows);
        for (i, &u) in group.iter().enumerate() {
            for &v in &free {
                let s = rows[i * n + v];
                if u < v && !s.is_nan() {
                    edges.push((u as u32, v as u32, s));
                }
            }
        }
    }
    let extra = greedy(n, &edges, weights);
    for (u, m) in extra.into_iter().enumerate() {
        if m.is_some() {
            mate[u] = m;
        }
    }
    mate
}

/// Normalises a side for comparison: trimmed, lower-cased; empty is none.
pub fn side_key(side: Option<&str>) -> Option<String> {
    side.map(|s| s.trim().to_lowercase()).filter(|s| !s.is_empty())
}

/// A round's attendees on an [`Event`]: the matchable participants (active,
/// valid under the algorithm) in `user_id` order, scored with the batch
/// scorer, with the round's own rules on top (sides, earlier pairs).
pub struct EventScores<'a> {
    event: &'a Event,
    /// Per attendee: their participant.
    attendees: Vec<&'a Participant>,
    /// Per attendee: the index of their participant in the event.
    at: Vec<usize>,
    side: Vec<Option<String>>,
    mode: Mode,
    /// Per attendee: attendee indices met in earlier rounds, sorted.
    met: Vec<Vec<u32>>,
}

impl<'a> EventScores<'a> {
    /// `sides` by user (absent: no side), `met` as unordered pairs of users.
    pub fn new(event: &'a Event, mode: Mode, sides: &IdMap<Uuid, String>, met: &[(Uuid, Uuid)]) -> Self {
        let mut attendees: Vec<&Participant> = event.participants().iter().filter(|p| event.matchable(p)).collect();
        attendees.sort_by_key(|p| p.user_id);
        let pos: IdMap<Uuid, u32> = attendees
            .iter()
            .enumerate()
            .map(|(i, p)| (p.user_id, i as u32))
            .collect();
        let mut met_lists = vec![Vec::new(); attendees.len()];
        for (a, b) in met {
            if let (Some(&i), Some(&j)) = (pos.get(a), pos.get(b)) {
                met_lists[i as usize].push(j);
                met_lists[j as usize].push(i);
            }
        }
        for list in &mut met_lists {
            list.sort_unstable();
            list.dedup();
        }
        Self {
            event,
            at: attendees.iter().filter_map(|p| event.index_of(&p.user_id)).collect(),
            side: attendees
                .iter()
                .map(|p| side_key(sides.get(&p.user_id).map(String::as_str)))
                .collect(),
            attendees,
            mode,
            met: met_lists,
        }
    }

    /// The attendees, in index order.
    pub fn attendees(&self) -> &[&'a Participant] {
        &self.attendees
    }
}

impl Scores for EventScores<'_> {
    fn len(&self) -> usize {
        self.attendees.len()
    }

    fn rows(&self, users: &[usize], out: &mut [f32]) {
        let n = self.attendees.len();
        let queries: Vec<&Participant> = users.iter().map(|&u| self.attendees[u]).collect();
        let full = self.event.score_rows(&queries);
        let width = self.event.participant_count();
        for (i, &u) in users.iter().enumerate() {
            let row = &mut out[i * n..(i + 1) * n];
            let src = &full[i * width..(i + 1) * width];
            for (v, slot) in row.iter_mut().enumerate() {
                *slot = if v == u { f32::NAN } else { src[self.at[v]] };
            }
            if self.mode == Mode::AcrossSides {
                for (v, slot) in row.iter_mut().enumerate() {
                    if self.side[u].is_none() || self.side[v].is_none() || self.side[u] == self.side[v] {
                        *slot = f32::NAN;
                    }
                }
            }
            for &v in &self.met[u] {
                row[v as usize] = f32::NAN;
            }
        }
    }
}
