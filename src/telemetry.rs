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
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.with_target(false).compact().try_init(),
    };
}
