//! The meeting-round benchmark: one round of a synthetic cosine-v1 event
//! (384-dimensional embeddings around 40 topics) at 200, 2,000 and 10,000
//! attendees, `optimal` beside `greedy` on the same round. Prints JSON
//! lines (the first names the CPU); it is not a test.
//!
//! ```text
//! cargo run --release --bin pairing_bench              # 200, 2,000, 10,000
//! cargo run --release --bin pairing_bench -- 500 3000  # other sizes
//! cargo run --release --bin pairing_bench -- --candidates 8 --passes 2 10000
//! ```
//!
//! By default rounds above 5,000 attendees keep 10 candidates each and read
//! 2 dense passes (one solve, then the check that yields the bound).

#[path = "shared/machine.rs"]
mod machine;

use matchmaker::matching::pairing::{plan_round, EventScores, Mode, Options, Strategy};
use matchmaker::matching::{Algorithm, Event, EventSettings, IdMap, Participant, ParticipantRow, TagInterner};
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::time::Instant;
use uuid::Uuid;

const DIMENSIONS: usize = 384;
const TOPICS: usize = 40;

/// An event of `n` attendees: each embedding is one of the topics plus noise.
fn event(n: usize, seed: u64) -> Event {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let topics: Vec<Vec<f32>> = (0..TOPICS)
        .map(|_| (0..DIMENSIONS).map(|_| rng.gen_range(-1.0f32..1.0)).collect())
        .collect();
    let settings = EventSettings {
        id: Uuid::from_u128(1),
        algorithm: Ok(Algorithm::CosineV1),
        matches_per_user: 3,
        exclude_same_company: true,
        embedding_dimensions: Some(DIMENSIONS),
    };
    let mut tags = TagInterner::default();
    let mut people = Vec::with_capacity(n);
    for id in 0..n {
        let topic = &topics[rng.gen_range(0..TOPICS)];
        let row = ParticipantRow {
            user_id: Uuid::from_u128(id as u128 + 1),
            active: true,
            company: Some(format!("company {}", rng.gen_range(0..n / 10 + 2))),
            embedding: Some(topic.iter().map(|x| Some(x + rng.gen_range(-1.2f32..1.2))).collect()),
            ..Default::default()
        };
        people.push(Participant::from_row(&row, Some(DIMENSIONS), &mut tags));
    }
    let mut event = Event::new(settings, tags);
    for p in people {
        event.upsert(p);
    }
    event
}

fn main() {
    let mut given = Vec::new();
    let (mut candidates, mut passes) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--candidates" => candidates = args.next().and_then(|x| x.parse().ok()),
            "--passes" => passes = args.next().and_then(|x| x.parse().ok()),
            other => given.extend(other.parse::<usize>().ok()),
        }
    }
    let sizes = if given.is_empty() {
        vec![200, 2_000, 10_000]
    } else {
        given
    };
    println!("{}", json!({ "machine": machine::describe() }));
    for n in sizes {
        let event = event(n, n as u64);
        let scores = EventScores::new(&event, Mode::Any, &IdMap::default(), &[]);
        let sat_out = vec![0u32; n];
        let options = Options {
            max_passes: passes.unwrap_or(if n > 5_000 { 2 } else { 4 }),
            candidates: candidates.unwrap_or(if n > 5_000 { 10 } else { Options::default().candidates }),
            ..Options::default()
        };
        let t = Instant::now();
        let optimal = plan_round(&scores, &sat_out, Strategy::Optimal, options, &mut |_| {});
        let optimal_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let greedy = plan_round(&scores, &sat_out, Strategy::Greedy, options, &mut |_| {});
        let greedy_s = t.elapsed().as_secs_f64();
        let gained = if greedy.total_score != 0.0 {
            100.0 * (optimal.total_score - greedy.total_score) / greedy.total_score.abs()
        } else {
            0.0
        };
        let round = |x: f64, d: i32| (x * 10f64.powi(d)).round() / 10f64.powi(d);
        println!(
            "{}",
            json!({
                "attendees": n,
                "candidates_per_attendee": options.candidates,
                "optimal": {
                    "seconds": round(optimal_s, 3),
                    "pairs": optimal.pairs,
                    "sat_out": optimal.sat_out,
                    "total_score": round(optimal.total_score, 4),
                    "upper_bound": round(optimal.upper_bound, 4),
                    "gap_percent": round(100.0 * optimal.gap(), 4),
                    "certified_dense_optimum": optimal.certified,
                    "dense_passes": optimal.passes,
                    "edges": optimal.edges,
                    "partner_in_own_top3": round(optimal.in_top3 as f64 / n as f64, 4),
                },
                "greedy": {
                    "seconds": round(greedy_s, 3),
                    "pairs": greedy.pairs,
                    "total_score": round(greedy.total_score, 4),
                    "partner_in_own_top3": round(greedy.in_top3 as f64 / n as f64, 4),
                },
                "optimal_gain_percent": round(gained, 3),
            })
        );
    }
}
