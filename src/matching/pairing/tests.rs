//! The round planner against an exhaustive search, and its rules over
//! many rounds.

use super::blossom::{self, max_weight_matching};
use super::*;
use crate::matching::profile::{ParticipantRow, TagInterner};
use crate::matching::score::Algorithm;
use crate::matching::EventSettings;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;

/// A score matrix (NaN: the pair may not meet).
struct Matrix {
    n: usize,
    s: Vec<f32>,
}

impl Scores for Matrix {
    fn len(&self) -> usize {
        self.n
    }
    fn rows(&self, users: &[usize], out: &mut [f32]) {
        for (i, &u) in users.iter().enumerate() {
            out[i * self.n..(i + 1) * self.n].copy_from_slice(&self.s[u * self.n..(u + 1) * self.n]);
        }
    }
}

/// The best total weight over every matching of the eligible pairs.
fn exhaustive(m: &Matrix, w: &Weights) -> i128 {
    fn go(m: &Matrix, w: &Weights, free: &mut Vec<bool>) -> i128 {
        let Some(u) = free.iter().position(|&f| f) else {
            return 0;
        };
        free[u] = false;
        // u sits out...
        let mut best = go(m, w, free);
        // ...or meets some free v.
        for v in u + 1..m.n {
            let s = m.s[u * m.n + v];
            if free[v] && !s.is_nan() {
                free[v] = false;
                best = best.max(i128::from(w.weight(u, v, s)) + go(m, w, free));
                free[v] = true;
            }
        }
        free[u] = true;
        best
    }
    go(m, w, &mut vec![true; m.n])
}

fn random_instance(rng: &mut impl Rng, n: usize, across: bool) -> Matrix {
    let mut s = vec![f32::NAN; n * n];
    let side: Vec<u8> = (0..n).map(|_| rng.gen_range(0..2)).collect();
    for u in 0..n {
        for v in u + 1..n {
            // Exclusions, earlier rounds and same-side pairs are not edges.
            let gone = rng.gen_bool(0.25) || (across && side[u] == side[v]);
            // Few distinct values, so that ties are common.
            let x = if gone {
                f32::NAN
            } else {
                rng.gen_range(-4i32..=8) as f32 / 8.0
            };
            s[u * n + v] = x;
            s[v * n + u] = x;
        }
    }
    Matrix { n, s }
}

fn is_valid(plan: &RoundPlan, m: &Matrix) -> bool {
    plan.mate.iter().enumerate().all(|(u, x)| match x {
        None => true,
        Some((v, s)) => {
            let v = *v as usize;
            plan.mate[v].map(|(b, _)| b as usize) == Some(u) && m.s[u * m.n + v] == *s
        }
    })
}

#[test]
fn optimal_equals_exhaustive_search() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    for case in 0..300 {
        let n = rng.gen_range(1..=12);
        let across = case % 2 == 1;
        let m = random_instance(&mut rng, n, across);
        let sat_out: Vec<u32> = (0..n).map(|_| rng.gen_range(0..3)).collect();
        // Tiny candidate lists, so that the certificate loop has work to do.
        let options = Options {
            candidates: rng.gen_range(1..=4),
            max_passes: 40,
            chunk: rng.gen_range(1..=5),
        };
        let plan = plan_round(&m, &sat_out, Strategy::Optimal, options, &mut |_| {});
        let w = Weights::new(&sat_out);
        assert!(is_valid(&plan, &m), "case {case}: not a matching of eligible pairs");
        assert!(
            plan.certified,
            "case {case}: not certified after {} passes",
            plan.passes
        );
        assert_eq!(
            plan.weight,
            exhaustive(&m, &w),
            "case {case}: n = {n}, across = {across}"
        );
        assert!(plan.upper_bound + 1e-6 >= plan.total_score, "case {case}");
        // Greedy is a matching too, and never better.
        let g = plan_round(&m, &sat_out, Strategy::Greedy, options, &mut |_| {});
        assert!(is_valid(&g, &m), "case {case}: greedy");
        assert!(g.weight <= plan.weight, "case {case}: greedy beat optimal");
    }
}

#[test]
fn blossom_known_cases() {
    // Nested S-blossom, relabelled as T, then expanded (van Rantwijk's
    // test 26), and a T-blossom relabelled in more than one way (test 30).
    let cases: [(&[blossom::Edge], &[Option<u32>]); 2] = [
        (
            &[
                (1, 2, 19),
                (1, 3, 20),
                (1, 8, 8),
                (2, 3, 25),
                (2, 4, 18),
                (3, 5, 18),
                (4, 5, 13),
                (4, 7, 7),
                (5, 6, 7),
            ],
            &[
                None,
                Some(8),
                Some(3),
                Some(2),
                Some(7),
                Some(6),
                Some(5),
                Some(4),
                Some(1),
            ],
        ),
        (
            &[
                (1, 2, 45),
                (1, 5, 45),
                (2, 3, 50),
                (3, 4, 45),
                (4, 5, 50),
                (1, 6, 30),
                (3, 9, 35),
                (4, 8, 35),
                (5, 7, 26),
                (9, 10, 5),
            ],
            &[
                None,
                Some(6),
                Some(3),
                Some(2),
                Some(8),
                Some(7),
                Some(1),
                Some(5),
                Some(4),
                Some(10),
                Some(9),
            ],
        ),
    ];
    for (edges, want) in cases {
        let sol = max_weight_matching(want.len(), edges);
        assert_eq!(sol.mate, want);
        let weight: i64 = edges
            .iter()
            .filter(|&&(a, b, _)| sol.mate[a as usize] == Some(b))
            .map(|e| e.2)
            .sum();
        assert_eq!(sol.dual_objective2(), 2 * i128::from(weight), "duals prove optimality");
        assert!(edges.iter().all(|&(a, b, w)| sol.covers(a as usize, b as usize, w)));
    }
}

fn event(rng: &mut impl Rng, n: u128) -> Event {
    let settings = EventSettings {
        id: Uuid::from_u128(1),
        algorithm: Ok(Algorithm::HybridV1),
        matches_per_user: 3,
        exclude_same_company: true,
        embedding_dimensions: None,
    };
    let mut tags = TagInterner::default();
    let vocab = ["ai", "rust", "climate", "music", "design", "sales", "hiring", "funding"];
    let mut rows = Vec::new();
    for id in 1..=n {
        let mut pick = |k: usize| -> Option<Vec<Option<String>>> {
            Some(
                (0..rng.gen_range(0..k))
                    .map(|_| Some(vocab[rng.gen_range(0..vocab.len())].to_string()))
                    .collect(),
            )
        };
        let (interests, looking_for, offering) = (pick(4), pick(3), pick(3));
        rows.push(ParticipantRow {
            user_id: Uuid::from_u128(id),
            active: true,
            company: Some(["Acme", "Globex", "", "Initech", "Umbrella", "Hooli"][rng.gen_range(0..6)].to_string()),
            interests,
            looking_for,
            offering,
            embedding: Some((0..8).map(|_| Some(rng.gen_range(-1.0f32..1.0))).collect()),
            ..Default::default()
        });
    }
    let participants: Vec<Participant> = rows.iter().map(|r| Participant::from_row(r, None, &mut tags)).collect();
    let mut event = Event::new(settings, tags);
    for p in participants {
        event.upsert(p);
    }
    event
}

/// Plays `rounds` rounds, each with the pairs of the earlier ones and the
/// sit-out counts so far; returns each round's pairs (users) and sit-outs.
/// One played round: its pairs and its sit-outs.
type Played = (Vec<(Uuid, Uuid)>, Vec<Uuid>);

fn play(event: &Event, mode: Mode, sides: &IdMap<Uuid, String>, rounds: usize) -> Vec<Played> {
    let mut met: Vec<(Uuid, Uuid)> = Vec::new();
    let mut sat: IdMap<Uuid, u32> = IdMap::default();
    let mut out = Vec::new();
    for _ in 0..rounds {
        let scores = EventScores::new(event, mode, sides, &met);
        let users: Vec<Uuid> = scores.attendees().iter().map(|p| p.user_id).collect();
        let counts: Vec<u32> = users.iter().map(|u| sat.get(u).copied().unwrap_or(0)).collect();
        let plan = plan_round(&scores, &counts, Strategy::Optimal, Options::default(), &mut |_| {});
        let pairs: Vec<(Uuid, Uuid)> = plan
            .pair_list()
            .iter()
            .map(|&(a, b, _)| (users[a as usize], users[b as usize]))
            .collect();
        let out_now: Vec<Uuid> = (0..users.len())
            .filter(|&u| plan.mate[u].is_none())
            .map(|u| users[u])
            .collect();
        for u in &out_now {
            *sat.entry(*u).or_default() += 1;
        }
        met.extend(pairs.iter().copied());
        out.push((pairs, out_now));
    }
    out
}

#[test]
fn no_repeats_over_ten_rounds_of_forty() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(40);
    let event = event(&mut rng, 40);
    let rounds = play(&event, Mode::Any, &IdMap::default(), 10);
    let mut seen = HashSet::new();
    for (r, (pairs, _)) in rounds.iter().enumerate() {
        assert!(pairs.len() >= 19, "round {r}: only {} pairs", pairs.len());
        for &(a, b) in pairs {
            let key = (a.min(b), a.max(b));
            assert!(seen.insert(key), "round {r}: {a} and {b} met before");
            let (pa, pb) = (event.participant(a), event.participant(b));
            assert!(
                pa.zip(pb).and_then(|(x, y)| event.pair_score(x, y)).is_some(),
                "ineligible pair"
            );
        }
    }
}

#[test]
fn sit_outs_rotate_over_ten_rounds() {
    // 21 attendees: one sits out per round, and never the same twice in 10.
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let n = 21;
    let mut m = random_instance(&mut rng, n, false);
    for x in &mut m.s {
        if x.is_nan() {
            *x = 0.0;
        }
    }
    for u in 0..n {
        m.s[u * n + u] = f32::NAN;
    }
    let mut sat = vec![0u32; n];
    for round in 0..10 {
        let plan = plan_round(&m, &sat, Strategy::Optimal, Options::default(), &mut |_| {});
        assert_eq!(plan.sat_out, 1, "round {round}");
        for (u, x) in plan.mate.iter().enumerate() {
            match x {
                None => sat[u] += 1,
                // No repeats: this pair is gone for later rounds.
                Some((v, _)) => m.s[u * n + *v as usize] = f32::NAN,
            }
        }
        assert!(
            sat.iter().all(|&c| c <= 1),
            "round {round}: someone sat out twice: {sat:?}"
        );
    }
    assert_eq!(sat.iter().sum::<u32>(), 10);
}

#[test]
fn across_sides_pairs_only_across_and_rotates_the_larger_side() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let event = event(&mut rng, 30);
    // 12 mentors, 18 mentees (one without a side: never paired).
    let mut sides: IdMap<Uuid, String> = IdMap::default();
    for id in 1..=30u128 {
        if id != 30 {
            sides.insert(
                Uuid::from_u128(id),
                if id <= 12 { "Mentor ".into() } else { "mentee".into() },
            );
        }
    }
    let rounds = play(&event, Mode::AcrossSides, &sides, 6);
    let mut sat: IdMap<Uuid, u32> = IdMap::default();
    for (r, (pairs, out)) in rounds.iter().enumerate() {
        for (a, b) in pairs {
            assert_ne!(
                side_key(sides.get(a).map(String::as_str)),
                side_key(sides.get(b).map(String::as_str))
            );
            assert!(sides.contains_key(a) && sides.contains_key(b));
        }
        for u in out {
            *sat.entry(*u).or_default() += 1;
        }
        // Among mentees with a side, sit-outs differ by at most one.
        let counts: Vec<u32> = (13..30u128)
            .map(|id| sat.get(&Uuid::from_u128(id)).copied().unwrap_or(0))
            .collect();
        let (lo, hi) = (counts.iter().min().copied(), counts.iter().max().copied());
        assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "round {r}: {counts:?}");
    }
}

/// The best total weight of any matching of `edges` on `n` vertices.
fn exhaustive_edges(n: usize, edges: &[blossom::Edge]) -> i64 {
    fn go(edges: &[blossom::Edge], used: u32) -> i64 {
        let Some((&(a, b, w), rest)) = edges.split_first() else {
            return 0;
        };
        let skip = go(rest, used);
        let bits = (1 << a) | (1 << b);
        if used & bits == 0 {
            skip.max(w + go(rest, used | bits))
        } else {
            skip
        }
    }
    assert!(n <= 32);
    go(edges, 0)
}

#[test]
fn duals_certify_random_graphs() {
    // Dense small graphs with a few weights make odd cycles tight, so many
    // final duals hold blossoms: the slack of a pair inside one must count
    // the z of every blossom holding both ends, and no other.
    let mut rng = rand::rngs::StdRng::seed_from_u64(29);
    let mut inside_blossoms = 0;
    for case in 0..400 {
        let n = rng.gen_range(2..=11);
        let mut edges = Vec::new();
        for a in 0..n as u32 {
            for b in a + 1..n as u32 {
                if rng.gen_bool(0.6) {
                    edges.push((a, b, rng.gen_range(1..=6) * 2));
                }
            }
        }
        let sol = max_weight_matching(n, &edges);
        let matched: i64 = edges
            .iter()
            .filter(|&&(a, b, _)| sol.mate[a as usize] == Some(b))
            .map(|e| e.2)
            .sum();
        assert_eq!(matched, exhaustive_edges(n, &edges), "case {case}: not optimal");
        assert_eq!(
            sol.dual_objective2(),
            2 * i128::from(matched),
            "case {case}: dual objective"
        );
        let y = sol.vertex_duals2();
        for &(a, b, w) in &edges {
            let (a, b) = (a as usize, b as usize);
            assert!(sol.slack2(a, b, w) >= 0, "case {case}: ({a}, {b}) uncovered");
            if sol.mate[a] == Some(b as u32) {
                assert_eq!(sol.slack2(a, b, w), 0, "case {case}: matched ({a}, {b}) not tight");
                if i128::from(y[a]) + i128::from(y[b]) < 2 * i128::from(w) {
                    inside_blossoms += 1;
                }
            }
        }
    }
    assert!(
        inside_blossoms > 20,
        "only {inside_blossoms} matched pairs needed a blossom's z"
    );
}

#[test]
fn the_bound_covers_the_dense_optimum_after_one_solve() {
    // Two passes on one candidate each rarely certify; the bound must still
    // be at least the dense optimum's score (found with many passes).
    let mut rng = rand::rngs::StdRng::seed_from_u64(31);
    let mut uncertified = 0;
    for case in 0..200 {
        let n = rng.gen_range(2..=12);
        let m = random_instance(&mut rng, n, case % 2 == 1);
        let sat_out: Vec<u32> = (0..n).map(|_| rng.gen_range(0..3)).collect();
        let quick = Options {
            candidates: 1,
            max_passes: 2,
            chunk: 3,
        };
        let full = Options {
            max_passes: 40,
            ..quick
        };
        let plan = plan_round(&m, &sat_out, Strategy::Optimal, quick, &mut |_| {});
        let best = plan_round(&m, &sat_out, Strategy::Optimal, full, &mut |_| {});
        assert!(best.certified, "case {case}");
        uncertified += usize::from(!plan.certified);
        assert!(
            plan.upper_bound + 1e-5 >= best.total_score,
            "case {case}: bound {} below the optimum {}",
            plan.upper_bound,
            best.total_score
        );
    }
    assert!(uncertified > 10, "only {uncertified} rounds left uncertified");
}
