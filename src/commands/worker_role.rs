//! `matchmaker worker-role`: creates (or updates) the login role the worker
//! runs as, a member of `matchmaker_worker` and nothing more.

use crate::config::DbArgs;
use crate::store::roles;
use anyhow::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// DATABASE_URL of a role that may create roles: the database owner
    /// (`postgres` on Supabase), not the worker.
    #[command(flatten)]
    pub db: DbArgs,
    /// Name of the worker's login role (created if missing).
    #[arg(long, env = "MATCHMAKER_WORKER_LOGIN", default_value = "matchmaker_app")]
    pub login: String,
}

/// Where the new role's password comes from (never a flag, which `ps` would
/// show): set as a SCRAM verifier, so the password itself is never sent.
/// Unset or empty: an existing password is left as it is.
pub const PASSWORD_ENV: &str = "MATCHMAKER_WORKER_PASSWORD";

pub async fn run(args: Args) -> Result<()> {
    let (_, pool) = super::connect(&args.db, 2).await?;
    let mut conn = pool.acquire().await?;
    let password = std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty());
    let done = roles::ensure_worker_login(&mut conn, &args.login, password.as_deref()).await?;
    println!(
        "role {}: {}, member of {}; {}",
        args.login,
        if done.created { "created" } else { "already existed" },
        roles::WORKER_GROUP,
        if done.password_set {
            "password set (SCRAM-SHA-256)"
        } else {
            "password unchanged (set MATCHMAKER_WORKER_PASSWORD to set one)"
        }
    );
    println!(
        "run the worker with DATABASE_URL=postgres://{}:<password>@<host>:5432/<database>",
        args.login
    );
    Ok(())
}
