"""What every search of one problem shares: rollouts from a node, grading, budget, statistics,
seeds, the prefix index, and turning evaluated prefixes into labelled paths."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol

from amcs.backends.base import Backend, Rollout, SamplingParams
from amcs.problems import Problem
from amcs.search.config import SearchConfig
from amcs.search.estimators import Estimate, Outcome, make_estimator
from amcs.search.tree import Node
from amcs.steps import StepSplitter


class AnswerChecker(Protocol):
    async def check_completion(self, completion_text: str, reference: str) -> bool: ...


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts, stable across processes and machines."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass
class SearchStats:
    rollouts: int = 0
    requests: int = 0
    tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    nodes: int = 0
    early_exits: int = 0
    searches: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class LabelledPath:
    """One path of the output: step texts and, per step, MC value and rollouts spent on it
    (0 when the value is inherited from the next evaluated prefix on the path)."""

    steps: list[list[int]]
    values: list[float]
    rollouts: list[int]


@dataclass
class SearchResult:
    paths: list[dict]
    tree: dict
    stats: SearchStats
    labels_positive: int = 0
    labels_negative: int = 0


@dataclass
class SearchContext:
    problem: Problem
    backend: Backend
    checker: AnswerChecker
    config: SearchConfig
    prompt_ids: list[int]
    seed: int
    splitter: StepSplitter
    stats: SearchStats = field(default_factory=SearchStats)

    def __post_init__(self) -> None:
        self.estimator = make_estimator(self.config)
        self.root = Node(steps=[])
        self._index: dict[tuple[int, ...], Node] = {(): self.root}
        self.stats.nodes = 1

    # --- budget and rollouts -----------------------------------------------------------------

    def budget_left(self) -> int | None:
        if not self.config.rollout_budget:
            return None
        return max(0, self.config.rollout_budget - self.stats.rollouts)

    async def draw(self, node: Node, k: int) -> list[tuple[Rollout, bool]]:
        """Sample up to k rollouts from node's prefix (fewer if the budget is short) and grade
        each one as the complete solution prefix + rollout."""
        left = self.budget_left()
        if left is not None:
            k = min(k, left)
        if k <= 0:
            return []
        prefix = [t for s in node.step_ids() for t in s]
        params = SamplingParams(
            temperature=self.config.temperature,
            top_p=self.config.top_p,
            top_k=self.config.top_k,
            max_new_tokens=self.config.max_new_tokens,
            seed=derive_seed(self.seed, self.stats.requests),
        )
        self.stats.requests += 1
        rollouts = await self.backend.sample(self.prompt_ids + prefix, k, params)
        prefix_text = self.backend.tokenizer.decode(prefix) if prefix else ""
        graded = [
            await self.checker.check_completion(prefix_text + r.text, self.problem.answer)
            for r in rollouts
        ]
        self.stats.rollouts += len(rollouts)
        self.stats.tokens += sum(r.num_tokens for r in rollouts)
        self.stats.prompt_tokens += (len(self.prompt_ids) + len(prefix)) * len(rollouts)
        self.stats.cached_tokens += sum(r.cached_tokens for r in rollouts)
        return list(zip(rollouts, graded, strict=True))

    async def evaluate(self, node: Node) -> list[tuple[Rollout, bool]]:
        """Estimate MC(node) with the configured estimator; returns the rollouts it drew."""
        drawn: list[tuple[Rollout, bool]] = []

        async def draw(k: int) -> list[Outcome]:
            batch = await self.draw(node, k)
            drawn.extend(batch)
            return [((r.mean_nll, r.num_tokens), ok) for r, ok in batch]

        estimate: Estimate = await self.estimator.estimate(
            draw, derive_seed(self.seed, "kmeans", len(self._index))
        )
        if estimate.rollouts:
            node.mc = estimate.mc
            node.rollouts = estimate.rollouts
            node.early_exit = estimate.early_exit
            node.clusters = list(estimate.cluster_sizes)
            node.uncertainty = estimate.uncertainty
            self.stats.early_exits += estimate.early_exit
        return drawn

    # --- the prefix index --------------------------------------------------------------------

    @staticmethod
    def key(steps: list[list[int]]) -> tuple[int, ...]:
        return tuple(t for s in steps for t in s)

    def lookup(self, steps: list[list[int]]) -> Node | None:
        return self._index.get(self.key(steps))

    def child(self, parent: Node, steps: list[list[int]]) -> Node:
        """The node for parent + steps, reusing it if that prefix already exists."""
        full = parent.step_ids() + steps
        existing = self._index.get(self.key(full))
        if existing is not None:
            return existing
        node = parent.add_child(steps)
        self._index[self.key(full)] = node
        self.stats.nodes += 1
        return node

    # --- output ------------------------------------------------------------------------------

    def labelled_path(self, steps: list[list[int]], last: tuple[float, int] | None) -> LabelledPath:
        """Values along `steps` from the evaluated prefixes on it. `last`, when given, is the
        (value, rollouts) of the full path (a graded complete solution). A step that was not
        evaluated takes the value of the next evaluated prefix after it, with 0 rollouts."""
        values: list[float | None] = []
        counts: list[int] = []
        for i in range(len(steps)):
            node = self.lookup(steps[: i + 1])
            evaluated = node is not None and node.mc is not None
            values.append(node.mc if evaluated else None)
            counts.append(node.rollouts if evaluated else 0)
        if last is not None and values and values[-1] is None:
            values[-1], counts[-1] = last
        carry = values[-1] if values else None
        for i in range(len(values) - 1, -1, -1):
            if values[i] is None:
                values[i] = carry
            carry = values[i]
        return LabelledPath(steps=steps, values=[float(v) for v in values], rollouts=counts)

    def finish(self, paths: list[LabelledPath]) -> SearchResult:
        text = self.splitter.text
        records, pos, neg = [], 0, 0
        for p in paths:
            labels = [v > self.config.threshold for v in p.values]
            pos += sum(labels)
            neg += len(labels) - sum(labels)
            records.append(
                {
                    "completions": [text(s) for s in p.steps],
                    "labels": labels,
                    "values": [round(v, 6) for v in p.values],
                    "rollouts": p.rollouts,
                }
            )
        tree = self.root.to_dict(text)
        return SearchResult(records, tree, self.stats, pos, neg)
