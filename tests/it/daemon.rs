//! `matchmaker daemon`: new queue rows are drained at once (LISTEN/NOTIFY,
//! not the schedule), SIGTERM stops it cleanly, a bad schedule is refused.

use crate::helpers::*;
use rand::SeedableRng;
use sqlx::PgPool;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// SIGTERM, then a clean exit within 10 s.
async fn stop_cleanly(daemon: &mut std::process::Child) {
    let term = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    let status = wait_exit(daemon, Duration::from_secs(10)).await;
    assert!(status.success(), "daemon exit status {status}");
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn the_daemon_wakes_on_new_rows_and_stops_on_sigterm(pool: PgPool) {
    let url = worker_url(&pool).await;
    let ev = create_event(&pool, "live", "hybrid-v1", 3).await;
    // A schedule that never fires during the test: only NOTIFY can wake it.
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_matchmaker"))
        .args(["daemon", "--schedule", "0 0 0 1 1 *"])
        .env("DATABASE_URL", &url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn daemon");
    // Wait until its first drain (at start-up) is over: from then on only a
    // notification can start another one. Then add attendees in bursts.
    let started = Instant::now();
    loop {
        let finished: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM matchmaking_runs WHERE command = 'daemon' AND finished_at IS NOT NULL",
        )
        .fetch_one(&pool)
        .await
        .expect("runs");
        if finished > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the daemon never finished its first drain"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    for _ in 0..3 {
        for _ in 0..15 {
            insert_profile(&pool, ev, &random_profile(&mut rng, 0)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    while open_rows(&pool).await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the daemon did not drain new rows"
        );
        assert!(
            daemon.try_wait().expect("try_wait").is_none(),
            "the daemon exited early"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_exact(&pool, ev, "drained by the daemon").await;

    stop_cleanly(&mut daemon).await;
}

/// Runs of the daemon reuse one lock connection while it stays fresh:
/// opening one per wake-up (a new backend, with cold caches and no prepared
/// statements) was most of a join's worker time.
#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn the_daemon_keeps_its_lock_connection_across_runs(pool: PgPool) {
    let url = worker_url(&pool).await;
    let ev = create_event(&pool, "joins", "hybrid-v1", 3).await;
    let log_path = std::env::temp_dir().join(format!("matchmaker-daemon-{}.log", uuid::Uuid::new_v4()));
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_matchmaker"))
        .args(["daemon", "--schedule", "0 0 0 1 1 *"])
        .env("DATABASE_URL", &url)
        .env("RUST_LOG", "matchmaker=debug")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn daemon");
    let runs = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM matchmaking_runs WHERE command = 'daemon' AND finished_at IS NOT NULL AND claimed > 0",
        )
        .fetch_one(&pool)
        .await
        .expect("runs")
    };
    // One attendee at a time, each drained by a run of its own.
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    for join in 1..=5 {
        insert_profile(&pool, ev, &random_profile(&mut rng, 0)).await;
        let started = Instant::now();
        while runs().await < join {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "join {join} was not drained"
            );
            assert!(
                daemon.try_wait().expect("try_wait").is_none(),
                "the daemon exited early"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_exact(&pool, ev, "drained one join at a time").await;
    stop_cleanly(&mut daemon).await;
    let text = std::fs::read_to_string(&log_path).expect("daemon log");
    let _ = std::fs::remove_file(&log_path);
    let opened = text.matches("opened a lock connection").count();
    assert_eq!(opened, 1, "5 runs with work opened {opened} lock connections:\n{text}");
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn a_bad_schedule_is_refused(pool: PgPool) {
    let url = worker_url(&pool).await;
    let out = Command::new(env!("CARGO_BIN_EXE_matchmaker"))
        .args(["daemon", "--schedule", "every minute"])
        .env("DATABASE_URL", &url)
        .output()
        .expect("run daemon");
    assert_eq!(out.status.code(), Some(2), "a bad schedule is a usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("write six (seconds first"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_matchmaker"))
        .args(["daemon", "--schedule", "0 99 * * * *"])
        .env("DATABASE_URL", &url)
        .output()
        .expect("run daemon");
    assert_eq!(out.status.code(), Some(2));
}
