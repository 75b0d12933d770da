//! The encoder's element-wise functions, written so that the compiler can
//! vectorise them and every machine computes the same bits: fixed formulas
//! of plain adds and multiplies (Rust never contracts them into fused ones),
//! no calls into the C library, sums in fixed lanes.

use super::gemm::{wide, Path};

wide!(
    /// Layer normalisation of one row in place (see `layer_norm_on`).
    pub fn layer_norm(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) = layer_norm_on);
wide!(
    /// Softmax down each column of a row-major matrix (see `softmax_columns_on`).
    pub fn softmax_columns(m: &mut [f32], cols: usize, scale: f32) = softmax_columns_on);
wide!(
    /// `row += add`, then layer normalisation (the residual connections).
    pub fn add_layer_norm(row: &mut [f32], add: &[f32], gamma: &[f32], beta: &[f32], eps: f32) = add_layer_norm_on);

/// `row += add`, then [`layer_norm`] (the residual connections).
#[inline(always)]
fn add_layer_norm_on(path: Path, row: &mut [f32], add: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
    for (a, &b) in row.iter_mut().zip(add) {
        *a += b;
    }
    layer_norm_on(path, row, gamma, beta, eps);
}

/// Lanes of the fixed-order sums (a multiple of every SIMD width in use).
const LANES: usize = 16;

/// `erf(x)` in single precision: Eigen's rational approximation (odd
/// numerator of degree 13 over an even denominator of degree 8) on
/// [-4, 4], where erf reaches ±1 in `f32`. Absolute error below 5e-7 (the
/// tests check it against `f64` values).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_6e-3;
    p = x2 * p + -1.609_603_3e-2;
    p *= x;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329e-3;
    q = x2 * q + -1.426_474e-2;
    p / q
}

/// GELU in its exact (erf) form, as BERT's `"gelu"` activation.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `exp(x)` in single precision (Cephes' `expf`: a reduction by ln 2 in two
/// parts and a polynomial of degree 6), within 2 ulp of the true value on
/// [-87, 88]; below that it gives about 1e-38 rather than 0, which softmax
/// cannot tell apart.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest (even) by adding and removing 1.5 · 2²³: the FPU's
    // own rounding, with no call into the C library's rintf.
    const ROUND: f32 = 12_582_912.0;
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = r * 1.987_569_1e-4 + 1.398_199_9e-3;
    p = r * p + 8.333_452e-3;
    p = r * p + 4.166_579_6e-2;
    p = r * p + 0.166_666_65;
    p = r * p + 0.5;
    let y = p * (r * r) + r + 1.0;
    // 2ⁿ from its exponent bits: n is in [-126, 127] after the clamp.
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// The sum of `v` in a fixed order: [`LANES`] running sums, then those
/// added left to right.
#[inline(always)]
pub fn sum(v: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l += x;
        }
    }
    for (l, &x) in lanes.iter_mut().zip(chunks.remainder()) {
        *l += x;
    }
    lanes.iter().fold(0.0, |s, &l| s + l)
}

/// Layer normalisation of one row in place: `(x − mean) / sqrt(var + eps)
/// · gamma + beta`, with the biased variance as BERT uses.
#[inline(always)]
fn layer_norm_on(_: Path, row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = row.len() as f32;
    let mean = sum(row) / n;
    let mut lanes = [0.0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l += (x - mean) * (x - mean);
        }
    }
    for (l, &x) in lanes.iter_mut().zip(chunks.remainder()) {
        *l += (x - mean) * (x - mean);
    }
    let var = lanes.iter().fold(0.0, |s, &l| s + l) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((x, &g), &b) in row.iter_mut().zip(gamma).zip(beta) {
        *x = (*x - mean) * inv * g + b;
    }
}

/// Softmax of `m * scale` down each of its `cols` columns (`m` is row
/// major), in place: maxima, exponentials and sums run row by row, so they
/// vectorise across columns and each column's sum is in row order.
#[inline(always)]
fn softmax_columns_on(_: Path, m: &mut [f32], cols: usize, scale: f32) {
    let mut max = vec![f32::NEG_INFINITY; cols];
    for row in m.chunks_exact(cols) {
        for (mx, &x) in max.iter_mut().zip(row) {
            *mx = mx.max(x);
        }
    }
    let mut total = vec![0.0f32; cols];
    for row in m.chunks_exact_mut(cols) {
        for ((x, &mx), t) in row.iter_mut().zip(&max).zip(total.iter_mut()) {
            *x = exp((*x - mx) * scale);
            *t += *x;
        }
    }
    for t in total.iter_mut() {
        *t = 1.0 / *t;
    }
    for row in m.chunks_exact_mut(cols) {
        for (x, &inv) in row.iter_mut().zip(&total) {
            *x *= inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf in f64 by its Taylor series (|x| ≤ 3) or continued fraction.
    fn erf64(x: f64) -> f64 {
        if x.abs() > 3.0 {
            // erfc(x) = exp(-x²)/(x√π) · 1/(1 + 1/(2x²)/(1 + 2/(2x²)/(1 + …)))
            let ax = x.abs();
            let mut f = 0.0;
            for n in (1..60).rev() {
                f = (n as f64 / 2.0) / (ax + f);
            }
            let erfc = (-ax * ax).exp() / std::f64::consts::PI.sqrt() / (ax + f);
            return (1.0 - erfc).copysign(x);
        }
        let mut term = x;
        let mut s = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            s += term / (2 * n + 1) as f64;
        }
        s * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_and_exp_are_close_to_f64() {
        let mut worst_erf = 0.0f64;
        let mut worst_exp = 0.0f64;
        for i in -60_000..=60_000 {
            let x = i as f32 / 10_000.0;
            worst_erf = worst_erf.max((f64::from(erf(x)) - erf64(f64::from(x))).abs());
            let e = f64::from(x).exp();
            if x < 87.0 {
                worst_exp = worst_exp.max((f64::from(exp(x)) - e).abs() / e);
            }
        }
        for i in -87_000..=0 {
            let x = i as f32 / 1_000.0;
            let e = f64::from(x).exp();
            worst_exp = worst_exp.max((f64::from(exp(x)) - e).abs() / e);
        }
        assert!(worst_erf < 5e-7, "erf error {worst_erf}");
        assert!(worst_exp < 3e-7, "exp relative error {worst_exp}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1e30) < 1e-37 && exp(-1e30) >= 0.0);
    }

    #[test]
    fn layer_norm_and_softmax_match_their_definitions() {
        let mut row: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let wide: Vec<f64> = row.iter().map(|&x| f64::from(x)).collect();
        let mean = wide.iter().sum::<f64>() / 37.0;
        let var = wide.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / 37.0;
        let gamma = vec![2.0f32; 37];
        let beta = vec![0.5f32; 37];
        layer_norm(Path::Portable, &mut row, &gamma, &beta, 1e-12);
        for (x, w) in row.iter().zip(&wide) {
            let want = (w - mean) / var.sqrt() * 2.0 + 0.5;
            assert!((f64::from(*x) - want).abs() < 1e-5, "{x} {want}");
        }
        // 50 rows × 3 columns: each column is a softmax of its own.
        let mut s: Vec<f32> = (0..150).map(|i| (i / 3) as f32 * 0.3 - 4.0 + (i % 3) as f32).collect();
        let wide: Vec<f64> = s.iter().map(|&x| (f64::from(x) * 0.5).exp()).collect();
        softmax_columns(Path::current(), &mut s, 3, 0.5);
        for col in 0..3 {
            let total: f64 = wide.iter().skip(col).step_by(3).sum();
            for (x, w) in s.iter().zip(&wide).skip(col).step_by(3) {
                assert!((f64::from(*x) - w / total).abs() < 1e-7);
            }
        }
    }
}
