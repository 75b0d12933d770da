#!/usr/bin/env bash
# The kernel benchmark: every kernel path this CPU has, beside NumPy's float32
# GEMM on the same shapes, measured in the same run (JSON lines on stdout).
#
#   bash scripts/bench-kernel.sh            # all shapes
#   bash scripts/bench-kernel.sh --quick    # the worker's batch shapes only
#
# Installs NumPy with pip when missing. Figures depend on the machine's load:
# every line carries the one-minute load average; repeat when it is high.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import numpy" 2>/dev/null || python3 -m pip install -q numpy >&2
nice -n 10 cargo build --release --bin kernel_bench >&2
exec target/release/kernel_bench "$@"
