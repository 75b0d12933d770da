//! Connecting to PostgreSQL: timeouts on every session, and URLs that never
//! leak their password.

use anyhow::{Context, Result};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
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

/// The URL with its password (in `user:password@` or `?password=`) replaced
/// by `***`, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparseable URL>".into();
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    let mut out = match auth {
        Some(a) => match a.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://{a}@{host}"),
        },
        None => format!("{scheme}://{host}"),
    };
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.to_ascii_lowercase().contains("pass") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
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
            "DATABASE_URL {} is not a valid URL: {} (percent-encode special characters in the user name \
             and password, e.g. # as %23)",
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
    let mut out = message.to_string();
    for secret in passwords_of(url) {
        if secret.len() >= 3 {
            out = out.replace(&secret, "***");
        }
    }
    out
}

/// Every password a URL carries, as written and percent-decoded.
fn passwords_of(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Some((_, rest)) = url.split_once("://") else {
        return found;
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, q),
        None => (rest, ""),
    };
    if let Some((auth, _)) = rest.rsplit_once('@') {
        if let Some((_, p)) = auth.split_once(':') {
            found.push(p.to_string());
        }
    }
    for kv in query.split('&') {
        if let Some((k, v)) = kv.split_once('=') {
            if k.to_ascii_lowercase().contains("pass") {
                found.push(v.to_string());
            }
        }
    }
    let decoded: Vec<String> = found.iter().map(|p| percent_decode(p)).collect();
    found.extend(decoded);
    found
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Opens a pool after one direct connection attempt, so that a refused
/// connection or a wrong password is reported as such at once rather than as
/// a pool timeout.
pub async fn connect(opts: &PgConnectOptions, max_connections: u32, connect_timeout: Duration) -> Result<PgPool> {
    let target = format!("{}:{}", opts.get_host(), opts.get_port());
    let first = tokio::time::timeout(connect_timeout, PgConnection::connect_with(opts))
        .await
        .map_err(|_| {
            anyhow::anyhow!("cannot connect to the database at {target}: no answer within {connect_timeout:?}")
        })?
        .map_err(|e| anyhow::anyhow!("cannot connect to the database at {target}: {e}"))?;
    let _ = first.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(connect_timeout)
        .connect_with(opts.clone())
        .await
        .with_context(|| format!("cannot connect to the database at {target}"))?;
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
        assert_eq!(
            redact("postgres://u@h/db?sslmode=require&password=s3cr%23t"),
            "postgres://u@h/db?sslmode=require&password=***"
        );
        assert_eq!(
            scrub("bad s3cr#t and s3cr%23t", "postgres://u@h/db?password=s3cr%23t"),
            "bad *** and ***"
        );
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
