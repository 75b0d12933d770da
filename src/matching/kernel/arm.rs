//! aarch64: the reference arithmetic with NEON (part of every
//! aarch64-unknown-linux-gnu CPU, so no run-time check is needed; the module
//! is compiled only when the target has it).
//!
//! The micro-kernel computes the 16 lanes of each pair in four passes of
//! one `float32x4_t` (lanes 0–3, 4–7, 8–11, 12–15) with `vfmaq_f32` (a fused
//! multiply-add, one rounding), then the reduction of the reference order
//! with vector adds: `s8` is lanes 0–3 + 8–11 and 4–7 + 12–15, `s4` their
//! sum, then `(s4[0] + s4[2]) + (s4[1] + s4[3])`. The approximate path
//! converts halves with the portable code (the compiler vectorises it; the
//! `vcvt_f32_f16` intrinsic needs the unstable `f16` type) and scores with
//! this micro-kernel: the same bits as on x86.
//!
//! The 8-bit first pass multiplies bytes with `smull` and adds the 16-bit
//! products in pairs with `sadalp` (exact integers, the same bits as every
//! other 8-bit path).
//!
//! Correctness is checked under qemu (`scripts/check-aarch64.sh`); speed has
//! not been measured on ARM hardware. No software prefetch: ARM cores'
//! stream prefetchers follow the candidate vectors, and the hint needs
//! inline assembly.

use super::half::{self, ApproxVector};
use super::int8::{self, MicroI8, I8_BLOCK};
use super::{columns, one_length, ApproxPath, ExactPath, Micro, Out, Tails, LANES};
use std::arch::aarch64::*;

/// One quarter (lanes `4·P .. 4·P + 4`) of the `R × C` accumulators: the
/// full chunks, then the tail (zero-padded copies) selected into the lanes
/// it reaches only.
///
/// # Safety
/// Every slice of `qs` and `cs` has at least `full` elements and `full` is a
/// multiple of 16.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn quarter<const R: usize, const C: usize, const P: usize>(
    qs: &[&[f32]; R],
    cs: &[&[f32]; C],
    full: usize,
    tails: Tails<'_, R, C>,
) -> [[float32x4_t; C]; R] {
    let off = 4 * P;
    let mut acc = [[vdupq_n_f32(0.0); C]; R];
    let mut i = off;
    while i < full {
        let mut cv = [vdupq_n_f32(0.0); C];
        for j in 0..C {
            // SAFETY: i + 4 <= full (full is a multiple of 16, off <= 12) and
            // every candidate has at least `full` elements (the caller's
            // contract).
            cv[j] = unsafe { vld1q_f32(cs[j].as_ptr().add(i)) };
        }
        for r in 0..R {
            // SAFETY: as above, for the queries.
            let qv = unsafe { vld1q_f32(qs[r].as_ptr().add(i)) };
            for j in 0..C {
                acc[r][j] = vfmaq_f32(acc[r][j], qv, cv[j]);
            }
        }
        i += LANES;
    }
    if let Some((qt, ct, rem)) = tails {
        if rem > off {
            let lanes: [u32; 4] = [0, 1, 2, 3];
            // SAFETY: `lanes` has 4 elements.
            let mask = vcltq_u32(unsafe { vld1q_u32(lanes.as_ptr()) }, vdupq_n_u32((rem - off) as u32));
            let mut cv = [vdupq_n_f32(0.0); C];
            for j in 0..C {
                // SAFETY: off + 4 <= 16 = the length of each tail copy.
                cv[j] = unsafe { vld1q_f32(ct[j].as_ptr().add(off)) };
            }
            for r in 0..R {
                // SAFETY: as above.
                let qv = unsafe { vld1q_f32(qt[r].as_ptr().add(off)) };
                for j in 0..C {
                    acc[r][j] = vbslq_f32(mask, vfmaq_f32(acc[r][j], qv, cv[j]), acc[r][j]);
                }
            }
        }
    }
    acc
}

/// The NEON micro-kernel (see [`super::Micro`]).
struct Neon;

/// The NEON micro-kernel: four quarters, then the reference reduction.
#[target_feature(enable = "neon")]
#[inline]
fn tile_neon<const R: usize, const C: usize>(qs: [&[f32]; R], cs: [&[f32]; C]) -> [[f32; C]; R] {
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
    // SAFETY: every slice has n >= full elements (asserted above) and
    // full is a multiple of 16.
    let g = unsafe {
        [
            quarter::<R, C, 0>(&qs, &cs, full, tails),
            quarter::<R, C, 1>(&qs, &cs, full, tails),
            quarter::<R, C, 2>(&qs, &cs, full, tails),
            quarter::<R, C, 3>(&qs, &cs, full, tails),
        ]
    };
    let mut out = [[0f32; C]; R];
    for (r, line) in out.iter_mut().enumerate() {
        for (j, v) in line.iter_mut().enumerate() {
            let s8a = vaddq_f32(g[0][r][j], g[2][r][j]);
            let s8b = vaddq_f32(g[1][r][j], g[3][r][j]);
            let s4 = vaddq_f32(s8a, s8b);
            let t = vadd_f32(vget_low_f32(s4), vget_high_f32(s4));
            *v = vget_lane_f32::<0>(t) + vget_lane_f32::<1>(t);
        }
    }
    out
}

impl Micro for Neon {
    #[inline(always)]
    unsafe fn tile<const R: usize, const C: usize>(qs: [&[f32]; R], cs: [&[f32]; C]) -> [[f32; C]; R] {
        // SAFETY: NEON is part of the target (this module's cfg).
        unsafe { tile_neon::<R, C>(qs, cs) }
    }

    #[inline(always)]
    unsafe fn prefetch(_: *const u8) {}
}

fn dot_neon(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    // SAFETY: NEON is part of the target (this module's cfg).
    unsafe { Neon::tile::<1, 1>([a], [b])[0][0] }
}

fn block_neon(q: &[&[f32]], c: &[Option<&[f32]>], out: &mut Out<'_>) {
    let Some(len) = one_length(q) else { return };
    let cols = columns(c, len, |c| c.len());
    // SAFETY: NEON is part of the target (this module's cfg).
    unsafe { super::gemm::<Neon>(q, &cols, out, &[]) }
}

fn block_approx_neon(q: &[&[f32]], c: &[Option<&ApproxVector>], out: &mut Out<'_>) {
    let Some(len) = one_length(q) else { return };
    let cols = columns(c, len, |c| c.len());
    // SAFETY: NEON is part of the target (this module's cfg).
    unsafe { super::approx_gemm::<Neon>(q, &cols, out, half::f16_to_f32_into) }
}

pub(super) fn exact_path() -> ExactPath {
    ExactPath {
        name: "neon",
        dot: dot_neon,
        block: block_neon,
    }
}

/// 8-bit products widened to 16 bits (`smull`, at most 127² in
/// magnitude) and added in pairs into 32-bit lanes (`sadalp`): exact.
struct NeonI8;

/// # Safety
/// NEON (part of the target).
#[target_feature(enable = "neon")]
unsafe fn tile_i8_neon<const R: usize, const C: usize>(qs: [&[u8]; R], cs: [&[i8]; C]) -> [[i32; C]; R] {
    let n = cs[0].len();
    assert!(n.is_multiple_of(I8_BLOCK) && qs.iter().all(|q| q.len() == n) && cs.iter().all(|c| c.len() == n));
    let mut acc = [[vdupq_n_s32(0); C]; R];
    let mut i = 0;
    while i < n {
        // SAFETY: i + 16 <= n, the length of every slice (checked above).
        let cv: [int8x16_t; C] = std::array::from_fn(|c| unsafe { vld1q_s8(cs[c].as_ptr().add(i)) });
        for r in 0..R {
            // SAFETY: as above; the query bytes are signed here
            // (`UNSIGNED_QUERY` is false).
            let qv = unsafe { vld1q_s8(qs[r].as_ptr().add(i).cast()) };
            for c in 0..C {
                let lo = vmull_s8(vget_low_s8(qv), vget_low_s8(cv[c]));
                let hi = vmull_high_s8(qv, cv[c]);
                acc[r][c] = vpadalq_s16(vpadalq_s16(acc[r][c], lo), hi);
            }
        }
        i += 16;
    }
    std::array::from_fn(|r| std::array::from_fn(|c| vaddvq_s32(acc[r][c])))
}

impl MicroI8 for NeonI8 {
    const UNSIGNED_QUERY: bool = false;
    const R: usize = 4;
    const C: usize = 4;

    #[inline(always)]
    unsafe fn tile<const R: usize, const C: usize>(qs: [&[u8]; R], cs: [&[i8]; C]) -> [[i32; C]; R] {
        // SAFETY: NEON is part of the target (this module's cfg).
        unsafe { tile_i8_neon::<R, C>(qs, cs) }
    }

    #[inline(always)]
    unsafe fn prefetch(_: *const u8) {}
}

fn block_i8_neon(q: &[&[f32]], c: &[Option<&ApproxVector>], out: &mut Out<'_>) {
    // SAFETY: NEON is part of the target (this module's cfg).
    unsafe { int8::gemm_i8::<NeonI8>(q, c, out) }
}

/// The approximate paths of NEON, the preferred one first.
pub(super) fn approx_paths() -> Vec<ApproxPath> {
    vec![
        ApproxPath {
            name: "i8-neon",
            format: half::Format::I8,
            block: block_i8_neon,
        },
        ApproxPath {
            name: "f16-neon",
            format: half::Format::F16,
            block: block_approx_neon,
        },
    ]
}
