//! 8-bit copies of vectors for the approximate first pass: a quarter of the
//! exact vectors' memory traffic, and integer arithmetic that is exact, so
//! every instruction set computes the same integer and the same score.
//!
//! # The format
//!
//! [`quantize`] stores a finite vector `x` of `n` elements as a scale
//! `s = fl(m / 127)`, with `m = max |x_j|`, and integers
//! `k_j = clamp(round(x_j / s), -127, 127)` (zero-padded to a multiple of
//! [`I8_BLOCK`]); `x̃ = s·k` is what the kernel scores. It also records
//! `E ≥ ‖x − x̃‖`, the vector's own rounding error, measured rather than
//! bounded a priori: the squares `(x_j − s·k_j)²` summed in f64 (`s·k_j` is
//! exact there, and the whole sum errs by less than `(n + 3)·2⁻⁵³` of
//! itself for `n ≤ MAX_LEN`), scaled by `1 + 2⁻³⁰` and rounded up to f32. When
//! `s` would not be a normal f32 (a zero or tiny vector) the vector is
//! stored as `s = 0`, `k = 0` and `E ≥ ‖x‖`. A non-finite vector gets a NaN
//! scale, so its scores are NaN (the engine rejects such embeddings first).
//!
//! # The score
//!
//! A query `q` is quantized the same way (`t`, `i_j`, its own error
//! `E_q ≥ ‖q − q̃‖`). A kernel computes the integer `I = Σ i_j·k_j`
//! exactly (`|I| ≤ n·127² < 2³¹` for `n ≤ MAX_LEN`; paths that multiply
//! unsigned bytes add 128 to `i_j` and subtract `128·Σ k_j` after, which
//! is the same integer) and the score is `a = fl(fl(I)·fl(t·s))`, computed
//! by the one driver ([`gemm_i8`]) on every path. So every path returns the
//! same bits.
//!
//! # The bound
//!
//! Let `e = fl(q, x)` be the exact score (the reference-order f32 dot
//! product of [`super`]), `Nq ≥ ‖q‖`, `Nx ≥ ‖x‖` and `Ex ≥ E` over the
//! candidates, `ε = 2⁻²⁴`, `d = ⌈n/16⌉ + 4` and `γ = dε / (1 − dε)`.
//!
//! 1. **Quantization**: `q·x − q̃·x̃ = (q − q̃)·x + q̃·(x − x̃)`, so by
//!    Cauchy–Schwarz `|q·x − q̃·x̃| ≤ E_q·Nx + ‖q̃‖·Ex`, and
//!    `‖q̃‖ ≤ Nq + E_q`.
//! 2. **The evaluation of `a`**: `q̃·x̃ = t·s·I` exactly. Three roundings
//!    (the conversion of `I`, the product `t·s`, the final product), each
//!    relative `≤ ε` in the normal range, give
//!    `|a − t·s·I| ≤ 3.0001ε·|q̃·x̃| ≤ 3.0001ε·(Nq + E_q)·(Nx + Ex)`. When
//!    `t·s` or `a` falls below the normal range the error is absolute
//!    instead, at most `2⁻¹⁵⁰` each, the first multiplied by `|I| ≤ 127²·n`.
//! 3. **The exact score**: `|e − q·x| ≤ γ·Nq·Nx + n·2⁻¹⁴⁹` (as for the half
//!    path, see [`super::half`]).
//!
//! So `|a − e| ≤ E_q·Nx + (Nq + E_q)·Ex + 3.0001ε·(Nq + E_q)·(Nx + Ex) +
//! γ·Nq·Nx + (16130·n + 2)·2⁻¹⁴⁹`. [`i8_error`] evaluates it in f64, scaled
//! by `1 + 2⁻⁴⁰` for that evaluation's own rounding, and rounds up to f32.
//! For unit vectors of 384 dimensions `E` is about 0.007 (at most about 0.012
//! over 100,000 clustered vectors), so the bound is about 0.02: five times
//! bfloat16's, which costs a few hundred exact re-scorings per batch of 20 at
//! 100,000 attendees against a kernel that reads half the bytes and does four
//! multiply-adds per byte lane and instruction.
//!
//! The test `i8_bound_holds_and_is_tight` (in `tests.rs`) builds queries
//! whose rounding errors all point along the candidate, reaching more than
//! 0.9 of the bound: it fails when the bound is made 10 % smaller.

use super::half::{gamma, up, ApproxVector, Format};
use super::{columns, one_length, Out};

/// Elements per block: 8-bit vectors are zero-padded to a multiple of this
/// (one 512-bit register).
pub(super) const I8_BLOCK: usize = 64;

/// The longest vector the 8-bit path scores: `n·255·127` must fit an i32
/// (the unsigned-byte paths' sums).
pub(super) const MAX_LEN: usize = 65_536;

/// A vector in 8 bits: `scale·bytes` approximates it, `error` bounds how
/// far (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Quantized {
    pub(super) scale: f32,
    pub(super) bytes: Vec<i8>,
    pub(super) sum: i32,
    pub(super) error: f32,
}

/// `v` in 8 bits with its measured error (see the module docs).
pub(super) fn quantize(v: &[f32]) -> Quantized {
    let padded = v.len().div_ceil(I8_BLOCK).max(1) * I8_BLOCK;
    let mut bytes = vec![0i8; padded];
    if !v.iter().all(|x| x.is_finite()) {
        return Quantized {
            scale: f32::NAN,
            bytes,
            sum: 0,
            error: 0.0,
        };
    }
    let m = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = m / 127.0;
    let scale = if scale.is_normal() { scale } else { 0.0 };
    if scale == 0.0 {
        // Every byte 0: the error is the vector's own norm.
        let err2: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        return Quantized {
            scale,
            bytes,
            sum: 0,
            error: measured(err2),
        };
    }
    // Lanes of partial sums, so the loop vectorises: the bound on the f64
    // sum of squares (module docs) holds in any order of summation.
    const LANES: usize = 8;
    let mut err2 = [0f64; LANES];
    let mut sum = [0i32; LANES];
    let mut put = |b: &mut i8, x: f32, lane: usize| {
        let k = round_byte(x / scale);
        *b = k;
        sum[lane] += i32::from(k);
        let r = f64::from(x) - f64::from(scale) * f64::from(k);
        err2[lane] += r * r;
    };
    let (head, tail) = v.split_at(v.len() - v.len() % LANES);
    let (bhead, btail) = bytes[..v.len()].split_at_mut(head.len());
    for (bs, xs) in bhead.chunks_exact_mut(LANES).zip(head.chunks_exact(LANES)) {
        for (l, (b, &x)) in bs.iter_mut().zip(xs).enumerate() {
            put(b, x, l);
        }
    }
    for (b, &x) in btail.iter_mut().zip(tail) {
        put(b, x, 0);
    }
    Quantized {
        scale,
        bytes,
        sum: sum.iter().sum(),
        error: measured(err2.iter().sum()),
    }
}

/// `E` from the f64 sum of the squared residuals: its square root, scaled
/// by `1 + 2⁻³⁰` for the sum's own rounding and rounded up (module docs).
fn measured(err2: f64) -> f32 {
    up(err2.sqrt() * (1.0 + 2f64.powi(-30)))
}

/// `clamp(round_ties_even(y), -127, 127)` for a finite `y`, without a call
/// into libm (which `round_ties_even` is on x86-64's baseline): once `y` is
/// clamped, adding and subtracting 1.5·2²³ (an even integer) leaves it
/// rounded to the nearest integer, ties to even, in the default rounding
/// mode, and both steps are exact.
#[inline(always)]
fn round_byte(y: f32) -> i8 {
    const SHIFT: f32 = 12_582_912.0;
    ((y.clamp(-127.0, 127.0) + SHIFT) - SHIFT) as i8
}

/// `v` as an 8-bit [`ApproxVector`].
pub(super) fn to_i8(v: &[f32]) -> ApproxVector {
    ApproxVector::from_quantized(v.len(), quantize(v))
}

/// The 8-bit path's bound for a query of norm at most `norm_q` and own
/// error `err_q`, candidates of norm at most `norm_x_max` and error at most
/// `err_x_max`, all of `len` elements (see the module docs), rounded up.
pub(super) fn i8_error(norm_q: f32, err_q: f32, norm_x_max: f32, err_x_max: f32, len: usize) -> f32 {
    let (nq, eq, nx, ex) = (
        f64::from(norm_q),
        f64::from(err_q),
        f64::from(norm_x_max),
        f64::from(err_x_max),
    );
    let n = len as f64;
    let eps = 2f64.powi(-24);
    let gamma = gamma((len.div_ceil(16) + 4) as f64);
    let bound = eq * nx
        + (nq + eq) * ex
        + 3.0001 * eps * (nq + eq) * (nx + ex)
        + gamma * nq * nx
        + (16130.0 * n + 2.0) * 2f64.powi(-149);
    up(bound * (1.0 + 2f64.powi(-40)))
}

/// One instruction set's 8-bit micro-kernel.
pub(super) trait MicroI8 {
    /// Whether the kernel multiplies unsigned query bytes (`i_j + 128`)
    /// by signed candidate bytes; otherwise both are signed.
    const UNSIGNED_QUERY: bool;
    /// Queries per call (at most [`MAX_R`]).
    const R: usize;
    /// Candidates per call (at most [`MAX_C`]).
    const C: usize;

    /// The `R × C` integer dot products of the query bytes (unsigned or
    /// signed as [`MicroI8::UNSIGNED_QUERY`] says) and the candidate bytes.
    /// Panics unless every slice has one length, a multiple of
    /// [`I8_BLOCK`].
    ///
    /// # Safety
    /// The CPU supports the instruction set of the implementation.
    unsafe fn tile<const R: usize, const C: usize>(qs: [&[u8]; R], cs: [&[i8]; C]) -> [[i32; C]; R];

    /// A hint to load the cache line at `p` (never faults).
    ///
    /// # Safety
    /// As for [`MicroI8::tile`].
    unsafe fn prefetch(p: *const u8);
}

/// The most queries and candidates per micro-kernel call.
pub(super) const MAX_R: usize = 4;
pub(super) const MAX_C: usize = 4;

/// Candidate groups ahead whose lines are prefetched.
const AHEAD: usize = 4;

/// Scores every query against every 8-bit candidate of its length: each
/// group of `M::C` candidates is read from memory once and scored by every
/// group of `M::R` queries while it is in L1 (a batch's 20 queries of 384
/// dimensions take 7.5 KiB), the groups `AHEAD` further on prefetched
/// meanwhile. The scaling is done here, in scalar code, so every path
/// returns the same bits.
///
/// # Safety
/// The CPU supports `M`'s instruction set.
#[inline(always)]
pub(super) unsafe fn gemm_i8<M: MicroI8>(qs: &[&[f32]], cs: &[Option<&ApproxVector>], out: &mut Out<'_>) {
    let Some(len) = one_length(qs) else { return };
    assert!(len <= MAX_LEN, "8-bit vectors have at most {MAX_LEN} elements");
    let cols = columns(cs, len, |c| c.len());
    if cols.is_empty() || len == 0 {
        return;
    }
    let queries: Vec<Quantized> = qs.iter().map(|q| quantize(q)).collect();
    let flip = if M::UNSIGNED_QUERY { 0x80 } else { 0 };
    let qbytes: Vec<Vec<u8>> = queries
        .iter()
        .map(|q| q.bytes.iter().map(|&b| (b as u8) ^ flip).collect())
        .collect();
    let padded = qbytes[0].len();
    for (_, c) in &cols {
        assert!(c.format() == Format::I8 && c.bytes().len() == padded);
    }
    let lines = padded.div_ceil(64);
    for (g, group) in cols.chunks(M::C).enumerate() {
        for (_, c) in cols.iter().skip((g + AHEAD) * M::C).take(M::C) {
            for l in 0..lines {
                // SAFETY: the caller guarantees M's instruction set; the
                // address is inside the candidate's bytes.
                unsafe { M::prefetch(c.bytes().as_ptr().wrapping_add(l * 64).cast()) };
            }
        }
        for r0 in (0..qs.len()).step_by(M::R) {
            let r = M::R.min(qs.len() - r0);
            // SAFETY: the caller guarantees M's instruction set; the
            // slices have one padded length (checked above).
            unsafe { put::<M>(&qbytes[r0..r0 + r], group, r0, &queries[r0..r0 + r], out) };
        }
    }
}

/// One micro-kernel call of up to [`MAX_R`] × [`MAX_C`] and its scaled
/// stores.
///
/// # Safety
/// As for [`gemm_i8`]; every slice has one length.
#[inline(always)]
unsafe fn put<M: MicroI8>(
    qb: &[Vec<u8>],
    group: &[(usize, &ApproxVector)],
    row: usize,
    queries: &[Quantized],
    out: &mut Out<'_>,
) {
    macro_rules! call {
        ($r:literal, $c:literal) => {{
            let q: [&[u8]; $r] = std::array::from_fn(|i| &qb[i][..]);
            let c: [&[i8]; $c] = std::array::from_fn(|j| group[j].1.bytes());
            // SAFETY: the caller's contract.
            let res = unsafe { M::tile::<$r, $c>(q, c) };
            let mut all = [[0i32; MAX_C]; MAX_R];
            for (a, r) in all.iter_mut().zip(res) {
                a[..$c].copy_from_slice(&r);
            }
            all
        }};
    }
    let res = match (qb.len(), group.len()) {
        (4, 4) => call!(4, 4),
        (4, 3) => call!(4, 3),
        (4, 2) => call!(4, 2),
        (4, 1) => call!(4, 1),
        (3, 4) => call!(3, 4),
        (3, 3) => call!(3, 3),
        (3, 2) => call!(3, 2),
        (3, 1) => call!(3, 1),
        (2, 4) => call!(2, 4),
        (2, 3) => call!(2, 3),
        (2, 2) => call!(2, 2),
        (2, 1) => call!(2, 1),
        (1, 4) => call!(1, 4),
        (1, 3) => call!(1, 3),
        (1, 2) => call!(1, 2),
        _ => call!(1, 1),
    };
    for (r, q) in queries.iter().enumerate() {
        for (j, (col, c)) in group.iter().enumerate() {
            let raw = res[r][j];
            let i = if M::UNSIGNED_QUERY { raw - 128 * c.sum() } else { raw };
            out.set(row + r, *col, i as f32 * (q.scale * c.scale()));
        }
    }
}

/// The 8-bit micro-kernel in plain Rust (the compiler vectorises it).
pub(super) struct PortableI8;

impl MicroI8 for PortableI8 {
    const UNSIGNED_QUERY: bool = false;
    const R: usize = 4;
    const C: usize = 4;

    #[inline(always)]
    unsafe fn tile<const R: usize, const C: usize>(qs: [&[u8]; R], cs: [&[i8]; C]) -> [[i32; C]; R] {
        let n = cs[0].len();
        assert!(qs.iter().all(|q| q.len() == n) && cs.iter().all(|c| c.len() == n));
        let mut out = [[0i32; C]; R];
        for (o, q) in out.iter_mut().zip(qs) {
            for (v, c) in o.iter_mut().zip(cs) {
                *v = q.iter().zip(c).map(|(&a, &b)| i32::from(a as i8) * i32::from(b)).sum();
            }
        }
        out
    }

    #[inline(always)]
    unsafe fn prefetch(_: *const u8) {}
}

/// The portable 8-bit kernel (see [`super::BlockOf`]).
pub(super) fn block_portable(qs: &[&[f32]], cs: &[Option<&ApproxVector>], out: &mut Out<'_>) {
    // SAFETY: the portable micro-kernel needs no instruction set.
    unsafe { gemm_i8::<PortableI8>(qs, cs, out) }
}
