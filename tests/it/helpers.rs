//! Shared helpers for the integration tests: fixtures, a drain-until-empty
//! helper (no sleeps-and-hope), and the brute-force exactness oracle.

use matchmaker::matching::brute_force;
use matchmaker::matching::{Event, EventSettings, Participant, ParticipantRow, TagInterner};
use matchmaker::store::queue::RetryPolicy;
use matchmaker::worker::{self, RunSummary, WorkerOptions};
use rand::Rng;
use sqlx::PgPool;
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const TOPICS: &[&str] = &[
    "climate tech",
    "machine learning",
    "LLMs",
    "batteries",
    "fundraising",
    "open source",
    "rust",
    "policy",
    "carbon removal",
    "design",
    "robotics",
    "fintech",
    "health",
    "education",
    "hiring",
];
pub const NEEDS: &[&str] = &[
    "seed funding",
    "mentoring",
    "first customers",
    "technical co-founder",
    "design feedback",
    "pilot partners",
    "go-to-market",
    "hiring",
];
/// Roles: their words are hybrid-v1 keywords ("ML Engineer" and "ml engineers" share two).
pub const ROLES: &[&str] = &[
    "Founder",
    "Investor",
    "ML Engineer",
    "ml engineers",
    "Designer",
    "Policy Advisor",
    "",
];
/// Deliberate collisions: case and white space differ, the company is the same.
pub const COMPANIES: &[&str] = &[
    "Acme Corp",
    " acme  corp",
    "ACMECORP",
    "Globex",
    "globex ",
    "Initech",
    "Umbrella",
    "",
    "  ",
];

/// Worker options for tests: short leases and fast retries.
pub fn fast_options() -> WorkerOptions {
    WorkerOptions {
        lease: Duration::from_secs(2),
        max_runtime: None,
        retry: RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(20),
            cap: Duration::from_millis(200),
        },
        ..WorkerOptions::default()
    }
}

pub async fn create_event(pool: &PgPool, code: &str, algorithm: &str, k: i16) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO events (code, name, algorithm, matches_per_user) VALUES ($1, $1, $2, $3) RETURNING id",
    )
    .bind(code)
    .bind(algorithm)
    .bind(k)
    .fetch_one(pool)
    .await
    .expect("create event")
}

/// A random but plausible profile. `dims` = embedding size (0: none).
#[derive(Debug, Clone)]
pub struct Profile {
    pub user_id: Uuid,
    pub company: Option<String>,
    pub role: Option<String>,
    pub bio: Option<String>,
    pub interests: Vec<String>,
    pub looking_for: Vec<String>,
    pub offering: Vec<String>,
    pub embedding: Option<Vec<f32>>,
}

pub fn random_profile(rng: &mut impl Rng, dims: usize) -> Profile {
    let mut pick = |from: &[&str], max: usize| -> Vec<String> {
        (0..rng.gen_range(0..=max))
            .map(|_| from[rng.gen_range(0..from.len())].to_string())
            .collect()
    };
    let interests = pick(TOPICS, 4);
    let looking_for = pick(NEEDS, 2);
    let offering = pick(NEEDS, 2);
    let company = Some(COMPANIES[rng.gen_range(0..COMPANIES.len())].to_string());
    let (role, bio) = random_role_and_bio(rng);
    // A few latent directions plus noise, so near-ties and clear winners both occur.
    let embedding = (dims > 0).then(|| {
        let base = rng.gen_range(0..4) as f32;
        (0..dims)
            .map(|i| if i % 4 == base as usize { 1.0 } else { 0.0 } + rng.gen_range(-0.5f32..0.5))
            .collect()
    });
    Profile {
        user_id: Uuid::new_v4(),
        company,
        role,
        bio,
        interests,
        looking_for,
        offering,
        embedding,
    }
}

/// A role and a short bio whose words (hybrid-v1 keywords) overlap across
/// attendees now and then; either may be NULL.
pub fn random_role_and_bio(rng: &mut impl Rng) -> (Option<String>, Option<String>) {
    let role = rng
        .gen_bool(0.8)
        .then(|| ROLES[rng.gen_range(0..ROLES.len())].to_string());
    let bio = rng.gen_bool(0.7).then(|| {
        let a = TOPICS[rng.gen_range(0..TOPICS.len())];
        let b = TOPICS[rng.gen_range(0..TOPICS.len())];
        match rng.gen_range(0..3) {
            0 => format!("Working on {a} and {b}."),
            1 => format!("{} nerd; ask me about {b}!", a.to_uppercase()),
            _ => format!("Previously at a {a} startup."),
        }
    });
    (role, bio)
}

pub async fn insert_profile(pool: &PgPool, event: Uuid, p: &Profile) {
    sqlx::query(
        "INSERT INTO event_participants (event_id, user_id, display_name, company, interests, looking_for, offering, embedding,
                                         role, bio)
         VALUES ($1, $2, 'attendee', $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(event)
    .bind(p.user_id)
    .bind(&p.company)
    .bind(&p.interests)
    .bind(&p.looking_for)
    .bind(&p.offering)
    .bind(&p.embedding)
    .bind(&p.role)
    .bind(&p.bio)
    .execute(pool)
    .await
    .expect("insert participant");
}

pub async fn update_profile(pool: &PgPool, event: Uuid, p: &Profile) {
    sqlx::query(
        "UPDATE event_participants SET company = $3, interests = $4, looking_for = $5, offering = $6, embedding = $7,
                role = $8, bio = $9, updated_at = now()
          WHERE event_id = $1 AND user_id = $2",
    )
    .bind(event)
    .bind(p.user_id)
    .bind(&p.company)
    .bind(&p.interests)
    .bind(&p.looking_for)
    .bind(&p.offering)
    .bind(&p.embedding)
    .bind(&p.role)
    .bind(&p.bio)
    .execute(pool)
    .await
    .expect("update participant");
}

/// Rows still to be processed (pending or processing).
pub async fn open_rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM matchmaking_queue WHERE status IN ('pending', 'processing')")
        .fetch_one(pool)
        .await
        .expect("count open rows")
}

/// Waits until `condition` (a boolean SQL expression, no parameters but the
/// event in `$1` when given) holds: a condition awaited, never a sleep that
/// hopes. Panics after `limit`.
pub async fn wait_for(pool: &PgPool, condition: &str, event: Option<Uuid>, limit: Duration) {
    let started = std::time::Instant::now();
    let sql = format!("SELECT ({condition})");
    loop {
        let mut q = sqlx::query_scalar::<_, Option<bool>>(&sql);
        if let Some(e) = event {
            q = q.bind(e);
        }
        if q.fetch_one(pool).await.expect("condition").unwrap_or(false) {
            return;
        }
        assert!(started.elapsed() < limit, "not within {limit:?}: {condition}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The login role every test worker runs as: a member of the migrations'
/// `matchmaker_worker` group role and nothing else (no superuser, no
/// ownership), so the tests prove those grants are all the worker needs.
pub const TEST_WORKER: &str = "matchmaker_test_worker";

/// Creates [`TEST_WORKER`] once per cluster (roles are cluster-wide; tests
/// of one cluster may race to create it).
pub async fn ensure_test_worker(pool: &PgPool) {
    sqlx::query(
        "DO $$ BEGIN
             IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'matchmaker_test_worker') THEN
                 CREATE ROLE matchmaker_test_worker LOGIN;
             END IF;
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
         END $$",
    )
    .execute(pool)
    .await
    .expect("create the test worker role");
    let member: bool =
        sqlx::query_scalar("SELECT pg_has_role('matchmaker_test_worker', 'matchmaker_worker', 'MEMBER')")
            .fetch_one(pool)
            .await
            .expect("membership");
    if !member {
        let _ = sqlx::query("GRANT matchmaker_worker TO matchmaker_test_worker")
            .execute(pool)
            .await;
    }
}

/// Connection options of the test's database as [`TEST_WORKER`].
pub async fn worker_connect(pool: &PgPool) -> sqlx::postgres::PgConnectOptions {
    ensure_test_worker(pool).await;
    pool.connect_options().as_ref().clone().username(TEST_WORKER)
}

/// A pool of the test's database as [`TEST_WORKER`].
pub async fn worker_pool(pool: &PgPool) -> PgPool {
    let opts = worker_connect(pool).await;
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect_with(opts)
        .await
        .expect("connect as the test worker")
}

/// One worker run over the database as the worker role, to the end.
pub async fn run_once(pool: &PgPool, opts: &matchmaker::worker::WorkerOptions) -> matchmaker::worker::RunSummary {
    let workers = worker_pool(pool).await;
    let summary = matchmaker::worker::run(
        &workers,
        &workers.connect_options(),
        opts.clone(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("worker run");
    workers.close().await;
    summary
}

/// Runs in-process workers, as [`TEST_WORKER`], until no row is pending or
/// processing (waiting out backoffs and the leases of killed workers).
/// Panics after `limit`.
pub async fn drain(pool: &PgPool, opts: &WorkerOptions, limit: Duration) -> Vec<RunSummary> {
    let started = std::time::Instant::now();
    let workers = worker_pool(pool).await;
    let connect = workers.connect_options();
    let mut runs = Vec::new();
    loop {
        let summary = worker::run(&workers, &connect, opts.clone(), CancellationToken::new())
            .await
            .expect("worker run");
        runs.push(summary);
        if open_rows(pool).await == 0 {
            workers.close().await;
            return runs;
        }
        assert!(started.elapsed() < limit, "queue not drained within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The URL of the pool's database as [`TEST_WORKER`], for spawning the
/// binary as a worker (`run`, `daemon`, `admin-start-matching`, `status`).
pub async fn worker_url(pool: &PgPool) -> String {
    ensure_test_worker(pool).await;
    let url = database_url(pool).await;
    let (head, tail) = url.split_once("://").expect("url scheme");
    let host = tail.rsplit_once('@').map_or(tail, |(_, h)| h);
    format!("{head}://{TEST_WORKER}@{host}")
}

/// The owner's URL of the pool's database (for spawning the binary as the
/// owner: `migrate`).
pub async fn database_url(pool: &PgPool) -> String {
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(pool)
        .await
        .expect("db name");
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let (head, tail) = base.split_once("://").expect("url scheme");
    let (authority, rest) = tail.split_once('/').unwrap_or((tail, ""));
    let query = rest.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
    format!("{head}://{authority}/{db}{query}")
}

/// Loads the event as the oracle sees it, with its own SQL.
pub async fn load_event(pool: &PgPool, event: Uuid) -> Event {
    let (algorithm, k, same, dims): (String, i16, bool, Option<i32>) = sqlx::query_as(
        "SELECT algorithm, matches_per_user, exclude_same_company, embedding_dimensions FROM events WHERE id = $1",
    )
    .bind(event)
    .fetch_one(pool)
    .await
    .expect("event");
    let settings = EventSettings {
        id: event,
        algorithm: algorithm.parse(),
        matches_per_user: k as usize,
        exclude_same_company: same,
        embedding_dimensions: dims.map(|d| d as usize),
    };
    let mut e = Event::new(settings, TagInterner::default());
    // Without an application embedding (NULL or empty), the provider's
    // vector for the row's current version (matchmaking_profile_embeddings)
    // is the attendee's embedding.
    // Arrays are read flat (the oracle's own SQL): a multi-dimensional
    // embedding is withheld and counted as malformed. Role and bio are read
    // in full (scoring reads only the first MAX_BIO_CHARS of a bio).
    type Row = (
        Uuid,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<Vec<Option<String>>>,
        Option<Vec<Option<String>>>,
        Option<Vec<Option<String>>>,
        Option<Vec<Option<f32>>>,
        i32,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT user_id, status, company, role, bio,
                CASE WHEN interests IS NULL THEN NULL ELSE ARRAY(SELECT unnest(interests)) END,
                CASE WHEN looking_for IS NULL THEN NULL ELSE ARRAY(SELECT unnest(looking_for)) END,
                CASE WHEN offering IS NULL THEN NULL ELSE ARRAY(SELECT unnest(offering)) END,
                CASE WHEN coalesce(cardinality(embedding), 0) = 0 THEN
                          coalesce((SELECT pe.embedding FROM matchmaking_profile_embeddings pe
                                     WHERE pe.event_id = p.event_id AND pe.user_id = p.user_id
                                       AND pe.source_xid = p.change_xid), embedding)
                     WHEN array_ndims(embedding) > 1 THEN NULL
                     ELSE ARRAY(SELECT unnest(embedding)) END,
                coalesce(array_ndims(embedding), 1)
           FROM event_participants p WHERE event_id = $1",
    )
    .bind(event)
    .fetch_all(pool)
    .await
    .expect("participants");
    for (user_id, status, company, role, bio, interests, looking_for, offering, embedding, embedding_ndims) in rows {
        let row = ParticipantRow {
            user_id,
            active: status == "active",
            company,
            role,
            bio,
            interests,
            looking_for,
            offering,
            embedding,
            embedding_ndims,
        };
        let p = Participant::from_row(&row, dims.map(|d| d as usize), &mut e.tags);
        e.upsert(p);
    }
    let excl: Vec<(Uuid, Uuid)> =
        sqlx::query_as("SELECT user_id, excluded_user_id FROM match_exclusions WHERE event_id = $1")
            .bind(event)
            .fetch_all(pool)
            .await
            .expect("exclusions");
    for (a, b) in excl {
        e.exclude(a, b);
    }
    e
}

/// Asserts `user_matches` equals a brute-force recomputation of the event.
/// Returns the number of match rows checked.
pub async fn assert_exact(pool: &PgPool, event: Uuid, context: &str) -> usize {
    let e = load_event(pool, event).await;
    let expected = brute_force(&e);
    let version = e
        .settings
        .algorithm
        .as_ref()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let rows: Vec<(Uuid, Uuid, i16, f32, String)> = sqlx::query_as(
        "SELECT user_id, matched_user_id, rank, score, algorithm_version FROM user_matches
          WHERE event_id = $1 ORDER BY user_id, rank",
    )
    .bind(event)
    .fetch_all(pool)
    .await
    .expect("matches");
    let mut actual: HashMap<Uuid, Vec<(Uuid, i16, f32)>> = HashMap::new();
    for (u, m, rank, score, v) in &rows {
        assert_eq!(v, &version, "{context}: row ({u}, {m}) has algorithm {v}");
        actual.entry(*u).or_default().push((*m, *rank, *score));
    }
    let mut mismatches = Vec::new();
    for (user, want) in &expected {
        let got = actual.remove(user).unwrap_or_default();
        let want: Vec<(Uuid, i16, f32)> = want
            .iter()
            .enumerate()
            .map(|(i, e)| (e.user, (i + 1) as i16, e.score))
            .collect();
        if got != want {
            mismatches.push(format!("user {user}:\n   want {want:?}\n    got {got:?}"));
        }
    }
    for (user, got) in actual {
        mismatches.push(format!("user {user} should have no matches, has {got:?}"));
    }
    assert!(
        mismatches.is_empty(),
        "{context}: {} of {} lists differ from the brute force; first ones:\n{}",
        mismatches.len(),
        expected.len(),
        mismatches.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
    rows.len()
}
/// Waits for a spawned process to exit (after a signal); panics after `limit`.
pub async fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(started.elapsed() < limit, "the process did not exit within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A spawned process killed when dropped, so a failing test leaves no
/// daemon behind.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub mod access;
pub mod provider;
pub mod proxy;
