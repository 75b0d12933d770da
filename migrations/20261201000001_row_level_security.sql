-- matchmaker schema: row-level security and least privilege (issue #9).
--
-- On Supabase every table in `public` is reachable through the Data API, and
-- Supabase's default privileges grant every new table, sequence and function
-- there to `anon` (anyone holding the app's public key) and `authenticated`
-- (any signed-in user). Before this migration the public key could read every
-- attendee's matches, bios and embeddings and rewrite the queue. After it:
--
--   role                               application tables              worker tables
--   ---------------------------------  ------------------------------  -----------------------------
--   the owner (the role that ran       everything (an owner is not     everything
--   `migrate`; `postgres` on Supabase) subject to RLS; every trigger
--                                      runs as the owner)
--   matchmaker_worker (the group role  SELECT                          exactly what the worker's
--   of the worker's login role)                                        statements need, every row
--   matchmaker_attendee and, on        their own participant row       SELECT of their own
--   Supabase, `authenticated`          (read; edit the profile         user_matches rows; the
--                                      fields); their own exclusions   function my_matches()
--                                      (read, insert, delete)
--   service_role (Supabase; BYPASSRLS) unchanged (the app's backend)   SELECT only
--   anon, PUBLIC, any other role       nothing                         nothing
--
-- Why the worker is subject to RLS: it is neither the owner nor BYPASSRLS
-- (a non-superuser cannot create a BYPASSRLS role on PostgreSQL 15), so every
-- table carries a permissive `matchmaker_worker_all` policy for it. Its
-- access is therefore exactly its grants, and a worker login that is not a
-- member of matchmaker_worker sees no row at all.
--
-- Who a signed-in attendee is: matchmaker_auth_uid(), the `sub` claim of the
-- request's JWT as PostgREST sets it per request (`request.jwt.claims`, or
-- the older `request.jwt.claim.sub`): the same value Supabase's auth.uid()
-- returns. The policies call our own function rather than auth.uid() so that
-- one set of migrations works on Supabase and on plain PostgreSQL (no `auth`
-- schema there); an application on plain PostgreSQL sets the same setting
-- for its attendee's session or transaction, e.g.
-- `SELECT set_config('request.jwt.claims', '{"sub":"<uuid>"}', true)`.
--
-- Attendee grants go to the group role matchmaker_attendee (plain
-- PostgreSQL: `GRANT matchmaker_attendee TO your_app_role`) and, where it
-- exists, directly to Supabase's `authenticated`, which is NOINHERIT and so
-- would not use a membership.
--
-- Roles are cluster-wide: every database of a cluster that runs these
-- migrations shares the two group roles (each database keeps its own
-- grants). Creating them needs CREATEROLE (Supabase's `postgres` has it).
--
-- Nothing here changes data: matched events stay matched.

-- The two group roles. Several databases of one cluster may migrate at once
-- (the tests do), so a concurrent creation is not an error.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['matchmaker_worker', 'matchmaker_attendee'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION
                WHEN duplicate_object OR unique_violation THEN
                    NULL;
                WHEN insufficient_privilege THEN
                    RAISE EXCEPTION 'creating role % needs CREATEROLE: have a superuser run '
                        '"CREATE ROLE matchmaker_worker NOLOGIN; CREATE ROLE matchmaker_attendee NOLOGIN;" '
                        'and migrate again', r;
            END;
        END IF;
    END LOOP;
END
$$;

-- The signed-in attendee: the JWT's `sub`, or NULL (anonymous, or a session
-- with no claims). A malformed claim is an error, never someone else's id.
-- It reads only the caller's own settings, so anyone may call it.
CREATE FUNCTION matchmaker_auth_uid() RETURNS uuid
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
    )::uuid
$$;

-- Locks one table down: RLS on, no privilege for anyone but the owner, the
-- worker's privileges `p_worker` (with its all-rows policy), and for
-- worker-owned tables SELECT for Supabase's service_role (the app's backend
-- may show progress; it must not write the worker's state). The owned
-- identity sequences are revoked too (Supabase's default privileges grant
-- them). Called by migrations only: EXECUTE is revoked from everyone below.
CREATE FUNCTION matchmaker_secure_table(p_table regclass, p_worker text, p_worker_owned boolean)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    r name;
    s regclass;
BEGIN
    IF p_worker !~ '^(SELECT|INSERT|UPDATE|DELETE)(, (SELECT|INSERT|UPDATE|DELETE))*$' THEN
        RAISE EXCEPTION 'matchmaker_secure_table: bad privilege list %', p_worker;
    END IF;
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', p_table);
    EXECUTE format('REVOKE ALL ON TABLE %s FROM PUBLIC', p_table);
    FOR r IN SELECT rolname FROM pg_roles
              WHERE rolname IN ('anon', 'authenticated', 'matchmaker_attendee', 'matchmaker_worker')
                 OR (p_worker_owned AND rolname = 'service_role')
    LOOP
        EXECUTE format('REVOKE ALL ON TABLE %s FROM %I', p_table, r);
    END LOOP;
    FOR s IN SELECT d.objid::regclass FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
              WHERE d.refobjid = p_table AND d.classid = 'pg_class'::regclass
                AND c.relkind = 'S' AND d.deptype IN ('a', 'i')
    LOOP
        EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM PUBLIC', s);
        FOR r IN SELECT rolname FROM pg_roles WHERE rolname IN ('anon', 'authenticated', 'service_role') LOOP
            EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM %I', s, r);
        END LOOP;
    END LOOP;
    EXECUTE format('GRANT %s ON TABLE %s TO matchmaker_worker', p_worker, p_table);
    -- The worker reads and writes every row of what it is granted (it works
    -- on every event); its grants, not this policy, are what limit it.
    EXECUTE format('DROP POLICY IF EXISTS matchmaker_worker_all ON %s', p_table);
    EXECUTE format('CREATE POLICY matchmaker_worker_all ON %s FOR ALL TO matchmaker_worker '
                   'USING (true) WITH CHECK (true)', p_table);
    IF p_worker_owned AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        EXECUTE format('GRANT SELECT ON TABLE %s TO service_role', p_table);
    END IF;
END
$$;

-- The roles an attendee's request runs as, for the attendee grants and
-- policies: matchmaker_attendee, plus `authenticated` where it exists.
CREATE FUNCTION matchmaker_attendee_roles() RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT string_agg(quote_ident(rolname), ', ' ORDER BY rolname)
      FROM pg_roles WHERE rolname IN ('matchmaker_attendee', 'authenticated')
$$;

-- Application tables: the worker only reads them.
SELECT matchmaker_secure_table('events', 'SELECT', false);
SELECT matchmaker_secure_table('event_participants', 'SELECT', false);
SELECT matchmaker_secure_table('match_exclusions', 'SELECT', false);

-- Worker-owned tables, with what the worker's statements do to each:
-- the queue (claim, complete, retry, release, enqueue, prune), the lists
-- (the batch's diff), jobs and runs (bookkeeping, pruning the history), the
-- event versions (the batch's bump), the embedding cache (lookups refresh
-- last_used_at, pruning) and the per-attendee provider vectors.
SELECT matchmaker_secure_table('matchmaking_queue', 'SELECT, INSERT, UPDATE, DELETE', true);
SELECT matchmaker_secure_table('user_matches', 'SELECT, INSERT, UPDATE, DELETE', true);
SELECT matchmaker_secure_table('matchmaking_jobs', 'SELECT, INSERT, UPDATE', true);
SELECT matchmaker_secure_table('matchmaking_runs', 'SELECT, INSERT, UPDATE, DELETE', true);
SELECT matchmaker_secure_table('matchmaking_event_state', 'SELECT, INSERT, UPDATE', true);
SELECT matchmaker_secure_table('matchmaking_embedding_cache', 'SELECT, INSERT, UPDATE, DELETE', true);
SELECT matchmaker_secure_table('matchmaking_profile_embeddings', 'SELECT, INSERT, UPDATE, DELETE', true);

-- sqlx's migration history (only when `matchmaker migrate` applied these):
-- it sits in `public` too, so the public key could otherwise read it or,
-- worse, delete it. The worker may read which version is applied.
DO $$
BEGIN
    IF to_regclass('_sqlx_migrations') IS NOT NULL THEN
        PERFORM matchmaker_secure_table('_sqlx_migrations', 'SELECT', true);
    END IF;
END
$$;

-- Policies filter on user_id without the event (an attendee may list their
-- matches across events), so each gets an index on it, as Supabase advises.
-- They are the only indexes not led by event_id; a distributed (Citus)
-- deployment keeps them shard-local.
CREATE INDEX user_matches_user ON user_matches (user_id);
CREATE INDEX event_participants_user ON event_participants (user_id);
CREATE INDEX match_exclusions_user ON match_exclusions (user_id);

-- Whether the signed-in attendee and `p_user` both attend `p_event` (the
-- exclusion policy below). SECURITY DEFINER because an attendee cannot see
-- other participants' rows; it answers only for events the caller attends,
-- so it tells nobody anything about an event of which they are not part.
CREATE FUNCTION matchmaker_attends_with_me(p_event uuid, p_user uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
AS $$
    SELECT EXISTS (SELECT 1 FROM event_participants
                    WHERE event_id = p_event AND user_id = matchmaker_auth_uid() AND status = 'active')
       AND EXISTS (SELECT 1 FROM event_participants WHERE event_id = p_event AND user_id = p_user)
$$;

-- At most this many exclusions per attendee and event. Each exclusion takes
-- the event's lock until its transaction commits (see the triggers), so
-- without a bound one request inserting thousands of rows would hold the
-- event still for as long as it lasts; 500 is far beyond a real block list.
CREATE FUNCTION matchmaker_exclusion_limit() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
AS $$
BEGIN
    -- A row-level BEFORE trigger sees the rows this statement inserted
    -- before this one, so one multi-row INSERT cannot slip past the bound.
    IF (SELECT count(*) FROM match_exclusions
         WHERE event_id = NEW.event_id AND user_id = NEW.user_id) >= 500 THEN
        RAISE EXCEPTION 'attendee % already has 500 exclusions in event %', NEW.user_id, NEW.event_id
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER match_exclusions_limit
    BEFORE INSERT ON match_exclusions
    FOR EACH ROW EXECUTE FUNCTION matchmaker_exclusion_limit();

-- The attendee's grants and policies. `(select matchmaker_auth_uid())` is
-- evaluated once per statement (an init plan), not once per row.
DO $$
DECLARE
    attendees text := matchmaker_attendee_roles();
BEGIN
    -- user_matches: an attendee reads their own list, nothing else; nobody
    -- but the worker (and the owner) writes.
    EXECUTE format('GRANT SELECT ON user_matches TO %s', attendees);
    EXECUTE format($p$CREATE POLICY matchmaker_attendee_reads_own_matches ON user_matches
                      FOR SELECT TO %s USING (user_id = (SELECT matchmaker_auth_uid()))$p$, attendees);

    -- event_participants: an attendee reads their own row and edits its
    -- profile fields. Not event_id, user_id or status (which would move
    -- them into another event, make them someone else, or re-activate a
    -- removed attendee), not embedding (the app's to supply), not the
    -- worker's change_xid. WITH CHECK keeps the row theirs. Joining and
    -- leaving are the app backend's (service role) to do.
    EXECUTE format('GRANT SELECT, UPDATE (display_name, company, role, interests, looking_for, offering, bio, updated_at)
                      ON event_participants TO %s', attendees);
    EXECUTE format($p$CREATE POLICY matchmaker_attendee_reads_own_row ON event_participants
                      FOR SELECT TO %s USING (user_id = (SELECT matchmaker_auth_uid()))$p$, attendees);
    EXECUTE format($p$CREATE POLICY matchmaker_attendee_edits_own_row ON event_participants
                      FOR UPDATE TO %s USING (user_id = (SELECT matchmaker_auth_uid()))
                      WITH CHECK (user_id = (SELECT matchmaker_auth_uid()))$p$, attendees);

    -- match_exclusions: "block this person" / "we already met", as
    -- themselves only: an attendee reads, adds and removes the exclusions
    -- they made (never those made against them), and adds them only in an
    -- event they are an active attendee of, against someone who attends it
    -- too (so no request can flood the queue with made-up ids). The
    -- triggers then drop the pair and enqueue both, with the owner's rights.
    EXECUTE format('GRANT SELECT, INSERT (event_id, user_id, excluded_user_id), DELETE
                      ON match_exclusions TO %s', attendees);
    EXECUTE format($p$CREATE POLICY matchmaker_attendee_reads_own_exclusions ON match_exclusions
                      FOR SELECT TO %s USING (user_id = (SELECT matchmaker_auth_uid()))$p$, attendees);
    EXECUTE format($p$CREATE POLICY matchmaker_attendee_adds_own_exclusions ON match_exclusions
                      FOR INSERT TO %s WITH CHECK (
                          user_id = (SELECT matchmaker_auth_uid())
                          AND matchmaker_attends_with_me(event_id, excluded_user_id))$p$, attendees);
    EXECUTE format($p$CREATE POLICY matchmaker_attendee_removes_own_exclusions ON match_exclusions
                      FOR DELETE TO %s USING (user_id = (SELECT matchmaker_auth_uid()))$p$, attendees);
END
$$;

-- The attendee's read path: their ranked matches with each partner's public
-- fields (display name, role, company) and the reasons, never a bio, an
-- embedding, an exclusion or anyone else's list. SECURITY DEFINER because
-- the attendee cannot read their partners' rows; it is safe because it
-- returns only rows whose user_id is the caller's JWT `sub` (nothing for a
-- caller without one), and its search_path is pinned so no object of the
-- caller's can stand in for ours. Through PostgREST:
-- `supabase.rpc('my_matches', { event_id })`.
CREATE FUNCTION my_matches(event_id uuid)
RETURNS TABLE (
    rank              smallint,
    matched_user_id   uuid,
    display_name      text,
    role              text,
    company           text,
    score             real,
    reasons           jsonb,
    algorithm_version text,
    match_id          bigint,
    updated_at        timestamptz
)
LANGUAGE sql STABLE SECURITY DEFINER
AS $$
    SELECT m.rank, m.matched_user_id, p.display_name, p.role, p.company,
           m.score, m.reasons, m.algorithm_version, m.id, m.updated_at
      FROM user_matches m
      JOIN event_participants p
        ON p.event_id = m.event_id AND p.user_id = m.matched_user_id AND p.status = 'active'
     WHERE m.event_id = my_matches.event_id
       AND m.user_id = matchmaker_auth_uid()
     ORDER BY m.rank
$$;

-- The triggers do the worker's bookkeeping on behalf of whoever wrote the
-- row: an attendee's own edit or block must still enqueue work and drop the
-- affected matches, which the attendee has no right to do. They run with
-- their owner's rights (their search_path is pinned below, as every one of
-- our functions'). The stamp triggers only set a column of the row being
-- written and stay with the caller's rights.
ALTER FUNCTION matchmaker_participant_changed() SECURITY DEFINER;
ALTER FUNCTION matchmaker_participant_deleted() SECURITY DEFINER;
ALTER FUNCTION matchmaker_exclusion_changed() SECURITY DEFINER;
ALTER FUNCTION matchmaker_event_changed() SECURITY DEFINER;
ALTER FUNCTION matchmaker_matches_written() SECURITY DEFINER;

-- Functions: PostgreSQL grants EXECUTE to PUBLIC, and Supabase's default
-- privileges to anon and authenticated, so every one of ours is revoked and
-- only what each role calls is granted back. (PostgREST exposes functions in
-- `public` as RPC; trigger functions cannot be called that way at all.)
-- Later migrations that add functions call this again.
CREATE FUNCTION matchmaker_secure_functions() RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    f regprocedure;
    r name;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
              WHERE p.pronamespace = current_schema()::regnamespace
                AND (p.proname LIKE 'matchmaker\_%' OR p.proname IN ('my_matches'))
    LOOP
        -- The schema these migrations run in (`public`, normally), after
        -- pg_catalog so that no object of a caller's can stand in for a
        -- built-in, and pg_temp last.
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp', f, current_schema());
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        FOR r IN SELECT rolname FROM pg_roles
                  WHERE rolname IN ('anon', 'authenticated', 'service_role', 'matchmaker_attendee', 'matchmaker_worker')
        LOOP
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %I', f, r);
        END LOOP;
    END LOOP;
END
$$;

SELECT matchmaker_secure_functions();

DO $$
DECLARE
    attendees text := matchmaker_attendee_roles();
BEGIN
    -- The policies call matchmaker_auth_uid() with the attendee's rights;
    -- my_matches() is the attendee's read path.
    EXECUTE format('GRANT EXECUTE ON FUNCTION matchmaker_auth_uid() TO %s', attendees);
    EXECUTE format('GRANT EXECUTE ON FUNCTION my_matches(uuid) TO %s', attendees);
    EXECUTE format('GRANT EXECUTE ON FUNCTION matchmaker_attends_with_me(uuid, uuid) TO %s', attendees);
    -- Not left to PUBLIC's default USAGE on the schema, which a hardened
    -- database may have revoked.
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO matchmaker_worker, %s', current_schema(), attendees);
END
$$;

-- What the worker calls itself: the event lock key (claims, the event
-- lock), the enqueue and the fingerprint (admin-start-matching).
GRANT EXECUTE ON FUNCTION matchmaker_lock_key(uuid) TO matchmaker_worker;
GRANT EXECUTE ON FUNCTION matchmaker_enqueue(uuid, uuid[], text, smallint) TO matchmaker_worker;
GRANT EXECUTE ON FUNCTION matchmaker_event_fingerprint(uuid) TO matchmaker_worker;

-- Supabase Realtime: an attendee's app can subscribe to changes of their own
-- list. Realtime checks INSERT and UPDATE events against the SELECT policy
-- above, but it cannot check a DELETE (the row is gone) and sends every
-- subscriber the deleted row's replica identity. With the default identity
-- (the primary key) that would tell anyone who was matched with whom; with
-- the surrogate (event_id, id) it tells nothing.
ALTER TABLE user_matches REPLICA IDENTITY USING INDEX user_matches_event_id_id_key;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'supabase_realtime' AND NOT puballtables)
       AND NOT EXISTS (SELECT 1 FROM pg_publication_rel pr
                        WHERE pr.prpubid = (SELECT oid FROM pg_publication WHERE pubname = 'supabase_realtime')
                          AND pr.prrelid = 'user_matches'::regclass)
    THEN
        ALTER PUBLICATION supabase_realtime ADD TABLE user_matches;
    END IF;
END
$$;
