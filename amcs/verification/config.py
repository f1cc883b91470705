"""Parameters of the verification strategies."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from amcs.fields import ConfigError, option, validate
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

    n: int = option(8, "samples / candidate steps per depth / iterations (--n sets it)", min=1)
    temperature: float = option(0.7, "sampling temperature (0 = greedy)", min=0)
    top_p: float = option(1.0, "nucleus sampling mass", above=0, max=1)
    top_k: int = option(0, "sample from the k most likely tokens (0 = all)", min=0)
    max_new_tokens: int = option(512, "tokens a whole solution may generate", min=1)
    step_max_new_tokens: int = option(
        128, "tokens one step of beam search or MCTS may generate", min=1
    )
    separator: str = option(
        DEFAULT_SEPARATOR,
        "text that ends a step; escapes \\n, \\t decoded (default: the one the PRM was trained "
        "with, from its amcs_prm.json, else \\n\\n)",
    )
    min_step_chars: int = option(
        0, "a step shorter than this joins the next one (as for generate)", min=0
    )
    max_solution_steps: int = option(
        0, "most steps per solution, the rest is the last step (0 = no cap)", min=0
    )
    seed: int = option(0, "sampling seed")
    aggregation: str = option("last", "step scores -> solution score", choices=tuple(AGGREGATIONS))
    expansions: int = option(4, "next steps sampled per beam / expanded MCTS leaf", min=1)
    max_depth: int = option(40, "most steps in a beam or MCTS path", min=1)
    dedupe: bool = option(False, "beam search drops a candidate equal to an earlier one")
    c_puct: float = option(1.0, "MCTS exploration constant", min=0)

    def __post_init__(self) -> None:
        validate(self)
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
    known = {f.name for f in fields(VerifyConfig)}
    unknown = set(settings) - known
    if unknown:
        raise ConfigError(
            f"unknown strategy parameter(s): {', '.join(sorted(unknown))}; known: "
            f"{', '.join(sorted(known - {'n'}))}"
        )
    if "separator" in settings:
        settings["separator"] = parse_separator(settings["separator"])
    return VerifyConfig(**settings)
