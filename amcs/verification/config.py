"""Parameters of the verification strategies."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from amcs.steps import DEFAULT_SEPARATOR, check_separator, check_step_rules, parse_separator
from amcs.verification.aggregation import AGGREGATIONS


@dataclass(frozen=True)
class VerifyConfig:
    """One config for every strategy; each reads the fields it needs.

    n: samples (majority, best-of-n, weighted vote), candidate steps per depth (beam), or
    iterations (MCTS); run_strategy overrides it. Greedy ignores n and temperature.
    max_new_tokens bounds a whole solution; step_max_new_tokens bounds one step of beam search or
    MCTS (a step cut there is continued by the next step, it does not end the solution).
    aggregation turns step scores into a solution score (see aggregate()).
    expansions: next steps sampled from each beam / each expanded MCTS leaf; beam width is
    max(1, n // expansions). max_depth: most steps in a beam or MCTS path.
    dedupe: beam search drops a candidate whose token ids equal an earlier one's at that depth.
    separator, min_step_chars, max_solution_steps: how a solution splits into steps
    (:mod:`amcs.steps`): beam search and MCTS sample one step at a time, stopping at the
    separator, and every sample is split by these rules before the PRM scores it. Use the rules
    the PRM's training data was split with (``amcs eval`` takes the separator from the PRM's
    ``amcs_prm.json`` unless given).
    """

    n: int = 8
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 512
    step_max_new_tokens: int = 128
    separator: str = DEFAULT_SEPARATOR
    min_step_chars: int = 0
    max_solution_steps: int = 0
    seed: int = 0
    aggregation: str = "last"
    expansions: int = 4
    max_depth: int = 40
    dedupe: bool = False
    c_puct: float = 1.0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("n must be >= 1")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(
                f"unknown aggregation {self.aggregation!r}; choose one of {', '.join(AGGREGATIONS)}"
            )
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if self.max_new_tokens < 1 or self.step_max_new_tokens < 1:
            raise ValueError("max_new_tokens and step_max_new_tokens must be >= 1")
        if self.expansions < 1 or self.max_depth < 1:
            raise ValueError("expansions and max_depth must be >= 1")
        if self.c_puct < 0:
            raise ValueError("c_puct must be >= 0")
        check_separator(self.separator)
        check_step_rules(self.min_step_chars, self.max_solution_steps)

    @property
    def beam_width(self) -> int:
        """w = max(1, n // expansions): n candidate steps per depth, `expansions` per beam."""
        return max(1, self.n // self.expansions)

    @property
    def beam_expansions(self) -> int:
        """Next steps sampled per beam: `expansions`, but never more than n (so beam search at
        n = 1 samples one step per depth, like one sampled solution)."""
        return min(self.expansions, self.n)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_verify_config(**settings: Any) -> VerifyConfig:
    """A VerifyConfig from settings as a recipe's ``verify:`` or ``--set`` gives them: a
    separator's escapes decoded (:func:`amcs.steps.parse_separator`)."""
    if "separator" in settings:
        settings["separator"] = parse_separator(settings["separator"])
    return VerifyConfig(**settings)
