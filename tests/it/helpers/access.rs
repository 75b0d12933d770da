//! Who may do what: requests made the way PostgREST makes them (a
//! transaction that switches to the request's role and sets the JWT claims),
//! checked against what the security model promises. Shared by the
//! Supabase-like and the plain PostgreSQL tests.
//!
//! [`violations`] runs every check and returns what did not hold, so a test
//! can assert that a migrated database has none, and that one with
//! row-level security turned off on a table has some.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use std::str::FromStr;
use uuid::Uuid;

/// The database of a Supabase-like project (scripts/pg.sh,
/// `pg_start_supabase`): a fresh database on that cluster, owned by its
/// non-superuser `postgres`, holding what a new project holds
/// (tests/fixtures/supabase-database.sql), not yet migrated.
pub async fn supabase_database() -> PgPool {
    let url = std::env::var("MATCHMAKER_TEST_SUPABASE_URL")
        .expect("MATCHMAKER_TEST_SUPABASE_URL is not set: run the tests with scripts/test.sh");
    let base = PgConnectOptions::from_str(&url).expect("MATCHMAKER_TEST_SUPABASE_URL");
    let name = format!("sb_{}", Uuid::new_v4().simple());
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(base.clone())
        .await
        .expect("connect to the Supabase-like cluster");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create database");
    admin.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .connect_with(base.database(&name))
        .await
        .expect("connect to the new database");
    sqlx::raw_sql(include_str!("../../fixtures/supabase-database.sql"))
        .execute(&pool)
        .await
        .expect("Supabase fixture");
    pool
}

/// The URL of `pool`'s database with another user (and password).
pub fn url_as(pool: &PgPool, user: &str, password: Option<&str>, query: &str) -> String {
    let o = pool.connect_options();
    let auth = match password {
        Some(p) => format!("{user}:{p}"),
        None => user.to_string(),
    };
    format!(
        "postgres://{auth}@{}:{}/{}{query}",
        o.get_host(),
        o.get_port(),
        o.get_database().unwrap_or("postgres")
    )
}

/// Applies the embedded migrations up to `last` (inclusive; `None`: all).
pub async fn migrate(pool: &PgPool, last: Option<i64>) {
    migrate_where(pool, |v| last.is_none_or(|l| v <= l)).await;
}

/// Applies the migrations whose version `pick` accepts (in order).
pub async fn migrate_where(pool: &PgPool, pick: impl Fn(i64) -> bool) {
    let all = &matchmaker::MIGRATOR;
    let migrations: Vec<_> = all.iter().filter(|m| pick(m.version)).cloned().collect();
    let m = sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(migrations),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    m.run(pool).await.expect("migrate");
}

/// What a request must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// SQLSTATE 42501: no privilege, or a policy's WITH CHECK refused it.
    Denied,
    /// It runs and counts this many rows (read or written).
    Rows(i64),
    /// It fails with another error (a malformed JWT claim).
    Fails,
}

/// The request roles of one platform.
#[derive(Debug, Clone)]
pub struct Platform {
    /// What the public key runs as: `anon` on Supabase, a role without
    /// grants on plain PostgreSQL.
    pub anonymous: &'static str,
    /// What a signed-in attendee runs as: `authenticated`, or
    /// `matchmaker_attendee`.
    pub attendee: &'static str,
    /// Supabase's `service_role`, where it exists.
    pub service: Option<&'static str>,
}

/// The people of the fixture event [`seed`] makes: `a` is the signed-in
/// attendee; `b` blocked `a`; `a` blocked `d`; `c` is anyone else.
#[derive(Debug, Clone, Copy)]
pub struct People {
    pub event: Uuid,
    /// An event `a` does not attend.
    pub other_event: Uuid,
    pub a: Uuid,
    pub b: Uuid,
    pub c: Uuid,
    pub d: Uuid,
}

/// A matched event of 12 attendees (among them a, b, c, d) with the
/// exclusions (b, a) and (a, d); the worker runs as the test worker role.
pub async fn seed(pool: &PgPool) -> People {
    use super::*;
    let event = create_event(pool, "secure", "hybrid-v1", 3).await;
    let other_event = create_event(pool, "elsewhere", "hybrid-v1", 3).await;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(99);
    let mut ids = Vec::new();
    for i in 0..12 {
        let mut p = random_profile(&mut rng, 8);
        // Everyone shares a topic and a company of their own, so that every
        // list is full and nobody is excluded by the company rule.
        p.interests.push("climate tech".into());
        p.company = Some(format!("company {i}"));
        insert_profile(pool, event, &p).await;
        ids.push(p.user_id);
    }
    let people = People {
        event,
        other_event,
        a: ids[0],
        b: ids[1],
        c: ids[2],
        d: ids[3],
    };
    insert_profile(pool, other_event, &random_profile(&mut rng, 8)).await;
    for (x, y) in [(people.b, people.a), (people.a, people.d)] {
        sqlx::query("INSERT INTO match_exclusions (event_id, user_id, excluded_user_id) VALUES ($1, $2, $3)")
            .bind(event)
            .bind(x)
            .bind(y)
            .execute(pool)
            .await
            .expect("exclusion");
    }
    drain(pool, &fast_options(), std::time::Duration::from_secs(60)).await;
    assert_exact(pool, event, "seeded").await;
    // A meeting round: a meets c at table 1, b sits out.
    sqlx::query(
        "WITH r AS (INSERT INTO meeting_rounds (event_id, round, strategy, pairs, sat_out, total_score, upper_bound)
                    VALUES ($1, 1, 'optimal', 1, 1, 0.5, 0.5))
         INSERT INTO meeting_pairs (event_id, round, user_id, partner_id, score, table_no)
         VALUES ($1, 1, $2, $3, 0.5, 1), ($1, 1, $3, $2, 0.5, 1), ($1, 1, $4, NULL, NULL, NULL)",
    )
    .bind(event)
    .bind(people.a)
    .bind(people.c)
    .bind(people.b)
    .execute(pool)
    .await
    .expect("meeting round");
    people
}

/// One request: `sql` (which returns one count) run as `role` with the JWT
/// `sub` claim `sub` (or no claims), binding `$1..` to `binds`, in a
/// transaction that is rolled back.
pub async fn request(
    pool: &PgPool,
    role: &str,
    claims: Option<&str>,
    sql: &str,
    binds: &[Uuid],
) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("SET LOCAL ROLE {role}")).execute(&mut *tx).await?;
    if let Some(c) = claims {
        sqlx::query("SELECT set_config('request.jwt.claims', $1, true)")
            .bind(c)
            .execute(&mut *tx)
            .await?;
    }
    let mut q = sqlx::query(sql);
    for b in binds {
        q = q.bind(*b);
    }
    let row = q.fetch_one(&mut *tx).await?;
    let n: i64 = row.try_get(0)?;
    tx.rollback().await?;
    Ok(n)
}

/// The JWT claims of a signed-in user.
pub fn claims_of(user: Uuid) -> String {
    format!(r#"{{"sub":"{user}","role":"authenticated"}}"#)
}

/// Tables the worker owns, with a column each for the UPDATE probe.
pub const WORKER_TABLES: &[(&str, &str)] = &[
    ("matchmaking_queue", "priority"),
    ("matchmaking_jobs", "failed"),
    ("matchmaking_runs", "failed"),
    ("matchmaking_event_state", "version"),
    ("matchmaking_embedding_cache", "last_used_at"),
    ("matchmaking_profile_embeddings", "updated_at"),
    ("matchmaking_vector_copies", "vector"),
    ("_sqlx_migrations", "description"),
    ("user_matches", "rank"),
    ("meeting_rounds", "pairs"),
    ("meeting_pairs", "score"),
];

/// One request of [`checks`]: label, role, JWT claims, SQL, binds, outcome.
type Check = (String, &'static str, Option<String>, String, Vec<Uuid>, Expect);

/// Every request the security model speaks of, with its expected outcome.
fn checks(p: &People, platform: &Platform) -> Vec<Check> {
    use Expect::*;
    let mut out = Vec::new();
    let attendee = platform.attendee;
    let me = Some(claims_of(p.a));
    let mut add = |who: &'static str, claims: Option<String>, sql: String, binds: Vec<Uuid>, want: Expect| {
        let label = format!(
            "{who} ({}) : {sql}",
            if claims.is_some() { "signed in" } else { "no JWT" }
        );
        out.push((label, who, claims, sql, binds, want));
    };

    // The public key: nothing, anywhere.
    let every_table: Vec<(&str, &str)> = WORKER_TABLES
        .iter()
        .copied()
        .chain([
            ("events", "name"),
            ("event_participants", "bio"),
            ("match_exclusions", "created_at"),
        ])
        .collect();
    for who in [platform.anonymous] {
        for (t, col) in &every_table {
            add(who, None, format!("SELECT count(*) FROM {t}"), vec![], Denied);
            add(
                who,
                None,
                format!("WITH w AS (INSERT INTO {t} DEFAULT VALUES RETURNING 1) SELECT count(*) FROM w"),
                vec![],
                Denied,
            );
            add(
                who,
                None,
                format!("WITH w AS (UPDATE {t} SET {col} = {col} RETURNING 1) SELECT count(*) FROM w"),
                vec![],
                Denied,
            );
            add(
                who,
                None,
                format!("WITH w AS (DELETE FROM {t} RETURNING 1) SELECT count(*) FROM w"),
                vec![],
                Denied,
            );
        }
        add(
            who,
            me.clone(),
            "SELECT count(*) FROM my_matches($1)".into(),
            vec![p.event],
            Denied,
        );
        add(
            who,
            me.clone(),
            "SELECT count(*) FROM user_matches".into(),
            vec![],
            Denied,
        );
    }

    // A signed-in attendee: their own list and pair rows, nothing else of
    // the worker's.
    for (t, col) in WORKER_TABLES
        .iter()
        .filter(|(t, _)| *t != "user_matches" && *t != "meeting_pairs")
    {
        add(
            attendee,
            me.clone(),
            format!("SELECT count(*) FROM {t}"),
            vec![],
            Denied,
        );
        add(
            attendee,
            me.clone(),
            format!("WITH w AS (UPDATE {t} SET {col} = {col} RETURNING 1) SELECT count(*) FROM w"),
            vec![],
            Denied,
        );
        add(
            attendee,
            me.clone(),
            format!("WITH w AS (DELETE FROM {t} RETURNING 1) SELECT count(*) FROM w"),
            vec![],
            Denied,
        );
    }
    add(
        attendee,
        me.clone(),
        "SELECT count(*) FROM user_matches".into(),
        vec![],
        Rows(3),
    );
    // meeting_pairs: their own row of each round, never another's; no writes.
    add(
        attendee,
        me.clone(),
        "SELECT count(*) FROM meeting_pairs WHERE partner_id = $1".into(),
        vec![p.c],
        Rows(1),
    );
    add(
        attendee,
        me.clone(),
        "SELECT count(*) FROM meeting_pairs WHERE user_id <> $1".into(),
        vec![p.a],
        Rows(0),
    );
    add(
        attendee,
        None,
        "SELECT count(*) FROM meeting_pairs".into(),
        vec![],
        Rows(0),
    );
    add(
        attendee,
        me.clone(),
        "WITH w AS (INSERT INTO meeting_pairs (event_id, round, user_id) VALUES ($1, 1, $2) RETURNING 1)
         SELECT count(*) FROM w"
            .into(),
        vec![p.event, p.d],
        Denied,
    );
    add(
        attendee,
        me.clone(),
        "WITH w AS (UPDATE meeting_pairs SET score = 1 WHERE user_id = $1 RETURNING 1) SELECT count(*) FROM w".into(),
        vec![p.a],
        Denied,
    );
    add(
        attendee,
        me.clone(),
        "WITH w AS (DELETE FROM meeting_pairs WHERE user_id = $1 RETURNING 1) SELECT count(*) FROM w".into(),
        vec![p.a],
        Denied,
    );
    add(
        attendee,
        me.clone(),
        "SELECT count(*) FROM user_matches WHERE user_id <> $1".into(),
        vec![p.a],
        Rows(0),
    );
    add(
        attendee,
        None,
        "SELECT count(*) FROM user_matches".into(),
        vec![],
        Rows(0),
    );
    add(
        attendee,
        Some(r#"{"sub":"not-a-uuid"}"#.into()),
        "SELECT count(*) FROM user_matches".into(),
        vec![],
        Fails,
    );
    add(
        attendee,
        me.clone(),
        "WITH w AS (INSERT INTO user_matches (event_id, user_id, matched_user_id, rank, score, algorithm_version)
                    VALUES ($1, $2, $3, 1, 1, 'hybrid-v1') RETURNING 1) SELECT count(*) FROM w"
            .into(),
        vec![p.event, p.a, p.c],
        Denied,
    );
    add(
        attendee,
        me.clone(),
        "WITH w AS (UPDATE user_matches SET score = 1 WHERE user_id = $1 RETURNING 1) SELECT count(*) FROM w".into(),
        vec![p.a],
        Denied,
    );
    add(
        attendee,
        me.clone(),
        "WITH w AS (DELETE FROM user_matches WHERE user_id = $1 RETURNING 1) SELECT count(*) FROM w".into(),
        vec![p.a],
        Denied,
    );
    add(
        attendee,
        me.clone(),
        "SELECT count(*) FROM my_matches($1)".into(),
        vec![p.event],
        Rows(3),
    );
    add(
        attendee,
        None,
        "SELECT count(*) FROM my_matches($1)".into(),
        vec![p.event],
        Rows(0),
    );

    // Their own participant row: read it, edit its profile, nothing more.
    add(
        attendee,
        me.clone(),
        "SELECT count(*) FROM event_participants".into(),
        vec![],
        Rows(1),
    );
    add(
        attendee,
        me.clone(),
        "SELECT count(*) FROM event_participants WHERE user_id = $1".into(),
        vec![p.b],
        Rows(0),
    );
    add(attendee, me.clone(),
        "WITH w AS (UPDATE event_participants SET bio = 'new bio', display_name = 'Ada' WHERE user_id = $1 RETURNING 1) SELECT count(*) FROM w".into(),
        vec![p.a], Rows(1));
    add(attendee, me.clone(), "WITH w AS (UPDATE event_participants SET bio = 'mine now' WHERE user_id = $1 RETURNING 1) SELECT count(*) FROM w".into(), vec![p.b], Rows(0));
    for set in [
        "status = 'left'",
        "event_id = event_id",
        "user_id = gen_random_uuid()",
        "embedding = '{1,2}'",
        "change_xid = change_xid",
    ] {
        add(
            attendee,
            me.clone(),
            format!(
                "WITH w AS (UPDATE event_participants SET {set} WHERE user_id = $1 RETURNING 1) SELECT count(*) FROM w"
            ),
            vec![p.a],
            Denied,
        );
    }
    add(attendee, me.clone(),
        "WITH w AS (INSERT INTO event_participants (event_id, user_id) VALUES ($1, $2) RETURNING 1) SELECT count(*) FROM w".into(),
        vec![p.other_event, p.a], Denied);
    add(
        attendee,
        me.clone(),
        "WITH w AS (DELETE FROM event_participants WHERE user_id = $1 RETURNING 1) SELECT count(*) FROM w".into(),
        vec![p.a],
        Denied,
    );

    // Blocking, as themselves only.
    add(
        attendee,
        me.clone(),
        "SELECT count(*) FROM match_exclusions".into(),
        vec![],
        Rows(1),
    );
    add(attendee, me.clone(),
        "WITH w AS (INSERT INTO match_exclusions (event_id, user_id, excluded_user_id) VALUES ($1, $2, $3) RETURNING 1) SELECT count(*) FROM w".into(),
        vec![p.event, p.a, p.c], Rows(1));
    add(attendee, me.clone(),
        "WITH w AS (INSERT INTO match_exclusions (event_id, user_id, excluded_user_id) VALUES ($1, $2, $3) RETURNING 1) SELECT count(*) FROM w".into(),
        vec![p.event, p.b, p.c], Denied);
    add(attendee, me.clone(),
        "WITH w AS (INSERT INTO match_exclusions (event_id, user_id, excluded_user_id) VALUES ($1, $2, $3) RETURNING 1) SELECT count(*) FROM w".into(),
        vec![p.other_event, p.a, p.c], Denied);
    // Only against someone who attends the event: no made-up ids (each would
    // enqueue work and take the event's lock).
    add(
        attendee,
        me.clone(),
        "WITH w AS (INSERT INTO match_exclusions (event_id, user_id, excluded_user_id)
                    SELECT $1, $2, gen_random_uuid() FROM generate_series(1, 50) RETURNING 1) SELECT count(*) FROM w"
            .into(),
        vec![p.event, p.a],
        Denied,
    );
    add(
        attendee,
        me.clone(),
        "WITH w AS (DELETE FROM match_exclusions WHERE user_id = $1 RETURNING 1) SELECT count(*) FROM w".into(),
        vec![p.a],
        Rows(1),
    );
    add(
        attendee,
        me.clone(),
        "WITH w AS (DELETE FROM match_exclusions WHERE user_id = $1 RETURNING 1) SELECT count(*) FROM w".into(),
        vec![p.b],
        Rows(0),
    );
    add(attendee, me.clone(), "WITH w AS (UPDATE match_exclusions SET excluded_user_id = $2 WHERE user_id = $1 RETURNING 1) SELECT count(*) FROM w".into(), vec![p.a, p.c], Denied);

    // Events are the app backend's.
    add(
        attendee,
        me.clone(),
        "SELECT count(*) FROM events".into(),
        vec![],
        Denied,
    );
    add(
        attendee,
        me.clone(),
        "WITH w AS (UPDATE events SET matches_per_user = 20 RETURNING 1) SELECT count(*) FROM w".into(),
        vec![],
        Denied,
    );

    // The service key reads the worker's state but never writes it.
    if let Some(service) = platform.service {
        add(
            service,
            None,
            "SELECT count(*) FROM user_matches WHERE event_id = $1".into(),
            vec![p.event],
            Rows(36),
        );
        add(
            service,
            None,
            "SELECT count(*) FROM matchmaking_jobs WHERE event_id = $1".into(),
            vec![p.event],
            Rows(1),
        );
        add(
            service,
            None,
            "SELECT count(*) FROM meeting_pairs WHERE event_id = $1".into(),
            vec![p.event],
            Rows(3),
        );
        for (t, col) in WORKER_TABLES {
            add(
                service,
                None,
                format!("WITH w AS (UPDATE {t} SET {col} = {col} RETURNING 1) SELECT count(*) FROM w"),
                vec![],
                Denied,
            );
            add(
                service,
                None,
                format!("WITH w AS (DELETE FROM {t} RETURNING 1) SELECT count(*) FROM w"),
                vec![],
                Denied,
            );
        }
        add(service, None, "WITH w AS (UPDATE event_participants SET bio = bio WHERE event_id = $1 RETURNING 1) SELECT count(*) FROM w".into(), vec![p.event], Rows(12));
    }
    out
}

/// Runs every check of the security model, plus a call of every function
/// of ours with NULL arguments by the anonymous and attendee roles, and
/// returns what did not hold.
pub async fn violations(pool: &PgPool, p: &People, platform: &Platform) -> Vec<String> {
    let mut bad = Vec::new();
    for (label, role, claims, sql, binds, want) in checks(p, platform) {
        let got = request(pool, role, claims.as_deref(), &sql, &binds).await;
        let ok = match (&got, want) {
            (Err(sqlx::Error::Database(d)), Expect::Denied) => d.code().as_deref() == Some("42501"),
            (Err(sqlx::Error::Database(d)), Expect::Fails) => d.code().as_deref() != Some("42501"),
            (Ok(n), Expect::Rows(w)) => *n == w,
            _ => false,
        };
        if !ok {
            bad.push(format!("{label}: wanted {want:?}, got {got:?}"));
        }
    }
    // Functions: PostgREST exposes every function in `public` as RPC.
    let functions: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT p.proname::text,
                -- The WHERE uses the result, so the call is evaluated (and
                -- its EXECUTE privilege checked) even for STABLE functions.
                format('SELECT count(*) FROM (SELECT %I(%s) AS v OFFSET 0) s WHERE v IS NULL OR v IS NOT NULL', p.proname,
                       coalesce((SELECT string_agg('NULL::' || format_type(t, NULL), ', ')
                                   FROM unnest(p.proargtypes) t), '')),
                p.prorettype = 'trigger'::regtype
           FROM pg_proc p
          WHERE p.pronamespace = 'public'::regnamespace
            AND (p.proname LIKE 'matchmaker\\_%' OR p.proname = 'my_matches')",
    )
    .fetch_all(pool)
    .await
    .expect("list functions");
    assert!(functions.len() >= 12, "found only {} functions", functions.len());
    for (name, call, is_trigger) in functions {
        for role in [platform.anonymous, platform.attendee] {
            let allowed = role == platform.attendee
                && matches!(
                    name.as_str(),
                    "my_matches" | "matchmaker_auth_uid" | "matchmaker_attends_with_me"
                );
            let got = request(pool, role, Some(&claims_of(p.a)), &call, &[]).await;
            let ok = match &got {
                Ok(_) => allowed,
                Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("42501") => !allowed,
                // "trigger functions can only be called as triggers"
                Err(sqlx::Error::Database(d)) if is_trigger && d.code().as_deref() == Some("0A000") => !allowed,
                Err(_) => false,
            };
            if !ok {
                bad.push(format!("{role} calls {name}: allowed = {allowed}, got {got:?}"));
            }
        }
    }
    bad
}

/// Tables in `public` without row-level security, and grants to `roles`
/// beyond `allowed` (table, role, privilege).
pub async fn catalog_problems(pool: &PgPool, roles: &[&str], allowed: &[(&str, &str, &str)]) -> Vec<String> {
    let mut bad = Vec::new();
    let no_rls: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class
          WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p') AND NOT relrowsecurity
          ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("catalog");
    for t in no_rls {
        bad.push(format!("{t}: row-level security is off"));
    }
    let grants: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, grantee::text, privilege_type::text
           FROM information_schema.role_table_grants
          WHERE table_schema = 'public' AND grantee = ANY($1)
         UNION
         SELECT table_name::text, grantee::text, privilege_type::text || ' (columns)'
           FROM information_schema.role_column_grants
          WHERE table_schema = 'public' AND grantee = ANY($1)
          ORDER BY 1, 2, 3",
    )
    .bind(roles)
    .fetch_all(pool)
    .await
    .expect("grants");
    for (t, r, p) in grants {
        let base = p.trim_end_matches(" (columns)");
        if !allowed.iter().any(|(at, ar, ap)| *at == t && *ar == r && *ap == base) {
            bad.push(format!("{r} has {p} on {t}"));
        }
    }
    bad
}
