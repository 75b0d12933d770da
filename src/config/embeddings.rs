//! The embedding provider's flags, to be flattened into the commands that
//! score (`run`, `daemon`, `admin-start-matching`).

use super::parse_duration_nonzero;
use crate::embeddings::client::{
    redact_url_str, ApiKey, Provider, ProviderConfig, DEFAULT_MAX_INPUTS, DEFAULT_MAX_TOKENS, DEFAULT_MODEL,
};
use crate::embeddings::MAX_DIMENSIONS;
use anyhow::Result;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// How to reach the embedding provider (optional: without a URL, embeddings
/// come only from what the application stored). `Debug` redacts the URL's
/// credentials and the key.
#[derive(Clone, clap::Args)]
pub struct EmbeddingArgs {
    /// OpenAI-compatible base URL of the embedding provider, e.g.
    /// https://api.openai.com/v1 (requests go to {url}/embeddings). Unset: no
    /// provider.
    #[arg(long, env = "EMBEDDINGS_URL", hide_env_values = true)]
    pub embeddings_url: Option<String>,
    /// A sentence-transformers model folder (e.g. all-MiniLM-L6-v2, from
    /// `bash scripts/fetch-model.sh`) to embed with in process, on the CPU:
    /// no text leaves the machine. Exclusive with --embeddings-url.
    #[arg(long, env = "EMBEDDINGS_MODEL_DIR", conflicts_with = "embeddings_url")]
    pub embeddings_model_dir: Option<PathBuf>,
    /// API key, sent as a bearer token.
    #[arg(long, env = "EMBEDDINGS_API_KEY", hide_env_values = true)]
    pub embeddings_api_key: Option<ApiKey>,
    /// Embedding model name.
    #[arg(long, env = "EMBEDDINGS_MODEL", default_value = DEFAULT_MODEL)]
    pub embeddings_model: String,
    /// Vector length to request (the `dimensions` parameter); unset: the
    /// model's default.
    #[arg(long, env = "EMBEDDINGS_DIMENSIONS",
          value_parser = clap::value_parser!(u32).range(1..=MAX_DIMENSIONS as i64))]
    pub embeddings_dimensions: Option<u32>,
    /// Give up one HTTP attempt after this long.
    #[arg(long, env = "EMBEDDINGS_TIMEOUT", default_value = "10s", value_parser = parse_duration_nonzero)]
    pub embeddings_timeout: Duration,
    /// Most inputs in one request.
    #[arg(long, env = "EMBEDDINGS_MAX_INPUTS", default_value_t = DEFAULT_MAX_INPUTS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub embeddings_max_inputs: usize,
    /// Most estimated tokens (characters / 4) in one request.
    #[arg(long, env = "EMBEDDINGS_MAX_TOKENS", default_value_t = DEFAULT_MAX_TOKENS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000_000))]
    pub embeddings_max_tokens: usize,
    /// After repeated failures, call the provider again only after this long.
    #[arg(long, env = "EMBEDDINGS_COOL_DOWN", default_value = "60s", value_parser = parse_duration_nonzero)]
    pub embeddings_cool_down: Duration,
}

impl EmbeddingArgs {
    /// The embedder the flags describe: the local model (loaded now, so a
    /// bad folder fails at start-up), else the HTTP provider, else `None`.
    pub fn embedder(&self) -> Result<Option<crate::embeddings::Embedder>> {
        use crate::embeddings::{Embedder, LocalModel};
        if let Some(dir) = self
            .embeddings_model_dir
            .as_deref()
            .filter(|d| !d.as_os_str().is_empty())
        {
            let model = LocalModel::load(dir)?;
            tracing::info!(
                model = model.model_id(),
                dims = model.dimensions(),
                "local embedding model loaded"
            );
            return Ok(Some(Embedder::local(model)));
        }
        Ok(self.provider()?.map(Embedder::new))
    }

    /// The provider, or `None` when no URL is set (an empty one counts as
    /// unset). A malformed URL or key is an error that repeats neither.
    pub fn provider(&self) -> Result<Option<Provider>> {
        let Some(url) = self.embeddings_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) else {
            if self.embeddings_api_key.as_ref().is_some_and(|k| !k.is_empty()) {
                tracing::warn!("EMBEDDINGS_API_KEY is set but EMBEDDINGS_URL is not: no embedding provider is used");
            }
            return Ok(None);
        };
        let api_key = self.embeddings_api_key.clone().filter(|k| !k.is_empty());
        let mut config = ProviderConfig::new(url);
        config.api_key = api_key;
        config.model = self.embeddings_model.clone();
        config.dimensions = self.embeddings_dimensions;
        config.request_timeout = self.embeddings_timeout;
        config.max_inputs_per_request = self.embeddings_max_inputs;
        config.max_tokens_per_request = self.embeddings_max_tokens;
        config.breaker.cool_down = self.embeddings_cool_down;
        Provider::new(config).map(Some)
    }
}

impl fmt::Debug for EmbeddingArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddingArgs")
            .field("embeddings_url", &self.embeddings_url.as_deref().map(redact_url_str))
            .field("embeddings_model_dir", &self.embeddings_model_dir)
            .field("embeddings_api_key", &self.embeddings_api_key)
            .field("embeddings_model", &self.embeddings_model)
            .field("embeddings_dimensions", &self.embeddings_dimensions)
            .field("embeddings_timeout", &self.embeddings_timeout)
            .field("embeddings_max_inputs", &self.embeddings_max_inputs)
            .field("embeddings_max_tokens", &self.embeddings_max_tokens)
            .field("embeddings_cool_down", &self.embeddings_cool_down)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Only {
        #[command(flatten)]
        embeddings: EmbeddingArgs,
    }

    fn parse(args: &[&str]) -> EmbeddingArgs {
        let mut argv = vec!["test"];
        argv.extend_from_slice(args);
        match Only::try_parse_from(argv) {
            Ok(o) => o.embeddings,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_scoring_commands_take_the_flags_and_nothing_collides() {
        Cli::command().debug_assert();
        let cli = Cli::command();
        for sub in ["run", "daemon", "admin-start-matching"] {
            let cmd = cli.find_subcommand(sub).expect("subcommand");
            for flag in [
                "embeddings_url",
                "embeddings_api_key",
                "embeddings_model",
                "embeddings_dimensions",
                "embeddings_model_dir",
            ] {
                assert!(cmd.get_arguments().any(|a| a.get_id() == flag), "{sub} lacks {flag}");
            }
        }
        assert!(!cli
            .find_subcommand("status")
            .expect("status")
            .get_arguments()
            .any(|a| a.get_id() == "embeddings_url"));
    }

    #[test]
    fn no_url_means_no_provider() {
        // Only meaningful when the test environment does not set it.
        if std::env::var_os("EMBEDDINGS_URL").is_some() {
            return;
        }
        assert!(parse(&[]).provider().expect("valid").is_none());
        assert!(parse(&["--embeddings-url", " "]).provider().expect("valid").is_none());
    }

    #[test]
    fn flags_build_a_provider_and_bad_urls_are_clear_errors() {
        let a = parse(&[
            "--embeddings-url",
            "http://127.0.0.1:9/v1",
            "--embeddings-api-key",
            "sk-flag-secret",
            "--embeddings-dimensions",
            "256",
            "--embeddings-timeout",
            "2s",
            "--embeddings-max-inputs",
            "100",
        ]);
        assert!(!format!("{a:?}").contains("sk-flag-secret"));
        let p = a.provider().expect("valid").expect("configured");
        assert_eq!(p.dimensions(), Some(256));
        assert_eq!(p.config().request_timeout, Duration::from_secs(2));
        assert_eq!(p.config().max_inputs_per_request, 100);
        assert!(!format!("{p:?}").contains("sk-flag-secret"));

        let a = parse(&[
            "--embeddings-url",
            "https//user:pa55@oops",
            "--embeddings-api-key",
            "sk-flag-secret",
        ]);
        let e = a.provider().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.contains("EMBEDDINGS_URL") && !e.contains("pa55") && !e.contains("sk-flag"),
            "{e}"
        );
        let e = Only::try_parse_from([
            "t",
            "--embeddings-url",
            "http://127.0.0.1:9/v1",
            "--embeddings-model-dir",
            "/models/x",
        ])
        .err()
        .map(|e| (e.kind(), e.to_string()));
        assert!(
            e.as_ref()
                .is_some_and(|(k, m)| *k == clap::error::ErrorKind::ArgumentConflict
                    && m.contains("--embeddings-model-dir")
                    && m.contains("--embeddings-url")),
            "{e:?}"
        );
        let e = Only::try_parse_from(["t", "--embeddings-dimensions", "0"])
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("--embeddings-dimensions")));
    }
}
