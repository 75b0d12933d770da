//! Reading an event for scoring: settings, participants and exclusions (in
//! full or as a delta since a previous read), the current lists, and which
//! attendees still have queue work.

use crate::matching::ParticipantRow;
use anyhow::{Context, Result};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// The scoring settings of an event.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SettingsRow {
    pub algorithm: String,
    pub matches_per_user: i16,
    pub exclude_same_company: bool,
    pub embedding_dimensions: Option<i32>,
}

/// One row of `user_matches`, without the reasons.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MatchRow {
    pub user_id: Uuid,
    pub matched_user_id: Uuid,
    pub rank: i16,
    pub score: f32,
    pub algorithm_version: String,
}

/// Everything one batch reads, from one consistent database snapshot.
#[derive(Debug)]
pub struct Read {
    /// `pg_current_snapshot()` of this read, for the next delta.
    pub pg_snapshot: String,
    pub settings: SettingsRow,
    /// Every participant (full read) or those written since the previous
    /// snapshot (delta).
    pub participants: Vec<ParticipantRow>,
    pub participant_count: i64,
    pub exclusions: Vec<(Uuid, Uuid)>,
    pub exclusion_count: i64,
    pub lists: Vec<MatchRow>,
    /// Attendees with pending or processing rows other than `claimed`.
    pub dirty: Vec<Uuid>,
}

/// The participant columns, made decodable whatever the application wrote:
/// multi-dimensional text arrays and arrays not starting at index 1 are
/// flattened (`unnest` reads every element in order); a multi-dimensional
/// embedding is withheld and its number of dimensions reported instead, so
/// one malformed row never fails the read of a whole event. Only the first
/// `MAX_BIO_CHARS` (2000) characters of a bio are scored, so no more are sent.
const PARTICIPANT_COLUMNS: &str = "user_id, status, company, role, left(bio, 2000) AS bio,
    CASE WHEN interests IS NULL OR (array_ndims(interests) = 1 AND array_lower(interests, 1) = 1)
         THEN interests ELSE ARRAY(SELECT unnest(interests)) END AS interests,
    CASE WHEN looking_for IS NULL OR (array_ndims(looking_for) = 1 AND array_lower(looking_for, 1) = 1)
         THEN looking_for ELSE ARRAY(SELECT unnest(looking_for)) END AS looking_for,
    CASE WHEN offering IS NULL OR (array_ndims(offering) = 1 AND array_lower(offering, 1) = 1)
         THEN offering ELSE ARRAY(SELECT unnest(offering)) END AS offering,
    CASE WHEN array_ndims(embedding) > 1 THEN NULL
         WHEN array_lower(embedding, 1) <> 1 THEN ARRAY(SELECT unnest(embedding))
         ELSE embedding END AS embedding,
    coalesce(array_ndims(embedding), 1) AS embedding_ndims";

#[derive(sqlx::FromRow)]
struct PRow {
    user_id: Uuid,
    status: String,
    company: Option<String>,
    role: Option<String>,
    bio: Option<String>,
    interests: Option<Vec<Option<String>>>,
    looking_for: Option<Vec<Option<String>>>,
    offering: Option<Vec<Option<String>>>,
    embedding: Option<Vec<Option<f32>>>,
    embedding_ndims: i32,
}

impl From<PRow> for ParticipantRow {
    fn from(r: PRow) -> Self {
        ParticipantRow {
            user_id: r.user_id,
            active: r.status == "active",
            company: r.company,
            role: r.role,
            bio: r.bio,
            interests: r.interests,
            looking_for: r.looking_for,
            offering: r.offering,
            embedding: r.embedding,
            embedding_ndims: r.embedding_ndims,
        }
    }
}

/// Reads an event. With `since` (a previous [`Read::pg_snapshot`]),
/// participants and exclusions are limited to rows written by transactions
/// that were not yet visible in that snapshot; counts let the caller detect
/// deletions and fall back to a full read.
///
/// Why the delta is exact: every participant or exclusion row carries the id
/// of the transaction that last wrote it (`change_xid`, stamped by trigger).
/// A row is visible now but was not in the previous snapshot exactly when its
/// writer had not committed (or had not started) by then, which is what
/// `pg_visible_in_snapshot` answers. It is commit order, not clock or id
/// order, so a long transaction that commits late is still seen. Everything
/// is read in one REPEATABLE READ transaction, so the snapshot recorded for
/// the next delta is the one the rows were read with.
///
/// `None` when the event no longer exists.
pub async fn read(conn: &mut PgConnection, event: Uuid, since: Option<&str>, claimed: &[i64]) -> Result<Option<Read>> {
    let mut tx = conn.begin().await.context("starting the snapshot read")?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .context("setting the snapshot isolation")?;
    let head: Option<(String, i64, i64)> = sqlx::query_as(
        "SELECT pg_current_snapshot()::text,
                (SELECT count(*) FROM event_participants WHERE event_id = $1),
                (SELECT count(*) FROM match_exclusions WHERE event_id = $1)",
    )
    .bind(event)
    .fetch_optional(&mut *tx)
    .await
    .context("reading the snapshot")?;
    let Some((pg_snapshot, participant_count, exclusion_count)) = head else {
        return Ok(None);
    };
    let Some(settings) = sqlx::query_as::<_, SettingsRow>(
        "SELECT algorithm, matches_per_user, exclude_same_company, embedding_dimensions FROM events WHERE id = $1",
    )
    .bind(event)
    .fetch_optional(&mut *tx)
    .await
    .context("reading the event settings")?
    else {
        return Ok(None);
    };

    let participants: Vec<PRow> = match since {
        None => {
            sqlx::query_as(&format!(
                "SELECT {PARTICIPANT_COLUMNS} FROM event_participants WHERE event_id = $1"
            ))
            .bind(event)
            .fetch_all(&mut *tx)
            .await
        }
        Some(snap) => {
            sqlx::query_as(&format!(
                "SELECT {PARTICIPANT_COLUMNS} FROM event_participants
                  WHERE event_id = $1
                    AND change_xid >= pg_snapshot_xmin($2::text::pg_snapshot)
                    AND NOT pg_visible_in_snapshot(change_xid, $2::text::pg_snapshot)"
            ))
            .bind(event)
            .bind(snap)
            .fetch_all(&mut *tx)
            .await
        }
    }
    .context("reading participants")?;

    let exclusions: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT user_id, excluded_user_id FROM match_exclusions
          WHERE event_id = $1
            AND ($2::text IS NULL
                 OR (change_xid >= pg_snapshot_xmin($2::text::pg_snapshot)
                     AND NOT pg_visible_in_snapshot(change_xid, $2::text::pg_snapshot)))",
    )
    .bind(event)
    .bind(since)
    .fetch_all(&mut *tx)
    .await
    .context("reading exclusions")?;

    let lists: Vec<MatchRow> = sqlx::query_as(
        "SELECT user_id, matched_user_id, rank, score, algorithm_version
           FROM user_matches WHERE event_id = $1 ORDER BY user_id, rank",
    )
    .bind(event)
    .fetch_all(&mut *tx)
    .await
    .context("reading current matches")?;

    let dirty: Vec<Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT user_id FROM matchmaking_queue
          WHERE event_id = $1 AND status IN ('pending', 'processing') AND id <> ALL($2)",
    )
    .bind(event)
    .bind(claimed)
    .fetch_all(&mut *tx)
    .await
    .context("reading queued attendees")?;
    tx.commit().await.context("ending the snapshot read")?;

    Ok(Some(Read {
        pg_snapshot,
        settings,
        participants: participants.into_iter().map(Into::into).collect(),
        participant_count,
        exclusions,
        exclusion_count,
        lists,
        dirty,
    }))
}
