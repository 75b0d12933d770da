-- matchmaker schema, part 3: role and bio are score inputs.
--
-- hybrid-v1 now compares the keywords of `role` and `bio` (issue #3), so an
-- edit of either changes the attendee's scores and must enqueue them, like
-- any other profile edit. This replaces the trigger function of part 2
-- (migrations are never edited after they land); the trigger itself is
-- unchanged. Only `display_name` and the timestamps remain free to edit.

CREATE OR REPLACE FUNCTION matchmaker_participant_changed() RETURNS trigger
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
          -- Every field a score depends on; display_name is the only
          -- profile field left out.
          AND (OLD.company, OLD.role, OLD.bio, OLD.interests, OLD.looking_for, OLD.offering, OLD.embedding)
              IS DISTINCT FROM
              (NEW.company, NEW.role, NEW.bio, NEW.interests, NEW.looking_for, NEW.offering, NEW.embedding)
    THEN
        PERFORM matchmaker_enqueue(NEW.event_id, ARRAY[NEW.user_id], 'profile_updated', 2::smallint);
    END IF;
    RETURN NULL;
END
$$;

-- hybrid-v1 scores changed with this release (plural-aware tag keys, role
-- and bio keywords, the overlap floor). Lists already stored for hybrid-v1 events
-- were exact under the old formula only, so every active attendee of those
-- events is re-matched, at the lowest priority (joins and edits go first).
-- A no-op on a fresh database.
SELECT matchmaker_enqueue(
           e.id,
           ARRAY(SELECT p.user_id FROM event_participants AS p
                  WHERE p.event_id = e.id AND p.status = 'active'),
           'rematch', 0::smallint)
  FROM events AS e
 WHERE e.algorithm = 'hybrid-v1'
 ORDER BY e.id;
