"""The names a command's ``--prm`` / ``--judge`` takes besides a PRM directory or hub id: one
meaning everywhere (``amcs eval``, ``amcs eval steps``, ``amcs filter``, the benchmarks). Kept
free of torch so the command line's help can name them without loading a model library;
:func:`amcs.prm.load_scorer` turns a name into a scorer (``import amcs.prm.names`` loads no model
library: the package imports its parts when first asked)."""

from __future__ import annotations

from pathlib import Path

from amcs.domains import oracle_domain

ARITH_ORACLE = "arith-oracle"
TINY_PRM_NAME = "tiny-prm"
POLICY_CONFIDENCE = "policy-confidence"
SCORER_NAMES = (
    f"a PRM directory or hub id, the URL of a vLLM server serving one (http://host:port), "
    f"{TINY_PRM_NAME} (the bundled PRM), {ARITH_ORACLE} (the exact "
    f"checker; arithmetic only) or {POLICY_CONFIDENCE}[:MODEL] (the policy's own lowest token "
    "probability per step; no training)"
)


def is_policy_confidence(spec: str | None) -> bool:
    return spec == POLICY_CONFIDENCE or (spec or "").startswith(POLICY_CONFIDENCE + ":")


def scorer_location(spec: str | None) -> Path | None:
    """The file or folder a scorer name reads (which no command may overwrite); None for the
    built-in ones (the bundled PRM, a domain's oracle, the policy's confidence)."""
    if spec in (None, TINY_PRM_NAME) or oracle_domain(spec) or is_policy_confidence(spec):
        return None
    path = Path(spec).expanduser()
    return path if path.exists() else None


class ScorerError(ValueError):
    """A scorer name that cannot be loaded; the message says which names work."""
