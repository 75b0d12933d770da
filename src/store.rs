//! Every SQL statement the worker and the commands issue, grouped by table.
//!
//! Queries are runtime-checked (`sqlx::query_as` with bound parameters, never
//! string-built SQL) and live only here, behind typed functions: the
//! integration tests against a real PostgreSQL exercise every one of them,
//! and the crate builds on a fresh clone without a database or `.sqlx/` data.
//! Functions that write take an executor or a transaction from the caller, so
//! that one unit of work is one transaction.

pub mod events;
pub mod jobs;
pub mod matches;
pub mod queue;
pub mod roles;
pub mod snapshot;
pub mod status;
