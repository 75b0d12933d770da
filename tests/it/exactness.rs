//! The exactness property (the product's first promise): random joins, profile edits, leaves,
//! rejoins, deletes, exclusions, same-company collisions and settings changes
//! land while several workers drain the queue at once: in-process workers
//! and separate OS processes of the built binary, some of them SIGKILLed
//! mid-run. Once the queue holds no pending or processing rows, every list
//! must equal a brute-force recomputation of the event. A `matchmaker daemon`
//! process works alongside and is SIGKILLed at the end of the churn.
//!
//! Every run replays a fixed list of seeds, then random ones (printed, and
//! in the failure message); set `EXACTNESS_SEED=S` to replay one,
//! `EXACTNESS_SEEDS=N` for more random ones.

use crate::helpers::*;
use matchmaker::worker::{self, WorkerOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Seeds every run replays: ones that once found a bug (36372284832: a
/// provider vector orphaned by an edit no trigger enqueued), and a spread of
/// both algorithms (even seeds hybrid-v1, odd cosine-v1).
const FIXED_SEEDS: &[u64] = &[36372284832, 1, 2, 7, 1_000_003];

/// The fixed seeds, then `EXACTNESS_SEEDS` random ones (default 2); or only
/// `EXACTNESS_SEED` when set (a replay).
fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("EXACTNESS_SEED") {
        return vec![s.parse().expect("EXACTNESS_SEED must be an integer")];
    }
    let n: usize = std::env::var("EXACTNESS_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let base: u64 = rand::random::<u32>() as u64;
    FIXED_SEEDS
        .iter()
        .copied()
        .chain((0..n as u64).map(|i| base * 16 + i))
        .collect()
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn lists_equal_brute_force_after_concurrent_churn_with_killed_workers(pool: PgPool) {
    for seed in seeds() {
        eprintln!("exactness: seed {seed} (replay with EXACTNESS_SEED={seed})");
        run_seed(&pool, seed, None).await;
    }
}

/// The same churn under hybrid-v1 with an embedding provider (a
/// deterministic fake that fails in alternating windows): about half the
/// attendees have no application embedding and get the provider's, late
/// (held rows, the breaker), so embeddings arrive as profile changes of their
/// own. The oracle uses the stored provider vectors.
#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn lists_equal_brute_force_with_late_provider_embeddings(pool: PgPool) {
    let fake = provider::FakeProvider::start(provider::Mode::Flaky(Duration::from_millis(700))).await;
    // The seed that found the late-embedding bug, and the last (random) one.
    let all = seeds();
    let mut two = vec![all[0]];
    two.extend(all.last().filter(|&&l| l != all[0]));
    for seed in two {
        eprintln!("exactness with a provider: seed {seed} (replay with EXACTNESS_SEED={seed})");
        fake.set_mode(provider::Mode::Flaky(Duration::from_millis(700)));
        run_seed(&pool, seed, Some(&fake)).await;
    }
}

/// A cosine-v1 event large enough for the workers' approximate first pass (see
/// `matching::plan_bounded`; from 4,096 attendees, on every CPU, from
/// 8-bit copies): a cold start, then joins, edits and leaves drained by two
/// concurrent workers, each time equal to the brute force bit for bit. The
/// embeddings come from a few directions plus noise, so many pairs score
/// within the approximation's error of each other.
#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn a_large_cosine_event_is_exact_through_the_approximate_path(pool: PgPool) {
    let seed = *seeds().last().expect("a seed");
    eprintln!(
        "large event: seed {seed} (replay with EXACTNESS_SEED={seed}); approximate path: {}",
        matchmaker::matching::kernel::approx_available()
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let ev = create_event(&pool, "large", "cosine-v1", 3).await;
    let mut people: Vec<Profile> = (0..4_300).map(|_| random_profile(&mut rng, 24)).collect();
    let mut tx = pool.begin().await.unwrap();
    for p in &people {
        sqlx::query(
            "INSERT INTO event_participants (event_id, user_id, display_name, company, embedding)
             VALUES ($1, $2, 'attendee', $3, $4)",
        )
        .bind(ev)
        .bind(p.user_id)
        .bind(&p.company)
        .bind(&p.embedding)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let opts = fast_options();
    drain(&pool, &opts, Duration::from_secs(600)).await;
    let rows = assert_exact(&pool, ev, "large event, cold start").await;
    assert_eq!(rows, 3 * people.len());

    // Churn: edits, joins and leaves, drained by two workers at once.
    for i in 0..120 {
        match i % 4 {
            0 | 1 => {
                let j = rng.gen_range(0..people.len());
                people[j].embedding = random_profile(&mut rng, 24).embedding;
                update_profile(&pool, ev, &people[j]).await;
            }
            2 => {
                let p = random_profile(&mut rng, 24);
                insert_profile(&pool, ev, &p).await;
                people.push(p);
            }
            _ => {
                let p = people.swap_remove(rng.gen_range(0..people.len()));
                sqlx::query("UPDATE event_participants SET status = 'left' WHERE event_id = $1 AND user_id = $2")
                    .bind(ev)
                    .bind(p.user_id)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
        }
    }
    let (a, b) = tokio::join!(
        drain(&pool, &opts, Duration::from_secs(600)),
        drain(&pool, &opts, Duration::from_secs(600))
    );
    assert!(!a.is_empty() && !b.is_empty());
    assert_exact(&pool, ev, "large event, after churn").await;
}

async fn run_seed(pool: &PgPool, seed: u64, fake: Option<&provider::FakeProvider>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let algorithm = if seed.is_multiple_of(2) || fake.is_some() {
        "hybrid-v1"
    } else {
        "cosine-v1"
    };
    // With a provider, about half the attendees bring no embedding.
    let mut erng = StdRng::seed_from_u64(seed ^ 0xe5bed);
    let mut strip = move |p: &mut Profile| {
        if fake.is_some() && erng.gen_bool(0.5) {
            p.embedding = None;
        }
    };
    let embedder = fake.map(|f| f.embedder(Duration::from_millis(500)));
    let env: Vec<(&'static str, String)> = fake.map(|f| f.env()).unwrap_or_default();
    let k = rng.gen_range(1..=4);
    let event = create_event(pool, &format!("prop-{seed}"), algorithm, k).await;
    let dims = 8;
    let mut users: Vec<Uuid> = Vec::new();
    for _ in 0..150 {
        let mut p = random_profile(&mut rng, dims);
        strip(&mut p);
        insert_profile(pool, event, &p).await;
        users.push(p.user_id);
    }

    let stop = CancellationToken::new();
    let kills = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();

    // Two in-process workers with short deadlines (exercising resumption),
    // as the least-privilege worker role.
    let workers = worker_pool(pool).await;
    for w in 0..2u64 {
        let (pool, stop, embedder) = (workers.clone(), stop.clone(), embedder.clone());
        tasks.push(tokio::spawn(async move {
            let connect = pool.connect_options();
            let mut runs = 0u64;
            while !stop.is_cancelled() {
                let opts = WorkerOptions {
                    max_runtime: Some(Duration::from_millis(600 + 400 * ((runs + w) % 4))),
                    batch_size: 5 + 10 * (w as i64),
                    embedder: embedder.clone(),
                    ..fast_options()
                };
                worker::run(&pool, &connect, opts, stop.clone())
                    .await
                    .expect("in-process worker");
                runs += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }

    // Two loops of OS worker processes; the first SIGKILLs its children
    // at random moments of their run.
    let url = worker_url(pool).await;
    for p in 0..2u64 {
        let (stop, url, kills, env) = (stop.clone(), url.clone(), kills.clone(), env.clone());
        let mut prng = StdRng::seed_from_u64(seed ^ (0x5eed + p));
        tasks.push(tokio::spawn(async move {
            while !stop.is_cancelled() {
                let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_matchmaker"))
                    .args(["run", "--max-runtime", "3s", "--lease", "2s", "--retry-base", "20ms"])
                    .args(["--retry-max", "200ms", "--max-attempts", "3", "--batch-size", "10"])
                    .args(["--fault-score-delay", "2ms"])
                    .env("DATABASE_URL", &url)
                    .envs(env.iter().cloned())
                    .env("RUST_LOG", "error")
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .expect("spawn worker process");
                if p == 0 {
                    tokio::time::sleep(Duration::from_millis(prng.gen_range(30..400))).await;
                    if child.try_wait().expect("try_wait").is_none() {
                        child.kill().await.expect("SIGKILL worker");
                        kills.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    let status = child.wait().await.expect("wait worker");
                    assert!(status.success(), "worker process failed: {status}");
                }
            }
        }));
    }

    let daemon_before = daemon_processed(pool).await;
    // A daemon too: it keeps its event snapshot across drains, woken by
    // NOTIFY and every second by its schedule; SIGKILLed when the churn ends.
    let mut daemon = tokio::process::Command::new(env!("CARGO_BIN_EXE_matchmaker"))
        .args([
            "daemon",
            "--schedule",
            "* * * * * *",
            "--lease",
            "2s",
            "--retry-base",
            "20ms",
        ])
        .args(["--retry-max", "200ms", "--max-attempts", "3", "--batch-size", "7"])
        .env("DATABASE_URL", &url)
        .envs(env.iter().cloned())
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn daemon");

    // The churn, concurrent with all of the above.
    let mut left: Vec<Uuid> = Vec::new();
    let mut excluded: Vec<(Uuid, Uuid)> = Vec::new();
    for _ in 0..220 {
        let op = rng.gen_range(0..100);
        let pick = |rng: &mut StdRng, v: &[Uuid]| v[rng.gen_range(0..v.len())];
        match op {
            0..=24 => {
                let mut p = random_profile(&mut rng, dims);
                strip(&mut p);
                if rng.gen_bool(0.05) {
                    // Malformed: cosine-v1 must leave them unmatched; hybrid-v1 ignores the vector.
                    p.embedding = Some(vec![f32::NAN; dims]);
                }
                insert_profile(pool, event, &p).await;
                users.push(p.user_id);
            }
            25..=44 => {
                let u = pick(&mut rng, &users);
                let mut p = random_profile(&mut rng, dims);
                strip(&mut p);
                p.user_id = u;
                update_profile(pool, event, &p).await;
            }
            45..=49 => {
                // Only role and bio (hybrid-v1 keywords) change.
                let u = pick(&mut rng, &users);
                let (role, bio) = random_role_and_bio(&mut rng);
                sqlx::query("UPDATE event_participants SET role = $3, bio = $4 WHERE event_id = $1 AND user_id = $2")
                    .bind(event)
                    .bind(u)
                    .bind(role)
                    .bind(bio)
                    .execute(pool)
                    .await
                    .expect("role and bio edit");
            }
            50..=59 => {
                let u = pick(&mut rng, &users);
                change(
                    pool,
                    "UPDATE event_participants SET status = 'left' WHERE event_id = $1 AND user_id = $2",
                    event,
                    &[u],
                )
                .await;
                left.push(u);
            }
            60..=64 if !left.is_empty() => {
                let u = left.swap_remove(rng.gen_range(0..left.len()));
                change(
                    pool,
                    "UPDATE event_participants SET status = 'active' WHERE event_id = $1 AND user_id = $2",
                    event,
                    &[u],
                )
                .await;
            }
            65..=67 => {
                let i = rng.gen_range(0..users.len());
                let u = users.swap_remove(i);
                change(
                    pool,
                    "DELETE FROM event_participants WHERE event_id = $1 AND user_id = $2",
                    event,
                    &[u],
                )
                .await;
            }
            68..=82 => {
                let (a, b) = (pick(&mut rng, &users), pick(&mut rng, &users));
                if a != b {
                    change(pool, "INSERT INTO match_exclusions (event_id, user_id, excluded_user_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", event, &[a, b]).await;
                    excluded.push((a, b));
                }
            }
            83..=87 if !excluded.is_empty() => {
                let (a, b) = excluded.swap_remove(rng.gen_range(0..excluded.len()));
                change(
                    pool,
                    "DELETE FROM match_exclusions WHERE event_id = $1 AND user_id = $2 AND excluded_user_id = $3",
                    event,
                    &[a, b],
                )
                .await;
            }
            88..=95 => {
                // Same-company collision written with other case and spacing.
                let (a, b) = (pick(&mut rng, &users), pick(&mut rng, &users));
                change(
                    pool,
                    "UPDATE event_participants SET company = upper(coalesce((SELECT company FROM event_participants
                        WHERE event_id = $1 AND user_id = $3), '')) || '  '
                      WHERE event_id = $1 AND user_id = $2",
                    event,
                    &[a, b],
                )
                .await;
            }
            96..=97 => {
                // Two edits in one transaction.
                let mut tx = pool.begin().await.expect("begin");
                for _ in 0..2 {
                    let mut p = random_profile(&mut rng, dims);
                    p.user_id = pick(&mut rng, &users);
                    sqlx::query("UPDATE event_participants SET interests = $3, embedding = $4 WHERE event_id = $1 AND user_id = $2")
                        .bind(event)
                        .bind(p.user_id)
                        .bind(&p.interests)
                        .bind(&p.embedding)
                        .execute(&mut *tx)
                        .await
                        .expect("edit in tx");
                }
                tx.commit().await.expect("commit");
            }
            _ => {
                // Settings change: K moves, every attendee is re-matched.
                let new_k: i16 = rng.gen_range(1..=4);
                sqlx::query("UPDATE events SET matches_per_user = $2 WHERE id = $1")
                    .bind(event)
                    .bind(new_k)
                    .execute(pool)
                    .await
                    .expect("settings");
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..15))).await;
    }

    stop.cancel();
    assert!(
        daemon.try_wait().expect("try_wait").is_none(),
        "seed {seed}: the daemon exited early"
    );
    daemon.kill().await.expect("SIGKILL daemon");
    kills.fetch_add(1, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("worker task");
    }
    assert!(
        kills.load(Ordering::Relaxed) >= 1,
        "seed {seed}: no worker process was killed"
    );
    // Let the killed workers' leases expire and finish everything (with the
    // provider healthy again, past the breakers' cool-down).
    // (The drain goes on until every row is done, cool-downs included.)
    if let Some(f) = fake {
        f.set_mode(provider::Mode::Healthy);
    }
    let final_opts = WorkerOptions {
        embedder: embedder.clone(),
        ..fast_options()
    };
    drain(pool, &final_opts, Duration::from_secs(60)).await;
    if fake.is_some() {
        let (current, total): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE pe.source_xid = p.change_xid), count(*)
               FROM event_participants p
               LEFT JOIN matchmaking_profile_embeddings pe ON pe.event_id = p.event_id AND pe.user_id = p.user_id
              WHERE p.event_id = $1 AND p.status = 'active' AND p.embedding IS NULL",
        )
        .bind(event)
        .fetch_one(pool)
        .await
        .expect("provider vectors");
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM matchmaking_queue WHERE event_id = $1 AND last_error LIKE '%without an embedding%'",
        )
        .bind(event)
        .fetch_one(pool)
        .await
        .expect("held rows");
        eprintln!("exactness: seed {seed}: {current} of {total} attendees without an application embedding have a current provider vector; {held} rows were held for one");
        assert!(current > 0, "seed {seed}: no provider vector was used");
    }
    let reclaimed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM matchmaking_queue WHERE event_id = $1 AND attempts > 1")
            .bind(event)
            .fetch_one(pool)
            .await
            .expect("count reclaimed");
    let by_daemon = daemon_processed(pool).await - daemon_before;
    let rows = assert_exact(
        pool,
        event,
        &format!("seed {seed} ({algorithm}, replay with EXACTNESS_SEED={seed})"),
    )
    .await;
    eprintln!(
        "exactness: seed {seed} ok: {algorithm}, {} attendees, {rows} match rows, {} kills, {reclaimed} rows retried or reclaimed, {} processed by the daemon",
        users.len(),
        kills.load(Ordering::Relaxed),
        by_daemon
    );
}

/// Rows processed so far by daemon drains (all events of the database).
async fn daemon_processed(pool: &PgPool) -> i64 {
    sqlx::query_scalar::<_, Option<i64>>("SELECT sum(processed)::bigint FROM matchmaking_runs WHERE command = 'daemon'")
        .fetch_one(pool)
        .await
        .expect("daemon runs")
        .unwrap_or(0)
}

/// One application write of the churn: `$1` is the event, `$2`… the users.
async fn change(pool: &PgPool, sql: &str, event: Uuid, users: &[Uuid]) {
    let mut q = sqlx::query(sql).bind(event);
    for u in users {
        q = q.bind(*u);
    }
    q.execute(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}
