//! The embedding provider against a real HTTP server on 127.0.0.1 (a small
//! axum app whose replies each test scripts) and a real PostgreSQL: one
//! request per batch of misses, the cache across calls and embedders, the
//! provider's limits, retries, the breaker, timeouts and deadlines, response
//! validation, and a key that never leaks.

use crate::helpers::provider::vector_for;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use matchmaker::config::EmbeddingArgs;
use matchmaker::embeddings::text::{estimate_tokens, plan_requests};
use matchmaker::embeddings::{
    ApiKey, BreakerState, EmbedError, Embedder, ProfileText, Provider, ProviderConfig, RetryPolicy,
};
use matchmaker::store::embedding_cache as cache;
use matchmaker::MIGRATOR;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const KEY: &str = "sk-test-7f3a9c2e-DO-NOT-LEAK";

// ---------------------------------------------------------------------------
// The fake provider.

/// What the fake answers to one request.
#[derive(Clone, Debug)]
enum Reply {
    /// One deterministic vector per input, listed in reverse order with
    /// `index` set (so a client that ignores `index` gets them wrong).
    Vectors,
    /// This status, optional `Retry-After`, this body.
    Status {
        code: u16,
        retry_after: Option<&'static str>,
        body: String,
    },
    /// Sleep, then answer like `Vectors`.
    Sleep(Duration),
    /// 200 with this raw body.
    Body(&'static str),
    /// Like `Vectors`, but input `input`'s vector has `len` components.
    WrongLength { input: usize, len: usize },
}

#[derive(Clone, Debug)]
struct Seen {
    inputs: Vec<String>,
    body: Value,
    authorization: Option<String>,
}

struct FakeState {
    script: VecDeque<Reply>,
    fallback: Reply,
    seen: Vec<Seen>,
}

#[derive(Clone)]
struct Fake {
    addr: std::net::SocketAddr,
    state: Arc<Mutex<FakeState>>,
}

impl Fake {
    /// Starts the server on a free loopback port; it lives as long as the
    /// test's runtime.
    async fn start(fallback: Reply) -> Fake {
        let state = Arc::new(Mutex::new(FakeState {
            script: VecDeque::new(),
            fallback,
            seen: Vec::new(),
        }));
        let addr = crate::helpers::provider::serve(
            Router::new()
                .route("/v1/embeddings", post(handle))
                .with_state(state.clone()),
        )
        .await;
        Fake { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The next request gets `reply` (queued after earlier ones).
    fn then(&self, reply: Reply) {
        self.state.lock().expect("fake").script.push_back(reply);
    }

    fn set_fallback(&self, reply: Reply) {
        self.state.lock().expect("fake").fallback = reply;
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().expect("fake").seen.clone()
    }

    fn requests(&self) -> usize {
        self.state.lock().expect("fake").seen.len()
    }
}

async fn handle(State(state): State<Arc<Mutex<FakeState>>>, headers: HeaderMap, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let inputs: Vec<String> = body["input"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect())
        .unwrap_or_default();
    let dims = body["dimensions"].as_u64().map(|d| d as usize).unwrap_or(8);
    let reply = {
        let mut s = state.lock().expect("fake");
        s.seen.push(Seen {
            inputs: inputs.clone(),
            body: body.clone(),
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        });
        let fallback = s.fallback.clone();
        s.script.pop_front().unwrap_or(fallback)
    };
    let vectors = |wrong: Option<(usize, usize)>| {
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .rev()
            .map(|(i, text)| {
                let len = match wrong {
                    Some((input, len)) if input == i => len,
                    _ => dims,
                };
                json!({"object": "embedding", "index": i, "embedding": vector_for(text, len)})
            })
            .collect();
        let tokens: usize = inputs.iter().map(|t| estimate_tokens(t)).sum();
        axum::Json(json!({"object": "list", "data": data, "model": body["model"],
                          "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))
        .into_response()
    };
    match reply {
        Reply::Vectors => vectors(None),
        Reply::WrongLength { input, len } => vectors(Some((input, len))),
        Reply::Sleep(d) => {
            tokio::time::sleep(d).await;
            vectors(None)
        }
        Reply::Body(b) => (StatusCode::OK, [("content-type", "application/json")], b).into_response(),
        Reply::Status {
            code,
            retry_after,
            body,
        } => {
            let mut r = (StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT), body).into_response();
            if let Some(after) = retry_after {
                r.headers_mut()
                    .insert("retry-after", after.parse().expect("header value"));
            }
            r
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers.

fn config(fake: &Fake) -> ProviderConfig {
    let mut c = ProviderConfig::new(fake.url());
    c.api_key = Some(ApiKey::new(KEY));
    c.model = "test-model".into();
    c.request_timeout = Duration::from_secs(5);
    c.retry = RetryPolicy {
        max_attempts: 3,
        base: Duration::from_millis(10),
        cap: Duration::from_millis(50),
        retry_after_cap: Duration::from_secs(5),
    };
    c
}

fn embedder(fake: &Fake, tweak: impl FnOnce(&mut ProviderConfig)) -> Embedder {
    let mut c = config(fake);
    tweak(&mut c);
    Embedder::new(Provider::new(c).expect("valid provider"))
}

fn profile(i: usize) -> ProfileText {
    ProfileText {
        role: Some(format!("Role {i}")),
        company: Some("Acme".into()),
        interests: vec!["rust".into(), "climate tech".into()],
        looking_for: vec!["seed funding".into()],
        offering: vec![format!("skill {}", i % 7)],
        bio: Some(format!("Attendee number {i}.")),
    }
}

async fn cached_rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM matchmaking_embedding_cache")
        .fetch_one(pool)
        .await
        .expect("count cache rows")
}

fn vectors(results: &[Result<Arc<[f32]>, EmbedError>]) -> Vec<Vec<f32>> {
    results
        .iter()
        .map(|r| match r {
            Ok(v) => v.to_vec(),
            Err(e) => panic!("expected a vector, got {e}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The cache and the request plan.

#[sqlx::test(migrator = "MIGRATOR")]
async fn misses_go_in_one_request_and_unchanged_texts_are_never_paid_twice(pool: PgPool) {
    let fake = Fake::start(Reply::Vectors).await;
    let e = embedder(&fake, |c| c.dimensions = Some(16));
    // Five profiles, two of which differ only in case and white space.
    let mut same_as_0 = profile(0);
    same_as_0.role = Some("  ROLE   0 ".into());
    same_as_0.interests = vec!["Climate Tech".into(), "rust".into()];
    let batch = vec![profile(0), profile(1), same_as_0, profile(2), profile(3)];
    let got = e.embed(&pool, &batch, None).await.expect("embed");
    let got = vectors(&got);

    let seen = fake.seen();
    assert_eq!(seen.len(), 1, "one request for all misses");
    assert_eq!(seen[0].inputs.len(), 4, "identical texts sent once");
    assert_eq!(seen[0].authorization.as_deref(), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(seen[0].body["model"], "test-model");
    assert_eq!(seen[0].body["dimensions"], 16);
    // What is sent is the template's text, and the vectors come back in input
    // order although the server lists them in reverse.
    let expected: Vec<String> = [0, 1, 2, 3].iter().map(|&i| profile(i).render()).collect();
    assert_eq!(seen[0].inputs, expected);
    for (i, p) in batch.iter().enumerate() {
        assert_eq!(got[i], vector_for(&p.render(), 16), "input {i}");
    }
    assert_eq!(got[0], got[2]);
    let s = e.stats();
    assert_eq!(
        (
            s.inputs,
            s.duplicates,
            s.cache_hits,
            s.cache_misses,
            s.provider_calls,
            s.inputs_sent
        ),
        (5, 1, 0, 4, 1, 4)
    );
    assert_eq!(s.vectors_cached, 4);
    assert_eq!(
        s.tokens,
        expected.iter().map(|t| estimate_tokens(t) as u64).sum::<u64>()
    );
    assert_eq!(cached_rows(&pool).await, 4);

    // Another run (a new embedder, as a new process would have): all hits,
    // no request.
    let again = embedder(&fake, |c| c.dimensions = Some(16));
    let got2 = again.embed(&pool, &batch, None).await.expect("embed");
    assert_eq!(vectors(&got2), got);
    assert_eq!(fake.requests(), 1, "cached texts cost no request");
    assert_eq!((again.stats().cache_hits, again.stats().provider_calls), (4, 0));

    // Another event with two of the same people and one newcomer: one
    // request, for the newcomer only.
    let other_event = vec![profile(3), profile(42), profile(1)];
    let got3 = vectors(&again.embed(&pool, &other_event, None).await.expect("embed"));
    assert_eq!(fake.requests(), 2);
    assert_eq!(fake.seen()[1].inputs, vec![profile(42).render()]);
    assert_eq!(got3[0], got[4]);
    assert_eq!(cached_rows(&pool).await, 5);

    // Another model or another length is another vector.
    let other_dims = embedder(&fake, |c| c.dimensions = None);
    let got4 = vectors(&other_dims.embed(&pool, &[profile(0)], None).await.expect("embed"));
    assert_eq!(got4[0].len(), 8, "the fake's default length");
    assert!(
        fake.seen()[2].body.get("dimensions").is_none(),
        "no dimensions parameter sent"
    );
    let other_model = embedder(&fake, |c| {
        c.dimensions = Some(16);
        c.model = "other-model".into();
    });
    other_model.embed(&pool, &[profile(0)], None).await.expect("embed");
    assert_eq!(fake.requests(), 4);
    let keys: Vec<(String, i32)> =
        sqlx::query_as("SELECT model, dimensions FROM matchmaking_embedding_cache ORDER BY 1, 2")
            .fetch_all(&pool)
            .await
            .expect("rows");
    assert!(keys.contains(&("test-model".into(), 0)) && keys.contains(&("other-model".into(), 16)));

    // An empty call does nothing at all.
    assert!(e.embed(&pool, &[], None).await.expect("embed").is_empty());
    assert_eq!(fake.requests(), 4);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn batches_above_2048_inputs_are_split(pool: PgPool) {
    let fake = Fake::start(Reply::Vectors).await;
    let e = embedder(&fake, |c| c.dimensions = Some(4));
    let batch: Vec<ProfileText> = (0..4100).map(profile).collect();
    let got = e.embed(&pool, &batch, None).await.expect("embed");
    assert!(got.iter().all(|r| r.is_ok()));
    let sizes: Vec<usize> = fake.seen().iter().map(|s| s.inputs.len()).collect();
    assert_eq!(sizes, vec![2048, 2048, 4]);
    let distinct: HashSet<String> = fake.seen().into_iter().flat_map(|s| s.inputs).collect();
    assert_eq!(distinct.len(), 4100, "every text sent exactly once");
    assert_eq!(cached_rows(&pool).await, 4100);
    // Spot-check the mapping back to inputs across request boundaries.
    for i in [0, 2047, 2048, 4099] {
        assert_eq!(got[i].as_deref().ok(), Some(&vector_for(&batch[i].render(), 4)[..]));
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn batches_above_the_token_budget_are_split(pool: PgPool) {
    let fake = Fake::start(Reply::Vectors).await;
    let cap = 2000;
    let e = embedder(&fake, |c| c.max_tokens_per_request = cap);
    let batch: Vec<ProfileText> = (0..40)
        .map(|i| ProfileText {
            bio: Some(format!("{i} {}", "word ".repeat(150 + 20 * (i % 5)))),
            ..profile(i)
        })
        .collect();
    let got = e.embed(&pool, &batch, None).await.expect("embed");
    assert!(got.iter().all(|r| r.is_ok()));
    let seen = fake.seen();
    assert!(seen.len() >= 5, "{} requests", seen.len());
    let budgets: Vec<usize> = seen
        .iter()
        .map(|s| s.inputs.iter().map(|t| estimate_tokens(t)).sum())
        .collect();
    assert!(budgets.iter().all(|&b| b <= cap), "{budgets:?}");
    // Greedy: each request is as full as the budget allows.
    for w in seen.windows(2) {
        let used: usize = w[0].inputs.iter().map(|t| estimate_tokens(t)).sum();
        assert!(used + estimate_tokens(&w[1].inputs[0]) > cap);
    }
    assert_eq!(seen.iter().map(|s| s.inputs.len()).sum::<usize>(), 40);
    let estimates: Vec<usize> = batch.iter().map(|p| estimate_tokens(&p.render())).collect();
    assert_eq!(plan_requests(&estimates, 2048, cap).len(), seen.len());
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn concurrent_writers_of_the_same_keys_neither_fail_nor_deadlock(pool: PgPool) {
    // Eight workers store the same 300 vectors, each in its own order.
    let rows: Vec<(String, Arc<[f32]>)> = (0..300)
        .map(|i| {
            let text = profile(i).render();
            (
                matchmaker::embeddings::text::cache_key("m", 3, &text),
                Arc::from(&vector_for(&text, 3)[..]),
            )
        })
        .collect();
    let mut tasks = Vec::new();
    for w in 0..8usize {
        let pool = pool.clone();
        let mut mine = rows.clone();
        mine.rotate_left(w * 37);
        if w % 2 == 1 {
            mine.reverse();
        }
        tasks.push(tokio::spawn(async move { cache::store(&pool, "m", 3, &mine).await }));
    }
    let mut inserted = 0;
    for t in tasks {
        inserted += t.await.expect("join").expect("store");
    }
    assert_eq!(inserted, 300, "each row inserted once, by whichever worker came first");
    assert_eq!(cached_rows(&pool).await, 300);
    let keys: Vec<String> = rows.iter().map(|(k, _)| k.clone()).collect();
    let found = cache::lookup(&pool, "m", 3, &keys).await.expect("lookup");
    assert_eq!(found.len(), 300);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_schema_refuses_vectors_no_reader_could_use(pool: PgPool) {
    let key = "a".repeat(64);
    for (dims, vector) in [
        (3, "{1,2}"),
        (0, "{}"),
        (0, "{1,NaN}"),
        (0, "{1,Infinity}"),
        (0, "{1,NULL}"),
        (0, "{{1,2},{3,4}}"),
    ] {
        let r = sqlx::query(
            "INSERT INTO matchmaking_embedding_cache (model, dimensions, content_hash, embedding)
             VALUES ('m', $1, $2, $3::real[])",
        )
        .bind(dims)
        .bind(&key)
        .bind(vector)
        .execute(&pool)
        .await;
        assert!(r.is_err(), "{vector} with dimensions {dims} was accepted");
    }
    // Pruning goes by last use, which reads refresh.
    let text = profile(1).render();
    let k = matchmaker::embeddings::text::cache_key("m", 0, &text);
    cache::store(&pool, "m", 0, &[(k.clone(), Arc::from(&[1.0f32, 2.0][..]))])
        .await
        .expect("store");
    sqlx::query("UPDATE matchmaking_embedding_cache SET last_used_at = now() - interval '10 days'")
        .execute(&pool)
        .await
        .expect("age");
    assert_eq!(
        cache::lookup(&pool, "m", 0, std::slice::from_ref(&k))
            .await
            .expect("lookup")
            .len(),
        1
    );
    assert_eq!(
        cache::prune(&pool, Duration::from_secs(86_400)).await.expect("prune"),
        0
    );
    sqlx::query("UPDATE matchmaking_embedding_cache SET last_used_at = now() - interval '10 days'")
        .execute(&pool)
        .await
        .expect("age");
    assert_eq!(
        cache::prune(&pool, Duration::from_secs(86_400)).await.expect("prune"),
        1
    );
}

// ---------------------------------------------------------------------------
// Failures.

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_429_with_retry_after_is_honoured(pool: PgPool) {
    let fake = Fake::start(Reply::Vectors).await;
    fake.then(Reply::Status {
        code: 429,
        retry_after: Some("1"),
        body: r#"{"error":{"message":"Rate limit reached"}}"#.into(),
    });
    let e = embedder(&fake, |_| {});
    let t0 = Instant::now();
    let got = e.embed(&pool, &[profile(1), profile(2)], None).await.expect("embed");
    let elapsed = t0.elapsed();
    assert!(got.iter().all(|r| r.is_ok()), "{got:?}");
    // Backoff alone would wait at most 10 ms; the provider asked for 1 s.
    assert!(elapsed >= Duration::from_millis(950), "retried after {elapsed:?}");
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
    assert_eq!(fake.requests(), 2);
    let s = e.stats();
    assert_eq!(
        (s.provider_calls, s.retries, s.failed_requests, s.breaker_opens),
        (2, 1, 0, 0)
    );
    assert_eq!(e.breaker_state(), BreakerState::Closed);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn repeated_server_errors_open_the_breaker_then_one_probe_closes_it(pool: PgPool) {
    let fake = Fake::start(Reply::Status {
        code: 500,
        retry_after: None,
        body: "internal error".into(),
    })
    .await;
    let e = embedder(&fake, |c| c.breaker.cool_down = Duration::from_millis(400));
    let got = e.embed(&pool, &[profile(1), profile(2)], None).await.expect("embed");
    for r in &got {
        match r {
            Err(err @ EmbedError::ProviderUnavailable(m)) => {
                assert!(m.contains("HTTP 500: internal error") && m.contains("3 attempt"), "{m}");
                assert!(err.is_transient());
            }
            other => panic!("expected unavailable, got {other:?}"),
        }
    }
    assert_eq!(fake.requests(), 3, "three attempts");
    assert_eq!(e.breaker_state(), BreakerState::Open);
    assert_eq!(e.stats().breaker_opens, 1);

    // Open: every call fails fast, without a request.
    let t0 = Instant::now();
    for i in 0..5 {
        let got = e.embed(&pool, &[profile(10 + i)], None).await.expect("embed");
        match &got[0] {
            Err(EmbedError::ProviderUnavailable(m)) => assert!(m.contains("circuit open"), "{m}"),
            other => panic!("expected a fast failure, got {other:?}"),
        }
    }
    // Generous bound for a loaded machine; the request count is the proof.
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_eq!(fake.requests(), 3, "no request while open");
    assert_eq!(e.stats().fast_failures, 5);

    // After the cool-down one probe goes out, with no retries; it fails, and
    // the breaker opens again.
    wait_half_open(&e).await;
    let got = e.embed(&pool, &[profile(1)], None).await.expect("embed");
    assert!(matches!(got[0], Err(EmbedError::ProviderUnavailable(_))));
    assert_eq!(fake.requests(), 4, "one probe");
    assert_eq!(e.breaker_state(), BreakerState::Open);

    // The provider recovers: the next probe succeeds and closes the breaker.
    fake.set_fallback(Reply::Vectors);
    wait_half_open(&e).await;
    let got = e.embed(&pool, &[profile(1), profile(2)], None).await.expect("embed");
    assert!(got.iter().all(|r| r.is_ok()), "{got:?}");
    assert_eq!(fake.requests(), 5);
    assert_eq!(e.breaker_state(), BreakerState::Closed);
    assert_eq!(e.stats().breaker_opens, 2);
    assert_eq!(cached_rows(&pool).await, 2);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn timeouts_are_retried_then_fail_fast_and_the_deadline_is_kept(pool: PgPool) {
    let fake = Fake::start(Reply::Sleep(Duration::from_secs(5))).await;
    let e = embedder(&fake, |c| c.request_timeout = Duration::from_millis(300));
    let t0 = Instant::now();
    let got = e.embed(&pool, &[profile(1)], None).await.expect("embed");
    let elapsed = t0.elapsed();
    match &got[0] {
        Err(EmbedError::ProviderUnavailable(m)) => assert!(m.contains("no complete answer within 300ms"), "{m}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(fake.requests(), 3);
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    // A dead provider costs that once: the rest of the run fails fast.
    let t1 = Instant::now();
    let got = e.embed(&pool, &[profile(2)], None).await.expect("embed");
    assert!(matches!(got[0], Err(EmbedError::ProviderUnavailable(_))));
    assert!(t1.elapsed() < Duration::from_millis(290), "{:?}", t1.elapsed());
    assert_eq!(fake.requests(), 3);

    // With a long per-request timeout, the caller's deadline still wins; a
    // deadline is not the provider's fault, so the breaker stays closed.
    let slow = embedder(&fake, |c| c.request_timeout = Duration::from_secs(10));
    let t2 = Instant::now();
    let got = slow
        .embed(&pool, &[profile(3)], Some(t2 + Duration::from_millis(400)))
        .await
        .expect("embed");
    let elapsed = t2.elapsed();
    assert_eq!(got[0], Err(EmbedError::DeadlineExceeded));
    assert!(got[0].as_ref().err().is_some_and(EmbedError::is_transient));
    // The server would answer after 5 s and the request timeout is 10 s.
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(slow.breaker_state(), BreakerState::Closed);
    // A deadline already too close sends nothing.
    let before = fake.requests();
    let got = slow
        .embed(&pool, &[profile(4)], Some(Instant::now()))
        .await
        .expect("embed");
    assert_eq!(got[0], Err(EmbedError::DeadlineExceeded));
    assert_eq!(fake.requests(), before);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn malformed_json_is_a_clear_error_and_not_retried(pool: PgPool) {
    let fake = Fake::start(Reply::Body(r#"{"data": [ {"index": 0, "embedding": [0.1, 0.2"#)).await;
    let e = embedder(&fake, |_| {});
    let got = e.embed(&pool, &[profile(1), profile(2)], None).await.expect("embed");
    for r in &got {
        match r {
            Err(err @ EmbedError::MalformedResponse(m)) => {
                assert!(m.contains("not the JSON of an embeddings response"), "{m}");
                assert!(!err.is_transient());
            }
            other => panic!("expected malformed, got {other:?}"),
        }
    }
    assert_eq!(fake.requests(), 1);
    assert_eq!(cached_rows(&pool).await, 0);
    // Wrong number of vectors.
    fake.set_fallback(Reply::Body(r#"{"data":[{"index":0,"embedding":[1,2]}]}"#));
    let got = e.embed(&pool, &[profile(1), profile(2)], None).await.expect("embed");
    assert!(
        matches!(&got[1], Err(EmbedError::MalformedResponse(m)) if m.contains("2 inputs sent but 1 vectors")),
        "{got:?}"
    );
    assert_eq!(cached_rows(&pool).await, 0);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_vector_of_the_wrong_dimension_is_an_error_and_not_cached(pool: PgPool) {
    let fake = Fake::start(Reply::Vectors).await;
    fake.then(Reply::WrongLength { input: 1, len: 3 });
    let e = embedder(&fake, |c| c.dimensions = Some(4));
    let batch = [profile(1), profile(2), profile(3)];
    let got = e.embed(&pool, &batch, None).await.expect("embed");
    assert!(got[0].is_ok() && got[2].is_ok());
    assert_eq!(got[1], Err(EmbedError::WrongDimensions { expected: 4, got: 3 }));
    assert_eq!(
        got[1].as_ref().err().map(ToString::to_string).as_deref(),
        Some("embedding has 3 dimensions; 4 were requested")
    );
    assert_eq!(cached_rows(&pool).await, 2);
    assert_eq!(e.stats().invalid_vectors, 1);
    // Next time only the rejected text is asked for again.
    let got = e.embed(&pool, &batch, None).await.expect("embed");
    assert!(got.iter().all(|r| r.is_ok()));
    assert_eq!(fake.seen()[1].inputs, vec![profile(2).render()]);
    assert_eq!(cached_rows(&pool).await, 3);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn client_errors_are_not_retried(pool: PgPool) {
    let fake = Fake::start(Reply::Status {
        code: 400,
        retry_after: None,
        body: r#"{"error":{"message":"This model's maximum context length is 8192 tokens"}}"#.into(),
    })
    .await;
    let e = embedder(&fake, |_| {});
    let got = e.embed(&pool, &[profile(1)], None).await.expect("embed");
    match &got[0] {
        Err(EmbedError::Rejected { status: 400, message }) => assert!(message.contains("maximum context"), "{message}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(fake.requests(), 1);
    // Blames the input, not the provider: the breaker stays closed however
    // often it happens.
    for i in 0..4 {
        e.embed(&pool, &[profile(10 + i)], None).await.expect("embed");
    }
    assert_eq!(fake.requests(), 5);
    assert_eq!(e.breaker_state(), BreakerState::Closed);
}

// ---------------------------------------------------------------------------
// Secrets.

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The only test in this binary that installs a global subscriber: every
/// log line of every crate (reqwest, hyper, rustls, sqlx through the `log`
/// bridge), at TRACE.
#[sqlx::test(migrator = "MIGRATOR")]
async fn the_api_key_appears_in_no_log_line_error_or_debug_output(pool: PgPool) {
    let logs = Captured::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(logs.clone())
        .try_init()
        .expect("no other global subscriber in this test binary");

    // A provider that echoes the key back in its error bodies, as some do.
    let echo = format!(r#"{{"error":{{"message":"Incorrect API key provided: {KEY}"}}}}"#);
    let fake = Fake::start(Reply::Vectors).await;
    let mut texts: Vec<String> = Vec::new();
    fn record(texts: &mut Vec<String>, results: &[Result<Arc<[f32]>, EmbedError>]) {
        for e in results.iter().filter_map(|r| r.as_ref().err()) {
            texts.push(e.to_string());
            texts.push(format!("{e:?}"));
        }
    }
    let e = embedder(&fake, |c| c.request_timeout = Duration::from_millis(300));
    for (i, reply) in [
        Reply::Status {
            code: 401,
            retry_after: None,
            body: echo.clone(),
        },
        Reply::Status {
            code: 500,
            retry_after: None,
            body: echo.clone(),
        },
        Reply::Status {
            code: 429,
            retry_after: Some("0"),
            body: echo.clone(),
        },
        Reply::Sleep(Duration::from_secs(2)),
        Reply::Body("{oops"),
        Reply::Vectors,
    ]
    .into_iter()
    .enumerate()
    {
        fake.set_fallback(reply);
        let fresh = embedder(&fake, |c| c.request_timeout = Duration::from_millis(300));
        record(
            &mut texts,
            &fresh.embed(&pool, &[profile(100 + i)], None).await.expect("embed"),
        );
        texts.push(format!("{fresh:?}"));
        texts.push(serde_json::to_string(&fresh.stats()).expect("json"));
    }
    // Fail fast through an open breaker.
    fake.set_fallback(Reply::Status {
        code: 503,
        retry_after: None,
        body: echo.clone(),
    });
    record(&mut texts, &e.embed(&pool, &[profile(200)], None).await.expect("embed"));
    record(&mut texts, &e.embed(&pool, &[profile(201)], None).await.expect("embed"));
    texts.push(format!("{e:?}"));
    // Nobody listening.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut c = config(&fake);
    c.url = format!("http://127.0.0.1:{closed}/v1");
    let refused = Embedder::new(Provider::new(c).expect("provider"));
    let got = refused.embed(&pool, &[profile(300)], None).await.expect("embed");
    assert!(
        matches!(&got[0], Err(EmbedError::ProviderUnavailable(m)) if m.contains("cannot connect to http://127.0.0.1")),
        "{got:?}"
    );
    record(&mut texts, &got);
    // Configuration, as the command line would build it.
    let args =
        <ArgsOnly as clap::Parser>::try_parse_from(["t", "--embeddings-url", &fake.url(), "--embeddings-api-key", KEY])
            .expect("args");
    texts.push(format!("{args:?}"));
    texts.push(format!("{:?}", args.embeddings.provider()));
    // A URL carrying credentials of its own (no key then): redacted too.
    let mut c = config(&fake);
    c.api_key = None;
    c.url = format!("http://urluser:urlpass-5150@127.0.0.1:{closed}/v1");
    let with_userinfo = Embedder::new(Provider::new(c).expect("provider"));
    record(
        &mut texts,
        &with_userinfo.embed(&pool, &[profile(301)], None).await.expect("embed"),
    );
    texts.push(format!("{with_userinfo:?}"));
    let mut c = config(&fake);
    c.url = format!("http://urluser:urlpass-5150@127.0.0.1:{closed}/v1");
    texts.push(format!("{:?}", Provider::new(c).map(|_| ()).map_err(|e| e.to_string())));

    // The key was really used...
    assert!(fake
        .seen()
        .iter()
        .all(|s| s.authorization.as_deref() == Some(format!("Bearer {KEY}").as_str())));
    // ...and the capture really captured (requests, retries, the breaker).
    let logs = String::from_utf8_lossy(&logs.0.lock().expect("logs")).into_owned();
    for expected in [
        "embedding request",
        "retrying",
        "circuit opened",
        "Incorrect API key provided: ***",
    ] {
        assert!(
            logs.contains(expected) || texts.iter().any(|t| t.contains(expected)),
            "{expected:?} neither logged nor reported"
        );
    }
    assert!(logs.contains("embedding request") && logs.contains("circuit opened"));
    assert!(texts.len() > 20);
    for secret in [KEY, "urlpass-5150", "urluser"] {
        assert!(!logs.contains(secret), "{secret} in the logs");
        for t in &texts {
            assert!(!t.contains(secret), "{secret} in {t}");
        }
    }
}

#[derive(Debug, clap::Parser)]
struct ArgsOnly {
    #[command(flatten)]
    embeddings: EmbeddingArgs,
}

/// Waits out a breaker's cool-down (the condition, not a guess of its length).
async fn wait_half_open(e: &Embedder) {
    let started = std::time::Instant::now();
    while e.breaker_state() != BreakerState::HalfOpen {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the breaker never half-opened"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
