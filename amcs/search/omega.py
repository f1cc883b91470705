"""The OmegaPRM-style tree search, run by the `amcs` and `omegaprm` presets.

Estimate MC at the root; every incorrect rollout from a node with 0 < MC < 1 becomes a candidate.
Repeatedly select the best candidate (scores recomputed at every pop, so none is stale) and locate
the first error in its rollout by binary search; each search yields one labelled path: positive
steps up to the first error, and the error step itself negative.
"""

from __future__ import annotations

from dataclasses import dataclass

from amcs.backends.base import Rollout
from amcs.search.context import LabelledPath, SearchContext, SearchResult
from amcs.search.selection import candidate_score
from amcs.search.tree import Node


@dataclass(eq=False)
class Candidate:
    node: Node
    rollout: Rollout


class TreeSearch:
    def __init__(self, ctx: SearchContext) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.pool: list[Candidate] = []
        self.total_visits = 0

    def _add_candidates(self, node: Node, drawn: list[tuple[Rollout, bool]]) -> None:
        if node.mc is not None and 0 < node.mc < 1:
            self.pool.extend(Candidate(node, r) for r, ok in drawn if not ok and r.token_ids)

    def _pop(self, t: int) -> Candidate:
        def score(c: Candidate) -> float:
            return candidate_score(
                c.node.mc, c.rollout.num_tokens, c.node.visits, self.total_visits, t, self.config
            )

        best = max(range(len(self.pool)), key=lambda i: score(self.pool[i]))
        return self.pool.pop(best)

    async def run(self) -> SearchResult:
        ctx = self.ctx
        root_drawn = await ctx.evaluate(ctx.root)
        self._add_candidates(ctx.root, root_drawn)
        paths: list[LabelledPath] = []
        seen: set[tuple[int, ...]] = set()
        for rollout, ok in root_drawn:
            if len(paths) >= self.config.positive_paths:
                break
            steps = ctx.splitter.split(rollout.token_ids) if ok else []
            if steps and ctx.key(steps) not in seen:
                seen.add(ctx.key(steps))
                paths.append(ctx.labelled_path(steps, last=(1.0, 1)))

        t = 0
        while self.pool and ctx.stats.searches < self.config.max_search_count:
            if ctx.budget_left() == 0:
                break
            t += 1
            candidate = self._pop(t)
            candidate.node.visits += 1
            self.total_visits += 1
            ctx.stats.searches += 1
            path = await self._locate_first_error(candidate)
            # Rollouts that share the prefix where the first error lies give the same path.
            if path is not None and ctx.key(path.steps) not in seen:
                seen.add(ctx.key(path.steps))
                paths.append(path)
        return ctx.finish(paths)

    async def _locate_first_error(self, candidate: Candidate) -> LabelledPath | None:
        """Binary search for the first wrong step of an incorrect rollout (OmegaPRM).

        Invariant: the prefix up to step lo - 1 has MC > 0, and the first error lies in steps
        lo..hi. Estimate MC of the prefix through mid = (lo + hi) // 2: MC = 0 puts the first
        error at or before mid (hi = mid), MC > 0 after it (lo = mid + 1).
        """
        ctx = self.ctx
        steps = ctx.splitter.split(candidate.rollout.token_ids)
        if not steps:
            return None
        base = candidate.node.step_ids()
        parent = candidate.node
        lo, hi = 0, len(steps) - 1
        # Prefixes of this rollout that other searches already estimated narrow the interval:
        # positives before the first known zero raise lo, that zero lowers hi. Without this a
        # path could pass a prefix already labelled 0 and contradict itself.
        for idx in range(len(steps) - 1):
            known = ctx.lookup(base + steps[: idx + 1])
            if known is None or known.mc is None:
                continue
            if known.mc > 0:
                parent, lo = known, idx + 1
            else:
                hi = idx
                break
        while lo < hi:
            mid = (lo + hi) // 2
            node = ctx.child(parent, steps[lo : mid + 1])
            if node.mc is None:
                drawn = await ctx.evaluate(node)
                if node.mc is None:  # the budget ran out before any rollout
                    break
                self._add_candidates(node, drawn)
            if node.mc > 0:
                parent, lo = node, mid + 1
            else:
                hi = mid
        if lo < hi:
            # Stopped early: only the steps known to be fine can be labelled.
            return ctx.labelled_path(base + steps[:lo], last=None) if lo > 0 else None
        error = ctx.child(parent, steps[lo : lo + 1])
        if error.mc is None:
            # The whole rollout is this prefix: it was graded wrong, so its value is 0.
            error.mc, error.rollouts = 0.0, 1
        return ctx.labelled_path(base + steps[: lo + 1], last=None)
