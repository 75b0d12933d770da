-- matchmaker schema: the embedding cache (issue #3).
--
-- The embedding provider is paid per call, so a profile text is sent to it
-- once, ever: every vector is kept here under a hash of everything that
-- determines it, and reused across events, runs and workers. The worker owns
-- this table; applications never read or write it.
--
-- The table is not event-scoped (one profile text serves every event), so a
-- Citus deployment makes it a reference table or keeps it local to the
-- coordinator; nothing joins it with the event tables.

CREATE TABLE matchmaking_embedding_cache (
    -- The provider's model name, as sent in the request.
    model         text NOT NULL CHECK (length(model) BETWEEN 1 AND 200),
    -- The `dimensions` request parameter; 0 when none was sent (the model's
    -- default length). Part of the key: the same model shortened to another
    -- length gives another vector.
    dimensions    integer NOT NULL CHECK (dimensions BETWEEN 0 AND 16000),
    -- Lower-case hex SHA-256 of (model, dimensions, template version,
    -- normalised profile text); see src/embeddings/text.rs.
    content_hash  text NOT NULL CHECK (content_hash ~ '^[0-9a-f]{64}$'),
    -- Validated before it is stored; the checks make a bug loud instead of
    -- caching a vector every later read would have to reject: one flat,
    -- non-empty list of the requested length, no NULL, no NaN or infinity
    -- (PostgreSQL's float equality treats NaN as equal to NaN, so && finds
    -- it).
    embedding     real[] NOT NULL CHECK (
                      array_ndims(embedding) = 1
                      AND cardinality(embedding) BETWEEN 1 AND 16000
                      AND (dimensions = 0 OR cardinality(embedding) = dimensions)
                      AND array_position(embedding, NULL) IS NULL
                      AND NOT (embedding && '{NaN,Infinity,-Infinity}'::real[])),
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- Refreshed by reads at most once an hour per row; what pruning goes by.
    -- Deliberately not indexed: an index on it would make every refresh a
    -- non-HOT update, and pruning is rare enough to scan.
    last_used_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, dimensions, content_hash)
);
