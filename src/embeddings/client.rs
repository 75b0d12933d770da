//! One HTTP attempt against an OpenAI-compatible `POST {url}/embeddings`,
//! and the validation of what comes back.
//!
//! Secrets: the API key lives in an [`ApiKey`] (prints `***`) and travels
//! only in a sensitive `Authorization` header; no error built here includes
//! request headers, the URL's user information or query, and any text the
//! provider sends back is scrubbed of the key before it is kept.

use super::breaker::BreakerPolicy;
use super::retry::{parse_retry_after, RetryPolicy};
use super::{EmbedError, MAX_DIMENSIONS};
use anyhow::{bail, Result};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{StatusCode, Url};
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The provider's API key. `Debug` and `Display` print `***`; the value is
/// read only to build the `Authorization` header. Parsing never fails (so
/// that a command-line parser has no reason to echo it);
/// [`Provider::new`] validates it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key, trimmed of surrounding white space.
    pub fn new(key: &str) -> Self {
        Self(key.trim().to_string())
    }

    /// True for an empty (or all white space) key, which means "no key".
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl FromStr for ApiKey {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

/// Everything needed to call a provider. `Debug` redacts the URL and the key.
#[derive(Clone)]
pub struct ProviderConfig {
    /// The OpenAI-compatible base URL, e.g. `https://api.openai.com/v1`;
    /// requests go to `{url}/embeddings`.
    pub url: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub api_key: Option<ApiKey>,
    /// The `model` request parameter.
    pub model: String,
    /// The `dimensions` request parameter; `None` sends none (the model's
    /// default length).
    pub dimensions: Option<u32>,
    /// The longest one HTTP attempt may take, connecting and reading the
    /// body included.
    pub request_timeout: Duration,
    /// The most inputs in one request (OpenAI accepts 2,048).
    pub max_inputs_per_request: usize,
    /// The most estimated tokens (characters / 4) in one request (OpenAI
    /// accepts 300,000).
    pub max_tokens_per_request: usize,
    /// How a failed attempt is retried.
    pub retry: RetryPolicy,
    /// When repeated failures stop all calls for a while.
    pub breaker: BreakerPolicy,
}

/// OpenAI's default embedding model.
pub const DEFAULT_MODEL: &str = "text-embedding-3-small";
/// OpenAI's limit on inputs per request.
pub const DEFAULT_MAX_INPUTS: usize = 2048;
/// OpenAI's limit on tokens per request.
pub const DEFAULT_MAX_TOKENS: usize = 300_000;

impl ProviderConfig {
    /// A configuration with the defaults: no key, [`DEFAULT_MODEL`], the
    /// model's own dimensions, a 10 s request timeout, OpenAI's request
    /// limits, 3 attempts, and a breaker that opens for 60 s.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            api_key: None,
            model: DEFAULT_MODEL.to_string(),
            dimensions: None,
            request_timeout: Duration::from_secs(10),
            max_inputs_per_request: DEFAULT_MAX_INPUTS,
            max_tokens_per_request: DEFAULT_MAX_TOKENS,
            retry: RetryPolicy::default(),
            breaker: BreakerPolicy::default(),
        }
    }
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("url", &redact_url_str(&self.url))
            .field("api_key", &self.api_key)
            .field("model", &self.model)
            .field("dimensions", &self.dimensions)
            .field("request_timeout", &self.request_timeout)
            .field("max_inputs_per_request", &self.max_inputs_per_request)
            .field("max_tokens_per_request", &self.max_tokens_per_request)
            .field("retry", &self.retry)
            .field("breaker", &self.breaker)
            .finish()
    }
}

/// A validated provider: the endpoint, the HTTP client, the settings. Cheap
/// to clone. `Debug` shows the redacted URL and never the key.
#[derive(Clone)]
pub struct Provider {
    config: ProviderConfig,
    endpoint: Url,
    display_url: String,
    auth: Option<HeaderValue>,
    secrets: Arc<[String]>,
    client: reqwest::Client,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("url", &self.display_url)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// Validates the configuration and builds the HTTP client. Errors name
    /// the problem without repeating the URL's credentials or the key.
    pub fn new(config: ProviderConfig) -> Result<Self> {
        let shown = redact_url_str(&config.url);
        let base = match Url::parse(config.url.trim()) {
            Ok(u) => u,
            Err(e) => bail!("EMBEDDINGS_URL {shown} is not a valid URL: {e} (expected e.g. https://api.openai.com/v1)"),
        };
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none_or(str::is_empty) {
            bail!("EMBEDDINGS_URL {shown} must be an http:// or https:// URL with a host (e.g. https://api.openai.com/v1)");
        }
        let has_userinfo = !base.username().is_empty() || base.password().is_some();
        if has_userinfo && config.api_key.is_some() {
            bail!("EMBEDDINGS_URL {shown} carries credentials and EMBEDDINGS_API_KEY is set too: use one of them");
        }
        let model = config.model.trim();
        if model.is_empty() || model.len() > 200 {
            bail!("the embeddings model name must be 1 to 200 characters");
        }
        if let Some(d) = config.dimensions {
            if d == 0 || d as usize > MAX_DIMENSIONS {
                bail!("embeddings dimensions must be between 1 and {MAX_DIMENSIONS} (got {d})");
            }
        }
        if config.request_timeout.is_zero() {
            bail!("the embeddings request timeout must be longer than zero");
        }
        if config.max_inputs_per_request == 0 || config.max_tokens_per_request == 0 {
            bail!("the embeddings request limits (inputs, tokens) must be at least 1");
        }
        let mut endpoint = base.clone();
        endpoint.set_fragment(None);
        let path = format!("{}/embeddings", base.path().trim_end_matches('/'));
        endpoint.set_path(&path);

        let mut secrets: Vec<String> = Vec::new();
        let auth = match &config.api_key {
            Some(key) => {
                let k = key.expose();
                if k.is_empty() || !k.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
                    bail!(
                        "EMBEDDINGS_API_KEY is empty or contains characters an HTTP header cannot carry \
                         (spaces, control or non-ASCII characters)"
                    );
                }
                secrets.push(k.to_string());
                let mut v = HeaderValue::from_str(&format!("Bearer {k}"))
                    .map_err(|_| anyhow::anyhow!("EMBEDDINGS_API_KEY cannot be sent in an HTTP header"))?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        secrets.extend(url_secrets(&base));
        secrets.retain(|s| s.len() >= 3);
        // Longest first, so a secret that contains another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));

        let client = reqwest::Client::builder()
            .user_agent(concat!("matchmaker/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.request_timeout)
            // A redirect would re-send the body (and, to the same host, the
            // key) somewhere the operator did not configure.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {e}"))?;
        let config = ProviderConfig {
            model: model.to_string(),
            ..config
        };
        Ok(Self {
            config,
            endpoint,
            display_url: redact_url(&base),
            auth,
            secrets: secrets.into(),
            client,
        })
    }

    /// The settings.
    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }

    /// The model name sent with every request.
    pub fn model(&self) -> &str {
        &self.config.model
    }

    /// The `dimensions` request parameter, when one is sent.
    pub fn dimensions(&self) -> Option<u32> {
        self.config.dimensions
    }

    /// The base URL with credentials and query replaced by `***`.
    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    /// Replaces every secret (the key, the URL's user information and query
    /// values) in a message by `***`.
    pub fn scrub(&self, message: &str) -> String {
        let mut out = message.to_string();
        for s in self.secrets.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }

    /// One HTTP attempt with `inputs`, giving up after `timeout`.
    pub(crate) async fn attempt(&self, inputs: &[&str], timeout: Duration) -> Result<Parsed, AttemptError> {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            model: &'a str,
            input: &'a [&'a str],
            encoding_format: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            dimensions: Option<u32>,
        }
        let body = Body {
            model: &self.config.model,
            input: inputs,
            encoding_format: "float",
            dimensions: self.config.dimensions,
        };
        let mut request = self
            .client
            .post(self.endpoint.clone())
            .timeout(timeout)
            .header(CONTENT_TYPE, "application/json")
            .json(&body);
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let response = request.send().await.map_err(|e| self.transport_error(e, timeout))?;
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let retry_after = parse_retry_after(header("retry-after").as_deref(), header("retry-after-ms").as_deref());
        let bytes = response.bytes().await.map_err(|e| self.transport_error(e, timeout))?;
        if status.is_success() {
            return parse_response(&bytes, inputs.len(), self.config.dimensions).map_err(|error| AttemptError::Fatal {
                error: self.scrub_error(error),
                blames_provider: true,
            });
        }
        let detail = self.scrub(&error_detail(&bytes));
        let message = if detail.is_empty() {
            format!("HTTP {}", status.as_u16())
        } else {
            format!("HTTP {}: {detail}", status.as_u16())
        };
        if status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_EARLY
            || status.is_server_error()
        {
            return Err(AttemptError::Transient {
                message,
                retry_after,
                timed_out: false,
            });
        }
        let (message, blames_provider) = if status.is_redirection() {
            (
                format!("{message} (a redirect; redirects are not followed: check EMBEDDINGS_URL)"),
                true,
            )
        } else {
            // 400, 413 and 422 blame this request's input; anything else
            // (401, 403, 404, ...) is a configuration every request shares.
            let input = matches!(status.as_u16(), 400 | 413 | 422);
            (message, !input)
        };
        Err(AttemptError::Fatal {
            error: EmbedError::Rejected {
                status: status.as_u16(),
                message,
            },
            blames_provider,
        })
    }

    fn transport_error(&self, e: reqwest::Error, timeout: Duration) -> AttemptError {
        if e.is_timeout() {
            return AttemptError::Transient {
                message: format!("no complete answer within {timeout:?}"),
                retry_after: None,
                timed_out: true,
            };
        }
        let what = if e.is_connect() {
            format!("cannot connect to {}", self.display_url)
        } else {
            "the request failed".to_string()
        };
        // The reqwest error without its URL, then its causes; no headers are
        // ever part of these.
        let e = e.without_url();
        let mut parts = vec![e.to_string()];
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            let t = cause.to_string();
            if !parts.iter().any(|p| p.contains(&t)) {
                parts.push(t);
            }
            source = cause.source();
        }
        let text = self.scrub(&parts.join(": "));
        AttemptError::Transient {
            message: format!("{what}: {text}"),
            retry_after: None,
            timed_out: false,
        }
    }

    fn scrub_error(&self, e: EmbedError) -> EmbedError {
        match e {
            EmbedError::MalformedResponse(m) => EmbedError::MalformedResponse(self.scrub(&m)),
            other => other,
        }
    }
}

/// The outcome of one failed attempt.
#[derive(Debug)]
pub(crate) enum AttemptError {
    /// Worth retrying: 408, 425, 429, 5xx, a timeout, a connection error.
    Transient {
        message: String,
        retry_after: Option<Duration>,
        timed_out: bool,
    },
    /// Not worth retrying. `blames_provider`: counts against the breaker
    /// (the provider or its configuration is broken for every request, not
    /// just this input).
    Fatal { error: EmbedError, blames_provider: bool },
}

/// A validated response: one result per input, in input order.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub vectors: Vec<Result<Arc<[f32]>, EmbedError>>,
    /// `usage.total_tokens`, when reported.
    pub total_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct RawResponse {
    data: Vec<RawItem>,
    #[serde(default)]
    usage: Option<RawUsage>,
}

#[derive(Deserialize)]
struct RawItem {
    #[serde(default)]
    index: Option<u64>,
    #[serde(deserialize_with = "lenient_floats")]
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct RawUsage {
    #[serde(default)]
    total_tokens: Option<u64>,
}

/// Numbers as `f32`; `null` (and the `NaN`/`Infinity` literals some servers
/// emit, rewritten to `null` first) become NaN, and values beyond `f32`
/// become infinite, so that validation reports them per vector instead of
/// failing the whole response.
fn lenient_floats<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<f32>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array of numbers")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<f32>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_DIMENSIONS));
            while let Some(x) = seq.next_element::<Option<f64>>()? {
                out.push(x.map_or(f32::NAN, |x| x as f32));
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V)
}

/// Parses and validates a 2xx body. A response that cannot be trusted as a
/// whole (not JSON, wrong count, bad `index` values) is an error; a bad
/// vector is an error for its input only.
pub(crate) fn parse_response(body: &[u8], inputs: usize, dimensions: Option<u32>) -> Result<Parsed, EmbedError> {
    let body = replace_non_finite_literals(body);
    let raw: RawResponse = serde_json::from_slice(&body)
        .map_err(|e| EmbedError::MalformedResponse(format!("not the JSON of an embeddings response ({e})")))?;
    if raw.data.len() != inputs {
        return Err(EmbedError::MalformedResponse(format!(
            "{inputs} inputs sent but {} vectors returned",
            raw.data.len()
        )));
    }
    // OpenAI returns `data[i].index`; order by it. A server that sends no
    // index at all is taken in order.
    let with_index = raw.data.iter().filter(|d| d.index.is_some()).count();
    let mut slots: Vec<Option<Vec<f32>>> = vec![None; inputs];
    if with_index == 0 {
        for (slot, item) in slots.iter_mut().zip(raw.data) {
            *slot = Some(item.embedding);
        }
    } else if with_index == inputs {
        for item in raw.data {
            let i = item.index.unwrap_or(u64::MAX);
            let slot = usize::try_from(i).ok().and_then(|i| slots.get_mut(i));
            match slot {
                Some(s @ None) => *s = Some(item.embedding),
                Some(Some(_)) => {
                    return Err(EmbedError::MalformedResponse(format!("index {i} appears twice")));
                }
                None => {
                    return Err(EmbedError::MalformedResponse(format!(
                        "index {i} is out of range for {inputs} inputs"
                    )));
                }
            }
        }
    } else {
        return Err(EmbedError::MalformedResponse(
            "some vectors have an index and others do not".to_string(),
        ));
    }
    let mut vectors: Vec<Result<Arc<[f32]>, EmbedError>> = slots
        .into_iter()
        .map(|v| validate_vector(v.unwrap_or_default(), dimensions))
        .collect();
    // Without requested dimensions, all vectors of one model must still
    // share a length; if they do not, none can be trusted.
    if dimensions.is_none() {
        let mut lengths: Vec<usize> = vectors.iter().flatten().map(|v| v.len()).collect();
        lengths.sort_unstable();
        lengths.dedup();
        if lengths.len() > 1 {
            let shown = lengths.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(", ");
            for v in &mut vectors {
                if v.is_ok() {
                    *v = Err(EmbedError::InconsistentDimensions { lengths: shown.clone() });
                }
            }
        }
    }
    Ok(Parsed {
        vectors,
        total_tokens: raw.usage.and_then(|u| u.total_tokens),
    })
}

/// Checks one vector: not empty, not too long, the requested length, every
/// component finite, not all zeros.
pub(crate) fn validate_vector(v: Vec<f32>, dimensions: Option<u32>) -> Result<Arc<[f32]>, EmbedError> {
    if v.is_empty() {
        return Err(EmbedError::Degenerate("empty"));
    }
    if let Some(d) = dimensions {
        if v.len() != d as usize {
            return Err(EmbedError::WrongDimensions {
                expected: d as usize,
                got: v.len(),
            });
        }
    }
    if v.len() > MAX_DIMENSIONS {
        return Err(EmbedError::Degenerate("longer than 16000 components"));
    }
    if let Some(index) = v.iter().position(|x| !x.is_finite()) {
        return Err(EmbedError::NonFinite { index });
    }
    if v.iter().all(|x| *x == 0.0) {
        return Err(EmbedError::Degenerate("all zeros"));
    }
    Ok(v.into())
}

/// Rewrites the bare `NaN`, `Infinity` and `-Infinity` literals that some
/// servers (Python's `json`) emit, outside strings, to `null`.
fn replace_non_finite_literals(body: &[u8]) -> Cow<'_, [u8]> {
    let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    if !has(b"NaN") && !has(b"Infinity") {
        return Cow::Borrowed(body);
    }
    const LITERALS: [&[u8]; 5] = [b"-Infinity", b"+Infinity", b"Infinity", b"-NaN", b"NaN"];
    let mut out = Vec::with_capacity(body.len());
    let mut in_string = false;
    let mut i = 0;
    'scan: while i < body.len() {
        let b = body[i];
        if in_string {
            out.push(b);
            if b == b'\\' {
                if let Some(&next) = body.get(i + 1) {
                    out.push(next);
                    i += 2;
                    continue;
                }
            } else if b == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
        } else {
            for lit in LITERALS {
                if body[i..].starts_with(lit) {
                    out.extend_from_slice(b"null");
                    i += lit.len();
                    continue 'scan;
                }
            }
        }
        out.push(b);
        i += 1;
    }
    Cow::Owned(out)
}

/// The provider's explanation of an error response, on one line, at most
/// 300 characters: OpenAI's `error.message` when the body has one, else the
/// body's start.
fn error_detail(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct E {
        error: Inner,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Inner {
        Object { message: String },
        Text(String),
    }
    let text = match serde_json::from_slice::<E>(body) {
        Ok(E {
            error: Inner::Object { message } | Inner::Text(message),
        }) => message,
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(2000)]).into_owned(),
    };
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

/// The URL for messages: user information replaced by `***@`, the query
/// by `?***` (it may carry a key), no fragment.
pub fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    let had_userinfo = !u.username().is_empty() || u.password().is_some();
    let had_query = u.query().is_some();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    let mut s = u.to_string();
    if had_userinfo {
        s = s.replacen("://", "://***@", 1);
    }
    if had_query {
        s.push_str("?***");
    }
    s
}

/// [`redact_url`] for a string that may not parse.
pub fn redact_url_str(url: &str) -> String {
    match Url::parse(url.trim()) {
        Ok(u) => redact_url(&u),
        Err(_) => "<unparseable URL>".to_string(),
    }
}

/// The user name, password and query values of a URL, as written and
/// percent-decoded.
fn url_secrets(url: &Url) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |s: &str| {
        if !s.is_empty() {
            out.push(s.to_string());
            if let Ok(decoded) = percent_decode(s) {
                out.push(decoded);
            }
        }
    };
    add(url.username());
    if let Some(p) = url.password() {
        add(p);
    }
    if let Some(q) = url.query() {
        for kv in q.split('&') {
            if let Some((_, v)) = kv.split_once('=') {
                add(v);
            }
        }
    }
    out
}

fn percent_decode(s: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(b) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str, inputs: usize, dims: Option<u32>) -> Result<Parsed, EmbedError> {
        parse_response(body.as_bytes(), inputs, dims)
    }

    #[test]
    fn responses_are_ordered_by_index_and_report_usage() {
        let body = r#"{"object":"list","data":[
            {"object":"embedding","index":1,"embedding":[0.0,1.0]},
            {"object":"embedding","index":0,"embedding":[1.0,0.5]}],
            "model":"m","usage":{"prompt_tokens":7,"total_tokens":7}}"#;
        let p = parse(body, 2, Some(2)).expect("valid");
        assert_eq!(p.total_tokens, Some(7));
        assert_eq!(p.vectors[0].as_deref(), Ok(&[1.0f32, 0.5][..]));
        assert_eq!(p.vectors[1].as_deref(), Ok(&[0.0f32, 1.0][..]));
        // No index at all: taken in order; no usage: None.
        let p = parse(r#"{"data":[{"embedding":[1]},{"embedding":[2]}]}"#, 2, None).expect("valid");
        assert_eq!(p.vectors[1].as_deref(), Ok(&[2.0f32][..]));
        assert_eq!(p.total_tokens, None);
    }

    #[test]
    fn malformed_responses_are_typed_errors() {
        let malformed = |body: &str, n: usize| match parse(body, n, None) {
            Err(EmbedError::MalformedResponse(m)) => m,
            other => panic!("expected malformed for {body}, got {other:?}"),
        };
        assert!(malformed("not json", 1).contains("not the JSON"));
        assert!(malformed(r#"{"error":"x"}"#, 1).contains("not the JSON"));
        assert!(malformed(r#"{"data":[{"embedding":"AAAA"}]}"#, 1).contains("not the JSON"));
        assert!(malformed(r#"{"data":[{"embedding":[1]}]}"#, 2).contains("2 inputs sent but 1 vectors"));
        assert!(malformed(
            r#"{"data":[{"index":0,"embedding":[1]},{"index":0,"embedding":[2]}]}"#,
            2
        )
        .contains("twice"));
        assert!(malformed(r#"{"data":[{"index":5,"embedding":[1]}]}"#, 1).contains("out of range"));
        assert!(malformed(r#"{"data":[{"index":0,"embedding":[1]},{"embedding":[2]}]}"#, 2).contains("others do not"));
    }

    #[test]
    fn bad_vectors_fail_alone() {
        let body = r#"{"data":[
            {"index":0,"embedding":[1,2,3]},
            {"index":1,"embedding":[1,2]},
            {"index":2,"embedding":[1,NaN,3]},
            {"index":3,"embedding":[1,null,3]},
            {"index":4,"embedding":[1,2,-Infinity]},
            {"index":5,"embedding":[1e39,2,3]},
            {"index":6,"embedding":[0,0,0]},
            {"index":7,"embedding":[]}],
            "note":"NaN inside a string stays \"NaN\""}"#;
        let p = parse(body, 8, Some(3)).expect("the response as a whole is valid");
        assert!(p.vectors[0].is_ok());
        assert_eq!(p.vectors[1], Err(EmbedError::WrongDimensions { expected: 3, got: 2 }));
        assert_eq!(p.vectors[2], Err(EmbedError::NonFinite { index: 1 }));
        assert_eq!(p.vectors[3], Err(EmbedError::NonFinite { index: 1 }));
        assert_eq!(p.vectors[4], Err(EmbedError::NonFinite { index: 2 }));
        assert_eq!(p.vectors[5], Err(EmbedError::NonFinite { index: 0 }));
        assert_eq!(p.vectors[6], Err(EmbedError::Degenerate("all zeros")));
        assert_eq!(p.vectors[7], Err(EmbedError::Degenerate("empty")));
    }

    #[test]
    fn lengths_must_agree_without_requested_dimensions() {
        let body =
            r#"{"data":[{"index":0,"embedding":[1,2,3]},{"index":1,"embedding":[1,2]},{"index":2,"embedding":[0,0]}]}"#;
        let p = parse(body, 3, None).expect("valid");
        let inconsistent = EmbedError::InconsistentDimensions { lengths: "2, 3".into() };
        assert_eq!(p.vectors[0], Err(inconsistent.clone()));
        assert_eq!(p.vectors[1], Err(inconsistent));
        assert_eq!(p.vectors[2], Err(EmbedError::Degenerate("all zeros")));
    }

    #[test]
    fn non_finite_literals_are_rewritten_outside_strings_only() {
        let out = replace_non_finite_literals(br#"{"a":"NaN \"Infinity\"","b":[NaN,-Infinity,Infinity,1]}"#);
        assert_eq!(
            std::str::from_utf8(&out).ok(),
            Some(r#"{"a":"NaN \"Infinity\"","b":[null,null,null,1]}"#)
        );
        assert!(matches!(replace_non_finite_literals(b"[1,2]"), Cow::Borrowed(_)));
    }

    #[test]
    fn error_details_are_short_single_lines() {
        assert_eq!(
            error_detail(br#"{"error":{"message":"Incorrect API key\nprovided","type":"invalid_request_error"}}"#),
            "Incorrect API key provided"
        );
        assert_eq!(error_detail(br#"{"error":"model not found"}"#), "model not found");
        assert_eq!(
            error_detail(b"<html>\n  Bad   Gateway </html>"),
            "<html> Bad Gateway </html>"
        );
        let long = "x".repeat(1000);
        assert_eq!(error_detail(long.as_bytes()).chars().count(), 301);
    }

    #[test]
    fn urls_and_keys_are_redacted() {
        let u = |s: &str| redact_url_str(s);
        assert_eq!(u("https://api.openai.com/v1"), "https://api.openai.com/v1");
        assert_eq!(
            u("http://user:pa55word@127.0.0.1:8080/v1"),
            "http://***@127.0.0.1:8080/v1"
        );
        assert_eq!(u("http://tok3n@host/v1"), "http://***@host/v1");
        assert_eq!(u("https://host/v1?key=s3cret&x=1"), "https://host/v1?***");
        assert_eq!(u("not a url"), "<unparseable URL>");
        let key = ApiKey::new("  sk-live-123  ");
        assert_eq!(format!("{key} {key:?} {:?}", Some(&key)), "*** *** Some(***)");
        let mut config = ProviderConfig::new("http://user:pa55word@127.0.0.1:8080/v1?token=t0ken");
        config.api_key = Some(key.clone());
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("sk-live") && !debug.contains("pa55word") && !debug.contains("t0ken"),
            "{debug}"
        );
    }

    #[test]
    fn provider_configuration_is_validated_without_echoing_secrets() {
        let err = |mut c: ProviderConfig, key: Option<&str>| {
            c.api_key = key.map(ApiKey::new);
            match Provider::new(c) {
                Ok(_) => panic!("expected an error"),
                Err(e) => e.to_string(),
            }
        };
        let e = err(ProviderConfig::new("ftp://user:pa55word@host/v1"), None);
        assert!(e.contains("http:// or https://") && !e.contains("pa55word"), "{e}");
        let e = err(ProviderConfig::new("http://user:pa55word@[::1/v1"), None);
        assert!(e.contains("not a valid URL") && !e.contains("pa55word"), "{e}");
        let e = err(ProviderConfig::new("http://user:pa55word@host/v1"), Some("sk-x"));
        assert!(e.contains("use one of them") && !e.contains("pa55word"), "{e}");
        let e = err(ProviderConfig::new("http://host/v1"), Some("sk key with blanks"));
        assert!(e.contains("cannot carry") && !e.contains("blanks"), "{e}");
        let mut c = ProviderConfig::new("http://host/v1");
        c.dimensions = Some(0);
        assert!(err(c, None).contains("dimensions"));

        let mut c = ProviderConfig::new("http://127.0.0.1:9/v1/");
        c.api_key = Some(ApiKey::new("sk-live-123"));
        let p = Provider::new(c).expect("valid");
        assert_eq!(p.endpoint.as_str(), "http://127.0.0.1:9/v1/embeddings");
        assert_eq!(p.scrub("bad key sk-live-123!"), "bad key ***!");
        assert!(!format!("{p:?}").contains("sk-live"));
    }
}
