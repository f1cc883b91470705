"""What every search of one problem shares: rollouts from a node, grading, budget, statistics,
seeds, the prefix index, and turning evaluated prefixes into labelled paths."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from amcs.backends.base import Backend, Rollout, SamplingParams
from amcs.problems import Problem
from amcs.search.config import SearchConfig
from amcs.search.estimators import Estimate, Outcome, make_estimator
from amcs.search.tree import Node
from amcs.seeds import derive_seed
from amcs.steps import StepSplitter


class AnswerChecker(Protocol):
    async def check_completion(self, completion_text: str, reference: str) -> bool: ...


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
    # Label honesty: rollouts cut at max_new_tokens (graded wrong, never searched); rollouts the
    # candidate filter kept out of the pool; whether screening skipped this problem's search;
    # all-wrong estimates overruled by a correct completion observed below them; steps left
    # without a label (a short estimate, or a truncated solution's cut step).
    truncated: int = 0
    filtered: int = 0
    screened: int = 0
    overruled: int = 0
    unlabelled_steps: int = 0
    # Error searches stopped by the budget (or a short estimate) before they located the first
    # error: they write only the steps known to be fine, so a prefix they measured at MC 0 gets
    # no "-" label.
    unlocated: int = 0
    # Grading deadlines (amcs.grading.Grader): attempts that missed one and were tried again, and
    # checks with no verdict after the last attempt (graded wrong).
    grading_retried: int = 0
    grading_unresolved: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class LabelledPath:
    """One path of the output: step token ids and, per step, the hard label, the soft value (the
    prefix's measured MC, or None where it was not measured) and the rollouts spent on it."""

    steps: list[list[int]]
    labels: list[bool]
    values: list[float | None]
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
    keep_rollouts: bool = False  # store each estimate's rollouts on its node (Node.kept)

    def __post_init__(self) -> None:
        self.estimator = make_estimator(self.config)
        self.root = Node(steps=[])
        self._index: dict[tuple[int, ...], Node] = {(): self.root}
        self._positive: set[tuple[int, ...]] = set()
        self._overruled: set[tuple[int, ...]] = set()
        self.total_visits = 0  # sum_i N_i over the tree
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
        # A rollout cut at max_new_tokens counts as wrong, whatever answer it may have written.
        graded = [not truncated(r) and await self._grade(prefix_text + r.text) for r in rollouts]
        self.stats.truncated += sum(map(truncated, rollouts))
        self.stats.rollouts += len(rollouts)
        self.stats.tokens += sum(r.num_tokens for r in rollouts)
        self.stats.prompt_tokens += (len(self.prompt_ids) + len(prefix)) * len(rollouts)
        self.stats.cached_tokens += sum(r.cached_tokens for r in rollouts)
        return list(zip(rollouts, graded, strict=True))

    async def _grade(self, completion: str) -> bool:
        """Grade one complete solution. A checker that reports its deadline misses
        (amcs.grading.Grader.grade_completion) has them counted in this problem's stats; the
        checker is shared by all searches, so it cannot attribute them itself."""
        grade = getattr(self.checker, "grade_completion", None)
        if grade is None:
            return await self.checker.check_completion(completion, self.problem.answer)
        result = await grade(completion, self.problem.answer)
        self.stats.grading_retried += result.retried
        self.stats.grading_unresolved += result.unresolved
        return result.correct

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
            self.keep(node, drawn)
            node.mc = estimate.mc
            node.rollouts = estimate.rollouts
            node.early_exit = estimate.early_exit
            node.clusters = list(estimate.cluster_sizes)
            node.uncertainty = estimate.uncertainty
            node.visits += 1  # N(s) counts MC evaluations (and selections)
            self.total_visits += 1
            self.stats.early_exits += estimate.early_exit
            self._note(node)
        return drawn

    def keep(self, node: Node, drawn: list[tuple[Rollout, bool]]) -> None:
        """With keep_rollouts, store the rollouts that estimated `node` on it (kept_rollout)."""
        if self.keep_rollouts:
            node.kept = [kept_rollout(r, ok) for r, ok in drawn]

    def set_exact(self, node: Node, correct: bool) -> None:
        """`node` is a complete solution graded `correct`: its MC is that grade, not an estimate."""
        node.mc, node.rollouts, node.exact = float(correct), max(node.rollouts, 1), True
        self._note(node)

    @property
    def min_evidence(self) -> int:
        """Rollouts an all-wrong estimate needs before it may become a "-" label."""
        return self.config.k0 if self.config.estimator == "adaptive" else self.config.k

    def _note(self, node: Node) -> None:
        """Record positive evidence: a node with MC > threshold proves every prefix of it
        (a correct completion through it is a correct completion through each of them)."""
        if node.mc is not None and node.mc > self.config.threshold:
            steps = node.step_ids()
            for i in range(1, len(steps) + 1):
                self._positive.add(self.key(steps[:i]))

    def known_positive(self, steps: list[list[int]]) -> bool:
        """Whether this prefix, or a prefix extending it, was measured above the threshold."""
        return self.key(steps) in self._positive

    def verdict(self, steps: list[list[int]]) -> bool | None:
        """The one label this problem gives the prefix `steps`: True, False, or None (unknown).

        + : the prefix or an extension of it was measured above the threshold (an observed
            correct completion beats an all-wrong estimate of an ancestor);
        - : measured at or below the threshold from at least min_evidence rollouts, or graded
            as a complete wrong solution, and no extension of it was measured positive;
        None otherwise: never measured, or a short estimate (the budget ran out).
        """
        if self.known_positive(steps):
            return True
        node = self.lookup(steps)
        if node is None or node.mc is None:
            return None
        return False if node.exact or node.rollouts >= self.min_evidence else None

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

    def labelled_path(
        self, steps: list[list[int]], own_values: bool = False
    ) -> LabelledPath | None:
        """The path `steps` labelled from what the whole search measured (call it at the end, so
        every path through a prefix carries the same label): labels from `verdict` (or, with
        `own_values`, each prefix's own measurement, as Math-Shepherd labels), values the
        measured MC or None, rollouts spent on each prefix (0 where not measured). The path is
        cut before its first step without a label, and after its first "-"; None if nothing is
        left."""
        labels: list[bool] = []
        values: list[float | None] = []
        counts: list[int] = []
        for i in range(len(steps)):
            node = self.lookup(steps[: i + 1])
            measured = node is not None and node.mc is not None
            if own_values:
                label = None
                if measured:
                    positive = node.mc > self.config.threshold
                    sure = node.exact or node.rollouts >= self.min_evidence
                    label = True if positive else (False if sure else None)
            else:
                label = self.verdict(steps[: i + 1])
            if label is None:
                self.stats.unlabelled_steps += len(steps) - i
                break
            value = node.mc if measured else None
            if label and value is not None and value <= self.config.threshold:
                value = None  # an all-wrong estimate overruled by a correct completion below it
                self._overruled.add(self.key(steps[: i + 1]))
            labels.append(label)
            values.append(value)
            counts.append(node.rollouts if measured else 0)
            if not label and not own_values:
                break
        if not labels:
            return None
        k = len(labels)
        return LabelledPath(steps=steps[:k], labels=labels, values=values, rollouts=counts)

    def finish(self, paths: list[list[list[int]]], own_values: bool = False) -> SearchResult:
        """Label the paths the search found (see labelled_path), each distinct path once."""
        text = self.splitter.text
        records, pos, neg = [], 0, 0
        seen: set[tuple[int, ...]] = set()
        for steps in paths:
            p = self.labelled_path(steps, own_values)
            if p is None or self.key(p.steps) in seen:
                continue
            seen.add(self.key(p.steps))
            pos += sum(p.labels)
            neg += len(p.labels) - sum(p.labels)
            records.append(
                {
                    "completions": [text(s) for s in p.steps],
                    "labels": p.labels,
                    "values": [None if v is None else round(v, 6) for v in p.values],
                    "rollouts": p.rollouts,
                }
            )
        self.stats.overruled = len(self._overruled)
        tree = self.root.to_dict(text)
        return SearchResult(records, tree, self.stats, pos, neg)


def kept_rollout(rollout: Rollout, correct: bool) -> dict:
    """A rollout as the meta file keeps it: the continuation's text, its grade (a truncated one
    is graded wrong), its tokens, finish_reason ("length": cut at max_new_tokens) and mean token
    NLL."""
    return {
        "text": rollout.text,
        "correct": bool(correct),
        "tokens": rollout.num_tokens,
        "finish_reason": rollout.finish_reason,
        "mean_nll": round(rollout.mean_nll, 4),
    }


def truncated(rollout: Rollout) -> bool:
    """A rollout cut at max_new_tokens: its last step may be cut mid-number."""
    return rollout.truncated
