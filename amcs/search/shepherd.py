"""Math-Shepherd's labelling in the same framework: sample solutions, then estimate MC at every
step prefix of each with the configured estimator (fixed N rollouts by default).

Hard label: MC > threshold (0: "any rollout correct"); soft label: the fraction correct.
"""

from __future__ import annotations

from amcs.search.context import SearchContext, SearchResult, truncated


class ShepherdSearch:
    def __init__(self, ctx: SearchContext) -> None:
        self.ctx = ctx

    async def run(self) -> SearchResult:
        ctx = self.ctx
        solutions = await ctx.draw(ctx.root, ctx.config.num_solutions)
        if solutions:
            ctx.root.mc = sum(ok for _, ok in solutions) / len(solutions)
            ctx.root.rollouts = len(solutions)
            ctx.keep(ctx.root, solutions)
        paths: list[list[list[int]]] = []
        seen: set[tuple[int, ...]] = set()
        for rollout, correct in solutions:
            steps = ctx.splitter.split(rollout.token_ids)
            cut = truncated(rollout)
            if cut:
                # The last step was cut at max_new_tokens: label only the steps before it.
                steps = steps[:-1]
            if not steps or ctx.key(steps) in seen:
                continue
            seen.add(ctx.key(steps))
            ctx.stats.searches += 1
            node = ctx.root
            # Every prefix but a complete solution, which is already graded.
            for step in steps if cut else steps[:-1]:
                node = ctx.child(node, [step])
                if node.mc is None:
                    await ctx.evaluate(node)
            if not cut:
                last = ctx.child(node, [steps[-1]])
                if last.mc is None:
                    ctx.set_exact(last, correct)
            paths.append(steps)
        return ctx.finish(paths, own_values=True)
