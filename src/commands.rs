//! One module per subcommand, each with its `Args` and one `run` function.

pub mod admin_start;
pub mod daemon;
pub mod migrate;
pub mod run;
pub mod status;
pub mod worker_role;

use crate::cli::{Command, DbArgs, WorkerArgs};
use crate::db;
use crate::store::queue::RetryPolicy;
use crate::telemetry::error_chain;
use crate::worker::WorkerOptions;
use anyhow::Result;
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Runs a parsed command. Errors are scrubbed of the database password.
pub async fn dispatch(command: Command) -> Result<()> {
    let url = match &command {
        Command::Migrate(a) => a.db.database_url.clone(),
        Command::Run(a) => a.db.database_url.clone(),
        Command::AdminStartMatching(a) => a.db.database_url.clone(),
        Command::Status(a) => a.db.database_url.clone(),
        Command::Daemon(a) => a.db.database_url.clone(),
        Command::WorkerRole(a) => a.db.database_url.clone(),
    };
    let result = match command {
        Command::Migrate(a) => migrate::run(a).await,
        Command::Run(a) => run::run(a).await,
        Command::AdminStartMatching(a) => admin_start::run(a).await,
        Command::Status(a) => status::run(a).await,
        Command::Daemon(a) => daemon::run(a).await,
        Command::WorkerRole(a) => worker_role::run(a).await,
    };
    result.map_err(|e| {
        let mut message = error_chain(&e);
        if missing_schema(&e) {
            message.push_str(" (the schema is missing or out of date: run `matchmaker migrate` first)");
        }
        anyhow::anyhow!(db::scrub(&message, &url))
    })
}

/// Whether an error says a table or function of ours does not exist.
pub fn missing_schema(e: &anyhow::Error) -> bool {
    e.chain().any(|c| match c.downcast_ref::<sqlx::Error>() {
        Some(sqlx::Error::Database(d)) => matches!(d.code().as_deref(), Some("42P01" | "42883" | "42703")),
        _ => false,
    })
}

/// Connects for a command: parsed options (for the worker's lock connection)
/// and a pool.
pub async fn connect(args: &DbArgs, max_connections: u32) -> Result<(PgConnectOptions, PgPool)> {
    let opts = db::connect_options(&args.database_url)?;
    let pool = db::connect(&opts, args.limits(), max_connections, args.connect_timeout).await?;
    Ok((opts, pool))
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

/// The embedding provider the flags describe (one per process: it keeps
/// the breaker), or `None` without `EMBEDDINGS_URL`.
pub fn embedder(
    args: &crate::embeddings::EmbeddingArgs,
) -> Result<Option<std::sync::Arc<crate::embeddings::Embedder>>> {
    Ok(args
        .provider()?
        .map(|p| std::sync::Arc::new(crate::embeddings::Embedder::new(p))))
}

/// A token cancelled on SIGINT or SIGTERM.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    t.cancel();
                    return;
                }
            };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        tracing::info!("shutdown requested; finishing the current batch");
        t.cancel();
    });
    token
}
