#!/usr/bin/env bash
# Benchmarks matchmaker on a throwaway local PostgreSQL (issue #4) and prints
# ONE JSON line on stdout; progress goes to stderr, worker logs to a file
# (target/bench/<mode>-<time>.log unless --log).
#
#   bash scripts/bench.sh [options]
#
#   --mode cold|join|queue   what to measure (default cold):
#       cold   load an event, `admin-start-matching`, then W concurrent
#              `matchmaker run` processes, each re-invoked when it exits,
#              until the queue is drained; wall time, invocations, rows
#              claimed, match rows written, SQL statements, peak RSS; then
#              every list is checked against a NumPy brute force
#       join   a matched event of N (as cold), then one `matchmaker daemon`
#              while --joins attendees join one at a time: worker time and
#              join-to-committed latency (p50/p95/max), other attendees' rows
#              changed per join; verified again after SIGTERM to the daemon
#       queue  the queue mechanics alone: `matchmaker run --bench-null-scorer`
#   --n N              attendees (default 10000)
#   --dims D           embedding dimensions (default 384)
#   --algorithm A      cosine-v1 | hybrid-v1 (default cosine-v1)
#   --workers W        concurrent worker processes (default 1)
#   --k K              matches per attendee (default 3)
#   --seed S           seed of the generated event (default 1)
#   --joins J          join mode: measured joins (default 200; one more
#                      warm-up join is reported separately)
#   --metrics-scrape S join mode: the daemon serves --metrics-addr and /metrics
#                      is scraped every S seconds (default: metrics off);
#                      compare daemon_cpu_ms_per_join with and without
#   --daemon           cold mode: drain with W `matchmaker daemon` processes
#                      (stopped with SIGTERM once drained) instead of
#                      re-invoked `matchmaker run`
#   --max-runtime 45s  `matchmaker run --max-runtime` (default 45s)
#   --timeout SECS     give up when the queue has not drained (default 3600)
#   --log FILE         worker log file
#   --keep             keep PostgreSQL up after measuring, until Ctrl-C
#   --check-verifier   cold mode: then corrupt the stored lists four ways
#                      (a score, two partners' order, a missing row, an
#                      excluded partner), one at a time, and fail unless the
#                      verifier reports each ("verifier_catches" in the JSON)
#   -h, --help         this text
#
# Examples:
#   bash scripts/bench.sh --n 10000
#   bash scripts/bench.sh --mode join --n 2000 --joins 30
#   bash scripts/bench.sh --mode queue --n 20000
#   bash scripts/bench.sh --n 2000 --algorithm hybrid-v1 --workers 2
#
# Exit status: 0 when every list is exact (queue mode: every row processed),
# 1 otherwise, 2 for usage errors, 130 when interrupted. It builds
# `cargo build --release`, needs Python 3.11+ (installs NumPy with pip when
# missing; no database driver: it talks to PostgreSQL through psql), and
# starts PostgreSQL through scripts/pg.sh with pg_stat_statements preloaded.
# Everything it started (PostgreSQL, workers, the daemon) is stopped on exit,
# also on Ctrl-C. Environment: PYTHON (default python3), RUST_LOG for the
# workers (default warn).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

# Until the driver runs, Ctrl-C or SIGTERM ends the script (after the
# command it is waiting for returns).
trap 'echo "interrupted" >&2; exit 130' INT TERM HUP

PYTHON="${PYTHON:-python3}"
for arg in "$@"; do
    case "$arg" in
        -h | --help) usage; exit 0 ;;
    esac
done

bench_log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }

if ! command -v "$PYTHON" >/dev/null 2>&1 \
    || ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi
# Reject bad options before building anything.
"$PYTHON" scripts/bench/bench.py --validate-only "$@" || exit 2

if ! "$PYTHON" -c 'import numpy' 2>/dev/null; then
    bench_log "installing NumPy (pip install --quiet numpy)"
    "$PYTHON" -m pip install --quiet numpy
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install Rust (https://rustup.rs) and retry" >&2
    exit 1
fi

bench_log "building matchmaker (cargo build --release)"
cargo build --release --quiet --bin matchmaker
MM="${CARGO_TARGET_DIR:-target}/release/matchmaker"

# shellcheck source=scripts/pg.sh
source scripts/pg.sh
PG_EXTRA_OPTS="-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.max=10000 -c pg_stat_statements.track=top -c pg_stat_statements.track_planning=on" \
    pg_start
export RUST_LOG="${RUST_LOG:-warn}"
# Scratch files of the driver, removed with the cluster whatever happens to it.
BENCH_TMP="$(mktemp -d /tmp/matchmaker-bench.XXXXXX)"
export BENCH_TMP
trap 'pg_stop; rm -rf "$BENCH_TMP"' EXIT

# The driver runs in the background so that this shell can forward SIGINT and
# SIGTERM to it; it stops its workers and daemon, and the EXIT trap set by
# pg_start then removes PostgreSQL.
"$PYTHON" scripts/bench/bench.py --binary "$MM" "$@" &
BENCH_PID=$!
trap 'kill -TERM "$BENCH_PID" 2>/dev/null || true' INT TERM HUP
# `wait` returns early when a trapped signal arrives; wait again until the
# driver has exited, then take its own exit status.
while kill -0 "$BENCH_PID" 2>/dev/null; do
    wait "$BENCH_PID" || true
done
rc=0
wait "$BENCH_PID" || rc=$?
exit "$rc"
