//! Operating it: `/metrics`, `/healthz` and `/readyz` of the daemon (parsed
//! with a Prometheus text-format parser, the database cut and restored
//! through a proxy), `run --metrics-file`, `pause`/`resume`, `retry-failed`
//! and `status --check`.

use crate::helpers::proxy::Proxy;
use crate::helpers::*;
use rand::SeedableRng;
use sqlx::PgPool;
use std::collections::HashMap;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn matchmaker(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_matchmaker"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run matchmaker")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Samples of a Prometheus text exposition, by name and sorted labels.
fn parse(exposition: &str) -> HashMap<String, f64> {
    let lines = exposition.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("a valid Prometheus exposition");
    let mut out = HashMap::new();
    for s in scrape.samples {
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let key = if labels.is_empty() {
            s.metric.clone()
        } else {
            format!("{}{{{}}}", s.metric, labels.join(","))
        };
        let value = match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(_) | prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert(key, value);
    }
    // Histograms: the parser folds their lines into one sample; keep the
    // raw _count lines too, which is what the tests look at.
    for l in exposition.lines().filter(|l| l.contains("_count")) {
        if let Some((k, v)) = l.rsplit_once(' ') {
            if let Ok(v) = v.parse() {
                out.insert(k.replace('"', ""), v);
            }
        }
    }
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let code = r.status().as_u16();
    Some((code, r.text().await.ok()?))
}

/// Waits until `path` answers `code` (panics after `limit`); returns the body.
async fn await_status(port: u16, path: &str, code: u16, limit: Duration) -> String {
    let started = Instant::now();
    loop {
        let got = get(port, path).await;
        if let Some((c, body)) = &got {
            if *c == code {
                return body.clone();
            }
        }
        assert!(
            started.elapsed() < limit,
            "{path} did not answer {code} within {limit:?}: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The worker URL with its host:port replaced by the proxy's.
fn through(url: &str, port: u16) -> String {
    let (head, tail) = url.split_once("://").expect("scheme");
    let (user, rest) = tail.split_once('@').expect("user");
    let (_, path) = rest.split_once('/').expect("path");
    format!("{head}://{user}@127.0.0.1:{port}/{path}")
}

fn target(url: &str) -> String {
    let rest = url.rsplit_once('@').map_or(url, |(_, r)| r);
    rest.split_once('/').map_or(rest, |(h, _)| h).to_string()
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn metrics_move_with_a_drain_and_probes_follow_the_database(pool: PgPool) {
    let url = worker_url(&pool).await;
    let proxy = Proxy::start(target(&url)).await;
    let port = free_port();
    let ev = create_event(&pool, "scraped", "hybrid-v1", 3).await;
    let mut daemon = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_matchmaker"))
            .args([
                "daemon",
                "--schedule",
                "0 0 0 1 1 *",
                "--max-runtime",
                "2s",
                "--health-timeout",
                "8s",
                "--metrics-addr",
                &format!("127.0.0.1:{port}"),
            ])
            .env("DATABASE_URL", through(&url, proxy.port))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn daemon"),
    );
    await_status(port, "/readyz", 200, Duration::from_secs(15)).await;
    await_status(port, "/healthz", 200, Duration::from_secs(5)).await;
    let before = parse(&await_status(port, "/metrics", 200, Duration::from_secs(5)).await);
    let processed = |m: &HashMap<String, f64>| m.get("matchmaker_rows_processed_total").copied().unwrap_or(0.0);

    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for _ in 0..30 {
        insert_profile(&pool, ev, &random_profile(&mut rng, 0)).await;
    }
    all_done(&pool).await;
    assert_exact(&pool, ev, "drained by the scraped daemon").await;
    // The counters move within a second (the worker publishes at its
    // heartbeat and at the end of each drain); the queue gauges within
    // their 5 s cache.
    let started = Instant::now();
    let after = loop {
        let m = parse(&await_status(port, "/metrics", 200, Duration::from_secs(5)).await);
        if processed(&m) >= 30.0 && m.get("matchmaker_queue_rows{status=done}") == Some(&30.0) {
            break m;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "metrics did not move: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(processed(&after) - processed(&before), 30.0);
    assert!(
        after["matchmaker_batches_total"] >= 2.0,
        "30 rows in batches of 20: {after:?}"
    );
    assert!(after["matchmaker_rows_claimed_total"] >= 30.0);
    assert_eq!(after["matchmaker_queue_rows{status=pending}"], 0.0);
    assert!(after["matchmaker_drains_total{stop=drained}"] >= 1.0);
    for phase in ["claim", "read", "score", "write"] {
        let n = after
            .get(&format!("matchmaker_batch_duration_seconds_count{{phase={phase}}}"))
            .copied()
            .unwrap_or(0.0);
        assert!(n >= 2.0, "phase {phase}: {n} observations");
    }
    assert_eq!(after.get("matchmaker_join_to_match_seconds_count"), Some(&30.0));

    // The database goes away: not ready at once, and not healthy once every
    // drain has failed for the health timeout (8 s).
    proxy.cut();
    let why = await_status(port, "/readyz", 503, Duration::from_secs(10)).await;
    assert!(why.contains("database"), "{why}");
    assert_eq!(why.trim().lines().count(), 1, "one line: {why}");
    let why = await_status(port, "/healthz", 503, Duration::from_secs(30)).await;
    assert!(why.contains("every drain has failed"), "{why}");
    // /metrics still answers, with the last values.
    let (code, _) = get(port, "/metrics").await.expect("metrics while the database is gone");
    assert_eq!(code, 200);

    proxy.restore();
    await_status(port, "/readyz", 200, Duration::from_secs(15)).await;
    await_status(port, "/healthz", 200, Duration::from_secs(15)).await;
    // And it works again: a new attendee is matched.
    insert_profile(&pool, ev, &random_profile(&mut rng, 0)).await;
    all_done(&pool).await;
    assert_exact(&pool, ev, "after the outage").await;

    let _ = Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status();
    let status = wait_exit(&mut daemon.0, Duration::from_secs(10)).await;
    assert!(status.success(), "daemon exit status {status}");
}

/// Waits until every queue row is done.
async fn all_done(pool: &PgPool) {
    let done = "NOT EXISTS (SELECT 1 FROM matchmaking_queue WHERE status <> 'done')";
    wait_for(pool, done, None, Duration::from_secs(20)).await;
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn a_schema_behind_the_binary_is_not_ready(pool: PgPool) {
    let url = worker_url(&pool).await;
    let port = free_port();
    // As if one migration in the middle had been skipped: the newest applied
    // is still this binary's newest, yet the schema is not what it expects.
    sqlx::query(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT version FROM _sqlx_migrations ORDER BY version DESC OFFSET 2 LIMIT 1)",
    )
    .execute(&pool)
    .await
    .expect("forget a migration");
    let daemon = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_matchmaker"))
            .args([
                "daemon",
                "--schedule",
                "0 0 0 1 1 *",
                "--metrics-addr",
                &format!("127.0.0.1:{port}"),
            ])
            .env("DATABASE_URL", &url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn daemon"),
    );
    let why = await_status(port, "/readyz", 503, Duration::from_secs(15)).await;
    assert!(why.contains("1 migration(s) of this binary not applied"), "{why}");
    assert!(why.contains("run `matchmaker migrate`"), "{why}");
    drop(daemon);
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn run_writes_its_metrics_to_a_textfile(pool: PgPool) {
    let url = worker_url(&pool).await;
    let ev = create_event(&pool, "cron", "hybrid-v1", 3).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    for _ in 0..25 {
        insert_profile(&pool, ev, &random_profile(&mut rng, 0)).await;
    }
    let dir = std::env::temp_dir().join(format!("matchmaker-textfile-it-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("matchmaker.prom");
    let path = file.to_string_lossy().to_string();
    let o = matchmaker(&url, &["run", "--metrics-file", &path]);
    assert!(o.status.success(), "{}", text(&o));
    let m = parse(&std::fs::read_to_string(&file).expect("the textfile"));
    assert_eq!(m["matchmaker_rows_processed_total"], 25.0);
    assert_eq!(m["matchmaker_last_run_success"], 1.0);
    assert_eq!(m["matchmaker_drains_total{stop=drained}"], 1.0);
    assert_eq!(m["matchmaker_queue_rows{status=done}"], 25.0);
    assert_eq!(m["matchmaker_join_to_match_seconds_count"], 25.0);
    assert!(m["matchmaker_last_run_finished_timestamp_seconds"] > 1.7e9);
    assert_exact(&pool, ev, "run with a metrics file").await;

    // A failed run still writes the file, saying so.
    let o = matchmaker(
        "postgres://nobody@127.0.0.1:1/x",
        &["run", "--metrics-file", &path, "--connect-timeout", "1s"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let m = parse(&std::fs::read_to_string(&file).expect("the textfile"));
    assert_eq!(m["matchmaker_last_run_success"], 0.0);
    // Only the .prom file: the temporary one was renamed over it.
    assert_eq!(std::fs::read_dir(&dir).expect("list").count(), 1);
    // A directory that does not exist is refused before any work.
    let o = matchmaker(&url, &["run", "--metrics-file", "/nonexistent/dir/m.prom"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("does not exist"), "{}", text(&o));
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// Runs `run` until nothing is open, with two attempts per row and short backoffs.
async fn drain_all(pool: &PgPool, url: &str) {
    for _ in 0..40 {
        let o = matchmaker(
            url,
            &[
                "run",
                "--max-attempts",
                "2",
                "--retry-base",
                "10ms",
                "--retry-max",
                "20ms",
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        if open_rows(pool).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not drained");
}

async fn pending_of(pool: &PgPool, ev: uuid::Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM matchmaking_queue WHERE event_id = $1 AND status IN ('pending', 'processing')",
    )
    .bind(ev)
    .fetch_one(pool)
    .await
    .expect("count")
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn a_paused_event_waits_and_resumes_exactly(pool: PgPool) {
    let url = worker_url(&pool).await;
    let held = create_event(&pool, "held", "hybrid-v1", 3).await;
    let other = create_event(&pool, "other", "hybrid-v1", 3).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let mut people = Vec::new();
    for _ in 0..30 {
        let p = random_profile(&mut rng, 0);
        insert_profile(&pool, held, &p).await;
        people.push(p);
        insert_profile(&pool, other, &random_profile(&mut rng, 0)).await;
    }
    // Matched once, then paused.
    let o = matchmaker(&url, &["run", "--event", "held"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = matchmaker(&url, &["pause", "--event", "held"]);
    assert!(o.status.success() && text(&o).contains("paused held"), "{}", text(&o));
    let o = matchmaker(&url, &["pause", "--event", "held"]);
    assert!(text(&o).contains("already paused"), "{}", text(&o));

    // A bulk edit while paused: the triggers keep enqueueing.
    for p in people.iter_mut().take(12) {
        let fresh = random_profile(&mut rng, 0);
        p.interests = fresh.interests;
        p.company = fresh.company;
        update_profile(&pool, held, p).await;
    }
    for _ in 0..5 {
        insert_profile(&pool, held, &random_profile(&mut rng, 0)).await;
    }
    let queued = pending_of(&pool, held).await;
    assert!(queued >= 17, "{queued} rows queued while paused");
    let o = matchmaker(&url, &["run"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        pending_of(&pool, held).await,
        queued,
        "nothing of the paused event was claimed"
    );
    assert_eq!(pending_of(&pool, other).await, 0, "other events go on");
    assert_exact(&pool, other, "the other event").await;
    let o = matchmaker(&url, &["status"]);
    assert!(
        text(&o).contains("(paused)") && text(&o).contains("paused since"),
        "{}",
        text(&o)
    );
    // Paused rows are meant to wait: no alert on their age.
    sqlx::query("UPDATE matchmaking_queue SET enqueued_at = now() - interval '1 hour' WHERE event_id = $1 AND status = 'pending'")
        .bind(held)
        .execute(&pool)
        .await
        .expect("age the rows");
    let o = matchmaker(&url, &["status", "--check"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("1 paused event"), "{}", text(&o));
    let o = matchmaker(&url, &["admin-start-matching", "--event", "held", "--force", "--wait"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("is paused"), "{}", text(&o));

    let o = matchmaker(&url, &["resume", "--event", "held"]);
    assert!(o.status.success() && text(&o).contains("resumed held"), "{}", text(&o));
    let o = matchmaker(&url, &["run"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(pending_of(&pool, held).await, 0);
    assert_exact(&pool, held, "after resume").await;
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn retry_failed_requeues_with_attempts_reset(pool: PgPool) {
    let url = worker_url(&pool).await;
    let ev = create_event(&pool, "fix", "cosine-v1", 3).await;
    sqlx::query("UPDATE events SET embedding_dimensions = 8 WHERE id = $1")
        .bind(ev)
        .execute(&pool)
        .await
        .expect("dimensions");
    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    for _ in 0..20 {
        insert_profile(&pool, ev, &random_profile(&mut rng, 8)).await;
    }
    let mut nan = random_profile(&mut rng, 8);
    if let Some(e) = nan.embedding.as_mut() {
        e[1] = f32::NAN;
    }
    insert_profile(&pool, ev, &nan).await;
    let mut short = random_profile(&mut rng, 8);
    short.embedding = Some(vec![1.0, 2.0]);
    insert_profile(&pool, ev, &short).await;
    drain_all(&pool, &url).await;
    let failed = |user: uuid::Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (String, i32)>(
                "SELECT status, attempts FROM matchmaking_queue WHERE user_id = $1 ORDER BY id DESC LIMIT 1",
            )
            .bind(user)
            .fetch_one(&pool)
            .await
            .expect("row")
        }
    };
    assert_eq!(failed(nan.user_id).await, ("failed".into(), 2));
    assert_eq!(failed(short.user_id).await, ("failed".into(), 2));
    let o = matchmaker(&url, &["status", "--check"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).starts_with("MATCHMAKER CRITICAL - 2 failed row(s)"),
        "{}",
        text(&o)
    );

    // One attendee: back to pending, attempts reset.
    let o = matchmaker(
        &url,
        &["retry-failed", "--event", "fix", "--user", &nan.user_id.to_string()],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("1 attendee(s) back to pending") && text(&o).contains(&nan.user_id.to_string()),
        "{}",
        text(&o)
    );
    assert_eq!(failed(nan.user_id).await, ("pending".into(), 0));
    assert_eq!(failed(short.user_id).await, ("failed".into(), 2), "only that attendee");
    // Its data still is bad: it fails again after two fresh attempts.
    drain_all(&pool, &url).await;
    assert_eq!(failed(nan.user_id).await, ("failed".into(), 2));

    // The data is fixed (the triggers enqueue both again); the old failed
    // rows are closed, the new ones redo the work.
    for p in [&mut nan, &mut short] {
        p.embedding = random_profile(&mut rng, 8).embedding;
        update_profile(&pool, ev, p).await;
    }
    let o = matchmaker(&url, &["retry-failed", "--event", "fix", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(r["superseded"], 2, "{r}");
    assert_eq!(r["requeued"].as_array().map(Vec::len), Some(0), "{r}");
    drain_all(&pool, &url).await;
    assert_exact(&pool, ev, "after the fix and retry").await;
    let o = matchmaker(&url, &["retry-failed", "--event", "fix"]);
    assert!(text(&o).contains("no failed rows"), "{}", text(&o));
    let o = matchmaker(&url, &["status", "--check"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn status_check_exit_codes(pool: PgPool) {
    let url = worker_url(&pool).await;
    let ev = create_event(&pool, "checked", "hybrid-v1", 3).await;
    let o = matchmaker(&url, &["status", "--check"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).starts_with("MATCHMAKER OK - 0 pending"), "{}", text(&o));
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    for _ in 0..3 {
        insert_profile(&pool, ev, &random_profile(&mut rng, 0)).await;
    }
    // Fresh pending rows are fine; old ones are critical.
    let o = matchmaker(&url, &["status", "--check", "--max-age", "5m"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    sqlx::query("UPDATE matchmaking_queue SET enqueued_at = now() - interval '6 minutes'")
        .execute(&pool)
        .await
        .expect("age");
    let o = matchmaker(&url, &["status", "--check"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("oldest pending row 6m old (max 5m)"), "{}", text(&o));
    let o = matchmaker(&url, &["status", "--check", "--max-age", "10m"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // A dead worker's lease: a warning.
    sqlx::query(
        "UPDATE matchmaking_queue SET status = 'processing', locked_by = 'gone', locked_until = now() - interval '1 minute'
          WHERE id = (SELECT min(id) FROM matchmaking_queue)",
    )
    .execute(&pool)
    .await
    .expect("expire a lease");
    let o = matchmaker(&url, &["status", "--check", "--max-age", "10m"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).starts_with("MATCHMAKER WARNING - 1 row(s) with an expired lease"),
        "{}",
        text(&o)
    );
    // No answer: unknown, in one line, without the password.
    let o = matchmaker(
        "postgres://bob:hunter2@127.0.0.1:1/x",
        &["status", "--check", "--connect-timeout", "1s"],
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).starts_with("MATCHMAKER UNKNOWN - "), "{}", text(&o));
    assert!(!text(&o).contains("hunter2"));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim().lines().count(), 1);
}
