//! Writing `user_matches` as a diff, so rows that did not change keep their
//! identity (applications attach accept/decline to them). The diff itself
//! is computed by the pure core (`matching::batch::diff`).

use super::DbResult;
use crate::matching::batch::Diff;
use anyhow::Result;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

/// Applies a diff in the caller's transaction: three statements whatever its
/// size. The caller holds the event's advisory lock, and every other writer
/// of these lists (the leave and exclusion triggers) takes it too, so nothing
/// else changes the lists between the read the diff was computed from and
/// this write.
pub async fn apply(tx: &mut Transaction<'_, Postgres>, event: Uuid, algorithm: &str, diff: &Diff) -> Result<()> {
    if !diff.delete.is_empty() {
        let (users, matched): (Vec<Uuid>, Vec<Uuid>) = diff.delete.iter().copied().unzip();
        sqlx::query(
            "DELETE FROM user_matches m
              USING unnest($2::uuid[], $3::uuid[]) AS d(user_id, matched_user_id)
              WHERE m.event_id = $1 AND m.user_id = d.user_id AND m.matched_user_id = d.matched_user_id",
        )
        .bind(event)
        .bind(&users)
        .bind(&matched)
        .execute(&mut **tx)
        .await
        .db("deleting matches")?;
    }
    if !diff.rerank.is_empty() {
        let users: Vec<Uuid> = diff.rerank.iter().map(|r| r.0).collect();
        let matched: Vec<Uuid> = diff.rerank.iter().map(|r| r.1).collect();
        let ranks: Vec<i16> = diff.rerank.iter().map(|r| r.2).collect();
        sqlx::query(
            "UPDATE user_matches m SET rank = r.rank, updated_at = now()
               FROM unnest($2::uuid[], $3::uuid[], $4::int2[]) AS r(user_id, matched_user_id, rank)
              WHERE m.event_id = $1 AND m.user_id = r.user_id AND m.matched_user_id = r.matched_user_id",
        )
        .bind(event)
        .bind(&users)
        .bind(&matched)
        .bind(&ranks)
        .execute(&mut **tx)
        .await
        .db("re-ranking matches")?;
    }
    if !diff.upsert.is_empty() {
        let users: Vec<Uuid> = diff.upsert.iter().map(|r| r.user_id).collect();
        let matched: Vec<Uuid> = diff.upsert.iter().map(|r| r.matched_user_id).collect();
        let ranks: Vec<i16> = diff.upsert.iter().map(|r| r.rank).collect();
        let scores: Vec<f32> = diff.upsert.iter().map(|r| r.score).collect();
        let reasons: Vec<&str> = diff.upsert.iter().map(|r| r.reasons.as_str()).collect();
        // Rows whose values are all unchanged are not rewritten (the WHERE),
        // so their updated_at still says when the match last changed.
        sqlx::query(
            "INSERT INTO user_matches AS m
                    (event_id, user_id, matched_user_id, rank, score, algorithm_version, reasons)
             SELECT $1, u.user_id, u.matched_user_id, u.rank, u.score, $7, u.reasons::jsonb
               FROM unnest($2::uuid[], $3::uuid[], $4::int2[], $5::float4[], $6::text[])
                    AS u(user_id, matched_user_id, rank, score, reasons)
             ON CONFLICT (event_id, user_id, matched_user_id) DO UPDATE
                SET rank = EXCLUDED.rank, score = EXCLUDED.score,
                    algorithm_version = EXCLUDED.algorithm_version, reasons = EXCLUDED.reasons,
                    updated_at = now()
              WHERE (m.rank, m.score, m.algorithm_version, m.reasons)
                    IS DISTINCT FROM (EXCLUDED.rank, EXCLUDED.score, EXCLUDED.algorithm_version, EXCLUDED.reasons)",
        )
        .bind(event)
        .bind(&users)
        .bind(&matched)
        .bind(&ranks)
        .bind(&scores)
        .bind(&reasons)
        .bind(algorithm)
        .execute(&mut **tx)
        .await
        .db("writing matches")?;
    }
    Ok(())
}
