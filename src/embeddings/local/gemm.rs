//! The encoder's matrix products: `C = A · B` where `B` is packed once into
//! panels of [`NR`] columns (the model's weights are packed at load time,
//! attention's keys and values per head), with AVX-512 and AVX2 micro-kernels
//! and a portable one.
//!
//! # The same bits on every path, thread count and batch
//!
//! Every element of `C` is computed the same way whatever the path, the tile
//! it falls in and the way rows are shared between threads: an accumulator
//! starts at zero and takes one fused multiply-add per `k`, in increasing
//! `k` (no blocking over `k`, no reassociation); the epilogue then adds the
//! bias (a plain add) and applies the activation. The SIMD kernels only
//! compute many such elements side by side, and `f32::mul_add` is the same
//! fused operation, so a text's vector does not depend on which kernel ran,
//! on `RAYON_NUM_THREADS` or on the other texts of its chunk.

use rayon::prelude::*;
use std::cell::RefCell;

/// Columns per packed panel: two AVX-512 registers, four AVX2 ones.
pub const NR: usize = 32;

/// Most rows of one micro-tile (the AVX-512 kernel's; AVX2 uses 6).
const MR_MAX: usize = 12;

/// Rows per parallel task: a packed block of `A` (≤ 96 × 1,536 floats)
/// stays in L2 while every panel of `B` passes over it.
const BLOCK_ROWS: usize = 96;

/// `B` (`k` × `n`) in panels: panel `p` holds columns `NR·p ..`, row by
/// row (`NR` floats per `k`), zero-padded past `n`.
#[derive(Debug, Clone)]
pub struct Packed {
    k: usize,
    n: usize,
    data: Vec<f32>,
}

impl Packed {
    /// Packs the transpose of `w`, an `n` × `k` row-major matrix (a linear
    /// layer's weight, out × in), so that `A · Packed` is `A · wᵀ`.
    pub fn from_transposed(w: &[f32], n: usize, k: usize) -> Self {
        debug_assert!(w.len() >= n * k);
        let mut p = Self::zeros(k, n);
        p.repack_transposed(w, k, n, k);
        p
    }

    /// Packs `b`, a `k` × `n` matrix whose rows start `ld` floats apart.
    pub fn from_rows(b: &[f32], ld: usize, k: usize, n: usize) -> Self {
        let mut p = Self::zeros(k, n);
        p.repack_rows(b, ld, k, n);
        p
    }

    /// [`Packed::from_rows`] into this buffer (reusing its allocation).
    pub fn repack_rows(&mut self, b: &[f32], ld: usize, k: usize, n: usize) {
        self.reset(k, n);
        for kk in 0..k {
            let row = &b[kk * ld..kk * ld + n];
            for (panel, cols) in row.chunks(NR).enumerate() {
                let at = panel * k * NR + kk * NR;
                self.data[at..at + cols.len()].copy_from_slice(cols);
            }
        }
    }

    /// Packs the transpose of `b`, an `n` × `k` matrix whose rows start
    /// `ld` floats apart, into this buffer (attention's keys).
    pub fn repack_transposed(&mut self, b: &[f32], ld: usize, n: usize, k: usize) {
        self.reset(k, n);
        for j in 0..n {
            let (panel, col) = (j / NR, j % NR);
            let base = panel * k * NR + col;
            for (kk, &x) in b[j * ld..j * ld + k].iter().enumerate() {
                self.data[base + kk * NR] = x;
            }
        }
    }

    fn zeros(k: usize, n: usize) -> Self {
        let mut p = Self {
            k: 0,
            n: 0,
            data: Vec::new(),
        };
        p.reset(k, n);
        p
    }

    fn reset(&mut self, k: usize, n: usize) {
        self.k = k;
        self.n = n;
        self.data.clear();
        self.data.resize(n.div_ceil(NR) * k * NR, 0.0);
    }

    /// Rows (the inner dimension of the product).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns.
    pub fn n(&self) -> usize {
        self.n
    }

    fn panel(&self, p: usize) -> &[f32] {
        &self.data[p * self.k * NR..(p + 1) * self.k * NR]
    }
}

/// What the epilogue does to `acc` before storing it.
#[derive(Debug, Clone, Copy)]
pub enum Epilogue<'a> {
    /// Store the product as it is.
    None,
    /// Add a bias per column.
    Bias(&'a [f32]),
    /// Add a bias per column, then apply GELU (the erf form).
    BiasGelu(&'a [f32]),
}

/// Which micro-kernel runs: the matching kernel's choice
/// ([`crate::matching::kernel::implementation`], so `MATCHMAKER_KERNEL` and
/// `MATCHMAKER_PORTABLE_KERNEL` apply here too). All give the same bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// AVX-512F: 12 rows × 32 columns per tile.
    Avx512,
    /// AVX2 and FMA: 6 rows × 16 columns per step.
    Avx2,
    /// `f32::mul_add` (NEON's fused multiply-add on aarch64).
    Portable,
}

impl Path {
    /// This process's path.
    pub fn current() -> Self {
        match crate::matching::kernel::implementation() {
            "avx512" => Path::Avx512,
            "avx2" => Path::Avx2,
            _ => Path::Portable,
        }
    }

    fn rows(self) -> usize {
        match self {
            Path::Avx512 => MR_MAX,
            Path::Avx2 => 6,
            Path::Portable => 4,
        }
    }
}

/// Defines `$name(path, args…)`, which runs the `#[inline(always)]`
/// function `$body(path, args…)` compiled for the path's instruction set, so that
/// the element-wise code (packing, epilogues, softmax, layer norm) is
/// vectorised as wide as the kernels. Plain IEEE adds, multiplies, divides
/// and square roots give the same bits at any width, so this changes speed
/// only.
macro_rules! wide {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $t:ty),*) = $body:path) => {
        $(#[$m])*
        $vis fn $name(path: $crate::embeddings::local::gemm::Path, $($a: $t),*) {
            #[cfg(all(target_arch = "x86_64", not(miri)))]
            {
                #[target_feature(enable = "avx512f")]
                fn on_avx512(path: $crate::embeddings::local::gemm::Path, $($a: $t),*) {
                    $body(path, $($a),*)
                }
                #[target_feature(enable = "avx2")]
                fn on_avx2(path: $crate::embeddings::local::gemm::Path, $($a: $t),*) {
                    $body(path, $($a),*)
                }
                use $crate::embeddings::local::gemm::Path;
                match path {
                    // SAFETY: the CPU has AVX-512F (checked here).
                    Path::Avx512 if std::arch::is_x86_feature_detected!("avx512f") => {
                        return unsafe { on_avx512(path, $($a),*) };
                    }
                    // SAFETY: the CPU has AVX2 (checked here).
                    Path::Avx2 if std::arch::is_x86_feature_detected!("avx2") => {
                        return unsafe { on_avx2(path, $($a),*) };
                    }
                    _ => {}
                }
            }
            $body(path, $($a),*)
        }
    };
}
pub(crate) use wide;

/// Every path this CPU can run, fastest first (for benchmarks and tests).
pub fn paths() -> Vec<Path> {
    let mut v = Vec::new();
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            v.push(Path::Avx512);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            v.push(Path::Avx2);
        }
    }
    v.push(Path::Portable);
    v
}

thread_local! {
    /// Each thread's packed block of `A`.
    static A_BLOCK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The left operand: `rows` rows of `b.k()` floats, starting `ld` floats
/// apart in `data`.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    /// The first row's first element onwards.
    pub data: &'a [f32],
    /// Floats from one row's start to the next's.
    pub ld: usize,
    /// How many rows.
    pub rows: usize,
}

/// `C = A · B` (then the epilogue) into `C`, whose rows start `ldc` floats
/// apart, on this thread.
pub fn matmul(path: Path, a: Rows, b: &Packed, c: &mut [f32], ldc: usize, epi: Epilogue) {
    let all = Panels {
        b,
        range: 0..b.n.div_ceil(NR),
    };
    matmul_panels(path, a, all, c, ldc, epi);
}

/// Some of a packed operand's panels: the columns `NR·range.start ..
/// NR·range.end` (clipped to `n`) of the product are computed, the others
/// left as they are.
#[derive(Debug, Clone)]
struct Panels<'a> {
    b: &'a Packed,
    range: std::ops::Range<usize>,
}

fn matmul_panels(path: Path, a: Rows, b: Panels, c: &mut [f32], ldc: usize, epi: Epilogue) {
    A_BLOCK.with(|buf| {
        let mut buf = buf.borrow_mut();
        for start in (0..a.rows).step_by(BLOCK_ROWS) {
            let block_a = Rows {
                data: &a.data[start * a.ld..],
                ld: a.ld,
                rows: BLOCK_ROWS.min(a.rows - start),
            };
            block(path, block_a, b.clone(), &mut c[start * ldc..], ldc, epi, &mut buf);
        }
    });
}

/// [`matmul`] with contiguous `A` (`m` rows of `b.k()`) and `C` (`b.n()`
/// wide), its blocks of rows shared among rayon's threads; with fewer blocks
/// than threads (a chunk of a few short texts), its panels instead.
pub fn matmul_par(path: Path, a: &[f32], m: usize, b: &Packed, c: &mut [f32], epi: Epilogue) {
    let (k, n) = (b.k, b.n);
    debug_assert!(a.len() >= m * k && c.len() >= m * n);
    let threads = rayon::current_num_threads();
    let panels = n.div_ceil(NR);
    if m.div_ceil(BLOCK_ROWS) < threads && panels >= 2 && m > 0 {
        let per = panels.div_ceil(threads.min(panels));
        let rows = Rows {
            data: a,
            ld: k,
            rows: m,
        };
        // Each task fills its columns of its own copy of C (at most
        // 96 · threads rows), then the columns are gathered.
        let parts: Vec<(std::ops::Range<usize>, Vec<f32>)> = (0..panels)
            .step_by(per)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|p0| {
                let range = p0..(p0 + per).min(panels);
                let mut part = vec![0.0f32; m * n];
                let these = Panels {
                    b,
                    range: range.clone(),
                };
                matmul_panels(path, rows, these, &mut part, n, epi);
                (range, part)
            })
            .collect();
        for (range, part) in parts {
            let cols = range.start * NR..(range.end * NR).min(n);
            for (dst, src) in c[..m * n].chunks_mut(n).zip(part.chunks(n)) {
                dst[cols.clone()].copy_from_slice(&src[cols.clone()]);
            }
        }
        return;
    }
    c[..m * n]
        .par_chunks_mut(BLOCK_ROWS * n)
        .zip(a[..m * k].par_chunks(BLOCK_ROWS * k))
        .for_each(|(c, a)| {
            let rows = Rows {
                data: a,
                ld: k,
                rows: a.len() / k.max(1),
            };
            matmul(path, rows, b, c, n, epi)
        });
}

wide!(
    /// One block of at most [`BLOCK_ROWS`] rows: packs it in tiles of the
    /// path's height (`[k][row]` each), then runs every panel over every tile.
    fn block(a: Rows, b: Panels, c: &mut [f32], ldc: usize, epi: Epilogue, buf: &mut Vec<f32>) = block_on);

#[inline(always)]
fn block_on(path: Path, a: Rows, b: Panels, c: &mut [f32], ldc: usize, epi: Epilogue, buf: &mut Vec<f32>) {
    let (k, m) = (b.b.k, a.rows);
    let mr = path.rows();
    buf.clear();
    buf.resize(m * k, 0.0);
    for t in (0..m).step_by(mr) {
        let rows = mr.min(m - t);
        let src: Vec<&[f32]> = (t..t + rows).map(|i| &a.data[i * a.ld..i * a.ld + k]).collect();
        for (kk, dst) in buf[t * k..(t + rows) * k].chunks_exact_mut(rows).enumerate() {
            for (d, row) in dst.iter_mut().zip(&src) {
                *d = row[kk];
            }
        }
    }
    let tiles: Vec<(usize, Tile)> = (0..m)
        .step_by(mr)
        .map(|t| {
            let rows = mr.min(m - t);
            let data = &buf[t * k..(t + rows) * k];
            (
                t,
                Tile {
                    data,
                    rows,
                    stride: rows,
                },
            )
        })
        .collect();
    run_tiles_on(path, k, &tiles, b, c, ldc, epi);
}

wide!(fn run_tiles(k: usize, tiles: &[(usize, Tile)], b: Panels, c: &mut [f32], ldc: usize, epi: Epilogue) = run_tiles_on);

/// Every panel of `b` over every tile (`(first row, tile)`), stored into
/// `c` through the epilogue.
#[inline(always)]
fn run_tiles_on(path: Path, k: usize, tiles: &[(usize, Tile)], b: Panels, c: &mut [f32], ldc: usize, epi: Epilogue) {
    let mut out = [[0.0f32; NR]; MR_MAX];
    let Panels { b, range } = b;
    for p in range {
        let panel = b.panel(p);
        let cols = NR.min(b.n - p * NR);
        for &(t, tile) in tiles {
            product(path, k, tile, panel, &mut out);
            for (r, acc) in out.iter().enumerate().take(tile.rows) {
                let dst = &mut c[(t + r) * ldc + p * NR..(t + r) * ldc + p * NR + cols];
                store(dst, &acc[..cols], p * NR, epi);
            }
        }
    }
}

/// `C = A · B` where `at` holds `A` transposed (`b.k()` rows of `m`
/// floats, `at.ld` apart, `at.rows` = `b.k()`): no packing, the kernels read
/// `A`'s tiles in place. For attention, whose probabilities are computed
/// key-major.
pub fn matmul_transposed(path: Path, at: Rows, m: usize, b: &Packed, c: &mut [f32], ldc: usize, epi: Epilogue) {
    let k = b.k;
    assert!(at.rows == k && at.ld >= m);
    let mr = path.rows();
    let tiles: Vec<(usize, Tile)> = (0..m)
        .step_by(mr)
        .map(|t| {
            let rows = mr.min(m - t);
            let data = &at.data[t..];
            (
                t,
                Tile {
                    data,
                    rows,
                    stride: at.ld,
                },
            )
        })
        .collect();
    let all = Panels {
        b,
        range: 0..b.n.div_ceil(NR),
    };
    run_tiles(path, k, &tiles, all, c, ldc, epi);
}

#[inline(always)]
fn store(dst: &mut [f32], acc: &[f32], col0: usize, epi: Epilogue) {
    match epi {
        Epilogue::None => dst.copy_from_slice(acc),
        Epilogue::Bias(bias) => {
            for ((d, &x), &b) in dst.iter_mut().zip(acc).zip(&bias[col0..]) {
                *d = x + b;
            }
        }
        Epilogue::BiasGelu(bias) => {
            for ((d, &x), &b) in dst.iter_mut().zip(acc).zip(&bias[col0..]) {
                *d = super::math::gelu(x + b);
            }
        }
    }
}

/// A tile of the left operand, `k`-major: element `(kk, r)` (row `r`,
/// column `kk` of `A`) is `data[kk * stride + r]`.
#[derive(Clone, Copy)]
struct Tile<'a> {
    data: &'a [f32],
    rows: usize,
    stride: usize,
}

/// `out[r][j] = Σₖ A[r][k] · panel[k][j]` for the tile's rows, by the
/// path's kernel (see the module docs for the order of the arithmetic).
fn product(path: Path, k: usize, tile: Tile, panel: &[f32], out: &mut [[f32; NR]; MR_MAX]) {
    assert!(
        tile.rows <= path.rows()
            && tile.rows <= tile.stride
            && (k == 0 || tile.data.len() >= (k - 1) * tile.stride + tile.rows)
            && panel.len() >= k * NR
    );
    match path {
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        Path::Avx512 if std::arch::is_x86_feature_detected!("avx512f") => x86::avx512(k, tile, panel, out),
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        Path::Avx2 if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") => {
            x86::avx2(k, tile, panel, out)
        }
        _ => portable(k, tile, panel, out),
    }
}

fn portable(k: usize, tile: Tile, panel: &[f32], out: &mut [[f32; NR]; MR_MAX]) {
    for row in out.iter_mut().take(tile.rows) {
        *row = [0.0; NR];
    }
    for kk in 0..k {
        let b = &panel[kk * NR..(kk + 1) * NR];
        for (r, row) in out.iter_mut().enumerate().take(tile.rows) {
            let a = tile.data[kk * tile.stride + r];
            for (acc, &bj) in row.iter_mut().zip(b) {
                *acc = a.mul_add(bj, *acc);
            }
        }
    }
}

#[cfg(all(target_arch = "x86_64", not(miri)))]
mod x86 {
    use super::{Tile, MR_MAX, NR};
    use std::arch::x86_64::*;

    /// Dispatches a tile of `rows` (1..=12) to the AVX-512 kernel of that
    /// height (a constant, so the accumulators live in registers).
    pub(super) fn avx512(k: usize, tile: Tile, panel: &[f32], out: &mut [[f32; NR]; MR_MAX]) {
        // SAFETY: the caller checked avx512f and asserted that `tile` holds
        // element (k - 1, rows - 1) and `panel` k * NR floats, the most the
        // kernels read.
        unsafe {
            match tile.rows {
                12 => avx512_rows::<12>(k, tile.data, tile.stride, panel, out),
                11 => avx512_rows::<11>(k, tile.data, tile.stride, panel, out),
                10 => avx512_rows::<10>(k, tile.data, tile.stride, panel, out),
                9 => avx512_rows::<9>(k, tile.data, tile.stride, panel, out),
                8 => avx512_rows::<8>(k, tile.data, tile.stride, panel, out),
                7 => avx512_rows::<7>(k, tile.data, tile.stride, panel, out),
                6 => avx512_rows::<6>(k, tile.data, tile.stride, panel, out),
                5 => avx512_rows::<5>(k, tile.data, tile.stride, panel, out),
                4 => avx512_rows::<4>(k, tile.data, tile.stride, panel, out),
                3 => avx512_rows::<3>(k, tile.data, tile.stride, panel, out),
                2 => avx512_rows::<2>(k, tile.data, tile.stride, panel, out),
                _ => avx512_rows::<1>(k, tile.data, tile.stride, panel, out),
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_rows<const R: usize>(
        k: usize,
        tile: &[f32],
        stride: usize,
        panel: &[f32],
        out: &mut [[f32; NR]; MR_MAX],
    ) {
        let mut lo = [_mm512_setzero_ps(); R];
        let mut hi = [_mm512_setzero_ps(); R];
        let (a, b) = (tile.as_ptr(), panel.as_ptr());
        for kk in 0..k {
            // SAFETY: kk < k, so kk * NR + 32 ≤ panel.len() and
            // kk * stride + r < tile.len() for r < R (the caller's bounds).
            unsafe {
                let b0 = _mm512_loadu_ps(b.add(kk * NR));
                let b1 = _mm512_loadu_ps(b.add(kk * NR + 16));
                for r in 0..R {
                    let x = _mm512_set1_ps(*a.add(kk * stride + r));
                    lo[r] = _mm512_fmadd_ps(x, b0, lo[r]);
                    hi[r] = _mm512_fmadd_ps(x, b1, hi[r]);
                }
            }
        }
        for r in 0..R {
            // SAFETY: out[r] is 32 floats.
            unsafe {
                _mm512_storeu_ps(out[r].as_mut_ptr(), lo[r]);
                _mm512_storeu_ps(out[r].as_mut_ptr().add(16), hi[r]);
            }
        }
    }

    /// Dispatches a tile of `rows` (1..=6) to the AVX2 kernel of that height.
    pub(super) fn avx2(k: usize, tile: Tile, panel: &[f32], out: &mut [[f32; NR]; MR_MAX]) {
        // SAFETY: the caller checked avx2 and fma; bounds as in `avx512`.
        unsafe {
            match tile.rows {
                6 => avx2_rows::<6>(k, tile.data, tile.stride, panel, out),
                5 => avx2_rows::<5>(k, tile.data, tile.stride, panel, out),
                4 => avx2_rows::<4>(k, tile.data, tile.stride, panel, out),
                3 => avx2_rows::<3>(k, tile.data, tile.stride, panel, out),
                2 => avx2_rows::<2>(k, tile.data, tile.stride, panel, out),
                _ => avx2_rows::<1>(k, tile.data, tile.stride, panel, out),
            }
        }
    }

    /// A panel as two halves of 16 columns (12 accumulators each pass).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_rows<const R: usize>(
        k: usize,
        tile: &[f32],
        stride: usize,
        panel: &[f32],
        out: &mut [[f32; NR]; MR_MAX],
    ) {
        let (a, b) = (tile.as_ptr(), panel.as_ptr());
        for half in [0usize, 16] {
            let mut lo = [_mm256_setzero_ps(); R];
            let mut hi = [_mm256_setzero_ps(); R];
            for kk in 0..k {
                // SAFETY: as in `avx512_rows`; half + 16 ≤ NR.
                unsafe {
                    let b0 = _mm256_loadu_ps(b.add(kk * NR + half));
                    let b1 = _mm256_loadu_ps(b.add(kk * NR + half + 8));
                    for r in 0..R {
                        let x = _mm256_set1_ps(*a.add(kk * stride + r));
                        lo[r] = _mm256_fmadd_ps(x, b0, lo[r]);
                        hi[r] = _mm256_fmadd_ps(x, b1, hi[r]);
                    }
                }
            }
            for r in 0..R {
                // SAFETY: out[r] is 32 floats and half + 16 ≤ 32.
                unsafe {
                    _mm256_storeu_ps(out[r].as_mut_ptr().add(half), lo[r]);
                    _mm256_storeu_ps(out[r].as_mut_ptr().add(half + 8), hi[r]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The product in f64 and, for bit comparisons, each element by the
    /// module's definition (zero, then one fused multiply-add per k).
    fn reference(a: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> (Vec<f64>, Vec<f32>) {
        let mut wide = vec![0.0; m * n];
        let mut bits = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f32;
                let mut acc64 = 0.0f64;
                for kk in 0..k {
                    acc = a[i * k + kk].mul_add(w[j * k + kk], acc);
                    acc64 += f64::from(a[i * k + kk]) * f64::from(w[j * k + kk]);
                }
                bits[i * n + j] = acc;
                wide[i * n + j] = acc64;
            }
        }
        (wide, bits)
    }

    #[test]
    fn every_path_gives_the_defined_bits_for_odd_shapes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for &(m, n, k) in &[(1, 1, 1), (13, 33, 7), (97, 64, 40), (200, 70, 384), (5, 32, 1536)] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let w: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let (wide, bits) = reference(&a, &w, m, n, k);
            let packed = Packed::from_transposed(&w, n, k);
            for path in paths() {
                let mut c = vec![f32::NAN; m * n];
                let rows = Rows {
                    data: &a,
                    ld: k,
                    rows: m,
                };
                matmul(path, rows, &packed, &mut c, n, Epilogue::None);
                assert_eq!(c, bits, "{path:?} {m}x{n}x{k}");
                let mut par = vec![f32::NAN; m * n];
                matmul_par(path, &a, m, &packed, &mut par, Epilogue::None);
                assert_eq!(par, bits, "{path:?} parallel {m}x{n}x{k}");
                for (x, y) in c.iter().zip(&wide) {
                    assert!((f64::from(*x) - y).abs() < 1e-4 * (k as f64).sqrt(), "{path:?}");
                }
            }
        }
    }

    #[test]
    fn packing_rows_and_transposes_agree_and_the_epilogue_adds_the_bias() {
        let (m, n, k) = (9, 40, 17);
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let a: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let w: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
        // The same matrix as k × n rows, with a row stride wider than n.
        let ld = n + 3;
        let mut rows = vec![0.0f32; k * ld];
        for j in 0..n {
            for kk in 0..k {
                rows[kk * ld + j] = w[j * k + kk];
            }
        }
        let t = Packed::from_transposed(&w, n, k);
        let r = Packed::from_rows(&rows, ld, k, n);
        let mut again = Packed::from_rows(&[0.0; 4], 2, 2, 2);
        again.repack_transposed(&w, k, n, k);
        assert_eq!(t.data, r.data);
        assert_eq!(t.data, again.data);
        let bias: Vec<f32> = (0..n).map(|j| j as f32).collect();
        let (_, bits) = reference(&a, &w, m, n, k);
        let mut c = vec![0.0f32; m * n];
        let rows = Rows {
            data: &a,
            ld: k,
            rows: m,
        };
        matmul(Path::current(), rows, &t, &mut c, n, Epilogue::Bias(&bias));
        for i in 0..m {
            for j in 0..n {
                assert_eq!(c[i * n + j], bits[i * n + j] + bias[j]);
            }
        }
    }
}
