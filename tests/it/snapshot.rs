//! What a full read of an event sends: the packed copy of an attendee's own
//! embedding (`matchmaking_vector_copies`) for exactly the row version it
//! was made from, the `real[]` otherwise.

use crate::helpers::*;
use matchmaker::store::snapshot::{self, Read};
use rand::SeedableRng;
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

async fn full_read(pool: &PgPool, event: Uuid) -> Read {
    let mut conn = pool.acquire().await.expect("connection");
    snapshot::read(&mut conn, event, None)
        .await
        .expect("full read")
        .expect("the event")
}

fn embedding_of(read: &Read, user: Uuid) -> Vec<f32> {
    let row = read
        .participants
        .iter()
        .find(|p| p.user_id == user)
        .expect("participant");
    row.embedding
        .as_ref()
        .expect("an embedding")
        .iter()
        .map(|x| x.expect("no NULL"))
        .collect()
}

fn le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[sqlx::test(migrator = "matchmaker::MIGRATOR")]
async fn a_full_read_uses_a_copy_for_its_row_version_only(pool: PgPool) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    let ev = create_event(&pool, "copies", "cosine-v1", 2).await;
    let mut people: Vec<Profile> = (0..12).map(|_| random_profile(&mut rng, 8)).collect();
    for p in &people {
        insert_profile(&pool, ev, p).await;
    }
    // No embedding of the application's own, and a two-dimensional one:
    // neither gets a copy.
    let mut bare = random_profile(&mut rng, 0);
    bare.embedding = None;
    insert_profile(&pool, ev, &bare).await;
    let square = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO event_participants (event_id, user_id, display_name, embedding)
         VALUES ($1, $2, 'square', '{{1,2},{3,4}}')",
    )
    .bind(ev)
    .bind(square)
    .execute(&pool)
    .await
    .unwrap();

    // The worker's first full read finds no copy and writes one per own
    // flat embedding, exactly its elements, for the row version it read.
    let first = full_read(&pool, ev).await;
    assert_eq!(first.copies_used, 0);
    assert_eq!(first.uncopied.len(), people.len());
    drain(&pool, &fast_options(), Duration::from_secs(60)).await;
    let copies: Vec<(Uuid, Vec<u8>, bool)> = sqlx::query_as(
        "SELECT c.user_id, c.vector, c.source_xid = p.change_xid
           FROM matchmaking_vector_copies c
           JOIN event_participants p ON (p.event_id, p.user_id) = (c.event_id, c.user_id)
          WHERE c.event_id = $1",
    )
    .bind(ev)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(copies.len(), people.len(), "one copy per own flat embedding");
    for (user, bytes, current) in &copies {
        let p = people
            .iter()
            .find(|p| p.user_id == *user)
            .expect("a copy of an attendee's own vector");
        assert_eq!(bytes, &le_bytes(p.embedding.as_ref().unwrap()));
        assert!(current, "copy made from the current row version");
    }
    let read = full_read(&pool, ev).await;
    assert_eq!((read.copies_used, read.uncopied.len()), (people.len(), 0));
    for p in &people {
        assert_eq!(&embedding_of(&read, p.user_id), p.embedding.as_ref().unwrap());
    }

    // The read takes what the copy holds (a copy altered behind the
    // worker's back shows through), so the real[] is not what it sent...
    let (a, b) = (people[0].user_id, people[1].user_id);
    let planted = vec![0.25f32; 8];
    sqlx::query("UPDATE matchmaking_vector_copies SET vector = $3 WHERE event_id = $1 AND user_id = $2")
        .bind(ev)
        .bind(a)
        .bind(le_bytes(&planted))
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(embedding_of(&full_read(&pool, ev).await, a), planted);

    // ...but only for the row version it was made from: an edit of the
    // embedding (a new change_xid) reads the new real[], and so does an
    // edit of anything else the worker reads.
    people[0].embedding = random_profile(&mut rng, 8).embedding;
    update_profile(&pool, ev, &people[0]).await;
    sqlx::query("UPDATE event_participants SET company = 'Elsewhere' WHERE event_id = $1 AND user_id = $2")
        .bind(ev)
        .bind(b)
        .execute(&pool)
        .await
        .unwrap();
    let read = full_read(&pool, ev).await;
    assert_eq!(&embedding_of(&read, a), people[0].embedding.as_ref().unwrap());
    assert_eq!(&embedding_of(&read, b), people[1].embedding.as_ref().unwrap());
    assert_eq!(read.copies_used, people.len() - 2);
    let mut stale: Vec<Uuid> = read
        .uncopied
        .iter()
        .map(|u| read.participants[u.index].user_id)
        .collect();
    stale.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(stale, want);

    // The next full read (this drain's) replaces both copies.
    drain(&pool, &fast_options(), Duration::from_secs(60)).await;
    let read = full_read(&pool, ev).await;
    assert_eq!((read.copies_used, read.uncopied.len()), (people.len(), 0));
    assert_eq!(&embedding_of(&read, a), people[0].embedding.as_ref().unwrap());
    assert_exact(&pool, ev, "after reads from copies").await;

    // Deleting the event takes its copies along.
    sqlx::query("DELETE FROM events WHERE id = $1")
        .bind(ev)
        .execute(&pool)
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM matchmaking_vector_copies")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}
