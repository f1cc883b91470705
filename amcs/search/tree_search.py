"""The tree search that the `amcs` (default) and `omegaprm` methods run (OmegaPRM-style; the
`shepherd` baseline is in shepherd.py).

Estimate MC at the root; every incorrect rollout from a node with 0 < MC < 1 becomes a candidate
(unless it was cut at max_new_tokens, or the candidate filter rejects it). Repeatedly select the
best candidate (scores recomputed at every pop, so none is stale) and locate the first error in its
rollout by binary search; each search yields one path: positive steps up to the first error, and
the error step itself negative. Paths are labelled once the search is over, from everything it
measured, so a prefix carries one label in the whole problem (`SearchContext.verdict`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from amcs.backends.base import Rollout
from amcs.search.context import SearchContext, SearchResult, truncated
from amcs.search.selection import candidate_score
from amcs.search.tree import Node

# Garbled text (the paper's candidate filter): the replacement character of a broken decode,
# control characters, one character 20 times in a row, or one line three times in a row.
_GARBLED = re.compile(r"(?m)\ufffd|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|(.)\1{19}|^(.+)\n+\2\n+\2$")


def garbled(text: str) -> bool:
    """Whether a rollout's text is garbled (see _GARBLED)."""
    return _GARBLED.search(text) is not None


@dataclass(eq=False)
class CandidateRollout:
    """A wrong rollout from ``node`` waiting in the pool to have its first error located (not to
    be confused with ``amcs.verification.Candidate``, a solution a verification strategy
    considered)."""

    node: Node
    rollout: Rollout


class TreeSearch:
    def __init__(self, ctx: SearchContext) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.pool: list[CandidateRollout] = []

    def searchable(self, rollout: Rollout) -> bool:
        """The candidate filter: a rollout worth bisecting (complete, not garbled, not too
        unlikely under the policy)."""
        if not rollout.token_ids or truncated(rollout):
            return False
        c = self.config
        if c.garbled_filter and garbled(rollout.text):
            return False
        return not (c.max_candidate_nll and rollout.mean_nll > c.max_candidate_nll)

    def _add_candidates(
        self, node: Node, drawn: list[tuple[Rollout, bool]], unsolved: bool = False
    ) -> None:
        """Wrong rollouts of a node with 0 < MC < 1 (or MC = 0 too, with `unsolved`) join the
        pool, if the candidate filter passes them."""
        if node.mc is None or node.mc >= 1 or (node.mc == 0 and not unsolved):
            return
        for rollout, ok in drawn:
            if ok:
                continue
            if self.searchable(rollout):
                self.pool.append(CandidateRollout(node, rollout))
            elif not truncated(rollout):
                self.ctx.stats.filtered += 1

    def _pop(self, t: int) -> CandidateRollout:
        """The best candidate by its score now (Q from its node's MC, U from the visit counts as
        they stand at this pop)."""

        def score(c: CandidateRollout) -> float:
            return candidate_score(
                c.node.mc,
                c.rollout.num_tokens,
                c.node.visits,
                max(1, self.ctx.total_visits),
                t,
                self.config,
            )

        best = max(range(len(self.pool)), key=lambda i: score(self.pool[i]))
        return self.pool.pop(best)

    async def run(self) -> SearchResult:
        ctx = self.ctx
        c = self.config
        root_drawn = await ctx.evaluate(ctx.root)
        root_mc = ctx.root.mc
        if root_mc is None:
            return ctx.finish([])
        # Screening (OmegaPRM's paper): a problem the policy rarely solves gives all-wrong
        # estimates at valid prefixes, and its rare right answers are often reached through
        # wrong steps, so it is skipped, positive paths too, unless its root MC reaches
        # min_root_mc. search_unsolved searches every problem (the AMCS paper's code).
        if not c.search_unsolved and 0 < root_mc < c.min_root_mc:
            ctx.stats.screened = 1
            return ctx.finish([])
        paths: list[list[list[int]]] = []
        # Correct root rollouts are complete solutions graded right: exact positives.
        for rollout, ok in root_drawn:
            if len(paths) >= c.positive_paths:
                break
            steps = ctx.splitter.split(rollout.token_ids) if ok else []
            if steps:
                ctx.set_exact(ctx.child(ctx.root, steps), True)
                paths.append(steps)
        self._add_candidates(ctx.root, root_drawn, unsolved=c.search_unsolved)

        t = 0
        while self.pool and ctx.stats.searches < c.max_search_count:
            if ctx.budget_left() == 0:
                break
            t += 1
            candidate = self._pop(t)
            candidate.node.visits += 1
            ctx.total_visits += 1
            ctx.stats.searches += 1
            path = await self._locate_first_error(candidate)
            if path:
                paths.append(path)
        return ctx.finish(paths)

    async def _locate_first_error(self, candidate: CandidateRollout) -> list[list[int]] | None:
        """Binary search for the first wrong step of an incorrect rollout (OmegaPRM); returns the
        steps of the path it found (labelled later by `SearchContext.finish`).

        Invariant: the prefix up to step lo - 1 has MC > threshold, and the first error lies in
        steps lo..hi. Estimate MC of the prefix through mid = (lo + hi) // 2: MC at most the
        threshold puts the first error at or before mid (hi = mid), above it after (lo = mid + 1).
        A prefix with known positive evidence (it or an extension measured positive) is not
        estimated again; an all-wrong estimate from fewer than min_evidence rollouts (budget
        spent) stops the search with only the steps known to be fine.
        """
        ctx = self.ctx
        steps = ctx.splitter.split(candidate.rollout.token_ids)
        if not steps:
            return None
        base = candidate.node.step_ids()
        parent = candidate.node
        lo, hi = 0, len(steps) - 1
        # Prefixes of this rollout that earlier searches measured narrow the interval: positives
        # raise lo, the first well-evidenced zero lowers hi. Without this a path could pass a
        # prefix already labelled "-" and contradict itself.
        for idx in range(len(steps) - 1):
            prefix = base + steps[: idx + 1]
            verdict = ctx.verdict(prefix)
            if verdict:
                known = ctx.lookup(prefix)
                if known is not None:
                    parent, lo = known, idx + 1
                else:
                    lo = idx + 1
                    parent = ctx.child(parent, steps[len(parent.step_ids()) - len(base) : lo])
            elif verdict is False:
                hi = idx
                break
        stopped = False
        while lo < hi:
            mid = (lo + hi) // 2
            node = ctx.child(parent, steps[lo : mid + 1])
            if node.mc is None and not ctx.known_positive(base + steps[: mid + 1]):
                drawn = await ctx.evaluate(node)
                if node.mc is None:  # the budget ran out before any rollout
                    stopped = True
                    break
                self._add_candidates(node, drawn)
            verdict = ctx.verdict(base + steps[: mid + 1])
            if verdict:
                parent, lo = node, mid + 1
            elif verdict is False:
                hi = mid
            else:  # a short all-wrong estimate: no "-" label from it
                stopped = True
                break
        if stopped:
            # The first error lies in steps lo..hi, but the budget ran out (or left a short
            # estimate) before it was located: only the steps known to be fine are kept, and no
            # "-" comes from this search, even where it measured a prefix at MC 0.
            ctx.stats.unlocated += 1
            return base + steps[:lo] if base or lo > 0 else None
        error = ctx.child(parent, steps[lo : lo + 1])
        if error.mc is None and lo == len(steps) - 1:
            # The whole rollout is this prefix: a complete solution graded wrong.
            ctx.set_exact(error, False)
        return base + steps[: lo + 1]
