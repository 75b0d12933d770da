//! A deterministic fake embedding provider on 127.0.0.1 (OpenAI-compatible
//! `POST /v1/embeddings`): each input's vector is a hash of its text, so the
//! same profile text always gets the same vector. It can be switched to
//! failing (HTTP 500), to failing in alternating time windows, or to answer
//! 401 with the key echoed back (as some providers do).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use matchmaker::embeddings::{ApiKey, BreakerPolicy, Embedder, Provider, ProviderConfig, RetryPolicy};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const KEY: &str = "sk-test-4c1d-worker-DO-NOT-LEAK";
pub const DIMS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Healthy,
    /// Every request gets a 500.
    Down,
    /// 500s during every other `period` (starting healthy).
    Flaky(Duration),
    /// 401 with the key in the body.
    RejectEchoingKey,
}

pub struct Seen {
    pub inputs: usize,
    pub authorization: Option<String>,
    pub ok: bool,
}

struct Inner {
    mode: Mode,
    started: Instant,
    seen: Vec<Seen>,
}

/// Serves `app` on a free loopback port for as long as the test's runtime
/// lives; returns its address.
pub async fn serve(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

#[derive(Clone)]
pub struct FakeProvider {
    addr: std::net::SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl FakeProvider {
    pub async fn start(mode: Mode) -> FakeProvider {
        let inner = Arc::new(Mutex::new(Inner {
            mode,
            started: Instant::now(),
            seen: Vec::new(),
        }));
        let addr = serve(
            Router::new()
                .route("/v1/embeddings", post(handle))
                .with_state(inner.clone()),
        )
        .await;
        FakeProvider { addr, inner }
    }

    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        let mut i = self.inner.lock().expect("fake");
        i.mode = mode;
        i.started = Instant::now();
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.inner.lock().expect("fake").seen.len()
    }

    /// Requests answered with vectors so far.
    pub fn ok_requests(&self) -> usize {
        self.inner.lock().expect("fake").seen.iter().filter(|s| s.ok).count()
    }

    pub fn with_seen<T>(&self, f: impl FnOnce(&[Seen]) -> T) -> T {
        f(&self.inner.lock().expect("fake").seen)
    }

    /// The provider configuration a test worker uses: the key, `DIMS`
    /// dimensions, fast retries and a short breaker cool-down.
    pub fn config(&self, cool_down: Duration) -> ProviderConfig {
        let mut c = ProviderConfig::new(self.url());
        c.api_key = Some(ApiKey::new(KEY));
        c.model = "fake-model".into();
        c.dimensions = Some(DIMS as u32);
        c.request_timeout = Duration::from_secs(2);
        c.retry = RetryPolicy {
            max_attempts: 2,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(50),
            retry_after_cap: Duration::from_secs(1),
        };
        c.breaker = BreakerPolicy {
            failure_threshold: 3,
            cool_down,
        };
        c
    }

    pub fn embedder(&self, cool_down: Duration) -> Arc<Embedder> {
        Arc::new(Embedder::new(Provider::new(self.config(cool_down)).expect("provider")))
    }

    /// Environment for a `matchmaker` process using this provider.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("EMBEDDINGS_URL", self.url()),
            ("EMBEDDINGS_API_KEY", KEY.to_string()),
            ("EMBEDDINGS_MODEL", "fake-model".to_string()),
            ("EMBEDDINGS_DIMENSIONS", DIMS.to_string()),
            ("EMBEDDINGS_COOL_DOWN", "1s".to_string()),
            ("EMBEDDINGS_TIMEOUT", "2s".to_string()),
        ]
    }
}

async fn handle(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let inputs: Vec<String> = body["input"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect())
        .unwrap_or_default();
    let dims = body["dimensions"].as_u64().map(|d| d as usize).unwrap_or(DIMS);
    let mode = {
        let mut i = inner.lock().expect("fake");
        let mode = match i.mode {
            Mode::Flaky(period) => {
                let n = i.started.elapsed().as_millis() / period.as_millis().max(1);
                if n % 2 == 1 {
                    Mode::Down
                } else {
                    Mode::Healthy
                }
            }
            m => m,
        };
        i.seen.push(Seen {
            inputs: inputs.len(),
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            ok: mode == Mode::Healthy,
        });
        mode
    };
    match mode {
        Mode::Down | Mode::Flaky(_) => (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response(),
        Mode::RejectEchoingKey => (
            StatusCode::UNAUTHORIZED,
            format!(r#"{{"error":{{"message":"Incorrect API key provided: {KEY}"}}}}"#),
        )
            .into_response(),
        Mode::Healthy => {
            let data: Vec<Value> = inputs
                .iter()
                .enumerate()
                .map(|(i, text)| json!({"object": "embedding", "index": i, "embedding": vector_for(text, dims)}))
                .collect();
            let tokens: usize = inputs.iter().map(|t| t.len() / 4 + 1).sum();
            axum::Json(json!({"object": "list", "data": data, "model": body["model"],
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))
            .into_response()
        }
    }
}

/// The fake's vector for a text: deterministic, never all zeros, with
/// components of both signs (so similarities spread out).
pub fn vector_for(text: &str, len: usize) -> Vec<f32> {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    (0..len)
        .map(|i| {
            h = h.rotate_left(7).wrapping_mul(0x9e3779b97f4a7c15).wrapping_add(i as u64);
            ((h >> 40) as f32 / (1u64 << 24) as f32) - 0.45
        })
        .collect()
}
