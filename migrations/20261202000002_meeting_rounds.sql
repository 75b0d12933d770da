-- matchmaker schema: meeting rounds (issue #13).
--
-- A round is a printed plan: one partner per attendee for one slot of the
-- event ("speed networking at 14:00"), computed and committed by
-- `matchmaker pair` in one transaction under the event's lock, so a round
-- is either absent or whole. Joins, leaves and exclusions after a round do
-- not rewrite it; `pair --round N --force` redoes it.
--
--   role                      meeting_rounds          meeting_pairs
--   ------------------------  ----------------------  -----------------------------
--   owner                     everything              everything
--   matchmaker_worker         SELECT, INSERT, DELETE  SELECT, INSERT, DELETE
--   matchmaker_attendee /     nothing                 SELECT of their own rows
--   authenticated
--   service_role (Supabase)   SELECT                  SELECT
--   anon, PUBLIC, others      nothing                 nothing
--
-- Rounds are not readable by attendees at all: their totals (scores, the
-- bound, how many sat out) are the organiser's figures, and an attendee's
-- own pair row already carries the round number, partner, score, reasons
-- and table. An app that shows the round list reads it as service_role.

-- Who may meet whom in a round: 'any' (anyone eligible) or 'across-sides'
-- (only attendees whose `side` differ, e.g. mentor/mentee).
ALTER TABLE events
    ADD COLUMN pairing text NOT NULL DEFAULT 'any'
        CONSTRAINT events_pairing_check CHECK (pairing IN ('any', 'across-sides'));

-- The attendee's side for 'across-sides' events (NULL: none, so paired with
-- nobody there). Set by the app's backend: the attendee's column grant on
-- event_participants does not include it.
ALTER TABLE event_participants ADD COLUMN side text;

CREATE TABLE meeting_rounds (
    event_id     uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    round        integer NOT NULL CHECK (round >= 1),
    -- Always 'complete' once visible (the round is written in one
    -- transaction); the column is the contract's, for a later 'held'.
    status       text NOT NULL DEFAULT 'complete' CHECK (status IN ('complete')),
    strategy     text NOT NULL CHECK (strategy IN ('optimal', 'greedy')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz NOT NULL DEFAULT now(),
    pairs        integer NOT NULL CHECK (pairs >= 0),
    sat_out      integer NOT NULL CHECK (sat_out >= 0),
    total_score  double precision NOT NULL,
    -- A certified upper bound on the total score of the dense optimum.
    upper_bound  double precision NOT NULL,
    PRIMARY KEY (event_id, round)
);

-- One row per attendee of the round, both directions of each pair, so that
-- an attendee reads their own row with one indexed lookup.
CREATE TABLE meeting_pairs (
    event_id   uuid NOT NULL,
    round      integer NOT NULL,
    user_id    uuid NOT NULL,
    -- NULL: this attendee sits the round out.
    partner_id uuid,
    score      real,
    reasons    jsonb,
    table_no   integer CHECK (table_no >= 1),
    PRIMARY KEY (event_id, round, user_id),
    FOREIGN KEY (event_id, round) REFERENCES meeting_rounds (event_id, round) ON DELETE CASCADE,
    CHECK (partner_id IS DISTINCT FROM user_id),
    CHECK ((partner_id IS NULL) = (table_no IS NULL) AND (partner_id IS NULL) = (score IS NULL))
);

-- "Who met whom before" for the next round reads the event's pairs; the
-- primary key is event-first. The attendee policy filters on user_id alone
-- (their pairs across events), so it gets its own index.
CREATE INDEX meeting_pairs_user ON meeting_pairs (user_id);

-- Locked down like the other worker-owned tables: RLS on, nothing for
-- anon, authenticated, matchmaker_attendee or PUBLIC; the worker gets what
-- `pair` does (read the rounds and pairs, insert a round, delete one for
-- --force; never update) through its all-rows policy; service_role reads.
SELECT matchmaker_secure_table('meeting_rounds', 'SELECT, INSERT, DELETE', true);
SELECT matchmaker_secure_table('meeting_pairs', 'SELECT, INSERT, DELETE', true);

DO $$
DECLARE
    attendees text := matchmaker_attendee_roles();
BEGIN
    -- meeting_pairs: a signed-in attendee (matchmaker_attendee, Supabase's
    -- authenticated) reads their own pair rows, nothing else; no attendee
    -- writes. Their partner's profile stays behind the partner function of
    -- the RLS migration.
    EXECUTE format('GRANT SELECT ON meeting_pairs TO %s', attendees);
    EXECUTE format($p$CREATE POLICY matchmaker_attendee_reads_own_pairs ON meeting_pairs
                      FOR SELECT TO %s USING (user_id = (SELECT matchmaker_auth_uid()))$p$, attendees);
END
$$;
