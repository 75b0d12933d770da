//! The kernel benchmark: GFLOP/s and milliseconds per call of every kernel
//! path this CPU has, beside NumPy's float32 GEMM on the same shapes,
//! measured in the same run. Prints JSON lines; it is not a test.
//!
//! ```text
//! cargo run --release --bin kernel_bench                 # all shapes
//! cargo run --release --bin kernel_bench -- --quick      # the worker's shapes only
//! cargo run --release --bin kernel_bench -- --no-numpy   # without Python
//! ```
//!
//! Shapes are queries × candidates × dimensions: 20 × 10,000 and 20 ×
//! 100,000 (a worker's batch against an event; memory-bound at 100,000, so
//! the lines carry the candidates' GB/s too), then larger query counts for
//! the comparison with a GEMM. Candidates are separate allocations, as the
//! engine holds them. The first line names the CPU, its flags and the load.

#[path = "shared/machine.rs"]
mod machine;

use matchmaker::matching::kernel;
use serde_json::json;
use std::time::{Duration, Instant};

struct Opts {
    quick: bool,
    numpy: Option<String>,
    reps: usize,
}

fn opts() -> Opts {
    let mut o = Opts {
        quick: false,
        numpy: Some("python3".into()),
        reps: 7,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--no-numpy" => o.numpy = None,
            "--python" => o.numpy = args.next(),
            "--reps" => o.reps = args.next().and_then(|r| r.parse().ok()).unwrap_or(o.reps).max(1),
            other => {
                eprintln!("unknown argument {other}; use --quick, --no-numpy, --python PATH, --reps N");
                std::process::exit(2);
            }
        }
    }
    o
}

/// A deterministic pseudo-random unit vector (xorshift; no dependency on
/// the crate's rand version).
fn unit(seed: &mut u64, d: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..d)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            (*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// Best and median of `reps` timed calls after one warm-up.
fn time(reps: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    f();
    let mut t: Vec<Duration> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed()
        })
        .collect();
    t.sort();
    (t[0], t[t.len() / 2])
}

fn numpy(python: &str, q: usize, n: usize, d: usize, reps: usize) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench/kernel_gemm.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .args([q, n, d, reps].map(|x| x.to_string()))
        .output();
    match out {
        Ok(o) if o.status.success() => serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null),
        Ok(o) => json!({ "error": String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("failed") }),
        Err(e) => json!({ "error": e.to_string() }),
    }
}

fn main() {
    let o = opts();
    println!("{}", machine::describe());
    let mut shapes: Vec<(usize, usize, usize)> = vec![(20, 10_000, 384), (20, 100_000, 384)];
    if !o.quick {
        shapes.extend([(200, 10_000, 384), (1_000, 10_000, 384), (2_000, 20_000, 384)]);
    }
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for (q, n, d) in shapes {
        let queries: Vec<Vec<f32>> = (0..q).map(|_| unit(&mut seed, d)).collect();
        let cands: Vec<Vec<f32>> = (0..n).map(|_| unit(&mut seed, d)).collect();
        let qs: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
        let cs: Vec<Option<&[f32]>> = cands.iter().map(|c| Some(c.as_slice())).collect();
        let mut out = vec![0f32; q * n];
        let flop = 2.0 * (q * n * d) as f64;
        let big = q * n * d > 100_000_000;
        let reps = if big { o.reps.min(3) } else { o.reps };
        let np = o.numpy.as_deref().map(|py| numpy(py, q, n, d, reps));
        let np_gflops = np.as_ref().and_then(|v| v.get("gflops")).and_then(|g| g.as_f64());
        let line = |path: &str, kind: &str, bytes: f64, (best, median): (Duration, Duration)| {
            let gflops = flop / best.as_secs_f64() / 1e9;
            json!({
                "shape": format!("{q}x{n}x{d}"),
                "path": path,
                "kind": kind,
                "ms_best": (best.as_secs_f64() * 1e6).round() / 1e3,
                "ms_median": (median.as_secs_f64() * 1e6).round() / 1e3,
                "gflops": (gflops * 100.0).round() / 100.0,
                "cand_gbps": (bytes / best.as_secs_f64() / 1e7).round() / 100.0,
                "numpy_gflops": np_gflops,
                "vs_numpy": np_gflops.map(|g| (gflops / g * 1000.0).round() / 1000.0),
                "load": machine::load(),
            })
        };
        if let Some(np) = &np {
            println!(
                "{}",
                json!({ "shape": format!("{q}x{n}x{d}"), "path": "numpy", "numpy": np, "load": machine::load() })
            );
        }
        for path in kernel::exact_paths() {
            // The portable path is slow on x86 (mul_add is a library call):
            // the worker's batch shapes only, one call.
            let slow = path.name == "portable" && cfg!(target_arch = "x86_64");
            if slow && q > 20 {
                continue;
            }
            let t = time(if slow { 1 } else { reps }, || path.dots(&qs, &cs, &mut out));
            println!("{}", line(path.name, "exact", (n * d * 4) as f64, t));
        }
        for path in kernel::approx_paths() {
            let slow = path.name == "f16-portable" && cfg!(target_arch = "x86_64");
            if slow && q > 20 {
                continue;
            }
            let hs: Vec<kernel::ApproxVector> = cands.iter().map(|c| path.to_approx(c)).collect();
            let hc: Vec<Option<&kernel::ApproxVector>> = hs.iter().map(Some).collect();
            let t = time(if slow { 1 } else { reps }, || path.dots(&qs, &hc, &mut out));
            println!("{}", line(path.name, "approx", (n * d * 2) as f64, t));
        }
    }
}
