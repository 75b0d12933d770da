-- matchmaker schema: provider embeddings per attendee (issue #3).
--
-- When the application supplies no embedding (NULL or an empty array), the
-- worker asks the embedding provider for one, computed from the profile text
-- (through the content-addressed matchmaking_embedding_cache), and keeps it
-- here, per (event, attendee), so that every later scoring of that attendee
-- (other batches, other worker processes, after restarts) uses it without a
-- provider call. The worker owns this table; applications never write it.
--
-- A vector is valid only for the participant row version it was computed
-- from: `source_xid` is that row's `change_xid`. The snapshot read uses the
-- vector only while `source_xid = event_participants.change_xid` (any later
-- edit of the row stamps a new change_xid and enqueues the attendee, whose
-- batch computes a fresh vector, usually a cache hit).
--
-- `change_xid` is stamped by every write (as on the application tables), so
-- that a worker refreshing its in-memory event by delta sees an embedding
-- that arrived since its previous snapshot as a change of that attendee.

CREATE TABLE matchmaking_profile_embeddings (
    event_id    uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    user_id     uuid NOT NULL,
    -- event_participants.change_xid of the row version the vector is for.
    source_xid  xid8 NOT NULL,
    embedding   real[] NOT NULL CHECK (
                    array_ndims(embedding) = 1
                    AND cardinality(embedding) BETWEEN 1 AND 16000
                    AND array_position(embedding, NULL) IS NULL
                    AND NOT (embedding && '{NaN,Infinity,-Infinity}'::real[])),
    -- The provider's model and requested dimensions (0: the model's
    -- default), for operators.
    model       text NOT NULL,
    dimensions  integer NOT NULL,
    change_xid  xid8 NOT NULL DEFAULT pg_current_xact_id(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, user_id)
);

-- Embedding statistics of each run (the provider is paid per call).
ALTER TABLE matchmaking_runs
    ADD COLUMN embedding_inputs        integer NOT NULL DEFAULT 0,
    ADD COLUMN embedding_cache_hits    integer NOT NULL DEFAULT 0,
    ADD COLUMN embedding_cache_misses  integer NOT NULL DEFAULT 0,
    ADD COLUMN embedding_calls         integer NOT NULL DEFAULT 0,
    ADD COLUMN embedding_tokens        bigint  NOT NULL DEFAULT 0,
    ADD COLUMN embedding_failures      integer NOT NULL DEFAULT 0;

-- The delta read finds vectors written since a worker's previous snapshot.
CREATE INDEX matchmaking_profile_embeddings_change
    ON matchmaking_profile_embeddings (event_id, change_xid);
