//! Settings shared by several commands: how to reach the database, how a
//! worker claims and retries, and the duration syntax of every flag. Each
//! is a clap `Args` struct flattened into the commands that use it, every
//! flag also readable from the environment.

mod embeddings;

pub use embeddings::EmbeddingArgs;

use crate::db::SessionLimits;
use crate::store::queue::RetryPolicy;
use crate::worker::WorkerOptions;
use clap::Args;
use std::time::Duration;

/// How to reach the database.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// PostgreSQL URL, e.g. postgres://user:password@host:5432/db.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Give up connecting after this long.
    #[arg(long, env = "MATCHMAKER_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration_nonzero)]
    pub connect_timeout: Duration,
    /// Abort any single SQL statement after this long (PostgreSQL statement_timeout).
    #[arg(long, env = "MATCHMAKER_STATEMENT_TIMEOUT", default_value = "30s", value_parser = parse_duration_min_1s)]
    pub statement_timeout: Duration,
}

impl DbArgs {
    /// The session limits these flags ask for.
    pub fn limits(&self) -> SessionLimits {
        SessionLimits {
            statement_timeout: self.statement_timeout,
            ..SessionLimits::default()
        }
    }
}

/// How a worker claims and retries (shared by `run`, `daemon` and `admin-start-matching --wait`).
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Queue rows claimed per batch.
    #[arg(long, env = "MATCHMAKER_BATCH_SIZE", default_value_t = 20,
          value_parser = clap::value_parser!(i64).range(1..=1000))]
    pub batch_size: i64,
    /// How long a claim lasts before another worker may take the rows over.
    #[arg(long, env = "MATCHMAKER_LEASE", default_value = "2m", value_parser = parse_duration_min_1s)]
    pub lease: Duration,
    /// Attempts before a row ends `failed`.
    #[arg(long, env = "MATCHMAKER_MAX_ATTEMPTS", default_value_t = 5,
          value_parser = clap::value_parser!(i32).range(1..=100))]
    pub max_attempts: i32,
    /// First retry delay; doubles per attempt, with jitter.
    #[arg(long, env = "MATCHMAKER_RETRY_BASE", default_value = "2s", value_parser = parse_duration_nonzero)]
    pub retry_base: Duration,
    /// Longest retry delay.
    #[arg(long, env = "MATCHMAKER_RETRY_MAX", default_value = "10m", value_parser = parse_duration_nonzero)]
    pub retry_max: Duration,
    /// Delete done queue rows (up to 10,000 per run) and run history older than this.
    #[arg(long, env = "MATCHMAKER_RETAIN_DONE", default_value = "7days", value_parser = parse_duration)]
    pub retain_done: Duration,
    /// Fault injection for tests and drills: sleep this long before scoring each attendee.
    #[arg(long, env = "MATCHMAKER_FAULT_SCORE_DELAY", default_value = "0s", value_parser = parse_duration, hide = true)]
    pub fault_score_delay: Duration,
    /// Benchmarks only: complete claimed rows without scoring or writing
    /// matches, to measure the queue mechanics alone. Breaks exactness.
    #[arg(long, env = "MATCHMAKER_BENCH_NULL_SCORER", hide = true)]
    pub bench_null_scorer: bool,
}

/// Parses a duration of at least one second (deadlines, leases).
pub fn parse_duration_min_1s(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) {
        return Err(format!("{s:?} is too short: at least 1s"));
    }
    Ok(d)
}

/// Parses a duration that must not be zero.
pub fn parse_duration_nonzero(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?} must be longer than zero"));
    }
    Ok(d)
}

/// Parses durations written like `45s`, `500ms`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (write durations like 45s, 500ms, 2m)"))
}

impl WorkerArgs {
    /// The worker options these flags describe.
    pub fn options(&self, command: &'static str) -> WorkerOptions {
        WorkerOptions {
            batch_size: self.batch_size,
            lease: self.lease,
            retry: RetryPolicy {
                max_attempts: self.max_attempts,
                base: self.retry_base.min(self.retry_max),
                cap: self.retry_max,
            },
            retain_done: self.retain_done,
            fault_score_delay: self.fault_score_delay,
            null_scorer: self.bench_null_scorer,
            command,
            ..WorkerOptions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_the_spec_says() {
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration_min_1s("500ms").is_err());
        assert!(parse_duration_nonzero("0s").is_err());
    }
}
