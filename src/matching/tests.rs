//! Tests of the core as a whole: the batch scorer against pair scores,
//! and repairs (one at a time, planned, approximate) against the brute force.

use super::event::score_at;
use super::profile::{Embedding, Participant, ParticipantRow, TagInterner};
use super::score::Algorithm;
use super::*;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use uuid::Uuid;

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
fn churn(rng: &mut impl Rng, event: &mut Event, lists: &mut Lists, dirty: &mut HashSet<Uuid>, n: u128, changes: usize) {
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
                repair_with(
                    &event,
                    &mut lists,
                    &dirty,
                    u,
                    Accelerators {
                        summaries: sums.as_mut(),
                        ..Default::default()
                    },
                );
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
            repair_with(
                &event,
                &mut lists,
                &dirty,
                u,
                Accelerators {
                    summaries: sums.as_mut(),
                    ..Default::default()
                },
            );
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
            repair_with(
                event,
                lists,
                dirty,
                *u,
                Accelerators {
                    row,
                    summaries: Some(&mut sums),
                    plan: pl,
                },
            );
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
