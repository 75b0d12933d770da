-- matchmaker schema, part 3: a version per event, so that a worker can keep
-- an event's lists and queue state in memory between batches instead of
-- reading them again for every batch.
--
-- The version changes in every transaction that could make a worker's
-- in-memory copy of an event wrong:
--   * a batch (it closes queue rows and writes lists; the worker bumps it
--     explicitly, in the batch's transaction);
--   * a leave, a delete or a move of an attendee (matchmaker_remove_attendee);
--   * an exclusion added, removed or changed;
--   * any other write to user_matches (an operator's UPDATE, DELETE or
--     TRUNCATE), through statement-level triggers.
-- A worker that finds the version it last saw (under the event lock) knows
-- that nobody else changed the lists, closed queue rows or deleted rows of
-- the event since; otherwise it reloads them.
--
-- Lock order: every bump takes the event's advisory lock first (as a
-- transaction lock; the worker holds it as a session lock), then the version
-- row. Since everyone takes the two in the same order, bumping cannot
-- deadlock with a batch.

CREATE TABLE matchmaking_event_state (
    event_id  uuid PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
    version   bigint NOT NULL DEFAULT 0
);

-- The batch claim also takes over rows left `processing` by a dead worker:
-- find those without scanning the event's pending rows.
CREATE INDEX matchmaking_queue_processing
    ON matchmaking_queue (event_id, priority DESC, enqueued_at, id) WHERE status = 'processing';

CREATE FUNCTION matchmaker_bump_event(p_event uuid) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(matchmaker_lock_key(p_event));
    INSERT INTO matchmaking_event_state AS s (event_id, version)
    SELECT p_event, 1
     WHERE EXISTS (SELECT 1 FROM events WHERE id = p_event)
    ON CONFLICT (event_id) DO UPDATE SET version = s.version + 1;
END
$$;

-- As in part 2, plus the bump.
CREATE OR REPLACE FUNCTION matchmaker_remove_attendee(p_event uuid, p_user uuid)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    losers uuid[];
BEGIN
    PERFORM matchmaker_bump_event(p_event);
    DELETE FROM user_matches WHERE event_id = p_event AND user_id = p_user;
    WITH gone AS (
        DELETE FROM user_matches
        WHERE event_id = p_event AND matched_user_id = p_user
        RETURNING user_id
    )
    SELECT array_agg(user_id) INTO losers FROM gone;
    PERFORM matchmaker_enqueue(p_event, losers, 'rematch', 1::smallint);
    PERFORM matchmaker_enqueue(p_event, ARRAY[p_user], 'rematch', 2::smallint);
END
$$;

-- As in part 2, plus the bumps (a removed exclusion shrinks the set a worker
-- holds; an added one deletes match rows).
CREATE OR REPLACE FUNCTION matchmaker_exclusion_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        IF EXISTS (SELECT 1 FROM events WHERE id = OLD.event_id) THEN
            PERFORM matchmaker_bump_event(OLD.event_id);
            PERFORM matchmaker_enqueue(OLD.event_id, ARRAY[OLD.user_id, OLD.excluded_user_id],
                                       'rematch', 1::smallint);
        END IF;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_advisory_xact_lock(matchmaker_lock_key(NEW.event_id));
        PERFORM matchmaker_bump_event(NEW.event_id);
        DELETE FROM user_matches
        WHERE event_id = NEW.event_id
          AND ((user_id = NEW.user_id AND matched_user_id = NEW.excluded_user_id)
            OR (user_id = NEW.excluded_user_id AND matched_user_id = NEW.user_id));
        PERFORM matchmaker_enqueue(NEW.event_id, ARRAY[NEW.user_id, NEW.excluded_user_id],
                                   'rematch', 1::smallint);
    END IF;
    RETURN NULL;
END
$$;

-- Writes to user_matches by anyone but the worker (which bumps the version
-- itself and marks its sessions with `matchmaker.worker = on`).
CREATE FUNCTION matchmaker_matches_written() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    e uuid;
BEGIN
    IF coalesce(current_setting('matchmaker.worker', true), '') = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        FOR e IN SELECT event_id FROM matchmaking_event_state ORDER BY event_id LOOP
            PERFORM matchmaker_bump_event(e);
        END LOOP;
        RETURN NULL;
    END IF;
    FOR e IN SELECT DISTINCT event_id FROM changed ORDER BY event_id LOOP
        PERFORM matchmaker_bump_event(e);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER user_matches_inserted
    AFTER INSERT ON user_matches REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION matchmaker_matches_written();
CREATE TRIGGER user_matches_updated
    AFTER UPDATE ON user_matches REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION matchmaker_matches_written();
CREATE TRIGGER user_matches_deleted
    AFTER DELETE ON user_matches REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION matchmaker_matches_written();
CREATE TRIGGER user_matches_truncated
    AFTER TRUNCATE ON user_matches
    FOR EACH STATEMENT EXECUTE FUNCTION matchmaker_matches_written();
