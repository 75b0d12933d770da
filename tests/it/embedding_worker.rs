//! The embedding provider wired into the worker, against a real PostgreSQL
//! and a deterministic fake provider on 127.0.0.1 (`helpers::provider`):
//! provider vectors for attendees without application embeddings, one
//! request per batch of misses, the cache across runs and events, the run
//! record and `status`, the fallback while the provider is down, and a key
//! that never leaks.

use crate::helpers::provider::{FakeProvider, Mode, DIMS, KEY};
use crate::helpers::*;
use matchmaker::render_status as render;
use matchmaker::store::status;
use matchmaker::worker::WorkerOptions;
use matchmaker::MIGRATOR;
use rand::rngs::StdRng;
use rand::SeedableRng;
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

async fn insert_people(pool: &PgPool, event: Uuid, n: usize, seed: u64) -> Vec<Profile> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for i in 0..n {
        let mut p = random_profile(&mut rng, 0);
        // Distinct texts (the bio carries the index).
        p.bio = Some(format!("Attendee {i}: {}", p.bio.clone().unwrap_or_default()));
        insert_profile(pool, event, &p).await;
        out.push(p);
    }
    out
}

async fn provider_rows(pool: &PgPool, event: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM matchmaking_profile_embeddings WHERE event_id = $1")
        .bind(event)
        .fetch_one(pool)
        .await
        .expect("count")
}

async fn matched_users(pool: &PgPool, event: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(DISTINCT user_id) FROM user_matches WHERE event_id = $1")
        .bind(event)
        .fetch_one(pool)
        .await
        .expect("count")
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn attendees_without_embeddings_get_provider_vectors_once(pool: PgPool) {
    let fake = FakeProvider::start(Mode::Healthy).await;
    let embedder = fake.embedder(Duration::from_secs(60));
    let opts = WorkerOptions {
        batch_size: 10,
        embedder: Some(embedder.clone()),
        ..fast_options()
    };
    // cosine-v1: without the provider's vectors nobody could be matched.
    let a = create_event(&pool, "emb-a", "cosine-v1", 3).await;
    let people = insert_people(&pool, a, 30, 1).await;
    let run = run_once(&pool, &opts).await;
    assert_eq!(run.totals.processed, 30);
    assert_eq!(run.totals.batches, 3);
    // One request per batch of misses, each carrying that batch's attendees.
    assert_eq!(fake.requests(), 3);
    fake.with_seen(|s| assert!(s.iter().all(|r| r.inputs == 10 && r.ok)));
    let e = &run.totals.embeddings;
    assert_eq!(
        (e.inputs, e.cache_misses, e.cache_hits, e.provider_calls),
        (30, 30, 0, 3)
    );
    assert!(e.tokens > 0);
    assert_eq!(provider_rows(&pool, a).await, 30);
    assert_eq!(matched_users(&pool, a).await, 30);
    assert_exact(&pool, a, "event a with provider vectors").await;
    // The stored vector is the provider's for that text.
    let stored: Vec<f32> =
        sqlx::query_scalar("SELECT embedding FROM matchmaking_profile_embeddings WHERE event_id = $1 AND user_id = $2")
            .bind(a)
            .bind(people[0].user_id)
            .fetch_one(&pool)
            .await
            .expect("stored");
    assert_eq!(stored.len(), DIMS);

    // The run record and `status --json` show the statistics.
    let (calls, misses, hits, tokens): (i32, i32, i32, i64) = sqlx::query_as(
        "SELECT embedding_calls, embedding_cache_misses, embedding_cache_hits, embedding_tokens
           FROM matchmaking_runs WHERE id = $1",
    )
    .bind(run.run_id)
    .fetch_one(&pool)
    .await
    .expect("run record");
    assert_eq!((calls, misses, hits), (3, 30, 0));
    assert_eq!(tokens as u64, e.tokens);
    let st = status::read(&pool, None, 10).await.expect("status");
    let json = serde_json::to_value(&st).expect("json");
    let r = json["runs"]
        .as_array()
        .and_then(|runs| runs.iter().find(|r| r["id"] == run.run_id.to_string()))
        .expect("run in status");
    assert_eq!(r["embedding_calls"], 3);
    assert_eq!(r["embedding_cache_misses"], 30);
    let text = render(&st);
    assert!(
        text.contains("embeddings: 30 asked, cache 0 hit(s) / 30 miss(es), 3 provider call(s)"),
        "{text}"
    );

    // Re-matching the event: the stored vectors serve, no provider work at all.
    sqlx::query("SELECT matchmaker_enqueue($1, ARRAY(SELECT user_id FROM event_participants WHERE event_id = $1), 'admin', 1::smallint)")
        .bind(a)
        .execute(&pool)
        .await
        .expect("enqueue");
    let run = run_once(&pool, &opts).await;
    assert_eq!(run.totals.processed, 30);
    assert_eq!(run.totals.embeddings.inputs, 0);
    assert_eq!(fake.requests(), 3);

    // Another event with the same profile texts: cache hits, zero requests.
    let b = create_event(&pool, "emb-b", "hybrid-v1", 3).await;
    for p in &people {
        let q = Profile {
            user_id: Uuid::new_v4(),
            ..p.clone()
        };
        insert_profile(&pool, b, &q).await;
    }
    let run = run_once(&pool, &opts).await;
    assert_eq!(run.totals.processed, 30);
    assert_eq!(fake.requests(), 3, "same texts must not be paid for twice");
    let e = &run.totals.embeddings;
    assert_eq!((e.cache_hits, e.cache_misses, e.provider_calls), (30, 0, 0));
    assert_eq!(provider_rows(&pool, b).await, 30);
    assert_exact(&pool, b, "event b from the cache").await;

    // A profile edit makes the old vector stale: a new one (one request).
    let mut edited = people[3].clone();
    edited.bio = Some("Completely new bio about quantum batteries".into());
    update_profile(&pool, a, &edited).await;
    let run = run_once(&pool, &opts).await;
    assert_eq!(run.totals.embeddings.cache_misses, 1);
    assert_eq!(fake.requests(), 4);
    assert_exact(&pool, a, "after an edit").await;

    // An application embedding wins over the provider's.
    let mut own = people[4].clone();
    own.embedding = Some(vec![1.0; DIMS]);
    update_profile(&pool, a, &own).await;
    let run = run_once(&pool, &opts).await;
    assert_eq!(run.totals.embeddings.inputs, 0);
    assert_exact(&pool, a, "after an application embedding").await;
}

/// A worker without a provider still uses the vectors stored by one, and
/// works as before for everyone else.
#[sqlx::test(migrator = "MIGRATOR")]
async fn no_provider_means_application_embeddings_and_stored_vectors_only(pool: PgPool) {
    let h = create_event(&pool, "noprov", "hybrid-v1", 3).await;
    insert_people(&pool, h, 12, 2).await;
    let runs = drain(&pool, &fast_options(), Duration::from_secs(30)).await;
    assert!(runs.iter().all(|r| r.totals.embeddings.inputs == 0));
    assert_eq!(provider_rows(&pool, h).await, 0);
    assert_eq!(matched_users(&pool, h).await, 12);
    assert_exact(&pool, h, "hybrid without a provider").await;
}

/// An outage longer than the attempts allow fails nothing: rows waiting on
/// the provider go back with their attempt refunded, however many runs pass.
#[sqlx::test(migrator = "MIGRATOR")]
async fn a_long_outage_spends_no_attempts(pool: PgPool) {
    let fake = FakeProvider::start(Mode::Down).await;
    let embedder = fake.embedder(Duration::from_millis(100));
    let opts = WorkerOptions {
        embedder: Some(embedder.clone()),
        retry: matchmaker::store::queue::RetryPolicy {
            max_attempts: 1,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(10),
        },
        ..fast_options()
    };
    let c = create_event(&pool, "long-outage", "cosine-v1", 3).await;
    insert_people(&pool, c, 8, 5).await;
    for _ in 0..4 {
        let run = run_once(&pool, &opts).await;
        assert_eq!(run.totals.failed, 0);
        // The next run finds the rows once their short wait is over.
        wait_for(
            &pool,
            "SELECT bool_and(available_at <= now()) FROM matchmaking_queue WHERE event_id = $1 AND status = 'pending'",
            Some(c),
            Duration::from_secs(10),
        )
        .await;
    }
    let (pending, failed, max_attempts): (i64, i64, Option<i32>) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'failed'),
                max(attempts) FROM matchmaking_queue WHERE event_id = $1",
    )
    .bind(c)
    .fetch_one(&pool)
    .await
    .expect("queue");
    assert_eq!((pending, failed, max_attempts), (8, 0, Some(0)));
    assert!(fake.requests() >= 1);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn while_the_provider_is_down_hybrid_matches_without_it_and_cosine_waits(pool: PgPool) {
    let fake = FakeProvider::start(Mode::Down).await;
    let embedder = fake.embedder(Duration::from_millis(300));
    let opts = WorkerOptions {
        batch_size: 50,
        embedder: Some(embedder.clone()),
        retry: matchmaker::store::queue::RetryPolicy {
            max_attempts: 20,
            base: Duration::from_millis(50),
            cap: Duration::from_millis(200),
        },
        ..fast_options()
    };
    let h = create_event(&pool, "down-h", "hybrid-v1", 3).await;
    let c = create_event(&pool, "down-c", "cosine-v1", 3).await;
    insert_people(&pool, h, 15, 3).await;
    insert_people(&pool, c, 15, 4).await;

    let run = run_once(&pool, &opts).await;
    assert!(fake.requests() >= 1);
    assert_eq!(run.totals.failed, 0, "waiting rows are not failures");
    assert!(run.totals.embeddings.failed_requests + run.totals.embeddings.fast_failures >= 1);
    // hybrid-v1: matched without the embedding term, exactly...
    assert_eq!(matched_users(&pool, h).await, 15);
    assert_exact(&pool, h, "hybrid while the provider is down").await;
    // ...and their rows are back for an upgrade; cosine-v1 attendees wait.
    let open: Vec<(Uuid, String, String)> = sqlx::query_as(
        "SELECT q.event_id, q.status, coalesce(q.last_error, '') FROM matchmaking_queue q
          WHERE q.status IN ('pending', 'processing') ORDER BY q.event_id",
    )
    .fetch_all(&pool)
    .await
    .expect("rows");
    assert_eq!(open.iter().filter(|r| r.0 == h).count(), 15);
    assert_eq!(open.iter().filter(|r| r.0 == c).count(), 15);
    for (event, state, err) in &open {
        assert_eq!(state, "pending");
        if *event == h {
            assert!(err.starts_with("matched without an embedding for now"), "{err}");
        } else {
            assert!(
                err.starts_with("waiting for an embedding: embedding provider unavailable"),
                "{err}"
            );
        }
    }
    assert_eq!(matched_users(&pool, c).await, 0);
    let text = render(&status::read(&pool, None, 50).await.expect("status"));
    assert!(text.contains("waiting for an embedding"), "{text}");

    // The provider comes back: once the rows are processed, the lists are
    // the brute force with the provider's vectors.
    fake.set_mode(Mode::Healthy);
    // The drain goes on until every row is done, breaker cool-down included.
    drain(&pool, &opts, Duration::from_secs(30)).await;
    assert_eq!(provider_rows(&pool, h).await, 15);
    assert_eq!(provider_rows(&pool, c).await, 15);
    assert_eq!(matched_users(&pool, c).await, 15);
    assert_exact(&pool, h, "hybrid after the provider came back").await;
    assert_exact(&pool, c, "cosine after the provider came back").await;
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM matchmaking_queue WHERE status = 'failed'")
        .fetch_one(&pool)
        .await
        .expect("failed");
    assert_eq!(failed, 0);
}

/// A provider that refuses a vector for good (here: a 401) is reported on
/// the row like malformed data; the key it echoes back is scrubbed. Every
/// line the binary writes (TRACE logs, run output, `status` in both forms)
/// is free of the key.
#[sqlx::test(migrator = "MIGRATOR")]
async fn the_api_key_appears_in_no_log_line_or_status_output(pool: PgPool) {
    let fake = FakeProvider::start(Mode::RejectEchoingKey).await;
    let event = create_event(&pool, "secret", "cosine-v1", 3).await;
    insert_people(&pool, event, 6, 5).await;
    let url = worker_url(&pool).await;
    let mut outputs: Vec<String> = Vec::new();
    let (ok, out) = run_bin(
        &fake,
        &url,
        &mut outputs,
        &[
            "run",
            "--max-runtime",
            "5s",
            "--retry-base",
            "20ms",
            "--max-attempts",
            "2",
        ],
    )
    .await;
    assert!(ok, "{out}");
    let (ok, out) = run_bin(&fake, &url, &mut outputs, &["status"]).await;
    assert!(ok, "{out}");

    assert!(
        out.contains("embedding from the provider is unusable: embedding provider rejected the request (HTTP 401)")
            && out.contains("Incorrect API key provided: ***"),
        "{out}"
    );
    let (ok, out) = run_bin(&fake, &url, &mut outputs, &["status", "--json"]).await;
    assert!(ok && out.contains("embedding_calls"), "{out}");
    fake.set_mode(Mode::Healthy);
    let (ok, out) = run_bin(
        &fake,
        &url,
        &mut outputs,
        &[
            "admin-start-matching",
            "--event",
            "secret",
            "--force",
            "--wait",
            "--max-runtime",
            "10s",
        ],
    )
    .await;
    assert!(ok, "{out}");
    let (ok, out) = run_bin(&fake, &url, &mut outputs, &["status", "--json"]).await;
    assert!(ok, "{out}");
    let (ok, out) = run_bin(&fake, &url, &mut outputs, &["--help"]).await;
    assert!(ok, "{out}");
    let (_, out) = run_bin(&fake, &url, &mut outputs, &["run", "--help"]).await;
    assert!(out.contains("EMBEDDINGS_URL"), "{out}");
    // The key was really sent, and the provider really answered.
    fake.with_seen(|s| {
        assert!(s
            .iter()
            .all(|r| r.authorization.as_deref() == Some(format!("Bearer {KEY}").as_str())));
    });
    assert!(fake.ok_requests() >= 1);
    assert_eq!(matched_users(&pool, event).await, 6);
    let all = outputs.join("\n");
    assert!(all.contains("embedding request"), "TRACE logs were not captured");
    assert!(!all.contains(KEY), "the key leaked:\n{all}");
}

/// Runs the binary with the fake provider's environment and TRACE logs;
/// returns (success, stdout + stderr) and keeps the output.
async fn run_bin(fake: &FakeProvider, url: &str, outputs: &mut Vec<String>, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_matchmaker"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "trace")
        .envs(fake.env())
        .output()
        .await
        .expect("run matchmaker");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    outputs.push(text.clone());
    (out.status.success(), text)
}
