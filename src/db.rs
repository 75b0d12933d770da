//! Connecting to PostgreSQL: timeouts on every session, and URLs that never
//! leak their password.

use anyhow::{Context, Result};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool};
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

/// Parses `DATABASE_URL`. The error never repeats the URL (it may hold a
/// password).
///
/// Session settings are not sent as startup parameters (`options`,
/// `extra_float_digits`): PgBouncer refuses those it does not track, so they
/// are applied as `SET` statements ([`session_sql`]) once connected, through any pooler.
/// TLS comes from the URL as libpq spells it (`sslmode=require`,
/// `sslmode=verify-full&sslrootcert=/path/ca.crt`).
pub fn connect_options(url: &str) -> Result<PgConnectOptions> {
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
    Ok(opts.application_name("matchmaker").extra_float_digits(None))
}

/// The `SET` statements that give a session its limits, plus `extra`
/// settings of the caller's (names and values are the code's own, never
/// user input).
pub fn session_sql(limits: SessionLimits, extra: &[(&str, &str)]) -> String {
    let mut settings: Vec<(&str, String)> = vec![
        ("statement_timeout", limits.statement_timeout.as_millis().to_string()),
        ("lock_timeout", limits.lock_timeout.as_millis().to_string()),
        ("idle_in_transaction_session_timeout", "120000".to_string()),
        // Server-side TCP keepalives: a worker host that vanishes without
        // closing its socket loses its session (and its event lock) in about
        // half a minute instead of the kernel's two hours.
        ("tcp_keepalives_idle", "10".to_string()),
        ("tcp_keepalives_interval", "5".to_string()),
        ("tcp_keepalives_count", "3".to_string()),
    ];
    for (name, value) in extra {
        settings.retain(|(n, _)| n != name);
        settings.push((name, value.to_string()));
    }
    settings
        .iter()
        .map(|(name, value)| format!("SET {name} = '{}';", value.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Opens one connection and applies `session` (from [`session_sql`]; the
/// worker's lock connection). The simple query protocol: no prepared
/// statement, which a transaction-mode pooler would break before
/// [`refuse_transaction_pooler`] could say why.
pub async fn connect_one(opts: &PgConnectOptions, session: String) -> Result<PgConnection> {
    let mut conn = PgConnection::connect_with(opts).await?;
    // A query string without arguments goes out as a simple query.
    conn.execute(session.as_str())
        .await
        .context("applying the session settings")?;
    Ok(conn)
}

/// What the operator reads when `DATABASE_URL` leads to a transaction-mode
/// pooler.
pub const TRANSACTION_POOLER: &str = "DATABASE_URL leads to a connection pooler in transaction mode \
     (such as Supabase's port 6543 or PgBouncer with pool_mode = transaction), which hands each \
     transaction to any server session; matchmaker keeps session locks and prepared statements \
     across transactions, so connect directly or through the session pooler (port 5432)";

/// Refuses a transaction-mode (or statement-mode) pooler in front of the
/// database, given two fresh client connections `a` and `b` with nothing
/// set on them yet (behind such a pooler a `SET` would stay on a server
/// session that other clients then get).
///
/// `a` asks for its server session's pid, `b` opens a transaction and asks
/// for its own, `a` asks again. Connected directly or through a
/// session-mode pooler, each client connection owns one server session for
/// its whole life, so `a` sees the same pid twice and `b` another one: this
/// can never refuse them. Behind a transaction-mode pooler `a` owns no
/// session between its statements: the pooler gives `b`'s transaction an
/// idle session, which after `a`'s first statement is the one `a` just gave
/// back (PgBouncer reuses the most recently released one), and `a` then
/// gets another one. Three rounds leave a pooler that picks sessions some
/// other way little chance.
pub async fn refuse_transaction_pooler(a: &mut PgConnection, b: &mut PgConnection) -> Result<()> {
    let probe = async {
        for _ in 0..3 {
            let first = backend_pid(a).await?;
            b.execute("BEGIN").await?;
            let other = backend_pid(b).await?;
            let again = backend_pid(a).await?;
            b.execute("COMMIT").await?;
            if first != again || other == first {
                return Ok::<bool, sqlx::Error>(true);
            }
        }
        Ok(false)
    };
    match probe.await {
        Ok(false) => Ok(()),
        Ok(true) => anyhow::bail!("{TRANSACTION_POOLER}"),
        // A statement-mode pooler refuses the transaction; a
        // transaction-mode one can break the statements themselves.
        Err(e) if pooler_symptom(&e) => anyhow::bail!("{TRANSACTION_POOLER} ({e})"),
        Err(e) => Err(anyhow::Error::new(e).context("checking the connection")),
    }
}

async fn backend_pid(conn: &mut PgConnection) -> Result<i32, sqlx::Error> {
    use sqlx::Row;
    // A query string without arguments: the simple protocol, no prepared
    // statement.
    let row = conn.fetch_one("SELECT pg_backend_pid()::text").await?;
    let pid: String = row.try_get(0)?;
    pid.parse()
        .map_err(|_| sqlx::Error::Protocol(format!("pg_backend_pid() returned {pid:?}")))
}

/// Errors that a pooler in transaction or statement mode causes: prepared
/// statements that exist or vanish (SQLSTATE 42P05, 26000), or PgBouncer's
/// refusal of a transaction block.
fn pooler_symptom(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            matches!(d.code().as_deref(), Some("42P05" | "26000"))
                || d.message().contains("pooling mode")
                || d.message().contains("transaction blocks not allowed")
        }
        _ => false,
    }
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

/// Opens a pool after two direct connections, which report a refused
/// connection, a wrong password or an untrusted certificate as such at once
/// rather than as a pool timeout, and refuse a transaction-mode pooler (see
/// [`refuse_transaction_pooler`]) before any session setting is made; every
/// session of the pool gets the limits.
pub async fn connect(
    opts: &PgConnectOptions,
    limits: SessionLimits,
    max_connections: u32,
    connect_timeout: Duration,
) -> Result<PgPool> {
    let target = format!("{}:{}", opts.get_host(), opts.get_port());
    let bare = || async {
        tokio::time::timeout(connect_timeout, PgConnection::connect_with(opts))
            .await
            .map_err(|_| {
                anyhow::anyhow!("cannot connect to the database at {target}: no answer within {connect_timeout:?}")
            })?
            .map_err(|e| anyhow::anyhow!("cannot connect to the database at {target}: {}", one_line(&e)))
    };
    let (mut a, mut b) = (bare().await?, bare().await?);
    let probe = refuse_transaction_pooler(&mut a, &mut b).await;
    let _ = a.close().await;
    let _ = b.close().await;
    probe?;
    let sql: std::sync::Arc<str> = session_sql(limits, &[]).into();
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(connect_timeout)
        .after_connect(move |conn, _| {
            let sql = sql.clone();
            Box::pin(async move {
                conn.execute(&*sql).await?;
                Ok(())
            })
        })
        .connect_with(opts.clone())
        .await
        .map_err(|e| {
            if pooler_symptom(&e) {
                anyhow::anyhow!("{TRANSACTION_POOLER} ({e})")
            } else {
                anyhow::anyhow!("cannot connect to the database at {target}: {}", one_line(&e))
            }
        })?;
    Ok(pool)
}

/// A driver error on one line, with a hint where TLS is what failed.
fn one_line(e: &sqlx::Error) -> String {
    let text = e.to_string().replace('\n', " ");
    // rustls' refusals reach us as I/O errors ("invalid peer certificate").
    let tls = matches!(e, sqlx::Error::Tls(_)) || text.contains("certificate");
    if tls {
        format!("TLS: {text} (check sslmode and that sslrootcert names the CA that signed the server's certificate)")
    } else {
        text
    }
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
    fn session_settings_are_plain_set_statements() {
        let sql = session_sql(
            SessionLimits::default(),
            &[("lock_timeout", "250"), ("matchmaker.worker", "on")],
        );
        assert!(sql.starts_with("SET statement_timeout = '30000';"), "{sql}");
        assert_eq!(sql.matches("lock_timeout").count(), 1, "{sql}");
        assert!(sql.contains("SET lock_timeout = '250';"), "{sql}");
        assert!(sql.ends_with("SET matchmaker.worker = 'on';"), "{sql}");
        assert!(session_sql(SessionLimits::default(), &[("x.y", "it's")]).contains("'it''s'"));
    }

    #[test]
    fn bad_urls_are_rejected_without_echoing_secrets() {
        let e = connect_options("mysql://u:hunter2@h/db")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("postgres://"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = connect_options("postgres://u:hunter2@h:notaport/db")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!e.is_empty() && !e.contains("hunter2"), "{e}");
    }
}
