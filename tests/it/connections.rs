//! What sits between the worker and the database: a real PgBouncer in
//! transaction mode is refused with one line before any row is touched,
//! PgBouncer in session mode drains an event exactly, and TLS works with
//! `sslmode=require` and `verify-full` (a wrong root certificate is a
//! one-line error). scripts/test.sh starts the poolers and the TLS cluster.

use crate::helpers::*;
use rand::SeedableRng;
use sqlx::{Connection, PgPool};
use std::process::{Command, Output};

fn matchmaker(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_matchmaker"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .output()
        .expect("run matchmaker")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// The pool's database through the pooler of `var`, as the test worker.
async fn through(var: &str, pool: &PgPool) -> String {
    let base = std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run the tests with scripts/test.sh"));
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(pool)
        .await
        .unwrap();
    ensure_test_worker(pool).await;
    let host = base.rsplit_once('@').map_or(base.as_str(), |(_, h)| h);
    format!("postgres://{TEST_WORKER}@{host}/{db}")
}

/// Ends the sessions PgBouncer keeps open to the test's database, so that
/// sqlx can drop it afterwards.
async fn close_pooled_sessions(pool: &PgPool) {
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid() AND usename = $1",
    )
    .bind(TEST_WORKER)
    .execute(pool)
    .await
    .unwrap();
}

async fn event_of(pool: &PgPool, n: usize) -> uuid::Uuid {
    let mut rng = rand::rngs::StdRng::seed_from_u64(n as u64);
    let ev = create_event(pool, "pooled", "hybrid-v1", 3).await;
    for _ in 0..n {
        insert_profile(pool, ev, &random_profile(&mut rng, 8)).await;
    }
    ev
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn a_transaction_mode_pooler_is_refused_before_any_row_is_touched(pool: PgPool) {
    event_of(&pool, 30).await;
    let url = through("MATCHMAKER_TEST_PGBOUNCER_TRANSACTION_URL", &pool).await;
    for args in [
        &["run", "--max-runtime", "10s"][..],
        &["status"][..],
        &["admin-start-matching", "--event", "pooled", "--wait", "--force"][..],
        &["daemon"][..],
    ] {
        let o = matchmaker(&url, args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("connection pooler in transaction mode") && err.contains("port 5432"),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
    let untouched: (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'pending' AND attempts = 0), count(*),
                (SELECT count(*) FROM matchmaking_runs)
           FROM matchmaking_queue",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(untouched, (30, 30, 0));
    // Nothing of ours stayed behind on the pooler's shared server sessions
    // (the check runs before any SET).
    let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let mut plain = sqlx::PgConnection::connect_with(&opts.extra_float_digits(None))
        .await
        .unwrap();
    for setting in ["statement_timeout", "lock_timeout", "idle_session_timeout"] {
        let row = sqlx::Executor::fetch_one(&mut plain, format!("SHOW {setting}").as_str())
            .await
            .unwrap();
        let value: String = sqlx::Row::get(&row, 0);
        assert_eq!(value, "0", "{setting} leaked onto a pooled session");
    }
    drop(plain);
    close_pooled_sessions(&pool).await;
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn a_session_mode_pooler_drains_an_event_exactly(pool: PgPool) {
    let ev = event_of(&pool, 60).await;
    let url = through("MATCHMAKER_TEST_PGBOUNCER_SESSION_URL", &pool).await;
    let o = matchmaker(&url, &["run", "--max-runtime", "30s", "--batch-size", "7"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(open_rows(&pool).await, 0);
    assert_exact(&pool, ev, "drained through PgBouncer in session mode").await;
    let o = matchmaker(&url, &["status", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    close_pooled_sessions(&pool).await;
}

fn supabase_url(query: &str, host: &str) -> String {
    let base = std::env::var("MATCHMAKER_TEST_SUPABASE_URL")
        .expect("MATCHMAKER_TEST_SUPABASE_URL is not set: run the tests with scripts/test.sh");
    let base = base.split_once('?').map_or(base.as_str(), |(b, _)| b);
    format!("{}{query}", base.replace("127.0.0.1", host))
}

#[test]
fn tls_require_and_verify_full_work_and_a_wrong_root_certificate_is_one_line() {
    let ca = std::env::var("MATCHMAKER_TEST_TLS_CA").expect("MATCHMAKER_TEST_TLS_CA");
    let wrong = std::env::var("MATCHMAKER_TEST_TLS_WRONG_CA").expect("MATCHMAKER_TEST_TLS_WRONG_CA");
    // The schema is not needed to connect: `migrate` on the cluster's
    // `postgres` database would change it, so the check is that the command
    // gets past TLS and reports the missing schema.
    let past_tls = |o: &Output| stderr(o).contains("run `matchmaker migrate` first");
    for (query, host) in [
        ("?sslmode=require".to_string(), "127.0.0.1"),
        (format!("?sslmode=verify-full&sslrootcert={ca}"), "localhost"),
        (format!("?sslmode=verify-full&sslrootcert={ca}"), "127.0.0.1"),
        (format!("?sslmode=verify-ca&sslrootcert={ca}"), "127.0.0.1"),
    ] {
        let o = matchmaker(&supabase_url(&query, host), &["status"]);
        assert!(past_tls(&o), "{query} at {host}: {}", stderr(&o));
    }
    let o = matchmaker(
        &supabase_url(&format!("?sslmode=verify-full&sslrootcert={wrong}"), "localhost"),
        &["status"],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("TLS") && err.contains("sslrootcert"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // The cluster refuses unencrypted sessions, as Supabase can be set to.
    let o = matchmaker(&supabase_url("?sslmode=disable", "127.0.0.1"), &["status"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("no encryption"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}
