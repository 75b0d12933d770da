use super::half::{self, f16_bits, f16_value};
use super::int8;
use super::*;
use rand::{Rng, SeedableRng};

type Rng64 = rand::rngs::StdRng;

fn vec_of(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn unit(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    let v = vec_of(rng, n);
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.iter().map(|x| x / norm).collect()
}

/// `2^k` for a normal `k`, built from its bits (exact everywhere; Miri
/// adds an error to `powi`).
fn two(k: i32) -> f32 {
    f32::from_bits(((k + 127) as u32) << 23)
}

/// An upper bound of the exact Euclidean norm.
fn norm_up(v: &[f32]) -> f32 {
    let n = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
    let f = n as f32;
    if f64::from(f) < n {
        f.next_up()
    } else {
        f
    }
}

/// Lengths around every boundary of the kernels: the 16-lane chunks, the
/// 8-lane passes, the bfloat16 blocks.
const LENGTHS: &[usize] = &[
    1, 2, 3, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 32, 33, 47, 63, 64, 65, 100, 383, 384, 385,
];

/// Miri runs the portable paths only and slowly: fewer cases there.
fn lengths() -> &'static [usize] {
    if cfg!(miri) {
        &[1, 7, 16, 17, 33]
    } else {
        LENGTHS
    }
}

#[test]
fn blocked_kernel_equals_pairwise_dot_bit_for_bit() {
    let mut rng = Rng64::seed_from_u64(7);
    for &len in lengths() {
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
#[cfg_attr(miri, ignore = "threads of 45,000 pairs: too slow under Miri")]
fn parallel_split_equals_single_thread() {
    let mut rng = Rng64::seed_from_u64(11);
    let len = 64;
    let queries: Vec<Vec<f32>> = (0..9).map(|_| vec_of(&mut rng, len)).collect();
    // Enough work to cross PARALLEL_MIN_WORK.
    let cands: Vec<Option<Vec<f32>>> = (0..5_000)
        .map(|k| (k % 13 != 5).then(|| vec_of(&mut rng, len)))
        .collect();
    let qs: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
    let cs: Vec<Option<&[f32]>> = cands.iter().map(|c| c.as_deref()).collect();
    let mut out = vec![3.0; qs.len() * cs.len()];
    dots(&qs, &cs, &mut out);
    for (q, qv) in queries.iter().enumerate() {
        for (k, c) in cands.iter().enumerate() {
            let want = c.as_deref().map_or(3.0, |c| dot(qv, c));
            assert_eq!(out[q * cs.len() + k].to_bits(), want.to_bits());
        }
    }
}

/// Every exact path, every remainder of the 4 × 3 micro-kernel, every
/// tail: the reference bits.
#[test]
fn every_exact_path_gives_the_reference_bits() {
    let mut rng = Rng64::seed_from_u64(5);
    let counts: &[(usize, usize)] = if cfg!(miri) {
        &[(5, 7)]
    } else {
        &[(1, 1), (2, 5), (3, 3), (4, 2), (5, 7), (9, 41), (20, 30)]
    };
    for &len in lengths() {
        for &(nq, nc) in counts {
            let queries: Vec<Vec<f32>> = (0..nq).map(|_| vec_of(&mut rng, len)).collect();
            let cands: Vec<Option<Vec<f32>>> = (0..nc).map(|k| (k % 9 != 4).then(|| vec_of(&mut rng, len))).collect();
            let qs: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
            let cs: Vec<Option<&[f32]>> = cands.iter().map(|c| c.as_deref()).collect();
            for path in exact_paths() {
                let mut got = vec![-1.0; nq * nc];
                path.dots(&qs, &cs, &mut got);
                for (q, qv) in queries.iter().enumerate() {
                    assert_eq!(path.dot(qv, qv).to_bits(), portable::dot(qv, qv).to_bits());
                    for (k, c) in cands.iter().enumerate() {
                        let want = c.as_deref().map_or(-1.0, |c| portable::dot(qv, c));
                        let g = got[q * nc + k];
                        assert_eq!(
                            g.to_bits(),
                            want.to_bits(),
                            "{} len {len} {nq}×{nc} q {q} k {k}",
                            path.name
                        );
                    }
                }
            }
        }
    }
}

/// A lane that holds `-0.0` keeps it where no tail element reaches it: a
/// multiply-add of zeros would make it `+0.0` and the sum `+0.0`.
#[test]
fn negative_zero_lanes_survive_the_tail() {
    for len in [16, 17, 20, 24, 25, 31, 33] {
        // Each product underflows to -0.0, so every lane is -0.0.
        let q = vec![-1e-30f32; len];
        let x = vec![1e-30f32; len];
        let want = portable::dot(&q, &x);
        assert_eq!(want.to_bits(), (-0.0f32).to_bits(), "len {len}");
        for path in exact_paths() {
            let mut out = [1.0f32; 3];
            path.dots(&[&q], &[Some(&x), Some(&x), Some(&x)], &mut out);
            assert!(
                out.iter().all(|v| v.to_bits() == want.to_bits()),
                "{} len {len}",
                path.name
            );
            assert_eq!(path.dot(&q, &x).to_bits(), want.to_bits());
        }
    }
}

/// Every public entry, with empty vectors, odd lengths, mismatched lengths,
/// no candidates and no queries: no panic (beyond a wrong `out` size), the
/// documented values, and `out` untouched where nothing is scored.
#[test]
fn every_entry_handles_empty_odd_and_mismatched_input() {
    let mut rng = Rng64::seed_from_u64(21);
    let odd: &[usize] = if cfg!(miri) {
        &[0, 1, 3, 17]
    } else {
        &[0, 1, 3, 15, 17, 31, 33, 383, 385]
    };
    // Empty vectors: an empty sum.
    assert_eq!(dot(&[], &[]).to_bits(), 0f32.to_bits());
    assert_eq!(dot(&[1.0, 2.0], &[]).to_bits(), 0f32.to_bits());
    for &len in odd {
        let a = vec_of(&mut rng, len);
        let b = vec_of(&mut rng, len + 2);
        // Extra elements of the longer one are ignored.
        assert_eq!(dot(&a, &b).to_bits(), dot(&a, &b[..len]).to_bits());
        assert_eq!(dot(&b, &a).to_bits(), dot(&a, &b[..len]).to_bits());
        let paths: Vec<ApproxPath> = approx_paths();
        let qs: Vec<&[f32]> = vec![&a, &b, &a];
        let cs: Vec<Option<&[f32]>> = vec![Some(&b), None, Some(&a), Some(&a[..len / 2])];
        let mut out = vec![9.0; qs.len() * cs.len()];
        dots(&qs, &cs, &mut out);
        for (q, qv) in qs.iter().enumerate() {
            for (k, c) in cs.iter().enumerate() {
                let want = match c {
                    Some(c) if c.len() == qv.len() => dot(qv, c),
                    _ => 9.0,
                };
                assert_eq!(out[q * cs.len() + k].to_bits(), want.to_bits(), "len {len} q {q} k {k}");
            }
        }
        // No candidates, no queries.
        dots(&qs, &[], &mut []);
        dots(&[], &cs, &mut []);
        for path in exact_paths() {
            path.dots(&qs, &[], &mut []);
            path.dots(&[], &cs, &mut []);
            let mut out = vec![9.0; qs.len() * cs.len()];
            path.dots(&qs, &cs, &mut out);
            for (q, qv) in qs.iter().enumerate() {
                for (k, c) in cs.iter().enumerate() {
                    let want = match c {
                        Some(c) if c.len() == qv.len() => dot(qv, c),
                        _ => 9.0,
                    };
                    assert_eq!(
                        out[q * cs.len() + k].to_bits(),
                        want.to_bits(),
                        "{} len {len}",
                        path.name
                    );
                }
            }
        }
        // The approximate entries: the public ones and every path.
        let ha = to_approx(&a);
        assert_eq!((ha.len(), ha.is_empty()), (len, len == 0));
        let hb = to_approx(&b);
        let hc: Vec<Option<&ApproxVector>> = vec![Some(&hb), None, Some(&ha)];
        let mut out = vec![9.0; qs.len() * hc.len()];
        let ran = dots_approx(&qs, &hc, &mut out);
        assert_eq!(ran, approx_available());
        assert!(dots_approx(&qs, &[], &mut []) == approx_available());
        assert!(dots_approx(&[], &hc, &mut []) == approx_available());
        assert!(approx_error(&a, 1.0, 1.0, 0.0).is_finite());
        for path in &paths {
            let va = path.to_approx(&a);
            let vb = path.to_approx(&b);
            let ex = va.error().max(vb.error());
            let cs: Vec<Option<&ApproxVector>> = vec![Some(&vb), None, Some(&va)];
            path.dots(&qs, &[], &mut []);
            path.dots(&[], &cs, &mut []);
            let mut out = vec![9.0; qs.len() * cs.len()];
            path.dots(&qs, &cs, &mut out);
            let origs: [Option<&[f32]>; 3] = [Some(&b), None, Some(&a)];
            for (q, qv) in qs.iter().enumerate() {
                for (k, c) in origs.iter().enumerate() {
                    let got = out[q * cs.len() + k];
                    match c {
                        Some(c) if c.len() == qv.len() => {
                            let bound = path.error(qv, norm_up(qv), norm_up(c), ex);
                            assert!((got - dot(qv, c)).abs() <= bound, "{} len {len}", path.name);
                            if c.is_empty() {
                                assert_eq!(got.to_bits(), 0f32.to_bits());
                            }
                        }
                        _ => assert_eq!(got, 9.0, "{} len {len} q {q} k {k}", path.name),
                    }
                }
            }
        }
    }
}

#[test]
#[should_panic(expected = "output must be queries × candidates")]
fn a_wrong_output_size_is_refused() {
    let a = [1.0f32; 3];
    dots(&[&a], &[Some(&a)], &mut [0.0; 2]);
}

#[test]
#[should_panic(expected = "output must be queries × candidates")]
fn a_wrong_approximate_output_size_is_refused() {
    let a = [1.0f32; 3];
    let h = to_approx(&a);
    // The size is checked whether or not the CPU has an approximate path.
    dots_approx(&[&a], &[Some(&h)], &mut [0.0; 2]);
}

/// Every half converts to an f32 and back to itself; rounding an f32 is
/// the nearest half (ties to even), as the hardware rounds where it can.
#[test]
fn half_conversions_are_exact_and_round_to_nearest_even() {
    for h in 0..=u16::MAX {
        if h & 0x7C00 == 0x7C00 {
            continue; // infinities and NaNs are never stored
        }
        let v = f16_value(h);
        assert_eq!(f16_bits(v), h, "{h:#06x}");
        let mut one = [0f32; 1];
        half::f16_to_f32_into(&[h], &mut one);
        assert_eq!(one[0].to_bits(), v.to_bits());
    }
    // Halfway between 1 and the next half rounds to even (down); just above
    // rounds up; beyond 65504 overflows.
    assert_eq!(f16_bits(1.0 + two(-11)), 0x3C00);
    assert_eq!(f16_bits(1.0 + 3.0 * two(-11)), 0x3C02);
    assert_eq!(f16_bits(1.0 + two(-11) + two(-20)), 0x3C01);
    assert_eq!(f16_bits(65520.0), 0x7C00);
    assert_eq!(f16_bits(65519.0), 0x7BFF);
    assert_eq!(f16_bits(two(-25)), 0); // a tie with zero: to even
    assert_eq!(f16_bits(two(-25) * 1.5), 1);
    assert_eq!(f16_bits(-0.0), 0x8000);
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        let mut rng = Rng64::seed_from_u64(99);
        for i in 0..200_000u32 {
            let x: [f32; 8] = std::array::from_fn(|l| {
                let bits = match (i + l as u32) % 3 {
                    0 => rng.gen::<u32>(),
                    // Around half's range and its rounding boundaries.
                    1 => (rng.gen_range(0x3300_0000u32..0x4780_0000)) | (rng.gen::<u32>() & 0x8000_0000),
                    _ => (rng.gen_range(0x3300u32..0x4780) << 16) | (0x1000 * rng.gen_range(0..2u32)),
                };
                f32::from_bits(bits)
            });
            let Some(hw) = x86::f16_bits_hardware(&x) else { break };
            for l in 0..8 {
                if x[l].is_nan() {
                    assert_eq!(hw[l] & 0x7C00, 0x7C00);
                    assert_eq!(f16_bits(x[l]) & 0x7E00, 0x7E00);
                    continue;
                }
                assert_eq!(f16_bits(x[l]), hw[l], "{:#010x}", x[l].to_bits());
            }
        }
    }
}

/// The half paths give the same bits as the portable one (the converted
/// vectors are scored by the exact kernels in the reference order).
#[test]
fn every_half_path_gives_the_same_bits() {
    let mut rng = Rng64::seed_from_u64(17);
    let portable = portable_approx_path();
    for &len in lengths() {
        let queries: Vec<Vec<f32>> = (0..7).map(|_| vec_of(&mut rng, len)).collect();
        let cands: Vec<Vec<f32>> = (0..50).map(|_| unit(&mut rng, len)).collect();
        let qs: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
        let hs: Vec<ApproxVector> = cands.iter().map(|c| portable.to_approx(c)).collect();
        let cs: Vec<Option<&ApproxVector>> = hs.iter().enumerate().map(|(k, h)| (k % 6 != 2).then_some(h)).collect();
        let mut want = vec![5.0; qs.len() * cs.len()];
        portable.dots(&qs, &cs, &mut want);
        // Each score is the scale times the exact dot of the halves' values.
        for (q, qv) in queries.iter().enumerate() {
            for (k, h) in hs.iter().enumerate() {
                let w = want[q * cs.len() + k];
                if k % 6 == 2 {
                    assert_eq!(w, 5.0);
                    continue;
                }
                let vals: Vec<f32> = h.bits().iter().map(|&b| f16_value(b)).collect();
                assert_eq!(w.to_bits(), (portable::dot(qv, &vals) * h.scale()).to_bits());
            }
        }
        for path in approx_paths().into_iter().filter(|p| p.format == half::Format::F16) {
            let mut got = vec![5.0; qs.len() * cs.len()];
            path.dots(&qs, &cs, &mut got);
            let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{} len {len}", path.name);
        }
    }
}

/// The largest `|approximate - exact| / bound` over the pairs of `qs` ×
/// `xs` on `path`; panics if a pair exceeds `bound_scale` × its bound.
fn worst_ratio(path: &ApproxPath, qs: &[Vec<f32>], xs: &[Vec<f32>], bound_scale: f32) -> f64 {
    let q_refs: Vec<&[f32]> = qs.iter().map(Vec::as_slice).collect();
    let hs: Vec<ApproxVector> = xs.iter().map(|x| path.to_approx(x)).collect();
    let c_refs: Vec<Option<&ApproxVector>> = hs.iter().map(Some).collect();
    let mut out = vec![f32::NAN; qs.len() * xs.len()];
    path.dots(&q_refs, &c_refs, &mut out);
    let mut worst = 0f64;
    for (q, qv) in qs.iter().enumerate() {
        for (k, xv) in xs.iter().enumerate() {
            let got = out[q * xs.len() + k];
            let exact = dot(qv, xv);
            let bound = path.error(qv, norm_up(qv), norm_up(xv), hs[k].error()) * bound_scale;
            let err = f64::from((got - exact).abs());
            assert!(
                err <= f64::from(bound),
                "{}: len {} q {q} k {k}: {got} vs {exact}, error {err:e} > bound {bound:e}",
                path.name,
                qv.len()
            );
            worst = worst.max(err / f64::from(bound));
        }
    }
    worst
}

/// Vectors whose half rounding errors all point the same way: elements
/// `±2^k·(1 + 2^-11)` (exactly halfway between two halves, rounded down to
/// even), scored against themselves, so the error is `u/(1+u)·‖x‖²`, about
/// 99 % of the bound. Plus random unit vectors, vectors with elements in
/// half's subnormal range after scaling, and vectors far from unit length.
fn bound_cases(rng: &mut Rng64, len: usize) -> Vec<Vec<f32>> {
    let mut v = Vec::new();
    for _ in 0..6 {
        v.push(
            (0..len)
                .map(|_| {
                    let k = rng.gen_range(-12..=0);
                    let s = if rng.gen_bool(0.5) { -1.0 } else { 1.0 };
                    s * two(k) * (1.0 + two(-11))
                })
                .collect(),
        );
    }
    for _ in 0..6 {
        v.push(unit(rng, len));
    }
    // One large element, the others in half's subnormal range once scaled.
    let mut tiny: Vec<f32> = (0..len).map(|_| rng.gen_range(-1e-6f32..1e-6)).collect();
    tiny[0] = 0.9;
    v.push(tiny);
    for scale in [1e15f32, 1e-15, 3e-39] {
        v.push(unit(rng, len).iter().map(|x| x * scale).collect());
    }
    v
}

/// The half path's bound holds on every case and is tight: the adversarial
/// vectors reach at least 97 % of it. Made 2 % smaller (`bound_scale` 0.98)
/// the test fails on them.
#[test]
fn f16_bound_holds_and_is_tight() {
    let mut rng = Rng64::seed_from_u64(2024);
    let lens: &[usize] = if cfg!(miri) { &[17] } else { &[16, 100, 384, 385, 1536] };
    for path in approx_paths().into_iter().filter(|p| p.format == half::Format::F16) {
        for &len in lens {
            let cases = bound_cases(&mut rng, len);
            let worst = worst_ratio(&path, &cases, &cases, 1.0);
            assert!(
                worst >= 0.97,
                "{} len {len}: the cases reach only {worst} of the bound",
                path.name
            );
        }
    }
}

/// The bound as a function: it grows with the norms and the length, and is
/// the f16 derivation's value at 384 dimensions.
#[test]
fn f16_bound_values() {
    let rho = half::f16_rel(384);
    assert!((0.000_492_7..0.000_492_9).contains(&rho), "{rho}");
    assert!(half::f16_error(1.0, 1.0, 384) >= rho as f32);
    assert!(half::f16_error(2.0, 1.0, 384) > half::f16_error(1.0, 1.0, 384));
    assert!(half::f16_error(1.0, 1.0, 3072) > half::f16_error(1.0, 1.0, 384));
    assert!(half::f16_error(1.0, 1.0, 384) < 0.13 * half::BF16_REL_ERROR);
    // The bfloat16 bound is the engine's old one up to 384 dimensions.
    assert_eq!(
        half::bf16_error(1.0001, 1.0001, 384),
        half::BF16_REL_ERROR * 1.0001 * 1.0001 + half::BF16_ABS_ERROR
    );
    assert!(half::bf16_error(1.0, 1.0, 1 << 20) > half::BF16_REL_ERROR);
}

/// The bfloat16 kernel stays within its documented error of the exact dot
/// products, pads any length, and leaves the other columns alone.
#[test]
fn bf16_dots_are_within_their_bound() {
    let Some(path) = approx_paths().into_iter().find(|p| p.format == half::Format::Bf16) else {
        eprintln!("skipped: no AVX-512 BF16 on this CPU");
        return;
    };
    let mut rng = Rng64::seed_from_u64(11);
    for len in [1, 31, 32, 100, 384] {
        let qs: Vec<Vec<f32>> = (0..11).map(|_| unit(&mut rng, len)).collect();
        let cs: Vec<Vec<f32>> = (0..600).map(|_| unit(&mut rng, len)).collect();
        let ch: Vec<ApproxVector> = cs.iter().map(|c| path.to_approx(c)).collect();
        let q_refs: Vec<&[f32]> = qs.iter().map(|q| &q[..]).collect();
        let c_refs: Vec<Option<&ApproxVector>> =
            ch.iter().enumerate().map(|(k, c)| (k % 7 != 3).then_some(c)).collect();
        let mut out = vec![-9.0f32; qs.len() * cs.len()];
        path.dots(&q_refs, &c_refs, &mut out);
        for (q, qv) in qs.iter().enumerate() {
            for (k, cv) in cs.iter().enumerate() {
                let got = out[q * cs.len() + k];
                if k % 7 == 3 {
                    assert_eq!(got, -9.0, "untouched column");
                    continue;
                }
                let exact = dot(qv, cv);
                assert!(
                    (got - exact).abs() <= path.error(qv, 1.0001, 1.0001, 0.0),
                    "len {len} q {q} k {k}: {got} vs {exact}"
                );
            }
        }
    }
}

/// Where the CPU has an approximate path, the public entries use it, within
/// its bound, and a batch of a worker's shape splits across threads with
/// the same bits as one thread.
#[test]
#[cfg_attr(miri, ignore = "no approximate path under Miri")]
fn dots_approx_runs_here_within_the_bound() {
    if !approx_available() {
        eprintln!("skipped: no approximate path on this CPU");
        return;
    }
    let mut rng = Rng64::seed_from_u64(4);
    let len = 384;
    let qs: Vec<Vec<f32>> = (0..20).map(|_| unit(&mut rng, len)).collect();
    let cs: Vec<Vec<f32>> = (0..700).map(|_| unit(&mut rng, len)).collect();
    let hs: Vec<ApproxVector> = cs.iter().map(|c| to_approx(c)).collect();
    let ex = hs.iter().map(ApproxVector::error).fold(0f32, f32::max);
    let q_refs: Vec<&[f32]> = qs.iter().map(Vec::as_slice).collect();
    let c_refs: Vec<Option<&ApproxVector>> = hs.iter().map(Some).collect();
    let mut out = vec![0.0; qs.len() * cs.len()];
    assert!(dots_approx(&q_refs, &c_refs, &mut out));
    let mut single = vec![0.0; qs.len() * cs.len()];
    let path = approx().copied().unwrap_or_else(portable_approx_path);
    (path.block)(&q_refs, &c_refs, &mut Out::new(&mut single, cs.len()));
    for (q, qv) in qs.iter().enumerate() {
        for (k, cv) in cs.iter().enumerate() {
            let got = out[q * cs.len() + k];
            assert_eq!(got.to_bits(), single[q * cs.len() + k].to_bits());
            assert!((got - dot(qv, cv)).abs() <= approx_error(qv, 1.0001, 1.0001, ex));
        }
    }
}

/// The dispatch picks the path the CPU has: NEON on aarch64, AVX2 (or
/// AVX-512) on x86-64 with FMA, and the matching approximate path.
#[test]
#[cfg_attr(miri, ignore = "Miri runs the portable paths only")]
fn the_fastest_path_is_selected() {
    if std::env::var_os("MATCHMAKER_PORTABLE_KERNEL").is_some() {
        assert_eq!(implementation(), "portable");
        assert_eq!(approx_implementation(), Some("i8-portable"));
        return;
    }
    #[cfg(target_arch = "aarch64")]
    {
        assert_eq!(implementation(), "neon");
        assert!(matches!(approx_implementation(), Some("i8-neon" | "f16-neon")));
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        assert!(["avx2", "avx512"].contains(&implementation()));
        assert!(approx_implementation().is_some_and(|p| p.starts_with("i8-") && p != "i8-portable"));
    }
    eprintln!(
        "exact path {}, approximate path {:?}",
        implementation(),
        approx_implementation()
    );
}

/// The 8-bit reference: the integer dot product of the quantized vectors,
/// converted and scaled as the module docs of `int8` define the score.
fn i8_reference(q: &[f32], x: &ApproxVector) -> f32 {
    let qq = int8::quantize(q);
    let i: i32 = qq
        .bytes
        .iter()
        .zip(x.bytes())
        .map(|(&a, &b)| i32::from(a) * i32::from(b))
        .sum();
    i as f32 * (qq.scale * x.scale())
}

/// Queries and candidates that reach the corners of the 8-bit format: all
/// at the largest magnitude, zero, a scale that would be subnormal, one
/// large element among tiny ones, and random ones.
fn i8_cases(rng: &mut Rng64, len: usize) -> Vec<Vec<f32>> {
    let mut v = vec![
        vec![1.0; len],
        (0..len).map(|j| if j % 2 == 0 { -3.5 } else { 3.5 }).collect(),
        vec![0.0; len],
        vec![1e-39; len],
    ];
    let mut spike: Vec<f32> = (0..len).map(|_| rng.gen_range(-1e-3f32..1e-3)).collect();
    spike[len / 2] = -0.9;
    v.push(spike);
    for _ in 0..8 {
        v.push(vec_of(rng, len));
        v.push(unit(rng, len));
    }
    v
}

/// Every 8-bit path gives exactly the reference's bits (their integer sums
/// are exact, and the one driver scales them), for every length around the
/// 16-, 32- and 64-byte steps, and leaves the other columns alone.
#[test]
fn every_i8_path_gives_the_same_bits() {
    let mut rng = Rng64::seed_from_u64(88);
    let i8_paths: Vec<ApproxPath> = approx_paths()
        .into_iter()
        .filter(|p| p.format == half::Format::I8)
        .collect();
    assert!(i8_paths.iter().any(|p| p.name == "i8-portable"));
    for &len in lengths().iter().chain(&[127, 128, 129, 1536]) {
        let cases = i8_cases(&mut rng, len);
        let qs: Vec<&[f32]> = cases.iter().map(Vec::as_slice).collect();
        let hs: Vec<ApproxVector> = cases.iter().map(|c| int8::to_i8(c)).collect();
        let cs: Vec<Option<&ApproxVector>> = hs.iter().enumerate().map(|(k, h)| (k % 5 != 3).then_some(h)).collect();
        for path in &i8_paths {
            let mut got = vec![7.0; qs.len() * cs.len()];
            path.dots(&qs, &cs, &mut got);
            for (q, qv) in qs.iter().enumerate() {
                for (k, h) in hs.iter().enumerate() {
                    let g = got[q * cs.len() + k];
                    if k % 5 == 3 {
                        assert_eq!(g, 7.0, "{} untouched column", path.name);
                    } else {
                        let want = i8_reference(qv, h);
                        assert_eq!(g.to_bits(), want.to_bits(), "{} len {len} q {q} k {k}", path.name);
                    }
                }
            }
        }
    }
}

/// The quantization records what it did: the sum of its bytes, an error at
/// least the exact distance between the vector and its copy (computed here
/// independently), a zero scale for zero or tiny vectors with the whole
/// vector as error, and a NaN scale for a non-finite vector.
#[test]
fn i8_quantization_measures_its_error() {
    let mut rng = Rng64::seed_from_u64(5);
    for &len in &[1, 64, 65, 384] {
        for x in i8_cases(&mut rng, len) {
            let q = int8::quantize(&x);
            assert_eq!(q.bytes.len(), len.div_ceil(64) * 64);
            assert!(q.bytes[len..].iter().all(|&b| b == 0));
            assert!(q.bytes.iter().all(|&b| b != i8::MIN));
            assert_eq!(q.sum, q.bytes.iter().map(|&b| i32::from(b)).sum::<i32>());
            if q.scale != 0.0 {
                let want: Vec<i8> = x
                    .iter()
                    .map(|&xv| (xv / q.scale).round_ties_even().clamp(-127.0, 127.0) as i8)
                    .collect();
                assert_eq!(
                    q.bytes[..len],
                    want[..],
                    "len {len}: not rounded to nearest, ties to even"
                );
            }
            let dist: f64 = x
                .iter()
                .zip(&q.bytes)
                .map(|(&xv, &b)| (f64::from(xv) - f64::from(q.scale) * f64::from(b)).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(f64::from(q.error) >= dist, "len {len}: {} < {dist}", q.error);
            assert!(
                f64::from(q.error) <= dist * 1.000_001 + 1e-30,
                "len {len}: not the measured error"
            );
            if x.iter().all(|&v| v.abs() < 1e-38) {
                assert_eq!(q.scale, 0.0);
            }
        }
    }
    // Scale 1 (the largest element is 127): halves round to even.
    let ties = [127.0, 0.5, 1.5, 2.5, -0.5, -2.5, 126.5, -126.5, 3.4999998, -0.50000006];
    let q = int8::quantize(&ties);
    assert_eq!(q.scale, 1.0);
    assert_eq!(q.bytes[..ties.len()], [127, 0, 2, 2, 0, -2, 126, -126, 3, -1]);
    let q = int8::quantize(&[1.0, f32::INFINITY]);
    assert!(q.scale.is_nan());
}

/// Queries whose rounding errors all point along the candidate: element
/// `j` is `(k_j ± 0.49)·t` with `t` the scale (its largest element is 1),
/// and the candidate is the signs of those ±0.49 (exactly representable up
/// to its scale's rounding). The error of their score is then
/// `Σ|q_j − q̃_j| ≈ ‖q − q̃‖·‖x‖`, the bound's main term.
fn i8_tight_pair(rng: &mut Rng64, len: usize) -> [Vec<f32>; 2] {
    let t = 1.0f32 / 127.0;
    let mut q = vec![1.0f32; len];
    let mut x = vec![0.0f32; len];
    for j in 1..len {
        let k = rng.gen_range(-120i32..=120) as f32;
        let d = if rng.gen_bool(0.5) { 0.49 } else { -0.49 };
        q[j] = (k + d) * t;
        x[j] = if d > 0.0 { 1.0 } else { -1.0 };
    }
    [q, x]
}

/// The 8-bit bound holds on every case, both ways round, and is tight: the
/// adversarial pairs reach at least 95 % of it, so made 10 % smaller
/// (`bound_scale` 0.9) the test fails on them.
#[test]
fn i8_bound_holds_and_is_tight() {
    let mut rng = Rng64::seed_from_u64(2026);
    let lens: &[usize] = if cfg!(miri) { &[17] } else { &[16, 100, 384, 385, 1536] };
    for path in approx_paths().into_iter().filter(|p| p.format == half::Format::I8) {
        for &len in lens {
            let mut cases = i8_cases(&mut rng, len);
            for scale in [1e15f32, 1e-15, 3e-39] {
                cases.push(unit(&mut rng, len).iter().map(|x| x * scale).collect());
            }
            worst_ratio(&path, &cases, &cases, 1.0);
            let tight = i8_tight_pair(&mut rng, len);
            let worst = worst_ratio(&path, &tight, &tight, 1.0);
            assert!(
                worst >= 0.95,
                "{} len {len}: the cases reach only {worst} of the bound",
                path.name
            );
        }
    }
}

/// The 8-bit bound as a function: its main terms are the two measured
/// errors, and it grows with each input.
#[test]
fn i8_bound_values() {
    let b = int8::i8_error(1.0, 0.007, 1.0, 0.012, 384);
    assert!((0.0190..0.0192).contains(&b), "{b}");
    assert!(int8::i8_error(1.0, 0.0, 1.0, 0.0, 384) < 1e-5);
    assert!(int8::i8_error(2.0, 0.007, 1.0, 0.012, 384) > b);
    assert!(int8::i8_error(1.0, 0.008, 1.0, 0.012, 384) > b);
    assert!(int8::i8_error(1.0, 0.007, 1.0, 0.013, 384) > b);
    assert!(int8::i8_error(1.0, 0.007, 1.0, 0.012, 3072) > b);
}
