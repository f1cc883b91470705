#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py): one short script, one table.
#   bash benchmarks/gpu_check.sh          on a machine with CUDA
#   bash benchmarks/gpu_check.sh --cpu    the same steps on the CPU, small (CI runs this)
# Uses the project's venv when there is one (uv run), else the machine's python, which must have
# torch, transformers, peft, trl, datasets, typer, rich, math-verify and pyyaml.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v uv >/dev/null 2>&1 && [ -d .venv ]; then
  exec uv run --no-sync python benchmarks/gpu_check.py "$@"
fi
python3 - <<'PY' || { echo "error: this python lacks a package gpu_check needs (above)" >&2; exit 2; }
import importlib, sys
missing = [m for m in ("torch", "transformers", "peft", "trl", "datasets", "typer", "rich",
                       "math_verify", "yaml", "httpx") if importlib.util.find_spec(m) is None]
if missing:
    print("missing: " + ", ".join(missing), file=sys.stderr)
    sys.exit(1)
PY
exec env PYTHONPATH="$PWD" python3 benchmarks/gpu_check.py "$@"
