//! `matchmaking_embedding_cache`: one vector per (model, dimensions, content
//! hash), shared by every event, run and worker.
//!
//! Three statements, each one round trip whatever the number of keys. None
//! needs a transaction, and none waits on another worker: readers take no
//! lock they would wait for, and writers only add rows that nobody changes
//! afterwards (a vector is a pure function of its key).

use super::DbResult;
use anyhow::{Context, Result};
use sqlx::PgExecutor;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The `dimensions` column: the requested length, or 0 when no `dimensions`
/// parameter is sent (the model's default length).
pub fn dimensions_column(dimensions: Option<u32>) -> i32 {
    dimensions.and_then(|d| i32::try_from(d).ok()).unwrap_or(0)
}

/// The cached vectors among `hashes`, by hash.
///
/// The same statement refreshes `last_used_at` (for [`prune`]) on the hits
/// whose stamp is more than an hour old, so a hot row is rewritten at most
/// once an hour rather than on every read.
///
/// Concurrency: the `SELECT` reads a snapshot and takes no lock. The
/// refresh locks rows with `FOR UPDATE SKIP LOCKED`: a row another worker
/// is refreshing (or inserting) right now is skipped rather than waited
/// for, so two readers never block each other and cannot deadlock whatever
/// order their keys come in. A skipped refresh only makes `last_used_at`
/// older than it could be, by less than the refresh interval.
pub async fn lookup(
    db: impl PgExecutor<'_>,
    model: &str,
    dimensions: i32,
    hashes: &[String],
) -> Result<HashMap<String, Vec<f32>>> {
    if hashes.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, Vec<f32>)> = sqlx::query_as(
        "WITH touched AS (
             UPDATE matchmaking_embedding_cache
                SET last_used_at = now()
              WHERE model = $1 AND dimensions = $2
                AND content_hash IN (
                    SELECT content_hash FROM matchmaking_embedding_cache
                     WHERE model = $1 AND dimensions = $2 AND content_hash = ANY($3)
                       AND last_used_at < now() - interval '1 hour'
                       FOR UPDATE SKIP LOCKED)
         )
         SELECT content_hash, embedding FROM matchmaking_embedding_cache
          WHERE model = $1 AND dimensions = $2 AND content_hash = ANY($3)",
    )
    .bind(model)
    .bind(dimensions)
    .bind(hashes)
    .fetch_all(db)
    .await
    .db("reading the embedding cache")?;
    Ok(rows.into_iter().collect())
}

/// Stores fresh vectors (already validated); returns how many rows were new.
///
/// The vectors travel as one flat `real[]` plus each row's start and length
/// (a `real[][]` would need equal lengths and `unnest` would flatten it), so
/// the whole set is one statement.
///
/// Concurrency: two workers that computed the same key insert the same
/// primary key; `ON CONFLICT DO NOTHING` lets the first commit win and the
/// other insert nothing (either vector is a correct answer for the key, and
/// every reader then sees the same one). The rows are inserted in
/// `content_hash` order, so two multi-row inserts that overlap wait for each
/// other's keys in the same order and cannot deadlock.
pub async fn store(
    db: impl PgExecutor<'_>,
    model: &str,
    dimensions: i32,
    rows: &[(String, Arc<[f32]>)],
) -> Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut hashes = Vec::with_capacity(rows.len());
    let mut starts = Vec::with_capacity(rows.len());
    let mut lengths = Vec::with_capacity(rows.len());
    let mut flat: Vec<f32> = Vec::with_capacity(rows.iter().map(|(_, v)| v.len()).sum());
    for (hash, v) in rows {
        let start = i32::try_from(flat.len() + 1).context("too many vectors for one cache write")?;
        let len = i32::try_from(v.len()).context("vector too long for the cache")?;
        hashes.push(hash.as_str());
        starts.push(start);
        lengths.push(len);
        flat.extend_from_slice(v);
    }
    let done = sqlx::query(
        "INSERT INTO matchmaking_embedding_cache (model, dimensions, content_hash, embedding)
         SELECT $1, $2, r.content_hash, ($4::real[])[r.first : r.first + r.len - 1]
           FROM unnest($3::text[], $5::int[], $6::int[]) AS r(content_hash, first, len)
          ORDER BY r.content_hash
         ON CONFLICT (model, dimensions, content_hash) DO NOTHING",
    )
    .bind(model)
    .bind(dimensions)
    .bind(&hashes)
    .bind(&flat)
    .bind(&starts)
    .bind(&lengths)
    .execute(db)
    .await
    .db("writing the embedding cache")?;
    Ok(done.rows_affected())
}

/// Deletes vectors not read for `unused_for` (at least an hour, the
/// granularity of `last_used_at`); returns how many.
///
/// Concurrency: a worker that read a row just before it is deleted still
/// holds the vector; one that misses it computes it again and re-inserts
/// it. Either way the answer is the same, so no lock is needed.
pub async fn prune(db: impl PgExecutor<'_>, unused_for: Duration) -> Result<u64> {
    let seconds = unused_for.max(Duration::from_secs(3600)).as_secs_f64();
    let done =
        sqlx::query("DELETE FROM matchmaking_embedding_cache WHERE last_used_at < now() - make_interval(secs => $1)")
            .bind(seconds)
            .execute(db)
            .await
            .db("pruning the embedding cache")?;
    Ok(done.rows_affected())
}
