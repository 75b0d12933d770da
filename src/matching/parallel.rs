//! The one way the pure core splits work across cores: rows of a row-major
//! matrix, in contiguous runs per thread, results in row order.

/// Below this many elements a call stays on the calling thread (spawning
/// threads costs more than it saves).
const MIN_PARALLEL_ELEMENTS: usize = 50_000;

/// `f(state, j, row)` for every row `j` of `rows` (rows of length `n`),
/// with one `state` per thread made by `init`, split across the available
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
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(count);
    if threads <= 1 || rows.len() < MIN_PARALLEL_ELEMENTS {
        let mut state = init();
        return rows
            .chunks_mut(n)
            .enumerate()
            .map(|(j, row)| f(&mut state, j, row))
            .collect();
    }
    let per = count.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = rows
            .chunks_mut(per * n)
            .enumerate()
            .map(|(c, chunk)| {
                let (init, f) = (&init, &f);
                s.spawn(move || {
                    let mut state = init();
                    chunk
                        .chunks_mut(n)
                        .enumerate()
                        .map(|(j, row)| f(&mut state, c * per + j, row))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// [`map_rows_with`] without per-thread state.
pub fn map_rows<R: Send>(rows: &mut [f32], n: usize, f: impl Fn(usize, &mut [f32]) -> R + Sync) -> Vec<R> {
    map_rows_with(rows, n, || (), |_, j, row| f(j, row))
}

#[cfg(test)]
mod tests {
    use super::*;

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
