//! The one way the pure core splits work across cores: rows of a row-major
//! matrix, in contiguous runs on rayon's pool (threads that live as long as
//! the process: a batch spawns none), results in row order.

use rayon::prelude::*;

/// Below this many elements a call stays on the calling thread (handing
/// work to other threads costs more than it saves).
const MIN_PARALLEL_ELEMENTS: usize = 50_000;

/// Runs of rows per thread of a parallel call (see [`map_rows_with`]).
const RUNS_PER_THREAD: usize = 4;

/// `f(state, j, row)` for every row `j` of `rows` (rows of length `n`),
/// with one `state` per run of rows made by `init`, split across the available
/// cores when the matrix is large enough. Returns the results in row order.
/// The split never changes a result: each row is computed by exactly one
/// call, on whichever thread.
pub fn map_rows_with<S, R: Send>(
    rows: &mut [f32],
    n: usize,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, usize, &mut [f32]) -> R + Sync,
) -> Vec<R> {
    if n == 0 {
        return Vec::new();
    }
    let count = rows.len() / n;
    let threads = rayon::current_num_threads().min(count);
    if threads <= 1 || rows.len() < MIN_PARALLEL_ELEMENTS {
        let mut state = init();
        return rows
            .chunks_mut(n)
            .enumerate()
            .map(|(j, row)| f(&mut state, j, row))
            .collect();
    }
    // Rows handed out a few runs per thread, not one run each: PostgreSQL
    // shares these cores, and a thread that loses its core would hold the
    // whole call up. One state per run rayon splits off (at most a few
    // per thread), results collected in row order.
    rows.par_chunks_mut(n)
        .enumerate()
        .with_min_len(count.div_ceil(threads * RUNS_PER_THREAD))
        .map_init(&init, |state, (j, row)| f(state, j, row))
        .collect()
}

/// `len` NaNs (the "not an eligible pair" of score rows), written on all
/// cores: at 100,000 attendees a batch's rows are 8 MB of fresh pages, and
/// touching them costs as much as the write.
pub fn nan_filled(len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    if len < MIN_PARALLEL_ELEMENTS {
        v.resize(len, f32::NAN);
    } else {
        v.par_extend(rayon::iter::repeat_n(f32::NAN, len));
    }
    v
}

/// [`map_rows_with`] without per-thread state.
pub fn map_rows<R: Send>(rows: &mut [f32], n: usize, f: impl Fn(usize, &mut [f32]) -> R + Sync) -> Vec<R> {
    map_rows_with(rows, n, || (), |_, j, row| f(j, row))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_filled_is_all_nan_at_any_length() {
        for len in [
            0,
            1,
            MIN_PARALLEL_ELEMENTS - 1,
            MIN_PARALLEL_ELEMENTS,
            3 * MIN_PARALLEL_ELEMENTS + 7,
        ] {
            let v = nan_filled(len);
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|x| x.is_nan()));
        }
    }

    #[test]
    fn every_row_once_in_order_whatever_the_split() {
        for (count, n) in [(0, 3), (1, 1), (7, 3), (40, 2_000), (3, 60_000)] {
            let mut rows = vec![0f32; count * n];
            let got = map_rows_with(
                &mut rows,
                n,
                || 0usize,
                |calls, j, row| {
                    *calls += 1;
                    row.fill(j as f32);
                    (j, row.len())
                },
            );
            assert_eq!(got, (0..count).map(|j| (j, n)).collect::<Vec<_>>());
            for (j, row) in rows.chunks(n.max(1)).enumerate() {
                assert!(row.iter().all(|&x| x == j as f32));
            }
        }
    }
}
