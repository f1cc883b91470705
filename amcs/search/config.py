"""Search parameters and their defaults; a method's preset (amcs.search.methods) changes some.

Every field can be overridden from a recipe or the command line; a preset only changes defaults.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from amcs.fields import ConfigError, option, validate
from amcs.search.methods import METHODS
from amcs.steps import DEFAULT_SEPARATOR, check_separator, parse_separator


@dataclass(frozen=True)
class SearchConfig:
    """Every search parameter with its help text and allowed range (``--set KEY=VALUE``, a
    recipe's ``search:``, and ``amcs generate --help`` read the same fields)."""

    method: str = option("amcs", "search method (a preset of the fields below)", choices=METHODS)
    # Sampling of rollouts.
    temperature: float = option(0.7, "sampling temperature of rollouts (0 = greedy)", min=0)
    top_p: float = option(1.0, "nucleus sampling mass", above=0, max=1)
    top_k: int = option(0, "sample from the k most likely tokens (0 = all)", min=0)
    max_new_tokens: int = option(512, "tokens a rollout may generate", min=1)
    separator: str = option(
        DEFAULT_SEPARATOR,
        "text that ends a step; escapes \\n, \\t, \\r, \\\\ are decoded (separator=\\n: one "
        "newline, for models that write one step per line)",
    )
    min_step_chars: int = option(
        0,
        "a step shorter than this (stripped) joins the next one: a heading line such as "
        "'Step 1:' or '1.' joins what it heads; a short last step joins the one before",
        min=0,
    )
    max_solution_steps: int = option(
        0,
        "most steps per solution: what follows step max_solution_steps - 1 is the last step "
        "(0 = no cap)",
        min=0,
    )
    # Estimation of a node's Monte Carlo value.
    estimator: str = option(
        "adaptive", "adaptive (AMCS) or fixed (k rollouts per node)", choices=("adaptive", "fixed")
    )
    k: int = option(16, "rollouts per node of the fixed estimator (Math-Shepherd's N)", min=1)
    k0: int = option(6, "first rollouts of the adaptive estimate", min=1)
    clusters: int = option(3, "K-means clusters of the adaptive estimate", min=1)
    wilson_z: float = option(1.96, "z of the Wilson intervals", above=0)
    freeze_n: int = option(3, "a cluster freezes from this many rollouts ...", min=1)
    freeze_halfwidth: float = option(0.2, "... when its half-width is at most this", min=0, max=1)
    eps_node: float = option(0.2, "stop a node's estimate when its uncertainty d <= this", min=0)
    k_max_node: int = option(20, "most rollouts for one node's estimate", min=1)
    k_step_scale: float = option(12.0, "k_step = ceil(h * k_step_scale), clipped", above=0)
    k_step_max: int = option(6, "most rollouts drawn in one refinement step", min=1)
    zero_exit_upper: float = option(
        1.0,
        "all-wrong early exit needs the Wilson upper bound below this (1 = exit at k0, the paper)",
        above=0,
        max=1,
    )
    # Selection of the next (node, incorrect rollout) to search.
    selection: str = option(
        "adaptive", "adaptive: (1 - w_t) Q + w_t U; sum: Q + U", choices=("adaptive", "sum")
    )
    alpha: float = option(0.5, "Q = alpha^(1 - MC) * beta^(len / L)", above=0, max=1)
    beta: float = option(0.9, "see alpha", above=0, max=1)
    length_scale: float = option(500.0, "L of Q, in tokens", above=0)
    c_puct: float = option(0.125, "exploration weight of U", min=0)
    temporal_decay: float = option(20.0, "w_t = exp(-t / temporal_decay)", above=0)
    # Limits per problem.
    max_search_count: int = option(20, "error-locating searches per problem", min=0)
    min_root_mc: float = option(
        0.3,
        "screening: skip a problem (no paths) whose root MC is below this; 0 keeps every problem "
        "with a right root rollout",
        min=0,
        max=1,
    )
    search_unsolved: bool = option(
        False,
        "search every problem, also one whose root rollouts are all wrong (the AMCS paper's "
        "code; ignores min_root_mc)",
    )
    garbled_filter: bool = option(
        True, "never search a rollout with garbled text (the paper's candidate filter)"
    )
    max_candidate_nll: float = option(
        0.0, "never search a rollout whose mean token NLL exceeds this (0 = no cap)", min=0
    )
    rollout_budget: int = option(150, "rollouts per problem (0 = no limit)", min=0)
    positive_paths: int = option(1, "correct root rollouts written as all-positive paths", min=0)
    # Math-Shepherd.
    num_solutions: int = option(4, "shepherd: solutions sampled per problem", min=1)
    # Labels: a step is positive when its MC value exceeds this.
    threshold: float = option(0.0, "hard label = MC > threshold", min=0, below=1)

    def __post_init__(self) -> None:
        validate(self)
        check_separator(self.separator)
        if self.k_max_node < self.k0:
            raise ConfigError(f"k_max_node ({self.k_max_node}) must be >= k0 ({self.k0})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_config(method: str = "amcs", **overrides: Any) -> SearchConfig:
    """The preset for `method` with `overrides` applied (None means "not given"). A separator
    is read as a recipe or the command line writes it: escapes decoded
    (:func:`amcs.steps.parse_separator`)."""
    if method not in METHODS:
        raise ConfigError(str(METHODS.unknown(method)))
    known = {f.name for f in fields(SearchConfig)}
    preset = dict(METHODS[method].preset)
    if set(preset) - known:
        raise ConfigError(
            f"method {method}'s preset sets unknown parameter(s) "
            f"{', '.join(sorted(set(preset) - known))}"
        )
    unknown = set(overrides) - known
    if unknown:
        raise ConfigError(
            f"unknown search parameter(s): {', '.join(sorted(unknown))} "
            "(amcs generate --help lists them)"
        )
    given = {k: v for k, v in overrides.items() if v is not None}
    if "separator" in given:
        given["separator"] = parse_separator(given["separator"])
    return replace(SearchConfig(method=method, **preset), **given)
