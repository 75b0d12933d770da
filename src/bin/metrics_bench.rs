//! What the worker's metrics cost per batch, measured directly: the
//! recording a batch of 20 does with metrics on (four phase observations,
//! 20 join-to-match observations, the health beat, and the totals
//! published), repeated, with and without a scrape encoding the registry
//! every 1,000 batches. Prints JSON lines (the first names the machine); it
//! is not a test. Set beside the daemon's CPU time per batch
//! (`bash scripts/bench.sh --mode join [--metrics-scrape 1]`, field
//! `daemon_cpu_ms_per_join`) it bounds the overhead far below what an end
//! to end run can resolve.
//!
//! ```text
//! cargo run --release --bin metrics_bench            # 1,000,000 batches
//! cargo run --release --bin metrics_bench -- 100000
//! ```

#[path = "shared/machine.rs"]
mod machine;

use matchmaker::metrics::{Metrics, Phase};
use matchmaker::worker::RunTotals;
use serde_json::json;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Rows per batch (the worker's default batch size).
const BATCH: usize = 20;

/// Records `batches` batches as the worker does; `scrape_every`: encode the
/// registry (a `/metrics` answer) after that many batches. Returns the mean
/// cost of one batch in nanoseconds.
fn run(batches: u64, scrape_every: Option<u64>) -> f64 {
    let m = Metrics::new();
    m.run_started();
    let mut totals = RunTotals::default();
    let mut scraped = 0usize;
    let t0 = Instant::now();
    for b in 0..batches {
        for (i, phase) in [Phase::Claim, Phase::Read, Phase::Score, Phase::Write]
            .into_iter()
            .enumerate()
        {
            m.observe_phase(phase, Duration::from_micros(500 + 100 * i as u64 + b % 7));
        }
        for r in 0..BATCH {
            m.observe_join_to_match(Duration::from_millis(20 + (b + r as u64) % 900));
        }
        m.health().progress();
        totals.batches += 1;
        totals.claimed += BATCH as i64;
        totals.processed += BATCH as i64;
        // The worker publishes at most once a second; every batch here is
        // the worst case.
        m.publish(black_box(&totals));
        if let Some(every) = scrape_every {
            if b % every == every - 1 {
                scraped += black_box(m.encode()).len();
            }
        }
    }
    let ns = t0.elapsed().as_nanos() as f64 / batches as f64;
    black_box(scraped);
    ns
}

fn main() {
    let batches: u64 = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 1_000_000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: metrics_bench [BATCHES]");
            std::process::exit(2);
        }
    };
    println!("{}", json!({ "machine": machine::describe() }));
    run(batches / 10, None); // warm-up
    for (name, scrape) in [("record", None), ("record_and_scrape_every_1000", Some(1000))] {
        let ns = run(batches, scrape);
        println!(
            "{}",
            json!({
                "bench": "metrics_per_batch",
                "mode": name,
                "batch_rows": BATCH,
                "batches": batches,
                "ns_per_batch": (ns * 10.0).round() / 10.0,
                "load": machine::load(),
            })
        );
    }
}
