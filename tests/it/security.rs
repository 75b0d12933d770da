//! Nobody reads what is not theirs (SPEC §4.6): after `migrate`, on a
//! database set up like a Supabase project (its roles, its default
//! privileges, `auth.uid()`, a non-superuser `postgres`, TLS only) and on
//! plain PostgreSQL, requests made as each role get exactly what the
//! security model allows (tests/common/access.rs lists every check), the
//! checks fail when row-level security is off, a database matched before
//! this release stays matched, and the worker works with only its role's
//! privileges.

use crate::helpers::access::{self, claims_of, request, Platform};
use crate::helpers::*;
use matchmaker::worker;
use sqlx::PgPool;
use std::process::Command;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const SUPABASE: Platform = Platform {
    anonymous: "anon",
    attendee: "authenticated",
    service: Some("service_role"),
};

const PLAIN: Platform = Platform {
    anonymous: "matchmaker_test_nobody",
    attendee: "matchmaker_attendee",
    service: None,
};

/// What an attendee role may hold (table, privilege), on both platforms.
const ATTENDEE_GRANTS: &[(&str, &str)] = &[
    ("user_matches", "SELECT"),
    ("meeting_pairs", "SELECT"),
    ("event_participants", "SELECT"),
    ("event_participants", "UPDATE"),
    ("match_exclusions", "SELECT"),
    ("match_exclusions", "INSERT"),
    ("match_exclusions", "DELETE"),
];

fn allowed_for(roles: &[&'static str]) -> Vec<(&'static str, &'static str, &'static str)> {
    roles
        .iter()
        .flat_map(|r| ATTENDEE_GRANTS.iter().map(move |(t, p)| (*t, *r, *p)))
        .collect()
}

/// The last migration before row-level security.
const BEFORE_RLS: i64 = 20261126000005;
/// The migration that adds `paused_at`.
const PAUSE: i64 = 20261202000001;

async fn create_nobody(pool: &PgPool) {
    sqlx::query(
        "DO $$ BEGIN
             IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'matchmaker_test_nobody') THEN
                 CREATE ROLE matchmaker_test_nobody NOLOGIN;
             END IF;
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
         END $$",
    )
    .execute(pool)
    .await
    .expect("create a role without grants");
}

#[tokio::test]
async fn on_supabase_each_role_gets_exactly_what_the_model_allows() {
    let pool = access::supabase_database().await;
    access::migrate(&pool, None).await;
    let people = access::seed(&pool).await;
    let bad = access::violations(&pool, &people, &SUPABASE).await;
    assert!(bad.is_empty(), "{} violations:\n{}", bad.len(), bad.join("\n"));
    let bad = access::catalog_problems(
        &pool,
        &["anon", "authenticated", "matchmaker_attendee"],
        &allowed_for(&["authenticated", "matchmaker_attendee"]),
    )
    .await;
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn on_plain_postgres_each_role_gets_exactly_what_the_model_allows(pool: PgPool) {
    create_nobody(&pool).await;
    let people = access::seed(&pool).await;
    let bad = access::violations(&pool, &people, &PLAIN).await;
    assert!(bad.is_empty(), "{} violations:\n{}", bad.len(), bad.join("\n"));
    let supabase_roles: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname IN ('anon', 'authenticated', 'service_role')")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(supabase_roles, 0, "this cluster must be plain PostgreSQL");
    let bad = access::catalog_problems(
        &pool,
        &["matchmaker_attendee", "matchmaker_test_nobody"],
        &allowed_for(&["matchmaker_attendee"]),
    )
    .await;
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The checks are not vacuous: with row-level security off on any table an
/// attendee can reach, they report it.
#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn the_checks_fail_when_row_level_security_is_off(pool: PgPool) {
    create_nobody(&pool).await;
    let people = access::seed(&pool).await;
    for table in [
        "user_matches",
        "meeting_pairs",
        "event_participants",
        "match_exclusions",
    ] {
        sqlx::query(&format!("ALTER TABLE {table} DISABLE ROW LEVEL SECURITY"))
            .execute(&pool)
            .await
            .unwrap();
        let bad = access::violations(&pool, &people, &PLAIN).await;
        assert!(
            bad.iter().any(|v| v.contains(table)),
            "RLS off on {table} went unnoticed: {bad:?}"
        );
        let bad = access::catalog_problems(&pool, &[], &[]).await;
        assert_eq!(bad, vec![format!("{table}: row-level security is off")]);
        sqlx::query(&format!("ALTER TABLE {table} ENABLE ROW LEVEL SECURITY"))
            .execute(&pool)
            .await
            .unwrap();
    }
    assert!(access::violations(&pool, &people, &PLAIN).await.is_empty());
}

/// A Supabase project matched before this release: the public key could read
/// every list (the emulation reproduces the reported hole); after `migrate`
/// it cannot, the lists are still exact, and the worker, now as its own
/// role, keeps them so.
#[tokio::test]
async fn a_database_matched_before_this_release_stays_matched_and_is_closed() {
    let pool = access::supabase_database().await;
    // The schema of the previous release, plus what this release's worker
    // (which stands in for the old one) reads and writes and has nothing to
    // do with security: the pause flag, and a stand-in for the vector
    // copies (a cache, dropped before the real migration creates it).
    access::migrate_where(&pool, |v| v <= BEFORE_RLS || v == PAUSE).await;
    sqlx::query(
        "CREATE UNLOGGED TABLE matchmaking_vector_copies (event_id uuid, user_id uuid, source_xid xid8,
                                                       vector bytea, PRIMARY KEY (event_id, user_id))",
    )
    .execute(&pool)
    .await
    .unwrap();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
    let ev = create_event(&pool, "legacy", "hybrid-v1", 3).await;
    let mut people: Vec<Profile> = (0..30).map(|_| random_profile(&mut rng, 8)).collect();
    for p in &people {
        insert_profile(&pool, ev, p).await;
    }
    // The worker of the previous release ran as the owner.
    worker::run(&pool, &pool.connect_options(), fast_options(), CancellationToken::new())
        .await
        .unwrap();
    assert_exact(&pool, ev, "before the migration").await;
    let leaked = request(&pool, "anon", None, "SELECT count(*) FROM user_matches", &[])
        .await
        .expect("before this release anon could read user_matches");
    assert!(leaked > 0);
    let bios = request(&pool, "anon", None, "SELECT count(bio) FROM event_participants", &[]).await;
    assert!(bios.is_ok(), "{bios:?}");

    sqlx::query("DROP TABLE matchmaking_vector_copies")
        .execute(&pool)
        .await
        .unwrap();
    access::migrate(&pool, None).await;
    assert_exact(&pool, ev, "right after the migration").await;
    let denied = request(&pool, "anon", None, "SELECT count(*) FROM user_matches", &[]).await;
    assert!(
        matches!(&denied, Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("42501")),
        "{denied:?}"
    );

    let newcomer = random_profile(&mut rng, 8);
    insert_profile(&pool, ev, &newcomer).await;
    people[3].interests = vec!["rust".into(), "policy".into()];
    update_profile(&pool, ev, &people[3]).await;
    drain(&pool, &fast_options(), Duration::from_secs(60)).await;
    assert_exact(&pool, ev, "after churn, drained by the worker role").await;
}

/// An attendee's own block and edit, made through the Data API with only the
/// attendee's rights, still drop the pair at once and enqueue the work (the
/// triggers run as their owner); the worker then repairs the lists, and
/// `my_matches` shows the new list with public fields only.
#[tokio::test]
async fn an_attendees_own_block_and_edit_enqueue_work_and_my_matches_shows_the_result() {
    let pool = access::supabase_database().await;
    access::migrate(&pool, None).await;
    let p = access::seed(&pool).await;
    sqlx::query("DELETE FROM matchmaking_queue")
        .execute(&pool)
        .await
        .unwrap();
    let first: Uuid = sqlx::query_scalar(
        "SELECT matched_user_id FROM user_matches WHERE event_id = $1 AND user_id = $2 AND rank = 1",
    )
    .bind(p.event)
    .bind(p.a)
    .fetch_one(&pool)
    .await
    .unwrap();

    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL ROLE authenticated")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SELECT set_config('request.jwt.claims', $1, true)")
        .bind(claims_of(p.a))
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO match_exclusions (event_id, user_id, excluded_user_id) VALUES ($1, $2, $3)")
        .bind(p.event)
        .bind(p.a)
        .bind(first)
        .execute(&mut *tx)
        .await
        .expect("an attendee blocks someone");
    let edited = sqlx::query(
        "UPDATE event_participants SET interests = '{robotics, design}' WHERE event_id = $1 AND user_id = $2",
    )
    .bind(p.event)
    .bind(p.a)
    .execute(&mut *tx)
    .await
    .expect("an attendee edits their profile");
    assert_eq!(edited.rows_affected(), 1);
    tx.commit().await.unwrap();

    let pair_left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM user_matches WHERE event_id = $1
            AND ((user_id = $2 AND matched_user_id = $3) OR (user_id = $3 AND matched_user_id = $2))",
    )
    .bind(p.event)
    .bind(p.a)
    .bind(first)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(pair_left, 0, "the block dropped the pair at once");
    let queued: Vec<Uuid> = sqlx::query_scalar(
        "SELECT user_id FROM matchmaking_queue WHERE event_id = $1 AND status = 'pending' ORDER BY user_id",
    )
    .bind(p.event)
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut want = vec![p.a, first];
    want.sort();
    assert_eq!(queued, want);

    drain(&pool, &fast_options(), Duration::from_secs(60)).await;
    assert_exact(&pool, p.event, "after the attendee's block and edit").await;

    // my_matches: A's list as stored, with each partner's public fields.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL ROLE authenticated")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SELECT set_config('request.jwt.claims', $1, true)")
        .bind(claims_of(p.a))
        .execute(&mut *tx)
        .await
        .unwrap();
    let rows = sqlx::query("SELECT * FROM my_matches($1)")
        .bind(p.event)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    use sqlx::{Column, Row};
    let columns: Vec<String> = rows[0].columns().iter().map(|c| c.name().to_string()).collect();
    assert_eq!(
        columns,
        [
            "rank",
            "matched_user_id",
            "display_name",
            "role",
            "company",
            "score",
            "reasons",
            "algorithm_version",
            "match_id",
            "updated_at"
        ]
    );
    let got: Vec<(i16, Uuid, String, f32)> = rows
        .iter()
        .map(|r| {
            (
                r.get("rank"),
                r.get("matched_user_id"),
                r.get("display_name"),
                r.get("score"),
            )
        })
        .collect();
    let stored: Vec<(i16, Uuid, String, f32)> = sqlx::query_as(
        "SELECT m.rank, m.matched_user_id, p.display_name, m.score FROM user_matches m
           JOIN event_participants p ON p.event_id = m.event_id AND p.user_id = m.matched_user_id
          WHERE m.event_id = $1 AND m.user_id = $2 ORDER BY m.rank",
    )
    .bind(p.event)
    .bind(p.a)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(got, stored);
    assert!(got.iter().all(|(_, m, _, _)| *m != first));
}

/// Each exclusion takes the event's lock until commit, so one attendee's
/// list of them is bounded, even within one multi-row INSERT.
#[tokio::test]
async fn exclusions_per_attendee_are_bounded() {
    let pool = access::supabase_database().await;
    access::migrate(&pool, None).await;
    let ev = create_event(&pool, "bounded", "hybrid-v1", 3).await;
    let me = Uuid::new_v4();
    let insert = |n: i32| {
        sqlx::query(
            "INSERT INTO match_exclusions (event_id, user_id, excluded_user_id)
             SELECT $1, $2, gen_random_uuid() FROM generate_series(1, $3)",
        )
        .bind(ev)
        .bind(me)
        .bind(n)
    };
    let too_many = insert(501).execute(&pool).await;
    assert!(
        matches!(&too_many, Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("54000")),
        "{too_many:?}"
    );
    insert(500).execute(&pool).await.expect("500 exclusions are allowed");
    let one_more = insert(1).execute(&pool).await;
    assert!(one_more.is_err(), "{one_more:?}");
}

/// Realtime: user_matches is published, and a deleted row carries only
/// (event_id, id), never the pair, to subscribers RLS cannot filter.
#[tokio::test]
async fn user_matches_is_published_for_realtime_without_the_pair_of_deleted_rows() {
    let pool = access::supabase_database().await;
    access::migrate(&pool, None).await;
    let published: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'supabase_realtime' AND tablename = 'user_matches'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(published, 1);
    let identity: Vec<String> = sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_index i
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
          WHERE i.indrelid = 'user_matches'::regclass AND i.indisreplident ORDER BY a.attnum",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(identity, ["id", "event_id"]);
}

fn matchmaker(url: &str, args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_matchmaker"));
    cmd.args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .env_remove("MATCHMAKER_WORKER_PASSWORD");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run matchmaker")
}

/// `worker-role` makes a login role with only the worker's group role and a
/// SCRAM password (computed client-side: the server checks it), and the
/// worker then drains an event with it over verified TLS.
#[tokio::test]
async fn worker_role_creates_a_least_privilege_login_that_drains_an_event() {
    let pool = access::supabase_database().await;
    access::migrate(&pool, None).await;
    let admin = access::url_as(&pool, "postgres", None, "?sslmode=require");
    let password = "c0rrect horse'battery";
    let o = matchmaker(
        &admin,
        &["worker-role", "--login", "matchmaker_sb_worker"],
        &[("MATCHMAKER_WORKER_PASSWORD", password)],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("member of matchmaker_worker; password set"), "{out}");
    assert!(!out.contains(password));
    let attrs: (bool, bool, bool, bool) = sqlx::query_as(
        "SELECT rolsuper, rolbypassrls, rolcreaterole, pg_has_role('matchmaker_sb_worker', 'matchmaker_worker', 'USAGE')
           FROM pg_roles WHERE rolname = 'matchmaker_sb_worker'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(attrs, (false, false, false, true));
    // Running it again keeps the role and changes nothing else.
    let o = matchmaker(&admin, &["worker-role", "--login", "matchmaker_sb_worker"], &[]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("already existed"));
    // Roles that would hand the worker's rights to someone else are refused:
    // Supabase's own, and any existing role that is not a plain login.
    for (role, setup, why) in [
        ("anon", None, "role of Supabase's"),
        ("service_role", None, "role of Supabase's"),
        (
            "mm_test_group",
            Some("CREATE ROLE mm_test_group NOLOGIN"),
            "is a group role",
        ),
        (
            "mm_test_creator",
            Some("CREATE ROLE mm_test_creator LOGIN CREATEDB"),
            "may create roles or databases",
        ),
        (
            "mm_test_member",
            Some("CREATE ROLE mm_test_member LOGIN IN ROLE authenticated"),
            "member of other roles",
        ),
        (
            "mm_test_parent",
            Some("CREATE ROLE mm_test_parent LOGIN ROLE authenticator"),
            "has members",
        ),
    ] {
        if let Some(sql) = setup {
            // Roles are cluster-wide: an earlier run may have left it.
            sqlx::query(&format!("DROP ROLE IF EXISTS {role}"))
                .execute(&pool)
                .await
                .unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        let o = matchmaker(&admin, &["worker-role", "--login", role], &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{role}: {err}");
        assert!(err.contains(why), "{role}: {err}");
        let member: bool = sqlx::query_scalar("SELECT pg_has_role($1, 'matchmaker_worker', 'MEMBER')")
            .bind(role)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(!member, "{role} was made a worker");
    }

    let ca = std::env::var("MATCHMAKER_TEST_TLS_CA").expect("MATCHMAKER_TEST_TLS_CA");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3);
    let ev = create_event(&pool, "via-role", "hybrid-v1", 3).await;
    for _ in 0..25 {
        insert_profile(&pool, ev, &random_profile(&mut rng, 8)).await;
    }
    let enc = password.replace(' ', "%20").replace('\'', "%27");
    let worker = access::url_as(
        &pool,
        "matchmaker_sb_worker",
        Some(&enc),
        &format!("?sslmode=verify-full&sslrootcert={ca}"),
    )
    .replace("127.0.0.1", "localhost");
    let o = matchmaker(&worker, &["run", "--max-runtime", "20s"], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_exact(&pool, ev, "drained by the worker-role login").await;

    let wrong = worker.replace(&enc, "nope");
    let o = matchmaker(&wrong, &["status"], &[]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("password authentication failed"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}
