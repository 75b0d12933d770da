//! Connecting to PostgreSQL: timeouts on every session, and URLs that never
//! leak their password.

use anyhow::{Context, Result};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::str::FromStr;
use std::time::Duration;

/// Session settings applied to every connection the worker opens.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// `statement_timeout`: no single statement may hang the worker.
    pub statement_timeout: Duration,
    /// `lock_timeout`: never wait long on a row or table lock.
    pub lock_timeout: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            statement_timeout: Duration::from_secs(30),
            lock_timeout: Duration::from_secs(10),
        }
    }
}

/// The URL with its password replaced by `***`, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparseable URL>".into();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    match auth {
        Some(a) => match a.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://{a}@{host}"),
        },
        None => format!("{scheme}://{host}"),
    }
}

/// Parses `DATABASE_URL` and applies the session limits. The error never
/// repeats the URL (it may hold a password).
pub fn connect_options(url: &str, limits: SessionLimits) -> Result<PgConnectOptions> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        anyhow::bail!(
            "DATABASE_URL must be a postgres:// or postgresql:// URL (got {})",
            redact(url)
        );
    }
    let opts = PgConnectOptions::from_str(url).map_err(|e| {
        anyhow::anyhow!(
            "DATABASE_URL {} is not a valid URL: {}",
            redact(url),
            scrub(&e.to_string(), url)
        )
    })?;
    Ok(opts.application_name("matchmaker").options([
        ("statement_timeout", format!("{}", limits.statement_timeout.as_millis())),
        ("lock_timeout", format!("{}", limits.lock_timeout.as_millis())),
        ("idle_in_transaction_session_timeout", "120000".to_string()),
        // Server-side TCP keepalives: a worker host that vanishes without
        // closing its socket loses its session (and its event lock) in about
        // half a minute instead of the kernel's two hours.
        ("tcp_keepalives_idle", "10".to_string()),
        ("tcp_keepalives_interval", "5".to_string()),
        ("tcp_keepalives_count", "3".to_string()),
    ]))
}

/// Removes the URL's password from a message, in case a driver error echoes it.
pub fn scrub(message: &str, url: &str) -> String {
    match password_of(url) {
        Some(p) if !p.is_empty() => message.replace(&p, "***"),
        _ => message.to_string(),
    }
}

fn password_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let auth = rest.rsplit_once('@')?.0;
    Some(auth.split_once(':')?.1.to_string())
}

/// Opens a pool and checks that the database answers within `connect_timeout`.
pub async fn connect(opts: &PgConnectOptions, max_connections: u32, connect_timeout: Duration) -> Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(connect_timeout)
        .connect_with(opts.clone())
        .await
        .context("cannot connect to the database")?;
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact("nonsense"), "<unparseable URL>");
        assert_eq!(scrub("failed for secret", "postgres://u:secret@h/db"), "failed for ***");
    }

    #[test]
    fn bad_urls_are_rejected_without_echoing_secrets() {
        let e = connect_options("mysql://u:hunter2@h/db", SessionLimits::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("postgres://"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = connect_options("postgres://u:hunter2@h:notaport/db", SessionLimits::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!e.is_empty() && !e.contains("hunter2"), "{e}");
    }
}
