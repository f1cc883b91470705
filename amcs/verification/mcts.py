"""Monte Carlo tree search over solution steps, with PRM values instead of rollouts.

Nodes are step prefixes (the root is the prompt). One iteration:

1. Selection: from the root, while the node has children, go to the child maximising PUCT
   Q(c) + c_puct * P(c) * sqrt(N(parent)) / (1 + N(c)), ties to the earliest child. P is uniform,
   1 / (number of children): the PRM gives no prior over steps before they are sampled.
2. Expansion: the leaf samples `expansions` next steps (one request, stopping at the separator);
   identical steps become one child. Each new child's value v is the PRM score of its last step,
   and it starts with N = 1, Q = v.
3. Back-up: the leaf and every ancestor get N += 1 and W += v for each new child, Q = W / N; so a
   node's Q is the mean of all values evaluated in its subtree.

A leaf that cannot grow (finished solution, max_depth steps, or no tokens left) is not expanded:
its own value is backed up once more. Finished solutions are recorded as they appear. The budget
is n iterations. The answer is the recorded solution with the best aggregate(step scores) (ties:
earliest found); when none finished, the most visited path (ties: earliest child) is completed
greedily and that completion is the answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from amcs.verification.aggregation import best_index
from amcs.verification.base import Candidate, StrategyResult, final_answer
from amcs.verification.context import Run, VerifyContext
from amcs.verification.stepwise import StepPath, can_extend, extend, tokens_left


def puct(q: float, prior: float, parent_visits: int, visits: int, c_puct: float) -> float:
    """Q + c_puct * P * sqrt(N(parent)) / (1 + N)."""
    return q + c_puct * prior * math.sqrt(parent_visits) / (1 + visits)


@dataclass(eq=False)
class TreeNode:
    path: StepPath
    parent: TreeNode | None = None
    children: list[TreeNode] = field(default_factory=list)
    visits: int = 0
    value_sum: float = 0.0

    @property
    def q(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0

    def iter(self):
        yield self
        for child in self.children:
            yield from child.iter()


class MCTS:
    """The search state of one run: the tree, the finished solutions, the iterations done."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.root = TreeNode(StepPath())
        self.solutions: list[TreeNode] = []
        self.iterations = 0

    def select(self) -> TreeNode:
        node, c = self.root, self.run.config.c_puct
        while node.children:
            prior = 1.0 / len(node.children)
            node = max(  # max() keeps the first of equal keys: ties go to the earliest child
                node.children, key=lambda ch: puct(ch.q, prior, node.visits, ch.visits, c)
            )
        return node

    @staticmethod
    def backup(node: TreeNode | None, values: list[float]) -> None:
        while node is not None:
            node.visits += len(values)
            node.value_sum += math.fsum(values)
            node = node.parent

    async def expand(self, leaf: TreeNode) -> list[TreeNode]:
        new: list[TreeNode] = []
        seen: set[tuple[int, ...]] = set()
        for path in await extend(self.run, leaf.path, self.run.config.expansions):
            if path.ids in seen:
                continue
            seen.add(path.ids)
            child = TreeNode(path, parent=leaf, visits=1, value_sum=path.value)
            leaf.children.append(child)
            new.append(child)
            if path.finished:
                self.solutions.append(child)
        return new

    async def iterate(self) -> None:
        leaf = self.select()
        if can_extend(self.run, leaf.path):
            new = await self.expand(leaf)
            self.backup(leaf, [c.path.value for c in new])
        else:
            self.backup(leaf, [leaf.path.value])
        self.iterations += 1

    async def search(self) -> StrategyResult:
        run = self.run
        for _ in range(run.config.n):
            await self.iterate()
        how = run.config.aggregation
        candidates = [node.path.candidate(how) for node in self.solutions]
        chosen = best_index(candidates)
        if chosen is None:
            candidates.append(await self.complete_most_visited())
            chosen = len(candidates) - 1
        stats = {
            "iterations": self.iterations,
            "nodes": sum(1 for _ in self.root.iter()),
            "solutions": len(self.solutions),
            "root_visits": self.root.visits,
        }
        return run.result(candidates, chosen, stats=stats)

    async def complete_most_visited(self) -> Candidate:
        """Follow the most visited child from the root to a leaf, then finish it greedily; the
        completion is unfinished (no answer) when it is cut at the token limit, or when no
        tokens were left for it."""
        node = self.root
        while node.children:
            node = max(node.children, key=lambda ch: ch.visits)
        path, text, finished = node.path, node.path.text, node.path.finished
        left = tokens_left(self.run, path)
        if left > 0 and not path.finished:
            (r,) = await self.run.sample(path.ids, 1, temperature=0.0, max_new_tokens=left)
            text += r.text
            finished = not r.truncated
        return Candidate(text, final_answer(text, finished), None, list(path.step_scores), finished)


async def mcts(ctx: VerifyContext, question: str, n: int | None = None) -> StrategyResult:
    """MCTS with n iterations; see the module docstring."""
    return await MCTS(Run(ctx, "mcts", question, n)).search()
