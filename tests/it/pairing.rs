//! Meeting rounds in the database: the schema's rules and the store's
//! reads and writes (the `pair` command is not built yet).

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
    let met = rounds::met_before(&pool, event, 2).await.unwrap();
    assert_eq!(met, vec![(a.min(b), a.max(b))]);
    assert!(rounds::met_before(&pool, event, 1).await.unwrap().is_empty());
    assert_eq!(rounds::sat_out_before(&pool, event, 2).await.unwrap(), vec![(c, 1)]);

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
