//! The algorithms. Every score is symmetric (`score(a, b) == score(b, a)`,
//! bit for bit) and deterministic.
//!
//! - `cosine-v1`: the cosine similarity of the two embeddings, in [-1, 1].
//!   Attendees without a valid embedding are matched with no one.
//! - `hybrid-v1`: `0.45·I + 0.45·C + 0.10·E`, in [0, 1], where
//!   `I` is the Jaccard overlap of normalised interests,
//!   `C = (|LF_a ∩ OF_b| + |LF_b ∩ OF_a|) / (|LF_a| + |LF_b|)` is
//!   complementarity (what one looks for that the other offers, both ways),
//!   and `E = max(0, cos)` when both attendees have comparable embeddings,
//!   else 0. It needs no embedding provider.

use super::profile::{Embedding, Participant, TagInterner};
use serde_json::{json, Value};
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

/// Size of the intersection of two sorted, de-duplicated lists.
fn overlap(a: &[u32], b: &[u32]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                n += 1;
                i += 1;
                j += 1;
            }
        }
    }
    n
}

fn intersection(a: &[u32], b: &[u32]) -> Vec<u32> {
    a.iter().copied().filter(|x| b.binary_search(x).is_ok()).collect()
}

/// The terms of a hybrid-v1 score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HybridTerms {
    pub interests: f32,
    pub complementarity: f32,
    pub similarity: Option<f32>,
    pub score: f32,
}

/// hybrid-v1's weight of the interest overlap `I`.
pub const W_INTERESTS: f64 = 0.45;
/// hybrid-v1's weight of complementarity `C`.
pub const W_COMPLEMENT: f64 = 0.45;
/// hybrid-v1's weight of embedding similarity `E`.
pub const W_EMBEDDING: f64 = 0.10;

/// hybrid-v1. Every term is computed from integer counts or from the
/// symmetric dot product, in an order that does not depend on which side is
/// `a`, so the result is bit-for-bit symmetric.
pub fn hybrid(a: &Participant, b: &Participant) -> HybridTerms {
    hybrid_with_similarity(a, b, cosine(&a.embedding, &b.embedding))
}

/// [`hybrid`] given the cosine similarity of the two embeddings (`None` when
/// they are not comparable), so that a batch can compute the similarities of
/// many pairs at once as one matrix product.
pub fn hybrid_with_similarity(a: &Participant, b: &Participant, e: Option<f32>) -> HybridTerms {
    let shared = overlap(&a.interests, &b.interests);
    let union = a.interests.len() + b.interests.len() - shared;
    let i = if union == 0 { 0.0 } else { shared as f64 / union as f64 };

    let ab = overlap(&a.looking_for, &b.offering);
    let ba = overlap(&b.looking_for, &a.offering);
    let wanted = a.looking_for.len() + b.looking_for.len();
    let c = if wanted == 0 {
        0.0
    } else {
        (ab + ba) as f64 / wanted as f64
    };

    let e_term = e.map(|x| f64::from(x.max(0.0))).unwrap_or(0.0);
    let score = (W_INTERESTS * i + W_COMPLEMENT * c + W_EMBEDDING * e_term) as f32;
    HybridTerms {
        interests: i as f32,
        complementarity: c as f32,
        similarity: e,
        score,
    }
}

fn names(ids: &[u32], tags: &TagInterner) -> Vec<String> {
    ids.iter().map(|id| tags.name(*id).to_string()).collect()
}

fn join_words(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Why `other` is a match for `me`, from `me`'s point of view: structured
/// facts plus one sentence an attendee would read.
pub fn explain(alg: Algorithm, me: &Participant, other: &Participant, tags: &TagInterner) -> Value {
    let shared = names(&intersection(&me.interests, &other.interests), tags);
    let they_offer = names(&intersection(&me.looking_for, &other.offering), tags);
    let you_offer = names(&intersection(&other.looking_for, &me.offering), tags);
    let similarity = cosine(&me.embedding, &other.embedding);

    let mut parts = Vec::new();
    if !shared.is_empty() {
        parts.push(format!("You both are into {}", join_words(&shared)));
    }
    if !they_offer.is_empty() {
        parts.push(format!("they offer {} you are looking for", join_words(&they_offer)));
    }
    if !you_offer.is_empty() {
        parts.push(format!("you offer {} they are looking for", join_words(&you_offer)));
    }
    if let Some(s) = similarity {
        if parts.is_empty() || alg == Algorithm::CosineV1 {
            parts.push(format!(
                "your profiles are {:.0}% similar",
                f64::from(s.max(0.0)) * 100.0
            ));
        }
    }
    let mut summary = if parts.is_empty() {
        "A fellow attendee you have not met yet".to_string()
    } else {
        parts.join("; ")
    };
    if let Some(first) = summary.get(0..1) {
        let upper = first.to_uppercase();
        summary.replace_range(0..1, &upper);
    }
    summary.push('.');

    json!({
        "algorithm": alg.as_str(),
        "shared_interests": shared,
        "they_offer_what_you_look_for": they_offer,
        "you_offer_what_they_look_for": you_offer,
        "similarity": similarity,
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
        // I = 2 / 4; C = (1 + 1) / (1 + 2).
        assert!((h.interests - 0.5).abs() < 1e-6);
        assert!((h.complementarity - 2.0 / 3.0).abs() < 1e-6);
        assert_eq!(h.similarity, None);
        let expected = (0.45 * 0.5 + 0.45 * (2.0 / 3.0)) as f32;
        assert!((h.score - expected).abs() < 1e-6);
        // Strangers score 0 and rank below any real overlap.
        let stranger = person(&mut t, 3, &["knitting"], &[], &[], None);
        assert_eq!(hybrid(&a, &stranger).score, 0.0);
        // Attendees with nothing at all are still comparable (score 0).
        let empty = person(&mut t, 4, &[], &[], &[], None);
        let blank = person(&mut t, 5, &[], &[], &[], None);
        assert_eq!(Algorithm::HybridV1.score(&empty, &blank), Some(0.0));
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
            }
        }
    }

    #[test]
    fn reasons_speak_from_the_readers_side() {
        let mut t = TagInterner::default();
        let a = person(&mut t, 1, &["climate tech"], &["fundraising"], &["python"], None);
        let b = person(&mut t, 2, &["Climate Tech"], &["python"], &["fundraising"], None);
        let r = explain(Algorithm::HybridV1, &a, &b, &t);
        assert_eq!(r["shared_interests"], json!(["climate tech"]));
        assert_eq!(r["they_offer_what_you_look_for"], json!(["fundraising"]));
        assert_eq!(r["you_offer_what_they_look_for"], json!(["python"]));
        let summary = r["summary"].as_str().unwrap_or_default();
        assert!(summary.starts_with("You both are into climate tech"), "{summary}");
        assert!(
            summary.contains("they offer fundraising you are looking for"),
            "{summary}"
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
