//! `matchmaking_vector_copies`: the application's own embeddings packed as
//! bytea, per participant row version, so that the next full read of the
//! event sends bytes instead of `real[]` (see the migration for why that is
//! exact and what it saves).

use super::snapshot::{pack, Read};
use super::DbResult;
use anyhow::Result;
use sqlx::PgConnection;
use uuid::Uuid;

/// Copies written per statement (about 3 MB at 384 dimensions).
const CHUNK: usize = 2_000;

/// Writes the copies a full read found missing or stale ([`Read::uncopied`]),
/// a statement per [`CHUNK`], each committed on its own; a vector with a
/// NULL element has no copy (it is malformed anyway). Returns how many rows
/// were written.
///
/// Safe under concurrency without any lock: a copy is keyed by the row
/// version it was read at, so two workers racing on one attendee write
/// copies that are each right for their version, and the read uses only the
/// one matching the current version. An older version overwriting a newer
/// one (workers with different snapshots) only makes the next read fall back
/// to the `real[]`. On an error the copies already committed stay, and the
/// caller goes on without the rest.
pub async fn write(conn: &mut PgConnection, event: Uuid, read: &Read) -> Result<usize> {
    let mut written = 0;
    for chunk in read.uncopied.chunks(CHUNK) {
        let mut users = Vec::with_capacity(chunk.len());
        let mut xids = Vec::with_capacity(chunk.len());
        let mut vectors = Vec::with_capacity(chunk.len());
        for u in chunk {
            let Some(row) = read.participants.get(u.index) else {
                continue;
            };
            let Some(bytes) = row.embedding.as_deref().and_then(pack) else {
                continue;
            };
            users.push(row.user_id);
            xids.push(u.change_xid.as_str());
            vectors.push(bytes);
        }
        // The WHERE keeps a copy already made from the same row version
        // (the same bytes) from being rewritten.
        let done = sqlx::query(
            "INSERT INTO matchmaking_vector_copies AS c (event_id, user_id, source_xid, vector)
             SELECT $1, u.user_id, u.xid::xid8, u.vector
               FROM unnest($2::uuid[], $3::text[], $4::bytea[]) AS u(user_id, xid, vector)
             ON CONFLICT (event_id, user_id) DO UPDATE
                SET source_xid = EXCLUDED.source_xid, vector = EXCLUDED.vector
              WHERE c.source_xid <> EXCLUDED.source_xid",
        )
        .bind(event)
        .bind(&users)
        .bind(&xids)
        .bind(&vectors)
        .execute(&mut *conn)
        .await
        .db("writing vector copies")?;
        written += done.rows_affected() as usize;
    }
    Ok(written)
}
