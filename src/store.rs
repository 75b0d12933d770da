//! Every SQL statement the worker and the commands issue, grouped by table.
//!
//! Queries are runtime-checked (`sqlx::query_as` with bound parameters, never
//! string-built SQL) and live only here, behind typed functions: the
//! integration tests against a real PostgreSQL exercise every one of them,
//! and the crate builds on a fresh clone without a database or `.sqlx/` data.
//! Functions that write take an executor or a transaction from the caller, so
//! that one unit of work is one transaction.
//!
//! A failed statement comes back as an `anyhow::Error` whose cause is a
//! [`StoreError`]: callers branch on that (a lock conflict is retried for
//! free, a missing schema tells the operator to migrate, a deleted event
//! ends its batches), never on SQLSTATEs.

pub mod embedding_cache;
pub mod events;
pub mod jobs;
pub mod matches;
pub mod ops;
pub mod profile_embeddings;
pub mod queue;
pub mod roles;
pub mod rounds;
pub mod schema;
pub mod snapshot;
pub mod status;
pub mod vector_copies;

use uuid::Uuid;

/// What went wrong in the database, as far as callers act on it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A table, column or function of ours does not exist: the database was
    /// not migrated (or not to this version).
    #[error("{0} (the schema is missing or out of date: run `matchmaker migrate` first)")]
    SchemaMissing(#[source] sqlx::Error),
    /// A lock timeout, a deadlock or a serialization failure: nobody's data
    /// was at fault, and the work can simply be done again.
    #[error("{0}")]
    LockConflict(#[source] sqlx::Error),
    /// The event was deleted while it was being worked on.
    #[error("event {0} no longer exists")]
    EventGone(Uuid),
    /// Anything else.
    #[error("{0}")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let code = match &e {
            sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
            _ => None,
        };
        match code.as_deref() {
            // undefined_table, undefined_function, undefined_column
            Some("42P01" | "42883" | "42703") => StoreError::SchemaMissing(e),
            // lock_not_available, deadlock_detected, serialization_failure
            Some("55P03" | "40P01" | "40001") => StoreError::LockConflict(e),
            _ => StoreError::Database(e),
        }
    }
}

impl StoreError {
    /// The store error behind `e`, if a statement failed.
    pub fn of(e: &anyhow::Error) -> Option<&StoreError> {
        e.downcast_ref::<StoreError>()
    }

    /// Whether `e` is a lock conflict (see [`StoreError::LockConflict`]).
    pub fn is_lock_conflict(e: &anyhow::Error) -> bool {
        matches!(Self::of(e), Some(StoreError::LockConflict(_)))
    }

    /// Whether `e` is a unique violation (a concurrent insert of the same key).
    pub fn is_unique_violation(e: &anyhow::Error) -> bool {
        match Self::of(e) {
            Some(StoreError::Database(sqlx::Error::Database(d))) => d.code().as_deref() == Some("23505"),
            _ => false,
        }
    }

    /// Whether `e` says the schema is missing.
    pub fn is_schema_missing(e: &anyhow::Error) -> bool {
        matches!(Self::of(e), Some(StoreError::SchemaMissing(_)))
    }
}

/// `.db("what")`: a failed statement as a [`StoreError`] with context.
pub(crate) trait DbResult<T> {
    fn db(self, what: &'static str) -> anyhow::Result<T>;
}

impl<T> DbResult<T> for Result<T, sqlx::Error> {
    fn db(self, what: &'static str) -> anyhow::Result<T> {
        self.map_err(|e| anyhow::Error::new(StoreError::from(e)).context(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_survive_context_and_classify_by_kind() {
        let e: anyhow::Result<()> = Err(sqlx::Error::RowNotFound).db("reading");
        let e = e.map_err(|e| e.context("outer")).expect_err("an error");
        assert!(matches!(StoreError::of(&e), Some(StoreError::Database(_))));
        assert!(!StoreError::is_lock_conflict(&e));
        let gone = anyhow::Error::new(StoreError::EventGone(Uuid::nil())).context("batch");
        assert!(matches!(StoreError::of(&gone), Some(StoreError::EventGone(_))));
    }
}
