//! The least-privilege worker role: the login role an operator runs the
//! worker as, made a member of the `matchmaker_worker` group role that the
//! migrations grant exactly what the worker needs (see
//! `migrations/20261201000001_row_level_security.sql`).

use super::DbResult;
use anyhow::Result;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, Row};

/// The group role every worker login is a member of.
pub const WORKER_GROUP: &str = "matchmaker_worker";

/// PBKDF2 iterations of the password verifier (PostgreSQL's default).
const SCRAM_ITERATIONS: u32 = 4096;

/// What [`ensure_worker_login`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerLogin {
    pub created: bool,
    pub password_set: bool,
}

/// Creates the login role `name` (or takes the existing one), makes it a
/// member of [`WORKER_GROUP`] and, with a password, sets it as a SCRAM
/// verifier computed here, so the password itself never reaches the server
/// (nor its statement log). One transaction.
///
/// An existing role is taken only if it is what this function makes: a
/// plain login role with no attribute (superuser, CREATEROLE, CREATEDB,
/// REPLICATION, BYPASSRLS), a member of no role but [`WORKER_GROUP`], with
/// no members and owning nothing. Anything else (`anon`, `authenticated`,
/// the owner, a group role) would hand the worker's rights to whoever can
/// use that role, so it is refused, as are the names of Supabase's and our
/// own roles.
pub async fn ensure_worker_login(conn: &mut PgConnection, name: &str, password: Option<&str>) -> Result<WorkerLogin> {
    if !valid_role_name(name) {
        anyhow::bail!(
            "{name:?} is not a valid role name here: lower-case letters, digits and _, starting with a letter or _, \
             at most 63 characters"
        );
    }
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let group: Option<bool> = sqlx::query_scalar("SELECT true FROM pg_roles WHERE rolname = $1")
        .bind(WORKER_GROUP)
        .fetch_optional(&mut *tx)
        .await
        .db("looking up the worker group role")?;
    if group.is_none() {
        anyhow::bail!("role {WORKER_GROUP} does not exist: run `matchmaker migrate` first");
    }
    if reserved_role_name(name) {
        anyhow::bail!("{name} is a role of Supabase's, PostgreSQL's or matchmaker's own; pick another name");
    }
    // Why an existing role is not a plain worker login, if it is not.
    let existing = sqlx::query(
        "SELECT CASE
                    WHEN r.rolsuper OR r.rolbypassrls THEN 'is a superuser or bypasses row-level security'
                    WHEN r.rolcreaterole OR r.rolcreatedb OR r.rolreplication
                        THEN 'may create roles or databases, or replicate'
                    WHEN NOT r.rolcanlogin THEN 'is a group role (it cannot log in)'
                    WHEN EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.roleid = r.oid)
                        THEN 'has members, who would get the worker''s rights'
                    WHEN EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                                  WHERE m.member = r.oid AND g.rolname <> $2)
                        THEN 'is a member of other roles'
                    WHEN EXISTS (SELECT 1 FROM pg_shdepend d WHERE d.refobjid = r.oid AND d.deptype = 'o')
                        THEN 'owns objects'
                END
           FROM pg_roles r WHERE r.rolname = $1",
    )
    .bind(name)
    .bind(WORKER_GROUP)
    .fetch_optional(&mut *tx)
    .await
    .db("looking up the role")?;
    let created = match existing {
        Some(row) => {
            let problem: Option<String> = row.try_get(0)?;
            if let Some(why) = problem {
                anyhow::bail!("role {name} {why}; the worker's role must be a plain login: pick another name");
            }
            false
        }
        None => true,
    };
    // Utility statements take no parameters: the server quotes the name.
    let mut statements = Vec::new();
    if created {
        statements.push(format_sql(
            &mut tx,
            "SELECT format('CREATE ROLE %I LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS', $1::text)",
            name,
            None,
        )
        .await?);
    } else {
        statements.push(
            format_sql(
                &mut tx,
                "SELECT format('ALTER ROLE %I LOGIN INHERIT', $1::text)",
                name,
                None,
            )
            .await?,
        );
    }
    statements.push(
        format_sql(
            &mut tx,
            "SELECT format('GRANT matchmaker_worker TO %I', $1::text)",
            name,
            None,
        )
        .await?,
    );
    if let Some(password) = password {
        let verifier = scram_verifier(password, &rand::random::<[u8; 16]>(), SCRAM_ITERATIONS);
        statements.push(
            format_sql(
                &mut tx,
                "SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)",
                name,
                Some(&verifier),
            )
            .await?,
        );
    }
    for sql in &statements {
        sqlx::Executor::execute(&mut *tx, sql.as_str())
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d) if d.code().as_deref() == Some("42501") => anyhow::anyhow!(
                    "this role may not create or change roles ({}): run worker-role as the database owner \
                     (postgres on Supabase) or a role with CREATEROLE",
                    d.message()
                ),
                _ => anyhow::Error::new(crate::store::StoreError::from(e)).context("creating the worker role"),
            })?;
    }
    tx.commit().await?;
    Ok(WorkerLogin {
        created,
        password_set: password.is_some(),
    })
}

async fn format_sql(conn: &mut PgConnection, template: &str, name: &str, value: Option<&str>) -> Result<String> {
    let mut q = sqlx::query_scalar::<_, String>(template).bind(name);
    if let Some(v) = value {
        q = q.bind(v);
    }
    q.fetch_one(conn).await.db("quoting the role statement")
}

/// Names that belong to Supabase (its API roles, its admin roles), to
/// PostgreSQL, or to matchmaker's own group roles.
fn reserved_role_name(name: &str) -> bool {
    matches!(
        name,
        "anon" | "authenticated" | "service_role" | "authenticator" | "postgres" | "dashboard_user" | "pgbouncer"
    ) || ["supabase_", "matchmaker_worker", "matchmaker_attendee", "pg_"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// A role name that needs no quoting to be read back (and is one
/// PostgreSQL accepts unquoted).
fn valid_role_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
        && !name.starts_with("pg_")
}

/// The `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` verifier
/// PostgreSQL stores for a password (RFC 5802 and 7677; what psql's
/// `\password` sends). The password is SASLprep-normalised first, as
/// PostgreSQL and libpq do, falling back to the raw bytes where SASLprep
/// refuses the text (as they do too).
pub fn scram_verifier(password: &str, salt: &[u8], iterations: u32) -> String {
    let prepared = stringprep::saslprep(password).unwrap_or(std::borrow::Cow::Borrowed(password));
    let salted = pbkdf2_sha256(prepared.as_bytes(), salt, iterations);
    let client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac_sha256(&salted, b"Server Key");
    let b64 = base64::engine::general_purpose::STANDARD;
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        b64.encode(salt),
        b64.encode(stored_key),
        b64.encode(server_key)
    )
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA256 with one output block (32 bytes, as SCRAM uses it).
fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac_sha256(password, &block);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac_sha256(password, &u);
        for (o, x) in out.iter_mut().zip(u) {
            *o ^= x;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbkdf2_matches_the_published_vectors() {
        // RFC 7914, section 11 (PBKDF2-HMAC-SHA256, c = 1, first 32 bytes).
        let out = pbkdf2_sha256(b"passwd", b"salt", 1);
        assert_eq!(out[..8], [0x55, 0xac, 0x04, 0x6e, 0x56, 0xe3, 0x08, 0x9f], "{out:02x?}");
    }

    #[test]
    fn scram_verifier_has_postgres_shape() {
        let v = scram_verifier("pencil", &[7u8; 16], 4096);
        let (head, keys) = v
            .split_once('$')
            .and_then(|(h, r)| r.split_once('$').map(|(s, k)| ((h, s), k)))
            .unwrap();
        assert_eq!(head.0, "SCRAM-SHA-256");
        assert!(head.1.starts_with("4096:"));
        assert_eq!(keys.split(':').count(), 2);
        assert_ne!(v, scram_verifier("pencil", &[8u8; 16], 4096), "the salt matters");
        // SASLprep maps a non-breaking space to a space, as the server does.
        assert_eq!(
            scram_verifier("a\u{a0}b", &[7u8; 16], 16),
            scram_verifier("a b", &[7u8; 16], 16)
        );
    }

    #[test]
    fn role_names_are_checked() {
        assert!(valid_role_name("matchmaker_app"));
        assert!(valid_role_name("_w1"));
        for bad in ["", "App", "1abc", "a-b", "pg_worker", "x\"; DROP", &"a".repeat(64)] {
            assert!(!valid_role_name(bad), "{bad:?}");
        }
        for reserved in [
            "anon",
            "authenticated",
            "service_role",
            "postgres",
            "supabase_admin",
            "matchmaker_worker",
        ] {
            assert!(reserved_role_name(reserved), "{reserved}");
        }
        assert!(!reserved_role_name("matchmaker_app"));
    }
}
