//! x86-64: the reference arithmetic written with intrinsics.
//!
//! - AVX2 + FMA: the register-blocked micro-kernel ([`Avx2`]) behind
//!   [`super::gemm`], and for single pairs one `fmadd` per 8 lanes.
//! - AVX2 + FMA + F16C: the approximate path over IEEE half vectors,
//!   converted with `vcvtph2ps`.
//! - 8-bit first pass (see [`super::int8`]): `vpdpbusd` with AVX-512 VNNI
//!   (512 bits) or AVX-VNNI (256 bits), `vpmaddwd` of widened bytes with
//!   AVX2 alone; integer sums folded with shuffles in any order (exact).
//! - AVX-512 F (exact) and AVX-512 BF16 (approximate): unchanged arithmetic
//!   (this machine's development CPU has no AVX-512, so these paths are
//!   compiled and checked by the same tests on AVX-512 machines only).
//!
//! Every safe wrapper checks the CPU features itself before its unsafe
//! call, so a path can never run on a CPU without them, whoever calls it.

use super::half::{self, ApproxVector, BF16_BLOCK};
use super::int8::{self, MicroI8, I8_BLOCK};
use super::{columns, one_length, reduce, ApproxPath, ExactPath, Micro, Out, Tails, LANES};
use std::arch::x86_64::*;

/// Queries scored per pass over a candidate by the AVX-512 kernels.
const GROUP: usize = 4;
/// Bytes of candidate vectors per tile of the AVX-512 kernels (half a
/// typical L2 cache).
const TILE_BYTES: usize = 256 * 1024;

fn has_avx2() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

fn has_f16c() -> bool {
    has_avx2() && std::is_x86_feature_detected!("f16c")
}

fn has_avx512() -> bool {
    std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma")
}

fn has_bf16() -> bool {
    std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16")
}

/// Defines a blocked kernel from a `pass` function: candidates of the
/// queries' length, taken in tiles that stay in the L2 cache while every
/// group of queries (eight, four, then one at a time) passes over them.
/// The caller checks that every query has one length; a length of zero
/// scores nothing (no pass reads an element then).
macro_rules! blocked {
    ($(#[$attr:meta])* $name:ident, $t:ty, $pass:ident) => {
        $(#[$attr])*
        unsafe fn $name(queries: &[&[$t]], cands: &[Option<&[$t]>], out: &mut Out<'_>) {
            let len = queries.first().map_or(0, |q| q.len());
            let tile = (TILE_BYTES / (len.max(1) * std::mem::size_of::<$t>())).clamp(8, 4096);
            let cols: Vec<(usize, &[$t])> = cands
                .iter()
                .enumerate()
                .filter_map(|(k, c)| c.filter(|c| c.len() == len).map(|c| (k, c)))
                .collect();
            for tile_cols in cols.chunks(tile) {
                let mut q0 = 0;
                while q0 < queries.len() {
                    let rest = queries.len() - q0;
                    if rest >= 2 * GROUP {
                        let qs: [&[$t]; 2 * GROUP] = std::array::from_fn(|q| queries[q0 + q]);
                        // SAFETY: the caller guarantees the features of this
                        // function, which `$pass` enables too; every query
                        // and candidate has length `len`.
                        unsafe { $pass(qs, tile_cols, out, q0) };
                        q0 += 2 * GROUP;
                    } else if rest >= GROUP {
                        let qs: [&[$t]; GROUP] = std::array::from_fn(|q| queries[q0 + q]);
                        // SAFETY: as above.
                        unsafe { $pass(qs, tile_cols, out, q0) };
                        q0 += GROUP;
                    } else {
                        // SAFETY: as above.
                        unsafe { $pass([queries[q0]], tile_cols, out, q0) };
                        q0 += 1;
                    }
                }
            }
        }
    };
}

/// Finishes lanes in `acc` with the tail `from..n`, then reduces.
#[inline(always)]
fn finish(mut acc: [f32; LANES], q: &[f32], c: &[f32], from: usize) -> f32 {
    for (l, j) in (from..c.len()).enumerate() {
        acc[l] = q[j].mul_add(c[j], acc[l]);
    }
    reduce(&acc)
}

// ---------------------------------------------------------------- AVX-512

/// # Safety
/// AVX-512 F and FMA; every query has at least `c.len()` elements.
#[target_feature(enable = "avx512f,fma")]
unsafe fn group_avx512<const Q: usize>(qs: [&[f32]; Q], c: &[f32]) -> [f32; Q] {
    let n = c.len();
    let full = n - n % LANES;
    let mut acc = [_mm512_setzero_ps(); Q];
    let mut i = 0;
    while i < full {
        // SAFETY: i + 16 <= full <= n, and every query has length >= n (the
        // caller's contract).
        let cv = unsafe { _mm512_loadu_ps(c.as_ptr().add(i)) };
        for q in 0..Q {
            // SAFETY: as above.
            let qv = unsafe { _mm512_loadu_ps(qs[q].as_ptr().add(i)) };
            acc[q] = _mm512_fmadd_ps(qv, cv, acc[q]);
        }
        i += LANES;
    }
    let mut out = [0f32; Q];
    for q in 0..Q {
        let mut lanes = [0f32; LANES];
        // SAFETY: `lanes` has 16 elements.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), acc[q]) };
        out[q] = finish(lanes, qs[q], c, full);
    }
    out
}

/// `Q` queries against two candidates at once: 2·Q accumulators, so each
/// loaded query chunk feeds two multiply-adds.
///
/// # Safety
/// AVX-512 F and FMA; `c1` and every query have at least `c0.len()`
/// elements.
#[target_feature(enable = "avx512f,fma")]
unsafe fn pair_avx512<const Q: usize>(qs: [&[f32]; Q], c0: &[f32], c1: &[f32]) -> [[f32; Q]; 2] {
    let n = c0.len();
    let full = n - n % LANES;
    let mut a0 = [_mm512_setzero_ps(); Q];
    let mut a1 = [_mm512_setzero_ps(); Q];
    let mut i = 0;
    while i < full {
        // SAFETY: i + 16 <= full <= n; both candidates and every query
        // have length >= n (the caller's contract).
        let (v0, v1) = unsafe { (_mm512_loadu_ps(c0.as_ptr().add(i)), _mm512_loadu_ps(c1.as_ptr().add(i))) };
        for q in 0..Q {
            // SAFETY: as above.
            let qv = unsafe { _mm512_loadu_ps(qs[q].as_ptr().add(i)) };
            a0[q] = _mm512_fmadd_ps(qv, v0, a0[q]);
            a1[q] = _mm512_fmadd_ps(qv, v1, a1[q]);
        }
        i += LANES;
    }
    let mut out = [[0f32; Q]; 2];
    for q in 0..Q {
        let mut lanes = [0f32; LANES];
        // SAFETY: `lanes` has 16 elements.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), a0[q]) };
        out[0][q] = finish(lanes, qs[q], c0, full);
        // SAFETY: as above.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), a1[q]) };
        out[1][q] = finish(lanes, qs[q], c1, full);
    }
    out
}

blocked!(
    /// The blocked kernel on AVX-512: tiles of candidates, queries in
    /// groups of eight, four, then one.
    ///
    /// # Safety
    /// AVX-512 F and FMA; every query has one length.
    #[target_feature(enable = "avx512f,fma")]
    block_avx512, f32, pass_avx512
);

/// `Q` queries (rows `q0..q0 + Q` of `out`) over a tile of candidates,
/// two candidates at a time.
///
/// # Safety
/// AVX-512 F and FMA; every query and candidate has one length.
#[target_feature(enable = "avx512f,fma")]
unsafe fn pass_avx512<const Q: usize>(qs: [&[f32]; Q], tile_cols: &[(usize, &[f32])], out: &mut Out<'_>, q0: usize) {
    let mut pairs = tile_cols.chunks_exact(2);
    for pair in &mut pairs {
        // SAFETY: the caller's contract.
        let r = unsafe { pair_avx512::<Q>(qs, pair[0].1, pair[1].1) };
        for (j, (col, _)) in pair.iter().enumerate() {
            for (q, &v) in r[j].iter().enumerate() {
                out.set(q0 + q, *col, v);
            }
        }
    }
    for (col, c) in pairs.remainder() {
        // SAFETY: the caller's contract.
        let r = unsafe { group_avx512::<Q>(qs, c) };
        for (q, &v) in r.iter().enumerate() {
            out.set(q0 + q, *col, v);
        }
    }
}

fn dot_avx512_safe(a: &[f32], b: &[f32]) -> f32 {
    assert!(has_avx512());
    assert_eq!(a.len(), b.len());
    // SAFETY: features checked above; equal lengths checked above.
    unsafe { group_avx512::<1>([a], b)[0] }
}

fn block_avx512_safe(q: &[&[f32]], c: &[Option<&[f32]>], out: &mut Out<'_>) {
    assert!(has_avx512());
    if one_length(q).is_none() {
        return;
    }
    // SAFETY: features checked above; `one_length` checked that every query
    // has one length (the macro keeps the candidates of that length only).
    unsafe { block_avx512(q, c, out) }
}

// ------------------------------------------------------------------- AVX2

/// `Q` dot products with one candidate (for [`super::dot`]), two `ymm`
/// accumulators per query.
///
/// # Safety
/// AVX2 and FMA; every query has at least `c.len()` elements.
#[target_feature(enable = "avx2,fma")]
unsafe fn group_avx2<const Q: usize>(qs: [&[f32]; Q], c: &[f32]) -> [f32; Q] {
    let n = c.len();
    let full = n - n % LANES;
    let mut lo = [_mm256_setzero_ps(); Q];
    let mut hi = [_mm256_setzero_ps(); Q];
    let mut i = 0;
    while i < full {
        // SAFETY: i + 16 <= full <= n, and every query has length >= n (the
        // caller's contract).
        let (c0, c1) = unsafe {
            (
                _mm256_loadu_ps(c.as_ptr().add(i)),
                _mm256_loadu_ps(c.as_ptr().add(i + 8)),
            )
        };
        for q in 0..Q {
            // SAFETY: as above.
            let (q0, q1) = unsafe {
                let p = qs[q].as_ptr().add(i);
                (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
            };
            lo[q] = _mm256_fmadd_ps(q0, c0, lo[q]);
            hi[q] = _mm256_fmadd_ps(q1, c1, hi[q]);
        }
        i += LANES;
    }
    let mut out = [0f32; Q];
    for q in 0..Q {
        let mut lanes = [0f32; LANES];
        // SAFETY: `lanes` has 16 elements.
        unsafe {
            _mm256_storeu_ps(lanes.as_mut_ptr(), lo[q]);
            _mm256_storeu_ps(lanes.as_mut_ptr().add(8), hi[q]);
        }
        out[q] = finish(lanes, qs[q], c, full);
    }
    out
}

/// Lanes 0–7 (`OFF = 0`) or 8–15 (`OFF = 8`) of the `R × C` accumulators of
/// the reference order: the full chunks with one `fmadd` per pair, then the
/// tail (zero-padded copies in `qt`, `ct`) blended into the lanes it reaches
/// only.
///
/// # Safety
/// AVX2 and FMA; every slice of `qs` and `cs` has at least `full` elements
/// and `full` is a multiple of 16.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn half_pass<const R: usize, const C: usize, const OFF: usize>(
    qs: &[&[f32]; R],
    cs: &[&[f32]; C],
    full: usize,
    tails: Tails<'_, R, C>,
) -> [[__m256; C]; R] {
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let mut i = OFF;
    while i < full {
        let mut cv = [_mm256_setzero_ps(); C];
        for j in 0..C {
            // SAFETY: i + 8 <= full (full is a multiple of 16, OFF <= 8) and
            // every candidate has at least `full` elements (the caller's
            // contract).
            cv[j] = unsafe { _mm256_loadu_ps(cs[j].as_ptr().add(i)) };
        }
        for r in 0..R {
            // SAFETY: as above, for the queries.
            let qv = unsafe { _mm256_loadu_ps(qs[r].as_ptr().add(i)) };
            for j in 0..C {
                acc[r][j] = _mm256_fmadd_ps(qv, cv[j], acc[r][j]);
            }
        }
        i += LANES;
    }
    if let Some((qt, ct, rem)) = tails {
        if rem > OFF {
            let mask = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
                _mm256_set1_epi32((rem - OFF) as i32),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            ));
            let mut cv = [_mm256_setzero_ps(); C];
            for j in 0..C {
                // SAFETY: OFF + 8 <= 16 = the length of each tail copy.
                cv[j] = unsafe { _mm256_loadu_ps(ct[j].as_ptr().add(OFF)) };
            }
            for r in 0..R {
                // SAFETY: as above.
                let qv = unsafe { _mm256_loadu_ps(qt[r].as_ptr().add(OFF)) };
                for j in 0..C {
                    acc[r][j] = _mm256_blendv_ps(acc[r][j], _mm256_fmadd_ps(qv, cv[j], acc[r][j]), mask);
                }
            }
        }
    }
    acc
}

/// The reductions of eight pairs at once: `v[p]` holds `s8` of pair `p`
/// (`acc[i] + acc[i + 8]`, lanes 0–7); the result is [`reduce`] of each, bit
/// for bit. Each level adds the same two values as the scalar code:
/// 128-bit halves (`s4[i] = s8[i] + s8[i + 4]`), then lanes two apart
/// (`s4[0] + s4[2]`, `s4[1] + s4[3]`), then neighbours.
#[target_feature(enable = "avx2")]
#[inline]
fn fold8(v: [__m256; 8]) -> [f32; 8] {
    // w[k] = [s4 of pair 2k | s4 of pair 2k+1].
    let mut w = [_mm256_setzero_ps(); 4];
    for (k, w) in w.iter_mut().enumerate() {
        let (a, b) = (v[2 * k], v[2 * k + 1]);
        *w = _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(a, b),
            _mm256_permute2f128_ps::<0x31>(a, b),
        );
    }
    // x[m] = [t(4m) t(4m+2) | t(4m+1) t(4m+3)], t(p) = the two level-2 sums
    // of pair p.
    let mut x = [_mm256_setzero_ps(); 2];
    for (m, x) in x.iter_mut().enumerate() {
        let (a, b) = (w[2 * m], w[2 * m + 1]);
        *x = _mm256_add_ps(_mm256_shuffle_ps::<0x44>(a, b), _mm256_shuffle_ps::<0xEE>(a, b));
    }
    // [r0 r2 r4 r6 | r1 r3 r5 r7].
    let r = _mm256_add_ps(
        _mm256_shuffle_ps::<0x88>(x[0], x[1]),
        _mm256_shuffle_ps::<0xDD>(x[0], x[1]),
    );
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` has 8 elements.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), r) };
    std::array::from_fn(|p| lanes[p / 2 + 4 * (p % 2)])
}

/// The AVX2 micro-kernel (see [`super::Micro`]): two passes of `R × C`
/// accumulators (lanes 0–7, then 8–15), then [`fold8`].
///
/// # Safety
/// AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile_avx2<const R: usize, const C: usize>(qs: [&[f32]; R], cs: [&[f32]; C]) -> [[f32; C]; R] {
    let n = cs[0].len();
    assert!(qs.iter().all(|q| q.len() == n) && cs.iter().all(|c| c.len() == n));
    let full = n - n % LANES;
    let rem = n - full;
    let tails = (rem > 0).then(|| {
        let pad = |v: &[f32]| {
            let mut t = [0f32; LANES];
            t[..rem].copy_from_slice(&v[full..]);
            t
        };
        (qs.map(pad), cs.map(pad))
    });
    let tails = tails.as_ref().map(|(q, c)| (q, c, rem));
    // SAFETY: every slice has n >= full elements (asserted above), full is a
    // multiple of 16; the caller guarantees AVX2 and FMA.
    let (lo, hi) = unsafe {
        (
            half_pass::<R, C, 0>(&qs, &cs, full, tails),
            half_pass::<R, C, 8>(&qs, &cs, full, tails),
        )
    };
    let mut s8 = [_mm256_setzero_ps(); 16];
    for r in 0..R {
        for j in 0..C {
            s8[r * C + j] = _mm256_add_ps(lo[r][j], hi[r][j]);
        }
    }
    let first = fold8(std::array::from_fn(|p| s8[p]));
    let second = if R * C > 8 {
        fold8(std::array::from_fn(|p| s8[8 + p]))
    } else {
        [0.0; 8]
    };
    let mut out = [[0f32; C]; R];
    for (r, line) in out.iter_mut().enumerate() {
        for (j, v) in line.iter_mut().enumerate() {
            let p = r * C + j;
            *v = if p < 8 { first[p] } else { second[p - 8] };
        }
    }
    out
}

/// The AVX2 + FMA micro-kernel.
struct Avx2;

impl Micro for Avx2 {
    #[inline(always)]
    unsafe fn tile<const R: usize, const C: usize>(qs: [&[f32]; R], cs: [&[f32]; C]) -> [[f32; C]; R] {
        // SAFETY: the caller guarantees AVX2 and FMA.
        unsafe { tile_avx2::<R, C>(qs, cs) }
    }

    #[inline(always)]
    unsafe fn prefetch(p: *const u8) {
        // SAFETY: a prefetch never faults (SSE, part of x86-64).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
}

/// # Safety
/// AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn gemm_avx2(qs: &[&[f32]], cols: &[(usize, &[f32])], out: &mut Out<'_>) {
    // SAFETY: the caller guarantees AVX2 and FMA.
    unsafe { super::gemm::<Avx2>(qs, cols, out, &[]) }
}

fn dot_avx2_safe(a: &[f32], b: &[f32]) -> f32 {
    assert!(has_avx2());
    assert_eq!(a.len(), b.len());
    // SAFETY: features and equal lengths checked above.
    unsafe { group_avx2::<1>([a], b)[0] }
}

fn block_avx2_safe(q: &[&[f32]], c: &[Option<&[f32]>], out: &mut Out<'_>) {
    assert!(has_avx2());
    let Some(len) = one_length(q) else { return };
    let cols = columns(c, len, |c| c.len());
    // SAFETY: features checked above (lengths are checked by the
    // micro-kernel).
    unsafe { gemm_avx2(q, &cols, out) }
}

// ------------------------------------------------------- F16C (approximate)

/// IEEE halves to f32 with `vcvtph2ps` (exact), eight at a time.
#[target_feature(enable = "avx2,f16c")]
fn convert_f16c(bits: &[u16], out: &mut [f32]) {
    assert_eq!(bits.len(), out.len());
    let n8 = bits.len() - bits.len() % 8;
    let mut i = 0;
    while i < n8 {
        // SAFETY: i + 8 <= n8 <= the length of both slices (checked above).
        unsafe {
            let h = _mm_loadu_si128(bits.as_ptr().add(i).cast());
            _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        }
        i += 8;
    }
    half::f16_to_f32_into(&bits[n8..], &mut out[n8..]);
}

/// # Safety
/// AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn approx_f16c(qs: &[&[f32]], cols: &[(usize, &ApproxVector)], out: &mut Out<'_>) {
    // SAFETY: the caller guarantees AVX2 and FMA; `convert_f16c` needs F16C
    // too, which this function has.
    unsafe { super::approx_gemm::<Avx2>(qs, cols, out, |b, o| convert_f16c(b, o)) }
}

fn block_f16c_safe(q: &[&[f32]], c: &[Option<&ApproxVector>], out: &mut Out<'_>) {
    assert!(has_f16c());
    let Some(len) = one_length(q) else { return };
    let cols = columns(c, len, |c| c.len());
    // SAFETY: features checked above (formats and lengths are checked by
    // `approx_gemm` and the micro-kernel).
    unsafe { approx_f16c(q, &cols, out) }
}

// --------------------------------------------------- AVX-512 BF16 (approximate)

/// `Q` bfloat16 queries against two candidates: each `dpbf16` adds 32
/// products into 16 f32 lanes.
///
/// `next` are candidates to come: their cache lines are prefetched as
/// these are read (the kernel waits on memory, not on arithmetic, at
/// 100,000 attendees).
///
/// # Safety
/// AVX-512 F and BF16; `c1` and every query have at least `c0.len()`
/// elements.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn pair_bf16<const Q: usize>(qs: [&[u16]; Q], c0: &[u16], c1: &[u16], next: [&[u16]; 2]) -> [[f32; Q]; 2] {
    let n = c0.len() - c0.len() % BF16_BLOCK;
    let mut a0 = [_mm512_setzero_ps(); Q];
    let mut a1 = [_mm512_setzero_ps(); Q];
    let mut i = 0;
    while i < n {
        // A prefetch never faults; `next` have the candidates' length.
        _mm_prefetch::<_MM_HINT_T0>(next[0].as_ptr().wrapping_add(i).cast());
        _mm_prefetch::<_MM_HINT_T0>(next[1].as_ptr().wrapping_add(i).cast());
        // SAFETY: i + 32 <= n <= the length of both candidates and of every
        // query (the caller's contract); the loads are unaligned, and the
        // transmutes are between 512-bit vector types.
        let (v0, v1): (__m512bh, __m512bh) = unsafe {
            (
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(c0.as_ptr().add(i).cast())),
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(c1.as_ptr().add(i).cast())),
            )
        };
        for q in 0..Q {
            // SAFETY: as above.
            let qv: __m512bh =
                unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(qs[q].as_ptr().add(i).cast())) };
            a0[q] = _mm512_dpbf16_ps(a0[q], qv, v0);
            a1[q] = _mm512_dpbf16_ps(a1[q], qv, v1);
        }
        i += BF16_BLOCK;
    }
    let mut out = [[0f32; Q]; 2];
    if Q == 8 {
        // Sixteen sums at once instead of sixteen reductions.
        let sums = reduce16(std::array::from_fn(|s| if s < 8 { a0[s] } else { a1[s - 8] }));
        out[0].copy_from_slice(&sums[..Q]);
        out[1].copy_from_slice(&sums[8..8 + Q]);
        return out;
    }
    for q in 0..Q {
        out[0][q] = _mm512_reduce_add_ps(a0[q]);
        out[1][q] = _mm512_reduce_add_ps(a1[q]);
    }
    out
}

/// The horizontal sums of sixteen vectors, `out[s]` of `v[s]`: four rounds
/// of shuffles and adds that fold them into one vector (31 instructions
/// instead of about 150 for one reduction each). Lane `4·(s mod 4) + s div
/// 4` ends up holding the sum of `v[s]`.
#[target_feature(enable = "avx512f")]
fn reduce16(v: [__m512; 16]) -> [f32; 16] {
    // 512 → 256 bits: the halves of v[2j] and v[2j+1], side by side.
    let w: [__m512; 8] = std::array::from_fn(|j| {
        let (a, b) = (v[2 * j], v[2 * j + 1]);
        _mm512_add_ps(_mm512_shuffle_f32x4::<0x44>(a, b), _mm512_shuffle_f32x4::<0xEE>(a, b))
    });
    // 256 → 128 bits: one source per 128-bit quarter.
    let x: [__m512; 4] = std::array::from_fn(|j| {
        let (a, b) = (w[2 * j], w[2 * j + 1]);
        _mm512_add_ps(_mm512_shuffle_f32x4::<0x88>(a, b), _mm512_shuffle_f32x4::<0xDD>(a, b))
    });
    // 128 → 64 bits within each quarter.
    let y: [__m512; 2] = std::array::from_fn(|j| {
        let (a, b) = (_mm512_castps_pd(x[2 * j]), _mm512_castps_pd(x[2 * j + 1]));
        _mm512_add_ps(
            _mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)),
        )
    });
    // 64 → 32 bits.
    let z = _mm512_add_ps(
        _mm512_shuffle_ps::<0b10_00_10_00>(y[0], y[1]),
        _mm512_shuffle_ps::<0b11_01_11_01>(y[0], y[1]),
    );
    let mut lanes = [0f32; 16];
    // SAFETY: `lanes` has 16 elements.
    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), z) };
    std::array::from_fn(|s| lanes[4 * (s % 4) + s / 4])
}

/// `Q` queries (rows `q0..q0 + Q` of `out`) over a tile of candidates.
///
/// # Safety
/// AVX-512 F and BF16; every query and candidate has one length.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn pass_bf16<const Q: usize>(qs: [&[u16]; Q], tile_cols: &[(usize, &[u16])], out: &mut Out<'_>, q0: usize) {
    // Prefetch this far ahead: about as long as DRAM takes to answer.
    const AHEAD: usize = 4;
    for (p, pair) in tile_cols.chunks(2).enumerate() {
        let (c1, c2) = (pair[0].1, pair.get(1).map_or(pair[0].1, |p| p.1));
        let ahead = |d: usize| tile_cols.get(2 * p + AHEAD + d).map_or(c1, |c| c.1);
        // SAFETY: the caller's contract.
        let r = unsafe { pair_bf16::<Q>(qs, c1, c2, [ahead(0), ahead(1)]) };
        for (j, (col, _)) in pair.iter().enumerate() {
            for (q, &v) in r[j].iter().enumerate() {
                out.set(q0 + q, *col, v);
            }
        }
    }
}

blocked!(
    /// The bfloat16 kernel, tiled like the others.
    ///
    /// # Safety
    /// AVX-512 F and BF16; every query has one length.
    #[target_feature(enable = "avx512f,avx512bf16")]
    block_bf16, u16, pass_bf16
);

/// The bfloat16 path: the queries rounded to bfloat16 as the candidates
/// were (the arithmetic the engine always used), then [`block_bf16`].
fn block_bf16_safe(q: &[&[f32]], c: &[Option<&ApproxVector>], out: &mut Out<'_>) {
    assert!(has_bf16());
    let Some(len) = one_length(q) else { return };
    let halves: Vec<Vec<u16>> = q.iter().map(|q| half::bf16_padded(q)).collect();
    let qs: Vec<&[u16]> = halves.iter().map(Vec::as_slice).collect();
    let cs: Vec<Option<&[u16]>> = c
        .iter()
        .map(|c| {
            c.filter(|c| c.len() == len && c.format() == half::Format::Bf16)
                .map(|c| c.bits())
        })
        .collect();
    // SAFETY: features checked above; every query has one padded length, a
    // multiple of 32, and the macro keeps the candidates of that length
    // only (those of the same original length).
    unsafe { block_bf16(&qs, &cs, out) }
}

// ------------------------------------------------------------ 8-bit (approximate)

fn has_vnni512() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vnni")
}

fn has_avxvnni() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("avxvnni")
}

/// The sums of sixteen vectors of i32 lanes, `out[s]` of `v[s]`, folded
/// together with shuffles (integer sums are exact in any order).
#[target_feature(enable = "avx512f")]
fn reduce16_epi32(v: [__m512i; 16]) -> [i32; 16] {
    let w: [__m512i; 8] = std::array::from_fn(|j| {
        let (a, b) = (v[2 * j], v[2 * j + 1]);
        _mm512_add_epi32(_mm512_shuffle_i32x4::<0x44>(a, b), _mm512_shuffle_i32x4::<0xEE>(a, b))
    });
    let x: [__m512i; 4] = std::array::from_fn(|j| {
        let (a, b) = (w[2 * j], w[2 * j + 1]);
        _mm512_add_epi32(_mm512_shuffle_i32x4::<0x88>(a, b), _mm512_shuffle_i32x4::<0xDD>(a, b))
    });
    let y: [__m512i; 2] = std::array::from_fn(|j| {
        let (a, b) = (x[2 * j], x[2 * j + 1]);
        _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b))
    });
    let z = _mm512_add_epi32(
        _mm512_castps_si512(_mm512_shuffle_ps::<0b10_00_10_00>(
            _mm512_castsi512_ps(y[0]),
            _mm512_castsi512_ps(y[1]),
        )),
        _mm512_castps_si512(_mm512_shuffle_ps::<0b11_01_11_01>(
            _mm512_castsi512_ps(y[0]),
            _mm512_castsi512_ps(y[1]),
        )),
    );
    let mut lanes = [0i32; 16];
    // SAFETY: `lanes` has 16 elements.
    unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().cast(), z) };
    std::array::from_fn(|s| lanes[4 * (s % 4) + s / 4])
}

/// Defines an 8-bit micro-kernel type `$name` over its `tile` function,
/// and `$block`, its blocked kernel, which checks the CPU's features
/// (`$has`) before it runs `int8::gemm_i8` compiled for them.
macro_rules! micro_i8 {
    ($(#[$doc:meta])* $name:ident, unsigned: $u:expr, r: $r:expr, c: $c:expr, $tile:ident,
     $features:literal, $has:ident, $block:ident, $gemm:ident) => {
        $(#[$doc])*
        struct $name;

        impl MicroI8 for $name {
            const UNSIGNED_QUERY: bool = $u;
            const R: usize = $r;
            const C: usize = $c;

            #[inline(always)]
            unsafe fn tile<const R: usize, const C: usize>(qs: [&[u8]; R], cs: [&[i8]; C]) -> [[i32; C]; R] {
                // SAFETY: the caller guarantees the instruction set.
                unsafe { $tile::<R, C>(qs, cs) }
            }

            #[inline(always)]
            unsafe fn prefetch(p: *const u8) {
                // SAFETY: SSE is part of x86-64; a prefetch never faults.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
            }
        }

        fn $block(q: &[&[f32]], c: &[Option<&ApproxVector>], out: &mut Out<'_>) {
            assert!($has());
            // SAFETY: features checked above (formats and lengths are
            // checked by the driver and the micro-kernel).
            unsafe { $gemm(q, c, out) }
        }

        /// # Safety
        /// The features of the micro-kernel.
        #[target_feature(enable = $features)]
        unsafe fn $gemm(q: &[&[f32]], c: &[Option<&ApproxVector>], out: &mut Out<'_>) {
            // SAFETY: the caller guarantees the instruction set.
            unsafe { int8::gemm_i8::<$name>(q, c, out) }
        }
    };
}

micro_i8!(
    /// `vpdpbusd` on 512 bits: 64 byte products per instruction.
    Vnni512, unsigned: true, r: 4, c: 4, tile_vnni512,
    "avx512f,avx512bw,avx512vnni", has_vnni512, block_vnni512_safe, int8_gemm_vnni512
);
/// # Safety
/// AVX-512 F, BW and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_vnni512<const R: usize, const C: usize>(qs: [&[u8]; R], cs: [&[i8]; C]) -> [[i32; C]; R] {
    let n = cs[0].len();
    assert!(n.is_multiple_of(I8_BLOCK) && qs.iter().all(|q| q.len() == n) && cs.iter().all(|c| c.len() == n));
    let mut acc = [[_mm512_setzero_si512(); C]; R];
    let mut i = 0;
    while i < n {
        // SAFETY: i + 64 <= n, the length of every slice (checked above).
        let cv: [__m512i; C] = std::array::from_fn(|c| unsafe { _mm512_loadu_si512(cs[c].as_ptr().add(i).cast()) });
        for r in 0..R {
            // SAFETY: as above.
            let qv = unsafe { _mm512_loadu_si512(qs[r].as_ptr().add(i).cast()) };
            for c in 0..C {
                acc[r][c] = _mm512_dpbusd_epi32(acc[r][c], qv, cv[c]);
            }
        }
        i += I8_BLOCK;
    }
    let mut out = [[0i32; C]; R];
    if R * C == 16 {
        let sums = reduce16_epi32(std::array::from_fn(|s| acc[s / C][s % C]));
        for (s, v) in sums.into_iter().enumerate() {
            out[s / C][s % C] = v;
        }
        return out;
    }
    for r in 0..R {
        for c in 0..C {
            out[r][c] = _mm512_reduce_add_epi32(acc[r][c]);
        }
    }
    out
}

/// The sums of eight vectors of i32 lanes, `out[s]` of `v[s]` (exact in any
/// order).
#[target_feature(enable = "avx2")]
fn fold8_epi32(v: [__m256i; 8]) -> [i32; 8] {
    let h01 = _mm256_hadd_epi32(v[0], v[1]);
    let h23 = _mm256_hadd_epi32(v[2], v[3]);
    let h45 = _mm256_hadd_epi32(v[4], v[5]);
    let h67 = _mm256_hadd_epi32(v[6], v[7]);
    let a = _mm256_hadd_epi32(h01, h23);
    let b = _mm256_hadd_epi32(h45, h67);
    let sum = _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(a, b),
        _mm256_permute2x128_si256::<0x31>(a, b),
    );
    let mut lanes = [0i32; 8];
    // SAFETY: `lanes` has 8 elements.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), sum) };
    lanes
}

/// The `R × C` (at most 16) accumulators of a 256-bit kernel folded into
/// sums.
#[target_feature(enable = "avx2")]
fn fold_all<const R: usize, const C: usize>(acc: [[__m256i; C]; R]) -> [[i32; C]; R] {
    assert!(R * C <= 16, "at most 16 accumulators");
    let flat: [__m256i; 16] = std::array::from_fn(|s| {
        if s < R * C {
            acc[s / C][s % C]
        } else {
            _mm256_setzero_si256()
        }
    });
    let lo = fold8_epi32(std::array::from_fn(|j| flat[j]));
    let hi = if R * C > 8 {
        fold8_epi32(std::array::from_fn(|j| flat[8 + j]))
    } else {
        [0; 8]
    };
    std::array::from_fn(|r| {
        std::array::from_fn(|c| {
            let s = r * C + c;
            if s < 8 {
                lo[s]
            } else {
                hi[s - 8]
            }
        })
    })
}

micro_i8!(
    /// `vpdpbusd` on 256 bits (AVX-VNNI): 32 byte products per instruction.
    AvxVnni, unsigned: true, r: 4, c: 3, tile_avxvnni,
    "avx2,avxvnni", has_avxvnni, block_avxvnni_safe, int8_gemm_avxvnni
);
/// # Safety
/// AVX2 and AVX-VNNI.
#[target_feature(enable = "avx2,avxvnni")]
unsafe fn tile_avxvnni<const R: usize, const C: usize>(qs: [&[u8]; R], cs: [&[i8]; C]) -> [[i32; C]; R] {
    let n = cs[0].len();
    assert!(n.is_multiple_of(I8_BLOCK) && qs.iter().all(|q| q.len() == n) && cs.iter().all(|c| c.len() == n));
    let mut acc = [[_mm256_setzero_si256(); C]; R];
    let mut i = 0;
    while i < n {
        // SAFETY: i + 32 <= n, the length of every slice (checked above).
        let cv: [__m256i; C] = std::array::from_fn(|c| unsafe { _mm256_loadu_si256(cs[c].as_ptr().add(i).cast()) });
        for r in 0..R {
            // SAFETY: as above.
            let qv = unsafe { _mm256_loadu_si256(qs[r].as_ptr().add(i).cast()) };
            for c in 0..C {
                acc[r][c] = _mm256_dpbusd_avx_epi32(acc[r][c], qv, cv[c]);
            }
        }
        i += 32;
    }
    fold_all(acc)
}

micro_i8!(
    /// AVX2 alone: bytes widened to 16 bits (`vpmovsxbw`) and multiplied in
    /// pairs into 32-bit lanes (`vpmaddwd`): exact, no saturation.
    Avx2I8, unsigned: false, r: 4, c: 3, tile_avx2_i8,
    "avx2", has_avx2, block_avx2_i8_safe, int8_gemm_avx2
);
/// # Safety
/// AVX2.
#[target_feature(enable = "avx2")]
unsafe fn tile_avx2_i8<const R: usize, const C: usize>(qs: [&[u8]; R], cs: [&[i8]; C]) -> [[i32; C]; R] {
    let n = cs[0].len();
    assert!(n.is_multiple_of(I8_BLOCK) && qs.iter().all(|q| q.len() == n) && cs.iter().all(|c| c.len() == n));
    let mut acc = [[_mm256_setzero_si256(); C]; R];
    let mut i = 0;
    while i < n {
        // SAFETY: i + 16 <= n, the length of every slice (checked above).
        let cv: [__m256i; C] =
            std::array::from_fn(|c| unsafe { _mm256_cvtepi8_epi16(_mm_loadu_si128(cs[c].as_ptr().add(i).cast())) });
        for r in 0..R {
            // SAFETY: as above.
            let qv = unsafe { _mm256_cvtepi8_epi16(_mm_loadu_si128(qs[r].as_ptr().add(i).cast())) };
            for c in 0..C {
                acc[r][c] = _mm256_add_epi32(acc[r][c], _mm256_madd_epi16(qv, cv[c]));
            }
        }
        i += 16;
    }
    fold_all(acc)
}

/// The exact paths of this CPU, fastest first.
pub(super) fn exact_paths() -> Vec<ExactPath> {
    let mut v = Vec::new();
    if has_avx512() {
        v.push(ExactPath {
            name: "avx512",
            dot: dot_avx512_safe,
            block: block_avx512_safe,
        });
    }
    if has_avx2() {
        v.push(ExactPath {
            name: "avx2",
            dot: dot_avx2_safe,
            block: block_avx2_safe,
        });
    }
    v
}

/// The approximate paths of this CPU, the preferred one first.
pub(super) fn approx_paths() -> Vec<ApproxPath> {
    let mut v = Vec::new();
    if has_vnni512() {
        v.push(ApproxPath {
            name: "i8-avx512",
            format: half::Format::I8,
            block: block_vnni512_safe,
        });
    }
    if has_avxvnni() {
        v.push(ApproxPath {
            name: "i8-avxvnni",
            format: half::Format::I8,
            block: block_avxvnni_safe,
        });
    }
    if has_avx2() {
        v.push(ApproxPath {
            name: "i8-avx2",
            format: half::Format::I8,
            block: block_avx2_i8_safe,
        });
    }
    if has_bf16() {
        v.push(ApproxPath {
            name: "bf16",
            format: half::Format::Bf16,
            block: block_bf16_safe,
        });
    }
    if has_f16c() {
        v.push(ApproxPath {
            name: "f16c",
            format: half::Format::F16,
            block: block_f16c_safe,
        });
    }
    v
}

/// `x` rounded to half by the hardware (`vcvtps2ph`, round to nearest even),
/// to check the software rounding against; `None` without F16C.
#[cfg(test)]
pub(super) fn f16_bits_hardware(x: &[f32; 8]) -> Option<[u16; 8]> {
    if !has_f16c() {
        return None;
    }
    #[target_feature(enable = "avx,f16c")]
    fn convert(x: &[f32; 8]) -> [u16; 8] {
        let mut out = [0u16; 8];
        // SAFETY: both arrays have 8 elements.
        unsafe {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(x.as_ptr()));
            _mm_storeu_si128(out.as_mut_ptr().cast(), h);
        }
        out
    }
    // SAFETY: F16C (and AVX, which it implies here) checked above.
    Some(unsafe { convert(x) })
}
