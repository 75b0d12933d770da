//! Logging: `RUST_LOG` filters (default `info`), `LOG_FORMAT=json` for
//! machines, readable lines for people; always on stderr, so stdout carries
//! only command output (`status --json`).

use tracing_subscriber::{fmt, EnvFilter};

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Installs the global subscriber. Safe to call once per process.
pub fn init(format: LogFormat) {
    // The scheduler and the driver are chatty at info (job bookkeeping,
    // NOTICEs such as "relation already exists, skipping").
    const DEFAULT: &str = "info,tokio_cron_scheduler=warn,sqlx=warn";
    let (filter, bad) = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => match EnvFilter::try_new(&spec) {
            Ok(f) => (f, None),
            Err(e) => (
                EnvFilter::new(DEFAULT),
                Some(format!("ignoring RUST_LOG={spec:?}: {e}")),
            ),
        },
        _ => (EnvFilter::new(DEFAULT), None),
    };
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.with_target(false).compact().try_init(),
    };
    if let Some(warning) = bad {
        tracing::warn!("{warning}");
    }
}

/// An error and its causes on one line, `outer: inner: root`, skipping a
/// cause that only repeats the text before it (database errors often do).
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string().replace('\n', " ");
        if parts.last().is_some_and(|p| p.ends_with(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_is_one_line_without_repeats() {
        let root = anyhow::anyhow!("password authentication failed");
        let e = root
            .context("error returned from database: password authentication failed")
            .context("cannot connect");
        assert_eq!(
            error_chain(&e),
            "cannot connect: error returned from database: password authentication failed"
        );
    }
}
