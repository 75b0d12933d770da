//! The embedding provider: profile texts in, vectors out, each distinct text
//! paid for once.
//!
//! # Design
//!
//! ```text
//!  ProfileText ──render──▶ normalised text ──sha256──▶ key ─┬─ hit ──▶ vector
//!  (role, company, tags,   (template profile-v1,          │
//!   bio; plain strings)     lower case, one space)        └─ miss ─▶ POST {url}/embeddings
//!                                                                      │ validated
//!                                                                      ▼
//!                                               matchmaking_embedding_cache (+ vector)
//! ```
//!
//! - [`text`]: the versioned template ([`TEMPLATE_VERSION`]), normalisation,
//!   the cache key, the token estimate, the request plan.
//! - `store::embedding_cache`: the PostgreSQL cache (one read and one write per round trip).
//! - [`client`]: the OpenAI-compatible HTTP call, the secret-safe
//!   [`ApiKey`], and the validation of responses.
//! - [`retry`], [`breaker`]: backoff, `Retry-After`, the circuit breaker.
//! - `config::EmbeddingArgs`: the `--embeddings-*` flags.
//!
//! The worker calls [`Embedder::embed`] with the profiles it needs vectors
//! for and gets one result per profile, in order:
//!
//! ```text
//! let embedder = Embedder::new(provider);            // once per process (keeps the breaker)
//! let vectors = embedder.embed(&pool, &profiles, Some(deadline)).await?;  // Err: database only
//! for (p, v) in profiles.iter().zip(vectors) { match v { Ok(vec) => …, Err(e) if e.is_transient() => retry later, Err(e) => report } }
//! let stats = embedder.take_stats();                 // into the run record
//! ```
//!
//! # Cache key
//!
//! `sha256(model, dimensions, template version, normalised text)` in hex,
//! each part length-prefixed ([`text::cache_key`]); the table's primary key
//! is `(model, dimensions, content_hash)`, with `dimensions = 0` for "no
//! `dimensions` parameter sent" ([`crate::store::embedding_cache::dimensions_column`]). The text that
//! is hashed is exactly the text that is sent, so a key always names the
//! same request. Vectors are shared across events, runs and workers: an
//! unchanged profile never costs a second call.
//!
//! # One call
//!
//! 1. Render and hash every profile; identical texts are sent once.
//! 2. One `SELECT` for all keys (hits).
//! 3. The misses, in input order, are split into requests of at most
//!    `max_inputs_per_request` inputs (2,048) and `max_tokens_per_request`
//!    estimated tokens (characters / 4; 300,000). Usually that is one
//!    request.
//! 4. Each request is validated (JSON shape, one vector per input, ordered
//!    by `data[i].index`, requested dimension, consistent lengths, finite,
//!    not all zeros) and its valid vectors are written in one `INSERT`, right
//!    away, so a run cut short keeps what it paid for. A bad vector is an
//!    error for its input only and is never cached.
//!
//! No database connection is held while waiting for the provider (each
//! statement takes one from the pool and gives it back).
//!
//! # Retries and the breaker
//!
//! One attempt lasts at most `request_timeout` (10 s), clipped to the
//! caller's deadline. A 408, 425, 429, 5xx, timeout or connection error is
//! retried, up to 3 attempts in all, after the provider's `Retry-After`
//! (`retry-after-ms` or seconds; capped at 30 s) or else an exponential
//! backoff with full jitter (500 ms doubling, capped at 8 s). No attempt or
//! retry starts that could not finish before the deadline: the inputs get
//! [`EmbedError::DeadlineExceeded`] instead. Other 4xx answers are not
//! retried ([`EmbedError::Rejected`]).
//!
//! The breaker ([`breaker`]) opens after 3 consecutive failed attempts, or at
//! once when a request runs out of retries, and then for a cool-down (60 s)
//! every request fails fast with [`EmbedError::ProviderUnavailable`] without
//! touching the network: a dead provider costs one request's attempts per
//! run, not one per attendee. After the cool-down, one request probes (one
//! attempt); success closes the breaker, failure opens it again. A 400, 413
//! or 422 blames the input, not the provider, and does not count.
//!
//! # Secrets
//!
//! The key is an [`ApiKey`] (prints `***`) and goes only into a sensitive
//! `Authorization: Bearer` header. Errors and logs never include request
//! headers; the URL is shown with its user information and query replaced by
//! `***`; whatever the provider writes back (error bodies) is scrubbed of the
//! key before it is kept.

pub mod breaker;
pub mod client;
pub mod local;
pub mod retry;
pub mod text;

pub use breaker::{BreakerPolicy, BreakerState};
pub use client::{ApiKey, Provider, ProviderConfig};
pub use local::LocalModel;
pub use retry::RetryPolicy;
pub use text::{ProfileText, TEMPLATE_VERSION};

use anyhow::Result;
use breaker::{Admission, Breaker};
use client::AttemptError;
use serde::Serialize;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, warn};

/// The longest vector accepted (the cache's CHECK says the same).
pub const MAX_DIMENSIONS: usize = 16_000;

/// No attempt starts with less time than this left before the deadline.
const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(100);

/// Why one input got no vector. Cloned to every input a failed request
/// carried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmbedError {
    /// The provider could not be used: the breaker is open, or a request
    /// ran out of retries (timeouts, connection errors, 429, 5xx). Transient.
    #[error("embedding provider unavailable: {0}")]
    ProviderUnavailable(String),
    /// The caller's deadline left no time for (another) attempt. Transient.
    #[error("no time left before the deadline to call the embedding provider")]
    DeadlineExceeded,
    /// A 4xx answer other than 408/425/429 (bad key, unknown model, input
    /// refused), or a redirect. `message` is the provider's, scrubbed of the
    /// key.
    #[error("embedding provider rejected the request (HTTP {status}): {message}")]
    Rejected { status: u16, message: String },
    /// A 2xx answer that is not a valid embeddings response as a whole.
    #[error("embedding provider sent a malformed response: {0}")]
    MalformedResponse(String),
    /// The vector's length is not the requested `dimensions`.
    #[error("embedding has {got} dimensions; {expected} were requested")]
    WrongDimensions { expected: usize, got: usize },
    /// No `dimensions` were requested and the vectors of one response have
    /// different lengths.
    #[error("embeddings of one response have different lengths ({lengths}); none was kept")]
    InconsistentDimensions { lengths: String },
    /// A component is NaN, infinite, `null`, or beyond `f32`.
    #[error("embedding has a non-finite value at index {index}")]
    NonFinite { index: usize },
    /// Empty, too long, or all zeros.
    #[error("embedding is {0}")]
    Degenerate(&'static str),
    /// The local model failed on this input (tokenizer or encoder error).
    #[error("local embedding model failed: {0}")]
    LocalModel(String),
}

impl EmbedError {
    /// True when the same text may well get a vector later (the provider
    /// was down, slow, or out of time): retry the work rather than report the
    /// profile.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::ProviderUnavailable(_) | Self::DeadlineExceeded)
    }
}

/// What the embedder did, for the run record and `status`. Counts add up:
/// `inputs = duplicates + cache_hits + cache_misses`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EmbedStats {
    /// Profiles asked for.
    pub inputs: u64,
    /// Profiles whose text another profile of the same call already had.
    pub duplicates: u64,
    /// Distinct texts found in the cache.
    pub cache_hits: u64,
    /// Distinct texts not in the cache.
    pub cache_misses: u64,
    /// HTTP requests sent, retries included.
    pub provider_calls: u64,
    /// Of those, retries.
    pub retries: u64,
    /// Inputs carried by those requests (an input retried counts again).
    pub inputs_sent: u64,
    /// `usage.total_tokens` summed over the answers that report it.
    pub tokens: u64,
    /// Vectors received and valid.
    pub vectors_received: u64,
    /// New rows written to the cache.
    pub vectors_cached: u64,
    /// Vectors received but rejected (wrong dimension, NaN, ...).
    pub invalid_vectors: u64,
    /// Requests that failed for good (after their retries, or not
    /// retryable).
    pub failed_requests: u64,
    /// Requests refused by the open breaker without a call.
    pub fast_failures: u64,
    /// Times the breaker opened.
    pub breaker_opens: u64,
    /// Cache writes that failed (the vectors were still returned).
    pub cache_write_errors: u64,
}

macro_rules! each_stat {
    ($m:ident) => {
        $m!(
            inputs,
            duplicates,
            cache_hits,
            cache_misses,
            provider_calls,
            retries,
            inputs_sent,
            tokens,
            vectors_received,
            vectors_cached,
            invalid_vectors,
            failed_requests,
            fast_failures,
            breaker_opens,
            cache_write_errors
        )
    };
}

impl EmbedStats {
    /// Adds `other` to these counts.
    pub fn add(&mut self, other: &EmbedStats) {
        macro_rules! add {
            ($($f:ident),*) => { $(self.$f += other.$f;)* };
        }
        each_stat!(add);
    }

    /// What was counted since `before` (an earlier copy of the same
    /// embedder's statistics).
    pub fn since(&self, before: &EmbedStats) -> EmbedStats {
        let mut out = EmbedStats::default();
        macro_rules! sub {
            ($($f:ident),*) => { $(out.$f = self.$f.saturating_sub(before.$f);)* };
        }
        each_stat!(sub);
        out
    }
}

/// Where vectors come from: exactly one provider per embedder.
#[derive(Debug)]
enum Backend {
    /// An OpenAI-compatible HTTP API.
    Http(Box<Provider>),
    /// A model folder run in process ([`local`]).
    Local(Arc<LocalModel>),
}

/// The provider with its breaker and statistics. `embed` takes `&self`, so
/// one embedder (in an `Arc`) can serve concurrent batches and keeps its
/// breaker across them; it holds no database connection.
pub struct Embedder {
    backend: Backend,
    breaker: Mutex<Breaker>,
    stats: Mutex<EmbedStats>,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("backend", &self.backend)
            .field("breaker", &self.breaker_state())
            .field("stats", &self.stats())
            .finish()
    }
}

/// A distinct text of one call.
struct Unique {
    key: String,
    text: String,
}

type VectorResult = Result<Arc<[f32]>, EmbedError>;

impl Embedder {
    /// An embedder with a closed breaker and zero statistics. Keep one per
    /// process (or per daemon), not per batch: the breaker lives here.
    pub fn new(provider: Provider) -> Self {
        let breaker = Breaker::new(provider.config().breaker);
        Self {
            backend: Backend::Http(Box::new(provider)),
            breaker: Mutex::new(breaker),
            stats: Mutex::new(EmbedStats::default()),
        }
    }

    /// An embedder that runs a local model in process (no breaker is ever
    /// consulted: there is no remote service to protect).
    pub fn local(model: LocalModel) -> Self {
        Self {
            backend: Backend::Local(Arc::new(model)),
            breaker: Mutex::new(Breaker::new(BreakerPolicy::default())),
            stats: Mutex::new(EmbedStats::default()),
        }
    }

    /// The HTTP provider this embedder calls, if it is one.
    pub fn provider(&self) -> Option<&Provider> {
        match &self.backend {
            Backend::Http(p) => Some(p),
            Backend::Local(_) => None,
        }
    }

    /// The local model this embedder runs, if it is one.
    pub fn local_model(&self) -> Option<&LocalModel> {
        match &self.backend {
            Backend::Http(_) => None,
            Backend::Local(m) => Some(m),
        }
    }

    /// The cache's `model` column: the HTTP model name, or the local
    /// model's identity (folder name and weights hash).
    pub fn model(&self) -> &str {
        match &self.backend {
            Backend::Http(p) => p.model(),
            Backend::Local(m) => m.model_id(),
        }
    }

    /// The vector length vectors must have, when known: the requested
    /// `dimensions` of an HTTP provider, the local model's hidden size.
    pub fn dimensions(&self) -> Option<u32> {
        match &self.backend {
            Backend::Http(p) => p.dimensions(),
            Backend::Local(m) => u32::try_from(m.dimensions()).ok(),
        }
    }

    /// The statistics so far.
    pub fn stats(&self) -> EmbedStats {
        lock(&self.stats).clone()
    }

    /// The statistics so far, and zero them (one run record each).
    pub fn take_stats(&self) -> EmbedStats {
        std::mem::take(&mut *lock(&self.stats))
    }

    /// The breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        lock(&self.breaker).state(Instant::now())
    }

    /// One vector (or the reason there is none) per profile, in order: from
    /// the cache, else from the provider, whose valid vectors are then
    /// cached. Only a database error fails the whole call; provider trouble
    /// is reported per input (see [`EmbedError::is_transient`]). Returns
    /// before `deadline` (give or take [`MIN_ATTEMPT_TIME`]) unless the
    /// database itself is slow.
    pub async fn embed(
        &self,
        pool: &PgPool,
        profiles: &[ProfileText],
        deadline: Option<Instant>,
    ) -> Result<Vec<Result<Arc<[f32]>, EmbedError>>> {
        let model = self.model();
        let dims = crate::store::embedding_cache::dimensions_column(self.dimensions());

        // 1. Distinct texts; `slot[i]` is input i's text.
        let mut uniques: Vec<Unique> = Vec::new();
        let mut by_key: HashMap<String, usize> = HashMap::new();
        let mut slot = Vec::with_capacity(profiles.len());
        for p in profiles {
            let text = p.render();
            let key = text::cache_key(model, dims, &text);
            let next = uniques.len();
            let i = *by_key.entry(key.clone()).or_insert(next);
            if i == next {
                uniques.push(Unique { key, text });
            }
            slot.push(i);
        }
        if uniques.is_empty() {
            return Ok(Vec::new());
        }

        // 2. The cache, in one round trip.
        let keys: Vec<String> = uniques.iter().map(|u| u.key.clone()).collect();
        let mut cached = crate::store::embedding_cache::lookup(pool, model, dims, &keys).await?;
        let mut results: Vec<Option<VectorResult>> = Vec::with_capacity(uniques.len());
        let mut misses = Vec::new();
        for (i, u) in uniques.iter().enumerate() {
            match cached.remove(&u.key) {
                Some(v) => results.push(Some(client::validate_vector(v, self.dimensions()))),
                None => {
                    results.push(None);
                    misses.push(i);
                }
            }
        }
        {
            let mut s = lock(&self.stats);
            s.inputs += profiles.len() as u64;
            s.duplicates += (profiles.len() - uniques.len()) as u64;
            s.cache_hits += (uniques.len() - misses.len()) as u64;
            s.cache_misses += misses.len() as u64;
        }

        let provider = match &self.backend {
            Backend::Http(p) => p,
            Backend::Local(m) => {
                self.embed_locally(pool, m, &uniques, &misses, &mut results, deadline)
                    .await;
                return Ok(collect(slot, results));
            }
        };

        // 3. The misses, in as few requests as the limits allow.
        let estimates: Vec<usize> = misses
            .iter()
            .map(|&i| text::estimate_tokens(&uniques[i].text))
            .collect();
        let config = provider.config();
        let plan = text::plan_requests(&estimates, config.max_inputs_per_request, config.max_tokens_per_request);
        for range in plan {
            let tokens: usize = estimates[range.clone()].iter().sum();
            let members = &misses[range];
            let inputs: Vec<&str> = members.iter().map(|&i| uniques[i].text.as_str()).collect();
            match self.request(provider, &inputs, tokens, deadline).await {
                Ok(parsed) => {
                    let mut fresh: Vec<(String, Arc<[f32]>)> = Vec::new();
                    let mut invalid = 0u64;
                    for (&i, v) in members.iter().zip(parsed.vectors) {
                        match &v {
                            Ok(vector) => fresh.push((uniques[i].key.clone(), vector.clone())),
                            Err(e) => {
                                invalid += 1;
                                debug!(error = %e, "embedding rejected; not cached");
                            }
                        }
                        results[i] = Some(v);
                    }
                    {
                        let mut s = lock(&self.stats);
                        s.tokens += parsed.total_tokens.unwrap_or(0);
                        s.vectors_received += fresh.len() as u64;
                        s.invalid_vectors += invalid;
                    }
                    // 4. Cache what was paid for, at once. A failed write
                    // costs a second call some day, not this run's vectors.
                    match crate::store::embedding_cache::store(pool, model, dims, &fresh).await {
                        Ok(n) => lock(&self.stats).vectors_cached += n,
                        Err(e) => {
                            lock(&self.stats).cache_write_errors += 1;
                            warn!(error = %crate::telemetry::error_chain(&e), vectors = fresh.len(),
                                  "could not cache fresh embeddings; they are used but will be paid for again");
                        }
                    }
                }
                Err(e) => {
                    for &i in members {
                        results[i] = Some(Err(e.clone()));
                    }
                }
            }
        }

        Ok(collect(slot, results))
    }

    /// Step 3 for the local model: the misses in chunks of similar length
    /// ([`local::plan_chunks`]), each on a blocking thread, each cached at
    /// once. Before a chunk starts, the time it needs (the last chunk's time
    /// per token, times its tokens) must fit before the deadline; otherwise
    /// it and every chunk after it get [`EmbedError::DeadlineExceeded`].
    async fn embed_locally(
        &self,
        pool: &PgPool,
        model: &Arc<LocalModel>,
        uniques: &[Unique],
        misses: &[usize],
        results: &mut [Option<VectorResult>],
        deadline: Option<Instant>,
    ) {
        if misses.is_empty() {
            return;
        }
        let dims = crate::store::embedding_cache::dimensions_column(self.dimensions());
        let texts: Vec<String> = misses.iter().map(|&i| uniques[i].text.clone()).collect();
        let m = model.clone();
        let tokenized = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            m.tokenize(&refs)
        })
        .await;
        let tokens = match tokenized {
            Ok(Ok(t)) => Arc::new(t),
            Ok(Err(e)) => return fail_all(results, misses, EmbedError::LocalModel(format!("{e:#}"))),
            Err(e) => return fail_all(results, misses, EmbedError::LocalModel(format!("tokenizer task: {e}"))),
        };
        let mut per_token: Option<Duration> = None;
        let chunks = local::plan_chunks(&tokens);
        for (n, chunk) in chunks.iter().enumerate() {
            let chunk_tokens: usize = chunk.iter().map(|&j| tokens[j].len()).sum();
            if let Some(d) = deadline {
                let needed = per_token.map_or(Duration::ZERO, |t| t * chunk_tokens as u32) + model.chunk_delay();
                if Instant::now() + needed + MIN_ATTEMPT_TIME >= d {
                    for c in &chunks[n..] {
                        for &j in c {
                            results[misses[j]] = Some(Err(EmbedError::DeadlineExceeded));
                        }
                    }
                    debug!(left = chunks.len() - n, "local embedding stopped for the deadline");
                    return;
                }
            }
            {
                let mut s = lock(&self.stats);
                s.provider_calls += 1;
                s.inputs_sent += chunk.len() as u64;
                s.tokens += chunk_tokens as u64;
            }
            let started = Instant::now();
            let (m, t, c) = (model.clone(), tokens.clone(), chunk.clone());
            let out = tokio::task::spawn_blocking(move || {
                if !m.chunk_delay().is_zero() {
                    std::thread::sleep(m.chunk_delay());
                }
                let seqs: Vec<&local::Tokens> = c.iter().map(|&j| &t[j]).collect();
                m.embed_tokens(&seqs)
            })
            .await;
            let elapsed = started.elapsed().saturating_sub(model.chunk_delay());
            per_token = Some(elapsed / chunk_tokens.max(1) as u32);
            let vectors = match out {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    lock(&self.stats).failed_requests += 1;
                    let error = EmbedError::LocalModel(format!("{e:#}"));
                    for &j in chunk {
                        results[misses[j]] = Some(Err(error.clone()));
                    }
                    continue;
                }
                Err(e) => {
                    lock(&self.stats).failed_requests += 1;
                    let error = EmbedError::LocalModel(format!("inference task: {e}"));
                    for &j in chunk {
                        results[misses[j]] = Some(Err(error.clone()));
                    }
                    continue;
                }
            };
            let mut fresh: Vec<(String, Arc<[f32]>)> = Vec::new();
            let mut invalid = 0u64;
            for (&j, v) in chunk.iter().zip(vectors) {
                let i = misses[j];
                let v = client::validate_vector(v, self.dimensions());
                match &v {
                    Ok(vector) => fresh.push((uniques[i].key.clone(), vector.clone())),
                    Err(_) => invalid += 1,
                }
                results[i] = Some(v);
            }
            {
                let mut s = lock(&self.stats);
                s.vectors_received += fresh.len() as u64;
                s.invalid_vectors += invalid;
            }
            match crate::store::embedding_cache::store(pool, self.model(), dims, &fresh).await {
                Ok(n) => lock(&self.stats).vectors_cached += n,
                Err(e) => {
                    lock(&self.stats).cache_write_errors += 1;
                    warn!(error = %crate::telemetry::error_chain(&e), vectors = fresh.len(),
                          "could not cache fresh embeddings; they are used but will be computed again");
                }
            }
        }
    }

    /// One request (with its retries), under the breaker and the deadline.
    async fn request(
        &self,
        provider: &Provider,
        inputs: &[&str],
        tokens: usize,
        deadline: Option<Instant>,
    ) -> Result<client::Parsed, EmbedError> {
        let config = provider.config();
        let mut attempt = 0u32;
        loop {
            let now = Instant::now();
            let mut timeout = config.request_timeout;
            let mut clipped = false;
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(now);
                if left < MIN_ATTEMPT_TIME {
                    return Err(EmbedError::DeadlineExceeded);
                }
                if left < timeout {
                    timeout = left;
                    clipped = true;
                }
            }
            // An open breaker costs nothing: no call at all.
            let admission = lock(&self.breaker).admit(now, config.request_timeout + MIN_ATTEMPT_TIME);
            let max_attempts = match admission {
                Admission::Allowed => config.retry.max_attempts.max(1),
                Admission::Probe => 1,
                Admission::Refused { retry_in, last_error } => {
                    lock(&self.stats).fast_failures += 1;
                    return Err(EmbedError::ProviderUnavailable(format!(
                        "circuit open after repeated failures (last: {last_error}); next try in {}s",
                        retry_in.as_secs().max(1)
                    )));
                }
            };
            attempt += 1;
            {
                let mut s = lock(&self.stats);
                s.provider_calls += 1;
                s.inputs_sent += inputs.len() as u64;
                if attempt > 1 {
                    s.retries += 1;
                }
            }
            debug!(
                inputs = inputs.len(),
                estimated_tokens = tokens,
                attempt,
                probe = matches!(admission, Admission::Probe),
                url = provider.display_url(),
                "embedding request"
            );
            match provider.attempt(inputs, timeout).await {
                Ok(parsed) => {
                    lock(&self.breaker).record_success();
                    return Ok(parsed);
                }
                Err(AttemptError::Fatal { error, blames_provider }) => {
                    let now = Instant::now();
                    {
                        let mut b = lock(&self.breaker);
                        if blames_provider {
                            if b.record_failure(now, &error.to_string()) {
                                self.opened(provider, &error.to_string());
                            }
                        } else {
                            // The provider answered: it is alive.
                            b.record_success();
                        }
                    }
                    lock(&self.stats).failed_requests += 1;
                    return Err(error);
                }
                Err(AttemptError::Transient {
                    message,
                    retry_after,
                    timed_out,
                }) => {
                    let now = Instant::now();
                    if timed_out && clipped {
                        // Our deadline, not the provider, cut it short.
                        lock(&self.stats).failed_requests += 1;
                        return Err(EmbedError::DeadlineExceeded);
                    }
                    let opened = lock(&self.breaker).record_failure(now, &message);
                    if opened {
                        self.opened(provider, &message);
                    }
                    let give_up = |why: String| {
                        lock(&self.stats).failed_requests += 1;
                        Err(EmbedError::ProviderUnavailable(why))
                    };
                    if opened || attempt >= max_attempts {
                        if lock(&self.breaker).trip(now, &message) {
                            self.opened(provider, &message);
                        }
                        return give_up(format!("{message} (gave up after {attempt} attempt(s))"));
                    }
                    let delay = config.retry.delay(attempt, retry_after, &mut rand::thread_rng());
                    if let Some(d) = deadline {
                        if now + delay + MIN_ATTEMPT_TIME >= d {
                            return give_up(format!(
                                "{message} (attempt {attempt}; no time left to retry before the deadline)"
                            ));
                        }
                    }
                    warn!(
                        attempt,
                        delay_ms = delay.as_millis() as u64,
                        retry_after = retry_after.is_some(),
                        "embedding request failed: {message}; retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn opened(&self, provider: &Provider, reason: &str) {
        lock(&self.stats).breaker_opens += 1;
        warn!(
            cool_down_s = provider.config().breaker.cool_down.as_secs(),
            "embedding provider circuit opened: {reason}; calls fail fast until the cool-down ends"
        );
    }
}

/// One result per input, from the results per distinct text.
fn collect(slot: Vec<usize>, results: Vec<Option<VectorResult>>) -> Vec<VectorResult> {
    slot.into_iter()
        .map(|i| {
            results[i]
                .clone()
                .unwrap_or(Err(EmbedError::MalformedResponse("no vector was assigned".into())))
        })
        .collect()
}

fn fail_all(results: &mut [Option<VectorResult>], misses: &[usize], error: EmbedError) {
    for &i in misses {
        results[i] = Some(Err(error.clone()));
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (no
/// lock is held across an await or a fallible step).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
