#!/usr/bin/env bash
# The local embedding model's benchmark, beside NumPy's float32 GEMM rate
# measured in the same run (JSON lines on stdout): fetches the model, builds
# model_bench in release, prints NumPy's GEMM GFLOP/s (one thread and all),
# then the model's figures.
#
#   bash scripts/bench-model.sh                 # 10,000-profile cold event
#   bash scripts/bench-model.sh --event 2000    # arguments go to model_bench
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL_DIR=$(bash scripts/fetch-model.sh | tail -n 1)
# The reference script's venv has NumPy; build it if missing.
bash scripts/model-reference.sh "$MODEL_DIR" >/dev/null
PY=target/model-venv/bin/python
nice -n 10 cargo build --release --bin model_bench >&2
lscpu | grep -E "Model name|^CPU\(s\)" >&2
for threads in 1 all; do
    if [[ "$threads" == 1 ]]; then
        limit=(OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1)
    else
        limit=(MATCHMAKER_BENCH=1)
    fi
    env "${limit[@]}" "$PY" - <<'PY'
import json, os, time
import numpy as np
# Shapes of the encoder's feed-forward on a chunk of 4,096 tokens.
a = np.random.rand(4096, 384).astype(np.float32)
b = np.random.rand(384, 1536).astype(np.float32)
a @ b
best = 0.0
for _ in range(5):
    t = time.perf_counter(); n = 10
    for _ in range(n):
        a @ b
    s = (time.perf_counter() - t) / n
    best = max(best, 2 * 4096 * 384 * 1536 / s / 1e9)
print(json.dumps({"numpy_gemm": "4096x384 @ 384x1536 float32", "threads": os.environ.get("OPENBLAS_NUM_THREADS", "all"), "gflop_per_s": round(best, 1)}))
PY
done
exec target/release/model_bench "$MODEL_DIR" "$@"
