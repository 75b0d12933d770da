//! The events a worker keeps in memory between batches, and the one place
//! that decides whether what it holds may still be trusted.
//!
//! A [`CachedEvent`] holds an event's participants (refreshed by delta),
//! its lists as committed and as the scorer works on them, and its open
//! queue rows. The rules:
//!
//! - **Participants** are refreshed by delta from the previous read's
//!   `pg_snapshot` (rows written by transactions not visible then). A change
//!   committed after a read has an open queue row, so a later batch repairs
//!   it whichever batch wrote last.
//! - **Lists and open rows** are trusted only while the event's version is
//!   the one this worker's own last batch wrote. Every other writer of lists
//!   or closer of queue rows (leaves, deletes, exclusions, an operator's
//!   writes to `user_matches`) bumps the version after taking the event
//!   lock, which every batch holds; a moved version makes [`EventCache::refresh`]
//!   read them again ([`snapshot::Reloaded`]).
//! - **Deleted rows** (a participant or an exclusion gone) show as counts
//!   that no longer match what is held: the event is read in full.
//! - **Settings** changed: read in full.
//! - A batch's lists are applied in memory before its write lands
//!   ([`CachedEvent::commit`]); should the write fail, the caller drops the
//!   event ([`EventCache::forget`]).
//! - A snapshot read ahead of the previous batch's write (the pipeline) is
//!   applied by [`CachedEvent::absorb`] only if it shows the version the
//!   held lists were written under.
//! - A **full read** sends an attendee's own embedding from its packed copy
//!   when one was made from the row version read (see
//!   `migrations/*_vector_copies.sql`), and the worker then writes the
//!   copies it found missing ([`vector_copies::write`]), best effort.
//! - **Tags and keywords** are parsed only when the event's algorithm reads
//!   them (hybrid-v1); a change of algorithm is a change of settings.

use crate::matching::batch::{self, BatchRow, Committed, CommittedEntry, Scored};
use crate::matching::profile::{ParsedRow, Participant, TagInterner};
use crate::matching::{Event, EventSettings, IdMap, Lists, Summaries};
use crate::store::snapshot::{self, MatchRow, Read, SettingsRow, Since};
use crate::store::{vector_copies, StoreError};
use crate::telemetry::error_chain;
use anyhow::Result;
use rayon::prelude::*;
use sqlx::PgConnection;
use std::collections::HashMap;
use tokio::time::Instant;
use tracing::{debug, warn};
use uuid::Uuid;

/// How many event snapshots one process keeps in memory.
const CACHED_EVENTS: usize = 4;

/// An event held in memory between batches (see the module docs).
pub struct CachedEvent {
    pub(super) pg_snapshot: String,
    pub(super) settings: SettingsRow,
    pub(super) event: Event,
    /// `matchmaking_event_state.version` the lists and open rows match;
    /// `None` forces a reload at the next batch.
    pub(super) version: Option<i64>,
    /// The lists as committed, by owner, in rank order.
    pub(super) committed: Committed,
    /// The same lists as the scorer works on them.
    pub(super) lists: Lists,
    /// Summaries of `lists` for the scorer's fast path.
    pub(super) summaries: Summaries,
    /// Open (pending or processing) queue rows, and how many per attendee.
    open_rows: IdMap<i64, Uuid>,
    pub(super) open_count: IdMap<Uuid, u32>,
    /// By participant index: whether `open_count` has the attendee.
    pub(super) open_flags: Vec<bool>,
    /// The highest queue row id seen.
    pub(super) queue_seen: i64,
    last_used: Instant,
}

impl CachedEvent {
    /// An event from a full read.
    fn load(event: Uuid, read: Read) -> Self {
        let e = event_of(event, &read);
        let mut cached = CachedEvent {
            pg_snapshot: read.pg_snapshot,
            settings: read.settings,
            event: e,
            version: Some(read.version),
            committed: Committed::default(),
            lists: Lists::default(),
            summaries: Summaries::default(),
            open_rows: IdMap::default(),
            open_count: IdMap::default(),
            open_flags: Vec::new(),
            queue_seen: 0,
            last_used: Instant::now(),
        };
        if let Some(r) = read.reloaded {
            cached.set_reloaded(r);
        }
        cached
    }

    /// Participants and exclusions written since the previous read.
    fn apply_delta(&mut self, read: &Read) {
        let dims = self.event.settings.embedding_dimensions;
        let words = reads_words(&self.event.settings);
        for row in &read.participants {
            let p = Participant::from_parsed(ParsedRow::new(row, dims, words), &mut self.event.tags);
            self.event.upsert(p);
        }
        for (a, b) in &read.exclusions {
            self.event.exclude(*a, *b);
        }
    }

    fn add_open(&mut self, id: i64, user: Uuid) {
        if self.open_rows.insert(id, user).is_none() {
            let c = self.open_count.entry(user).or_default();
            *c += 1;
            if *c == 1 {
                self.flag_open(&user, true);
            }
        }
        self.queue_seen = self.queue_seen.max(id);
    }

    fn close(&mut self, id: i64) {
        if let Some(user) = self.open_rows.remove(&id) {
            if let Some(c) = self.open_count.get_mut(&user) {
                *c -= 1;
                if *c == 0 {
                    self.open_count.remove(&user);
                    self.flag_open(&user, false);
                }
            }
        }
    }

    fn flag_open(&mut self, user: &Uuid, open: bool) {
        if let Some(flag) = self.event.index_of(user).and_then(|i| self.open_flags.get_mut(i)) {
            *flag = open;
        }
    }

    /// Rebuilds `open_flags` from `open_count` (after a reload, or when
    /// participants were added: their rows may have been seen before them).
    fn sync_open_flags(&mut self) {
        self.open_flags = vec![false; self.event.participant_count()];
        for user in self.open_count.keys() {
            if let Some(i) = self.event.index_of(user) {
                self.open_flags[i] = true;
            }
        }
    }

    /// Before scoring a batch: its claimed rows are open (one committed out
    /// of id order may be new to us), and the flags cover every participant.
    pub(super) fn claim(&mut self, rows: &[BatchRow]) {
        for r in rows {
            self.add_open(r.id, r.user_id);
        }
        if self.open_flags.len() != self.event.participant_count() {
            self.sync_open_flags();
        }
    }

    /// A batch's lists as its write commits them: the touched lists, and its
    /// done rows closed. Applied before the write lands (see the pipeline);
    /// a failed write drops the cached event.
    pub(super) fn commit(&mut self, scored: &Scored) {
        let algorithm = self.settings.algorithm.clone();
        batch::commit(&mut self.committed, &self.lists, &scored.touched, &algorithm);
        for id in &scored.done {
            self.close(*id);
        }
    }

    fn set_reloaded(&mut self, r: snapshot::Reloaded) {
        self.committed = committed_of(r.lists);
        self.lists = batch::lists_of(&self.committed);
        self.summaries.clear();
        self.open_rows.clear();
        self.open_count.clear();
        for (id, user) in r.open_rows {
            self.add_open(id, user);
        }
        self.sync_open_flags();
    }

    /// Applies a snapshot read ahead of the previous batch's write. False,
    /// changing nothing, unless it shows the version the held lists were
    /// written under and the same settings.
    pub(super) fn absorb(&mut self, read: Read) -> bool {
        if self.settings != read.settings || read.reloaded.is_some() || self.version != Some(read.version) {
            return false;
        }
        self.apply_delta(&read);
        for (id, user) in read.new_open_rows {
            self.add_open(id, user);
        }
        self.pg_snapshot = read.pg_snapshot;
        true
    }

    /// What a delta read needs of this event.
    pub(super) fn since(&self) -> Since<'_> {
        Since {
            pg_snapshot: &self.pg_snapshot,
            version: self.version.unwrap_or(-1),
            queue_seen: self.queue_seen,
        }
    }

    /// A delta read applied to what is held; `false` (the event must be read
    /// in full) when the settings changed or rows were deleted since.
    fn refreshed(&mut self, read: Read) -> bool {
        if self.settings != read.settings {
            return false;
        }
        self.apply_delta(&read);
        if let Some(r) = read.reloaded {
            let intact = self.event.participant_count() as i64 == r.participant_count
                && self.event.exclusion_rows() as i64 == r.exclusion_count;
            self.set_reloaded(r);
            if !intact {
                return false;
            }
        }
        for (id, user) in read.new_open_rows {
            self.add_open(id, user);
        }
        self.pg_snapshot = read.pg_snapshot;
        self.version = Some(read.version);
        true
    }

    pub(super) fn touch(&mut self) {
        self.last_used = Instant::now();
    }
}

/// The events of one process, at most [`CACHED_EVENTS`], least recently
/// used first out.
#[derive(Default)]
pub struct EventCache {
    events: HashMap<Uuid, CachedEvent>,
}

impl EventCache {
    /// The event brought up to date (read by delta, or in full when what is
    /// held cannot be trusted; see the module docs), taken out of the cache
    /// while a batch works on it: give it back with [`EventCache::put`].
    pub(super) async fn refresh(&mut self, conn: &mut PgConnection, event: Uuid) -> Result<CachedEvent> {
        let previous = self.events.remove(&event);
        if self.events.len() >= CACHED_EVENTS {
            if let Some(oldest) = self.events.iter().min_by_key(|(_, c)| c.last_used).map(|(k, _)| *k) {
                self.events.remove(&oldest);
            }
        }
        if let Some(mut cached) = previous {
            let read = read_event(conn, event, Some(cached.since())).await?;
            if cached.refreshed(read) {
                return Ok(cached);
            }
            debug!(event.id = %event, "rows were deleted or settings changed since the last batch; reloading the event");
        }
        let t0 = Instant::now();
        let read = read_event(conn, event, None).await?;
        let t1 = Instant::now();
        // Copies for the next full read (by this process after a reload, or
        // the next invocation): best effort, a failure costs only time.
        let copied = match vector_copies::write(conn, event, &read).await {
            Ok(n) => n,
            Err(e) => {
                warn!(event.id = %event, error = %error_chain(&e), "could not write vector copies");
                0
            }
        };
        let t2 = Instant::now();
        let copies_used = read.copies_used;
        let cached = CachedEvent::load(event, read);
        debug!(event.id = %event, participants = cached.event.participant_count(), copies_used, copied,
               read_ms = (t1 - t0).as_secs_f64() * 1e3, copy_ms = (t2 - t1).as_secs_f64() * 1e3,
               build_ms = t2.elapsed().as_secs_f64() * 1e3, "loaded the event");
        Ok(cached)
    }

    /// Keeps an event for the next batch.
    pub(super) fn put(&mut self, event: Uuid, cached: CachedEvent) {
        self.events.insert(event, cached);
    }

    /// Drops an event (a failed write: what is held may not be committed).
    pub(super) fn forget(&mut self, event: &Uuid) {
        self.events.remove(event);
    }
}

/// Rows parsed at once by [`event_of`].
const PARSE_CHUNK: usize = 2048;

/// The event in memory from a full [`snapshot::read`], exactly as every
/// batch scores it (`matchmaker explain` and `pair` build theirs with it too).
pub fn event_of(event: Uuid, read: &Read) -> Event {
    let settings = settings_of(event, &read.settings);
    let dims = settings.embedding_dimensions;
    let words = reads_words(&settings);
    let mut e = Event::new(settings, TagInterner::default());
    // Parsed on all cores a chunk at a time (a whole event's parsed text
    // would cost hundreds of megabytes at 100,000 attendees), interned in
    // row order: the same ids as row by row.
    for chunk in read.participants.chunks(PARSE_CHUNK) {
        let parsed: Vec<ParsedRow> = chunk.par_iter().map(|row| ParsedRow::new(row, dims, words)).collect();
        for row in parsed {
            let p = Participant::from_parsed(row, &mut e.tags);
            e.upsert(p);
        }
    }
    for (a, b) in &read.exclusions {
        e.exclude(*a, *b);
    }
    e
}

/// Whether the event's algorithm scores tags and keywords (a change of
/// algorithm reloads the event, so its participants are parsed again).
fn reads_words(settings: &EventSettings) -> bool {
    settings.algorithm.as_ref().is_ok_and(|a| a.reads_words())
}

/// [`snapshot::read`] of an event that must exist.
pub(super) async fn read_event(conn: &mut PgConnection, event: Uuid, since: Option<Since<'_>>) -> Result<Read> {
    snapshot::read(conn, event, since)
        .await?
        .ok_or_else(|| StoreError::EventGone(event).into())
}

fn settings_of(event: Uuid, row: &SettingsRow) -> EventSettings {
    EventSettings {
        id: event,
        algorithm: row.algorithm.parse(),
        matches_per_user: usize::try_from(row.matches_per_user).unwrap_or(1).clamp(1, 20),
        exclude_same_company: row.exclude_same_company,
        embedding_dimensions: row.embedding_dimensions.and_then(|d| usize::try_from(d).ok()),
    }
}

/// Current rows of every list, by owner, in rank order.
fn committed_of(rows: Vec<MatchRow>) -> Committed {
    let mut out = Committed::default();
    for r in rows {
        out.entry(r.user_id).or_default().push(CommittedEntry {
            matched_user_id: r.matched_user_id,
            rank: r.rank,
            score: r.score,
            algorithm_version: r.algorithm_version,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matching::profile::ParticipantRow;
    use crate::store::snapshot::Reloaded;

    fn settings() -> SettingsRow {
        SettingsRow {
            algorithm: "hybrid-v1".into(),
            matches_per_user: 3,
            exclude_same_company: true,
            embedding_dimensions: None,
        }
    }

    fn person(i: u128) -> ParticipantRow {
        ParticipantRow {
            user_id: Uuid::from_u128(i),
            active: true,
            interests: Some(vec![Some("rust".into())]),
            ..Default::default()
        }
    }

    fn full(version: i64, people: &[u128], open: &[(i64, u128)], lists: &[(u128, u128, i16)]) -> Read {
        Read {
            pg_snapshot: format!("snap-{version}"),
            settings: settings(),
            version,
            participants: people.iter().map(|&i| person(i)).collect(),
            exclusions: Vec::new(),
            reloaded: Some(Reloaded {
                lists: lists
                    .iter()
                    .map(|&(u, m, rank)| MatchRow {
                        user_id: Uuid::from_u128(u),
                        matched_user_id: Uuid::from_u128(m),
                        rank,
                        score: 0.5,
                        algorithm_version: "hybrid-v1".into(),
                    })
                    .collect(),
                open_rows: open.iter().map(|&(id, u)| (id, Uuid::from_u128(u))).collect(),
                participant_count: people.len() as i64,
                exclusion_count: 0,
            }),
            new_open_rows: Vec::new(),
            uncopied: Vec::new(),
            copies_used: 0,
        }
    }

    fn delta(version: i64, settings: SettingsRow, new_open: &[(i64, u128)]) -> Read {
        Read {
            pg_snapshot: format!("snap-{version}"),
            settings,
            version,
            participants: Vec::new(),
            exclusions: Vec::new(),
            reloaded: None,
            new_open_rows: new_open.iter().map(|&(id, u)| (id, Uuid::from_u128(u))).collect(),
            uncopied: Vec::new(),
            copies_used: 0,
        }
    }

    #[test]
    fn open_rows_are_counted_per_attendee_and_flagged_by_index() {
        let mut c = CachedEvent::load(Uuid::nil(), full(1, &[1, 2, 3], &[(10, 1), (11, 1), (12, 3)], &[]));
        assert_eq!(c.open_flags, vec![true, false, true]);
        assert_eq!(c.open_count.get(&Uuid::from_u128(1)), Some(&2));
        assert_eq!(c.queue_seen, 12);
        c.close(10);
        assert_eq!(
            c.open_flags,
            vec![true, false, true],
            "one row of attendee 1 is still open"
        );
        c.close(11);
        c.close(11);
        assert_eq!(c.open_flags, vec![false, false, true]);
        c.claim(&[BatchRow {
            id: 20,
            user_id: Uuid::from_u128(2),
        }]);
        assert_eq!(c.open_flags, vec![false, true, true]);
        assert_eq!(c.queue_seen, 20);
    }

    #[test]
    fn a_read_ahead_is_absorbed_only_at_the_version_held() {
        let mut c = CachedEvent::load(Uuid::nil(), full(4, &[1, 2], &[], &[(1, 2, 1)]));
        assert!(!c.absorb(delta(5, settings(), &[])), "someone else moved the version");
        let mut other = settings();
        other.matches_per_user = 2;
        assert!(!c.absorb(delta(4, other, &[])), "the settings changed");
        assert!(!c.absorb(full(4, &[1, 2], &[], &[])), "a reload is never absorbed");
        assert_eq!(c.pg_snapshot, "snap-4");
        assert!(c.absorb(delta(4, settings(), &[(30, 2)])));
        assert_eq!(c.open_flags, vec![false, true]);
        assert_eq!(c.committed.len(), 1, "the lists held are kept");
    }

    #[test]
    fn a_moved_version_reloads_the_lists_and_deletions_force_a_full_read() {
        // The version moved (an exclusion, a leave): lists and open rows read again.
        let mut c = CachedEvent::load(Uuid::nil(), full(1, &[1, 2, 3], &[], &[(1, 2, 1)]));
        let mut moved = full(2, &[], &[(40, 3)], &[(1, 3, 1)]);
        if let Some(r) = moved.reloaded.as_mut() {
            r.participant_count = 3;
        }
        assert!(c.refreshed(moved));
        assert_eq!(c.version, Some(2));
        assert_eq!(c.committed[&Uuid::from_u128(1)][0].matched_user_id, Uuid::from_u128(3));
        assert_eq!(c.open_flags, vec![false, false, true]);
        // A participant deleted since: the counts differ, a full read is due.
        let mut c = CachedEvent::load(Uuid::nil(), full(1, &[1, 2, 3], &[], &[]));
        let mut deleted = full(2, &[], &[], &[]);
        if let Some(r) = deleted.reloaded.as_mut() {
            r.participant_count = 2;
        }
        assert!(!c.refreshed(deleted));
        // Settings changed: a full read too.
        let mut c = CachedEvent::load(Uuid::nil(), full(1, &[1], &[], &[]));
        let mut other = settings();
        other.algorithm = "cosine-v1".into();
        assert!(!c.refreshed(delta(1, other, &[])));
        // Nothing moved: the delta is applied and the version kept.
        let mut c = CachedEvent::load(Uuid::nil(), full(1, &[1], &[], &[]));
        assert!(c.refreshed(delta(1, settings(), &[(50, 1)])));
        assert_eq!(
            (c.version, c.queue_seen, c.pg_snapshot.as_str()),
            (Some(1), 50, "snap-1")
        );
    }

    #[test]
    fn a_committed_batch_updates_the_lists_and_closes_its_rows() {
        let mut c = CachedEvent::load(Uuid::nil(), full(1, &[1, 2, 3], &[(10, 1)], &[(1, 2, 1)]));
        c.lists.insert(
            Uuid::from_u128(1),
            vec![crate::matching::Entry::new(Uuid::from_u128(3), 0.9)],
        );
        let scored = Scored {
            touched: [Uuid::from_u128(1), Uuid::from_u128(2)].into_iter().collect(),
            done: vec![10],
            ..Scored::default()
        };
        c.commit(&scored);
        let mine = &c.committed[&Uuid::from_u128(1)];
        assert_eq!((mine[0].matched_user_id, mine[0].rank), (Uuid::from_u128(3), 1));
        assert!(!c.committed.contains_key(&Uuid::from_u128(2)));
        assert_eq!(c.open_flags, vec![false, false, false]);
    }
}
