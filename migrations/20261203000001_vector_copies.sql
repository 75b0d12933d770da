-- matchmaker schema, part 12: packed copies of attendees' own embeddings
-- (issue #14), so that reading an event in full costs a memory copy per
-- vector instead of PostgreSQL's per-element `real[]` output.
--
-- Every `matchmaker run` starts with an empty memory and reads its event in
-- full. Sending a `real[]` in binary calls float4send once per element: about
-- 13 µs per 384-dimension vector, over a second of database CPU per 100,000
-- attendees on every invocation. A bytea is sent as it is stored.
--
-- A copy is valid only for the participant row version it was made from:
-- `source_xid` is that row's `change_xid`, which the stamp trigger moves in
-- the same statement as any change of `embedding` (see part 7). The full
-- read uses a copy only while `source_xid = event_participants.change_xid`,
-- and otherwise reads the row's `real[]` as before, so a stale or missing
-- copy costs time, never a wrong score. The worker writes copies only of an
-- application's own flat embedding (never of a provider vector, whose row
-- can appear after the participant row version it belongs to): `vector` is
-- its elements as little-endian float4, in order.
--
-- UNLOGGED: it is a cache the worker rebuilds at its next full read, so it
-- writes no WAL (its first write at 100,000 attendees would be 150 MB of
-- it), is emptied by crash recovery and not replicated, which costs one
-- slower read. A deleted event takes its copies along; a copy of an edited
-- embedding is replaced at the next full read; one of an attendee who left
-- stays until the event goes, as their provider vector does.
CREATE UNLOGGED TABLE matchmaking_vector_copies (
    event_id    uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    user_id     uuid NOT NULL,
    source_xid  xid8 NOT NULL,
    vector      bytea NOT NULL CHECK (length(vector) BETWEEN 4 AND 64000 AND length(vector) % 4 = 0),
    PRIMARY KEY (event_id, user_id)
);
-- Stored uncompressed (compressing floats gains little and costs every read);
-- inline below about 2 kB, out of line above.
ALTER TABLE matchmaking_vector_copies ALTER COLUMN vector SET STORAGE EXTERNAL;

-- Worker-owned and locked down like the others: RLS on, nothing for anon,
-- authenticated, matchmaker_attendee or PUBLIC; the worker reads, writes and
-- prunes through its all-rows policy; service_role reads.
SELECT matchmaker_secure_table('matchmaking_vector_copies', 'SELECT, INSERT, UPDATE, DELETE', true);
ALTER TABLE matchmaking_vector_copies ENABLE ROW LEVEL SECURITY;
