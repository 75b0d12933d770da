//! `matchmaker explain`: it agrees with the stored lists (it reads the live
//! rows with the worker's own read and scores with the worker's code), and
//! it names each reason a partner is missing.

use crate::helpers::*;
use rand::SeedableRng;
use serde_json::Value;
use sqlx::PgPool;
use std::process::Command;
use std::time::Duration;
use uuid::Uuid;

fn explain(url: &str, args: &[&str]) -> Value {
    let o = Command::new(env!("CARGO_BIN_EXE_matchmaker"))
        .arg("explain")
        .args(args)
        .arg("--json")
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run explain");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("explain --json")
}

fn why(url: &str, user: Uuid, partner: Uuid) -> Value {
    why_in(url, "why", user, partner)
}

fn why_in(url: &str, event: &str, user: Uuid, partner: Uuid) -> Value {
    let (user, partner) = (user.to_string(), partner.to_string());
    let r = explain(url, &["--event", event, "--user", &user, "--partner", &partner]);
    r["partner"]["why"].clone()
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn explain_agrees_with_the_stored_lists_and_names_every_reason(pool: PgPool) {
    let url = worker_url(&pool).await;
    let ev = create_event(&pool, "why", "hybrid-v1", 3).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let mut people = Vec::new();
    for _ in 0..40 {
        let p = random_profile(&mut rng, 8);
        insert_profile(&pool, ev, &p).await;
        people.push(p);
    }
    // Reasons to construct: an exclusion each way, a shared company, a
    // leaver, a broken embedding.
    let (a, b, c, d, e, f) = (
        people[0].user_id,
        people[1].user_id,
        people[2].user_id,
        people[3].user_id,
        people[4].user_id,
        people[5].user_id,
    );
    for (x, y) in [(a, b), (c, a)] {
        sqlx::query("INSERT INTO match_exclusions (event_id, user_id, excluded_user_id) VALUES ($1, $2, $3)")
            .bind(ev)
            .bind(x)
            .bind(y)
            .execute(&pool)
            .await
            .expect("exclusion");
    }
    sqlx::query("UPDATE event_participants SET company = 'Shared Co' WHERE event_id = $1 AND user_id IN ($2, $3)")
        .bind(ev)
        .bind(a)
        .bind(d)
        .execute(&pool)
        .await
        .expect("company");
    sqlx::query("UPDATE event_participants SET status = 'left' WHERE event_id = $1 AND user_id = $2")
        .bind(ev)
        .bind(e)
        .execute(&pool)
        .await
        .expect("leave");
    sqlx::query(
        "UPDATE event_participants SET embedding = ARRAY[1, 'NaN']::real[] WHERE event_id = $1 AND user_id = $2",
    )
    .bind(ev)
    .bind(f)
    .execute(&pool)
    .await
    .expect("broken embedding");
    drain(&pool, &fast_options(), Duration::from_secs(60)).await;

    // Every attendee: the explained list is the stored one, entry by entry.
    for p in &people {
        let r = explain(&url, &["--event", "why", "--user", &p.user_id.to_string()]);
        let stored: Vec<(Uuid, f32)> = sqlx::query_as(
            "SELECT matched_user_id, score FROM user_matches WHERE event_id = $1 AND user_id = $2 ORDER BY rank",
        )
        .bind(ev)
        .bind(p.user_id)
        .fetch_all(&pool)
        .await
        .expect("stored list");
        let list: Vec<(Uuid, f32)> = r["list"]
            .as_array()
            .expect("list")
            .iter()
            .map(|e| {
                let u = e["user"].as_str().and_then(|s| s.parse().ok()).expect("user id");
                (u, e["score"].as_f64().expect("score") as f32)
            })
            .collect();
        assert_eq!(list, stored, "explain disagrees with user_matches for {}", p.user_id);
        assert_eq!(r["stale"], false, "{r}");
        if !list.is_empty() {
            assert!(r["list"][0]["reasons"].is_object(), "each entry carries its terms: {r}");
        }
    }

    // Every reason.
    let first = explain(&url, &["--event", "why", "--user", &a.to_string()]);
    let top: Uuid = first["list"][0]["user"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("a's first");
    assert_eq!(why(&url, a, top)["reason"], "in_list");
    assert_eq!(why(&url, a, top)["rank"], 1);
    assert_eq!(why(&url, a, b)["reason"], "excluded");
    assert_eq!(why(&url, a, b)["by"], "user");
    assert_eq!(why(&url, a, c)["reason"], "excluded");
    assert_eq!(why(&url, a, c)["by"], "partner");
    assert_eq!(why(&url, a, d)["reason"], "same_company");
    assert_eq!(why(&url, a, e)["reason"], "inactive");
    assert_eq!(why(&url, a, e)["who"], "partner");
    // hybrid-v1 scores a broken embedding without its term; cosine-v1
    // cannot score it at all.
    assert_ne!(why(&url, a, f)["reason"], "no_valid_embedding");
    let cos = create_event(&pool, "cos", "cosine-v1", 3).await;
    let mut two = Vec::new();
    for _ in 0..2 {
        let p = random_profile(&mut rng, 8);
        insert_profile(&pool, cos, &p).await;
        two.push(p.user_id);
    }
    sqlx::query("UPDATE event_participants SET embedding = NULL WHERE event_id = $1 AND user_id = $2")
        .bind(cos)
        .bind(two[1])
        .execute(&pool)
        .await
        .expect("no embedding");
    let w = why_in(&url, "cos", two[0], two[1]);
    assert_eq!(w["reason"], "no_valid_embedding", "{w}");
    assert_eq!(w["who"], "partner", "{w}");
    assert_eq!(why(&url, a, Uuid::new_v4())["reason"], "not_in_event");
    // Someone eligible but not in the list: below the K-th entry, with both
    // scores and the gap.
    let listed: Vec<String> = first["list"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["user"].as_str().map(str::to_string))
        .collect();
    let below = people[6..]
        .iter()
        .map(|p| p.user_id)
        .find(|u| !listed.contains(&u.to_string()))
        .expect("someone not in a's list");
    let w = why(&url, a, below);
    assert!(w["reason"] == "below_kth" || w["reason"] == "not_selected", "{w}");
    if w["reason"] == "below_kth" {
        let (s, k, g) = (w["score"].as_f64(), w["kth_score"].as_f64(), w["gap"].as_f64());
        let (s, k, g) = (s.expect("score"), k.expect("kth"), g.expect("gap"));
        assert!(s < k && (k - s - g).abs() < 1e-5, "{w}");
    }

    // A change not yet processed: the stored list is stale, and it says so.
    let mut changed = people[7].clone();
    changed.interests = vec!["something else entirely".into()];
    changed.embedding = random_profile(&mut rng, 8).embedding;
    update_profile(&pool, ev, &changed).await;
    let r = explain(&url, &["--event", "why", "--user", &changed.user_id.to_string()]);
    if r["stale"] == true {
        assert!(r["notice"].as_str().unwrap_or("").contains("pending queue row"), "{r}");
    }
    assert_eq!(r["pending"], true, "{r}");
}
