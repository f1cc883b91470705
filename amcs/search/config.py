"""Search parameters, their defaults, and the three presets.

Every field can be overridden from a recipe or the command line; a preset only changes defaults.

- ``amcs``: the adaptive estimator (k0 rollouts, clusters, Wilson intervals, early exit) and the
  temporally adaptive selection score (1 - w_t) Q + w_t U (arXiv 2509.24351).
- ``omegaprm``: a fixed k = 16 rollouts per node and score Q + U (OpenR's OmegaPRM settings).
- ``shepherd``: Math-Shepherd: sample solutions, then N rollouts from every step prefix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

METHODS = ("amcs", "omegaprm", "shepherd")


@dataclass(frozen=True)
class SearchConfig:
    method: str = "amcs"
    # Sampling of rollouts.
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 512
    separator: str = "\n\n"
    # Estimation of a node's Monte Carlo value.
    estimator: str = "adaptive"  # adaptive | fixed
    k: int = 16  # rollouts per node for the fixed estimator (Math-Shepherd's N)
    k0: int = 6
    clusters: int = 3
    wilson_z: float = 1.96
    freeze_n: int = 3
    freeze_halfwidth: float = 0.2
    eps_node: float = 0.2
    k_max_node: int = 20
    k_step_scale: float = 12.0
    k_step_max: int = 6
    # All-wrong early exit needs the Wilson upper bound below this; 1.0 exits at k0 (the paper).
    zero_exit_upper: float = 1.0
    # Selection of the next (node, incorrect rollout) to search.
    selection: str = "adaptive"  # adaptive: (1 - w_t) Q + w_t U | sum: Q + U
    alpha: float = 0.5
    beta: float = 0.9
    length_scale: float = 500.0  # L, in tokens
    c_puct: float = 0.125
    temporal_decay: float = 20.0  # w_t = exp(-t / temporal_decay)
    # Limits per problem.
    max_search_count: int = 20
    rollout_budget: int = 150  # 0: no limit
    positive_paths: int = 1  # correct root rollouts written as all-positive paths
    # Math-Shepherd.
    num_solutions: int = 4
    # Labels: a step is positive when its MC value exceeds this.
    threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.estimator not in ("adaptive", "fixed"):
            raise ValueError("estimator must be 'adaptive' or 'fixed'")
        if self.selection not in ("adaptive", "sum"):
            raise ValueError("selection must be 'adaptive' or 'sum'")
        if self.k0 < 1 or self.k < 1 or self.k_max_node < self.k0:
            raise ValueError("need k >= 1, k0 >= 1 and k_max_node >= k0")
        if self.rollout_budget < 0:
            raise ValueError("rollout_budget must be >= 0 (0 means no limit)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    "amcs": {},
    "omegaprm": {"estimator": "fixed", "k": 16, "selection": "sum"},
    "shepherd": {"estimator": "fixed", "k": 8, "rollout_budget": 0},
}


def make_config(method: str = "amcs", **overrides: Any) -> SearchConfig:
    """The preset for `method` with `overrides` applied (None means "not given")."""
    if method not in PRESETS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    known = {f.name for f in fields(SearchConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown search parameter(s): {', '.join(sorted(unknown))}")
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(SearchConfig(method=method, **PRESETS[method]), **given)
