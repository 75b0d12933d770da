//! The algorithms. Every score is symmetric (`score(a, b) == score(b, a)`,
//! bit for bit) and deterministic.
//!
//! ## `cosine-v1`
//!
//! The cosine similarity of the two embeddings, in [-1, 1]. Attendees
//! without a valid embedding are matched with no one.
//!
//! ## `hybrid-v1`
//!
//! Four terms, each in [0, 1], from what two attendees `a` and `b` wrote
//! (tags and keywords are keyed and interned as in [`super::profile`]):
//!
//! - `I = |I_a ∩ I_b| / |I_a ∪ I_b|`, the Jaccard overlap of interests;
//! - `C = (|LF_a ∩ OF_b| + |LF_b ∩ OF_a|) / (|LF_a| + |LF_b|)`,
//!   complementarity both ways: the share of everything the two look for
//!   that the other offers (0 when neither looks for anything). When only
//!   one of them looks for something, the pair is judged on that alone.
//! - `K = |K_a ∩ K_b| / √(|K_a|·|K_b|)`, the overlap of role and bio keywords
//!   (0 when either has none);
//! - `E = clamp(cos, 0, 1)`, the embedding similarity, only when both
//!   attendees have comparable embeddings.
//!
//! The pair has **real overlap** when it shares an interest, or one looks
//! for something the other offers (either way), or it shares a role or bio
//! keyword: `|I_a ∩ I_b| + |LF_a ∩ OF_b| + |LF_b ∩ OF_a| + |K_a ∩ K_b| > 0`.
//! Embedding similarity alone is not overlap. Then
//!
//! ```text
//! blend = (0.35·I + 0.35·C + 0.10·K + 0.20·E) / (0.35 + 0.35 + 0.10 + 0.20)   with E
//!       = (0.35·I + 0.35·C + 0.10·K) / (0.35 + 0.35 + 0.10)                    without E
//! score = 0.2 + 0.8·blend     with real overlap      ∈ [0.2, 1]
//!       = 0.1·E  (0 without E) without real overlap   ∈ [0, 0.1]
//! ```
//!
//! Without an embedding, its weight is spread over the other terms, so an
//! event with no embedding provider scores on the full [0.2, 1] range.
//!
//! **Guarantee: a pair with nothing in common never outranks a pair with a
//! real overlap**, whatever the embeddings (or a similarity passed to
//! [`hybrid_with_similarity`], even NaN or out of range): every pair with
//! real overlap scores at least `0.2_f32`, every other pair at most `0.1_f32`.
//! Proof: all four terms lie in [0, 1] (counts are non-negative and never
//! exceed their denominators; `E` is clamped, NaN becomes 0), so `blend` is
//! a weighted mean in [0, 1] and `0.2 + 0.8·blend ≥ 0.2` (adding a
//! non-negative number never rounds below the representable 0.2 in `f64`),
//! while `0.1·E ≤ 0.1`. The final clamp to [0, 1] and the `f64 → f32`
//! rounding are monotone, so overlap scores stay `≥ 0.2_f32` and the others
//! `≤ 0.1_f32`. The rank
//! order puts a strictly higher score first, so in every attendee's list
//! every partner with real overlap ranks before every partner without.
//! Among strangers, a closer embedding ranks first.
//!
//! **Symmetry.** Every term is computed from integer counts (each side's
//! count appears in a commutative sum or product: `a + b == b + a` and
//! `a·b == b·a` hold bit for bit in IEEE arithmetic) or from the symmetric
//! dot product, and summed in a fixed order, so `score(a, b)` and
//! `score(b, a)` are the same bits.

use super::profile::{Embedding, Participant, TagInterner};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

/// A scoring algorithm, as stored in `events.algorithm` and on every match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    CosineV1,
    HybridV1,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::CosineV1 => "cosine-v1",
            Algorithm::HybridV1 => "hybrid-v1",
        }
    }

    /// Whether scores and reasons read tags and keywords (hybrid-v1), or
    /// embeddings alone (cosine-v1).
    pub fn reads_words(self) -> bool {
        match self {
            Algorithm::CosineV1 => false,
            Algorithm::HybridV1 => true,
        }
    }

    /// Why this participant can be matched with no one under this algorithm,
    /// or `None` when they can be matched.
    pub fn unmatchable_reason(self, p: &Participant) -> Option<String> {
        match (self, &p.embedding) {
            (Algorithm::CosineV1, Embedding::Missing) => {
                Some("no embedding: cosine-v1 needs one and none was supplied".into())
            }
            (Algorithm::CosineV1, Embedding::Invalid(why)) => Some(why.clone()),
            _ => None,
        }
    }

    /// Malformed input to report for this participant (they may still be
    /// matchable, e.g. hybrid-v1 ignores a broken embedding).
    pub fn problem(self, p: &Participant) -> Option<String> {
        if let Some(reason) = self.unmatchable_reason(p) {
            return Some(reason);
        }
        if let Embedding::Invalid(why) = &p.embedding {
            return Some(format!("{why}; scored without the embedding"));
        }
        p.problem.clone()
    }

    /// The score of a pair, or `None` when the pair cannot be compared
    /// (cosine-v1 with a missing, invalid or differently sized embedding).
    pub fn score(self, a: &Participant, b: &Participant) -> Option<f32> {
        match self {
            Algorithm::CosineV1 => cosine(&a.embedding, &b.embedding),
            Algorithm::HybridV1 => Some(hybrid(a, b).score),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cosine-v1" => Ok(Algorithm::CosineV1),
            "hybrid-v1" => Ok(Algorithm::HybridV1),
            other => Err(format!("unknown algorithm {other:?} (known: cosine-v1, hybrid-v1)")),
        }
    }
}

/// The dot product of two vectors (see [`super::kernel`] for its exact,
/// symmetric arithmetic).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    super::kernel::dot(a, b)
}

/// Cosine similarity of two validated embeddings, clamped to [-1, 1].
pub fn cosine(a: &Embedding, b: &Embedding) -> Option<f32> {
    match (a, b) {
        (Embedding::Valid(x), Embedding::Valid(y)) if x.len() == y.len() => Some(dot(x, y).clamp(-1.0, 1.0)),
        _ => None,
    }
}

/// Size of the intersection of two sorted, de-duplicated lists (a
/// branch-free merge: keyword lists make this the inner loop of scoring).
fn overlap(a: &[u32], b: &[u32]) -> u32 {
    match (a.first(), a.last(), b.first(), b.last()) {
        (Some(a0), Some(a1), Some(b0), Some(b1)) if a1 >= b0 && b1 >= a0 => {}
        _ => return 0,
    }
    let (mut i, mut j, mut n) = (0, 0, 0u32);
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i], b[j]);
        n += u32::from(x == y);
        i += usize::from(x <= y);
        j += usize::from(y <= x);
    }
    n
}

fn intersection(a: &[u32], b: &[u32]) -> Vec<u32> {
    a.iter().copied().filter(|x| b.binary_search(x).is_ok()).collect()
}

/// The terms of a hybrid-v1 score (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HybridTerms {
    /// The pair shares an interest or a keyword, or one looks for what the
    /// other offers.
    pub overlap: bool,
    /// `I`, the Jaccard overlap of interests.
    pub interests: f32,
    /// `C`, complementarity both ways.
    pub complementarity: f32,
    /// `K`, the overlap of role and bio keywords.
    pub keywords: f32,
    /// The cosine similarity given, `None` when the embeddings are not
    /// comparable. `E` is this clamped to [0, 1].
    pub similarity: Option<f32>,
    pub score: f32,
}

/// hybrid-v1's weight of the interest overlap `I`.
pub const W_INTERESTS: f64 = 0.35;
/// hybrid-v1's weight of complementarity `C`.
pub const W_COMPLEMENT: f64 = 0.35;
/// hybrid-v1's weight of role and bio keywords `K`.
pub const W_KEYWORDS: f64 = 0.10;
/// hybrid-v1's weight of embedding similarity `E` (when both have one).
pub const W_EMBEDDING: f64 = 0.20;
/// The lowest score of a pair with real overlap.
pub const OVERLAP_FLOOR: f64 = 0.2;
/// The highest score of a pair without real overlap (`E = 1`).
pub const STRANGER_CEILING: f64 = 0.1;

/// hybrid-v1.
pub fn hybrid(a: &Participant, b: &Participant) -> HybridTerms {
    hybrid_with_similarity(a, b, cosine(&a.embedding, &b.embedding))
}

/// `E`: a similarity clamped to [0, 1], NaN counted as 0.
fn unit(x: f32) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        f64::from(x.clamp(0.0, 1.0))
    }
}

/// `num / den` as a fraction in [0, 1]; 0 when `den` is 0.
fn ratio(num: u32, den: f64) -> f64 {
    if den > 0.0 {
        (f64::from(num) / den).min(1.0)
    } else {
        0.0
    }
}

/// [`hybrid`] given the cosine similarity of the two embeddings (`None` when
/// they are not comparable), so that a batch can compute the similarities of
/// many pairs at once as one matrix product. Allocates nothing: four merges
/// of sorted id lists and a few floating-point operations. Any `e` is
/// accepted (NaN counts as 0, values outside [0, 1] are clamped); pass the
/// same value for `(a, b)` and `(b, a)` to keep the score symmetric.
pub fn hybrid_with_similarity(a: &Participant, b: &Participant, e: Option<f32>) -> HybridTerms {
    let counts = PairCounts {
        interests: overlap(&a.interests, &b.interests),
        a_gets: overlap(&a.looking_for, &b.offering),
        b_gets: overlap(&b.looking_for, &a.offering),
        keywords: overlap(&a.keywords, &b.keywords),
    };
    hybrid_from_counts(a, b, counts, e)
}

/// The shared-id counts hybrid-v1 is computed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairCounts {
    /// |I_a ∩ I_b|
    pub interests: u32,
    /// |LF_a ∩ OF_b|
    pub a_gets: u32,
    /// |LF_b ∩ OF_a|
    pub b_gets: u32,
    /// |K_a ∩ K_b|
    pub keywords: u32,
}

/// hybrid-v1 from the pair's shared-id counts (however they were counted:
/// merging the two lists, or through an index of who holds each id) and
/// their similarity. The one place the formula lives.
pub fn hybrid_from_counts(a: &Participant, b: &Participant, counts: PairCounts, e: Option<f32>) -> HybridTerms {
    let PairCounts {
        interests: shared,
        a_gets,
        b_gets,
        keywords: shared_keywords,
    } = counts;
    let union = a.interests.len() + b.interests.len() - shared as usize;

    let i = ratio(shared, union as f64);
    // Integer sums: the same from either side.
    let c = ratio(a_gets + b_gets, (a.looking_for.len() + b.looking_for.len()) as f64);
    let k = ratio(
        shared_keywords,
        ((a.keywords.len() as u64 * b.keywords.len() as u64) as f64).sqrt(),
    );
    let e_term = e.map(unit);

    let real_overlap = shared + a_gets + b_gets + shared_keywords > 0;
    let score = if real_overlap {
        let (sum, weight) = match e_term {
            Some(x) => (
                W_INTERESTS * i + W_COMPLEMENT * c + W_KEYWORDS * k + W_EMBEDDING * x,
                W_INTERESTS + W_COMPLEMENT + W_KEYWORDS + W_EMBEDDING,
            ),
            None => (
                W_INTERESTS * i + W_COMPLEMENT * c + W_KEYWORDS * k,
                W_INTERESTS + W_COMPLEMENT + W_KEYWORDS,
            ),
        };
        OVERLAP_FLOOR + (1.0 - OVERLAP_FLOOR) * (sum / weight).clamp(0.0, 1.0)
    } else {
        STRANGER_CEILING * e_term.unwrap_or(0.0)
    };
    HybridTerms {
        overlap: real_overlap,
        interests: i as f32,
        complementarity: c as f32,
        keywords: k as f32,
        similarity: e,
        score: score.clamp(0.0, 1.0) as f32,
    }
}

/// hybrid-v1's score of a pair with no real overlap, given their similarity:
/// the same arithmetic as [`hybrid_with_similarity`] takes for such a pair,
/// so a scorer that knows a pair shares nothing can skip the intersections.
pub fn stranger_score(e: Option<f32>) -> f32 {
    (STRANGER_CEILING * e.map(unit).unwrap_or(0.0)).clamp(0.0, 1.0) as f32
}

/// The most items a list in `reasons` holds (the sentence shows fewer).
pub const MAX_REASON_ITEMS: usize = 20;
/// The most items one clause of the sentence names before "and N more".
const SENTENCE_ITEMS: usize = 3;

/// Ids sorted the way `me` listed them.
fn in_my_order(me: &Participant, mut ids: Vec<u32>) -> Vec<u32> {
    ids.sort_by_key(|id| (me.spelling(*id).map_or(u32::MAX, |s| s.order), *id));
    ids
}

fn words(me: &Participant, ids: &[u32], tags: &TagInterner) -> Vec<String> {
    ids.iter()
        .take(MAX_REASON_ITEMS)
        .map(|id| tags.spelled_by(me, *id).to_string())
        .collect()
}

/// "a", "a and b", "a, b and c", "a, b, c and d", "a, b, c and 3 more".
fn join_words(items: &[String]) -> String {
    let shown = if items.len() > SENTENCE_ITEMS + 1 {
        SENTENCE_ITEMS
    } else {
        items.len()
    };
    let mut parts: Vec<String> = items[..shown].to_vec();
    if items.len() > shown {
        parts.push(format!("{} more", items.len() - shown));
    }
    match parts.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn round4(x: f32) -> f64 {
    (f64::from(x) * 10_000.0).round() / 10_000.0
}

/// Why `other` is a match for `me`, from `me`'s point of view: structured
/// facts plus one sentence an attendee would read, in `me`'s own spelling of
/// every tag and in the order `me` listed them.
///
/// - `shared_interests`, `they_offer_what_you_look_for`,
///   `you_offer_what_they_look_for`, `shared_keywords` (role and bio):
///   lists of at most [`MAX_REASON_ITEMS`];
/// - `similarity`: the cosine similarity, or null;
/// - `terms` (hybrid-v1; null for cosine-v1): `overlap`, `interests`,
///   `complementarity`, `keywords`, `embedding` (null when not used) and
///   `score`, rounded to four decimals;
/// - `summary`: e.g. "You are both interested in Climate Tech; they offer
///   fundraising advice, which you are looking for." Each tag appears in one
///   clause only; a clause names at most four items ("a, b, c and 2 more").
pub fn explain(alg: Algorithm, me: &Participant, other: &Participant, tags: &TagInterner) -> Value {
    let shared = in_my_order(me, intersection(&me.interests, &other.interests));
    let they_offer = in_my_order(me, intersection(&me.looking_for, &other.offering));
    let you_offer = in_my_order(me, intersection(&other.looking_for, &me.offering));
    let keywords = in_my_order(me, intersection(&me.keywords, &other.keywords));
    let similarity = cosine(&me.embedding, &other.embedding);

    // The sentence: each id in one clause, the most specific one.
    let mutual: Vec<u32> = they_offer.iter().copied().filter(|id| you_offer.contains(id)).collect();
    let they_only: Vec<u32> = they_offer.iter().copied().filter(|id| !mutual.contains(id)).collect();
    let you_only: Vec<u32> = you_offer.iter().copied().filter(|id| !mutual.contains(id)).collect();
    let interests_only: Vec<u32> = shared
        .iter()
        .copied()
        .filter(|id| !they_offer.contains(id) && !you_offer.contains(id))
        .collect();
    // A keyword that is a word of a tag already named adds nothing.
    let named: HashSet<&str> = shared
        .iter()
        .chain(&they_offer)
        .chain(&you_offer)
        .flat_map(|id| tags.name(*id).split(' '))
        .collect();
    let keywords_only: Vec<u32> = keywords
        .iter()
        .copied()
        .filter(|id| !named.contains(tags.name(*id)))
        .collect();

    let mut parts = Vec::new();
    let mut clause = |ids: &[u32], text: &dyn Fn(String) -> String| {
        if !ids.is_empty() {
            parts.push(text(join_words(&words(me, ids, tags))));
        }
    };
    clause(&interests_only, &|w| format!("you are both interested in {w}"));
    clause(&mutual, &|w| format!("you both offer and look for {w}"));
    clause(&they_only, &|w| format!("they offer {w}, which you are looking for"));
    clause(&you_only, &|w| format!("you offer {w}, which they are looking for"));
    clause(&keywords_only, &|w| format!("your profiles both mention {w}"));
    if let Some(s) = similarity {
        if parts.is_empty() || alg == Algorithm::CosineV1 {
            parts.push(format!(
                "your profiles are {:.0}% similar",
                f64::from(s.max(0.0)) * 100.0
            ));
        }
    }
    let mut summary = if parts.is_empty() {
        "someone new: your profiles have nothing in common yet".to_string()
    } else {
        parts.join("; ")
    };
    if let Some(first) = summary.chars().next() {
        let upper: String = first.to_uppercase().collect();
        summary.replace_range(..first.len_utf8(), &upper);
    }
    summary.push('.');

    let terms = match alg {
        Algorithm::HybridV1 => {
            let h = hybrid_with_similarity(me, other, similarity);
            json!({
                "overlap": h.overlap,
                "interests": round4(h.interests),
                "complementarity": round4(h.complementarity),
                "keywords": round4(h.keywords),
                "embedding": h.similarity.map(|s| round4(unit(s) as f32)),
                "score": round4(h.score),
            })
        }
        Algorithm::CosineV1 => Value::Null,
    };
    json!({
        "algorithm": alg.as_str(),
        "shared_interests": words(me, &shared, tags),
        "they_offer_what_you_look_for": words(me, &they_offer, tags),
        "you_offer_what_they_look_for": words(me, &you_offer, tags),
        "shared_keywords": words(me, &keywords, tags),
        "similarity": similarity.map(round4),
        "terms": terms,
        "summary": summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matching::profile::{ParticipantRow, TagInterner};
    use rand::{Rng, SeedableRng};
    use uuid::Uuid;

    fn tags(xs: &[&str]) -> Option<Vec<Option<String>>> {
        Some(xs.iter().map(|s| Some(s.to_string())).collect())
    }

    fn person(
        t: &mut TagInterner,
        id: u128,
        interests: &[&str],
        looking: &[&str],
        offering: &[&str],
        emb: Option<&[f32]>,
    ) -> Participant {
        let row = ParticipantRow {
            user_id: Uuid::from_u128(id),
            active: true,
            interests: tags(interests),
            looking_for: tags(looking),
            offering: tags(offering),
            embedding: emb.map(|e| e.iter().map(|x| Some(*x)).collect()),
            ..Default::default()
        };
        Participant::from_row(&row, None, t)
    }

    #[test]
    fn cosine_is_exact_on_simple_vectors_and_rejects_invalid() {
        let mut t = TagInterner::default();
        let a = person(&mut t, 1, &[], &[], &[], Some(&[1.0, 0.0]));
        let b = person(&mut t, 2, &[], &[], &[], Some(&[1.0, 1.0]));
        let c = person(&mut t, 3, &[], &[], &[], Some(&[-2.0, 0.0]));
        let s = Algorithm::CosineV1.score(&a, &b).unwrap_or(f32::NAN);
        assert!((s - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert_eq!(Algorithm::CosineV1.score(&a, &c), Some(-1.0));
        let missing = person(&mut t, 4, &[], &[], &[], None);
        let nan = person(&mut t, 5, &[], &[], &[], Some(&[f32::NAN, 1.0]));
        let three = person(&mut t, 6, &[], &[], &[], Some(&[1.0, 0.0, 0.0]));
        assert_eq!(Algorithm::CosineV1.score(&a, &missing), None);
        assert_eq!(Algorithm::CosineV1.score(&a, &nan), None);
        assert_eq!(Algorithm::CosineV1.score(&a, &three), None);
        assert!(Algorithm::CosineV1.unmatchable_reason(&nan).is_some());
        assert!(Algorithm::CosineV1.unmatchable_reason(&missing).is_some());
        assert!(Algorithm::HybridV1.unmatchable_reason(&nan).is_none());
        assert!(Algorithm::HybridV1.problem(&nan).is_some());
    }

    fn with_text(mut p: ParticipantRow, role: &str, bio: &str) -> ParticipantRow {
        p.role = Some(role.to_string());
        p.bio = Some(bio.to_string());
        p
    }

    fn row(id: u128, interests: &[&str], looking: &[&str], offering: &[&str]) -> ParticipantRow {
        ParticipantRow {
            user_id: Uuid::from_u128(id),
            active: true,
            interests: tags(interests),
            looking_for: tags(looking),
            offering: tags(offering),
            ..Default::default()
        }
    }

    #[test]
    fn hybrid_values_by_hand() {
        let mut t = TagInterner::default();
        let a = person(
            &mut t,
            1,
            &["Rust", "AI", "climate"],
            &["funding"],
            &["mentoring"],
            None,
        );
        let b = person(
            &mut t,
            2,
            &["rust", "ai", "music"],
            &["mentoring", "jobs"],
            &["Funding"],
            None,
        );
        let h = hybrid(&a, &b);
        // I = 2/4; C = (1 + 1) / (1 + 2); no keywords, no embedding.
        assert!(h.overlap);
        assert!((h.interests - 0.5).abs() < 1e-6);
        assert!((h.complementarity - 2.0 / 3.0).abs() < 1e-6);
        assert_eq!(h.keywords, 0.0);
        assert_eq!(h.similarity, None);
        let blend = (0.35 * 0.5 + 0.35 * (2.0 / 3.0)) / 0.8;
        assert!((h.score - (0.2 + 0.8 * blend) as f32).abs() < 1e-6);
        // With an embedding, E takes its weight.
        let h = hybrid_with_similarity(&a, &b, Some(0.5));
        let blend = (0.35 * 0.5 + 0.35 * (2.0 / 3.0) + 0.2 * 0.5) / 1.0;
        assert!((h.score - (0.2 + 0.8 * blend) as f32).abs() < 1e-6);
        // Keywords: {founder, battery, grid} and {battery, grid, policy}: K = 2/3.
        let c = Participant::from_row(
            &with_text(row(3, &[], &[], &[]), "Founder", "Building batteries for the grid."),
            None,
            &mut t,
        );
        let d = Participant::from_row(
            &with_text(row(4, &[], &[], &[]), "", "Grid policy; batteries."),
            None,
            &mut t,
        );
        let h = hybrid(&c, &d);
        assert!(h.overlap);
        assert!((h.keywords - 2.0 / 3.0).abs() < 1e-6, "{h:?}");
        assert!((h.score - (0.2 + 0.8 * (0.1 * 2.0 / 3.0) / 0.8) as f32).abs() < 1e-6);
        // Strangers score 0 without embeddings, 0.1·E with them.
        let stranger = person(&mut t, 5, &["knitting"], &[], &[], None);
        assert_eq!(hybrid(&a, &stranger).score, 0.0);
        assert!(!hybrid(&a, &stranger).overlap);
        assert_eq!(hybrid_with_similarity(&a, &stranger, Some(1.0)).score, 0.1);
        // Attendees with nothing at all are still comparable (score 0).
        let empty = person(&mut t, 6, &[], &[], &[], None);
        let blank = person(&mut t, 7, &[], &[], &[], None);
        assert_eq!(Algorithm::HybridV1.score(&empty, &blank), Some(0.0));
    }

    /// A random profile from small vocabularies (so that overlaps are
    /// frequent but not universal), spelled in random variants.
    fn random_person(rng: &mut impl Rng, t: &mut TagInterner, id: u128) -> Participant {
        const TOPICS: &[&str] = &[
            "Climate Tech",
            "batteries",
            "machine-learning",
            "Rust",
            "policy",
            "design",
        ];
        const NEEDS: &[&str] = &["seed funding", "mentoring", "hiring", "pilot partners"];
        const WORDS: &[&str] = &[
            "solar", "grid", "Founder", "investor", "the", "and", "AI", "carbon", "robots",
        ];
        let pick = |from: &[&str], n: usize, rng: &mut dyn rand::RngCore| -> Option<Vec<Option<String>>> {
            Some(
                (0..rng.gen_range(0..=n))
                    .map(|_| {
                        let s = from[rng.gen_range(0..from.len())];
                        Some(match rng.gen_range(0..3) {
                            0 => s.to_uppercase(),
                            1 => format!("{s}s!"),
                            _ => s.to_string(),
                        })
                    })
                    .collect(),
            )
        };
        let interests = pick(TOPICS, 2, rng);
        let looking_for = pick(NEEDS, 1, rng);
        let offering = pick(NEEDS, 1, rng);
        let bio = pick(WORDS, 3, rng).map(|w| w.into_iter().flatten().collect::<Vec<_>>().join(" "));
        let embedding = rng
            .gen_bool(0.8)
            .then(|| (0..5).map(|_| Some(rng.gen_range(-1.0f32..1.0))).collect());
        let row = ParticipantRow {
            user_id: Uuid::from_u128(id),
            active: true,
            interests,
            looking_for,
            offering,
            bio,
            embedding,
            ..Default::default()
        };
        Participant::from_row(&row, None, t)
    }

    /// Real overlap, computed independently of the scorer.
    fn real_overlap(a: &Participant, b: &Participant) -> bool {
        let meets = |x: &[u32], y: &[u32]| x.iter().any(|i| y.contains(i));
        meets(&a.interests, &b.interests)
            || meets(&a.looking_for, &b.offering)
            || meets(&b.looking_for, &a.offering)
            || meets(&a.keywords, &b.keywords)
    }

    #[test]
    fn scores_are_symmetric_bit_for_bit_on_random_profiles() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut t = TagInterner::default();
        let vocab: Vec<String> = (0..30).map(|i| format!("tag{i}")).collect();
        let mut people = Vec::new();
        for id in 0..60u128 {
            let mut pick = |n: usize| -> Vec<&str> {
                (0..rng.gen_range(0..n))
                    .map(|_| vocab[rng.gen_range(0..vocab.len())].as_str())
                    .collect()
            };
            let (i, l, o) = (pick(8), pick(4), pick(4));
            let emb: Vec<f32> = (0..37).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let with_emb = rng.gen_bool(0.7);
            people.push(person(&mut t, id, &i, &l, &o, with_emb.then_some(emb.as_slice())));
        }
        for id in 60..120u128 {
            people.push(random_person(&mut rng, &mut t, id));
        }
        for a in &people {
            for b in &people {
                for alg in [Algorithm::CosineV1, Algorithm::HybridV1] {
                    let (x, y) = (alg.score(a, b), alg.score(b, a));
                    assert_eq!(x.map(f32::to_bits), y.map(f32::to_bits), "{alg} not symmetric");
                    if let Some(x) = x {
                        assert!(x.is_finite());
                        if alg == Algorithm::HybridV1 {
                            assert!((0.0..=1.0).contains(&x));
                        }
                    }
                }
                let e = Some(rng.gen_range(-2.0f32..2.0));
                let (x, y) = (hybrid_with_similarity(a, b, e), hybrid_with_similarity(b, a, e));
                assert_eq!(x.score.to_bits(), y.score.to_bits());
                assert_eq!(x.complementarity.to_bits(), y.complementarity.to_bits());
                assert_eq!(x.keywords.to_bits(), y.keywords.to_bits());
            }
        }
    }

    /// The guarantee of the module docs, on random events: every pair with
    /// real overlap scores strictly above every pair without, whatever the
    /// similarity (NaN and out-of-range values included), every score is in
    /// [0, 1], and in every top-K list no stranger ranks before a partner
    /// with real overlap.
    #[test]
    fn a_pair_with_nothing_in_common_never_outranks_a_real_overlap() {
        use crate::matching::{brute_force, Event, EventSettings};
        let odd = [
            None,
            Some(f32::NAN),
            Some(1.0),
            Some(1.5),
            Some(-3.0),
            Some(0.0),
            Some(f32::INFINITY),
            Some(f32::NEG_INFINITY),
        ];
        for seed in 0..20u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + seed);
            let mut event = Event::new(
                EventSettings {
                    id: Uuid::from_u128(9),
                    algorithm: Ok(Algorithm::HybridV1),
                    matches_per_user: rng.gen_range(1..6),
                    exclude_same_company: false,
                    embedding_dimensions: None,
                },
                TagInterner::default(),
            );
            for id in 0..50u128 {
                let p = random_person(&mut rng, &mut event.tags, id);
                event.upsert(p);
            }
            let people = event.participants();
            let (mut lowest_overlap, mut highest_stranger) = (f32::INFINITY, f32::NEG_INFINITY);
            for (i, a) in people.iter().enumerate() {
                for b in &people[i + 1..] {
                    let mut scores: Vec<f32> = odd.iter().map(|e| hybrid_with_similarity(a, b, *e).score).collect();
                    scores.push(hybrid_with_similarity(a, b, Some(rng.gen_range(-1.0..1.0))).score);
                    scores.push(hybrid(a, b).score);
                    for s in scores {
                        assert!((0.0..=1.0).contains(&s), "score {s} out of range");
                        if real_overlap(a, b) {
                            lowest_overlap = lowest_overlap.min(s);
                        } else {
                            highest_stranger = highest_stranger.max(s);
                        }
                    }
                    assert_eq!(hybrid(a, b).overlap, real_overlap(a, b));
                }
            }
            assert!(
                lowest_overlap.is_finite() && highest_stranger.is_finite(),
                "seed {seed}: both kinds occur"
            );
            assert!(
                lowest_overlap > highest_stranger,
                "seed {seed}: overlap {lowest_overlap} vs stranger {highest_stranger}"
            );
            assert!(lowest_overlap >= 0.2 && highest_stranger <= 0.1);
            for (owner, list) in brute_force(&event) {
                let Some(me) = event.participant(owner) else { continue };
                let kinds: Vec<bool> = list
                    .iter()
                    .filter_map(|e| event.participant(e.user))
                    .map(|other| real_overlap(me, other))
                    .collect();
                assert!(
                    kinds.windows(2).all(|w| w[0] || !w[1]),
                    "seed {seed}: a stranger ranks before an overlap in {kinds:?}"
                );
            }
        }
    }

    fn summary(r: &Value) -> &str {
        r["summary"].as_str().unwrap_or_default()
    }

    #[test]
    fn reasons_speak_from_the_readers_side_in_their_own_words() {
        let mut t = TagInterner::default();
        let a = person(&mut t, 1, &["Climate Tech"], &["fundraising advice"], &["Python"], None);
        let b = person(
            &mut t,
            2,
            &["climate-tech"],
            &["python"],
            &["Fundraising Advice!"],
            None,
        );
        let r = explain(Algorithm::HybridV1, &a, &b, &t);
        assert_eq!(r["shared_interests"], json!(["Climate Tech"]));
        assert_eq!(r["they_offer_what_you_look_for"], json!(["fundraising advice"]));
        assert_eq!(r["you_offer_what_they_look_for"], json!(["Python"]));
        assert_eq!(r["shared_keywords"], json!([]));
        assert_eq!(r["similarity"], Value::Null);
        assert_eq!(r["terms"]["overlap"], json!(true));
        assert_eq!(r["terms"]["embedding"], Value::Null);
        assert_eq!(
            summary(&r),
            "You are both interested in Climate Tech; they offer fundraising advice, which you are looking for; \
             you offer Python, which they are looking for."
        );
        // The other side reads it in their own spelling and direction.
        let r = explain(Algorithm::HybridV1, &b, &a, &t);
        assert_eq!(
            summary(&r),
            "You are both interested in climate-tech; they offer python, which you are looking for; \
             you offer Fundraising Advice!, which they are looking for."
        );
    }

    #[test]
    fn reasons_read_naturally_for_zero_one_two_and_many_items() {
        let mut t = TagInterner::default();
        let many = ["AI", "Rust", "solar", "wind", "Grid", "policy"];
        let a = person(&mut t, 1, &many, &[], &[], None);
        let one = person(&mut t, 2, &["rust"], &[], &[], None);
        let two = person(&mut t, 3, &["rust", "ai"], &[], &[], None);
        let four = person(&mut t, 4, &["rust", "ai", "solar", "wind"], &[], &[], None);
        let all = person(&mut t, 5, &many, &[], &[], None);
        let none = person(&mut t, 6, &["knitting"], &[], &[], None);
        let s = |o: &Participant| summary(&explain(Algorithm::HybridV1, &a, o, &t)).to_string();
        assert_eq!(s(&one), "You are both interested in Rust.");
        // In the reader's order, not the partner's.
        assert_eq!(s(&two), "You are both interested in AI and Rust.");
        assert_eq!(s(&four), "You are both interested in AI, Rust, solar and wind.");
        assert_eq!(s(&all), "You are both interested in AI, Rust, solar and 3 more.");
        assert_eq!(s(&none), "Someone new: your profiles have nothing in common yet.");
        assert_eq!(
            explain(Algorithm::HybridV1, &a, &all, &t)["shared_interests"],
            json!(many)
        );
        // Embeddings alone: the similarity is the reason.
        let x = person(&mut t, 7, &[], &[], &[], Some(&[1.0, 0.0]));
        let y = person(&mut t, 8, &[], &[], &[], Some(&[1.0, 1.0]));
        assert_eq!(
            summary(&explain(Algorithm::HybridV1, &x, &y, &t)),
            "Your profiles are 71% similar."
        );
        assert_eq!(
            summary(&explain(Algorithm::CosineV1, &x, &y, &t)),
            "Your profiles are 71% similar."
        );
    }

    #[test]
    fn reasons_name_each_tag_once() {
        let mut t = TagInterner::default();
        // "mentoring" is a shared interest, and each offers it to the other.
        let a = person(
            &mut t,
            1,
            &["Mentoring", "batteries"],
            &["mentoring"],
            &["mentoring", "seed funding"],
            None,
        );
        let b = person(
            &mut t,
            2,
            &["mentoring", "Batteries"],
            &["Mentoring", "seed funding"],
            &["mentoring"],
            None,
        );
        let r = explain(Algorithm::HybridV1, &a, &b, &t);
        assert_eq!(
            summary(&r),
            "You are both interested in batteries; you both offer and look for Mentoring; \
             you offer seed funding, which they are looking for."
        );
        // The facts still list everything.
        assert_eq!(r["shared_interests"], json!(["Mentoring", "batteries"]));
        assert_eq!(r["they_offer_what_you_look_for"], json!(["Mentoring"]));
        assert_eq!(r["you_offer_what_they_look_for"], json!(["Mentoring", "seed funding"]));
    }

    #[test]
    fn reasons_mention_role_and_bio_keywords_not_already_said() {
        let mut t = TagInterner::default();
        let a = Participant::from_row(
            &with_text(
                row(1, &["climate tech"], &[], &[]),
                "Founder",
                "Building Batteries and grid storage for the climate.",
            ),
            None,
            &mut t,
        );
        let b = Participant::from_row(
            &with_text(row(2, &["Climate Tech"], &[], &[]), "founder", "batteries, climate, AI"),
            None,
            &mut t,
        );
        let r = explain(Algorithm::HybridV1, &a, &b, &t);
        assert_eq!(r["shared_keywords"], json!(["founder", "batteries", "climate"]));
        // "climate" is already said by the shared interest.
        assert_eq!(
            summary(&r),
            "You are both interested in climate tech; your profiles both mention founder and batteries."
        );
        let k = r["terms"]["keywords"].as_f64().unwrap_or_default();
        assert!(k > 0.0, "{r}");
        // Only a bio keyword in common: still real overlap, above any stranger.
        let c = Participant::from_row(&with_text(row(3, &[], &[], &[]), "", "batteries"), None, &mut t);
        let d = Participant::from_row(&with_text(row(4, &[], &[], &[]), "", "Batteries!"), None, &mut t);
        let e = person(&mut t, 5, &[], &[], &[], None);
        assert!(hybrid(&c, &d).overlap);
        assert!(hybrid(&c, &d).score > hybrid_with_similarity(&c, &e, Some(1.0)).score);
        assert_eq!(
            summary(&explain(Algorithm::HybridV1, &c, &d, &t)),
            "Your profiles both mention batteries."
        );
    }

    #[test]
    fn algorithm_names_round_trip() {
        for a in [Algorithm::CosineV1, Algorithm::HybridV1] {
            assert_eq!(a.as_str().parse::<Algorithm>(), Ok(a));
        }
        assert!("nope".parse::<Algorithm>().is_err());
    }
}
