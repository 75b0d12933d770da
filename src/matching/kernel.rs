//! The similarity kernel: dot products of unit vectors, one at a time or many
//! at once, with the same bits either way.
//!
//! Every dot product in the crate goes through this module, and every path
//! computes it the same way: 16 lanes, lane `l` accumulating the products of
//! the elements `i ≡ l (mod 16)` in index order with a fused multiply-add,
//! then a fixed pairwise reduction of the lanes. So
//!
//! - `dot(a, b) == dot(b, a)` bit for bit (`fma(x, y, s) == fma(y, x, s)`),
//!   which makes every score symmetric;
//! - the blocked kernel ([`dots`]) that scores a batch against the whole
//!   event returns exactly what [`dot`] returns pair by pair, so a list
//!   computed in a batch and one recomputed alone agree to the last bit;
//! - the result does not depend on the CPU: the AVX-512 and AVX2 paths and the
//!   portable fallback perform the same operations in the same order (a fused
//!   multiply-add rounds once on every machine), so workers on different
//!   hardware write the same scores.
//!
//! The blocked kernel streams each candidate vector once per group of four
//! queries, keeping the accumulators in registers; the batch is split across
//! the available cores by candidate range.

use std::sync::OnceLock;

/// Accumulator lanes (one AVX-512 register, two AVX2 registers).
const LANES: usize = 16;
/// Queries scored per pass over a candidate.
const GROUP: usize = 4;

#[inline(always)]
fn reduce(acc: &[f32; LANES]) -> f32 {
    let mut s8 = [0f32; 8];
    for i in 0..8 {
        s8[i] = acc[i] + acc[i + 8];
    }
    let mut s4 = [0f32; 4];
    for i in 0..4 {
        s4[i] = s8[i] + s8[i + 4];
    }
    (s4[0] + s4[2]) + (s4[1] + s4[3])
}

/// `Q` dot products of `qs[j]` with `c`, all of length `c.len()`.
#[inline(always)]
fn dot_group<const Q: usize>(qs: [&[f32]; Q], c: &[f32]) -> [f32; Q] {
    let n = c.len();
    let qs = qs.map(|q| &q[..n]);
    let mut acc = [[0f32; LANES]; Q];
    let full = n - n % LANES;
    let mut i = 0;
    while i < full {
        let cc = &c[i..i + LANES];
        for q in 0..Q {
            let qq = &qs[q][i..i + LANES];
            for l in 0..LANES {
                acc[q][l] = qq[l].mul_add(cc[l], acc[q][l]);
            }
        }
        i += LANES;
    }
    for (l, j) in (full..n).enumerate() {
        for q in 0..Q {
            acc[q][l] = qs[q][j].mul_add(c[j], acc[q][l]);
        }
    }
    let mut out = [0f32; Q];
    for q in 0..Q {
        out[q] = reduce(&acc[q]);
    }
    out
}

/// Scores every query against the candidates `cands[k]` (`None` = no
/// comparable vector; `out` keeps its value there). `out` is row-major with
/// row length `stride`: `out[q * stride + k]`. Every query and candidate has
/// the same length. Candidates are taken in tiles that stay in the L2 cache
/// while every group of queries passes over them.
#[inline(always)]
fn block(queries: &[&[f32]], cands: &[Option<&[f32]>], out: &mut [f32], stride: usize) {
    block_with(queries, cands, out, stride, dot_group::<GROUP>, dot_group::<1>)
}

/// [`block`] with the group functions of one instruction set.
#[inline(always)]
fn block_with(
    queries: &[&[f32]],
    cands: &[Option<&[f32]>],
    out: &mut [f32],
    stride: usize,
    group: impl Fn([&[f32]; GROUP], &[f32]) -> [f32; GROUP],
    single: impl Fn([&[f32]; 1], &[f32]) -> [f32; 1],
) {
    let len = queries.first().map_or(1, |q| q.len()).max(1);
    let tile = (TILE_BYTES / (len * 4)).clamp(8, 4096);
    for t0 in (0..cands.len()).step_by(tile) {
        let t1 = (t0 + tile).min(cands.len());
        let mut q0 = 0;
        while q0 < queries.len() {
            let rest = queries.len() - q0;
            for (k, c) in cands[t0..t1].iter().enumerate() {
                let Some(c) = c else { continue };
                if c.len() != len {
                    continue;
                }
                let col = t0 + k;
                if rest >= GROUP {
                    let r = group([queries[q0], queries[q0 + 1], queries[q0 + 2], queries[q0 + 3]], c);
                    for (q, v) in r.into_iter().enumerate() {
                        out[(q0 + q) * stride + col] = v;
                    }
                } else {
                    for q in 0..rest {
                        out[(q0 + q) * stride + col] = single([queries[q0 + q]], c)[0];
                    }
                }
            }
            q0 += GROUP.min(rest);
        }
    }
}

/// Bytes of candidate vectors per tile (half a typical L2 cache).
const TILE_BYTES: usize = 256 * 1024;

type DotFn = fn(&[f32], &[f32]) -> f32;
/// A blocked kernel over vectors of element type `T` (see [`block`]).
type BlockOf<T> = fn(&[&[T]], &[Option<&[T]>], &mut [f32], usize);
type BlockFn = BlockOf<f32>;

fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    dot_group::<1>([a], b)[0]
}

fn block_portable(q: &[&[f32]], c: &[Option<&[f32]>], out: &mut [f32], stride: usize) {
    block(q, c, out, stride)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The same arithmetic as [`super::dot_group`], written with intrinsics:
    //! one `fmadd` per 16 (AVX-512) or 8 (AVX2) lanes, accumulators kept in
    //! registers, the tail and the reduction done by the shared scalar code.

    use super::*;
    use std::arch::x86_64::*;

    /// Defines a blocked kernel from a `pass` function: candidates of the
    /// queries' length, taken in tiles that stay in the L2 cache while every
    /// group of queries (eight, four, then one at a time) passes over them.
    macro_rules! blocked {
        ($(#[$attr:meta])* $name:ident, $t:ty, $pass:ident, $min_len:expr) => {
            $(#[$attr])*
            unsafe fn $name(queries: &[&[$t]], cands: &[Option<&[$t]>], out: &mut [f32], stride: usize) {
                let len = queries.first().map_or($min_len, |q| q.len()).max($min_len);
                let tile = (TILE_BYTES / (len * std::mem::size_of::<$t>())).clamp(8, 4096);
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
                            $pass(qs, tile_cols, out, stride, q0);
                            q0 += 2 * GROUP;
                        } else if rest >= GROUP {
                            let qs: [&[$t]; GROUP] = std::array::from_fn(|q| queries[q0 + q]);
                            $pass(qs, tile_cols, out, stride, q0);
                            q0 += GROUP;
                        } else {
                            $pass([queries[q0]], tile_cols, out, stride, q0);
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

    #[target_feature(enable = "avx512f,fma")]
    unsafe fn group_avx512<const Q: usize>(qs: [&[f32]; Q], c: &[f32]) -> [f32; Q] {
        let n = c.len();
        let full = n - n % LANES;
        let mut acc = [_mm512_setzero_ps(); Q];
        let mut i = 0;
        while i < full {
            // SAFETY: i + 16 <= full <= n, and every query has length >= n.
            let cv = _mm512_loadu_ps(c.as_ptr().add(i));
            for q in 0..Q {
                let qv = _mm512_loadu_ps(qs[q].as_ptr().add(i));
                acc[q] = _mm512_fmadd_ps(qv, cv, acc[q]);
            }
            i += LANES;
        }
        let mut out = [0f32; Q];
        for q in 0..Q {
            let mut lanes = [0f32; LANES];
            _mm512_storeu_ps(lanes.as_mut_ptr(), acc[q]);
            out[q] = finish(lanes, qs[q], c, full);
        }
        out
    }

    /// `Q` queries against two candidates at once: 2·Q accumulators, so
    /// each loaded query chunk feeds two multiply-adds.
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn pair_avx512<const Q: usize>(qs: [&[f32]; Q], c0: &[f32], c1: &[f32]) -> [[f32; Q]; 2] {
        let n = c0.len();
        let full = n - n % LANES;
        let mut a0 = [_mm512_setzero_ps(); Q];
        let mut a1 = [_mm512_setzero_ps(); Q];
        let mut i = 0;
        while i < full {
            // SAFETY: i + 16 <= full <= n; both candidates and every query
            // have length >= n.
            let v0 = _mm512_loadu_ps(c0.as_ptr().add(i));
            let v1 = _mm512_loadu_ps(c1.as_ptr().add(i));
            for q in 0..Q {
                let qv = _mm512_loadu_ps(qs[q].as_ptr().add(i));
                a0[q] = _mm512_fmadd_ps(qv, v0, a0[q]);
                a1[q] = _mm512_fmadd_ps(qv, v1, a1[q]);
            }
            i += LANES;
        }
        let mut out = [[0f32; Q]; 2];
        for q in 0..Q {
            let mut lanes = [0f32; LANES];
            _mm512_storeu_ps(lanes.as_mut_ptr(), a0[q]);
            out[0][q] = finish(lanes, qs[q], c0, full);
            _mm512_storeu_ps(lanes.as_mut_ptr(), a1[q]);
            out[1][q] = finish(lanes, qs[q], c1, full);
        }
        out
    }

    blocked!(
        /// The blocked kernel on AVX-512: tiles of candidates, queries in
        /// groups of eight, four, then one.
        #[target_feature(enable = "avx512f,fma")]
        block_avx512, f32, pass_avx512, 1
    );

    /// `Q` queries (rows `q0..q0 + Q` of `out`) over a tile of candidates,
    /// two candidates at a time.
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn pass_avx512<const Q: usize>(
        qs: [&[f32]; Q],
        tile_cols: &[(usize, &[f32])],
        out: &mut [f32],
        stride: usize,
        q0: usize,
    ) {
        let mut pairs = tile_cols.chunks_exact(2);
        for pair in &mut pairs {
            let r = pair_avx512::<Q>(qs, pair[0].1, pair[1].1);
            for (j, (col, _)) in pair.iter().enumerate() {
                for q in 0..Q {
                    out[(q0 + q) * stride + col] = r[j][q];
                }
            }
        }
        for (col, c) in pairs.remainder() {
            let r = group_avx512::<Q>(qs, c);
            for q in 0..Q {
                out[(q0 + q) * stride + col] = r[q];
            }
        }
    }

    #[target_feature(enable = "avx512f,fma")]
    unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        group_avx512::<1>([a], b)[0]
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn group_avx2<const Q: usize>(qs: [&[f32]; Q], c: &[f32]) -> [f32; Q] {
        let n = c.len();
        let full = n - n % LANES;
        let mut lo = [_mm256_setzero_ps(); Q];
        let mut hi = [_mm256_setzero_ps(); Q];
        let mut i = 0;
        while i < full {
            // SAFETY: i + 16 <= full <= n, and every query has length >= n.
            let c0 = _mm256_loadu_ps(c.as_ptr().add(i));
            let c1 = _mm256_loadu_ps(c.as_ptr().add(i + 8));
            for q in 0..Q {
                let p = qs[q].as_ptr().add(i);
                lo[q] = _mm256_fmadd_ps(_mm256_loadu_ps(p), c0, lo[q]);
                hi[q] = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(8)), c1, hi[q]);
            }
            i += LANES;
        }
        let mut out = [0f32; Q];
        for q in 0..Q {
            let mut lanes = [0f32; LANES];
            _mm256_storeu_ps(lanes.as_mut_ptr(), lo[q]);
            _mm256_storeu_ps(lanes.as_mut_ptr().add(8), hi[q]);
            out[q] = finish(lanes, qs[q], c, full);
        }
        out
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn block_avx2(queries: &[&[f32]], cands: &[Option<&[f32]>], out: &mut [f32], stride: usize) {
        // SAFETY: the closures run inside this function, whose features
        // `select` checked.
        block_with(
            queries,
            cands,
            out,
            stride,
            |qs, c| unsafe { group_avx2::<GROUP>(qs, c) },
            |qs, c| unsafe { group_avx2::<1>(qs, c) },
        )
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        group_avx2::<1>([a], b)[0]
    }

    // SAFETY (all four wrappers): they are only selected by `select` after
    // `is_x86_feature_detected!` confirmed the features they enable. Queries
    // and candidates have equal lengths (checked by the callers).
    fn dot_avx512_safe(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        unsafe { dot_avx512(a, b) }
    }
    fn block_avx512_safe(q: &[&[f32]], c: &[Option<&[f32]>], out: &mut [f32], stride: usize) {
        assert!(q.iter().all(|x| x.len() == q[0].len()));
        unsafe { block_avx512(q, c, out, stride) }
    }
    fn dot_avx2_safe(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        unsafe { dot_avx2(a, b) }
    }
    fn block_avx2_safe(q: &[&[f32]], c: &[Option<&[f32]>], out: &mut [f32], stride: usize) {
        assert!(q.iter().all(|x| x.len() == q[0].len()));
        unsafe { block_avx2(q, c, out, stride) }
    }

    /// `Q` bfloat16 queries against two candidates: each `dpbf16` adds 32
    /// products into 16 f32 lanes.
    ///
    /// `next` are candidates to come: their cache lines are prefetched as
    /// these are read (the kernel waits on memory, not on arithmetic, at
    /// 100,000 attendees).
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
            // SAFETY: i + 32 <= n <= the length of both candidates and of
            // every query (all padded to one length); the loads are unaligned.
            let v0: __m512bh = std::mem::transmute(_mm512_loadu_si512(c0.as_ptr().add(i).cast()));
            let v1: __m512bh = std::mem::transmute(_mm512_loadu_si512(c1.as_ptr().add(i).cast()));
            for q in 0..Q {
                let qv: __m512bh = std::mem::transmute(_mm512_loadu_si512(qs[q].as_ptr().add(i).cast()));
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

    /// The horizontal sums of sixteen vectors, `out[s]` of `v[s]`: four
    /// rounds of shuffles and adds that fold them into one vector (31
    /// instructions instead of about 150 for one reduction each). Lane
    /// `4·(s mod 4) + s div 4` ends up holding the sum of `v[s]`.
    #[target_feature(enable = "avx512f")]
    unsafe fn reduce16(v: [__m512; 16]) -> [f32; 16] {
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
        _mm512_storeu_ps(lanes.as_mut_ptr(), z);
        std::array::from_fn(|s| lanes[4 * (s % 4) + s / 4])
    }

    /// `Q` queries (rows `q0..q0 + Q` of `out`) over a tile of candidates.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn pass_bf16<const Q: usize>(
        qs: [&[u16]; Q],
        tile_cols: &[(usize, &[u16])],
        out: &mut [f32],
        stride: usize,
        q0: usize,
    ) {
        // Prefetch this far ahead: about as long as DRAM takes to answer.
        const AHEAD: usize = 4;
        for (p, pair) in tile_cols.chunks(2).enumerate() {
            let (c1, c2) = (pair[0].1, pair.get(1).map_or(pair[0].1, |p| p.1));
            let ahead = |d: usize| tile_cols.get(2 * p + AHEAD + d).map_or(c1, |c| c.1);
            let r = pair_bf16::<Q>(qs, c1, c2, [ahead(0), ahead(1)]);
            for (j, (col, _)) in pair.iter().enumerate() {
                for q in 0..Q {
                    out[(q0 + q) * stride + col] = r[j][q];
                }
            }
        }
    }

    blocked!(
        /// The bfloat16 kernel (see [`super::dots_bf16`]), tiled like the
        /// others.
        #[target_feature(enable = "avx512f,avx512bf16")]
        block_bf16, u16, pass_bf16, BF16_BLOCK
    );

    // SAFETY: only called by `dots_bf16` after `bf16_available` confirmed
    // AVX-512 F and BF16; every query has one length, a multiple of 32.
    pub(super) fn block_bf16_safe(q: &[&[u16]], c: &[Option<&[u16]>], out: &mut [f32], stride: usize) {
        assert!(q
            .iter()
            .all(|x| x.len() == q[0].len() && x.len().is_multiple_of(BF16_BLOCK)));
        unsafe { block_bf16(q, c, out, stride) }
    }

    pub(super) fn select() -> Option<(DotFn, BlockFn, &'static str)> {
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma") {
            return Some((dot_avx512_safe, block_avx512_safe, "avx512"));
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Some((dot_avx2_safe, block_avx2_safe, "avx2"));
        }
        None
    }

    #[cfg(test)]
    pub(super) fn blocks() -> Vec<(BlockFn, &'static str)> {
        let mut v: Vec<(BlockFn, &'static str)> = Vec::new();
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma") {
            v.push((block_avx512_safe, "avx512"));
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            v.push((block_avx2_safe, "avx2"));
        }
        v
    }

    #[cfg(test)]
    pub(super) fn all() -> Vec<(DotFn, &'static str)> {
        let mut v: Vec<(DotFn, &'static str)> = Vec::new();
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma") {
            v.push((dot_avx512_safe, "avx512"));
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            v.push((dot_avx2_safe, "avx2"));
        }
        v
    }
}

/// `MATCHMAKER_PORTABLE_KERNEL` set: no SIMD path at all (for comparisons;
/// the scores are the same bits).
fn portable_forced() -> bool {
    std::env::var_os("MATCHMAKER_PORTABLE_KERNEL").is_some()
}

fn kernels() -> &'static (DotFn, BlockFn, &'static str) {
    static K: OnceLock<(DotFn, BlockFn, &'static str)> = OnceLock::new();
    K.get_or_init(|| {
        if portable_forced() {
            return (dot_portable, block_portable, "portable");
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(k) = x86::select() {
            return k;
        }
        (dot_portable, block_portable, "portable")
    })
}

/// Which implementation this CPU uses (`avx512`, `avx2` or `portable`).
pub fn implementation() -> &'static str {
    kernels().2
}

/// The dot product of two vectors of equal length (see the module docs for
/// the exact arithmetic). Extra elements of the longer one are ignored.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    (kernels().0)(&a[..n], &b[..n])
}

/// How many worker threads a kernel call may use.
fn threads() -> usize {
    static T: OnceLock<usize> = OnceLock::new();
    *T.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8))
}

/// Below this many multiply-adds a call stays on the calling thread.
const PARALLEL_MIN_WORK: usize = 2_000_000;

/// Dot products of every query with every candidate: `out[q * n + k]` is
/// `dot(queries[q], cands[k])` where `cands[k]` is `Some` and has the
/// query's length, and stays as it was otherwise. Equal to calling [`dot`]
/// pair by pair, bit for bit. Queries may differ in length; each is compared
/// with the candidates of its own length only.
pub fn dots(queries: &[&[f32]], cands: &[Option<&[f32]>], out: &mut [f32]) {
    let n = cands.len();
    assert_eq!(out.len(), queries.len() * n, "output must be queries × candidates");
    // Group queries by length: the kernel wants equal lengths.
    let mut lengths: Vec<usize> = queries.iter().map(|q| q.len()).collect();
    lengths.sort_unstable();
    lengths.dedup();
    for len in lengths {
        let idx: Vec<usize> = (0..queries.len()).filter(|&q| queries[q].len() == len).collect();
        let qs: Vec<&[f32]> = idx.iter().map(|&q| queries[q]).collect();
        let cs: Vec<Option<&[f32]>> = cands.iter().map(|c| c.filter(|c| c.len() == len)).collect();
        if idx.len() == queries.len() {
            // One length (the usual case): the rows are the callers' rows.
            run_parallel(&qs, &cs, out, len);
            return;
        }
        // The kernel writes rows 0..qs.len(); map them to the callers' rows.
        let mut tmp = vec![f32::NAN; qs.len() * n];
        run_parallel(&qs, &cs, &mut tmp, len);
        for (row, &q) in idx.iter().enumerate() {
            for k in 0..n {
                if cs[k].is_some() {
                    out[q * n + k] = tmp[row * n + k];
                }
            }
        }
    }
}

fn run_parallel(qs: &[&[f32]], cs: &[Option<&[f32]>], out: &mut [f32], len: usize) {
    run_parallel_with(qs, cs, out, len, kernels().1)
}

/// Runs `block_fn` over the candidates, split by candidate range across the
/// cores when the work is large enough.
fn run_parallel_with<T: Sync>(qs: &[&[T]], cs: &[Option<&[T]>], out: &mut [f32], len: usize, block_fn: BlockOf<T>) {
    let n = cs.len();
    let work = qs.len() * n * len.max(1);
    let t = threads().min(n.max(1));
    if t <= 1 || work < PARALLEL_MIN_WORK {
        block_fn(qs, cs, out, n);
        return;
    }
    // Split by candidate range; each thread works on a private copy of its
    // columns (the rows of `out` interleave the ranges), so columns it does
    // not compute keep their values, as the single-threaded kernel leaves
    // them. Copying whole row segments in and out is two memcpys.
    let chunk = n.div_ceil(t);
    let ranges: Vec<(usize, usize)> = (0..t).map(|i| ((i * chunk).min(n), ((i + 1) * chunk).min(n))).collect();
    let copies: Vec<Vec<f32>> = ranges
        .iter()
        .map(|&(lo, hi)| {
            let mut part = Vec::with_capacity(qs.len() * (hi - lo));
            for row in out.chunks(n) {
                part.extend_from_slice(&row[lo..hi]);
            }
            part
        })
        .collect();
    let parts: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = ranges
            .iter()
            .zip(copies)
            .map(|(&(lo, hi), mut part)| {
                s.spawn(move || {
                    block_fn(qs, &cs[lo..hi], &mut part, hi - lo);
                    part
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    for (&(lo, hi), part) in ranges.iter().zip(parts) {
        if hi > lo {
            for (row, seg) in out.chunks_mut(n).zip(part.chunks(hi - lo)) {
                row[lo..hi].copy_from_slice(seg);
            }
        }
    }
}

/// Elements per bfloat16 block: vectors converted by [`to_bf16`] are padded
/// with zeros to a multiple of this.
pub const BF16_BLOCK: usize = 32;

/// How far an approximate dot product of [`dots_bf16`] may be from the exact
/// one of [`dot`], relative to the product of the two vectors' norms.
///
/// Rounding each element to bfloat16 (8 significant bits, round to nearest
/// even) moves it by at most 2⁻⁹ of itself, so each product moves by at most
/// (2·2⁻⁹ + 2⁻¹⁸)·|qⱼxⱼ|, and the sum by at most 0.003910·Σ|qⱼxⱼ| ≤
/// 0.003910·‖q‖·‖x‖ (Cauchy–Schwarz). The products of two bfloat16 values are
/// exact in f32; the two f32 summations (here, and in [`dot`]), at most 28
/// additions deep per lane, add at most 2·28·2⁻²⁴ ≈ 0.0000034 of Σ|qⱼxⱼ|.
/// Rounded up, with room to spare.
pub const BF16_REL_ERROR: f32 = 0.00395;
/// Plus this, absolute, for values flushed to zero (below 10⁻³⁸).
pub const BF16_ABS_ERROR: f32 = 1e-6;

/// Whether [`dots_bf16`] runs on this CPU (AVX-512 BF16).
pub fn bf16_available() -> bool {
    static A: OnceLock<bool> = OnceLock::new();
    *A.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if !portable_forced() {
            return std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16");
        }
        false
    })
}

/// `v` in bfloat16 (round to nearest even), zero-padded to a multiple of
/// [`BF16_BLOCK`].
pub fn to_bf16(v: &[f32]) -> Vec<u16> {
    let mut out: Vec<u16> = v
        .iter()
        .map(|x| {
            let b = x.to_bits();
            if x.is_nan() {
                return 0x7FC0;
            }
            ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
        })
        .collect();
    out.resize(v.len().div_ceil(BF16_BLOCK) * BF16_BLOCK, 0);
    out
}

/// Approximate dot products, within [`BF16_REL_ERROR`] of [`dots`]: `out[q *
/// n + k]` for every `Some` candidate, untouched elsewhere. Queries and
/// candidates come from [`to_bf16`] of vectors of one length. `false`,
/// touching nothing, when the CPU lacks AVX-512 BF16.
pub fn dots_bf16(queries: &[&[u16]], cands: &[Option<&[u16]>], out: &mut [f32]) -> bool {
    assert_eq!(
        out.len(),
        queries.len() * cands.len(),
        "output must be queries × candidates"
    );
    if !bf16_available() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let len = queries.first().map_or(0, |q| q.len());
        assert!(queries.iter().all(|q| q.len() == len && len.is_multiple_of(BF16_BLOCK)));
        run_parallel_with(queries, cands, out, len / 2, x86::block_bf16_safe);
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn vec_of(rng: &mut impl Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
    }

    /// The bfloat16 kernel stays within its documented error of the exact
    /// dot products, pads any length, and leaves the other columns alone.
    #[test]
    fn bf16_dots_are_within_their_bound() {
        if !bf16_available() {
            eprintln!("skipped: no AVX-512 BF16 on this CPU");
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for len in [1, 31, 32, 100, 384] {
            let unit = |rng: &mut rand::rngs::StdRng| {
                let v = vec_of(rng, len);
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
                v.iter().map(|x| x / norm).collect::<Vec<f32>>()
            };
            let qs: Vec<Vec<f32>> = (0..11).map(|_| unit(&mut rng)).collect();
            let cs: Vec<Vec<f32>> = (0..600).map(|_| unit(&mut rng)).collect();
            let qh: Vec<Vec<u16>> = qs.iter().map(|q| to_bf16(q)).collect();
            let ch: Vec<Vec<u16>> = cs.iter().map(|c| to_bf16(c)).collect();
            let q_refs: Vec<&[u16]> = qh.iter().map(|q| &q[..]).collect();
            let c_refs: Vec<Option<&[u16]>> = ch
                .iter()
                .enumerate()
                .map(|(k, c)| (k % 7 != 3).then_some(&c[..]))
                .collect();
            let mut out = vec![-9.0f32; qs.len() * cs.len()];
            assert!(dots_bf16(&q_refs, &c_refs, &mut out));
            for (q, qv) in qs.iter().enumerate() {
                for (k, cv) in cs.iter().enumerate() {
                    let got = out[q * cs.len() + k];
                    if k % 7 == 3 {
                        assert_eq!(got, -9.0, "untouched column");
                        continue;
                    }
                    let exact = dot(qv, cv);
                    assert!(
                        (got - exact).abs() <= BF16_REL_ERROR * 1.0001 + BF16_ABS_ERROR,
                        "len {len} q {q} k {k}: {got} vs {exact}"
                    );
                }
            }
        }
    }

    #[test]
    fn blocked_kernel_equals_pairwise_dot_bit_for_bit() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for &len in &[1usize, 3, 16, 17, 31, 384, 385] {
            let queries: Vec<Vec<f32>> = (0..13).map(|_| vec_of(&mut rng, len)).collect();
            let mut cands: Vec<Option<Vec<f32>>> = (0..23).map(|_| Some(vec_of(&mut rng, len))).collect();
            cands[5] = None;
            cands[9] = Some(vec_of(&mut rng, len + 1)); // other length: skipped
            let qs: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
            let cs: Vec<Option<&[f32]>> = cands.iter().map(|c| c.as_deref()).collect();
            let mut out = vec![-7.0; qs.len() * cs.len()];
            dots(&qs, &cs, &mut out);
            for (q, qv) in queries.iter().enumerate() {
                for (k, c) in cands.iter().enumerate() {
                    let got = out[q * cs.len() + k];
                    match c {
                        Some(c) if c.len() == len => {
                            assert_eq!(got.to_bits(), dot(qv, c).to_bits(), "len {len} q {q} k {k}");
                            assert_eq!(dot(qv, c).to_bits(), dot(c, qv).to_bits());
                        }
                        _ => assert_eq!(got, -7.0),
                    }
                }
            }
        }
    }

    #[test]
    fn parallel_split_equals_single_thread() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let len = 64;
        let queries: Vec<Vec<f32>> = (0..9).map(|_| vec_of(&mut rng, len)).collect();
        // Enough work to cross PARALLEL_MIN_WORK.
        let cands: Vec<Option<Vec<f32>>> = (0..5_000).map(|_| Some(vec_of(&mut rng, len))).collect();
        let qs: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
        let cs: Vec<Option<&[f32]>> = cands.iter().map(|c| c.as_deref()).collect();
        let mut out = vec![0.0; qs.len() * cs.len()];
        dots(&qs, &cs, &mut out);
        for (q, qv) in queries.iter().enumerate() {
            for (k, c) in cands.iter().enumerate() {
                let c = c.as_deref().unwrap_or(&[]);
                assert_eq!(out[q * cs.len() + k].to_bits(), dot(qv, c).to_bits());
            }
        }
    }

    #[test]
    fn every_blocked_kernel_gives_the_same_bits() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for len in [7usize, 16, 33, 384] {
            let queries: Vec<Vec<f32>> = (0..6).map(|_| vec_of(&mut rng, len)).collect();
            let cands: Vec<Option<Vec<f32>>> = (0..41).map(|k| (k % 9 != 4).then(|| vec_of(&mut rng, len))).collect();
            let qs: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
            let cs: Vec<Option<&[f32]>> = cands.iter().map(|c| c.as_deref()).collect();
            let mut want = vec![0.0; qs.len() * cs.len()];
            block_portable(&qs, &cs, &mut want, cs.len());
            #[cfg(target_arch = "x86_64")]
            for (f, name) in x86::blocks() {
                let mut got = vec![0.0; qs.len() * cs.len()];
                f(&qs, &cs, &mut got, cs.len());
                let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{name} len {len}");
            }
        }
    }

    #[test]
    fn every_implementation_gives_the_same_bits() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for len in [5usize, 16, 100, 384] {
            let a = vec_of(&mut rng, len);
            let b = vec_of(&mut rng, len);
            assert_eq!(dot(&a, &b).to_bits(), dot_portable(&a, &b).to_bits());
            #[cfg(target_arch = "x86_64")]
            for (f, name) in x86::all() {
                assert_eq!(f(&a, &b).to_bits(), dot_portable(&a, &b).to_bits(), "{name} len {len}");
            }
        }
    }
}
