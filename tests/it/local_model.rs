//! The local embedding provider (`--embeddings-model-dir`) with the real
//! all-MiniLM-L6-v2 folder: vectors against an independent NumPy forward
//! pass, determinism (batch composition, thread count), the worker matching a
//! cosine-v1 event through it exactly, the cache across runs, the deadline
//! with a slow model, and start-up errors for a missing or corrupt folder.
//!
//! `scripts/test.sh` fetches the model (`scripts/fetch-model.sh`), builds
//! the reference (`scripts/model-reference.sh`) and sets
//! `MATCHMAKER_TEST_MODEL_DIR` and `MATCHMAKER_TEST_MODEL_REFERENCE`;
//! without them these tests fail and say so (they never skip).

use crate::helpers::*;
use matchmaker::embeddings::{EmbedError, Embedder, LocalModel, ProfileText};
use matchmaker::worker::WorkerOptions;
use matchmaker::MIGRATOR;
use rand::rngs::StdRng;
use rand::SeedableRng;
use sqlx::PgPool;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

fn env_path(var: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => panic!(
            "{var} is not set: run the tests with `bash scripts/test.sh`, which fetches the model \
             (scripts/fetch-model.sh) and builds the NumPy reference (scripts/model-reference.sh)"
        ),
    }
}

fn model_dir() -> PathBuf {
    env_path("MATCHMAKER_TEST_MODEL_DIR")
}

fn load_model() -> LocalModel {
    let dir = model_dir();
    match LocalModel::load(&dir) {
        Ok(m) => m,
        Err(e) => panic!("cannot load the test model from {}: {e:#}", dir.display()),
    }
}

#[derive(serde::Deserialize)]
struct Reference {
    max_seq_length: usize,
    texts: Vec<String>,
    vectors: Vec<Vec<f64>>,
}

fn reference() -> Reference {
    let path = env_path("MATCHMAKER_TEST_MODEL_REFERENCE");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not a reference file: {e}", path.display()))
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * y).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn bits(v: &[Vec<f32>]) -> Vec<Vec<u32>> {
    v.iter().map(|x| x.iter().map(|f| f.to_bits()).collect()).collect()
}

#[test]
fn vectors_match_an_independent_numpy_forward_pass() {
    let model = load_model();
    let r = reference();
    assert_eq!(r.texts.len(), 50);
    assert_eq!(model.max_tokens(), r.max_seq_length);
    assert_eq!(model.dimensions(), 384);
    assert!(
        model.model_id().starts_with("local:all-MiniLM-L6-v2@"),
        "{}",
        model.model_id()
    );
    let texts: Vec<&str> = r.texts.iter().map(String::as_str).collect();
    let got = model.embed(&texts).expect("embed");
    let mut worst = (1.0f64, "");
    for ((t, v), want) in texts.iter().zip(&got).zip(&r.vectors) {
        assert_eq!(v.len(), want.len(), "{t:?}");
        let c = cosine(v, want);
        if c < worst.0 {
            worst = (c, t);
        }
        assert!(c >= 0.9999, "cosine {c} to the NumPy reference for {t:?}");
    }
    eprintln!("worst cosine to the reference: {:.7} ({:?})", worst.0, worst.1);
    // Truncation happened where it should: the long texts hit the limit.
    let toks = model.tokenize(&texts).expect("tokenize");
    assert_eq!(toks.iter().map(|t| t.len()).max(), Some(r.max_seq_length));
    // Meaning, not shared words: the two storage phrasings are close, the
    // rocket one is not.
    let c = |a: usize, b: usize| cosine(&got[a], &r.vectors[b]);
    assert!(c(2, 3) > 0.5 && c(2, 5) < 0.2, "{} {}", c(2, 3), c(2, 5));
}

#[test]
fn a_text_gets_the_same_bits_alone_and_inside_any_batch() {
    let model = load_model();
    let r = reference();
    let texts: Vec<&str> = r.texts.iter().map(String::as_str).collect();
    let together = model.embed(&texts).expect("embed together");
    let reversed: Vec<&str> = texts.iter().rev().copied().collect();
    let mut back = model.embed(&reversed).expect("embed reversed");
    back.reverse();
    assert_eq!(bits(&together), bits(&back));
    for (i, t) in texts.iter().enumerate() {
        let alone = model.embed(&[t]).expect("embed alone");
        assert_eq!(
            bits(&alone)[0],
            bits(&together)[i..=i][0],
            "text {i} {t:?} alone differs"
        );
    }
    // All 50, of many lengths, side by side in one encoder call (no padding).
    let tokens = model.tokenize(&texts).expect("tokenize");
    let mut lens: Vec<usize> = tokens.iter().map(|t| t.len()).collect();
    lens.sort_unstable();
    lens.dedup();
    assert!(lens.len() > 10, "the texts have {} lengths", lens.len());
    let seqs: Vec<_> = tokens.iter().collect();
    let one_call = model.embed_tokens(&seqs).expect("one call");
    assert_eq!(bits(&one_call), bits(&together));
    // With copies of one length in one encoder call, too.
    let same = vec![texts[30]; 9];
    let many = model.embed(&same).expect("embed copies");
    assert!(bits(&many).iter().all(|b| *b == bits(&together)[30]));
}

/// Run in a child process with `RAYON_NUM_THREADS` set: writes the vectors.
const CHILD_OUT: &str = "MATCHMAKER_TEST_CHILD_OUT";

#[test]
fn the_thread_count_does_not_change_the_bits() {
    let r = reference();
    let texts: Vec<&str> = r.texts.iter().map(String::as_str).collect();
    if let Some(out) = std::env::var_os(CHILD_OUT) {
        let v = load_model().embed(&texts).expect("embed");
        std::fs::write(out, serde_json::to_vec(&bits(&v)).expect("json")).expect("write");
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let mut seen: Vec<Vec<Vec<u32>>> = Vec::new();
    for threads in ["1", "2", "3"] {
        let out = std::env::temp_dir().join(format!("mm-threads-{}-{threads}.json", std::process::id()));
        let status = Command::new(&exe)
            .args([
                "local_model::the_thread_count_does_not_change_the_bits",
                "--exact",
                "--test-threads=1",
            ])
            .env(CHILD_OUT, &out)
            .env("RAYON_NUM_THREADS", threads)
            .status()
            .expect("run the child");
        assert!(status.success(), "child with {threads} thread(s) failed");
        let bytes = std::fs::read(&out).expect("child output");
        let _ = std::fs::remove_file(&out);
        seen.push(serde_json::from_slice(&bytes).expect("child json"));
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "bits differ between thread counts"
    );
}

fn local_embedder(model: LocalModel) -> Arc<Embedder> {
    Arc::new(Embedder::local(model))
}

fn text_of(p: &Profile) -> ProfileText {
    ProfileText {
        role: p.role.clone(),
        company: p.company.clone(),
        interests: p.interests.clone(),
        looking_for: p.looking_for.clone(),
        offering: p.offering.clone(),
        bio: p.bio.clone(),
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_cosine_event_without_application_embeddings_is_matched_exactly(pool: PgPool) {
    let model = load_model();
    let id = model.model_id().to_string();
    let embedder = local_embedder(model);
    // A lease long enough for a loaded CI machine: the provider gets half of
    // it per batch (a shorter one holds rows for the deadline, as it should,
    // and they are embedded by a later batch; the counts below then differ).
    let opts = WorkerOptions {
        batch_size: 10,
        embedder: Some(embedder.clone()),
        lease: Duration::from_secs(60),
        ..fast_options()
    };
    let event = create_event(&pool, "local-a", "cosine-v1", 3).await;
    let mut rng = StdRng::seed_from_u64(12);
    let mut people = Vec::new();
    for i in 0..30 {
        let mut p = random_profile(&mut rng, 0);
        p.embedding = None;
        p.bio = Some(format!("Attendee {i}: {}", p.bio.clone().unwrap_or_default()));
        insert_profile(&pool, event, &p).await;
        people.push(p);
    }
    let run = run_once(&pool, &opts).await;
    assert_eq!(run.totals.processed, 30);
    let e = &run.totals.embeddings;
    assert_eq!((e.inputs, e.cache_misses, e.cache_hits), (30, 30, 0));
    assert_eq!(e.vectors_cached, 30);
    assert!(e.provider_calls >= 3 && e.tokens > 0, "{e:?}");
    let matched: i64 = sqlx::query_scalar("SELECT count(DISTINCT user_id) FROM user_matches WHERE event_id = $1")
        .bind(event)
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(matched, 30);
    assert_exact(&pool, event, "cosine-v1 through the local model").await;

    // The stored vector is the model's for the rendered text, bit for bit
    // (embedded here alone, there inside a batch), under the model's id.
    let (stored, model_col): (Vec<f32>, String) = sqlx::query_as(
        "SELECT embedding, model FROM matchmaking_profile_embeddings WHERE event_id = $1 AND user_id = $2",
    )
    .bind(event)
    .bind(people[0].user_id)
    .fetch_one(&pool)
    .await
    .expect("stored");
    assert_eq!(model_col, id);
    let local = embedder.local_model().expect("local");
    let alone = local.embed(&[text_of(&people[0]).render().as_str()]).expect("embed");
    assert_eq!(
        stored.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        alone[0].iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );

    // A second event with the same texts, from a new embedder (a new
    // process): everything from the cache, nothing embedded.
    let again = local_embedder(load_model());
    let opts2 = WorkerOptions {
        batch_size: 10,
        embedder: Some(again.clone()),
        lease: Duration::from_secs(60),
        ..fast_options()
    };
    let b = create_event(&pool, "local-b", "cosine-v1", 3).await;
    for p in &people {
        let q = Profile {
            user_id: Uuid::new_v4(),
            ..p.clone()
        };
        insert_profile(&pool, b, &q).await;
    }
    let run = run_once(&pool, &opts2).await;
    assert_eq!(run.totals.processed, 30);
    let e = &run.totals.embeddings;
    assert_eq!(
        (e.cache_hits, e.cache_misses, e.provider_calls, e.vectors_received),
        (30, 0, 0, 0)
    );
    assert_exact(&pool, b, "second event from the cache").await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_slow_model_stops_at_the_deadline_and_keeps_what_it_computed(pool: PgPool) {
    let embedder = Embedder::local(load_model().with_chunk_delay(Duration::from_millis(1000)));
    // 640 distinct short texts: 10 chunks of 64 (the text cap), each 1 s or
    // more. Short, so that the model's own time stays small next to the
    // delay even on a machine busy with other tests.
    let per_chunk = matchmaker::embeddings::local::CHUNK_TEXTS;
    let n = 10 * per_chunk;
    let profiles: Vec<ProfileText> = (0..n)
        .map(|i| ProfileText {
            bio: Some(format!("bio {i}")),
            ..ProfileText::default()
        })
        .collect();
    let started = tokio::time::Instant::now();
    let got = embedder
        .embed(&pool, &profiles, Some(started + Duration::from_millis(5000)))
        .await
        .expect("embed");
    let took = started.elapsed();
    // All 10 chunks take at least 10 s. A chunk starts only when the last
    // one's time per token says it ends by the deadline (5 s), so the call
    // ends near it; under load an estimate can be off by a chunk or two,
    // which is slack here, not a failure (no timing test on a shared machine).
    assert!(
        took < Duration::from_millis(14_000),
        "took {took:?}: the deadline did not stop it"
    );
    let ok = got.iter().filter(|r| r.is_ok()).count();
    let late = got
        .iter()
        .filter(|r| matches!(r, Err(EmbedError::DeadlineExceeded)))
        .count();
    assert!(
        ok >= per_chunk && ok % per_chunk == 0 && late >= 4 * per_chunk && ok + late == n,
        "ok {ok}, late {late}"
    );
    assert!(got
        .iter()
        .all(|r| r.as_ref().err().is_none_or(EmbedError::is_transient)));
    assert_eq!(embedder.stats().vectors_cached, ok as u64);
    // The next call finds those in the cache and embeds only the rest.
    let got = embedder.embed(&pool, &profiles, None).await.expect("embed");
    assert!(got.iter().all(Result::is_ok));
    let s = embedder.stats();
    assert_eq!(s.cache_hits, ok as u64);
    assert_eq!(s.vectors_cached, n as u64);
}

/// `matchmaker run` processes embedding with the local model, two of them
/// SIGKILLed once they have stored vectors (mid-run: model loaded, batches
/// committed, others claimed), then plain runs until the queue is empty:
/// every list equals the brute force on the stored vectors, and every
/// attendee has one under the model's id.
#[sqlx::test(migrator = "MIGRATOR")]
async fn run_processes_with_the_local_model_survive_sigkill(pool: PgPool) {
    let event = create_event(&pool, "local-kill", "cosine-v1", 3).await;
    let mut rng = StdRng::seed_from_u64(23);
    for i in 0..24 {
        let mut p = random_profile(&mut rng, 0);
        p.embedding = None;
        p.bio = Some(format!("Attendee {i}: {}", p.bio.clone().unwrap_or_default()));
        insert_profile(&pool, event, &p).await;
    }
    let url = worker_url(&pool).await;
    let dir = model_dir();
    let run = |max_runtime: &str| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_matchmaker"))
            .args([
                "run",
                "--batch-size",
                "4",
                "--lease",
                "2s",
                "--max-runtime",
                max_runtime,
            ])
            .arg("--embeddings-model-dir")
            .arg(&dir)
            .env("DATABASE_URL", &url)
            .env_remove("EMBEDDINGS_URL")
            .env_remove("EMBEDDINGS_MODEL_DIR")
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn matchmaker run")
    };
    let stored = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM matchmaking_profile_embeddings WHERE event_id = $1")
            .bind(event)
            .fetch_one(&pool)
            .await
            .expect("count vectors")
    };
    let mut kills = 0;
    for _ in 0..2 {
        let before = stored().await;
        let mut child = run("60s");
        let started = std::time::Instant::now();
        while stored().await == before && child.try_wait().expect("try_wait").is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no vector stored in 120 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if child.try_wait().expect("try_wait").is_none() {
            child.kill().await.expect("SIGKILL");
            kills += 1;
        }
    }
    assert!(kills >= 1, "no run was killed while it worked");
    let started = std::time::Instant::now();
    while open_rows(&pool).await > 0 {
        assert!(started.elapsed() < Duration::from_secs(300), "the queue did not drain");
        let status = run("30s").wait().await.expect("wait matchmaker run");
        assert!(status.success(), "run failed: {status}");
    }
    let missing: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_participants p
          WHERE p.event_id = $1 AND NOT EXISTS (
                SELECT 1 FROM matchmaking_profile_embeddings pe
                 WHERE pe.event_id = p.event_id AND pe.user_id = p.user_id AND pe.model = $2)",
    )
    .bind(event)
    .bind(load_model().model_id())
    .fetch_one(&pool)
    .await
    .expect("missing vectors");
    assert_eq!(missing, 0, "attendees without a local vector");
    assert_exact(&pool, event, "local model, killed run processes").await;
}

fn matchmaker(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_matchmaker"))
        .args(args)
        .env("DATABASE_URL", "postgres://127.0.0.1:1/never-reached")
        .env_remove("EMBEDDINGS_URL")
        .env_remove("EMBEDDINGS_MODEL_DIR")
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .output()
        .expect("run matchmaker")
}

#[test]
fn a_missing_or_corrupt_model_folder_is_one_line_naming_the_file() {
    let src = model_dir();
    let dir = std::env::temp_dir().join(format!("mm-bad-model-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let d = dir.to_string_lossy().to_string();
    let check = |want: &str| {
        let o = matchmaker(&["run", "--embeddings-model-dir", &d]);
        let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(want), "{want:?} not in {err}");
    };
    check("has no config.json");
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.join(f)).expect("copy");
    }
    check("has no model.safetensors");
    std::fs::write(dir.join("model.safetensors"), b"\x08\0\0\0\0\0\0\0{garbage").expect("write");
    check("model.safetensors is not a valid safetensors file");
    std::fs::write(dir.join("tokenizer.json"), b"{").expect("write");
    check("tokenizer.json is not a valid tokenizer");
    // Both providers at once is a usage error.
    let o = matchmaker(&[
        "run",
        "--embeddings-model-dir",
        &d,
        "--embeddings-url",
        "http://127.0.0.1:9/v1",
    ]);
    assert_eq!(o.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
