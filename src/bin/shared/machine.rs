//! The machine a benchmark ran on, for the first JSON line of every
//! benchmark binary (included with `#[path]`; figures of one machine say
//! nothing of another).

use matchmaker::matching::kernel;
use serde_json::json;

/// The CPU model, the SIMD flags the kernel can use, the cores, the load,
/// and the kernel paths this process picked.
pub fn describe() -> serde_json::Value {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let model = field("model name").or_else(|| field("CPU part")).unwrap_or_default();
    let flags = field("flags").or_else(|| field("Features")).unwrap_or_default();
    let wanted = |f: &&str| {
        ["avx", "avx2", "fma", "f16c", "asimd", "fphp", "asimdhp", "neon"].contains(f) || f.starts_with("avx512")
    };
    let flags: Vec<&str> = flags.split_whitespace().filter(wanted).collect();
    json!({
        "cpu": model,
        "flags": flags,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "load": load(),
        "exact_default": kernel::implementation(),
        "approx_default": kernel::approx_implementation(),
    })
}

/// The one-minute load average.
pub fn load() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(f64::NAN)
}
