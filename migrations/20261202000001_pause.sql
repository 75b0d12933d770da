-- matchmaker schema, part 9: an operator may pause an event (a bulk import,
-- a data fix): its rows stay queued, the triggers keep enqueueing, and no
-- worker claims them until `matchmaker resume`.
--
-- Why a pause is definite: `pause` sets paused_at in a transaction that
-- first takes the event's advisory lock (pg_advisory_xact_lock), so it
-- commits only between two batches of the event; every claim runs under the
-- same lock and re-reads paused_at (see `queue::claim`). After `pause`
-- returns, no batch of the event starts.
ALTER TABLE matchmaking_event_state ADD COLUMN paused_at timestamptz;

-- The worker role already may SELECT, INSERT and UPDATE this table (the
-- row-level-security migration): `pause`/`resume` run as the worker or as
-- the owner. Nothing new is granted to anyone.
