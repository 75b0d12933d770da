#!/usr/bin/env bash
# Builds the reference vectors of the local model's test: a venv under
# target/ with numpy, tokenizers and safetensors (from PyPI), then
# scripts/model-reference.py over the model folder. Idempotent (the venv and
# the vectors are kept until the model or the script changes). The LAST line
# of stdout is the reference file's path.
#
#   ref=$(bash scripts/model-reference.sh MODEL_DIR | tail -n 1)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL_DIR=${1:?usage: model-reference.sh MODEL_DIR}
VENV="$PWD/target/model-venv"
OUT="$PWD/target/models/reference.json"
STAMP="$OUT.stamp"

want=$(cat scripts/model-reference.py "$MODEL_DIR/config.json" "$MODEL_DIR/tokenizer.json" | sha256sum | cut -c1-16)-$(stat -c %s "$MODEL_DIR/model.safetensors")
if [[ -s "$OUT" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    echo "$OUT"
    exit 0
fi
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c "import numpy, tokenizers, safetensors" 2>/dev/null; then
    echo "creating $VENV (numpy, tokenizers, safetensors) ..." >&2
    python3 -m venv "$VENV"
    if ! "$VENV/bin/python" -m pip install --quiet numpy tokenizers safetensors >"$VENV.log" 2>&1; then
        echo "error: cannot install numpy/tokenizers/safetensors from PyPI (is the registry reachable?): $(tail -n 1 "$VENV.log")" >&2
        exit 1
    fi
fi
"$VENV/bin/python" scripts/model-reference.py "$MODEL_DIR" "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "$want" >"$STAMP"
echo "$OUT"
