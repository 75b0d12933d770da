#!/usr/bin/env python3
"""NumPy's float32 GEMM on one shape of the kernel benchmark.

    python3 scripts/bench/kernel_gemm.py QUERIES CANDIDATES DIMS [REPS]

Times `A @ B.T` for A (QUERIES x DIMS) and B (CANDIDATES x DIMS), both
float32 and row-major, as the matchmaker kernel scores them (one vector per
row), after one warm-up call; prints one JSON line with the best and median
times and the FLOP rate (2 * Q * N * D per call). Called by
`src/bin/kernel_bench.rs` right before it measures the same shape, so the two
figures come from the same run and the same machine load.
"""

import json
import sys
import time

import numpy as np


def blas_name() -> str:
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # older NumPy: no dict mode
        return "unknown"


def main() -> None:
    q, n, d = (int(x) for x in sys.argv[1:4])
    reps = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    rng = np.random.default_rng(1)
    a = rng.standard_normal((q, d), dtype=np.float32)
    b = rng.standard_normal((n, d), dtype=np.float32)
    out = a @ b.T  # warm-up (and the allocation of the result)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        np.matmul(a, b.T, out=out)
        times.append(time.perf_counter() - t0)
    times.sort()
    best, median = times[0], times[len(times) // 2]
    flop = 2.0 * q * n * d
    print(
        json.dumps(
            {
                "numpy": np.__version__,
                "blas": blas_name(),
                "ms_best": round(best * 1e3, 3),
                "ms_median": round(median * 1e3, 3),
                "gflops": round(flop / best / 1e9, 2),
                "gflops_median": round(flop / median / 1e9, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
