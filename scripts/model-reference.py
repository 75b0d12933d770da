#!/usr/bin/env python3
"""An independent reference for the local embedding model: a NumPy forward
pass of the BERT encoder over the same model.safetensors, with the Python
`tokenizers` package, mean pooling over the tokens and L2 normalisation (what
sentence-transformers computes for all-MiniLM-L6-v2).

    python3 scripts/model-reference.py MODEL_DIR OUT.json

Writes {"max_seq_length": N, "texts": [...], "vectors": [[...], ...]} for the
texts of reference_texts() (50 varied texts: empty, one word, a
2,000-character bio, accents, emoji, CJK, ...). The Rust test
(tests/it/local_model.rs) builds the same texts from the same rules and
asserts a cosine of at least 0.9999 with each vector. Nothing here shares
code with the Rust path: the tokenizer configuration is applied anew, the
encoder is written out with NumPy (float64).
"""
import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer


def reference_texts():
    """The 50 texts; tests/it/local_model.rs::reference_texts is the same list."""
    texts = [
        "",
        "battery",
        "Grid-scale battery storage",
        "energy storage for utilities",
        "Café crème, naïve façade, résumé, Zürich, São Paulo, Kraków",
        "I love 🚀 rockets and 🌱 climate tech 🤝",
        "机器学习和自然语言处理研究员",
        "東京で働くソフトウェアエンジニアです",
        "한국어 자연어 처리",
        "Привет, я инженер по данным",
        "مهندس برمجيات في دبي",
        "   lots    of     spaces   ",
        "UPPER CASE SHOUTING ABOUT KUBERNETES",
        "tabs\tand\nnewlines\r\nmixed",
        "a",
        "?!.,;:",
        "1234567890",
        "e-mail: someone@example.org, https://example.org/path?q=1",
        "C++ / Rust / Go / TypeScript",
        "looking for: seed funding; offering: mentoring",
    ]
    roles = ["founder", "investor", "researcher", "engineer", "designer", "product manager"]
    topics = [
        "climate tech", "machine learning", "healthcare", "fintech", "robotics",
        "open source", "education", "biotech", "supply chains", "cybersecurity",
    ]
    i = 0
    while len(texts) < 48:
        r = roles[i % len(roles)]
        t = topics[(i * 7) % len(topics)]
        u = topics[(i * 3 + 1) % len(topics)]
        texts.append(f"{r} working on {t}; interested in {u} and meeting people from {t} #{i}")
        i += 1
    bio_words = ("I build grid-scale energy storage systems and care about "
                 "reliable software, mentoring juniors, and open data. ")
    bio = (bio_words * 30)[:2000]
    texts.append(bio)
    texts.append(("word " * 600).strip())
    return texts


def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def gelu(x):
    # The exact (erf) GELU, as BERT's "gelu".
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def encode(weights, config, ids):
    """The last hidden states of one sequence, float64 (`weights` already
    float64)."""
    w = weights
    p = "bert." if "bert.embeddings.word_embeddings.weight" in w else ""
    eps = config["layer_norm_eps"]
    n = len(ids)
    x = (w[p + "embeddings.word_embeddings.weight"][ids]
         + w[p + "embeddings.position_embeddings.weight"][:n]
         + w[p + "embeddings.token_type_embeddings.weight"][0])
    x = layer_norm(x, w[p + "embeddings.LayerNorm.weight"], w[p + "embeddings.LayerNorm.bias"], eps)
    heads = config["num_attention_heads"]
    hd = config["hidden_size"] // heads
    for layer in range(config["num_hidden_layers"]):
        q = f"{p}encoder.layer.{layer}."

        def lin(name, inp):
            return inp @ w[q + name + ".weight"].T + w[q + name + ".bias"]

        Q = lin("attention.self.query", x).reshape(n, heads, hd).transpose(1, 0, 2)
        K = lin("attention.self.key", x).reshape(n, heads, hd).transpose(1, 0, 2)
        V = lin("attention.self.value", x).reshape(n, heads, hd).transpose(1, 0, 2)
        s = Q @ K.transpose(0, 2, 1) / math.sqrt(hd)
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        ctx = (s @ V).transpose(1, 0, 2).reshape(n, heads * hd)
        a = lin("attention.output.dense", ctx)
        x = layer_norm(a + x, w[q + "attention.output.LayerNorm.weight"], w[q + "attention.output.LayerNorm.bias"], eps)
        h = gelu(lin("intermediate.dense", x))
        o = lin("output.dense", h)
        x = layer_norm(o + x, w[q + "output.LayerNorm.weight"], w[q + "output.LayerNorm.bias"], eps)
    return x


def max_seq_length(model_dir, config, tokenizer_json):
    path = os.path.join(model_dir, "sentence_bert_config.json")
    m = None
    if os.path.exists(path):
        with open(path) as f:
            m = json.load(f).get("max_seq_length")
    if m is None and tokenizer_json.get("truncation"):
        m = tokenizer_json["truncation"]["max_length"]
    if m is None:
        m = config["max_position_embeddings"]
    return max(2, min(m, config["max_position_embeddings"]))


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: model-reference.py MODEL_DIR OUT.json")
    model_dir, out = sys.argv[1], sys.argv[2]
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(model_dir, "tokenizer.json")) as f:
        tokenizer_json = json.load(f)
    max_len = max_seq_length(model_dir, config, tokenizer_json)
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=max_len)
    raw = load_file(os.path.join(model_dir, "model.safetensors"))
    weights = {k: v.astype(np.float64) for k, v in raw.items() if v.dtype != np.int64}
    texts = reference_texts()
    vectors = []
    for t in texts:
        ids = tok.encode(t).ids
        h = encode(weights, config, np.array(ids))
        v = h.mean(0)
        v = v / np.linalg.norm(v)
        vectors.append([float(x) for x in v])
    with open(out, "w") as f:
        json.dump({"max_seq_length": max_len, "texts": texts, "vectors": vectors}, f)
    print(f"{len(texts)} reference vectors written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
