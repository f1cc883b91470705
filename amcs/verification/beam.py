"""Step-level beam search with a PRM (as in search-and-learn's beam search; written anew).

With n candidate steps per depth and `expansions` per beam, the beam width is
w = max(1, n // expansions). All w beams start at the prompt. At each depth every open beam
samples min(expansions, n) next steps (one request each); a candidate's score is aggregate(its
step scores), the rule the final choice uses (`aggregation`: with "last", the PRM score of its
new step given the whole prefix; with "min", its weakest step so far). Candidates that end the
solution (end-of-sequence or a stated answer) or have no tokens left go to the completed pool;
the w best of the rest (ties: earlier) are the next beams. The search stops when the pool holds
w solutions, after max_depth steps, or when no beams are left. The answer is the best completed
solution by aggregate(step scores) (ties: earliest completed), else the best open beam. A path
whose tokens ran out is completed but unfinished: it states no answer (``final_answer``), so it
wins only when no completed solution states one.
"""

from __future__ import annotations

import asyncio

from amcs.verification.aggregation import aggregate, best_index
from amcs.verification.base import StrategyResult
from amcs.verification.context import Run, VerifyContext
from amcs.verification.stepwise import StepPath, extend, tokens_left


async def beam_search(ctx: VerifyContext, question: str, n: int | None = None) -> StrategyResult:
    """Beam search with n candidate steps per depth; see the module docstring."""
    run = Run(ctx, "beam", question, n)
    cfg = run.config
    how = cfg.aggregation
    width = cfg.beam_width
    beams = [StepPath() for _ in range(width)]
    completed: list[StepPath] = []
    open_per_depth: list[int] = []
    depth = 0
    while beams and len(completed) < width and depth < cfg.max_depth:
        open_per_depth.append(len(beams))
        expanded = await asyncio.gather(*(extend(run, b, cfg.beam_expansions) for b in beams))
        depth += 1
        open_: list[StepPath] = []
        seen: set[tuple[int, ...]] = set()
        for path in (p for group in expanded for p in group):
            if cfg.dedupe:
                if path.ids in seen:
                    continue
                seen.add(path.ids)
            if path.finished or tokens_left(run, path) <= 0:
                completed.append(path)
            else:
                open_.append(path)
        # Ranked by the same rule the final choice uses; sorted() is stable, so equal scores
        # keep the earlier candidate first.
        beams = sorted(open_, key=lambda p: -aggregate(p.step_scores, how))[:width]
    done = [p.candidate(how) for p in completed]
    still_open = [p.candidate(how) for p in beams]
    chosen = best_index(done)
    if chosen is None:
        best_open = best_index(still_open)
        chosen = None if best_open is None else len(done) + best_open
    stats = {"width": width, "depth": depth, "open_per_depth": open_per_depth}
    return run.result(done + still_open, chosen, stats=stats)
