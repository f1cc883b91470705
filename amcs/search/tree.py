"""The search tree: nodes are solution prefixes, edges are runs of steps the model wrote."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(eq=False)
class Node:
    """A prefix: the parent's prefix plus `steps` (token ids of each step, separator included).

    mc is None until estimated. rollouts counts the rollouts spent estimating it; exact marks a
    value that is no estimate: the prefix is a complete solution and mc its grade. visits N(s)
    counts its MC evaluations plus the selections of a candidate from it (AMCS's code counts
    the evaluation, so N(s) >= 1 for every node that has candidates). early_exit, clusters
    (rollouts per cluster) and uncertainty record how the estimator stopped (for `amcs view`).
    kept holds the rollouts of its estimate when the run keeps them (``--keep-rollouts``): one
    dict per rollout, see ``amcs.search.context.kept_rollout``.
    """

    steps: list[list[int]]
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    mc: float | None = None
    rollouts: int = 0
    exact: bool = False
    visits: int = 0
    depth: int = 0  # steps from the root to the end of this node
    early_exit: bool = False
    clusters: list[int] = field(default_factory=list)
    uncertainty: float | None = None
    kept: list[dict] = field(default_factory=list)

    def add_child(self, steps: list[list[int]]) -> Node:
        child = Node(steps=steps, parent=self, depth=self.depth + len(steps))
        self.children.append(child)
        return child

    def path(self) -> list[Node]:
        """Nodes from the root's first child down to this one."""
        nodes = []
        node: Node | None = self
        while node is not None and node.parent is not None:
            nodes.append(node)
            node = node.parent
        return nodes[::-1]

    def step_ids(self) -> list[list[int]]:
        """All steps from the root to the end of this node."""
        return [s for n in self.path() for s in n.steps]

    def iter(self):
        yield self
        for child in self.children:
            yield from child.iter()

    def to_dict(self, text) -> dict:
        """The tree as JSON: {"text", "mc", "rollouts", "visits", "early_exit", "clusters",
        "uncertainty", "children"}, plus "exact" on a graded complete solution and
        "kept_rollouts" on a node whose rollouts were kept; text(ids) renders a step."""
        return {
            "text": "\n\n".join(text(s) for s in self.steps),
            "mc": self.mc,
            "rollouts": self.rollouts,
            "visits": self.visits,
            "early_exit": self.early_exit,
            "clusters": self.clusters,
            "uncertainty": None if self.uncertainty is None else round(self.uncertainty, 6),
            **({"exact": True} if self.exact else {}),
            **({"kept_rollouts": self.kept} if self.kept else {}),
            "children": [c.to_dict(text) for c in self.children],
        }
