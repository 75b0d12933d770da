-- matchmaker schema, part 2: the triggers that enqueue work.
--
-- Every change that can alter someone's top-K enqueues, in the same
-- transaction as the change, a queue row for the attendee whose scores
-- changed. Enqueueing never fans out to the whole event, except for an event
-- settings change, which by definition changes every score.
--
-- Concurrency contract with the worker (see src/worker.rs):
--   * A worker holds the per-event advisory lock `matchmaker_lock_key(event)`
--     for the whole of one batch (refresh, score, write).
--   * Triggers that *delete* match rows (a leave, a delete, an exclusion)
--     take the same lock first, as a transaction-level lock, so that their
--     DELETE never interleaves with a batch that is writing the same lists.
--     Under READ COMMITTED each statement after the lock sees every batch
--     that committed before it.
--   * Triggers that only enqueue take no lock: a batch that used the old
--     profile is repaired when the new queue row is processed.
--   * Residual risk, documented in the README: an application transaction
--     that edits attendee A and later, in the same transaction, makes B leave
--     while another transaction's leave needs to enqueue A can deadlock; one
--     of the two is aborted by PostgreSQL (40P01) and can simply be retried.
--   * While a batch holds the event lock it never waits long for a lock an
--     application transaction may hold (its write transaction runs with a
--     short lock_timeout, and user_matches has no foreign key to
--     event_participants), so a trigger waiting for the event lock cannot
--     deadlock with it: the batch gives up and is retried.

-- The advisory lock key of an event. One function so that the worker and the
-- triggers can never disagree on it.
CREATE FUNCTION matchmaker_lock_key(p_event uuid) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT hashtextextended('matchmaker:' || p_event::text, 0)
$$;

-- Enqueue a set of attendees of one event. An attendee that already has a
-- pending row keeps that one row: its priority is raised, and a row waiting
-- out a retry backoff becomes available at once with fresh attempts (the data
-- changed, so the old failure may not apply). Returns the number of rows
-- inserted or raised.
--
-- Safe under concurrency: the partial unique index on pending rows makes
-- concurrent enqueues of the same attendee converge on one row (the second
-- INSERT waits for the first and then takes the DO UPDATE branch). A row a
-- worker has already claimed is 'processing', so it is not in that index and
-- a new pending row is created: a change that lands while its attendee is
-- being scored is never lost.
CREATE FUNCTION matchmaker_enqueue(p_event uuid, p_users uuid[], p_reason text, p_priority smallint)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    IF p_users IS NULL OR cardinality(p_users) = 0 THEN
        RETURN 0;
    END IF;
    INSERT INTO matchmaking_queue AS q (event_id, user_id, reason, priority)
    SELECT p_event, u, p_reason, p_priority
    FROM (SELECT DISTINCT unnest(p_users) AS u) AS s
    WHERE u IS NOT NULL
    -- One global order for the row locks this takes, so two fan-outs (a
    -- leave's losers, a settings change, admin-start-matching) running at
    -- once cannot lock the same pending rows in opposite orders.
    ORDER BY u
    ON CONFLICT (event_id, user_id) WHERE status = 'pending'
    DO UPDATE SET
        priority     = GREATEST(q.priority, EXCLUDED.priority),
        reason       = CASE WHEN EXCLUDED.priority > q.priority THEN EXCLUDED.reason ELSE q.reason END,
        attempts     = 0,
        available_at = LEAST(q.available_at, now()),
        last_error   = NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    -- Wakes `matchmaker daemon` at once; duplicates within a transaction fold.
    PERFORM pg_notify('matchmaking_queue', p_event::text);
    RETURN n;
END
$$;

-- Remove one attendee from every list of an event (their own and everyone
-- else's) and enqueue a rematch for each attendee who lost them, plus the
-- attendee themself so that a batch which raced with this change is cleaned
-- up by a later batch. The caller holds the event's advisory lock.
CREATE FUNCTION matchmaker_remove_attendee(p_event uuid, p_user uuid)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    losers uuid[];
BEGIN
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

-- Stamp the writing transaction on every participant and exclusion row.
CREATE FUNCTION matchmaker_stamp_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.change_xid := pg_current_xact_id();
    RETURN NEW;
END
$$;

CREATE TRIGGER event_participants_stamp
    BEFORE INSERT OR UPDATE ON event_participants
    FOR EACH ROW EXECUTE FUNCTION matchmaker_stamp_change();

CREATE TRIGGER match_exclusions_stamp
    BEFORE INSERT OR UPDATE ON match_exclusions
    FOR EACH ROW EXECUTE FUNCTION matchmaker_stamp_change();

CREATE FUNCTION matchmaker_participant_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status = 'active' THEN
            PERFORM matchmaker_enqueue(NEW.event_id, ARRAY[NEW.user_id], 'joined', 3::smallint);
        END IF;
        RETURN NULL;
    END IF;

    -- UPDATE
    IF OLD.event_id IS DISTINCT FROM NEW.event_id OR OLD.user_id IS DISTINCT FROM NEW.user_id THEN
        -- A moved row is a leave from the old key and a join at the new one.
        PERFORM pg_advisory_xact_lock(matchmaker_lock_key(OLD.event_id));
        PERFORM matchmaker_remove_attendee(OLD.event_id, OLD.user_id);
        IF NEW.status = 'active' THEN
            PERFORM matchmaker_enqueue(NEW.event_id, ARRAY[NEW.user_id], 'joined', 3::smallint);
        END IF;
    ELSIF OLD.status = 'active' AND NEW.status = 'left' THEN
        PERFORM pg_advisory_xact_lock(matchmaker_lock_key(NEW.event_id));
        PERFORM matchmaker_remove_attendee(NEW.event_id, NEW.user_id);
    ELSIF OLD.status = 'left' AND NEW.status = 'active' THEN
        PERFORM matchmaker_enqueue(NEW.event_id, ARRAY[NEW.user_id], 'joined', 3::smallint);
    ELSIF NEW.status = 'active'
          -- Only the fields scores depend on (display_name, role and bio do
          -- not, so editing them costs nothing).
          AND (OLD.company, OLD.interests, OLD.looking_for, OLD.offering, OLD.embedding)
              IS DISTINCT FROM
              (NEW.company, NEW.interests, NEW.looking_for, NEW.offering, NEW.embedding)
    THEN
        PERFORM matchmaker_enqueue(NEW.event_id, ARRAY[NEW.user_id], 'profile_updated', 2::smallint);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER event_participants_enqueue
    AFTER INSERT OR UPDATE ON event_participants
    FOR EACH ROW EXECUTE FUNCTION matchmaker_participant_changed();

-- A deleted attendee leaves at once.
CREATE FUNCTION matchmaker_participant_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- The whole event is being deleted (cascade): nothing to re-match.
    IF NOT EXISTS (SELECT 1 FROM events WHERE id = OLD.event_id) THEN
        RETURN OLD;
    END IF;
    PERFORM pg_advisory_xact_lock(matchmaker_lock_key(OLD.event_id));
    PERFORM matchmaker_remove_attendee(OLD.event_id, OLD.user_id);
    RETURN OLD;
END
$$;

CREATE TRIGGER event_participants_delete
    BEFORE DELETE ON event_participants
    FOR EACH ROW EXECUTE FUNCTION matchmaker_participant_deleted();

-- An exclusion works in both directions: drop the pair from both lists and
-- re-match both attendees. Both are enqueued even when a list did not hold
-- the other, which also repairs a batch that raced with an application
-- transaction running at REPEATABLE READ.
CREATE FUNCTION matchmaker_exclusion_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        IF EXISTS (SELECT 1 FROM events WHERE id = OLD.event_id) THEN
            -- Un-excluding makes the pair eligible again: both may now enter
            -- each other's lists.
            PERFORM matchmaker_enqueue(OLD.event_id, ARRAY[OLD.user_id, OLD.excluded_user_id],
                                       'rematch', 1::smallint);
        END IF;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_advisory_xact_lock(matchmaker_lock_key(NEW.event_id));
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

CREATE TRIGGER match_exclusions_enqueue
    AFTER INSERT OR UPDATE OR DELETE ON match_exclusions
    FOR EACH ROW EXECUTE FUNCTION matchmaker_exclusion_changed();

-- A settings change re-scores every pair of the event: re-enqueue it.
CREATE FUNCTION matchmaker_event_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (OLD.algorithm, OLD.matches_per_user, OLD.exclude_same_company, OLD.embedding_dimensions)
       IS DISTINCT FROM
       (NEW.algorithm, NEW.matches_per_user, NEW.exclude_same_company, NEW.embedding_dimensions)
    THEN
        PERFORM matchmaker_enqueue(
            NEW.id,
            ARRAY(SELECT user_id FROM event_participants WHERE event_id = NEW.id AND status = 'active'),
            'rematch', 1::smallint);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_enqueue
    AFTER UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION matchmaker_event_changed();

-- What admin-start-matching compares to decide that a completed event is
-- unchanged: its settings, every participant row's writer, its exclusions.
CREATE FUNCTION matchmaker_event_fingerprint(p_event uuid) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT md5(
        (SELECT concat_ws('|', algorithm, matches_per_user, exclude_same_company, embedding_dimensions)
           FROM events WHERE id = p_event)
        || '#' || coalesce((SELECT string_agg(user_id::text || ':' || change_xid::text, ',' ORDER BY user_id)
                              FROM event_participants WHERE event_id = p_event), '')
        || '#' || coalesce((SELECT string_agg(user_id::text || '>' || excluded_user_id::text, ','
                                               ORDER BY user_id, excluded_user_id)
                              FROM match_exclusions WHERE event_id = p_event), ''))
$$;
