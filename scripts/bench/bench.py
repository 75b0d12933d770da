#!/usr/bin/env python3
"""The matchmaker benchmark driver (run it through `scripts/bench.sh`).

`scripts/bench.sh` builds the release binary, starts a throwaway PostgreSQL
with `pg_stat_statements` preloaded, and runs this driver with DATABASE_URL
and PSQL set. The driver then, for one mode:

* cold:  generates and loads an event, `admin-start-matching`, runs W
         concurrent `matchmaker run` processes (each re-invoked when it
         exits, as cron would) until the event's queue is drained, measures,
         and verifies every list against a NumPy brute force;
* join:  the same, then one `matchmaker daemon` while attendees join one at
         a time; per-join latency and write amplification, verified again
         after the daemon stops;
* queue: the queue mechanics alone (`run --bench-null-scorer`).

It prints one JSON line on stdout; progress goes to stderr and the workers'
logs to a file. The exit status is 0 when the event is exact (queue mode:
when every row was processed), 1 otherwise, 130 when interrupted.

Harness statements run under their own role (`bench_observer`), so the SQL
statement counts from `pg_stat_statements` are the workers' alone.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pgclient import OBSERVER_ROLE, Psql, PsqlError, Session, literal, with_database  # noqa: E402
import procs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def log(msg: str) -> None:
    """Progress on stderr."""
    print(f"\033[1;35m[bench]\033[0m {msg}", file=sys.stderr, flush=True)


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived."""


def _on_signal(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line (also validated by bench.sh before it builds)."""
    p = argparse.ArgumentParser(
        prog="scripts/bench.sh",
        description="Benchmark matchmaker on a throwaway PostgreSQL; prints one JSON line.",
    )
    p.add_argument("--mode", choices=["cold", "join", "queue"], default="cold", help="what to measure (default cold)")
    p.add_argument("--n", type=int, default=10000, help="attendees (default 10000)")
    p.add_argument("--dims", type=int, default=384, help="embedding dimensions (default 384)")
    p.add_argument("--algorithm", choices=["cosine-v1", "hybrid-v1"], default="cosine-v1", help="default cosine-v1")
    p.add_argument("--workers", type=int, default=1, help="concurrent `matchmaker run` processes (default 1)")
    p.add_argument("--k", type=int, default=3, help="matches per attendee (default 3)")
    p.add_argument("--seed", type=int, default=1, help="random seed of the generated event (default 1)")
    p.add_argument("--joins", type=int, default=200, help="join mode: attendees joining one by one (default 200)")
    p.add_argument(
        "--metrics-scrape",
        type=float,
        metavar="SECS",
        help="join mode: run the daemon with --metrics-addr and scrape /metrics every SECS seconds "
        "(default: metrics off), to measure what metrics cost",
    )
    p.add_argument(
        "--daemon",
        action="store_true",
        help="cold mode: drain with W long-running `matchmaker daemon` processes instead of `run` invocations",
    )
    p.add_argument("--max-runtime", default="45s", help="`matchmaker run --max-runtime` (default 45s)")
    p.add_argument("--timeout", type=float, default=3600, help="give up draining after this many seconds")
    p.add_argument("--log", help="worker log file (default target/bench/<mode>-<time>.log)")
    p.add_argument("--binary", default=str(REPO / "target" / "release" / "matchmaker"), help="matchmaker binary")
    p.add_argument(
        "--keep",
        action="store_true",
        help="after measuring, keep the database up (DATABASE_URL on stderr) until Ctrl-C",
    )
    p.add_argument(
        "--check-verifier",
        action="store_true",
        help="cold mode: after verifying, corrupt the stored lists four ways (a score, the order of two "
        "partners, a missing row, an excluded partner), one at a time, and check that the verifier reports "
        "each; every corruption is undone",
    )
    p.add_argument("--validate-only", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.metrics_scrape is not None and (a.mode != "join" or a.metrics_scrape <= 0):
        p.error("--metrics-scrape needs --mode join and a positive interval")
    if a.daemon and a.mode != "cold":
        p.error("--daemon needs --mode cold")
    if a.check_verifier and a.mode != "cold":
        p.error("--check-verifier needs --mode cold")
    if a.n < 2:
        p.error("--n must be at least 2")
    if not 1 <= a.dims <= 16000:
        p.error("--dims must be between 1 and 16000")
    if not 1 <= a.k <= 20:
        p.error("--k must be between 1 and 20")
    if a.workers < 1:
        p.error("--workers must be at least 1")
    if a.joins < 1:
        p.error("--joins must be at least 1")
    if a.timeout <= 0:
        p.error("--timeout must be positive")
    return a


# --------------------------------------------------------------------------
# The scratch database
# --------------------------------------------------------------------------


@dataclass
class Scratch:
    """One benchmark's database, its URLs and the ids the statistics need."""

    name: str
    worker_url: str  # the role of DATABASE_URL: what workers use
    worker_role: str
    db: Psql  # one-shot psql as the observer role
    dbid: str = ""
    worker_roleid: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def statements(self, session: Session) -> int:
        """SQL statements the workers issued since the last reset (the
        observer role's own statements are not counted)."""
        return int(
            session.scalar(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
                f"WHERE dbid = {self.dbid} AND userid = {self.worker_roleid}"
            )
            or 0
        )

    def match_writes(self, session: Session) -> int:
        """Rows inserted, updated and deleted in user_matches so far."""
        return int(
            session.scalar(
                "SELECT n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables WHERE relname = 'user_matches'"
            )
            or 0
        )

    def wait_for_worker_sessions(self, session: Session, timeout: float = 10.0) -> None:
        """Waits until no worker session is connected, so that their table
        statistics have been flushed (backends flush them as they exit)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            n = session.scalar(
                "SELECT count(*) FROM pg_stat_activity "
                f"WHERE datname = {literal(self.name)} AND usename = {literal(self.worker_role)}"
            )
            if n == "0":
                time.sleep(0.2)
                return
            time.sleep(0.05)
        log("warning: worker sessions still connected; table statistics may lag")


def make_scratch(mode: str) -> Scratch:
    """Creates a fresh database, migrates it with `matchmaker migrate`, and
    prepares the observer role and pg_stat_statements."""
    base_url = os.environ["DATABASE_URL"]
    psql = os.environ["PSQL"]
    worker_role = urllib.parse.urlsplit(base_url).username or "postgres"
    name = f"bench_{mode}_{os.getpid()}_{int(time.time())}"
    admin = Psql(psql, with_database(base_url, "postgres"))
    admin.execute(
        f"""
        DO $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{OBSERVER_ROLE}') THEN
                CREATE ROLE {OBSERVER_ROLE} LOGIN SUPERUSER;
            END IF;
        END $$;
        CREATE DATABASE {name};
        """
    )
    worker_url = with_database(base_url, name)
    s = Scratch(
        name=name,
        worker_url=worker_url,
        worker_role=worker_role,
        db=Psql(psql, with_database(base_url, name, user=OBSERVER_ROLE)),
    )
    s.env = dict(os.environ, DATABASE_URL=worker_url, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
    s.db.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    s.dbid = s.db.scalar(f"SELECT oid FROM pg_database WHERE datname = {literal(name)}") or ""
    s.worker_roleid = s.db.scalar(f"SELECT oid FROM pg_roles WHERE rolname = {literal(worker_role)}") or ""
    return s


# --------------------------------------------------------------------------
# Running matchmaker
# --------------------------------------------------------------------------


class Runner:
    """Runs matchmaker subcommands with the scratch database's URL; their
    stderr (and the output of one-shot commands) goes to the log file."""

    def __init__(self, binary: str, scratch: Scratch, log_path: Path):
        self.binary = binary
        self.scratch = scratch
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self.log = open(log_path, "ab", buffering=0)
        # bench.sh provides a folder it removes on exit, whatever happens here.
        self.tmp = tempfile.TemporaryDirectory(prefix="matchmaker-bench-", dir=os.environ.get("BENCH_TMP"))
        self._count = 0

    def once(self, *args: str) -> None:
        """Runs one command to completion; raises when it fails."""
        self.log.write(f"\n### matchmaker {' '.join(args)}\n".encode())
        child = self.spawn(*args)
        child.wait(3600)
        self.log.write(child.stdout.encode())
        if child.returncode != 0:
            raise RuntimeError(f"matchmaker {' '.join(args)} exited {child.returncode}; see {self.log_path}")

    def spawn(self, *args: str) -> procs.Child:
        """Starts a command; the caller reaps it."""
        self._count += 1
        out = os.path.join(self.tmp.name, f"{self._count}.out")
        return procs.Child([self.binary, *args], self.scratch.env, out, str(self.log_path))

    def close(self) -> None:
        """Closes the log and removes the temporary files."""
        self.log.close()
        self.tmp.cleanup()


@dataclass
class DrainStats:
    """What a cron-like loop of worker processes did."""

    wall_s: float  # first worker start to the queue drained (polled every 20 ms)
    processes_s: float  # first worker start to the last worker exit
    invocations: int
    peak_rss_kb: int
    failed_invocations: int
    stop_reasons: dict[str, int]


def has_open_rows(session: Session, event_id: str) -> bool:
    """Whether the event has queue rows still pending or processing (an
    index probe, cheap enough to poll every few milliseconds)."""
    return (
        session.scalar(
            "SELECT EXISTS (SELECT 1 FROM matchmaking_queue "
            f"WHERE event_id = {literal(event_id)} AND status IN ('pending', 'processing'))"
        )
        == "t"
    )


def drain(
    runner: Runner,
    session: Session,
    event_id: str,
    workers: int,
    max_runtime: str,
    timeout: float,
    extra: tuple[str, ...] = (),
) -> DrainStats:
    """Runs `workers` concurrent `matchmaker run` processes, re-invoking each
    one when it exits, until the event has no pending or processing queue row;
    then lets the running ones exit by themselves.

    A worker that exits 'drained' while rows are still open (held by another
    worker, or waiting out a retry backoff) is re-invoked after a short pause
    instead of at once, like a cron loop that would otherwise spin.
    """
    args = ("run", "--json", "--max-runtime", max_runtime, *extra)
    slots: list[procs.Child | None] = [None] * workers
    ready_at = [0.0] * workers
    invocations = failed = peak = 0
    reasons: dict[str, int] = {}
    start = time.monotonic()
    drained_at: float | None = None
    last_exit = start
    next_poll = 0.0
    while True:
        now = time.monotonic()
        for i, child in enumerate(slots):
            if child is not None and child.poll():
                slots[i] = None
                runner.log.write(child.stdout.encode())
                last_exit = child.ended or now
                peak = max(peak, child.maxrss_kb)
                reason = child.summary().get("stop_reason", "error" if child.returncode else "unknown")
                reasons[reason] = reasons.get(reason, 0) + 1
                if child.returncode != 0:
                    failed += 1
                    log(f"worker exited {child.returncode}; see {runner.log_path}")
                    if failed > 3 * workers:
                        raise RuntimeError(f"{failed} worker invocations failed; see {runner.log_path}")
                ready_at[i] = now + (0.25 if reason == "drained" or child.returncode else 0.0)
        if drained_at is None and now >= next_poll:
            if not has_open_rows(session, event_id):
                # When every worker had already exited, the queue drained
                # before the last exit, not when this poll noticed it.
                idle = all(c is None for c in slots) and invocations > 0
                drained_at = last_exit if idle else time.monotonic()
            next_poll = now + 0.02
        if drained_at is not None:
            if all(c is None for c in slots):
                break
            if now - drained_at > 60:
                log("workers did not exit after the queue drained; stopping them")
                for c in slots:
                    if c is not None:
                        c.stop()
        else:
            for i in range(workers):
                if slots[i] is None and now >= ready_at[i]:
                    slots[i] = runner.spawn(*args)
                    invocations += 1
            if now - start > timeout:
                raise RuntimeError(f"the queue did not drain within {timeout:.0f}s")
        time.sleep(0.005)
    return DrainStats(
        wall_s=drained_at - start,
        processes_s=last_exit - start,
        invocations=invocations,
        peak_rss_kb=peak,
        failed_invocations=failed,
        stop_reasons=reasons,
    )


def drain_daemons(runner: Runner, session: Session, event_id: str, code: str, workers: int, timeout: float) -> DrainStats:
    """Runs `workers` `matchmaker daemon` processes for the event until it has
    no pending or processing queue row, then stops them with SIGTERM. A daemon
    that exits on its own before that is an error."""
    start = time.monotonic()
    daemons = [runner.spawn("daemon", "--event", code) for _ in range(workers)]
    try:
        while has_open_rows(session, event_id):
            for d in daemons:
                if d.poll():
                    raise RuntimeError(f"a daemon exited {d.returncode} before the queue drained; see {runner.log_path}")
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"the queue did not drain within {timeout:.0f}s")
            time.sleep(0.02)
        drained_at = time.monotonic()
    finally:
        for d in daemons:
            if not d.poll():
                d.stop(grace=30)
            runner.log.write(d.stdout.encode())
    failed = sum(1 for d in daemons if d.returncode != 0)
    if failed:
        log(f"{failed} daemon(s) exited non-zero on SIGTERM; see {runner.log_path}")
    return DrainStats(
        wall_s=drained_at - start,
        processes_s=time.monotonic() - start,
        invocations=workers,
        peak_rss_kb=max(d.maxrss_kb for d in daemons),
        failed_invocations=failed,
        stop_reasons={"sigterm": workers},
    )


# --------------------------------------------------------------------------
# Loading an event
# --------------------------------------------------------------------------


def load_event(scratch: Scratch, args: argparse.Namespace, attendees, exclusions, code: str, dims: int | None) -> str:
    """Creates the event and loads its attendees and exclusions with COPY;
    returns the event id. The participants' triggers enqueue every attendee,
    as in production."""
    from generate import PARTICIPANT_COLUMNS

    db = scratch.db
    db.execute(
        "INSERT INTO events (code, name, algorithm, matches_per_user, exclude_same_company, embedding_dimensions) "
        f"VALUES ({literal(code)}, {literal('Benchmark ' + code)}, {literal(args.algorithm)}, {args.k}, true, "
        f"{literal(dims)})"
    )
    event_id = db.scalar(f"SELECT id FROM events WHERE code = {literal(code)}")
    assert event_id
    t0 = time.monotonic()
    db.copy_in(PARTICIPANT_COLUMNS, (a.copy_line(event_id) for a in attendees))
    if exclusions:
        db.copy_in(
            "match_exclusions (event_id, user_id, excluded_user_id)",
            (f"{event_id}\t{a}\t{b}" for a, b in exclusions),
        )
    db.execute("VACUUM ANALYZE")
    log(f"loaded {len(attendees)} attendees and {len(exclusions)} exclusions in {time.monotonic() - t0:.1f}s")
    return event_id


# --------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------


def mb(kb: int) -> float:
    """Kilobytes to megabytes, rounded."""
    return round(kb / 1024, 1)


def log_top_statements(scratch: Scratch, session: Session, count: int) -> None:
    """Logs the workers' `count` statements of most execution time (set
    BENCH_TOP_STATEMENTS=N to see where PostgreSQL spends a run)."""
    rows = session.rows(
        "SELECT calls, round(total_exec_time::numeric, 1), round(total_plan_time::numeric, 1), rows, "
        "left(regexp_replace(query, '\\s+', ' ', 'g'), 140) FROM pg_stat_statements "
        f"WHERE dbid = {scratch.dbid} AND userid = {scratch.worker_roleid} "
        f"ORDER BY total_exec_time + total_plan_time DESC LIMIT {count}"
    )
    for calls, exec_ms, plan_ms, nrows, query in rows:
        log(f"  {exec_ms:>9} ms exec {plan_ms:>7} ms plan {calls:>6} calls {nrows:>7} rows  {query}")


def cold_phase(args, scratch: Scratch, runner: Runner, session: Session, attendees, exclusions, code: str):
    """Loads an event, matches it from scratch with the worker loop, measures
    and verifies. Returns (event_id, result dict)."""
    from verify import verify

    event_id = load_event(scratch, args, attendees, exclusions, code, args.dims)
    runner.once("admin-start-matching", "--event", code)
    since = session.scalar("SELECT clock_timestamp()")
    session.rows("SELECT pg_stat_statements_reset()")
    writes_before = scratch.match_writes(session)
    kind = "daemon" if getattr(args, "daemon", False) else "worker"
    log(f"matching {len(attendees)} attendees with {args.workers} {kind} process(es) ({args.algorithm}, K={args.k})")
    if kind == "daemon":
        stats = drain_daemons(runner, session, event_id, code, args.workers, args.timeout)
    else:
        stats = drain(runner, session, event_id, args.workers, args.max_runtime, args.timeout)
    scratch.wait_for_worker_sessions(session)
    statements = scratch.statements(session)
    if os.environ.get("BENCH_TOP_STATEMENTS"):
        log_top_statements(scratch, session, int(os.environ["BENCH_TOP_STATEMENTS"]))
    writes = scratch.match_writes(session) - writes_before
    claimed, batches = session.rows(
        "SELECT coalesce(sum(claimed), 0), coalesce(sum(batches), 0) FROM matchmaking_runs "
        f"WHERE started_at >= {literal(since)}"
    )[0]
    failed_rows = int(
        session.scalar(
            f"SELECT count(*) FROM matchmaking_queue WHERE event_id = {literal(event_id)} AND status = 'failed'"
        )
        or 0
    )
    log(f"drained in {stats.wall_s:.2f}s ({stats.invocations} invocations: {stats.stop_reasons}); verifying")
    t0 = time.monotonic()
    verdict = verify(scratch.db, event_id, log)
    log(
        f"verified {verdict.attendees} attendees, {verdict.rows} match rows in {time.monotonic() - t0:.1f}s: "
        + ("exact" if verdict.exact else f"{verdict.mismatches} wrong lists")
    )
    result = {
        "mode": "cold",
        "n": len(attendees),
        "dims": args.dims,
        "algorithm": args.algorithm,
        "k": args.k,
        "workers": args.workers,
        "drained_by": kind,
        "wall_s": round(stats.wall_s, 3),
        "invocations": stats.invocations,
        "rows_claimed": int(claimed),
        "match_rows_written": writes,
        "sql_statements": statements,
        "peak_rss_mb": mb(stats.peak_rss_kb),
        "exact": verdict.exact,
        "mismatches": verdict.mismatches,
        "batches": int(batches),
        "failed_rows": failed_rows,
        "seed": args.seed,
    }
    return event_id, result


def run_cold(args, scratch, runner, session) -> tuple[dict, bool]:
    """cold mode: one JSON result and whether the event is exact."""
    from generate import generate

    # hybrid-v1 scores attendees without an embedding too: exercise that.
    ev = generate(args.n, args.dims, args.seed, missing_embeddings=0.02 if args.algorithm == "hybrid-v1" else 0.0)
    event_id, result = cold_phase(args, scratch, runner, session, ev.attendees, ev.exclusions, f"bench-{args.seed}")
    ok = result["exact"]
    if args.check_verifier:
        caught = check_verifier(scratch, event_id)
        result["verifier_catches"] = caught
        ok = ok and all(caught.values())
    return result, ok


def check_verifier(scratch: Scratch, event_id: str) -> dict[str, bool]:
    """--check-verifier: corrupts the event's stored lists one way at a time,
    runs the verifier, and undoes the corruption. Returns, per corruption,
    whether the verifier reported it (each must be, on an exact event):

    * score: a rank-1 score raised by 0.01;
    * order: ranks 1 and 2 of a list swapped (scores more than 0.001 apart);
    * missing: the last row of a list deleted;
    * ineligible: a rank-1 partner replaced by someone the owner excluded.
    """
    from verify import verify

    db = scratch.db
    ev = literal(event_id)
    caught: dict[str, bool] = {}

    def check(name: str, corrupt: str, undo: str) -> None:
        db.execute(corrupt)
        try:
            verdict = verify(db, event_id, lambda msg: log(f"  ({name}, expected){msg}"))
        finally:
            db.execute(undo)
        caught[name] = not verdict.exact
        log(f"--check-verifier: {name}: " + ("reported" if caught[name] else "NOT REPORTED"))

    row = db.rows(
        f"SELECT user_id, matched_user_id, score::text FROM user_matches WHERE event_id = {ev} AND rank = 1 "
        "ORDER BY user_id LIMIT 1"
    )
    if row:
        owner, partner, score = row[0]
        where = f"event_id = {ev} AND user_id = {literal(owner)} AND matched_user_id = {literal(partner)}"
        check(
            "score",
            f"UPDATE user_matches SET score = score + 0.01 WHERE {where}",
            f"UPDATE user_matches SET score = {literal(score)}::real WHERE {where}",
        )
    row = db.rows(
        f"SELECT a.user_id FROM user_matches a JOIN user_matches b USING (event_id, user_id) "
        f"WHERE a.event_id = {ev} AND a.rank = 1 AND b.rank = 2 AND a.score - b.score > 0.001 "
        "ORDER BY a.user_id LIMIT 1"
    )
    if row:
        swap = (
            f"UPDATE user_matches SET rank = 3 - rank WHERE event_id = {ev} "
            f"AND user_id = {literal(row[0][0])} AND rank IN (1, 2)"
        )
        check("order", swap, swap)
    row = db.rows(
        f"SELECT user_id, max(rank) FROM user_matches WHERE event_id = {ev} GROUP BY user_id ORDER BY user_id LIMIT 1"
    )
    if row:
        owner, rank = row[0]
        db.execute(
            "CREATE TABLE bench_check_verifier AS SELECT * FROM user_matches "
            f"WHERE event_id = {ev} AND user_id = {literal(owner)} AND rank = {int(rank)}"
        )
        check(
            "missing",
            f"DELETE FROM user_matches WHERE event_id = {ev} AND user_id = {literal(owner)} AND rank = {int(rank)}",
            "INSERT INTO user_matches OVERRIDING SYSTEM VALUE SELECT * FROM bench_check_verifier; "
            "DROP TABLE bench_check_verifier",
        )
    row = db.rows(
        f"SELECT m.user_id, m.matched_user_id, x.excluded_user_id FROM user_matches m "
        f"JOIN match_exclusions x ON x.event_id = m.event_id AND x.user_id = m.user_id "
        f"WHERE m.event_id = {ev} AND m.rank = 1 AND NOT EXISTS (SELECT 1 FROM user_matches o "
        "WHERE o.event_id = m.event_id AND o.user_id = m.user_id AND o.matched_user_id = x.excluded_user_id) "
        "ORDER BY m.user_id LIMIT 1"
    )
    if row:
        owner, partner, banned = row[0]
        where = f"event_id = {ev} AND user_id = {literal(owner)} AND rank = 1"
        check(
            "ineligible",
            f"UPDATE user_matches SET matched_user_id = {literal(banned)} WHERE {where}",
            f"UPDATE user_matches SET matched_user_id = {literal(partner)} WHERE {where}",
        )
    for name in ("score", "order", "missing", "ineligible"):
        if name not in caught:
            log(f"--check-verifier: {name}: no list to corrupt that way")
            caught[name] = False
    return caught


def percentile(xs: list[float], q: float) -> float:
    """The q-th percentile (linear interpolation), rounded to 0.1 ms."""
    import numpy as np

    return round(float(np.percentile(np.array(xs), q)), 1) if xs else 0.0


def free_port() -> int:
    """A TCP port on loopback that is free now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a live process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        # Fields after the command name (which may hold spaces) start at ")".
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Scraper:
    """Scrapes a /metrics URL every `interval` seconds on a thread, as a
    Prometheus server would; counts the scrapes that answered 200."""

    def __init__(self, url: str, interval: float):
        import threading

        self.url, self.interval = url, interval
        self.ok = self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        import urllib.request

        while not self._stop.wait(self.interval):
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    r.read()
                    self.ok += 1
            except OSError:
                self.failed += 1

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"ok": self.ok, "failed": self.failed, "interval_s": self.interval}


def run_join(args, scratch, runner, session) -> tuple[dict, bool]:
    """join mode: a matched event of N, then --joins attendees joining one at
    a time while one `matchmaker daemon` runs."""
    from generate import PARTICIPANT_COLUMNS, generate
    from verify import verify

    code = f"bench-{args.seed}"
    # One warm-up join (the daemon's first wake-up loads the event) plus the
    # measured ones, drawn from the same event as the first N.
    ev = generate(args.n + args.joins + 1, args.dims, args.seed)
    base, newcomers = ev.attendees[: args.n], ev.attendees[args.n :]
    base_ids = {a.user_id for a in base}
    exclusions = [(a, b) for a, b in ev.exclusions if a in base_ids and b in base_ids]
    event_id, cold = cold_phase(args, scratch, runner, session, base, exclusions, code)

    # A copy of every list, to count exactly which rows each join changed.
    session.rows(
        "CREATE SCHEMA bench_harness; "
        "CREATE UNLOGGED TABLE bench_harness.snap AS SELECT user_id, matched_user_id, rank, score "
        f"FROM user_matches WHERE event_id = {literal(event_id)}; "
        "ALTER TABLE bench_harness.snap ADD PRIMARY KEY (user_id, matched_user_id); "
        "CREATE TEMP TABLE changed (owner uuid PRIMARY KEY)"
    )

    metrics_args, scraper = [], None
    if args.metrics_scrape is not None:
        port = free_port()
        metrics_args = ["--metrics-addr", f"127.0.0.1:{port}"]
        scraper = Scraper(f"http://127.0.0.1:{port}/metrics", args.metrics_scrape)
    log("starting matchmaker daemon" + (" with metrics" if scraper else ""))
    daemon = runner.spawn("daemon", "--event", code, *metrics_args)
    deadline = time.monotonic() + 60
    while session.scalar("SELECT count(*) FROM matchmaking_runs WHERE command = 'daemon' AND finished_at IS NOT NULL") == "0":
        if daemon.poll():
            raise RuntimeError(f"the daemon exited {daemon.returncode}; see {runner.log_path}")
        if time.monotonic() > deadline:
            raise RuntimeError("the daemon did not finish its first drain within 60s")
        time.sleep(0.05)

    ev_lit = literal(event_id)
    joins: list[dict] = []
    if scraper:
        scraper.start()
    cpu_at_first = 0.0
    for i, a in enumerate(newcomers):
        if i == 1:
            session.rows("SELECT pg_stat_statements_reset()")
            cpu_at_first = cpu_seconds(daemon.pid)
        u = literal(a.user_id)
        session.rows(f"INSERT INTO {PARTICIPANT_COLUMNS} VALUES {a.insert_values(event_id)}")
        t0 = time.monotonic()
        while has_open_rows(session, event_id):
            if daemon.poll():
                raise RuntimeError(f"the daemon exited {daemon.returncode}; see {runner.log_path}")
            if time.monotonic() - t0 > 120:
                raise RuntimeError(f"join {i} was not processed within 120s")
            time.sleep(0.002)
        status, worker_ms, commit_ms = session.rows(
            "SELECT status, 1000 * extract(epoch FROM finished_at - claimed_at), "
            "1000 * extract(epoch FROM finished_at - (SELECT min(enqueued_at) FROM matchmaking_queue "
            f"  WHERE event_id = {ev_lit} AND user_id = {u})) "
            f"FROM matchmaking_queue WHERE event_id = {ev_lit} AND user_id = {u} ORDER BY id DESC LIMIT 1"
        )[0]
        if status != "done":
            raise RuntimeError(f"the queue row of join {i} ended {status}")
        others, other_lists, mine = session.rows(
            f"""
            WITH cur AS (SELECT user_id, matched_user_id, rank, score FROM user_matches WHERE event_id = {ev_lit}),
            d AS (
                SELECT coalesce(c.user_id, s.user_id) AS owner
                FROM cur c FULL JOIN bench_harness.snap s
                  ON s.user_id = c.user_id AND s.matched_user_id = c.matched_user_id
                WHERE c.user_id IS NULL OR s.user_id IS NULL OR c.rank <> s.rank OR c.score <> s.score
            ),
            ins AS (INSERT INTO changed SELECT DISTINCT owner FROM d RETURNING owner)
            SELECT count(*) FILTER (WHERE owner <> {u}),
                   (SELECT count(*) FROM ins WHERE owner <> {u}),
                   count(*) FILTER (WHERE owner = {u})
            FROM d
            """
        )[0]
        session.rows(
            "DELETE FROM bench_harness.snap WHERE user_id IN (SELECT owner FROM changed); "
            "INSERT INTO bench_harness.snap SELECT user_id, matched_user_id, rank, score FROM user_matches "
            f"WHERE event_id = {ev_lit} AND user_id IN (SELECT owner FROM changed); "
            "TRUNCATE changed"
        )
        joins.append(
            {
                "worker_ms": float(worker_ms),
                "commit_ms": float(commit_ms),
                "others_rows": int(others),
                "others_lists": int(other_lists),
                "newcomer_rows": int(mine),
            }
        )
        if (i + 1) % 50 == 0:
            log(f"{i + 1} joins handled")
    statements = scratch.statements(session)
    # CPU time is steadier than wall time on a shared machine: what the
    # metrics cost shows here first.
    cpu_per_join_ms = 1000 * (cpu_seconds(daemon.pid) - cpu_at_first) / max(1, len(joins) - 1)
    scrapes = scraper.stop() if scraper else None

    log("stopping the daemon (SIGTERM)")
    daemon.stop(grace=30)
    if daemon.returncode != 0:
        log(f"warning: the daemon exited {daemon.returncode} on SIGTERM; see {runner.log_path}")
    log("verifying the event after the joins")
    verdict = verify(scratch.db, event_id, log)
    log("exact" if verdict.exact else f"{verdict.mismatches} wrong lists")

    first, measured = joins[0], joins[1:]

    def col(name: str) -> list[float]:
        return [j[name] for j in measured]

    result = {
        "mode": "join",
        "n": args.n,
        "dims": args.dims,
        "algorithm": args.algorithm,
        "k": args.k,
        "joins": len(measured),
        "worker_ms_p50": percentile(col("worker_ms"), 50),
        "worker_ms_p95": percentile(col("worker_ms"), 95),
        "worker_ms_max": round(max(col("worker_ms")), 1),
        "commit_ms_p50": percentile(col("commit_ms"), 50),
        "commit_ms_p95": percentile(col("commit_ms"), 95),
        "commit_ms_max": round(max(col("commit_ms")), 1),
        "others_rows_changed_mean": round(sum(col("others_rows")) / len(measured), 2),
        "others_rows_changed_max": int(max(col("others_rows"))),
        "others_lists_changed_mean": round(sum(col("others_lists")) / len(measured), 2),
        "others_lists_changed_max": int(max(col("others_lists"))),
        "newcomer_rows_mean": round(sum(col("newcomer_rows")) / len(measured), 2),
        "sql_statements": statements,
        "daemon_cpu_ms_per_join": round(cpu_per_join_ms, 2),
        "metrics_scrapes": scrapes,
        "sql_statements_per_join": round(statements / len(measured), 1),
        "first_join_worker_ms": round(first["worker_ms"], 1),
        "first_join_commit_ms": round(first["commit_ms"], 1),
        "daemon_peak_rss_mb": mb(daemon.maxrss_kb),
        "daemon_exit": daemon.returncode,
        "cold_wall_s": cold["wall_s"],
        "exact_before_joins": cold["exact"],
        "exact": cold["exact"] and verdict.exact,
        "mismatches": verdict.mismatches,
        "seed": args.seed,
    }
    return result, result["exact"]


def run_queue(args, scratch, runner, session) -> tuple[dict, bool]:
    """queue mode: the queue mechanics alone, with the null scorer."""
    from generate import generate

    code = f"bench-{args.seed}"
    ev = generate(args.n, args.dims, args.seed, with_embeddings=False, exclusions=0)
    event_id = load_event(scratch, args, ev.attendees, [], code, None)
    runner.once("admin-start-matching", "--event", code)
    since = session.scalar("SELECT clock_timestamp()")
    session.rows("SELECT pg_stat_statements_reset()")
    log(f"draining {args.n} rows with {args.workers} `matchmaker run --bench-null-scorer` process(es)")
    stats = drain(
        runner, session, event_id, args.workers, args.max_runtime, args.timeout, ("--bench-null-scorer",)
    )
    scratch.wait_for_worker_sessions(session)
    statements = scratch.statements(session)
    claimed, batches, run_s = session.rows(
        "SELECT coalesce(sum(claimed), 0), coalesce(sum(batches), 0), "
        "coalesce(extract(epoch FROM sum(finished_at - started_at)), 0) FROM matchmaking_runs "
        f"WHERE started_at >= {literal(since)}"
    )[0]
    done = int(
        session.scalar(
            f"SELECT count(*) FROM matchmaking_queue WHERE event_id = {literal(event_id)} AND status = 'done'"
        )
        or 0
    )
    claimed, run_s = int(claimed), float(run_s)
    result = {
        "mode": "queue",
        "n": args.n,
        "workers": args.workers,
        "wall_s": round(stats.wall_s, 3),
        "process_wall_s": round(stats.processes_s, 3),
        "invocations": stats.invocations,
        "rows_claimed": claimed,
        "rows_done": done,
        "rows_per_s": round(claimed / stats.processes_s, 1) if stats.processes_s else None,
        "run_elapsed_s": round(run_s, 3),
        "rows_per_s_run": round(claimed / run_s, 1) if run_s else None,
        "batches": int(batches),
        "sql_statements": statements,
        "sql_statements_per_row": round(statements / claimed, 2) if claimed else None,
        "peak_rss_mb": mb(stats.peak_rss_kb),
        "drained": done == args.n,
    }
    return result, result["drained"]


def main(argv: list[str]) -> int:
    """Runs one benchmark; returns the exit status."""
    args = parse_args(argv)
    if args.validate_only:
        return 0
    for var in ("DATABASE_URL", "PSQL"):
        if not os.environ.get(var):
            print(f"error: {var} is not set; run this through scripts/bench.sh", file=sys.stderr)
            return 2
    if not os.access(args.binary, os.X_OK):
        print(f"error: {args.binary} is not an executable; build it with cargo build --release", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)

    # First, while this process is small: every matchmaker process is started
    # by this helper, so that its peak RSS is its own (see procs.py).
    procs.start_spawner()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    log_path = Path(args.log) if args.log else REPO / "target" / "bench" / f"{args.mode}-{stamp}.log"
    session = None
    runner = None
    ok = False
    try:
        scratch = make_scratch(args.mode)
        runner = Runner(os.path.abspath(args.binary), scratch, log_path)
        log(f"scratch database {scratch.name}; worker logs in {log_path}")
        runner.once("migrate")
        session = Session(os.environ["PSQL"], scratch.db.url)
        mode = {"cold": run_cold, "join": run_join, "queue": run_queue}[args.mode]
        result, ok = mode(args, scratch, runner, session)
        print(json.dumps(result), flush=True)
        if args.keep:
            log(f"--keep: the database stays up at {scratch.worker_url} until Ctrl-C")
            try:
                while True:
                    time.sleep(3600)
            except Interrupted:
                pass
    except Interrupted as e:
        log(f"interrupted ({e}); stopping the workers")
        return 130
    except (PsqlError, RuntimeError) as e:
        log(f"error: {e}")
        return 1
    finally:
        # Ignore further signals while cleaning up.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop_all()
        procs.close_spawner()
        if session is not None:
            session.close()
        if runner is not None:
            runner.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
