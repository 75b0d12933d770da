//! `matchmaking_profile_embeddings`: the provider's vector per attendee, for
//! the participant row version it was computed from (see the worker's
//! embeddings module for why that keeps the lists exact).

use super::DbResult;
use anyhow::Result;
use sqlx::PgExecutor;
use uuid::Uuid;

/// Bios are cut to this many characters before rendering (the template cuts
/// the whole text to `embeddings::text::MAX_TEXT_CHARS` anyway).
const MAX_BIO_READ: i32 = 20_000;

/// The profile text of an attendee that needs a provider vector.
#[derive(Debug, sqlx::FromRow)]
pub struct TextRow {
    pub user_id: Uuid,
    /// `event_participants.change_xid` of the row version read.
    pub change_xid: String,
    pub algorithm: String,
    pub role: Option<String>,
    pub company: Option<String>,
    pub interests: Vec<String>,
    pub looking_for: Vec<String>,
    pub offering: Vec<String>,
    pub bio: Option<String>,
}

/// Of `users` (sorted, distinct), the active attendees with no application
/// embedding and no provider vector for their current row version, with
/// their texts.
pub async fn texts_to_embed(db: impl PgExecutor<'_>, event: Uuid, users: &[Uuid]) -> Result<Vec<TextRow>> {
    sqlx::query_as(
        "SELECT p.user_id, p.change_xid::text AS change_xid, e.algorithm, p.role, p.company,
                ARRAY(SELECT t FROM unnest(p.interests) t WHERE t IS NOT NULL) AS interests,
                ARRAY(SELECT t FROM unnest(p.looking_for) t WHERE t IS NOT NULL) AS looking_for,
                ARRAY(SELECT t FROM unnest(p.offering) t WHERE t IS NOT NULL) AS offering,
                left(p.bio, $3) AS bio
           FROM event_participants p JOIN events e ON e.id = p.event_id
          WHERE p.event_id = $1 AND p.user_id = ANY($2) AND p.status = 'active'
            AND coalesce(cardinality(p.embedding), 0) = 0
            AND NOT EXISTS (SELECT 1 FROM matchmaking_profile_embeddings pe
                             WHERE pe.event_id = p.event_id AND pe.user_id = p.user_id
                               AND pe.source_xid = p.change_xid)
          ORDER BY p.user_id",
    )
    .bind(event)
    .bind(users)
    .bind(MAX_BIO_READ)
    .fetch_all(db)
    .await
    .db("reading profile texts to embed")
}

/// One vector to store: the attendee, the row version it is for, the vector.
pub struct NewVector<'a> {
    pub user_id: Uuid,
    pub source_xid: &'a str,
    pub vector: &'a [f32],
}

/// Upserts vectors in one statement, stamping a fresh `change_xid` on each
/// so that delta reads see them as changes of their attendees.
pub async fn store(
    db: impl PgExecutor<'_>,
    event: Uuid,
    model: &str,
    dimensions: i32,
    vectors: &[NewVector<'_>],
) -> Result<()> {
    if vectors.is_empty() {
        return Ok(());
    }
    let (mut users, mut xids, mut starts, mut lens, mut flat) = (vec![], vec![], vec![], vec![], vec![]);
    for v in vectors {
        users.push(v.user_id);
        xids.push(v.source_xid);
        starts.push(i32::try_from(flat.len() + 1)?);
        lens.push(i32::try_from(v.vector.len())?);
        flat.extend_from_slice(v.vector);
    }
    sqlx::query(
        "INSERT INTO matchmaking_profile_embeddings AS pe
                (event_id, user_id, source_xid, embedding, model, dimensions)
         SELECT $1, i.user_id, i.xid::xid8, ($5::real[])[i.start : i.start + i.len - 1], $6, $7
           FROM unnest($2::uuid[], $3::text[], $4::int[], $8::int[]) AS i(user_id, xid, start, len)
         ON CONFLICT (event_id, user_id) DO UPDATE
            SET source_xid = EXCLUDED.source_xid, embedding = EXCLUDED.embedding,
                model = EXCLUDED.model, dimensions = EXCLUDED.dimensions,
                change_xid = pg_current_xact_id(), updated_at = now()",
    )
    .bind(event)
    .bind(&users)
    .bind(&xids)
    .bind(&starts)
    .bind(&flat)
    .bind(model)
    .bind(dimensions)
    .bind(&lens)
    .execute(db)
    .await
    .db("storing attendees' embeddings")?;
    Ok(())
}
