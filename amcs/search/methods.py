"""The search methods by name: which search runs each and the SearchConfig defaults it changes.

- ``amcs``: the adaptive estimator (k0 rollouts, clusters, Wilson intervals, early exit) and the
  temporally adaptive selection score (1 - w_t) Q + w_t U (arXiv 2509.24351).
- ``omegaprm``: a fixed k = 16 rollouts per node and score Q + U (OpenR's OmegaPRM settings).
- ``shepherd``: Math-Shepherd: sample solutions, then N rollouts from every step prefix.

A method is a preset (SearchConfig fields it changes; every field can still be overridden from a
recipe or the command line) plus the search class that runs it: a class made with a
``SearchContext`` whose ``async run()`` returns a ``SearchResult`` (``amcs.search.tree_search.
TreeSearch`` runs amcs and omegaprm). The class may be given as ``"module:Class"``, imported
when a search starts. A new method is one :func:`register_method` line (plus its module when it
brings a new search).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from amcs.registry import Registry

TREE_SEARCH = "amcs.search.tree_search:TreeSearch"
SHEPHERD_SEARCH = "amcs.search.shepherd:ShepherdSearch"


@dataclass(frozen=True)
class MethodSpec:
    """A registered search method: its search class (or ``"module:Class"``), its preset."""

    search: type | str
    preset: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "preset", MappingProxyType(dict(self.preset)))

    def search_class(self) -> type:
        if not isinstance(self.search, str):
            return self.search
        module, _, name = self.search.partition(":")
        return getattr(importlib.import_module(module), name)


METHODS: Registry[MethodSpec] = Registry("method")


def register_method(
    name: str, search: type | str, preset: Mapping[str, Any] | None = None, *, replace=False
) -> MethodSpec:
    """Register the method ``name``: ``search`` runs it with SearchConfig's defaults changed by
    ``preset`` (checked when a config is made: amcs.search.make_config)."""
    return METHODS.register(name, MethodSpec(search, preset or {}), replace=replace)


register_method("amcs", TREE_SEARCH)
register_method(
    "omegaprm",
    TREE_SEARCH,
    {"estimator": "fixed", "k": 16, "selection": "sum", "min_root_mc": 0.0},
)
register_method("shepherd", SHEPHERD_SEARCH, {"estimator": "fixed", "k": 8, "rollout_budget": 0})
