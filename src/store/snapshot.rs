//! Reading an event for scoring: settings, participants and exclusions (in
//! full or as a delta since a previous read), the current lists, and which
//! attendees still have queue work.

use super::DbResult;
use crate::matching::ParticipantRow;
use anyhow::Result;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgTypeInfo, PgValueFormat, PgValueRef, Postgres};
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

/// What the caller already holds of an event, from a previous [`read`].
#[derive(Debug, Clone, Copy)]
pub struct Since<'a> {
    /// [`Read::pg_snapshot`] of that read.
    pub pg_snapshot: &'a str,
    /// The event version the caller's lists and open rows correspond to.
    pub version: i64,
    /// The highest queue row id the caller has seen.
    pub queue_seen: i64,
}

/// Everything one batch reads, from one consistent database snapshot.
#[derive(Debug)]
pub struct Read {
    /// `pg_current_snapshot()` of this read, for the next delta.
    pub pg_snapshot: String,
    pub settings: SettingsRow,
    /// `matchmaking_event_state.version` (0 before the first bump).
    pub version: i64,
    /// Every participant (full read) or those written since the previous
    /// snapshot (delta).
    pub participants: Vec<ParticipantRow>,
    /// Full reads: the participants whose own embedding was sent as a
    /// `real[]` because no copy matched their row version (write them with
    /// [`super::vector_copies::write`], which skips one with a NULL element).
    pub uncopied: Vec<Uncopied>,
    /// Full reads: how many embeddings came from their copies.
    pub copies_used: usize,
    /// Every exclusion (full read) or those written since (delta).
    pub exclusions: Vec<(Uuid, Uuid)>,
    /// Present on a full read, or when the version moved since the caller's:
    /// the caller's lists and open rows are stale.
    pub reloaded: Option<Reloaded>,
    /// Delta reads: open queue rows (pending or processing) with an id above
    /// the caller's `queue_seen`.
    pub new_open_rows: Vec<(i64, Uuid)>,
}

/// A participant of a full read without a copy of their own embedding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncopied {
    /// Index in [`Read::participants`].
    pub index: usize,
    /// The row version the embedding was read at (`change_xid`, as text).
    pub change_xid: String,
}

/// The parts of an event that are read again when its version moved.
#[derive(Debug)]
pub struct Reloaded {
    pub lists: Vec<MatchRow>,
    /// Every open queue row (pending or processing): (row id, attendee).
    pub open_rows: Vec<(i64, Uuid)>,
    pub participant_count: i64,
    pub exclusion_count: i64,
}

/// The participant columns, made decodable whatever the application wrote:
/// multi-dimensional text arrays and arrays not starting at index 1 are
/// flattened (`unnest` reads every element in order); a multi-dimensional
/// embedding is withheld and its number of dimensions reported instead, so
/// one malformed row never fails the read of a whole event. When the
/// application supplied no embedding (NULL or empty), the provider's vector
/// for this very row version is used (`matchmaking_profile_embeddings`, see
/// the worker's `embeddings` module). Only the first
/// `MAX_BIO_CHARS` (2000) characters of a bio are scored, so no more are sent.
/// (Macros, so that the full read can splice them into its own columns.)
macro_rules! text_columns {
    () => {
        "user_id, status, company, role, left(bio, 2000) AS bio,
    CASE WHEN interests IS NULL OR (array_ndims(interests) = 1 AND array_lower(interests, 1) = 1)
         THEN interests ELSE ARRAY(SELECT unnest(interests)) END AS interests,
    CASE WHEN looking_for IS NULL OR (array_ndims(looking_for) = 1 AND array_lower(looking_for, 1) = 1)
         THEN looking_for ELSE ARRAY(SELECT unnest(looking_for)) END AS looking_for,
    CASE WHEN offering IS NULL OR (array_ndims(offering) = 1 AND array_lower(offering, 1) = 1)
         THEN offering ELSE ARRAY(SELECT unnest(offering)) END AS offering"
    };
}
/// The arms of the embedding's `CASE` (see [`PARTICIPANT_COLUMNS`]).
macro_rules! embedding_arms {
    () => {
        "WHEN coalesce(cardinality(embedding), 0) = 0 THEN coalesce((
             SELECT pe.embedding FROM matchmaking_profile_embeddings pe
              WHERE pe.event_id = event_participants.event_id AND pe.user_id = event_participants.user_id
                AND pe.source_xid = event_participants.change_xid), embedding)
         WHEN array_ndims(embedding) > 1 THEN NULL
         WHEN array_lower(embedding, 1) <> 1 THEN ARRAY(SELECT unnest(embedding))
         ELSE embedding END"
    };
}
/// The application's own embedding is what the read sends unchanged: a
/// non-empty flat array starting at index 1 (the only kind that has copies).
macro_rules! own_flat {
    () => {
        "coalesce(cardinality(embedding) > 0 AND array_ndims(embedding) = 1 AND array_lower(embedding, 1) = 1, false)"
    };
}

/// The participant columns of a delta read (see [`text_columns`]).
const PARTICIPANT_COLUMNS: &str = concat!(
    text_columns!(),
    ",\n    CASE ",
    embedding_arms!(),
    " AS embedding,\n    coalesce(array_ndims(embedding), 1) AS embedding_ndims"
);

/// Every participant of event `$1`, with the packed copy of the
/// application's own embedding where one was made from this very row
/// version (`matchmaking_vector_copies`, see its migration): the `real[]` is
/// then not sent at all, which is most of what a full read costs the server.
/// A copy of another version is not joined, so the row reads as before.
/// `own_flat` and `change_xid` tell the worker which copies to write.
const FULL_READ: &str = concat!(
    "SELECT ",
    text_columns!(),
    ",\n    CASE WHEN copy.vector IS NOT NULL THEN NULL ",
    embedding_arms!(),
    " AS embedding,\n    coalesce(array_ndims(embedding), 1) AS embedding_ndims,
    copy.vector AS packed, ",
    own_flat!(),
    " AS own_flat, change_xid::text AS change_xid
  FROM event_participants
  LEFT JOIN (SELECT event_id AS copy_event, user_id AS copy_user, source_xid AS copy_xid, vector
               FROM matchmaking_vector_copies) copy
         ON copy.copy_event = event_participants.event_id AND copy.copy_user = event_participants.user_id
        AND copy.copy_xid = event_participants.change_xid AND ",
    own_flat!(),
    "
 WHERE event_participants.event_id = $1"
);

/// Provider embeddings written since the snapshot `$2` (event `$1`): such an
/// attendee's effective profile changed even though their row did not.
const EMBEDDED_SINCE: &str = "SELECT 1 FROM matchmaking_profile_embeddings pe
     WHERE pe.event_id = $1 AND pe.change_xid >= pg_snapshot_xmin($2::text::pg_snapshot)
       AND NOT pg_visible_in_snapshot(pe.change_xid, $2::text::pg_snapshot)";
const EMBEDDED_SINCE_USERS: &str = "SELECT pe.user_id FROM matchmaking_profile_embeddings pe
     WHERE pe.event_id = $1 AND pe.change_xid >= pg_snapshot_xmin($2::text::pg_snapshot)
       AND NOT pg_visible_in_snapshot(pe.change_xid, $2::text::pg_snapshot)";

/// A `real[]` decoded in one pass over its binary form. sqlx's generic
/// array decoding costs about 30 ns per element, a second for the 38 million
/// elements of a 100,000-attendee event with 384 dimensions, on every load.
/// The text format (never used by this crate's queries) goes to sqlx.
struct Floats(Vec<Option<f32>>);

impl sqlx::Type<Postgres> for Floats {
    fn type_info() -> PgTypeInfo {
        <Vec<Option<f32>> as sqlx::Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <Vec<Option<f32>> as sqlx::Type<Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for Floats {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        if value.format() != PgValueFormat::Binary {
            return Ok(Floats(<Vec<Option<f32>> as sqlx::Decode<Postgres>>::decode(value)?));
        }
        decode_floats(value.as_bytes()?).map(Floats)
    }
}

/// The binary array format: dimensions, a null flag, the element type,
/// (size, lower bound) per dimension, then each element as a length (-1 for
/// NULL) and its bytes. Elements of every dimension come in order.
fn decode_floats(mut buf: &[u8]) -> Result<Vec<Option<f32>>, BoxDynError> {
    fn take<const N: usize>(buf: &mut &[u8]) -> Result<[u8; N], BoxDynError> {
        let (head, rest) = buf.split_first_chunk::<N>().ok_or("truncated real[] value")?;
        *buf = rest;
        Ok(*head)
    }
    let ndim = i32::from_be_bytes(take(&mut buf)?);
    let _has_nulls = take::<4>(&mut buf)?;
    let element = u32::from_be_bytes(take(&mut buf)?);
    if element != 700 {
        return Err(format!("expected real[] elements, found type oid {element}").into());
    }
    let mut len = 1usize;
    for _ in 0..ndim.max(0) {
        let size = i32::from_be_bytes(take(&mut buf)?);
        let _lower = take::<4>(&mut buf)?;
        len = len.saturating_mul(usize::try_from(size).map_err(|_| "negative real[] dimension")?);
    }
    if ndim <= 0 {
        len = 0;
    }
    // Each element takes at least its 4-byte length.
    let mut out = Vec::with_capacity(len.min(buf.len() / 4));
    for _ in 0..len {
        match i32::from_be_bytes(take(&mut buf)?) {
            -1 => out.push(None),
            4 => out.push(Some(f32::from_be_bytes(take(&mut buf)?))),
            n => return Err(format!("a real[] element of {n} bytes").into()),
        }
    }
    Ok(out)
}

/// A `matchmaking_vector_copies.vector`: float4 elements, little-endian,
/// in order (what [`pack`] writes).
struct Packed(Vec<Option<f32>>);

impl sqlx::Type<Postgres> for Packed {
    fn type_info() -> PgTypeInfo {
        <Vec<u8> as sqlx::Type<Postgres>>::type_info()
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for Packed {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        let bytes = <&[u8] as sqlx::Decode<Postgres>>::decode(value)?;
        unpack(bytes).map(Packed)
    }
}

/// The bytes of a packed copy of `v`, every element present (see [`Packed`]).
pub fn pack(v: &[Option<f32>]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(v.len() * 4);
    for x in v {
        out.extend_from_slice(&(*x)?.to_le_bytes());
    }
    Some(out)
}

fn unpack(bytes: &[u8]) -> Result<Vec<Option<f32>>, BoxDynError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return Err(format!("a packed vector of {} bytes", bytes.len()).into());
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| Some(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect())
}

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
    embedding: Option<Floats>,
    embedding_ndims: i32,
    /// Full reads only (see [`FULL_READ`]).
    #[sqlx(default)]
    packed: Option<Packed>,
    #[sqlx(default)]
    own_flat: bool,
    #[sqlx(default)]
    change_xid: String,
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
            embedding: r.packed.map(|p| p.0).or(r.embedding.map(|f| f.0)),
            embedding_ndims: r.embedding_ndims,
        }
    }
}

/// Reads an event. With `since`, participants and exclusions are limited to
/// rows written by transactions that were not yet visible in that snapshot,
/// and queue rows to those above `since.queue_seen`; the lists and every open
/// row are read again only when the event's version moved (see
/// `migrations/*_event_version.sql`), with counts that let the caller detect
/// deleted rows and fall back to a full read.
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
/// Why an unchanged version makes the cached lists and open rows current:
/// the caller holds the event lock, and every transaction that writes the
/// lists or closes queue rows bumps the version (batches explicitly,
/// everyone else through triggers). Open rows it has not seen can only be
/// new ones; a new row committed out of id order may be missed until the
/// next reload, which only makes the caller treat that attendee as clean
/// and bump their list needlessly, never the reverse.
///
/// `None` when the event no longer exists.
pub async fn read(conn: &mut PgConnection, event: Uuid, since: Option<Since<'_>>) -> Result<Option<Read>> {
    // The common case needs one statement: nothing moved since the caller's
    // read. One statement sees one snapshot, so its `pg_current_snapshot()`
    // is the one its (empty) deltas were computed against.
    if let Some(since) = since {
        let Some(head) = head(&mut *conn, event, Some(since)).await? else {
            return Ok(None);
        };
        if head.version == since.version && !head.participants_changed {
            return Ok(Some(Read::from_head(head, Vec::new(), None, false)));
        }
    }
    let mut tx = conn
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .db("starting the snapshot read")?;
    let snap = since.map(|s| s.pg_snapshot);
    let head = head(&mut *tx, event, since).await?;
    let Some(head) = head else {
        return Ok(None);
    };

    let participants: Vec<PRow> = if !head.participants_changed {
        Vec::new()
    } else {
        match snap {
            None => sqlx::query_as(FULL_READ).bind(event).fetch_all(&mut *tx).await,
            Some(snap) => {
                // Two arms, each served by an index: rows written since
                // (event_id, change_xid), then the other rows whose provider
                // embedding was (the primary key). One condition with OR
                // could use neither and read every row of the event, 11 ms
                // a join at 10,000 attendees. change_xid is NOT NULL, so the
                // arms are disjoint and cover what the OR covered.
                sqlx::query_as(&format!(
                    "SELECT {PARTICIPANT_COLUMNS} FROM event_participants
                      WHERE event_id = $1
                        AND change_xid >= pg_snapshot_xmin($2::text::pg_snapshot)
                        AND NOT pg_visible_in_snapshot(change_xid, $2::text::pg_snapshot)
                     UNION ALL
                     SELECT {PARTICIPANT_COLUMNS} FROM event_participants
                      WHERE event_id = $1 AND user_id IN ({EMBEDDED_SINCE_USERS})
                        AND NOT (change_xid >= pg_snapshot_xmin($2::text::pg_snapshot)
                                 AND NOT pg_visible_in_snapshot(change_xid, $2::text::pg_snapshot))"
                ))
                .bind(event)
                .bind(snap)
                .fetch_all(&mut *tx)
                .await
            }
        }
        .db("reading participants")?
    };

    let stale = since.is_none_or(|s| s.version != head.version);
    let reloaded = if stale {
        let lists: Vec<MatchRow> = sqlx::query_as(
            "SELECT user_id, matched_user_id, rank, score, algorithm_version
               FROM user_matches WHERE event_id = $1 ORDER BY user_id, rank",
        )
        .bind(event)
        .fetch_all(&mut *tx)
        .await
        .db("reading current matches")?;
        let (open_rows, participant_count, exclusion_count): (Vec<(i64, Uuid)>, i64, i64) = {
            let counts: (Vec<i64>, Vec<Uuid>, i64, i64) = sqlx::query_as(
                "SELECT ARRAY(SELECT id FROM matchmaking_queue
                               WHERE event_id = $1 AND status IN ('pending', 'processing') ORDER BY id),
                        ARRAY(SELECT user_id FROM matchmaking_queue
                               WHERE event_id = $1 AND status IN ('pending', 'processing') ORDER BY id),
                        (SELECT count(*) FROM event_participants WHERE event_id = $1),
                        (SELECT count(*) FROM match_exclusions WHERE event_id = $1)",
            )
            .bind(event)
            .fetch_one(&mut *tx)
            .await
            .db("reading queued attendees")?;
            (counts.0.into_iter().zip(counts.1).collect(), counts.2, counts.3)
        };
        Some(Reloaded {
            lists,
            open_rows,
            participant_count,
            exclusion_count,
        })
    } else {
        None
    };
    tx.commit().await.db("ending the snapshot read")?;
    Ok(Some(Read::from_head(head, participants, reloaded, stale)))
}

/// A full read of an event's settings, participants and exclusions in the
/// caller's transaction (the `pair` command reads under the event lock it
/// holds until its round is written); lists and queue rows are not read.
/// `None` when the event does not exist.
pub async fn read_in(conn: &mut PgConnection, event: Uuid) -> Result<Option<Read>> {
    let Some(head) = head(&mut *conn, event, None).await? else {
        return Ok(None);
    };
    let participants: Vec<PRow> = sqlx::query_as(FULL_READ)
        .bind(event)
        .fetch_all(&mut *conn)
        .await
        .db("reading participants")?;
    Ok(Some(Read::from_head(head, participants, None, true)))
}

impl Read {
    fn from_head(head: HeadRow, rows: Vec<PRow>, reloaded: Option<Reloaded>, stale: bool) -> Self {
        let mut uncopied = Vec::new();
        let mut copies_used = 0;
        for (index, r) in rows.iter().enumerate() {
            if r.packed.is_some() {
                copies_used += 1;
            } else if r.own_flat && r.embedding.is_some() {
                uncopied.push(Uncopied {
                    index,
                    change_xid: r.change_xid.clone(),
                });
            }
        }
        Read {
            uncopied,
            copies_used,
            pg_snapshot: head.pg_snapshot,
            settings: SettingsRow {
                algorithm: head.algorithm,
                matches_per_user: head.matches_per_user,
                exclude_same_company: head.exclude_same_company,
                embedding_dimensions: head.embedding_dimensions,
            },
            version: head.version,
            participants: rows.into_iter().map(Into::into).collect(),
            exclusions: head.excl_users.into_iter().zip(head.excl_excluded).collect(),
            reloaded,
            new_open_rows: if stale {
                Vec::new()
            } else {
                head.queue_ids.into_iter().zip(head.queue_users).collect()
            },
        }
    }
}

/// The event's settings and version, the exclusions and open queue rows
/// since `since`, and whether any participant changed since.
async fn head(db: impl sqlx::PgExecutor<'_>, event: Uuid, since: Option<Since<'_>>) -> Result<Option<HeadRow>> {
    let snap = since.map(|s| s.pg_snapshot);
    sqlx::query_as(&format!(
        "SELECT pg_current_snapshot()::text AS pg_snapshot,
                e.algorithm, e.matches_per_user, e.exclude_same_company, e.embedding_dimensions,
                coalesce((SELECT version FROM matchmaking_event_state WHERE event_id = $1), 0) AS version,
                xd.excl_users, xd.excl_excluded, qd.queue_ids, qd.queue_users,
                $2::text IS NULL OR EXISTS (
                    SELECT 1 FROM event_participants p
                     WHERE p.event_id = $1
                       AND p.change_xid >= pg_snapshot_xmin($2::text::pg_snapshot)
                       AND NOT pg_visible_in_snapshot(p.change_xid, $2::text::pg_snapshot))
                OR EXISTS ({EMBEDDED_SINCE}) AS participants_changed
           FROM events e,
                -- Exclusions written since the snapshot (all of them without one).
                LATERAL (SELECT coalesce(array_agg(x.user_id ORDER BY x.user_id, x.excluded_user_id), '{{}}') AS excl_users,
                                coalesce(array_agg(x.excluded_user_id ORDER BY x.user_id, x.excluded_user_id), '{{}}')
                                    AS excl_excluded
                           FROM match_exclusions x
                          WHERE x.event_id = $1 AND ($2::text IS NULL OR
                                (x.change_xid >= pg_snapshot_xmin($2::text::pg_snapshot)
                                 AND NOT pg_visible_in_snapshot(x.change_xid, $2::text::pg_snapshot)))) xd,
                -- Open queue rows above the highest id seen.
                LATERAL (SELECT coalesce(array_agg(q.id ORDER BY q.id), '{{}}') AS queue_ids,
                                coalesce(array_agg(q.user_id ORDER BY q.id), '{{}}') AS queue_users
                           FROM matchmaking_queue q
                          WHERE q.event_id = $1 AND q.id > $3 AND q.status IN ('pending', 'processing')) qd
          WHERE e.id = $1"
    ))
    .bind(event)
    .bind(snap)
    .bind(since.map_or(i64::MAX, |s| s.queue_seen))
    .fetch_optional(db)
    .await
    .db("reading the event head")
}

#[derive(sqlx::FromRow)]
struct HeadRow {
    pg_snapshot: String,
    algorithm: String,
    matches_per_user: i16,
    exclude_same_company: bool,
    embedding_dimensions: Option<i32>,
    version: i64,
    excl_users: Vec<Uuid>,
    excl_excluded: Vec<Uuid>,
    queue_ids: Vec<i64>,
    queue_users: Vec<Uuid>,
    participants_changed: bool,
}

#[cfg(test)]
mod tests {
    use super::{decode_floats, pack, unpack};

    /// `real[]` in PostgreSQL's binary array format.
    fn array(dims: &[(i32, i32)], elements: &[Option<f32>]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend((dims.len() as i32).to_be_bytes());
        b.extend(i32::from(elements.iter().any(Option::is_none)).to_be_bytes());
        b.extend(700u32.to_be_bytes());
        for (size, lower) in dims {
            b.extend(size.to_be_bytes());
            b.extend(lower.to_be_bytes());
        }
        for e in elements {
            match e {
                Some(x) => {
                    b.extend(4i32.to_be_bytes());
                    b.extend(x.to_be_bytes());
                }
                None => b.extend((-1i32).to_be_bytes()),
            }
        }
        b
    }

    #[test]
    fn real_arrays_decode_from_the_binary_format() {
        let v = [Some(0.5), None, Some(-2.25), Some(f32::NAN)];
        let got = decode_floats(&array(&[(4, 1)], &v)).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!((got[0], got[1], got[2]), (Some(0.5), None, Some(-2.25)));
        assert!(got[3].is_some_and(f32::is_nan));
        // Another lower bound, two dimensions (elements in order), empty.
        assert_eq!(
            decode_floats(&array(&[(2, 0)], &v[..2])).unwrap(),
            vec![Some(0.5), None]
        );
        let square = [Some(1.0), Some(2.0), Some(3.0), Some(4.0)];
        assert_eq!(
            decode_floats(&array(&[(2, 1), (2, 1)], &square)).unwrap(),
            square.to_vec()
        );
        assert_eq!(decode_floats(&array(&[], &[])).unwrap(), vec![]);
        // Malformed input is an error, never a panic.
        let good = array(&[(4, 1)], &v);
        for cut in 0..good.len() {
            assert!(decode_floats(&good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut int4 = good.clone();
        int4[8..12].copy_from_slice(&23u32.to_be_bytes());
        assert!(decode_floats(&int4).is_err());
        let mut wide = array(&[(1, 1)], &[Some(1.0)]);
        wide[20..24].copy_from_slice(&8i32.to_be_bytes());
        assert!(decode_floats(&wide).is_err());
    }

    #[test]
    fn packed_copies_round_trip_every_bit() {
        let v = [
            Some(0.5),
            Some(-0.0),
            Some(f32::MIN_POSITIVE / 4.0),
            Some(-3.25e7),
            Some(f32::NAN),
        ];
        let bytes = pack(&v).unwrap();
        assert_eq!(bytes.len(), 20);
        let back = unpack(&bytes).unwrap();
        let bits = |v: &[Option<f32>]| v.iter().map(|x| x.map(f32::to_bits)).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&v));
        // A vector with a NULL element has no copy; malformed bytes are an
        // error, never a panic.
        assert_eq!(pack(&[Some(1.0), None]), None);
        assert!(unpack(&[]).is_err());
        assert!(unpack(&bytes[..19]).is_err());
    }
}
