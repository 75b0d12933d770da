//! Meeting rounds in the database: the schema's rules and the store's
//! reads and writes, and the `pair` command run as the worker role.

use crate::helpers::*;
use matchmaker::store::rounds::{self, NewRound, PairRow};
use sqlx::PgPool;
use uuid::Uuid;

fn row(user: Uuid, partner: Option<Uuid>, table: Option<i32>) -> PairRow {
    PairRow {
        user_id: user,
        partner_id: partner,
        score: partner.map(|_| 0.5),
        reasons: partner.map(|_| serde_json::json!({ "summary": "You are both interested in Rust." })),
        table_no: table,
    }
}

/// A round is written whole under the event's lock, read back in table
/// order, feeds the next round's "met before" and sit-out counts, and is
/// deleted with its pairs.
#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn rounds_round_trip_through_the_store(pool: PgPool) {
    let event = create_event(&pool, "rounds", "hybrid-v1", 3).await;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let p = random_profile(&mut rng, 8);
        insert_profile(&pool, event, &p).await;
        ids.push(p.user_id);
    }
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    assert_eq!(
        rounds::pairing_mode(&pool, event).await.unwrap().as_deref(),
        Some("any")
    );
    let mut tx = pool.begin().await.unwrap();
    rounds::lock_event(&mut tx, event).await.unwrap();
    let new = NewRound {
        round: 1,
        strategy: "optimal".into(),
        total_score: 0.5,
        upper_bound: 0.6,
        rows: vec![row(a, Some(b), Some(1)), row(b, Some(a), Some(1)), row(c, None, None)],
    };
    rounds::insert(&mut tx, event, &new).await.unwrap();
    tx.commit().await.unwrap();

    let listed = rounds::list(&pool, event).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].round, listed[0].pairs, listed[0].sat_out), (1, 1, 1));
    assert_eq!(listed[0].status, "complete");
    let read = rounds::pairs(&pool, event, 1).await.unwrap();
    assert_eq!(read.len(), 3);
    assert_eq!(read[2].user_id, c, "the sit-out comes last");
    let met = rounds::met_in_other_rounds(&pool, event, 2).await.unwrap();
    assert_eq!(met, vec![(a.min(b), a.max(b))]);
    assert!(rounds::met_in_other_rounds(&pool, event, 1).await.unwrap().is_empty());
    assert_eq!(
        rounds::sat_out_in_other_rounds(&pool, event, 2).await.unwrap(),
        vec![(c, 1)]
    );

    // A second round 1 is refused: rounds are redone by deleting first.
    let mut tx = pool.begin().await.unwrap();
    assert!(rounds::insert(&mut tx, event, &new).await.is_err());
    tx.rollback().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    assert!(rounds::delete(&mut tx, event, 1).await.unwrap());
    tx.commit().await.unwrap();
    assert!(
        rounds::pairs(&pool, event, 1).await.unwrap().is_empty(),
        "pairs go with their round"
    );
}

/// The schema refuses what a round cannot be: an unknown pairing mode, a
/// partner without a table, a pair row without its round.
#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn the_schema_refuses_malformed_rounds(pool: PgPool) {
    let event = create_event(&pool, "bad", "hybrid-v1", 3).await;
    let bad_mode = sqlx::query("UPDATE events SET pairing = 'everyone' WHERE id = $1")
        .bind(event)
        .execute(&pool)
        .await;
    assert!(bad_mode.is_err());
    sqlx::query("UPDATE events SET pairing = 'across-sides' WHERE id = $1")
        .bind(event)
        .execute(&pool)
        .await
        .unwrap();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let orphan = sqlx::query("INSERT INTO meeting_pairs (event_id, round, user_id) VALUES ($1, 7, $2)")
        .bind(event)
        .bind(a)
        .execute(&pool)
        .await;
    assert!(orphan.is_err(), "a pair row needs its round");
    let mut tx = pool.begin().await.unwrap();
    let new = NewRound {
        round: 1,
        strategy: "optimal".into(),
        total_score: 0.0,
        upper_bound: 0.0,
        rows: vec![row(a, Some(b), None)],
    };
    assert!(
        rounds::insert(&mut tx, event, &new).await.is_err(),
        "a partner without a table"
    );
}

/// `matchmaker pair` as the worker role, with extra environment.
fn pair(url: &str, envs: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_matchmaker"));
    cmd.arg("pair")
        .args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run matchmaker pair")
}

fn pair_json(url: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let o = pair(url, &[], &all);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("one JSON object")
}

async fn event_of(pool: &PgPool, code: &str, n: usize, seed: u64) -> Uuid {
    let event = create_event(pool, code, "hybrid-v1", 3).await;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    for _ in 0..n {
        insert_profile(pool, event, &random_profile(&mut rng, 8)).await;
    }
    event
}

/// 10 rounds through the command: no pair twice, everyone once per round,
/// and with an odd count nobody sits out twice.
async fn ten_rounds(pool: PgPool, n: usize) {
    let event = event_of(&pool, "ten", n, n as u64).await;
    let url = worker_url(&pool).await;
    let mut met = std::collections::HashSet::new();
    let mut sat = std::collections::HashMap::<Uuid, u32>::new();
    let mut odd = false;
    for round in 1..=10 {
        let j = pair_json(&url, &["--event", "ten"]);
        assert_eq!(j["round"], round);
        assert_eq!(j["computed"], true);
        let rows = rounds::pairs(&pool, event, round).await.unwrap();
        let users: std::collections::HashSet<Uuid> = rows.iter().map(|r| r.user_id).collect();
        assert_eq!(users.len(), rows.len(), "round {round}: one row per attendee");
        assert!(rows.len() >= n / 2, "round {round}: most attendees are eligible");
        odd = rows.len() % 2 == 1;
        for r in &rows {
            match r.partner_id {
                Some(p) => {
                    let back = rows.iter().find(|x| x.user_id == p).expect("partner has a row");
                    assert_eq!(back.partner_id, Some(r.user_id), "round {round}: pairs are mutual");
                    if r.user_id < p {
                        assert!(met.insert((r.user_id, p)), "round {round}: pair met before");
                    }
                }
                None => *sat.entry(r.user_id).or_default() += 1,
            }
        }
        let out = rows.iter().filter(|r| r.partner_id.is_none()).count();
        assert_eq!(out, rows.len() % 2, "round {round}: the fewest sit-outs");
    }
    assert_eq!(odd, n % 2 == 1, "every attendee is eligible");
    if odd {
        assert_eq!(sat.len(), 10, "ten different attendees sat out");
        assert!(sat.values().all(|&c| c == 1));
    }
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn ten_rounds_of_40_never_repeat_a_pair(pool: PgPool) {
    ten_rounds(pool, 40).await;
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn ten_rounds_of_41_rotate_the_sit_out(pool: PgPool) {
    ten_rounds(pool, 41).await;
}

/// `across-sides` pairs only attendees of different sides.
#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn across_sides_never_pairs_one_side(pool: PgPool) {
    let event = event_of(&pool, "mentor", 20, 7).await;
    sqlx::query("UPDATE events SET pairing = 'across-sides' WHERE id = $1")
        .bind(event)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE event_participants p SET side = CASE WHEN x.rn % 3 = 0 THEN 'mentor' ELSE 'mentee' END
           FROM (SELECT user_id, row_number() OVER (ORDER BY user_id) AS rn
                   FROM event_participants WHERE event_id = $1) x
          WHERE p.event_id = $1 AND p.user_id = x.user_id",
    )
    .bind(event)
    .execute(&pool)
    .await
    .unwrap();
    let sides: std::collections::HashMap<Uuid, String> =
        rounds::sides(&pool, event).await.unwrap().into_iter().collect();
    let url = worker_url(&pool).await;
    for round in 1..=3 {
        let j = pair_json(&url, &["--event", "mentor"]);
        assert!(j["pairs"].as_i64().unwrap() > 0);
        for r in rounds::pairs(&pool, event, round).await.unwrap() {
            if let Some(p) = r.partner_id {
                assert_ne!(sides[&r.user_id], sides[&p], "round {round}: two of one side");
            }
        }
    }
}

/// A second run prints the written round and changes nothing; `--force`
/// recomputes it; a future round and an unknown event are one-line errors.
#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn pair_is_idempotent_and_force_recomputes(pool: PgPool) {
    let event = event_of(&pool, "idem", 12, 11).await;
    let url = worker_url(&pool).await;
    let first = pair_json(&url, &["--event", "idem"]);
    let created = rounds::list(&pool, event).await.unwrap();
    let rows = rounds::pairs(&pool, event, 1).await.unwrap();
    let again = pair_json(&url, &["--event", "idem", "--round", "1"]);
    assert_eq!(again["computed"], false);
    assert_eq!(again["pair_list"], first["pair_list"]);
    assert_eq!(rounds::list(&pool, event).await.unwrap(), created);
    assert_eq!(rounds::pairs(&pool, event, 1).await.unwrap(), rows);
    let forced = pair_json(&url, &["--event", "idem", "--round", "1", "--force"]);
    assert_eq!(forced["computed"], true);
    let after = rounds::list(&pool, event).await.unwrap();
    assert_eq!(after.len(), 1);
    assert!(
        after[0].created_at > created[0].created_at,
        "the round was written again"
    );
    // `status --event` lists the event's rounds, for people and machines.
    let status = |json: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_matchmaker"));
        cmd.args(["status", "--event", "idem"])
            .env("DATABASE_URL", &url)
            .env("RUST_LOG", "warn");
        if json {
            cmd.arg("--json");
        }
        let o = cmd.output().expect("run matchmaker status");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).expect("UTF-8")
    };
    let text = status(false);
    let line = text
        .lines()
        .skip_while(|l| *l != "MEETING ROUNDS")
        .nth(1)
        .unwrap_or_else(|| panic!("no rounds section in:\n{text}"));
    assert!(line.trim_start().starts_with("round 1 "), "{line}");
    assert!(line.contains(&format!("{} pairs", after[0].pairs)), "{line}");
    let j: serde_json::Value = serde_json::from_str(&status(true)).expect("JSON");
    assert_eq!(j["rounds"].as_array().map(Vec::len), Some(1));
    assert_eq!(j["rounds"][0]["round"], 1);
    assert_eq!(j["rounds"][0]["strategy"], "optimal");
    let o = pair(&url, &[], &["--event", "idem", "--round", "3"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("the next round is 2"), "{err}");
    let o = pair(&url, &[], &["--event", "nope"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no event"));
}

/// A SIGKILL inside the transaction, after the insert, leaves no row of the
/// round; the next run writes the whole round.
#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn sigkill_leaves_no_round_or_the_whole_round(pool: PgPool) {
    let event = event_of(&pool, "kill", 15, 5).await;
    let url = worker_url(&pool).await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_matchmaker"))
        .args(["pair", "--event", "kill"])
        .env("DATABASE_URL", &url)
        .env("RUST_LOG", "warn")
        .env("MATCHMAKER_FAULT_PAIR_DELAY", "30s")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn pair");
    // Wait until the insert is in (its transaction holds the round's key).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction' AND query LIKE 'INSERT INTO meeting_pairs%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the insert never happened");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    // The server notices the dead client; its transaction rolls back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'INSERT INTO meeting_pairs%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if open == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the killed session lingers");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(rounds::list(&pool, event).await.unwrap().is_empty());
    assert!(rounds::pairs(&pool, event, 1).await.unwrap().is_empty());
    let j = pair_json(&url, &["--event", "kill"]);
    assert_eq!(j["round"], 1);
    let rows = rounds::pairs(&pool, event, 1).await.unwrap();
    let header = &rounds::list(&pool, event).await.unwrap()[0];
    assert_eq!(rows.len() as i32, 2 * header.pairs + header.sat_out);
    assert!(header.pairs > 0);
}

/// A round being planned holds no lock: a join (whose trigger takes the
/// event's lock) commits at once meanwhile. And when another run writes a
/// round during the plan, the first one notices under the lock, plans
/// again from the new rounds and writes the next round, repeating no pair.
#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn planning_holds_no_lock_and_a_concurrent_round_is_noticed(pool: PgPool) {
    let event = event_of(&pool, "slow", 12, 13).await;
    let url = worker_url(&pool).await;
    let mut slow = std::process::Command::new(env!("CARGO_BIN_EXE_matchmaker"))
        .args(["pair", "--event", "slow", "--json"])
        .env("DATABASE_URL", &url)
        .env("RUST_LOG", "warn")
        .env("MATCHMAKER_FAULT_PAIR_PLAN_DELAY", "4s")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn pair");
    // Its warning says when the plan is made and it sleeps before writing.
    let stderr = slow.stderr.take().expect("piped stderr");
    let (said, hear) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut rest = String::new();
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("MATCHMAKER_FAULT_PAIR_PLAN_DELAY") {
                let _ = said.send(());
            }
            rest.push_str(&line);
            rest.push('\n');
        }
        rest
    });
    hear.recv_timeout(std::time::Duration::from_secs(30))
        .expect("the slow run never finished its plan");
    // A join commits while the round is being planned.
    let t = std::time::Instant::now();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(99);
    insert_profile(&pool, event, &random_profile(&mut rng, 8)).await;
    assert!(
        t.elapsed() < std::time::Duration::from_secs(2),
        "the join waited {:?} for the planning run",
        t.elapsed()
    );
    // Another run writes round 1 meanwhile.
    let fast = pair_json(&url, &["--event", "slow"]);
    assert_eq!(fast["round"], 1);
    let o = slow.wait_with_output().expect("wait for the slow run");
    let log = reader.join().expect("stderr reader");
    assert!(o.status.success(), "{log}");
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(j["round"], 2, "the slow run planned again after round 1 appeared");
    let first = rounds::pairs(&pool, event, 1).await.unwrap();
    let met: std::collections::HashSet<(Uuid, Uuid)> = first
        .iter()
        .filter_map(|r| r.partner_id.map(|p| (r.user_id.min(p), r.user_id.max(p))))
        .collect();
    for r in rounds::pairs(&pool, event, 2).await.unwrap() {
        if let Some(p) = r.partner_id {
            assert!(
                !met.contains(&(r.user_id.min(p), r.user_id.max(p))),
                "round 2 repeats a pair of round 1"
            );
        }
    }
}

/// `MATCHMAKER_KERNEL` forces each of this CPU's kernel paths: every one
/// plans the same round with the same score bits (the reference order), and
/// a name the CPU lacks (of an exact or a first-pass path) is a one-line
/// error naming the ones it has.
#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn every_kernel_path_plans_the_same_round(pool: PgPool) {
    event_of(&pool, "paths", 30, 17).await;
    let url = worker_url(&pool).await;
    let mut plans = Vec::new();
    let names: Vec<&str> = matchmaker::matching::kernel::exact_paths()
        .iter()
        .map(|p| p.name)
        .collect();
    for name in &names {
        let o = pair(
            &url,
            &[("MATCHMAKER_KERNEL", name)],
            &["--event", "paths", "--round", "1", "--force", "--json"],
        );
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
        plans.push((name, j["pair_list"].clone(), j["total_score"].clone()));
    }
    for (name, list, total) in &plans[1..] {
        assert_eq!(list, &plans[0].1, "{name} and {} disagree", plans[0].0);
        assert_eq!(total, &plans[0].2, "{name}: total score bits");
    }
    // A name this CPU lacks: exit 1 and one line naming what it has.
    for (var, name, has) in [
        ("MATCHMAKER_KERNEL", "sse9", "portable"),
        ("MATCHMAKER_APPROX_KERNEL", "i4", "i8-portable"),
    ] {
        let o = pair(&url, &[(var, name)], &["--event", "paths"]);
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(&format!("{var}={name}")) && err.contains(has), "{err}");
    }
}
