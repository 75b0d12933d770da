//! A BERT encoder's forward pass on the CPU, for sequences of any lengths
//! side by side (no padding, so no attention mask: the products work token
//! by token on all of them at once, attention sequence by sequence):
//! embeddings and layer norm, then per
//! layer a fused query/key/value projection, attention per sequence and
//! head, the output projection, residual and layer norm, the feed-forward
//! with GELU, residual and layer norm.
//!
//! Written on plain `f32` slices with [`super::gemm`] for every product,
//! rather than a general tensor library, to waste nothing between the
//! products: the weights are packed once at load time, the buffers of a
//! chunk are allocated once and reused by every layer, the bias and GELU are
//! applied as each tile is stored. See [`super::gemm`] and [`super::math`]
//! for why the bits do not depend on the machine's path, the thread count
//! or the batch.

use super::gemm::{self, Epilogue, Packed, Path, Rows};
use super::math;
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

/// The fields of a BERT `config.json` the forward pass needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_types")]
    pub type_vocab_size: usize,
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
}

fn default_act() -> String {
    "gelu".to_string()
}
fn default_eps() -> f64 {
    1e-12
}
fn default_types() -> usize {
    2
}
fn default_position_type() -> String {
    "absolute".to_string()
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer {
    qkv: Packed,
    qkv_bias: Vec<f32>,
    out: Packed,
    out_bias: Vec<f32>,
    attn_norm: Norm,
    up: Packed,
    up_bias: Vec<f32>,
    down: Packed,
    down_bias: Vec<f32>,
    ffn_norm: Norm,
}

/// The encoder's weights, packed for [`gemm`].
pub struct Encoder {
    words: Vec<f32>,
    positions: Vec<f32>,
    /// Token type 0's embedding (every token is of type 0).
    type0: Vec<f32>,
    embed_norm: Norm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    vocab: usize,
    max_positions: usize,
    eps: f32,
}

/// Reads the tensors of a safetensors file by name, with the BERT names'
/// optional `bert.` prefix.
struct Tensors<'a> {
    st: SafeTensors<'a>,
    prefix: &'static str,
}

impl Tensors<'_> {
    /// A float32 tensor of exactly `shape`, as a vector.
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let full = format!("{}{name}", self.prefix);
        let t = self
            .st
            .tensor(&full)
            .map_err(|_| anyhow::anyhow!("has no tensor {full}"))?;
        if t.shape() != shape {
            bail!("tensor {full} has shape {:?}, config.json implies {shape:?}", t.shape());
        }
        if t.dtype() != Dtype::F32 {
            bail!("tensor {full} is {:?}; only F32 weights are supported", t.dtype());
        }
        Ok(t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    fn norm(&self, name: &str, h: usize) -> Result<Norm> {
        Ok(Norm {
            gamma: self.get(&format!("{name}.weight"), &[h])?,
            beta: self.get(&format!("{name}.bias"), &[h])?,
        })
    }

    /// A linear layer `n` × `k`: its weight packed and its bias.
    fn linear(&self, name: &str, n: usize, k: usize) -> Result<(Packed, Vec<f32>)> {
        let w = self.get(&format!("{name}.weight"), &[n, k])?;
        Ok((
            Packed::from_transposed(&w, n, k),
            self.get(&format!("{name}.bias"), &[n])?,
        ))
    }
}

impl Encoder {
    /// Builds the encoder from the file's bytes; an error says what is
    /// wrong (a missing tensor, a shape, a setting this encoder lacks).
    pub fn load(config: &Config, weights: &[u8]) -> Result<Self> {
        let c = config;
        if c.hidden_act != "gelu" {
            bail!("hidden_act {:?} is not supported (only \"gelu\")", c.hidden_act);
        }
        if c.position_embedding_type != "absolute" {
            bail!(
                "position_embedding_type {:?} is not supported (only \"absolute\")",
                c.position_embedding_type
            );
        }
        let h = c.hidden_size;
        if c.num_attention_heads == 0 || !h.is_multiple_of(c.num_attention_heads) {
            bail!(
                "hidden_size {h} is not a multiple of num_attention_heads {}",
                c.num_attention_heads
            );
        }
        let st = SafeTensors::deserialize(weights).context("is not a valid safetensors file")?;
        let prefix = if st.names().iter().any(|n| n.starts_with("bert.embeddings.")) {
            "bert."
        } else {
            ""
        };
        let t = Tensors { st, prefix };
        let types = t.get("embeddings.token_type_embeddings.weight", &[c.type_vocab_size, h])?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            // Query, key and value as one product of 3h columns.
            let mut w = Vec::with_capacity(3 * h * h);
            let mut qkv_bias = Vec::with_capacity(3 * h);
            for part in ["query", "key", "value"] {
                w.extend(t.get(&format!("{p}.attention.self.{part}.weight"), &[h, h])?);
                qkv_bias.extend(t.get(&format!("{p}.attention.self.{part}.bias"), &[h])?);
            }
            let (out, out_bias) = t.linear(&format!("{p}.attention.output.dense"), h, h)?;
            let (up, up_bias) = t.linear(&format!("{p}.intermediate.dense"), c.intermediate_size, h)?;
            let (down, down_bias) = t.linear(&format!("{p}.output.dense"), h, c.intermediate_size)?;
            layers.push(Layer {
                qkv: Packed::from_transposed(&w, 3 * h, h),
                qkv_bias,
                out,
                out_bias,
                attn_norm: t.norm(&format!("{p}.attention.output.LayerNorm"), h)?,
                up,
                up_bias,
                down,
                down_bias,
                ffn_norm: t.norm(&format!("{p}.output.LayerNorm"), h)?,
            });
        }
        Ok(Self {
            words: t.get("embeddings.word_embeddings.weight", &[c.vocab_size, h])?,
            positions: t.get("embeddings.position_embeddings.weight", &[c.max_position_embeddings, h])?,
            type0: types[..h].to_vec(),
            embed_norm: t.norm("embeddings.LayerNorm", h)?,
            layers,
            hidden: h,
            heads: c.num_attention_heads,
            vocab: c.vocab_size,
            max_positions: c.max_position_embeddings,
            eps: c.layer_norm_eps as f32,
        })
    }

    /// The mean of the last hidden states of each sequence (not
    /// normalised). A sequence's result does not depend on the others.
    pub fn mean_pooled(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let h = self.hidden;
        for seq in seqs {
            if seq.is_empty() {
                bail!("an empty token sequence");
            }
            if seq.len() > self.max_positions {
                bail!(
                    "a sequence of {} tokens exceeds max_position_embeddings {}",
                    seq.len(),
                    self.max_positions
                );
            }
            if let Some(&bad) = seq.iter().find(|&&id| id as usize >= self.vocab) {
                bail!("token id {bad} is outside the vocabulary of {}", self.vocab);
            }
        }
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let ids: Vec<(u32, usize)> = seqs
            .iter()
            .flat_map(|s| s.iter().enumerate().map(|(pos, &id)| (id, pos)))
            .collect();
        let path = Path::current();
        let tokens = ids.len();
        let mut x = vec![0.0f32; tokens * h];
        x.par_chunks_mut(h).zip(ids.par_iter()).for_each(|(row, &(id, at))| {
            let word = &self.words[id as usize * h..(id as usize + 1) * h];
            let pos = &self.positions[at * h..(at + 1) * h];
            for (((x, &w), &p), &t) in row.iter_mut().zip(word).zip(pos).zip(&self.type0) {
                *x = w + t + p;
            }
            math::layer_norm(path, row, &self.embed_norm.gamma, &self.embed_norm.beta, self.eps);
        });
        let inter = self.layers.first().map_or(0, |l| l.up.n());
        let mut qkv = vec![0.0f32; tokens * 3 * h];
        let mut ctx = vec![0.0f32; tokens * h];
        let mut big = vec![0.0f32; tokens * inter.max(h)];
        for layer in &self.layers {
            gemm::matmul_par(path, &x, tokens, &layer.qkv, &mut qkv, Epilogue::Bias(&layer.qkv_bias));
            self.attention(path, &qkv, &lens, &mut ctx);
            let attn = &mut big[..tokens * h];
            gemm::matmul_par(path, &ctx, tokens, &layer.out, attn, Epilogue::Bias(&layer.out_bias));
            residual_norm(path, &mut x, attn, &layer.attn_norm, self.eps, h);
            let up = &mut big[..tokens * inter];
            gemm::matmul_par(path, &x, tokens, &layer.up, up, Epilogue::BiasGelu(&layer.up_bias));
            // The down projection's output goes where the context was (ctx
            // is free until the next layer's attention).
            gemm::matmul_par(
                path,
                up,
                tokens,
                &layer.down,
                &mut ctx,
                Epilogue::Bias(&layer.down_bias),
            );
            residual_norm(path, &mut x, &ctx, &layer.ffn_norm, self.eps, h);
        }
        let mut rest = &x[..];
        let mut out = Vec::with_capacity(lens.len());
        for &len in &lens {
            let (seq, tail) = rest.split_at(len * h);
            rest = tail;
            let mut mean = vec![0.0f32; h];
            for row in seq.chunks(h) {
                for (m, &v) in mean.iter_mut().zip(row) {
                    *m += v;
                }
            }
            let n = len as f32;
            mean.iter_mut().for_each(|m| *m /= n);
            out.push(mean);
        }
        Ok(out)
    }

    /// Self-attention of every sequence (one rayon task each), every head
    /// in turn: `softmax(q·kᵀ / √d) · v` into the sequence's rows of `ctx`.
    /// The scores are computed key-major (`k·qᵀ`, one column per query) so
    /// that the product with the values reads them in place, unpacked.
    fn attention(&self, path: Path, qkv: &[f32], lens: &[usize], ctx: &mut [f32]) {
        let h = self.hidden;
        let d = h / self.heads;
        let scale = 1.0 / (d as f32).sqrt();
        // Each sequence's rows of ctx and qkv.
        let mut parts: Vec<(&mut [f32], &[f32], usize)> = Vec::with_capacity(lens.len());
        let (mut ctx_rest, mut qkv_rest) = (ctx, qkv);
        for &len in lens {
            let (c, ct) = std::mem::take(&mut ctx_rest).split_at_mut(len * h);
            let (q, qt) = qkv_rest.split_at(len * 3 * h);
            parts.push((c, q, len));
            (ctx_rest, qkv_rest) = (ct, qt);
        }
        parts.into_par_iter().for_each(|(ctx, qkv, len)| {
            let mut queries = Packed::from_rows(&[], 0, 0, 0);
            let mut values = Packed::from_rows(&[], 0, 0, 0);
            let mut scores = vec![0.0f32; len * len];
            for head in 0..self.heads {
                let (q, k, v) = (head * d, h + head * d, 2 * h + head * d);
                queries.repack_transposed(&qkv[q..], 3 * h, len, d);
                let keys = Rows {
                    data: &qkv[k..],
                    ld: 3 * h,
                    rows: len,
                };
                gemm::matmul(path, keys, &queries, &mut scores, len, Epilogue::None);
                math::softmax_columns(path, &mut scores, len, scale);
                values.repack_rows(&qkv[v..], 3 * h, len, d);
                let probs = Rows {
                    data: &scores,
                    ld: len,
                    rows: len,
                };
                gemm::matmul_transposed(path, probs, len, &values, &mut ctx[q..], h, Epilogue::None);
            }
        });
    }
}

/// `x = LayerNorm(x + y)`, row by row.
fn residual_norm(path: Path, x: &mut [f32], y: &[f32], norm: &Norm, eps: f32, h: usize) {
    x.par_chunks_mut(h).zip(y.par_chunks(h)).for_each(|(row, add)| {
        math::add_layer_norm(path, row, add, &norm.gamma, &norm.beta, eps);
    });
}
