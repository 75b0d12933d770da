//! The local embedding model's benchmark: texts per second and effective
//! GFLOP/s for short (~20 tokens), typical (~100) and long (truncated)
//! profile texts, and the cold time to embed a synthetic event's profiles.
//! Prints JSON lines (the first names the CPU); it is not a test.
//! `scripts/bench-model.sh` runs it beside NumPy's GEMM rate.
//!
//! ```text
//! cargo run --release --bin model_bench -- MODEL_DIR [--event N] [--scale F]
//! ```
//!
//! `--event N` (default 10,000) is the number of profiles of the cold run;
//! `--scale F` (default 1) multiplies the number of texts of each workload.

#[path = "shared/machine.rs"]
mod machine;

use anyhow::{bail, Context, Result};
use matchmaker::embeddings::{LocalModel, ProfileText};
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

const WORDS: &[&str] = &[
    "energy",
    "storage",
    "battery",
    "grid",
    "climate",
    "software",
    "engineer",
    "founder",
    "investor",
    "mentor",
    "health",
    "data",
    "machine",
    "learning",
    "robotics",
    "supply",
    "chain",
    "security",
    "design",
    "product",
    "market",
    "startup",
    "research",
    "open",
    "source",
    "education",
    "finance",
    "policy",
    "hardware",
    "cloud",
    "platform",
    "customers",
    "hiring",
    "funding",
    "seed",
    "series",
    "partners",
    "scale",
    "europe",
    "utilities",
];

fn text(rng: &mut impl Rng, words: usize, i: usize) -> String {
    let mut out = format!("attendee {i}:");
    for _ in 0..words {
        out.push(' ');
        out.push_str(WORDS[rng.gen_range(0..WORDS.len())]);
    }
    out
}

fn workload(model: &LocalModel, name: &str, words: usize, count: usize) -> Result<serde_json::Value> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(words as u64);
    let texts: Vec<String> = (0..count).map(|i| text(&mut rng, words, i)).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let tokens = model.tokenize(&refs)?;
    let total: usize = tokens.iter().map(|t| t.len()).sum();
    let flops: f64 = tokens.iter().map(|t| model.flops(t.len())).sum();
    // One warm-up call, then the measured one.
    model.embed(&refs[..refs.len().min(8)])?;
    let started = Instant::now();
    let v = model.embed(&refs)?;
    let s = started.elapsed().as_secs_f64();
    if v.len() != count {
        bail!("embedded {} of {count} texts", v.len());
    }
    Ok(json!({
        "workload": name,
        "texts": count,
        "mean_tokens": total as f64 / count as f64,
        "seconds": s,
        "texts_per_s": count as f64 / s,
        "tokens_per_s": total as f64 / s,
        "gflop_per_s": flops / s / 1e9,
    }))
}

/// The encoder's own product on the shape `scripts/bench-model.sh` gives
/// NumPy (a chunk of 4,096 tokens through the feed-forward's first layer),
/// on every kernel path this CPU has: best of 5 rounds of 5 calls (one call
/// on the portable path, which on x86 does its fused multiply-adds in
/// software).
fn encoder_gemm() -> Vec<serde_json::Value> {
    use matchmaker::embeddings::local::gemm::{self, Epilogue, Packed, Path};
    let (m, k, n) = (4096usize, 384usize, 1536usize);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let a: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let w: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let b = Packed::from_transposed(&w, n, k);
    let mut c = vec![0.0f32; m * n];
    let mut lines = Vec::new();
    for path in gemm::paths() {
        let reps = if path == Path::Portable { 1 } else { 5 };
        gemm::matmul_par(path, &a, m, &b, &mut c, Epilogue::None);
        let mut best = f64::INFINITY;
        for _ in 0..reps {
            let started = Instant::now();
            for _ in 0..reps {
                gemm::matmul_par(path, &a, m, &b, &mut c, Epilogue::None);
            }
            best = best.min(started.elapsed().as_secs_f64() / reps as f64);
        }
        let name = match path {
            Path::Avx512 => "avx512",
            Path::Avx2 => "avx2",
            Path::Portable => "portable",
        };
        lines.push(
            json!({"encoder_gemm": format!("{m}x{k} @ {k}x{n} float32"), "path": name,
                          "gflop_per_s": 2.0 * (m * k * n) as f64 / best / 1e9}),
        );
    }
    lines
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut dir: Option<PathBuf> = std::env::var_os("EMBEDDINGS_MODEL_DIR").map(PathBuf::from);
    let mut event = 10_000usize;
    let mut scale = 1.0f64;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--event" => event = args.next().context("--event needs a number")?.parse()?,
            "--scale" => scale = args.next().context("--scale needs a number")?.parse()?,
            _ => dir = Some(PathBuf::from(a)),
        }
    }
    let Some(dir) = dir else {
        bail!("usage: model_bench MODEL_DIR [--event N] [--scale F] (or set EMBEDDINGS_MODEL_DIR)");
    };
    println!("{}", json!({ "machine": machine::describe() }));
    let started = Instant::now();
    let model = LocalModel::load(&dir)?;
    println!(
        "{}",
        json!({"load_seconds": started.elapsed().as_secs_f64(), "model": model.model_id(),
               "rayon_threads": std::env::var("RAYON_NUM_THREADS").ok()})
    );
    for line in encoder_gemm() {
        println!("{line}");
    }
    let n = |base: f64| ((base * scale) as usize).max(8);
    println!("{}", workload(&model, "short", 14, n(512.0))?);
    println!("{}", workload(&model, "typical", 85, n(128.0))?);
    println!("{}", workload(&model, "long", 400, n(32.0))?);

    // The cold event: realistic rendered profiles (role, company, tags, a bio
    // of 0 to 80 words), all distinct, embedded from nothing.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let profiles: Vec<String> = (0..event)
        .map(|i| {
            let words = rng.gen_range(0..80);
            ProfileText {
                role: Some(WORDS[rng.gen_range(0..WORDS.len())].to_string()),
                company: Some(format!("company {}", i % 997)),
                interests: (0..3)
                    .map(|_| WORDS[rng.gen_range(0..WORDS.len())].to_string())
                    .collect(),
                looking_for: vec![WORDS[rng.gen_range(0..WORDS.len())].to_string()],
                offering: vec![WORDS[rng.gen_range(0..WORDS.len())].to_string()],
                bio: Some(text(&mut rng, words, i)),
            }
            .render()
        })
        .collect();
    let refs: Vec<&str> = profiles.iter().map(String::as_str).collect();
    let started = Instant::now();
    let tokens = model.tokenize(&refs)?;
    let v = model.embed(&refs)?;
    let s = started.elapsed().as_secs_f64();
    let total: usize = tokens.iter().map(|t| t.len()).sum();
    println!(
        "{}",
        json!({"workload": "cold_event", "profiles": v.len(), "mean_tokens": total as f64 / event.max(1) as f64,
               "seconds": s, "texts_per_s": event as f64 / s,
               "gflop_per_s": tokens.iter().map(|t| model.flops(t.len())).sum::<f64>() / s / 1e9})
    );
    // The same profiles in the worker's batches (20 by default): each batch
    // is cut by token length on its own, so chunks are small.
    let batch = 20;
    let sample = &refs[..refs.len().min(2_000)];
    let started = Instant::now();
    for b in sample.chunks(batch) {
        model.embed(b)?;
    }
    let s = started.elapsed().as_secs_f64();
    let tokens = model.tokenize(sample)?;
    println!(
        "{}",
        json!({"workload": "worker_batches", "batch": batch, "profiles": sample.len(), "seconds": s,
               "texts_per_s": sample.len() as f64 / s,
               "gflop_per_s": tokens.iter().map(|t| model.flops(t.len())).sum::<f64>() / s / 1e9})
    );
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        if let Some(l) = status.lines().find(|l| l.starts_with("VmHWM")) {
            println!("{}", json!({"peak_rss": l.trim_start_matches("VmHWM:").trim()}));
        }
    }
    Ok(())
}
