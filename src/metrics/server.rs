//! The daemon's HTTP listener (`--metrics-addr`): `/metrics`, `/healthz`,
//! `/readyz`. It shares the daemon's pool but never holds a connection
//! longer than [`DB_TIMEOUT`], so a scrape cannot starve the worker or hang
//! on a dead database.

use super::Metrics;
use crate::store::ops;
use crate::store::schema::{self, SchemaState};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sqlx::PgPool;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The longest a probe or a scrape waits on the database.
const DB_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct App {
    metrics: Arc<Metrics>,
    pool: PgPool,
    health_timeout: Duration,
}

/// Binds `addr` (a usage error when taken) and serves until `shutdown`.
/// Returns the bound address (port 0 picks one) and the server task.
pub async fn start(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    pool: PgPool,
    health_timeout: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (--metrics-addr): {e}"))?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(App {
            metrics,
            pool,
            health_timeout,
        });
    info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await });
        if let Err(e) = serve.await {
            warn!(error = %e, "the metrics listener stopped");
        }
    });
    Ok((bound, task))
}

/// Reads the queue gauges when they are older than their TTL; a failure
/// leaves the previous values (the scrape still answers).
pub async fn refresh_queue_gauges(metrics: &Metrics, pool: &PgPool) {
    if !metrics.queue_gauges_due() {
        return;
    }
    match tokio::time::timeout(DB_TIMEOUT, ops::queue_gauges(pool)).await {
        Ok(Ok(q)) => metrics.set_queue(&q),
        Ok(Err(e)) => warn!(error = %crate::telemetry::error_chain(&e), "could not read the queue gauges"),
        Err(_) => warn!("reading the queue gauges timed out"),
    }
}

async fn scrape(State(app): State<App>) -> Response {
    refresh_queue_gauges(&app.metrics, &app.pool).await;
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], app.metrics.encode()).into_response()
}

async fn healthz(State(app): State<App>) -> Response {
    match app.metrics.health().check(app.health_timeout) {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn readyz(State(app): State<App>) -> Response {
    let answer = tokio::time::timeout(DB_TIMEOUT, schema::state(&app.pool)).await;
    let why = match answer {
        Ok(Ok(SchemaState::Current)) => return (StatusCode::OK, "ready\n").into_response(),
        Ok(Ok(SchemaState::Behind(missing))) if missing.len() == schema::MIGRATOR.iter().count() => {
            "the schema is missing: run `matchmaker migrate`".to_string()
        }
        Ok(Ok(SchemaState::Behind(missing))) => format!(
            "{} migration(s) of this binary not applied (the oldest {}): run `matchmaker migrate`",
            missing.len(),
            missing.first().copied().unwrap_or_default()
        ),
        Ok(Ok(SchemaState::Ahead(v))) => {
            format!("the schema has migration {v}, newer than this binary: upgrade matchmaker")
        }
        Ok(Err(e)) => format!(
            "the database did not answer: {}",
            crate::telemetry::error_chain(&e).replace('\n', " ")
        ),
        Err(_) => format!("the database did not answer within {}s", DB_TIMEOUT.as_secs()),
    };
    (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response()
}
