//! Claiming: several workers over many rows process each row exactly once;
//! a lease that expires under a slow worker is taken over and the slow
//! worker's completion is refused; poison rows end `failed` with a readable
//! error while the rest of their batch is matched.

use crate::helpers::*;
use matchmaker::store::jobs;
use matchmaker::store::queue::{self, GiveBack, RetryPolicy};
use matchmaker::worker::{self, WorkerOptions};
use rand::SeedableRng;
use sqlx::{Connection, PgPool};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn concurrent_workers_process_every_row_exactly_once(pool: PgPool) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut events = Vec::new();
    for e in 0..5 {
        let ev = create_event(&pool, &format!("claims-{e}"), "hybrid-v1", 3).await;
        for _ in 0..60 {
            insert_profile(&pool, ev, &random_profile(&mut rng, 0)).await;
        }
        events.push(ev);
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM matchmaking_queue")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(total, 300);

    let mut handles = Vec::new();
    let workers = worker_pool(&pool).await;
    for _ in 0..4 {
        let pool = workers.clone();
        handles.push(tokio::spawn(async move {
            let connect = pool.connect_options();
            let opts = WorkerOptions {
                batch_size: 7,
                ..fast_options()
            };
            worker::run(&pool, &connect, opts, CancellationToken::new())
                .await
                .expect("worker")
        }));
    }
    let mut processed = 0;
    let mut claimed = 0;
    for h in handles {
        let s = h.await.expect("join");
        processed += s.totals.processed;
        claimed += s.totals.claimed;
    }
    // Each row claimed once (attempts = 1) and done once.
    assert_eq!(claimed, 300, "rows claimed more than once");
    assert_eq!(processed, 300);
    let (done, max_attempts): (i64, i32) =
        sqlx::query_as("SELECT count(*) FILTER (WHERE status = 'done'), max(attempts) FROM matchmaking_queue")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((done, max_attempts), (300, 1));
    for ev in events {
        assert_exact(&pool, ev, "after concurrent claims").await;
        let job: (String, i32) = sqlx::query_as("SELECT status, processed FROM matchmaking_jobs WHERE event_id = $1")
            .bind(ev)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(job, ("completed".to_string(), 60));
    }
    // Every invocation is in the run history.
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM matchmaking_runs WHERE stop_reason = 'drained'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(runs, 4);
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn a_worker_that_lost_its_lock_is_taken_over_and_never_completes_twice(pool: PgPool) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let ev = create_event(&pool, "lease", "hybrid-v1", 3).await;
    for _ in 0..5 {
        insert_profile(&pool, ev, &random_profile(&mut rng, 0)).await;
    }
    let connect = worker_connect(&pool).await;
    let mut slow = sqlx::PgConnection::connect_with(&connect).await.unwrap();
    let mut fast = sqlx::PgConnection::connect_with(&connect).await.unwrap();

    assert!(queue::try_lock_event(&mut slow, ev).await.unwrap());
    let mine = queue::claim(&mut slow, ev, 10, "slow", Duration::from_secs(120), &[])
        .await
        .unwrap();
    assert_eq!(mine.len(), 5);
    // While the slow worker holds the event, nobody else can work on it.
    assert!(!queue::try_lock_event(&mut fast, ev).await.unwrap());
    // Its session ends (killed, cut off, or idle past idle_session_timeout)
    // while the process itself lives on.
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut slow)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&pool)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    while !queue::try_lock_event(&mut fast, ev).await.unwrap() {
        assert!(started.elapsed() < Duration::from_secs(5), "the lock was not released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The rows are taken over at once, long before their 120 s lease ends.
    let theirs = queue::claim(&mut fast, ev, 10, "fast", Duration::from_secs(60), &[])
        .await
        .unwrap();
    assert_eq!(theirs.len(), 5, "orphaned rows must be claimable under the lock");
    assert!(theirs.iter().all(|r| r.attempts == 2));

    // The slow worker wakes up: its write fails on its dead connection, and
    // with a fresh one its completion and its give-back are refused.
    let ids: Vec<i64> = mine.iter().map(|r| r.id).collect();
    assert!(slow.begin().await.is_err(), "the slow worker's session must be gone");
    let mut again = sqlx::PgConnection::connect_with(&connect).await.unwrap();
    let mut tx = again.begin().await.unwrap();
    assert_eq!(
        jobs::record_batch(&mut *tx, ev, &ids, "slow", 5, 0, None)
            .await
            .unwrap()
            .completed,
        0,
        "the slow worker lost its rows"
    );
    tx.rollback().await.unwrap();
    queue::give_back(&mut again, &ids, "slow", GiveBack::Release)
        .await
        .unwrap();
    let processing: i64 =
        sqlx::query_scalar("SELECT count(*) FROM matchmaking_queue WHERE status = 'processing' AND locked_by = 'fast'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(processing, 5);
    let mut tx = fast.begin().await.unwrap();
    assert_eq!(
        jobs::record_batch(&mut *tx, ev, &ids, "fast", 5, 0, None)
            .await
            .unwrap()
            .completed,
        5
    );
    tx.commit().await.unwrap();
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn a_poison_attendee_fails_after_its_attempts_and_the_rest_is_matched(pool: PgPool) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let ev = create_event(&pool, "poison", "cosine-v1", 3).await;
    for _ in 0..30 {
        insert_profile(&pool, ev, &random_profile(&mut rng, 8)).await;
    }
    let mut poison = random_profile(&mut rng, 8);
    if let Some(e) = poison.embedding.as_mut() {
        e[3] = f32::NAN;
    }
    insert_profile(&pool, ev, &poison).await;
    let mut short = random_profile(&mut rng, 8);
    short.embedding = Some(vec![1.0, 2.0]);
    // The event fixes its dimension: a 2-dimension vector is malformed.
    sqlx::query("UPDATE events SET embedding_dimensions = 8 WHERE id = $1")
        .bind(ev)
        .execute(&pool)
        .await
        .unwrap();
    insert_profile(&pool, ev, &short).await;

    let opts = WorkerOptions {
        retry: RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(50),
        },
        ..fast_options()
    };
    drain(&pool, &opts, Duration::from_secs(30)).await;

    let rows: Vec<(uuid::Uuid, String, i32, Option<String>)> = sqlx::query_as(
        "SELECT user_id, status, attempts, last_error FROM matchmaking_queue WHERE status = 'failed' ORDER BY user_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (user, _, attempts, error) in &rows {
        let error = error.as_deref().unwrap_or_default();
        assert_eq!(*attempts, 3);
        if *user == poison.user_id {
            assert!(error.contains("non-finite value (NaN) at index 3"), "{error}");
        } else {
            assert_eq!(*user, short.user_id);
            assert!(
                error.contains("embedding has 2 dimensions but the event expects 8"),
                "{error}"
            );
        }
    }
    // Everyone else is matched exactly; the poison appears in no list.
    assert_exact(&pool, ev, "after poison").await;
    let with_poison: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM user_matches WHERE $1 IN (user_id, matched_user_id) OR $2 IN (user_id, matched_user_id)",
    )
    .bind(poison.user_id)
    .bind(short.user_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(with_poison, 0);
    let matched: i64 = sqlx::query_scalar("SELECT count(DISTINCT user_id) FROM user_matches")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(matched, 30);
    let job: (String, i32) = sqlx::query_as("SELECT status, failed FROM matchmaking_jobs WHERE event_id = $1")
        .bind(ev)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(job, ("completed_with_errors".to_string(), 2));
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn two_claimed_rows_of_one_attendee_go_back_as_one_pending_row(pool: PgPool) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let ev = create_event(&pool, "dup", "hybrid-v1", 3).await;
    let mut p = random_profile(&mut rng, 0);
    insert_profile(&pool, ev, &p).await;
    let connect = worker_connect(&pool).await;
    let mut dead = sqlx::PgConnection::connect_with(&connect).await.unwrap();
    let mut live = sqlx::PgConnection::connect_with(&connect).await.unwrap();
    // A worker claims the row and dies; the attendee edits their profile.
    let first = queue::claim(&mut dead, ev, 10, "dead", Duration::from_millis(100), &[])
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    p.interests = vec!["rust".into()];
    update_profile(&pool, ev, &p).await;
    wait_for(
        &pool,
        "SELECT bool_and(locked_until < now()) FROM matchmaking_queue WHERE status = 'processing'",
        None,
        Duration::from_secs(5),
    )
    .await;
    // One claim takes both the expired row and the new one.
    let both = queue::claim(&mut live, ev, 10, "live", Duration::from_secs(60), &[])
        .await
        .unwrap();
    assert_eq!(both.len(), 2);
    let ids: Vec<i64> = both.iter().map(|r| r.id).collect();
    let errors = vec!["boom".to_string(); 2];
    let policy = RetryPolicy {
        max_attempts: 5,
        base: Duration::from_millis(1),
        cap: Duration::from_millis(1),
    };
    let r = queue::give_back(&mut live, &ids, "live", GiveBack::Retry(&errors, policy))
        .await
        .unwrap();
    assert_eq!((r.failed, r.left_leased), (0, 0));
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM matchmaking_queue GROUP BY status ORDER BY status")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(states, vec![("done".to_string(), 1), ("pending".to_string(), 1)]);
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn rows_locked_by_an_open_transaction_neither_spin_the_worker_nor_starve_other_events(pool: PgPool) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let busy = create_event(&pool, "busy", "hybrid-v1", 3).await;
    insert_profile(&pool, busy, &random_profile(&mut rng, 0)).await;
    let other = create_event(&pool, "other", "hybrid-v1", 3).await;
    for _ in 0..10 {
        insert_profile(&pool, other, &random_profile(&mut rng, 0)).await;
    }
    sqlx::query("UPDATE matchmaking_queue SET priority = 0 WHERE event_id = $1")
        .bind(other)
        .execute(&pool)
        .await
        .unwrap();
    // An application transaction holds the best row (as a trigger raising
    // its priority would) and does not commit.
    let mut app = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM matchmaking_queue WHERE event_id = $1 FOR UPDATE")
        .bind(busy)
        .execute(&mut *app)
        .await
        .unwrap();
    let commits = |pool: PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let before = commits(pool.clone()).await;
    let url = worker_url(&pool).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_matchmaker"))
        .args(["run", "--max-runtime", "2s", "--json"])
        .env("DATABASE_URL", &url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    app.rollback().await.unwrap();
    // A backend flushes its statistics before it leaves pg_stat_activity.
    wait_for(
        &pool,
        "NOT EXISTS (SELECT 1 FROM pg_stat_activity
                      WHERE datname = current_database() AND usename = 'matchmaker_test_worker')",
        None,
        Duration::from_secs(10),
    )
    .await;
    let spent = commits(pool.clone()).await - before;
    assert!(spent < 400, "{spent} transactions in 2 s: the worker is spinning");
    let done: i64 =
        sqlx::query_scalar("SELECT count(*) FROM matchmaking_queue WHERE event_id = $1 AND status = 'done'")
            .bind(other)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(done, 10, "the other event must not starve");
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn malformed_rows_never_fail_their_neighbours(pool: PgPool) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let ev = create_event(&pool, "messy", "hybrid-v1", 3).await;
    for _ in 0..20 {
        insert_profile(&pool, ev, &random_profile(&mut rng, 4)).await;
    }
    // What applications really write: NULLs, NULL elements, 2-D arrays,
    // arrays not starting at 1, huge texts, too many tags, broken vectors.
    let huge_tag = "x".repeat(100_000);
    let statements = [
        "INSERT INTO event_participants (event_id, user_id, interests, looking_for, offering, embedding) VALUES ($1, gen_random_uuid(), NULL, NULL, NULL, '{}')".to_string(),
        "INSERT INTO event_participants (event_id, user_id, interests, embedding) VALUES ($1, gen_random_uuid(), ARRAY['rust', NULL, '', '  '], '{1,NULL,2,3}')".to_string(),
        "INSERT INTO event_participants (event_id, user_id, interests, embedding) VALUES ($1, gen_random_uuid(), '{{rust,ai},{music,art}}', '{{0.1,0.2},{0.3,0.4}}')".to_string(),
        "INSERT INTO event_participants (event_id, user_id, interests, embedding) VALUES ($1, gen_random_uuid(), '[0:1]={rust,ai}', '[0:3]={1,2,3,4}')".to_string(),
        format!("INSERT INTO event_participants (event_id, user_id, bio, interests) VALUES ($1, gen_random_uuid(), repeat('bio ', 250000), ARRAY['{huge_tag}', 'rust'])"),
        "INSERT INTO event_participants (event_id, user_id, interests) SELECT $1, gen_random_uuid(), array_agg('tag' || i) FROM generate_series(1, 600) i".to_string(),
        "INSERT INTO event_participants (event_id, user_id, embedding) VALUES ($1, gen_random_uuid(), '{Infinity,1,2,3}')".to_string(),
    ];
    for sql in &statements {
        sqlx::query(sql)
            .bind(ev)
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let opts = matchmaker::worker::WorkerOptions {
        retry: RetryPolicy {
            max_attempts: 2,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(20),
        },
        ..fast_options()
    };
    drain(&pool, &opts, Duration::from_secs(30)).await;
    assert_exact(&pool, ev, "with malformed rows").await;
    let errors: Vec<String> =
        sqlx::query_scalar("SELECT last_error FROM matchmaking_queue WHERE status = 'failed' ORDER BY last_error")
            .fetch_all(&pool)
            .await
            .unwrap();
    // Exactly the three malformed embeddings and the 600 tags are reported.
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert!(errors.iter().any(|e| e.contains("2-dimensional array")), "{errors:#?}");
    assert!(errors.iter().any(|e| e.contains("NULL at index 1")), "{errors:#?}");
    assert!(
        errors.iter().any(|e| e.contains("non-finite value (inf)")),
        "{errors:#?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("interests has 600 entries")),
        "{errors:#?}"
    );
    // Everyone, the malformed included (hybrid-v1 scores them without the
    // broken part), has a full list.
    let short: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_participants p
          WHERE (SELECT count(*) FROM user_matches m WHERE m.event_id = p.event_id AND m.user_id = p.user_id) < 3",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(short, 0);
}

/// The pipelined worker claims batch i+1 while batch i, still `processing`
/// under its own lease, is being scored: that claim must leave batch i
/// alone (the takeover of a dead worker's rows would otherwise take it and
/// spend a second attempt on it), yet still take over a dead worker's rows.
#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn a_claim_leaves_the_callers_in_flight_batch_alone(pool: PgPool) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let ev = create_event(&pool, "in-flight", "hybrid-v1", 3).await;
    for _ in 0..12 {
        insert_profile(&pool, ev, &random_profile(&mut rng, 0)).await;
    }
    let mut me = sqlx::PgConnection::connect_with(&worker_connect(&pool).await)
        .await
        .unwrap();
    let lease = Duration::from_secs(60);
    // This worker's batch i, and two rows a dead worker left `processing`.
    let batch_i = queue::claim(&mut me, ev, 4, "me", lease, &[]).await.unwrap();
    let orphans: Vec<i64> = sqlx::query_scalar(
        "UPDATE matchmaking_queue SET status = 'processing', attempts = 1, locked_by = 'dead',
                locked_until = now() + interval '1 minute'
          WHERE id IN (SELECT id FROM matchmaking_queue WHERE status = 'pending' ORDER BY id DESC LIMIT 2)
         RETURNING id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!((orphans.len(), batch_i.len()), (2, 4));
    let in_flight: Vec<i64> = batch_i.iter().map(|r| r.id).collect();
    // Batch i+1: the orphans and pending rows, never batch i.
    let next = queue::claim(&mut me, ev, 20, "me", lease, &in_flight).await.unwrap();
    let next_ids: Vec<i64> = next.iter().map(|r| r.id).collect();
    assert_eq!(next.len(), 12 - 4, "every row but batch i: {next_ids:?}");
    assert!(next_ids.iter().all(|id| !in_flight.contains(id)));
    assert!(orphans.iter().all(|o| next_ids.contains(o)), "{orphans:?} {next_ids:?}");
    let attempts: Vec<i32> =
        sqlx::query_scalar("SELECT attempts FROM matchmaking_queue WHERE id = ANY($1) ORDER BY id")
            .bind(&in_flight)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(attempts, vec![1; 4], "batch i spent one attempt each");
}
