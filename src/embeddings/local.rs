//! The local provider: a sentence-transformers model folder (e.g.
//! all-MiniLM-L6-v2) run in process on the CPU by [`encoder`]. Nothing
//! leaves the machine and nothing is downloaded: the folder is read once at
//! start-up.
//!
//! # What "the model" computes
//!
//! WordPiece tokens (`tokenizer.json`, truncated to the model's
//! `max_seq_length` from `sentence_bert_config.json`, else the tokenizer's
//! own truncation, never beyond `max_position_embeddings`) → the BERT
//! encoder (`config.json`, `model.safetensors`) → the mean of the last hidden
//! states over the tokens ([CLS] and [SEP] included, as sentence-transformers
//! does) → L2 normalisation. The vector has `hidden_size` components (384).
//!
//! # Determinism
//!
//! A text's vector must not depend on which other texts share its batch
//! (scores must be symmetric and reproducible). No sequence is ever padded:
//! the encoder's products work token by token on the rows of all the
//! sequences of a chunk at once, each element of them by the same fixed
//! sequence of fused multiply-adds ([`gemm`]), and attention runs sequence
//! by sequence, so it never needs a mask. A sequence's arithmetic is then the
//! same whatever else is in its chunk, whatever the thread count and kernel
//! path. The tests check that a text embedded alone and inside batches gives
//! the same bits, and compare every vector with an independent NumPy forward
//! pass.
//!
//! # Identity
//!
//! [`LocalModel::model_id`] is `local:<folder name>@<first 16 hex digits of
//! sha256(model.safetensors)>`: the cache's `model` column, so vectors of
//! other weights are never mixed with these.

mod encoder;
pub mod gemm;
mod math;

use anyhow::{bail, Context, Result};
use encoder::{Config, Encoder};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokenizers::{Tokenizer, TruncationParams};

/// Files a model folder must hold.
pub const REQUIRED_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// At most this many tokens (texts × length) go through the encoder at once:
/// a chunk is also the unit between which the deadline is checked.
pub const CHUNK_TOKENS: usize = 4096;

/// At most this many texts in one chunk.
pub const CHUNK_TEXTS: usize = 64;

/// A loaded sentence-embedding model. Immutable after [`LocalModel::load`];
/// share it in an `Arc` (inference runs on blocking threads).
pub struct LocalModel {
    model: Encoder,
    tokenizer: Tokenizer,
    dims: usize,
    max_len: usize,
    layers: usize,
    intermediate: usize,
    id: String,
    dir: PathBuf,
    /// Test hook: a pause before each chunk, to make the model slow.
    chunk_delay: Duration,
}

impl std::fmt::Debug for LocalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalModel")
            .field("id", &self.id)
            .field("dir", &self.dir)
            .field("dims", &self.dims)
            .field("max_len", &self.max_len)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
}

/// One text's tokens.
#[derive(Debug, Clone)]
pub struct Tokens {
    ids: Vec<u32>,
}

impl Tokens {
    /// How many tokens (specials included).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Never true for a tokenizer that adds [CLS] and [SEP].
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

impl LocalModel {
    /// Loads a sentence-transformers folder. Every error is one line naming
    /// the folder and the file at fault.
    pub fn load(dir: &Path) -> Result<Self> {
        let shown = dir.display();
        if !dir.is_dir() {
            bail!("embedding model folder {shown} does not exist (fetch it with: bash scripts/fetch-model.sh)");
        }
        for f in REQUIRED_FILES {
            if !dir.join(f).is_file() {
                bail!("embedding model folder {shown} has no {f} (fetch it with: bash scripts/fetch-model.sh)");
            }
        }
        let read = |name: &str| -> Result<Vec<u8>> {
            std::fs::read(dir.join(name)).with_context(|| format!("cannot read {}", dir.join(name).display()))
        };
        let config: Config = serde_json::from_slice(&read("config.json")?)
            .with_context(|| format!("{} is not a BERT config", dir.join("config.json").display()))?;
        if let Some(pooling) = optional_json::<PoolingConfig>(&dir.join("1_Pooling").join("config.json"))? {
            if !pooling.pooling_mode_mean_tokens {
                bail!(
                    "{}: only mean pooling is supported",
                    dir.join("1_Pooling").join("config.json").display()
                );
            }
        }
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| anyhow::anyhow!("{} is not a valid tokenizer: {e}", dir.join("tokenizer.json").display()))?;
        let st_max =
            optional_json::<SentenceBertConfig>(&dir.join("sentence_bert_config.json"))?.and_then(|c| c.max_seq_length);
        let tok_max = tokenizer.get_truncation().map(|t| t.max_length);
        let max_len = st_max
            .or(tok_max)
            .unwrap_or(config.max_position_embeddings)
            .min(config.max_position_embeddings)
            .max(2);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..TruncationParams::default()
            }))
            .map_err(|e| anyhow::anyhow!("cannot set the tokenizer's truncation: {e}"))?;
        tokenizer.with_padding(None);

        let weights = read("model.safetensors")?;
        let hash = Sha256::digest(&weights);
        let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".to_string());
        let model = Encoder::load(&config, &weights)
            .map_err(|e| anyhow::anyhow!("{} {e:#}", dir.join("model.safetensors").display()))?;
        drop(weights);
        Ok(Self {
            model,
            tokenizer,
            dims: config.hidden_size,
            max_len,
            layers: config.num_hidden_layers,
            intermediate: config.intermediate_size,
            id: format!("local:{name}@{hex}"),
            dir: dir.to_path_buf(),
            chunk_delay: Duration::ZERO,
        })
    }

    /// The cache's `model` column: folder name and a hash of the weights.
    pub fn model_id(&self) -> &str {
        &self.id
    }

    /// The vector length (`hidden_size`).
    pub fn dimensions(&self) -> usize {
        self.dims
    }

    /// The longest token sequence; longer texts are truncated.
    pub fn max_tokens(&self) -> usize {
        self.max_len
    }

    /// Test hook: sleep this long before each chunk (a slow model).
    #[doc(hidden)]
    pub fn with_chunk_delay(mut self, delay: Duration) -> Self {
        self.chunk_delay = delay;
        self
    }

    /// The pause before each chunk (zero unless a test set one).
    pub fn chunk_delay(&self) -> Duration {
        self.chunk_delay
    }

    /// Tokenizes texts (truncated, not padded).
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Tokens>> {
        texts
            .iter()
            .map(|t| {
                self.tokenizer
                    .encode(*t, true)
                    .map(|e| Tokens {
                        ids: e.get_ids().to_vec(),
                    })
                    .map_err(|e| anyhow::anyhow!("cannot tokenize a text: {e}"))
            })
            .collect()
    }

    /// The multiply-adds ×2 of one sequence of `len` tokens through the
    /// encoder (projections, attention, feed-forward), for GFLOP/s figures.
    pub fn flops(&self, len: usize) -> f64 {
        let (l, h, i) = (len as f64, self.dims as f64, self.intermediate as f64);
        let per_layer = 2.0 * l * h * (4.0 * h + 2.0 * i) + 4.0 * l * l * h;
        per_layer * self.layers as f64
    }

    /// Embeds token sequences of any lengths in one encoder call (no
    /// padding): one unit vector each, each independent of the others.
    pub fn embed_tokens(&self, seqs: &[&Tokens]) -> Result<Vec<Vec<f32>>> {
        let ids: Vec<&[u32]> = seqs.iter().map(|s| s.ids.as_slice()).collect();
        let rows = self.model.mean_pooled(&ids)?;
        Ok(rows.into_iter().map(normalise).collect())
    }

    /// Embeds any texts, in chunks ([`plan_chunks`]); one vector per text,
    /// in order. Used by tests and the benchmark; the
    /// embedder cuts its work into chunks itself ([`plan_chunks`]).
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let tokens = self.tokenize(texts)?;
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for chunk in plan_chunks(&tokens) {
            let seqs: Vec<&Tokens> = chunk.iter().map(|&i| &tokens[i]).collect();
            for (&i, v) in chunk.iter().zip(self.embed_tokens(&seqs)?) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}

/// Cuts texts into chunks of at most [`CHUNK_TEXTS`] texts and
/// [`CHUNK_TOKENS`] tokens (at least one text), shortest first, so that a
/// chunk's sequences have similar lengths. Returns indices into `tokens`.
pub fn plan_chunks(tokens: &[Tokens]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..tokens.len()).collect();
    order.sort_by_key(|&i| (tokens[i].len(), i));
    let mut chunks: Vec<(Vec<usize>, usize)> = Vec::new();
    for i in order {
        let len = tokens[i].len();
        match chunks.last_mut() {
            Some((c, sum)) if c.len() < CHUNK_TEXTS && *sum + len <= CHUNK_TOKENS => {
                c.push(i);
                *sum += len;
            }
            _ => chunks.push((vec![i], len)),
        }
    }
    chunks.into_iter().map(|(c, _)| c).collect()
}

/// Scales to unit length (sum of squares in f64, for the same result on
/// every machine). A zero vector stays zero (rejected later as degenerate).
fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
    v
}

fn optional_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{} is not valid JSON of the expected shape", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The model shared by the embedder and its blocking tasks.
pub type SharedModel = Arc<LocalModel>;

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(lens: &[usize]) -> Vec<Tokens> {
        lens.iter().map(|&n| Tokens { ids: vec![1; n] }).collect()
    }

    #[test]
    fn chunks_are_shortest_first_and_respect_the_caps() {
        let mut lens = vec![3, 5, 3, 3, 200, 5, 5000];
        lens.extend(std::iter::repeat_n(10, 100));
        lens.extend(std::iter::repeat_n(300, 20));
        let t = toks(&lens);
        let chunks = plan_chunks(&t);
        let flat: Vec<usize> = chunks.iter().flatten().copied().collect();
        let mut seen = flat.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..t.len()).collect::<Vec<_>>());
        assert!(flat.windows(2).all(|w| t[w[0]].len() <= t[w[1]].len()));
        for c in &chunks {
            let tokens: usize = c.iter().map(|&i| t[i].len()).sum();
            assert!(c.len() <= CHUNK_TEXTS && (c.len() == 1 || tokens <= CHUNK_TOKENS));
        }
        assert_eq!(chunks[0][..6], [0, 2, 3, 1, 5, 7]);
        assert_eq!(chunks[0].len(), CHUNK_TEXTS);
        // The text longer than the cap is a chunk of its own.
        assert_eq!(chunks.last(), Some(&vec![6]));
    }

    #[test]
    fn a_missing_folder_or_file_is_named() {
        let dir = std::env::temp_dir().join(format!("mm-model-{}", std::process::id()));
        let e = LocalModel::load(&dir).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("does not exist"), "{e}");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("config.json"), "{}").expect("write");
        let e = LocalModel::load(&dir).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("has no tokenizer.json"), "{e}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn normalised_vectors_have_unit_length() {
        let v = normalise(vec![3.0, 4.0]);
        assert_eq!(v, vec![0.6, 0.8]);
        assert_eq!(normalise(vec![0.0, 0.0]), vec![0.0, 0.0]);
    }
}
