#!/usr/bin/env bash
# The cost of one /metrics scrape with a large queue (issue #11): a
# throwaway PostgreSQL, N queue rows (default 100,000: 60 % done, 30 %
# pending, 5 % processing, 5 % failed) of a paused event (so the daemon
# claims nothing), a daemon with --metrics-addr, then scrapes that read the
# database (one every 5.2 s: the gauges are cached for 5 s) and scrapes
# served from the cache. Prints one JSON line with the CPU named.
#
#   bash scripts/bench-scrape.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/pg.sh
source scripts/pg.sh
N="${1:-100000}"
command -v curl >/dev/null || { apt-get install -y -q curl >/dev/null; }
cargo build --release --quiet
BIN=target/release/matchmaker
pg_start
"$BIN" migrate >/dev/null
"$PSQL" -q -X "$DATABASE_URL" -v ON_ERROR_STOP=1 -v n="$N" <<'SQL'
INSERT INTO events (code, name) VALUES ('scrape', 'scrape');
INSERT INTO matchmaking_queue (event_id, user_id, reason, status, locked_until, locked_by, attempts, last_error, finished_at)
SELECT e.id, gen_random_uuid(), 'joined', s,
       CASE WHEN s = 'processing' THEN now() + interval '1 hour' END,
       CASE WHEN s = 'processing' THEN 'bench' END,
       1, CASE WHEN s = 'failed' THEN 'bench' END,
       CASE WHEN s IN ('done', 'failed') THEN now() END
  FROM events e,
       LATERAL (SELECT CASE WHEN i % 20 < 12 THEN 'done' WHEN i % 20 < 18 THEN 'pending'
                            WHEN i % 20 = 18 THEN 'processing' ELSE 'failed' END AS s
                  FROM generate_series(1, :n) i) g;
VACUUM ANALYZE matchmaking_queue;
SQL
"$BIN" pause --event scrape >/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RUST_LOG=warn "$BIN" daemon --schedule "0 0 0 1 1 *" --metrics-addr "127.0.0.1:$PORT" >/dev/null 2>&1 &
DAEMON=$!
trap 'kill $DAEMON 2>/dev/null; wait $DAEMON 2>/dev/null; pg_stop' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
scrape() { curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$PORT/metrics"; }
sleep 5.2
uncached=(); cached=()
for _ in 1 2 3 4 5; do
    uncached+=("$(scrape)")
    for _ in $(seq 20); do cached+=("$(scrape)"); done
    sleep 5.2
done
check=$(curl -s "http://127.0.0.1:$PORT/metrics" | grep -c '^matchmaker_queue_rows{status="done"} ' || true)
python3 - "$N" "$check" "${uncached[*]}" "${cached[*]}" <<'PY'
import json, statistics, sys, platform
n, check, unc, cac = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split()
ms = lambda xs: sorted(float(x) * 1e3 for x in xs)
u, c = ms(unc), ms(cac)
flags = open("/proc/cpuinfo").read()
cpu = next((l.split(":", 1)[1].strip() for l in flags.splitlines() if l.startswith("model name")), platform.processor())
print(json.dumps({
    "bench": "scrape", "queue_rows": n, "gauge_present": check == 1,
    "scrape_reading_db_ms": {"p50": round(statistics.median(u), 2), "max": round(u[-1], 2)},
    "scrape_cached_ms": {"p50": round(statistics.median(c), 2), "max": round(c[-1], 2)},
    "cpu": cpu, "avx512f": " avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags, "avx2": " avx2" in flags,
}))
PY
