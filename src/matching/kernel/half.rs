//! 16-bit copies of vectors for the approximate first pass (the 8-bit ones
//! are in [`super::int8`]), and the bounds
//! on how far their scores may be from the exact ones.
//!
//! # IEEE half with a power-of-two scale, and its bound
//!
//! [`to_f16`] stores a finite vector `x` of `n` elements as `s` and
//! `h_j = half(x_j / s)`, where `s = 2^k` is chosen from the largest
//! magnitude `m = max |x_j|`: `k = ⌊log₂ m⌋ + 1`, clamped to `[-100, 127]`
//! (`s = 1` for a zero vector). Write `x'_j = x_j / s`. Unclamped,
//! `m / s ∈ [1/2, 1)`; clamped above (`m ≥ 2^127`), `m / s ∈ [1, 2)`; so
//! `|x'_j| < 2` always (a half never overflows) and `s ≤ 2m ≤ 2‖x‖` unless
//! clamped below (`m < 2^-101`, `s = 2^-100`). The division is a
//! multiplication by a power of two: exact, except where `x'_j` falls below
//! f32's normal range, an error `≤ 2^-150` that the half rounding below
//! absorbs (such an `x'_j` rounds to a zero half).
//!
//! The approximate score of a query `q` (f32, not rounded) is
//! `a = s · fl(q, h)`, where `fl(q, h)` is the reference-order dot product
//! ([`super`]) of `q` and the exact f32 values of `h`. The exact score is
//! `e = fl(q, x)`. With `P = ‖q‖·‖x‖`, `u = 2^-11` (the unit roundoff of
//! half's 11-bit significand), `η = 2^-25` (half the spacing of half's
//! subnormals, `2^-24`), `ε = 2^-24` (f32's unit roundoff), `d = ⌈n/16⌉ + 4`
//! (the rounding depth of the reference order: at most `⌈n/16⌉`
//! multiply-adds into a lane, then four levels of additions) and
//! `γ = dε / (1 - dε)`:
//!
//! 1. **Rounding to half** (round to nearest even): `|h_j - x'_j| ≤ u·|x'_j|`
//!    in half's normal range, and `≤ η` below it (`|x'_j| < 2^-14`), so
//!    `|h_j - x'_j| ≤ u·|x'_j| + η` everywhere. Hence
//!    `s·|Σ q_j (h_j - x'_j)| ≤ u·Σ|q_j x_j| + sη·Σ|q_j|`, and by
//!    Cauchy–Schwarz `Σ|q_j x_j| ≤ P` and `Σ|q_j| ≤ √n·‖q‖`, so with
//!    `s ≤ 2‖x‖` this is `≤ (u + t)·P` where `t = 2^-24·√n`.
//! 2. **The f32 summation of the approximate sum**: the standard bound for
//!    a sum computed with `d` roundings on each term's path gives
//!    `|fl(q, h) - Σ q_j h_j| ≤ γ·Σ|q_j h_j|`, and
//!    `s·Σ|q_j h_j| ≤ (1 + u)·Σ|q_j x_j| + sη·Σ|q_j| ≤ (1 + u + t)·P`.
//! 3. **The f32 summation of the exact score**: `|e - Σ q_j x_j| ≤ γ·P`.
//! 4. **Underflow**: a multiply-add whose result falls below f32's normal
//!    range errs by up to `2^-150` absolutely, not relatively (an addition
//!    there is exact). A sum has `n` multiply-adds and each error is carried
//!    on with a factor below 2, so the approximate sum errs by another
//!    `s·n·2^-149 ≤ n·2^-148·‖x‖` (or `≤ n·2^-249` when clamped below), the
//!    exact one by `n·2^-149`, and the final multiplication by `s` by
//!    `2^-150`. Clamped below (`m < 2^-101`), the `sη·Σ|q_j|` terms of 1
//!    and 2 are at most `2^-125·√n·‖q‖` each instead of `t·P`.
//!
//! Adding up, `|a - e| ≤ ρ·P + α` with
//! `ρ = u + t + γ·(2 + u + t)` and
//! `α = 2^-100·(1 + √n·‖q‖) + (n + 16)·2^-148·‖x‖`, which covers every
//! absolute term above (for `n < 2^40`). [`f16_error`] evaluates it in f64
//! with the caller's upper bounds of the norms and rounds up to f32. For
//! `n = 384`: `ρ = 0.000 492 8` (`u = 0.000 488 3`), eight times tighter
//! than bfloat16's `0.003 95`.
//!
//! The test `f16_bound_holds_and_is_tight` (in `tests.rs`) builds vectors
//! whose rounding errors all point the same way, reaching `0.99·ρ·P`: it
//! fails when the bound is made 2 % smaller.
//!
//! Non-finite vectors get a NaN scale, so all their scores are NaN (the
//! engine rejects such embeddings before they get here).

use std::fmt;

/// Elements per bfloat16 block: bfloat16 vectors are padded with zeros to a
/// multiple of this.
pub(super) const BF16_BLOCK: usize = 32;

/// How far an approximate dot product of the bfloat16 path may be from the
/// exact one of [`super::dot`], relative to the product of the two vectors'
/// norms, for vectors of up to 384 elements (see [`bf16_error`] beyond).
///
/// Rounding each element to bfloat16 (8 significant bits, round to nearest
/// even) moves it by at most 2⁻⁹ of itself, so each product moves by at most
/// (2·2⁻⁹ + 2⁻¹⁸)·|qⱼxⱼ|, and the sum by at most 0.003910·Σ|qⱼxⱼ| ≤
/// 0.003910·‖q‖·‖x‖ (Cauchy–Schwarz). The products of two bfloat16 values are
/// exact in f32; the two f32 summations (here, and in [`super::dot`]), at
/// most 28 additions deep per lane, add at most 2·28·2⁻²⁴ ≈ 0.0000034 of
/// Σ|qⱼxⱼ|. Rounded up, with room to spare.
pub(super) const BF16_REL_ERROR: f32 = 0.00395;
/// Plus this, absolute, for values flushed to zero (below 10⁻³⁸).
pub(super) const BF16_ABS_ERROR: f32 = 1e-6;

/// How an [`ApproxVector`] stores its elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// IEEE half of `x / scale`; exactly `len` elements.
    F16,
    /// bfloat16 of `x` (scale 1), zero-padded to a multiple of
    /// [`BF16_BLOCK`].
    Bf16,
    /// Signed bytes with a scale (see [`super::int8`]), zero-padded to a
    /// multiple of [`super::int8::I8_BLOCK`].
    I8,
}

/// A vector in 16 or 8 bits per element, for the approximate kernels
/// ([`super::dots_approx`]); made by [`super::to_approx`]. Its fields are
/// private so that its invariants (the length of `bits` or `bytes` for its
/// format, a power-of-two scale for halves, no half infinity or NaN, an
/// 8-bit vector's sum and error) hold by construction.
#[derive(Clone, PartialEq)]
pub struct ApproxVector {
    format: Format,
    len: usize,
    scale: f32,
    /// The 16-bit formats' elements (empty for 8 bits).
    bits: Box<[u16]>,
    /// The 8-bit format's elements (empty for 16 bits).
    bytes: Box<[i8]>,
    /// The sum of `bytes`.
    sum: i32,
    /// An upper bound of `‖x − scale·bytes‖` (0 for 16 bits).
    error: f32,
}

impl fmt::Debug for ApproxVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApproxVector")
            .field("format", &self.format)
            .field("len", &self.len)
            .field("scale", &self.scale)
            .finish_non_exhaustive()
    }
}

impl ApproxVector {
    /// The number of elements of the original vector.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the original vector was empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(super) fn format(&self) -> Format {
        self.format
    }

    /// What the stored elements are multiplied by: a power of two for
    /// halves, 1 for bfloat16, the 8-bit scale; NaN for a vector with a
    /// non-finite element.
    pub(super) fn scale(&self) -> f32 {
        self.scale
    }

    /// The stored elements: `len` halves, or `len` bfloat16 values padded to
    /// a multiple of [`BF16_BLOCK`] (empty for 8 bits).
    pub(super) fn bits(&self) -> &[u16] {
        &self.bits
    }

    /// The 8-bit elements, padded (empty for 16 bits).
    pub(super) fn bytes(&self) -> &[i8] {
        &self.bytes
    }

    /// The sum of [`ApproxVector::bytes`].
    pub(super) fn sum(&self) -> i32 {
        self.sum
    }

    /// How far the stored vector may be from the original (Euclidean norm
    /// of the difference, rounded up): measured for 8 bits, 0 for the
    /// 16-bit formats, whose bounds need no such term. The event keeps the
    /// largest, for [`super::approx_error`].
    pub fn error(&self) -> f32 {
        self.error
    }

    fn halves(format: Format, len: usize, scale: f32, bits: Vec<u16>) -> Self {
        Self {
            format,
            len,
            scale,
            bits: bits.into_boxed_slice(),
            bytes: Box::default(),
            sum: 0,
            error: 0.0,
        }
    }

    pub(super) fn from_quantized(len: usize, q: super::int8::Quantized) -> Self {
        Self {
            format: Format::I8,
            len,
            scale: q.scale,
            bits: Box::default(),
            bytes: q.bytes.into_boxed_slice(),
            sum: q.sum,
            error: q.error,
        }
    }
}

/// `2^k` for `k` in `-149..=127` (exact; subnormal below `-126`).
fn pow2(k: i32) -> f32 {
    debug_assert!((-149..=127).contains(&k));
    if k >= -126 {
        f32::from_bits(((k + 127) as u32) << 23)
    } else {
        f32::from_bits(1 << (k + 149))
    }
}

/// The exponent of the scale for a largest magnitude `m` (finite, > 0):
/// `⌊log₂ m⌋ + 1`, clamped to `[-100, 127]`.
fn scale_exponent(m: f32) -> i32 {
    let b = m.to_bits();
    let e = if b >> 23 == 0 {
        (31 - b.leading_zeros() as i32) - 149
    } else {
        (b >> 23) as i32 - 127
    };
    (e + 1).clamp(-100, 127)
}

/// `x` rounded to the nearest IEEE half (ties to even), as bits; overflow
/// gives infinity, NaN a quiet NaN.
pub(super) fn f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let a = b & 0x7FFF_FFFF;
    if a > 0x7F80_0000 {
        return sign | 0x7E00;
    }
    if a >= 0x4780_0000 {
        // ≥ 65536 (and infinity): beyond the largest half, 65504.
        return sign | 0x7C00;
    }
    if a < 0x3880_0000 {
        // Below 2^-14: a subnormal half, in units of 2^-24 (exact scaling;
        // 1024 units is the smallest normal, whose encoding is the same).
        let units = (f32::from_bits(a) * pow2(24)).round_ties_even() as u16;
        return sign | units;
    }
    let e = (a >> 23) + 15 - 127;
    let m = a & 0x007F_FFFF;
    let base = (e << 10) | (m >> 13);
    let rest = m & 0x1FFF;
    // A carry out of the significand raises the exponent (up to infinity),
    // which is the correct rounding.
    let up = rest > 0x1000 || (rest == 0x1000 && base & 1 == 1);
    sign | (base + u32::from(up)) as u16
}

/// The value of a finite half (no infinity or NaN; [`to_f16`] never stores
/// one): the exponent rebiased by a multiplication by `2^112`, exact for
/// normals and subnormals alike.
#[inline(always)]
pub(super) fn f16_value(h: u16) -> f32 {
    let mag = f32::from_bits(u32::from(h & 0x7FFF) << 13) * pow2(112);
    f32::from_bits(mag.to_bits() | (u32::from(h & 0x8000) << 16))
}

/// [`f16_value`] of every element (the compiler vectorises the loop).
pub(super) fn f16_to_f32_into(bits: &[u16], out: &mut [f32]) {
    assert_eq!(bits.len(), out.len());
    for (o, &h) in out.iter_mut().zip(bits) {
        *o = f16_value(h);
    }
}

/// `v` as IEEE half with a power-of-two scale (see the module docs).
pub(super) fn to_f16(v: &[f32]) -> ApproxVector {
    let finite = v.iter().all(|x| x.is_finite());
    let m = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let (scale, bits) = if !finite {
        (f32::NAN, vec![0u16; v.len()])
    } else if m == 0.0 {
        (1.0, v.iter().map(|&x| f16_bits(x)).collect())
    } else {
        let k = scale_exponent(m);
        let inv = pow2(-k);
        (pow2(k), v.iter().map(|&x| f16_bits(x * inv)).collect())
    };
    ApproxVector::halves(Format::F16, v.len(), scale, bits)
}

/// `x` in bfloat16 (round to nearest even; NaN to a quiet NaN).
fn bf16_bits(x: f32) -> u16 {
    if x.is_nan() {
        return 0x7FC0;
    }
    let b = x.to_bits();
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// `v` in bfloat16, zero-padded to a multiple of [`BF16_BLOCK`] (at least
/// one block, so that a kernel never sees an empty vector).
pub(super) fn bf16_padded(v: &[f32]) -> Vec<u16> {
    let mut out: Vec<u16> = v.iter().map(|&x| bf16_bits(x)).collect();
    out.resize(v.len().div_ceil(BF16_BLOCK).max(1) * BF16_BLOCK, 0);
    out
}

/// `v` in bfloat16 for the AVX-512 BF16 path.
pub(super) fn to_bf16(v: &[f32]) -> ApproxVector {
    ApproxVector::halves(Format::Bf16, v.len(), 1.0, bf16_padded(v))
}

/// `b` rounded up to an f32.
pub(super) fn up(b: f64) -> f32 {
    let f = b as f32;
    if f64::from(f) < b {
        f.next_up()
    } else {
        f
    }
}

/// `γ(d) = dε / (1 - dε)` for f32 (infinite when `dε ≥ 1`).
pub(super) fn gamma(d: f64) -> f64 {
    let de = d * f64::from(f32::EPSILON) / 2.0;
    if de >= 1.0 {
        f64::INFINITY
    } else {
        de / (1.0 - de)
    }
}

/// The relative term `ρ` of the half path's bound for `len` elements (see
/// the module docs).
pub(super) fn f16_rel(len: usize) -> f64 {
    let n = len as f64;
    let u = 2f64.powi(-11);
    let t = 2f64.powi(-24) * n.sqrt();
    let g = gamma((len.div_ceil(16) + 4) as f64);
    u + t + g * (2.0 + u + t)
}

/// The half path's bound `ρ·‖q‖·‖x‖ + α` (see the module docs), rounded up.
pub(super) fn f16_error(norm_q: f32, norm_x_max: f32, len: usize) -> f32 {
    let (nq, nx) = (f64::from(norm_q), f64::from(norm_x_max));
    let n = len as f64;
    let alpha = 2f64.powi(-100) * (1.0 + n.sqrt() * nq) + (n + 16.0) * 2f64.powi(-148) * nx;
    up(f16_rel(len) * nq * nx + alpha)
}

/// The bfloat16 path's bound: [`BF16_REL_ERROR`] and [`BF16_ABS_ERROR`] as
/// the engine always used them, evaluated the same way in f32, up to the
/// length where their slack for the summation error runs out; beyond it the
/// same derivation with the summation depth of `len` elements
/// (`2⌈len/32⌉ + 4` roundings per lane for the bfloat16 sum, `⌈len/16⌉ + 4`
/// for the exact one).
pub(super) fn bf16_error(norm_q: f32, norm_x_max: f32, len: usize) -> f32 {
    let u = 2f64.powi(-9);
    let rounding = 2.0 * u + u * u;
    let g_half = gamma((2 * len.div_ceil(BF16_BLOCK) + 4) as f64);
    let g_exact = gamma((len.div_ceil(16) + 4) as f64);
    let rel = rounding + g_half * (1.0 + rounding) + g_exact;
    if rel <= f64::from(BF16_REL_ERROR) {
        return BF16_REL_ERROR * norm_q * norm_x_max + BF16_ABS_ERROR;
    }
    up(rel * f64::from(norm_q) * f64::from(norm_x_max) + f64::from(BF16_ABS_ERROR))
}
