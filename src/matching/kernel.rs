//! The similarity kernel: dot products of unit vectors, one at a time or many
//! at once, with the same bits either way, and an approximate first pass from
//! 16-bit copies with a proven error bound.
//!
//! # The reference order
//!
//! Every dot product in the crate goes through this module, and every exact
//! path computes it the same way: 16 lanes, lane `l` accumulating the
//! products of the elements `i ≡ l (mod 16)` of the full 16-element chunks in
//! index order with a fused multiply-add, then the tail elements
//! `full..n` folded into lanes `0..n - full` (one more multiply-add each),
//! then a fixed pairwise reduction of the lanes ([`reduce`]):
//! `s8[i] = acc[i] + acc[i + 8]`, `s4[i] = s8[i] + s8[i + 4]`,
//! `(s4[0] + s4[2]) + (s4[1] + s4[3])`. So
//!
//! - `dot(a, b) == dot(b, a)` bit for bit (`fma(x, y, s) == fma(y, x, s)`,
//!   `x + y == y + x`), which makes every score symmetric;
//! - the blocked kernels ([`dots`]) that score a batch against the whole
//!   event return exactly what [`dot`] returns pair by pair, so a list
//!   computed in a batch and one recomputed alone agree to the last bit;
//! - the result does not depend on the CPU: the AVX-512, AVX2 and NEON paths
//!   and the portable fallback perform the same operations on the same
//!   values in the same order (a fused multiply-add rounds once on every
//!   machine), so workers on different hardware write the same scores.
//!
//! A lane's value depends only on its own elements, so a kernel may compute
//! the lanes in any grouping: the AVX2 kernel computes lanes 0–7 of a pair
//! in one pass over the vectors and lanes 8–15 in a second pass (one `ymm`
//! register per pair and pass instead of two), the NEON kernel lanes in four
//! passes of four. Lanes a tail does not reach are left exactly as they are
//! (a blend, not a multiply-add of zeros, which would turn a `-0.0` lane
//! into `+0.0`). The reduction is done for eight pairs at once with
//! shuffles that add exactly the same two values at each level as
//! [`reduce`] does (see `x86::fold8`).
//!
//! # The GEMM-class kernel
//!
//! The batch is a matrix product: 20 queries (a worker's batch) against the
//! event's N attendees, or more. The micro-kernel ([`Micro`]) scores 4
//! queries × 3 candidates at once: per pass, 12 accumulators, 3 candidate
//! registers and one query register, so each loaded query chunk feeds three
//! multiply-adds and each candidate chunk four (16 `ymm` registers on AVX2).
//! [`gemm`] blocks it for the caches: queries in tiles that stay in L2
//! ([`query_tile`]), candidates in blocks that stay in L1 ([`cand_block`]);
//! for every block, every group of four queries of the tile passes over it,
//! while the next block is prefetched, a share before each group. So each
//! candidate comes from memory once per query tile (once per call for a
//! worker's batch), and the memory traffic overlaps the arithmetic of the
//! whole tile instead of stalling the first group. The batch is split across
//! the cores by candidate range ([`run_parallel_with`], one helper for every
//! kernel).
//!
//! # The approximate first pass
//!
//! [`dots_approx`] scores from 8- or 16-bit copies ([`to_approx`]), for the
//! worker's first pass over a large cosine-v1 event, after which
//! `matching::plan_bounded` recomputes exactly every score that could
//! matter, so approximate scores are never stored. It is within
//! [`approx_error`] of [`dot`]. Three formats, one API:
//!
//! - **8 bits with a per-vector scale** (the default everywhere: `vpdpbusd`
//!   with AVX-512 VNNI or AVX-VNNI, `vpmaddwd` with AVX2, plain Rust
//!   otherwise): a quarter of the exact vectors' bytes, integer sums that
//!   are exact, so every path gives the same bits; the bound uses each
//!   vector's measured rounding error and is derived in [`int8`].
//! - **IEEE half** (F16C on AVX2 x86, NEON on aarch64): each candidate is
//!   stored as `x / s` in half precision, with `s` a power of two that puts
//!   its largest element in `[1/2, 1)`. A tile of candidates is converted back
//!   to f32 (exactly: every half is an f32) into a buffer that stays in L2,
//!   the exact kernel scores the f32 queries against it in the reference
//!   order, and each score is multiplied by `s`. The result is therefore the
//!   same on every CPU too. The bound is derived in [`half`].
//! - **bfloat16** (AVX-512 BF16 only): `vdpbf16ps`, queries rounded to
//!   bfloat16 as well. Unchanged arithmetic; its bound is documented at
//!   `half::BF16_REL_ERROR`.
//!
//! The 16-bit paths stay for comparison (`MATCHMAKER_APPROX_KERNEL`).
//!
//! # Soundness
//!
//! Every `unsafe` block carries a `SAFETY:` comment (the module denies
//! `unsafe_op_in_unsafe_fn` and warns on `clippy::undocumented_unsafe_blocks`).
//! The invariants the intrinsics rely on are checked where they are used: a
//! micro-kernel asserts that its slices have one length before its
//! unchecked loads; a safe wrapper of an instruction-set path checks the CPU
//! features itself; every public entry handles empty vectors, zero
//! queries, zero candidates and mismatched lengths (skipped, like `None`).
//! Under Miri only the portable paths run.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::marker::PhantomData;
use std::sync::OnceLock;

mod half;
mod int8;
mod portable;
#[cfg(test)]
mod tests;

#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
mod arm;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use half::ApproxVector;

/// Accumulator lanes (one AVX-512 register, two AVX2 registers, four NEON
/// registers).
const LANES: usize = 16;
/// Queries per micro-kernel call.
const Q_MICRO: usize = 4;
/// Candidates per micro-kernel call.
const C_MICRO: usize = 3;
/// Bytes of candidates per block scored by every query of a tile (kept in
/// L1, with the four queries of a micro-kernel call; 16 candidates of 384
/// dimensions). Measured on Zen 3 (32 KiB L1): 10, 18, 24 and 30 KiB, 24
/// best for the GEMM shapes, all within the noise for 20 queries.
const L1_CAND_BYTES: usize = 24 * 1024;
/// Bytes of queries per tile (kept in L2; a worker's batch of 20 vectors of
/// 384 dimensions is one tile).
const L2_QUERY_BYTES: usize = 160 * 1024;
/// Bytes of converted candidates per tile of the approximate path (kept in
/// L2).
const APPROX_TILE_BYTES: usize = 64 * 1024;
/// A cache line.
const LINE: usize = 64;

/// The fixed pairwise reduction of the 16 lanes (see the module docs).
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

/// One instruction set's register-blocked micro-kernel.
trait Micro {
    /// The `R × C` dot products `out[r][c]` of `qs[r]` and `cs[c]`, in the
    /// reference order. Panics unless every slice has the same length.
    ///
    /// # Safety
    /// The CPU supports the instruction set of the implementation.
    unsafe fn tile<const R: usize, const C: usize>(qs: [&[f32]; R], cs: [&[f32]; C]) -> [[f32; C]; R];

    /// A hint to load the cache line at `p` (any address: a prefetch never
    /// faults and reads nothing the program can observe).
    ///
    /// # Safety
    /// As for [`Micro::tile`].
    unsafe fn prefetch(p: *const u8);
}

/// Candidates per L1 block for vectors of `len` elements: a multiple of
/// [`C_MICRO`].
fn cand_block(len: usize) -> usize {
    (L1_CAND_BYTES / (len.max(1) * 4) / C_MICRO).max(1) * C_MICRO
}

/// Queries per L2 tile for vectors of `len` elements: a multiple of
/// [`Q_MICRO`].
fn query_tile(len: usize) -> usize {
    (L2_QUERY_BYTES / (len.max(1) * 4) / Q_MICRO).max(1) * Q_MICRO
}

/// Prefetches part `part` of `parts` of the cache lines of `count` regions
/// of `bytes` bytes each, region `c` starting at `at(c)`.
///
/// # Safety
/// As for [`Micro::tile`].
#[inline(always)]
unsafe fn prefetch_part<M: Micro>(
    count: usize,
    bytes: usize,
    at: impl Fn(usize) -> *const u8,
    part: usize,
    parts: usize,
) {
    let lines = bytes.div_ceil(LINE);
    let total = count * lines;
    if total == 0 || parts == 0 {
        return;
    }
    for idx in part * total / parts..(part + 1) * total / parts {
        // SAFETY: the caller guarantees the instruction set; the address is
        // computed with wrapping arithmetic and only prefetched.
        unsafe { M::prefetch(at(idx / lines).wrapping_add((idx % lines) * LINE)) };
    }
}

/// Scores every query against every candidate `(col, vector)` of `cols`,
/// writing element `(q, col)` of `out`, with the blocking described in the
/// module docs. The regions `extra` (the next candidates of the caller, in
/// 16-bit form) are prefetched, spread evenly over the work.
///
/// Lengths need not be checked by the caller: the micro-kernel panics on
/// vectors of different lengths, and `out` checks every index.
///
/// # Safety
/// The CPU supports `M`'s instruction set.
#[inline(always)]
unsafe fn gemm<M: Micro>(qs: &[&[f32]], cols: &[(usize, &[f32])], out: &mut Out<'_>, extra: &[&[u16]]) {
    let len = qs.first().map_or(0, |q| q.len());
    let (qt, cb) = (query_tile(len), cand_block(len));
    let blocks = cols.len().div_ceil(cb);
    let slots = blocks * qs.len().div_ceil(Q_MICRO);
    let extra_bytes = extra.first().map_or(0, |e| e.len() * 2);
    let mut slot = 0;
    for q0 in (0..qs.len()).step_by(qt) {
        let tile = &qs[q0..(q0 + qt).min(qs.len())];
        for b in 0..blocks {
            let block = &cols[b * cb..((b + 1) * cb).min(cols.len())];
            let next = cols.get((b + 1) * cb..((b + 2) * cb).min(cols.len())).unwrap_or(&[]);
            let micros = tile.len().div_ceil(Q_MICRO);
            for m in 0..micros {
                // SAFETY: the caller guarantees M's instruction set.
                unsafe { prefetch_part::<M>(next.len(), len * 4, |c| next[c].1.as_ptr().cast(), m, micros) };
                // SAFETY: as above.
                unsafe { prefetch_part::<M>(extra.len(), extra_bytes, |c| extra[c].as_ptr().cast(), slot, slots) };
                slot += 1;
                let r0 = m * Q_MICRO;
                let r = Q_MICRO.min(tile.len() - r0);
                for c0 in (0..block.len()).step_by(C_MICRO) {
                    let c = C_MICRO.min(block.len() - c0);
                    let (qs, cs) = (&tile[r0..r0 + r], &block[c0..c0 + c]);
                    let row = q0 + r0;
                    // SAFETY: (every arm) the caller guarantees M's
                    // instruction set; `qs` has `r` and `cs` `c` elements.
                    unsafe {
                        match (r, c) {
                            (4, 3) => put::<M, 4, 3>(qs, row, cs, out),
                            (4, 2) => put::<M, 4, 2>(qs, row, cs, out),
                            (4, 1) => put::<M, 4, 1>(qs, row, cs, out),
                            (3, 3) => put::<M, 3, 3>(qs, row, cs, out),
                            (3, 2) => put::<M, 3, 2>(qs, row, cs, out),
                            (3, 1) => put::<M, 3, 1>(qs, row, cs, out),
                            (2, 3) => put::<M, 2, 3>(qs, row, cs, out),
                            (2, 2) => put::<M, 2, 2>(qs, row, cs, out),
                            (2, 1) => put::<M, 2, 1>(qs, row, cs, out),
                            (1, 3) => put::<M, 1, 3>(qs, row, cs, out),
                            (1, 2) => put::<M, 1, 2>(qs, row, cs, out),
                            _ => put::<M, 1, 1>(qs, row, cs, out),
                        }
                    }
                }
            }
        }
    }
}

/// One micro-kernel call: rows `row..row + R` of `out`, the columns of `cs`.
///
/// # Safety
/// The CPU supports `M`'s instruction set.
#[inline(always)]
unsafe fn put<M: Micro, const R: usize, const C: usize>(
    qs: &[&[f32]],
    row: usize,
    cs: &[(usize, &[f32])],
    out: &mut Out<'_>,
) {
    let q: [&[f32]; R] = std::array::from_fn(|r| qs[r]);
    let c: [&[f32]; C] = std::array::from_fn(|j| cs[j].1);
    // SAFETY: the caller guarantees M's instruction set.
    let res = unsafe { M::tile::<R, C>(q, c) };
    for (r, line) in res.iter().enumerate() {
        for (j, &v) in line.iter().enumerate() {
            out.set(row + r, cs[j].0, v);
        }
    }
}

/// The approximate path over IEEE half vectors (see the module docs): tiles
/// of candidates converted to f32 by `convert` into a buffer, scored exactly
/// by `M`'s kernel, and scaled by each candidate's power of two. Every `cols`
/// vector must be in [`half::Format::F16`] of the queries' length (else
/// panics).
///
/// # Safety
/// The CPU supports `M`'s instruction set.
#[inline(always)]
unsafe fn approx_gemm<M: Micro>(
    qs: &[&[f32]],
    cols: &[(usize, &ApproxVector)],
    out: &mut Out<'_>,
    convert: impl Fn(&[u16], &mut [f32]),
) {
    let Some(len) = qs.first().map(|q| q.len()) else { return };
    if cols.is_empty() || len == 0 {
        return;
    }
    let cb = cand_block(len);
    let t = (APPROX_TILE_BYTES / (len * 4) / cb).max(1) * cb;
    let mut buf = vec![0f32; t.min(cols.len()) * len];
    for (ti, tile) in cols.chunks(t).enumerate() {
        for ((_, a), dst) in tile.iter().zip(buf.chunks_exact_mut(len)) {
            assert!(a.format() == half::Format::F16 && a.len() == len);
            convert(a.bits(), dst);
        }
        let packed: Vec<(usize, &[f32])> = tile
            .iter()
            .zip(buf.chunks_exact(len))
            .map(|((col, _), v)| (*col, v))
            .collect();
        let next: Vec<&[u16]> = cols.iter().skip((ti + 1) * t).take(t).map(|(_, a)| a.bits()).collect();
        // SAFETY: the caller guarantees M's instruction set.
        unsafe { gemm::<M>(qs, &packed, out, &next) };
        for (col, a) in tile {
            for q in 0..qs.len() {
                out.scale(q, *col, a.scale());
            }
        }
    }
}

/// Candidates of length `len` with their column: the only ones a kernel
/// scores (`None` and other lengths keep their value in `out`).
fn columns<C: Copy>(cands: &[Option<C>], len: usize, len_of: impl Fn(&C) -> usize) -> Vec<(usize, C)> {
    cands
        .iter()
        .enumerate()
        .filter_map(|(k, c)| c.filter(|c| len_of(c) == len).map(|c| (k, c)))
        .collect()
}

/// The one length of `qs`, if they have one (`None` for no queries). Panics
/// on queries of different lengths (the public entries group them first).
fn one_length(qs: &[&[f32]]) -> Option<usize> {
    let len = qs.first()?.len();
    assert!(qs.iter().all(|q| q.len() == len), "queries of one length");
    Some(len)
}

type DotFn = fn(&[f32], &[f32]) -> f32;
/// A blocked kernel over candidates of type `C`: element `(q, k)` of the
/// output for every query and every candidate `k` of the queries' length.
type BlockOf<C> = fn(&[&[f32]], &[Option<C>], &mut Out<'_>);
/// An exact blocked kernel, for candidates of any lifetime.
type ExactBlock = for<'a> fn(&[&[f32]], &[Option<&'a [f32]>], &mut Out<'_>);
/// An approximate blocked kernel, for candidates of any lifetime.
type ApproxBlock = for<'a> fn(&[&[f32]], &[Option<&'a ApproxVector>], &mut Out<'_>);
/// The zero-padded tails of a micro-kernel's queries and candidates, and
/// their length (see `x86::half_pass`).
#[allow(dead_code)] // not on every target
type Tails<'a, const R: usize, const C: usize> = Option<(&'a [[f32; LANES]; R], &'a [[f32; LANES]; C], usize)>;

/// An exact implementation (every one gives the same bits).
#[derive(Clone, Copy)]
pub struct ExactPath {
    /// `portable`, `avx2`, `avx512` or `neon`.
    pub name: &'static str,
    dot: DotFn,
    block: ExactBlock,
}

impl std::fmt::Debug for ExactPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExactPath").field("name", &self.name).finish()
    }
}

impl ExactPath {
    /// [`dot`] on this path.
    pub fn dot(&self, a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        (self.dot)(&a[..n], &b[..n])
    }

    /// [`dots`] on this path.
    pub fn dots(&self, queries: &[&[f32]], cands: &[Option<&[f32]>], out: &mut [f32]) {
        by_length(
            queries,
            cands,
            out,
            |c| c.len(),
            |qs, cs, out, len| run_parallel_with(qs, cs, out, len, self.block),
        );
    }
}

/// An approximate implementation: its own 16- or 8-bit format, kernel and
/// bound.
#[derive(Clone, Copy)]
pub struct ApproxPath {
    /// `i8-avx512` (AVX-512 VNNI), `i8-avxvnni`, `i8-avx2`, `i8-neon`,
    /// `i8-portable` (the 8-bit paths, which all give the same bits);
    /// `bf16` (AVX-512 BF16); `f16c` (AVX2 + F16C), `f16-neon`,
    /// `f16-portable` (IEEE halves, the same bits).
    pub name: &'static str,
    format: half::Format,
    block: ApproxBlock,
}

impl std::fmt::Debug for ApproxPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApproxPath").field("name", &self.name).finish()
    }
}

impl ApproxPath {
    /// [`to_approx`] for this path.
    pub fn to_approx(&self, v: &[f32]) -> ApproxVector {
        match self.format {
            half::Format::F16 => half::to_f16(v),
            half::Format::Bf16 => half::to_bf16(v),
            half::Format::I8 => int8::to_i8(v),
        }
    }

    /// [`approx_error`] for this path.
    pub fn error(&self, query: &[f32], norm_q: f32, norm_x_max: f32, err_x_max: f32) -> f32 {
        let len = query.len();
        match self.format {
            half::Format::F16 => half::f16_error(norm_q, norm_x_max, len),
            half::Format::Bf16 => half::bf16_error(norm_q, norm_x_max, len),
            half::Format::I8 => int8::i8_error(norm_q, int8::quantize(query).error, norm_x_max, err_x_max, len),
        }
    }

    /// Whether this path scores vectors of `len` elements (the 8-bit
    /// paths stop at 65,536).
    pub fn fits(&self, len: usize) -> bool {
        self.format != half::Format::I8 || len <= int8::MAX_LEN
    }

    /// [`dots_approx`] on this path. Panics on a candidate made by another
    /// path's [`ApproxPath::to_approx`].
    pub fn dots(&self, queries: &[&[f32]], cands: &[Option<&ApproxVector>], out: &mut [f32]) {
        assert!(
            cands.iter().flatten().all(|c| c.format() == self.format),
            "approximate vectors come from this path's to_approx"
        );
        // The conversion and the f32 kernel cost what the exact kernel
        // costs; bfloat16 does two products per lane and instruction, the
        // 8-bit kernels four.
        let per = match self.format {
            half::Format::F16 => 1,
            half::Format::Bf16 => 2,
            half::Format::I8 => 4,
        };
        by_length(
            queries,
            cands,
            out,
            |c| c.len(),
            |qs, cs, out, len| run_parallel_with(qs, cs, out, len.div_ceil(per), self.block),
        );
    }
}

fn portable_path() -> ExactPath {
    ExactPath {
        name: "portable",
        dot: portable::dot,
        block: portable::block,
    }
}

fn portable_approx_path() -> ApproxPath {
    ApproxPath {
        name: "f16-portable",
        format: half::Format::F16,
        block: portable::block_approx,
    }
}

/// The 8-bit path in plain Rust: integer arithmetic, which the compiler
/// vectorises with the target's baseline instructions, so it is the first
/// pass of a CPU without AVX2 or NEON (and of `MATCHMAKER_PORTABLE_KERNEL`).
fn portable_i8_path() -> ApproxPath {
    ApproxPath {
        name: "i8-portable",
        format: half::Format::I8,
        block: int8::block_portable,
    }
}

/// `MATCHMAKER_PORTABLE_KERNEL` set (or running under Miri): no SIMD path
/// at all (for comparisons; the scores are the same bits).
fn portable_forced() -> bool {
    cfg!(miri) || std::env::var_os("MATCHMAKER_PORTABLE_KERNEL").is_some()
}

/// `MATCHMAKER_KERNEL=NAME`: the exact path named (one of
/// [`exact_paths`]), for measuring a slower path on a faster CPU; the
/// scores are the same bits. An unknown or unavailable name is ignored
/// here and reported by [`check_forced_path`] at start-up.
fn forced_path() -> Option<String> {
    std::env::var("MATCHMAKER_KERNEL").ok().filter(|s| !s.is_empty())
}

/// `MATCHMAKER_APPROX_KERNEL=NAME`: the approximate path named (one of
/// [`approx_paths`]), or `none` for no first pass (every row exact), for
/// comparing the first passes on one CPU. Checked by [`check_forced_path`].
fn forced_approx_path() -> Option<String> {
    std::env::var("MATCHMAKER_APPROX_KERNEL").ok().filter(|s| !s.is_empty())
}

/// The approximate path that goes with an exact one: the 16-bit format the
/// same instruction sets read (AVX2 has no bfloat16 instructions).
fn approx_names_for(exact: &str) -> &'static [&'static str] {
    match exact {
        "avx512" => &["i8-avx512", "bf16", "f16c"],
        "avx2" => &["i8-avx2", "f16c"],
        "neon" => &["i8-neon", "f16-neon"],
        _ => &["i8-portable"],
    }
}

/// Checks `MATCHMAKER_KERNEL` and `MATCHMAKER_APPROX_KERNEL` against this
/// CPU's paths: a one-line error naming the ones it has when a name is not
/// among them.
pub fn check_forced_path() -> Result<(), String> {
    if let Some(name) = forced_path().filter(|n| !exact_paths().iter().any(|p| p.name == *n)) {
        return Err(format!(
            "MATCHMAKER_KERNEL={name}: this CPU's kernel paths are {}",
            exact_paths().iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
        ));
    }
    let approx_names: Vec<&str> = approx_paths().iter().map(|p| p.name).collect();
    match forced_approx_path() {
        Some(name) if name != "none" && !approx_names.contains(&name.as_str()) => Err(format!(
            "MATCHMAKER_APPROX_KERNEL={name}: this CPU's first-pass paths are {} (or none)",
            approx_names.join(", ")
        )),
        _ => Ok(()),
    }
}

/// The exact path this process uses: the fastest the CPU has, or the one
/// `MATCHMAKER_KERNEL` names.
fn exact() -> &'static ExactPath {
    static K: OnceLock<ExactPath> = OnceLock::new();
    K.get_or_init(|| {
        if portable_forced() {
            return portable_path();
        }
        let mut paths = exact_paths();
        if let Some(name) = forced_path() {
            if let Some(at) = paths.iter().position(|p| p.name == name) {
                return paths.swap_remove(at);
            }
        }
        paths.into_iter().next().unwrap_or_else(portable_path)
    })
}

/// The approximate path this process uses, if the CPU has one (with
/// `MATCHMAKER_KERNEL`, the one of the forced path's instruction sets).
fn approx() -> Option<&'static ApproxPath> {
    static A: OnceLock<Option<ApproxPath>> = OnceLock::new();
    A.get_or_init(|| {
        let paths = approx_paths();
        if let Some(name) = forced_approx_path() {
            return paths.into_iter().find(|p| p.name == name);
        }
        if portable_forced() {
            return Some(portable_i8_path());
        }
        if forced_path().is_some() {
            let names = approx_names_for(exact().name);
            let at = names.iter().find_map(|n| paths.iter().position(|p| p.name == *n));
            return at.and_then(|at| paths.into_iter().nth(at));
        }
        paths.into_iter().find(|p| p.name != "f16-portable")
    })
    .as_ref()
}

/// Every exact path this CPU can run, fastest first (the first is the one
/// [`dots`] uses unless `MATCHMAKER_PORTABLE_KERNEL` is set); the portable
/// one last. For benchmarks and tests: they all give the same bits.
pub fn exact_paths() -> Vec<ExactPath> {
    let mut v = Vec::new();
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    v.extend(x86::exact_paths());
    #[cfg(all(target_arch = "aarch64", target_feature = "neon", not(miri)))]
    v.push(arm::exact_path());
    v.push(portable_path());
    v
}

/// Every approximate path this CPU can run, the one [`dots_approx`] uses
/// first; `i8-portable`, then `f16-portable` (slow, for tests and
/// comparisons) last.
pub fn approx_paths() -> Vec<ApproxPath> {
    let mut v = Vec::new();
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    v.extend(x86::approx_paths());
    #[cfg(all(target_arch = "aarch64", target_feature = "neon", not(miri)))]
    v.extend(arm::approx_paths());
    v.push(portable_i8_path());
    v.push(portable_approx_path());
    v
}

/// Which exact implementation this process uses (`avx512`, `avx2`, `neon`
/// or `portable`).
pub fn implementation() -> &'static str {
    exact().name
}

/// The dot product of two vectors of equal length (see the module docs for
/// the exact arithmetic). Extra elements of the longer one are ignored.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    exact().dot(a, b)
}

/// How many threads a kernel call may use: those of rayon's pool, which
/// runs them (at most 8).
fn threads() -> usize {
    rayon::current_num_threads().clamp(1, 8)
}

/// Below this many multiply-adds a call stays on the calling thread.
const PARALLEL_MIN_WORK: usize = 2_000_000;

/// Candidate ranges per thread of a parallel call (see `run_parallel_with`).
const RANGES_PER_THREAD: usize = 4;

/// The fewest candidates in a range of a parallel call: each range converts
/// the queries and collects its columns once.
const MIN_RANGE: usize = 1_024;

/// Dot products of every query with every candidate: `out[q * n + k]` is
/// `dot(queries[q], cands[k])` where `cands[k]` is `Some` and has the
/// query's length, and stays as it was otherwise. Equal to calling [`dot`]
/// pair by pair, bit for bit. Queries may differ in length; each is compared
/// with the candidates of its own length only. Panics unless `out` has
/// `queries.len() × cands.len()` elements.
pub fn dots(queries: &[&[f32]], cands: &[Option<&[f32]>], out: &mut [f32]) {
    exact().dots(queries, cands, out)
}

/// Whether [`dots_approx`] runs: always, since the 8-bit path has a
/// portable version, unless `MATCHMAKER_APPROX_KERNEL=none`.
pub fn approx_available() -> bool {
    approx().is_some()
}

/// Which approximate implementation this process uses (`bf16`, `f16c`,
/// `f16-neon`), if any.
pub fn approx_implementation() -> Option<&'static str> {
    approx().map(|p| p.name)
}

/// Whether the approximate path is the bfloat16 one (AVX-512 BF16).
pub fn bf16_available() -> bool {
    approx().is_some_and(|p| p.format == half::Format::Bf16)
}

/// `v` in the 16-bit form of this CPU's approximate path, for
/// [`dots_approx`] (IEEE half with a power-of-two scale, or bfloat16 when
/// the CPU has AVX-512 BF16). Any finite vector, any length.
pub fn to_approx(v: &[f32]) -> ApproxVector {
    approx().copied().unwrap_or_else(portable_approx_path).to_approx(v)
}

/// How far a score of [`dots_approx`] may be from [`dot`] of the original
/// vectors, for `query` (of norm at most `norm_q`) and candidates of its
/// length with norms at most `norm_x_max` and [`ApproxVector::error`] at
/// most `err_x_max` (the derivations are in the docs of the `half` and
/// `int8` modules). Finite vectors; the norms are upper bounds.
pub fn approx_error(query: &[f32], norm_q: f32, norm_x_max: f32, err_x_max: f32) -> f32 {
    approx()
        .copied()
        .unwrap_or_else(portable_approx_path)
        .error(query, norm_q, norm_x_max, err_x_max)
}

/// Whether [`dots_approx`] scores vectors of `len` elements.
pub fn approx_fits(len: usize) -> bool {
    approx().is_some_and(|p| p.fits(len))
}

/// Approximate dot products, each within [`approx_error`] of [`dots`]:
/// `out[q * n + k]` for every `Some` candidate of the query's length,
/// untouched elsewhere. Candidates come from [`to_approx`]; queries are the
/// exact f32 vectors. `false`, touching nothing, when the CPU has no
/// approximate path ([`approx_available`]). Panics unless `out` has
/// `queries.len() × cands.len()` elements.
pub fn dots_approx(queries: &[&[f32]], cands: &[Option<&ApproxVector>], out: &mut [f32]) -> bool {
    assert_eq!(
        out.len(),
        queries.len() * cands.len(),
        "output must be queries × candidates"
    );
    let Some(path) = approx() else { return false };
    path.dots(queries, cands, out);
    true
}

/// Runs `run(queries, cands, out, len)` once per query length, on the
/// queries of that length and the candidates of that length (others `None`),
/// with `out` rows mapped to the callers' rows. Empty vectors score `0.0`
/// (an empty sum) without a kernel call.
fn by_length<'c, C: ?Sized + Sync>(
    queries: &[&[f32]],
    cands: &[Option<&'c C>],
    out: &mut [f32],
    len_of: impl Fn(&C) -> usize,
    run: impl Fn(&[&[f32]], &[Option<&'c C>], &mut [f32], usize),
) {
    let n = cands.len();
    assert_eq!(out.len(), queries.len() * n, "output must be queries × candidates");
    let mut lengths: Vec<usize> = queries.iter().map(|q| q.len()).collect();
    lengths.sort_unstable();
    lengths.dedup();
    for len in lengths {
        let idx: Vec<usize> = (0..queries.len()).filter(|&q| queries[q].len() == len).collect();
        let cs: Vec<Option<&C>> = cands.iter().map(|c| c.filter(|c| len_of(*c) == len)).collect();
        if len == 0 {
            for &q in &idx {
                for (k, c) in cs.iter().enumerate() {
                    if c.is_some() {
                        out[q * n + k] = 0.0;
                    }
                }
            }
            continue;
        }
        let qs: Vec<&[f32]> = idx.iter().map(|&q| queries[q]).collect();
        if idx.len() == queries.len() {
            // One length (the usual case): the rows are the callers' rows.
            run(&qs, &cs, out, len);
            return;
        }
        // The kernel writes rows 0..qs.len(); map them to the callers' rows.
        let mut tmp = vec![f32::NAN; qs.len() * n];
        run(&qs, &cs, &mut tmp, len);
        for (row, &q) in idx.iter().enumerate() {
            for k in 0..n {
                if cs[k].is_some() {
                    out[q * n + k] = tmp[row * n + k];
                }
            }
        }
    }
}

/// One kernel call's output: `rows` rows of `cols` elements, row `r`
/// starting `r * stride` elements into the caller's matrix. The threads of
/// one call each write their own range of columns of one matrix
/// ([`Out::split_columns`]) straight into it.
pub(super) struct Out<'a> {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    stride: usize,
    _matrix: PhantomData<&'a mut [f32]>,
}

// SAFETY: an `Out` is an exclusive borrow of its own elements (the `Out`s
// of one split share none), so moving it to another thread moves that
// borrow, as moving a `&mut [f32]` would.
unsafe impl Send for Out<'_> {}

impl<'a> Out<'a> {
    /// The whole of `matrix`, rows of `stride` elements (none when `stride`
    /// is zero). Panics unless the rows fill it exactly.
    pub(super) fn new(matrix: &'a mut [f32], stride: usize) -> Self {
        let rows = matrix.len().checked_div(stride).unwrap_or(0);
        assert_eq!(rows * stride, matrix.len(), "output must be whole rows");
        Self {
            ptr: matrix.as_mut_ptr(),
            rows,
            cols: stride,
            stride,
            _matrix: PhantomData,
        }
    }

    /// The element at row `r`, column `c` of this range. Panics outside it.
    #[inline(always)]
    fn at(&mut self, r: usize, c: usize) -> &mut f32 {
        assert!(r < self.rows && c < self.cols, "kernel output index out of range");
        // SAFETY: `r < rows` and `c < cols` put the element inside this
        // range's columns of the borrowed matrix (`split_columns` keeps
        // every range within the rows), which only this `Out` may touch.
        unsafe { &mut *self.ptr.add(r * self.stride + c) }
    }

    /// Sets element `(r, c)`.
    #[inline(always)]
    fn set(&mut self, r: usize, c: usize, v: f32) {
        *self.at(r, c) = v;
    }

    /// Multiplies element `(r, c)` by `a`.
    #[inline(always)]
    fn scale(&mut self, r: usize, c: usize, a: f32) {
        *self.at(r, c) *= a;
    }

    /// The columns `lo..hi` of each range, as separate outputs. Panics
    /// unless the ranges are ascending, disjoint and inside this one.
    fn split_columns(self, ranges: &[(usize, usize)]) -> Vec<Out<'a>> {
        let mut end = 0;
        ranges
            .iter()
            .map(|&(lo, hi)| {
                assert!(
                    end <= lo && lo <= hi && hi <= self.cols,
                    "column ranges must be disjoint"
                );
                end = hi;
                Out {
                    // Within the matrix (or one past its end when empty).
                    ptr: self.ptr.wrapping_add(lo),
                    rows: self.rows,
                    cols: hi - lo,
                    stride: self.stride,
                    _matrix: PhantomData,
                }
            })
            .collect()
    }
}

/// Runs `block_fn` over the candidates, split by candidate range across the
/// cores when the work (`cost` multiply-adds per pair) is large enough. The
/// one thread-splitting helper of every kernel. Each range is scored on
/// rayon's pool straight into its columns of `out`; columns a kernel skips
/// keep their values.
fn run_parallel_with<C: Sync + Copy>(
    qs: &[&[f32]],
    cs: &[Option<C>],
    out: &mut [f32],
    cost: usize,
    block_fn: BlockOf<C>,
) {
    let n = cs.len();
    let mut whole = Out::new(out, n);
    let work = qs.len() * n * cost.max(1);
    let t = threads().min(n.max(1));
    if t <= 1 || work < PARALLEL_MIN_WORK || cfg!(miri) {
        block_fn(qs, cs, &mut whole);
        return;
    }
    // A few ranges per thread, not one: PostgreSQL shares these cores, and
    // with one range each a thread that loses its core holds the whole call
    // up while the other waits; smaller ranges are picked up by whichever
    // thread is running (rayon steals them).
    let parts = (t * RANGES_PER_THREAD).min(n.div_ceil(MIN_RANGE)).max(t);
    let chunk = n.div_ceil(parts);
    let ranges: Vec<(usize, usize)> = (0..parts)
        .map(|i| ((i * chunk).min(n), ((i + 1) * chunk).min(n)))
        .filter(|(lo, hi)| lo < hi)
        .collect();
    let parts = whole.split_columns(&ranges);
    rayon::scope(|s| {
        for (mut part, &(lo, hi)) in parts.into_iter().zip(&ranges) {
            s.spawn(move |_| block_fn(qs, &cs[lo..hi], &mut part));
        }
    });
}
