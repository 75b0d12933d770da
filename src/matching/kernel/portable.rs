//! The reference arithmetic in plain Rust: what every instruction-set path
//! must reproduce bit for bit, and the fallback where none applies (on
//! x86-64 without FMA, `mul_add` is a library call, so this path is slow
//! there; on aarch64 it compiles to `fmla`). The blocked kernels run the same
//! blocking code ([`super::gemm`]) as the SIMD ones, which is how Miri checks
//! that code.

use super::half::{self, ApproxVector};
use super::{columns, one_length, reduce, Micro, Out, LANES};

/// `Q` dot products of `qs[j]` with `c`, all of length `c.len()`, in the
/// reference order (see the module docs of [`super`]).
#[inline(always)]
pub(super) fn dot_group<const Q: usize>(qs: [&[f32]; Q], c: &[f32]) -> [f32; Q] {
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

/// The reference dot product (equal lengths, see [`super::dot`]).
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    dot_group::<1>([a], b)[0]
}

/// The micro-kernel in scalar code, lane by lane.
pub(super) struct Portable;

impl Micro for Portable {
    #[inline(always)]
    unsafe fn tile<const R: usize, const C: usize>(qs: [&[f32]; R], cs: [&[f32]; C]) -> [[f32; C]; R] {
        let n = cs[0].len();
        assert!(qs.iter().all(|q| q.len() == n) && cs.iter().all(|c| c.len() == n));
        let mut out = [[0f32; C]; R];
        for (r, q) in qs.iter().enumerate() {
            out[r] = dot_group::<C>(cs, q);
        }
        out
    }

    #[inline(always)]
    unsafe fn prefetch(_: *const u8) {}
}

/// The blocked exact kernel (see [`super::BlockOf`]).
pub(super) fn block(qs: &[&[f32]], cs: &[Option<&[f32]>], out: &mut Out<'_>) {
    let Some(len) = one_length(qs) else { return };
    let cols = columns(cs, len, |c| c.len());
    // SAFETY: the portable micro-kernel needs no instruction set.
    unsafe { super::gemm::<Portable>(qs, &cols, out, &[]) }
}

/// The approximate kernel over IEEE half vectors with the portable
/// conversion; the same bits as the SIMD ones.
pub(super) fn block_approx(qs: &[&[f32]], cs: &[Option<&ApproxVector>], out: &mut Out<'_>) {
    let Some(len) = one_length(qs) else { return };
    let cols = columns(cs, len, |c| c.len());
    // SAFETY: the portable micro-kernel needs no instruction set.
    unsafe { super::approx_gemm::<Portable>(qs, &cols, out, half::f16_to_f32_into) }
}
