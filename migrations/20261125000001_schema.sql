-- matchmaker schema, part 1: the tables.
--
-- Two groups of tables live here:
--   * tables the event application writes and the worker only reads
--     (events, event_participants, match_exclusions);
--   * tables the worker owns (matchmaking_queue, matchmaking_jobs,
--     matchmaking_runs, user_matches).
--
-- Every event-scoped key and index starts with event_id so the tables can be
-- distributed by event (Citus) without a redesign.

CREATE TABLE events (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    code                  text NOT NULL UNIQUE CHECK (length(code) BETWEEN 1 AND 200),
    name                  text NOT NULL DEFAULT '',
    -- The algorithm is data: changing it re-matches the event and every
    -- match row records the version that produced it.
    algorithm             text NOT NULL DEFAULT 'hybrid-v1'
                          CHECK (algorithm IN ('hybrid-v1', 'cosine-v1')),
    matches_per_user      smallint NOT NULL DEFAULT 3 CHECK (matches_per_user BETWEEN 1 AND 20),
    exclude_same_company  boolean NOT NULL DEFAULT true,
    -- When set, an embedding of any other length is invalid. When NULL, two
    -- embeddings of different lengths are simply not comparable.
    embedding_dimensions  integer CHECK (embedding_dimensions BETWEEN 1 AND 16000),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE event_participants (
    event_id      uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    user_id       uuid NOT NULL,
    display_name  text NOT NULL DEFAULT '',
    company       text,
    role          text,
    -- NULL is accepted and means "none": the worker, not the application's
    -- INSERT, judges malformed profiles.
    interests     text[] DEFAULT '{}',
    looking_for   text[] DEFAULT '{}',
    offering      text[] DEFAULT '{}',
    bio           text,
    embedding     real[],
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'left')),
    joined_at     timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    -- Worker-owned: the transaction that last wrote this row, stamped by a
    -- trigger. The worker refreshes its in-memory snapshot of an event by
    -- reading only rows whose writer was not yet visible in its previous
    -- snapshot (commit order, not clock order).
    change_xid    xid8 NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (event_id, user_id)
);

CREATE INDEX event_participants_change_idx ON event_participants (event_id, change_xid);

CREATE TABLE match_exclusions (
    event_id          uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    user_id           uuid NOT NULL,
    excluded_user_id  uuid NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    change_xid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (event_id, user_id, excluded_user_id),
    CHECK (user_id <> excluded_user_id)
);

CREATE INDEX match_exclusions_change_idx ON match_exclusions (event_id, change_xid);

-- One row per unit of work. Rows are kept after completion ('done') so that
-- status can report throughput; `run` prunes old done rows.
CREATE TABLE matchmaking_queue (
    id            bigint GENERATED ALWAYS AS IDENTITY,
    event_id      uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    user_id       uuid NOT NULL,
    reason        text NOT NULL CHECK (reason IN ('joined', 'profile_updated', 'rematch', 'admin')),
    priority      smallint NOT NULL DEFAULT 1 CHECK (priority BETWEEN 0 AND 3),
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'processing', 'done', 'failed')),
    attempts      integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    available_at  timestamptz NOT NULL DEFAULT now(),
    locked_until  timestamptz,
    locked_by     text,
    last_error    text,
    enqueued_at   timestamptz NOT NULL DEFAULT now(),
    claimed_at    timestamptz,
    finished_at   timestamptz,
    CHECK ((status = 'processing') = (locked_until IS NOT NULL AND locked_by IS NOT NULL)),
    -- Event first, so the table can be distributed by event_id.
    PRIMARY KEY (event_id, id)
);

CREATE UNIQUE INDEX matchmaking_queue_id ON matchmaking_queue (id);

-- At most one pending row per (event, user): enqueueing again upserts into it.
CREATE UNIQUE INDEX matchmaking_queue_one_pending
    ON matchmaking_queue (event_id, user_id) WHERE status = 'pending';
-- The claim: best pending row of one event.
CREATE INDEX matchmaking_queue_claim
    ON matchmaking_queue (event_id, priority DESC, enqueued_at, id) WHERE status = 'pending';
-- Picking which event to work on next, across events.
CREATE INDEX matchmaking_queue_next_event
    ON matchmaking_queue (priority DESC, available_at) WHERE status = 'pending';
-- Open work of one event: the batch's "who is still queued" read, the job
-- completion check, `admin-start-matching --wait`.
CREATE INDEX matchmaking_queue_open
    ON matchmaking_queue (event_id, user_id) WHERE status IN ('pending', 'processing');
-- Expired leases (crashed workers) and status' live leases.
CREATE INDEX matchmaking_queue_leases
    ON matchmaking_queue (locked_until) WHERE status = 'processing';
CREATE INDEX matchmaking_queue_failed
    ON matchmaking_queue (event_id, finished_at) WHERE status = 'failed';
CREATE INDEX matchmaking_queue_done
    ON matchmaking_queue (finished_at) WHERE status = 'done';

CREATE TABLE matchmaking_jobs (
    event_id      uuid PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
    status        text NOT NULL DEFAULT 'running'
                  CHECK (status IN ('running', 'completed', 'completed_with_errors')),
    enqueued      integer NOT NULL DEFAULT 0,
    processed     integer NOT NULL DEFAULT 0,
    failed        integer NOT NULL DEFAULT 0,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz,
    completed_at  timestamptz,
    last_error    text,
    -- Inputs (settings, participants, exclusions) when admin-start-matching
    -- last enqueued the event: an unchanged, completed event is a no-op.
    input_fingerprint text
);

CREATE TABLE matchmaking_runs (
    id            uuid PRIMARY KEY,
    worker_id     text NOT NULL,
    command       text NOT NULL,
    event_id      uuid,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    batches       integer NOT NULL DEFAULT 0,
    claimed       integer NOT NULL DEFAULT 0,
    processed     integer NOT NULL DEFAULT 0,
    failed        integer NOT NULL DEFAULT 0,
    released      integer NOT NULL DEFAULT 0,
    stop_reason   text,
    error         text
);

CREATE INDEX matchmaking_runs_started ON matchmaking_runs (started_at DESC);

CREATE TABLE user_matches (
    id                 bigint GENERATED ALWAYS AS IDENTITY,
    event_id           uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    user_id            uuid NOT NULL,
    matched_user_id    uuid NOT NULL,
    rank               smallint NOT NULL CHECK (rank BETWEEN 1 AND 20),
    score              real NOT NULL CHECK (score = score), -- never NaN
    algorithm_version  text NOT NULL,
    reasons            jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    -- The app's read: WHERE event_id = $1 AND user_id = $2 ORDER BY rank.
    PRIMARY KEY (event_id, user_id, matched_user_id),
    -- A stable identity for applications that attach data (accept/decline)
    -- to a match; a row keeps it while the pair stays matched.
    UNIQUE (event_id, id),
    CHECK (user_id <> matched_user_id)
    -- Deliberately no foreign key to event_participants: its check would make
    -- every match write take a KEY SHARE lock on both participant rows, and a
    -- DELETE of a participant holds that row's lock while its trigger waits
    -- for the event lock a batch holds: a deadlock. The delete trigger removes
    -- the attendee's rows instead (see the triggers migration).
);

-- "Who has X in their list": leaves, exclusions and profile edits.
CREATE INDEX user_matches_matched ON user_matches (event_id, matched_user_id);
