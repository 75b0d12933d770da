//! The integration tests, one binary (one link of the dependency tree
//! instead of one per file), against a real PostgreSQL: a fresh database per
//! test (`#[sqlx::test]`), the built binary spawned as separate worker
//! processes, every worker running as the least-privilege worker role.
//! `scripts/test.sh` starts what they need: PostgreSQL, a Supabase-like
//! cluster with TLS, and PgBouncer in both pool modes.
//!
//! - [`exactness`]: the product's first promise, under churn, concurrent
//!   and killed workers, a flaky provider, and the approximate path.
//! - [`queue`], [`triggers`]: claims, leases, takeovers, poison rows; what
//!   the triggers enqueue and remove.
//! - [`cli`], [`daemon`]: the binary as operators use it.
//! - [`explain`]: `matchmaker explain` against the stored lists.
//! - [`operations`]: metrics, probes, pause/resume, retry-failed, checks.
//! - [`embeddings`], [`embedding_worker`]: the provider against a loopback
//!   HTTP server, and wired into the worker.
//! - [`local_model`]: the in-process model (all-MiniLM-L6-v2) against a
//!   NumPy reference, deterministic, wired into the worker.
//! - [`snapshot`]: what a full read sends (packed copies of embeddings).
//! - [`security`], [`connections`]: who may read and write what, on Supabase
//!   and plain PostgreSQL; poolers and TLS.

#[allow(dead_code)]
mod helpers;

mod cli;
mod connections;
mod daemon;
mod embedding_worker;
mod embeddings;
mod exactness;
mod explain;
mod local_model;
mod operations;
mod pairing;
mod queue;
mod security;
mod snapshot;
mod triggers;
