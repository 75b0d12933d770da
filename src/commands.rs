//! One module per subcommand, each with its `Args` and one `run` function.

pub mod admin_start;
pub mod daemon;
pub mod explain;
pub mod migrate;
pub mod pair;
pub mod pause;
pub mod retry_failed;
pub mod run;
pub mod status;
pub mod worker_role;

use crate::config::DbArgs;
use crate::db;
use anyhow::Result;
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Connects for a command: parsed options (for the worker's lock connection)
/// and a pool.
pub async fn connect(args: &DbArgs, max_connections: u32) -> Result<(PgConnectOptions, PgPool)> {
    let opts = db::connect_options(&args.database_url)?;
    let pool = db::connect(&opts, args.limits(), max_connections, args.connect_timeout).await?;
    Ok((opts, pool))
}

/// The embedding provider the flags describe (one per process: it keeps
/// the breaker and, for a local model, the loaded weights), or `None`
/// without `EMBEDDINGS_URL` or `EMBEDDINGS_MODEL_DIR`.
pub fn embedder(args: &crate::config::EmbeddingArgs) -> Result<Option<std::sync::Arc<crate::embeddings::Embedder>>> {
    Ok(args.embedder()?.map(std::sync::Arc::new))
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
