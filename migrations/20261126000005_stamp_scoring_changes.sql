-- matchmaker schema, part 7: stamp a participant row's change_xid only when
-- something the worker reads changed.
--
-- change_xid drives the worker's delta reads and says which row version a
-- provider embedding was computed for (matchmaking_profile_embeddings.source_xid).
-- Stamping every UPDATE made an edit that no trigger enqueues (display_name
-- alone, or an UPDATE that rewrites the same values) orphan the attendee's
-- provider embedding: their scores changed with no queue row to repair the
-- lists. Now the stamp moves exactly when the enqueue trigger has work to
-- queue (or the row moved or changed status), so every change of a score
-- input is a queued change.

CREATE FUNCTION matchmaker_stamp_participant() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND (OLD.event_id, OLD.user_id, OLD.status, OLD.company, OLD.role, OLD.bio,
            OLD.interests, OLD.looking_for, OLD.offering, OLD.embedding)
           IS NOT DISTINCT FROM
           (NEW.event_id, NEW.user_id, NEW.status, NEW.company, NEW.role, NEW.bio,
            NEW.interests, NEW.looking_for, NEW.offering, NEW.embedding)
    THEN
        NEW.change_xid := OLD.change_xid;
    ELSE
        NEW.change_xid := pg_current_xact_id();
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER event_participants_stamp ON event_participants;
CREATE TRIGGER event_participants_stamp
    BEFORE INSERT OR UPDATE ON event_participants
    FOR EACH ROW EXECUTE FUNCTION matchmaker_stamp_participant();
