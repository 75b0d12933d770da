//! matchmaker keeps every attendee of a networking event matched with the K
//! people they should meet, incrementally, on the event app's PostgreSQL.
//!
//! A tour of the modules, in the order data flows:
//!
//! - [`cli`]: the clap command line (one enum, flags readable from the environment).
//! - [`commands`]: one module per subcommand (`migrate`, `run`, `admin-start-matching`, `status`,
//!   `daemon`).
//! - [`worker`]: the loop: pick an event, lock it, claim a batch, refresh the snapshot,
//!   repair each attendee, write, complete; under a deadline.
//! - [`store`]: every SQL statement, grouped by table (queue, snapshot, matches, jobs and runs).
//! - [`matching`]: pure scoring, top-K and the bump rule; no I/O (start here to see how a
//!   match is decided).
//! - [`embeddings`]: the embedding provider (OpenAI-compatible HTTP) behind a
//!   content-hash cache in PostgreSQL, with retries and a circuit breaker.
//! - [`db`], [`telemetry`]: connecting (timeouts, redacted URLs) and logging.

pub mod cli;
pub mod commands;
pub mod config;
pub mod db;
pub mod embeddings;
pub mod matching;
pub mod store;
pub mod telemetry;
pub mod worker;

pub use store::schema::MIGRATOR;
