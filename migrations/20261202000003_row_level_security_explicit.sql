-- matchmaker schema, part 11: row-level security, spelled out per table.
--
-- Every table below already has row-level security on: the migrations that
-- create or secure them call matchmaker_secure_table(), which enables it
-- with dynamic SQL (and the security tests fail if any table has it off).
-- Dynamic SQL hides that from a reader or an auditing tool grepping for
-- ENABLE ROW LEVEL SECURITY, so it is stated here once more, table by
-- table. Enabling it again is a no-op; nothing else changes.
--
-- Who gets in is unchanged: the worker role through its own policy
-- (matchmaker_worker_all), attendees through the policies on user_matches,
-- event_participants, match_exclusions and meeting_pairs; anon and every
-- other role see nothing.
ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE event_participants ENABLE ROW LEVEL SECURITY;
ALTER TABLE match_exclusions ENABLE ROW LEVEL SECURITY;
ALTER TABLE matchmaking_queue ENABLE ROW LEVEL SECURITY;
ALTER TABLE matchmaking_jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE matchmaking_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE matchmaking_event_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE matchmaking_embedding_cache ENABLE ROW LEVEL SECURITY;
ALTER TABLE matchmaking_profile_embeddings ENABLE ROW LEVEL SECURITY;
ALTER TABLE user_matches ENABLE ROW LEVEL SECURITY;
ALTER TABLE meeting_rounds ENABLE ROW LEVEL SECURITY;
ALTER TABLE meeting_pairs ENABLE ROW LEVEL SECURITY;
