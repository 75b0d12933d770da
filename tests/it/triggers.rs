//! What the triggers enqueue (and never fan out), what a leave or an
//! exclusion removes at once, and that unchanged match rows keep their
//! identity across updates.

use crate::helpers::*;
use rand::SeedableRng;
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

async fn pending(pool: &PgPool) -> Vec<(Uuid, String, i16)> {
    sqlx::query_as("SELECT user_id, reason, priority FROM matchmaking_queue WHERE status = 'pending' ORDER BY user_id")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn clear_queue(pool: &PgPool) {
    sqlx::query("DELETE FROM matchmaking_queue")
        .execute(pool)
        .await
        .unwrap();
}

async fn matched_event(pool: &PgPool, n: usize, k: i16) -> (Uuid, Vec<Uuid>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(n as u64);
    let ev = create_event(pool, "trig", "cosine-v1", k).await;
    let mut users = Vec::new();
    for _ in 0..n {
        let p = random_profile(&mut rng, 6);
        insert_profile(pool, ev, &p).await;
        users.push(p.user_id);
    }
    drain(pool, &fast_options(), Duration::from_secs(30)).await;
    assert_exact(pool, ev, "initial").await;
    clear_queue(pool).await;
    (ev, users)
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn joins_and_edits_enqueue_one_row_with_the_highest_priority(pool: PgPool) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let ev = create_event(&pool, "q", "hybrid-v1", 3).await;
    let mut p = random_profile(&mut rng, 0);
    insert_profile(&pool, ev, &p).await;
    assert_eq!(pending(&pool).await, vec![(p.user_id, "joined".into(), 3)]);
    // An edit while the join is pending keeps one row at the higher priority.
    p.interests = vec!["rust".into()];
    update_profile(&pool, ev, &p).await;
    assert_eq!(pending(&pool).await, vec![(p.user_id, "joined".into(), 3)]);
    clear_queue(&pool).await;
    // A change that does not affect scores enqueues nothing.
    sqlx::query("UPDATE event_participants SET display_name = 'New Name'")
        .execute(&pool)
        .await
        .unwrap();
    assert!(pending(&pool).await.is_empty());
    // Role and bio are hybrid-v1 keywords: editing either enqueues the attendee.
    for edit in [
        "UPDATE event_participants SET role = 'CTO'",
        "UPDATE event_participants SET bio = 'Hi'",
        "UPDATE event_participants SET bio = NULL",
    ] {
        sqlx::query(edit).execute(&pool).await.unwrap();
        assert_eq!(
            pending(&pool).await,
            vec![(p.user_id, "profile_updated".into(), 2)],
            "{edit}"
        );
        clear_queue(&pool).await;
    }
    // Writing the same role again changes nothing.
    sqlx::query("UPDATE event_participants SET role = 'CTO', bio = NULL")
        .execute(&pool)
        .await
        .unwrap();
    assert!(pending(&pool).await.is_empty());
    p.offering = vec!["mentoring".into()];
    update_profile(&pool, ev, &p).await;
    assert_eq!(pending(&pool).await, vec![(p.user_id, "profile_updated".into(), 2)]);
    // A rematch request for the same attendee does not lower it.
    sqlx::query("SELECT matchmaker_enqueue($1, ARRAY[$2]::uuid[], 'rematch', 1::smallint)")
        .bind(ev)
        .bind(p.user_id)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(pending(&pool).await, vec![(p.user_id, "profile_updated".into(), 2)]);
    // Once claimed, a further edit makes a new pending row (never lost).
    let connect = worker_connect(&pool).await;
    let mut conn = sqlx::Connection::connect_with(&connect).await.unwrap();
    let claimed = matchmaker::store::queue::claim(&mut conn, ev, 10, "w", Duration::from_secs(60), &[])
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    p.offering = vec!["hiring".into()];
    update_profile(&pool, ev, &p).await;
    assert_eq!(pending(&pool).await, vec![(p.user_id, "profile_updated".into(), 2)]);
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn a_leave_removes_the_attendee_at_once_and_rematches_only_who_lost_them(pool: PgPool) {
    let (ev, users) = matched_event(&pool, 40, 3).await;
    let gone = users[0];
    let holders: Vec<Uuid> =
        sqlx::query_scalar("SELECT user_id FROM user_matches WHERE matched_user_id = $1 ORDER BY user_id")
            .bind(gone)
            .fetch_all(&pool)
            .await
            .unwrap();
    sqlx::query("UPDATE event_participants SET status = 'left' WHERE user_id = $1")
        .bind(gone)
        .execute(&pool)
        .await
        .unwrap();
    let left_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM user_matches WHERE $1 IN (user_id, matched_user_id)")
        .bind(gone)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        left_rows, 0,
        "the leaver must vanish from every list in the same transaction"
    );
    let mut expected: Vec<(Uuid, String, i16)> = holders.iter().map(|u| (*u, "rematch".to_string(), 1)).collect();
    expected.push((gone, "rematch".into(), 2));
    expected.sort();
    assert_eq!(
        pending(&pool).await,
        expected,
        "only the losers (and the leaver) are enqueued"
    );
    drain(&pool, &fast_options(), Duration::from_secs(30)).await;
    assert_exact(&pool, ev, "after leave").await;

    // Deleting the row works the same way.
    let gone = users[1];
    sqlx::query("DELETE FROM event_participants WHERE user_id = $1")
        .bind(gone)
        .execute(&pool)
        .await
        .unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM user_matches WHERE $1 IN (user_id, matched_user_id)")
        .bind(gone)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    drain(&pool, &fast_options(), Duration::from_secs(30)).await;
    assert_exact(&pool, ev, "after delete").await;

    // Rejoining is a join.
    sqlx::query("UPDATE event_participants SET status = 'active' WHERE user_id = $1")
        .bind(users[0])
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(pending(&pool).await, vec![(users[0], "joined".into(), 3)]);
    drain(&pool, &fast_options(), Duration::from_secs(30)).await;
    assert_exact(&pool, ev, "after rejoin").await;
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn an_exclusion_drops_the_pair_both_ways_at_once(pool: PgPool) {
    let (ev, _) = matched_event(&pool, 30, 3).await;
    let (a, b): (Uuid, Uuid) =
        sqlx::query_as("SELECT user_id, matched_user_id FROM user_matches WHERE rank = 1 LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    // b blocks a: works in both directions.
    sqlx::query("INSERT INTO match_exclusions (event_id, user_id, excluded_user_id) VALUES ($1, $2, $3)")
        .bind(ev)
        .bind(b)
        .bind(a)
        .execute(&pool)
        .await
        .unwrap();
    let pair: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM user_matches WHERE (user_id, matched_user_id) IN (($1, $2), ($2, $1))",
    )
    .bind(a)
    .bind(b)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(pair, 0);
    let mut expected = vec![(a, "rematch".to_string(), 1), (b, "rematch".to_string(), 1)];
    expected.sort();
    assert_eq!(pending(&pool).await, expected);
    drain(&pool, &fast_options(), Duration::from_secs(30)).await;
    assert_exact(&pool, ev, "after exclusion").await;
    // Lifting it lets them match again.
    sqlx::query("DELETE FROM match_exclusions")
        .execute(&pool)
        .await
        .unwrap();
    drain(&pool, &fast_options(), Duration::from_secs(30)).await;
    assert_exact(&pool, ev, "after lifting the exclusion").await;
    let back: i64 = sqlx::query_scalar("SELECT count(*) FROM user_matches WHERE user_id = $1 AND matched_user_id = $2")
        .bind(a)
        .bind(b)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(back, 1);
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn settings_changes_rematch_the_event_with_the_new_algorithm(pool: PgPool) {
    let (ev, users) = matched_event(&pool, 30, 3).await;
    sqlx::query("UPDATE events SET name = 'renamed' WHERE id = $1")
        .bind(ev)
        .execute(&pool)
        .await
        .unwrap();
    assert!(pending(&pool).await.is_empty(), "a rename changes no score");
    sqlx::query("UPDATE events SET algorithm = 'hybrid-v1', matches_per_user = 5 WHERE id = $1")
        .bind(ev)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(pending(&pool).await.len(), users.len());
    drain(&pool, &fast_options(), Duration::from_secs(30)).await;
    assert_exact(&pool, ev, "after algorithm change").await;
    let versions: Vec<String> = sqlx::query_scalar("SELECT DISTINCT algorithm_version FROM user_matches")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(versions, vec!["hybrid-v1".to_string()]);
    let ranks: Option<i16> = sqlx::query_scalar("SELECT max(rank) FROM user_matches")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(ranks, Some(5));
    // An unknown algorithm is refused at the source.
    let err = sqlx::query("UPDATE events SET algorithm = 'magic-v9' WHERE id = $1")
        .bind(ev)
        .execute(&pool)
        .await;
    assert!(err.is_err());
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn a_newcomer_rewrites_only_what_it_changes_and_rows_keep_their_identity(pool: PgPool) {
    let (ev, _) = matched_event(&pool, 50, 3).await;
    let before: Vec<(i64, Uuid, Uuid, i16)> =
        sqlx::query_as("SELECT id, user_id, matched_user_id, rank FROM user_matches ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    // A newcomer whose embedding copies someone's: they enter at least that list.
    let twin: (Uuid, Vec<f32>) = sqlx::query_as("SELECT user_id, embedding FROM event_participants LIMIT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    let newcomer = Profile {
        user_id: Uuid::new_v4(),
        company: Some("Newco".into()),
        role: None,
        bio: None,
        interests: vec![],
        looking_for: vec![],
        offering: vec![],
        embedding: Some(twin.1.clone()),
    };
    insert_profile(&pool, ev, &newcomer).await;
    let runs = drain(&pool, &fast_options(), Duration::from_secs(30)).await;
    assert_eq!(runs.iter().map(|r| r.totals.processed).sum::<i64>(), 1);
    assert_exact(&pool, ev, "after the newcomer").await;
    let entered: Vec<Uuid> = sqlx::query_scalar("SELECT user_id FROM user_matches WHERE matched_user_id = $1")
        .bind(newcomer.user_id)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(entered.contains(&twin.0));
    let after: Vec<(i64, Uuid, Uuid, i16)> =
        sqlx::query_as("SELECT id, user_id, matched_user_id, rank FROM user_matches ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    // Every surviving pair kept its row id; only the bumped entries are gone.
    for (id, u, m, _) in &after {
        if let Some(old) = before.iter().find(|r| r.1 == *u && r.2 == *m) {
            assert_eq!(old.0, *id, "row ({u}, {m}) was recreated");
        }
    }
    let removed = before.iter().filter(|r| !after.iter().any(|a| a.0 == r.0)).count();
    assert_eq!(removed, entered.len(), "one row bumped per list the newcomer entered");
    // The lists nobody touched were not rewritten at all.
    let rewritten: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT user_id) FROM user_matches WHERE updated_at > (SELECT max(created_at) FROM user_matches WHERE matched_user_id <> $1 AND user_id <> $1)",
    )
    .bind(newcomer.user_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        rewritten as usize <= entered.len() + 1,
        "{rewritten} lists rewritten for {} entries",
        entered.len()
    );
}
