"""Process reward models (PRMs): load one and score solution steps with it.

A step's score is the PRM's probability that the step is correct, in [0, 1]. What users call:

- :func:`load_scorer` (``amcs.prm.load``): the one loader of every scorer name a command takes
  (a PRM directory or hub id, ``tiny-prm``, ``arith-oracle``, ``policy-confidence[:MODEL]``;
  :mod:`amcs.prm.names`);
- :func:`load_prm`: a PRM checkpoint as a :class:`PRMScorer`, in one of :data:`PRM_FORMATS`
  (``token-cls``, ``step-tag``, ``qwen-prm``; one class each behind :mod:`amcs.prm.registry`),
  which :func:`detect_prm_format` guesses from its files;
- :func:`load_policy_confidence`: the training-free baseline scorer.

The checkpoint format ``amcs train`` writes is :mod:`amcs.prm.checkpoint`. The parts are imported
when first asked for, so ``amcs.prm.names`` stays free of torch for the command line's help.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "load_scorer": "amcs.prm.load",
    "load_prm": "amcs.prm.load",
    "load_policy_confidence": "amcs.prm.load",
    "PRMScorer": "amcs.prm.scorer",
    "PRM_FORMATS": "amcs.prm.registry",
    "detect_prm_format": "amcs.prm.registry",
    "ScorerError": "amcs.prm.names",
    "SCORER_NAMES": "amcs.prm.names",
    "TINY_PRM_NAME": "amcs.prm.names",
    "ARITH_ORACLE": "amcs.prm.names",
    "POLICY_CONFIDENCE": "amcs.prm.names",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
