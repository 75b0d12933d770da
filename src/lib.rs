//! matchmaker keeps every attendee of a networking event matched with the K
//! people they should meet, incrementally, on the event app's PostgreSQL.
//!
//! A tour of the modules, in the order data flows:
//!
//! - `cli`: the clap command line (one enum) and its dispatch.
//! - `commands`: one module per subcommand, each with its `Args` and `run`.
//! - [`config`]: flags shared by several commands (database, worker,
//!   embedding provider) and the duration syntax.
//! - [`worker`]: the loop (which event next), the batch pipeline (claim →
//!   read → score → write → finish) and the events kept in memory.
//! - [`embeddings`]: the embedding provider (OpenAI-compatible HTTP) behind
//!   a content-hash cache, with retries and a circuit breaker.
//! - [`store`]: every SQL statement, grouped by table, and the one error
//!   type callers branch on ([`store::StoreError`]).
//! - [`matching`]: pure scoring, top-K, the bump rule and the batch scorer;
//!   no I/O (start here to see how a match is decided).
//! - [`metrics`]: Prometheus metrics the worker records, the daemon's
//!   health, and the HTTP listener (`/metrics`, `/healthz`, `/readyz`).
//! - `db`, `telemetry`: connecting (session settings, the pooler check,
//!   redacted URLs) and logging.
//!
//! Dependencies point one way:
//!
//! ```text
//! cli → commands → config → worker → embeddings → store → matching
//!                                 ↘ store, matching, db
//! commands, worker → metrics → store
//! ```
//!
//! `matching` imports nothing of the others; `store` uses the core's plain
//! types (a participant row, a diff) and nothing else.

mod cli;
mod commands;
pub mod config;
mod db;
pub mod embeddings;
pub mod matching;
pub mod metrics;
pub mod store;
mod telemetry;
pub mod worker;

pub use cli::Cli;
pub use commands::status::render as render_status;
pub use store::schema::MIGRATOR;
pub use telemetry::{init as init_logging, LogFormat};
