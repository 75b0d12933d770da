//! The binary as operators use it: exit codes, one-line errors without
//! secrets, the deadline (slow scoring and a stuck database), and
//! admin-start-matching's no-op / --force / --wait.

use crate::helpers::*;
use rand::SeedableRng;
use sqlx::PgPool;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn matchmaker(url: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_matchmaker"));
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1");
    if let Some(url) = url {
        cmd.env("DATABASE_URL", url);
    }
    cmd.output().expect("run matchmaker")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn usage_errors_exit_2() {
    let o = matchmaker(None, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = matchmaker(None, &["run"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("DATABASE_URL"), "{}", stderr(&o));
    let o = matchmaker(Some("postgres://localhost/x"), &["run", "--max-runtime", "banana"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("write durations like 45s"), "{}", stderr(&o));
    let o = matchmaker(
        Some("postgres://localhost/x"),
        &["admin-start-matching", "--event", "e", "--priority", "9"],
    );
    assert_eq!(o.status.code(), Some(2));
    for bad in [
        ["run", "--max-runtime", "0s"],
        ["run", "--lease", "0s"],
        ["status", "--connect-timeout", "0s"],
    ] {
        let o = matchmaker(Some("postgres://localhost/x"), &bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?} must be refused");
    }
}

#[test]
fn unreachable_database_is_one_line_without_the_password() {
    let started = Instant::now();
    let o = matchmaker(
        Some("postgres://bob:hunter2@127.0.0.1:1/nowhere"),
        &["status", "--connect-timeout", "3s"],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.starts_with("error: cannot connect to the database"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!err.contains("hunter2") && !stdout(&o).contains("hunter2"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let o = matchmaker(Some("mysql://bob:hunter2@127.0.0.1/db"), &["run"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("must be a postgres://") && !err.contains("hunter2"),
        "{err}"
    );

    // A password in the query string is a password too.
    for url in [
        "postgres://bob@127.0.0.1:1/x?password=hunter2&sslmode=bogus",
        "postgres://bob@127.0.0.1:99999/x?password=hunter2",
        "postgres://bob:hunter2@127.0.0.1:1/x?password=hunter2",
    ] {
        let o = matchmaker(Some(url), &["status", "--connect-timeout", "2s"]);
        assert_eq!(o.status.code(), Some(1), "{url}");
        assert!(!stderr(&o).contains("hunter2"), "{}", stderr(&o));
        let o = matchmaker(
            Some(url),
            &["--log-format", "json", "status", "--connect-timeout", "2s"],
        );
        assert!(!stderr(&o).contains("hunter2"), "{}", stderr(&o));
    }
}

#[sqlx::test(migrations = false)]
async fn commands_before_migrate_say_to_migrate(pool: PgPool) {
    // No schema yet, so no worker role either: the owner runs these.
    let url = database_url(&pool).await;
    for args in [&["run"][..], &["status"][..], &["daemon"][..]] {
        let o = matchmaker(Some(&url), args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(stderr(&o).contains("run `matchmaker migrate` first"), "{}", stderr(&o));
    }
    let o = matchmaker(Some(&url), &["migrate"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let all = matchmaker::MIGRATOR.iter().count();
    assert!(all >= 3, "the role/bio trigger migration is embedded");
    assert!(
        stdout(&o).contains(&format!("applied {all} migration(s)")),
        "{}",
        stdout(&o)
    );
    let o = matchmaker(Some(&url), &["migrate"]);
    assert!(stdout(&o).contains("nothing applied"), "{}", stdout(&o));
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn unknown_events_are_clear_errors(pool: PgPool) {
    let url = worker_url(&pool).await;
    for args in [
        &["admin-start-matching", "--event", "no-such-event"][..],
        &["run", "--event", "no-such-event"][..],
        &["status", "--event", "no-such-event"][..],
    ] {
        let o = matchmaker(Some(&url), args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&o).contains("no event with id or code \"no-such-event\""),
            "{}",
            stderr(&o)
        );
    }
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn admin_start_is_a_no_op_on_an_unchanged_completed_event(pool: PgPool) {
    let url = worker_url(&pool).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let ev = create_event(&pool, "conf", "hybrid-v1", 3).await;
    for _ in 0..40 {
        insert_profile(&pool, ev, &random_profile(&mut rng, 0)).await;
    }
    let o = matchmaker(Some(&url), &["admin-start-matching", "--event", "conf", "--wait"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("enqueued 40 active attendees"), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("completed — 40 processed, 0 failed"),
        "{}",
        stdout(&o)
    );
    assert_eq!(open_rows(&pool).await, 0);
    assert_exact(&pool, ev, "after admin start --wait").await;

    let o = matchmaker(Some(&url), &["admin-start-matching", "--event", &ev.to_string()]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("nothing enqueued"), "{}", stdout(&o));
    assert_eq!(open_rows(&pool).await, 0);

    let o = matchmaker(
        Some(&url),
        &["admin-start-matching", "--event", "conf", "--force", "--priority", "2"],
    );
    assert!(stdout(&o).contains("enqueued 40"), "{}", stdout(&o));
    let o = matchmaker(Some(&url), &["run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("drained"), "{}", stdout(&o));

    // A change since the last start makes it a real start again.
    sqlx::query("UPDATE event_participants SET interests = '{rust}' WHERE user_id = (SELECT user_id FROM event_participants ORDER BY user_id LIMIT 1)")
        .execute(&pool)
        .await
        .unwrap();
    let o = matchmaker(Some(&url), &["run"]);
    assert!(o.status.success());
    let o = matchmaker(Some(&url), &["admin-start-matching", "--event", "conf"]);
    assert!(stdout(&o).contains("enqueued 40"), "{}", stdout(&o));

    // Interrupted before it drained: running it again resumes, not restarts.
    let o = matchmaker(Some(&url), &["admin-start-matching", "--event", "conf"]);
    assert!(
        stdout(&o).contains("resuming it rather than starting over"),
        "{}",
        stdout(&o)
    );
    assert_eq!(open_rows(&pool).await, 40);

    let o = matchmaker(Some(&url), &["status", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status --json prints JSON");
    assert_eq!(status["events"][0]["code"], "conf");
    assert_eq!(status["events"][0]["remaining"], 40);
    let o = matchmaker(Some(&url), &["status", "--event", "conf"]);
    assert!(
        stdout(&o).contains("QUEUE") && stdout(&o).contains("conf"),
        "{}",
        stdout(&o)
    );
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn run_meets_its_deadline_when_scoring_is_slow(pool: PgPool) {
    let url = worker_url(&pool).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let ev = create_event(&pool, "slow", "hybrid-v1", 3).await;
    for _ in 0..60 {
        insert_profile(&pool, ev, &random_profile(&mut rng, 0)).await;
    }
    let started = Instant::now();
    let o = matchmaker(
        Some(&url),
        &[
            "run",
            "--max-runtime",
            "2s",
            "--fault-score-delay",
            "250ms",
            "--batch-size",
            "20",
            "--json",
        ],
    );
    let elapsed = started.elapsed();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(elapsed < Duration::from_millis(2000 + 1500), "run took {elapsed:?}");
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json summary");
    assert_eq!(summary["stop_reason"], "deadline");
    let processed = summary["totals"]["processed"].as_i64().unwrap_or(-1);
    let released = summary["totals"]["released"].as_i64().unwrap_or(-1);
    assert!(processed >= 1 && released >= 1, "{summary}");

    let (done, pending, processing, max_pending_attempts): (i64, i64, i64, Option<i32>) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'done'), count(*) FILTER (WHERE status = 'pending'),
                count(*) FILTER (WHERE status = 'processing'), max(attempts) FILTER (WHERE status = 'pending')
           FROM matchmaking_queue",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(done, processed);
    assert_eq!(processing, 0, "claimed rows must not stay leased");
    assert_eq!(pending, 60 - done);
    assert_eq!(
        max_pending_attempts,
        Some(0),
        "released rows must get their attempt back"
    );
    let reason: String = sqlx::query_scalar("SELECT stop_reason FROM matchmaking_runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(reason, "deadline");
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn run_meets_its_deadline_when_the_database_hangs(pool: PgPool) {
    let url = worker_url(&pool).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let ev = create_event(&pool, "stuck", "hybrid-v1", 3).await;
    for _ in 0..10 {
        insert_profile(&pool, ev, &random_profile(&mut rng, 0)).await;
    }
    // Block every read of user_matches: the batch's snapshot read hangs.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE user_matches IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();

    let started = Instant::now();
    let o = matchmaker(Some(&url), &["run", "--max-runtime", "2s"]);
    let elapsed = started.elapsed();
    blocker.rollback().await.unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(elapsed < Duration::from_millis(2000 + 3000), "run took {elapsed:?}");
    let (pending, attempts): (i64, Option<i32>) =
        sqlx::query_as("SELECT count(*) FILTER (WHERE status = 'pending'), max(attempts) FROM matchmaking_queue")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(pending, 10, "the abandoned batch's rows are pending again");
    assert_eq!(attempts, Some(0));
}

/// What needs the queue's owner degrades with a log line: the worker role
/// skips ANALYZE after admin-start-matching's enqueue and says so; the owner
/// does it silently.
#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn maintenance_the_worker_role_may_not_do_is_skipped_with_a_log_line(pool: PgPool) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let ev = create_event(&pool, "maint", "hybrid-v1", 3).await;
    for _ in 0..10 {
        insert_profile(&pool, ev, &random_profile(&mut rng, 0)).await;
    }
    let as_worker = worker_url(&pool).await;
    let as_owner = database_url(&pool).await;
    for (url, says) in [(&as_worker, true), (&as_owner, false)] {
        let o = Command::new(env!("CARGO_BIN_EXE_matchmaker"))
            .args(["admin-start-matching", "--event", "maint", "--force"])
            .env("DATABASE_URL", url)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .output()
            .expect("run matchmaker");
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            stderr(&o).contains("not analyzing matchmaking_queue after the enqueue: this role does not own it"),
            says,
            "{url}: {}",
            stderr(&o)
        );
    }
}
