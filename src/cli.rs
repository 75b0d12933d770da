//! The command line: one clap enum, every flag also readable from the
//! environment.

use crate::commands::{admin_start, daemon, explain, migrate, pair, pause, retry_failed, run, status, worker_role};
use crate::db;
use crate::telemetry::error_chain;
use crate::telemetry::LogFormat;
use anyhow::Result;
use clap::{Parser, Subcommand};

/// Keeps every attendee of a networking event matched with the K people they
/// should meet, incrementally, on the event app's PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "matchmaker", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log line format (logs go to stderr).
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_enum,
        ignore_case = true,
        default_value = "pretty",
        global = true
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the embedded migrations to DATABASE_URL.
    Migrate(migrate::Args),
    /// One cron invocation: claim and process batches until the queue is
    /// drained or the deadline nears.
    Run(run::Args),
    /// Enqueue every active attendee of an event and reset its job.
    AdminStartMatching(admin_start::Args),
    /// Queue and job state.
    Status(status::Args),
    /// Long-running: drain on a cron schedule and at once on new queue rows
    /// (LISTEN/NOTIFY); graceful shutdown on SIGTERM/SIGINT.
    Daemon(daemon::Args),
    /// Create or update the worker's least-privilege login role (run as
    /// the database owner); the password comes from MATCHMAKER_WORKER_PASSWORD.
    WorkerRole(worker_role::Args),
    /// Hold an event still: its queue rows stay queued and are not claimed
    /// (the triggers keep enqueueing); waits for a batch in progress.
    Pause(pause::Args),
    /// Let a paused event's rows be claimed again.
    Resume(pause::Args),
    /// Put an event's failed rows back to pending with their attempts reset.
    RetryFailed(retry_failed::Args),
    /// An attendee's list with each score's terms, and why another attendee
    /// is or is not in it.
    Explain(explain::Args),
    /// Compute, write and print a meeting round (one partner each, no pair
    /// twice, fair sit-outs); an existing round is printed unless --force.
    Pair(pair::Args),
}

impl Command {
    /// Runs the command; returns the process exit code (0 but for `status
    /// --check`). Errors are scrubbed of the database password.
    pub async fn run(self) -> Result<u8> {
        let command = self;
        let url = match &command {
            Command::Migrate(a) => a.db.database_url.clone(),
            Command::Run(a) => a.db.database_url.clone(),
            Command::AdminStartMatching(a) => a.db.database_url.clone(),
            Command::Status(a) => a.db.database_url.clone(),
            Command::Daemon(a) => a.db.database_url.clone(),
            Command::WorkerRole(a) => a.db.database_url.clone(),
            Command::Pause(a) | Command::Resume(a) => a.db.database_url.clone(),
            Command::RetryFailed(a) => a.db.database_url.clone(),
            Command::Explain(a) => a.db.database_url.clone(),
            Command::Pair(a) => a.db.database_url.clone(),
        };
        crate::matching::kernel::check_forced_path().map_err(anyhow::Error::msg)?;
        let result = match command {
            Command::Migrate(a) => migrate::run(a).await.map(|()| 0),
            Command::Run(a) => run::run(a).await.map(|()| 0),
            Command::AdminStartMatching(a) => admin_start::run(a).await.map(|()| 0),
            Command::Status(a) => status::run(a).await,
            Command::Daemon(a) => daemon::run(a).await.map(|()| 0),
            Command::WorkerRole(a) => worker_role::run(a).await.map(|()| 0),
            Command::Pause(a) => pause::pause(a).await.map(|()| 0),
            Command::Resume(a) => pause::resume(a).await.map(|()| 0),
            Command::RetryFailed(a) => retry_failed::run(a).await.map(|()| 0),
            Command::Explain(a) => explain::run(a).await.map(|()| 0),
            Command::Pair(a) => pair::run(a).await.map(|()| 0),
        };
        // The store's errors say what to do themselves (a missing schema:
        // migrate first); the chain goes on one line, without the password.
        result.map_err(|e| anyhow::anyhow!(db::scrub(&error_chain(&e), &url)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
