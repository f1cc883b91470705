"""Monte Carlo estimation of a node's value MC(s) = P(correct final answer | prefix s).

Two estimators share one interface: ``await estimator.estimate(draw)`` where ``draw(k)`` samples k
rollouts from the node and returns their (features, correct) pairs, honouring the problem's budget
(it may return fewer). The fixed estimator is Math-Shepherd's / OmegaPRM's: k rollouts, MC = the
fraction correct. The adaptive one is AMCS's: few rollouts where the outcome is clear, more where
it is uncertain.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from amcs.search.config import SearchConfig

# A rollout as the estimators see it: (mean token NLL, token count) and whether it was correct.
Outcome = tuple[tuple[float, int], bool]
Draw = Callable[[int], Awaitable[list[Outcome]]]


@dataclass
class Estimate:
    mc: float
    rollouts: int
    early_exit: bool = False
    uncertainty: float | None = None
    cluster_sizes: list[int] = field(default_factory=list)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval: centre and half-width.

    centre = (p + z^2 / 2n) / (1 + z^2 / n)
    h      = z * sqrt(p (1 - p) / n + z^2 / 4n^2) / (1 + z^2 / n),    p = successes / n
    """
    if n <= 0:
        return 0.5, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return centre, half


def rollout_features(mean_nll: float, length: int) -> tuple[float, float]:
    """AMCS's per-rollout features: mean token NLL = -(1/len) sum log p, and log(len + 1e-6)."""
    return mean_nll, math.log(length + 1e-6)


def kmeans(
    points: list[tuple[float, float]], k: int, seed: int, iters: int = 20
) -> list[tuple[float, float]]:
    """Seeded K-means (k-means++ start, Lloyd steps); returns up to k centroids."""
    distinct = sorted(set(points))
    if len(distinct) <= k:
        return distinct
    rng = random.Random(seed)
    centroids = [rng.choice(distinct)]
    while len(centroids) < k:
        d2 = [min(_dist2(p, c) for c in centroids) for p in distinct]
        centroids.append(rng.choices(distinct, weights=d2)[0])
    for _ in range(iters):
        groups: list[list[tuple[float, float]]] = [[] for _ in centroids]
        for p in points:
            groups[nearest(p, centroids)].append(p)
        moved = [
            (sum(x for x, _ in g) / len(g), sum(y for _, y in g) / len(g)) if g else c
            for g, c in zip(groups, centroids, strict=True)
        ]
        if moved == centroids:
            break
        centroids = moved
    return centroids


def nearest(p: tuple[float, float], centroids: list[tuple[float, float]]) -> int:
    return min(range(len(centroids)), key=lambda j: _dist2(p, centroids[j]))


def _dist2(a: tuple[float, float], b: tuple[float, float]) -> float:
    return (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2


class FixedEstimator:
    """MC(s) = (1/k) sum_i 1[rollout i reaches the correct answer], with k fixed."""

    def __init__(self, config: SearchConfig) -> None:
        self.k = config.k

    async def estimate(self, draw: Draw, seed: int) -> Estimate:
        outcomes = await draw(self.k)
        n = len(outcomes)
        return Estimate(mc=sum(ok for _, ok in outcomes) / n if n else 0.0, rollouts=n)


class AdaptiveEstimator:
    """AMCS's adaptive estimate of MC(s).

    1. Draw k0 rollouts. All correct or all wrong: MC = 1 or 0, stop (early exit; with fewer
       than k0 because the budget ran out, a short estimate, not an early exit). With
       zero_exit_upper < 1, all wrong stops only once the Wilson upper bound of the success rate
       is below it (drawing k_step_max more at a time, up to k_max_node).
    2. Features per rollout (mean token NLL, log length), z-scored with the first rollouts' mean and
       std (std 0 -> 1); K-means into K clusters (seeded); centroids fixed from then on.
    3. Per cluster j: Wilson interval on (n_j, successes_j), half-width h_j; cluster j is frozen
       when n_j >= freeze_n and h_j <= freeze_halfwidth, and stays frozen (a rollout assigned to
       it later may widen h_j, but it is never chosen for sampling again).
    4. p = sum_j (n_j / n) p_j,  d = sqrt(sum_j (n_j / n)^2 h_j^2). Stop when d <= eps_node, or
       n >= k_max_node, or no cluster is active, or the budget is spent. Otherwise take the active
       cluster with the largest h_j and draw k_step = clip(ceil(h_j * k_step_scale), 1, k_step_max)
       more rollouts from the node, assign each to its nearest centroid, and repeat.
    5. MC(s) = p.
    """

    def __init__(self, config: SearchConfig) -> None:
        self.c = config

    async def estimate(self, draw: Draw, seed: int) -> Estimate:
        c = self.c
        outcomes = await draw(c.k0)
        if not outcomes:
            return Estimate(mc=0.0, rollouts=0)
        # All wrong: a valid prefix with a low success rate also comes out all wrong often
        # (0.85^6 = 0.38), so MC = 0 needs the Wilson upper bound below zero_exit_upper
        # (1.0, the paper's rule, accepts the first k0).
        while (
            not any(ok for _, ok in outcomes)
            and sum(wilson_interval(0, len(outcomes), c.wilson_z)) >= c.zero_exit_upper
            and len(outcomes) < c.k_max_node
        ):
            more = await draw(min(c.k_step_max, c.k_max_node - len(outcomes)))
            if not more:
                break
            outcomes += more
        wins = sum(ok for _, ok in outcomes)
        if wins in (0, len(outcomes)):
            # Fewer than k0 outcomes (the budget ran out) are not an early exit but a short
            # estimate; the search never turns one into a "-" label.
            exit_ = len(outcomes) >= c.k0
            return Estimate(mc=wins / len(outcomes), rollouts=len(outcomes), early_exit=exit_)

        raw = [rollout_features(nll, length) for (nll, length), _ in outcomes]
        mean = [sum(f[i] for f in raw) / len(raw) for i in range(2)]
        std = [
            math.sqrt(sum((f[i] - mean[i]) ** 2 for f in raw) / len(raw)) or 1.0 for i in range(2)
        ]

        def z(f: tuple[float, float]) -> tuple[float, float]:
            return ((f[0] - mean[0]) / std[0], (f[1] - mean[1]) / std[1])

        centroids = kmeans([z(f) for f in raw], c.clusters, seed)
        n_j = [0] * len(centroids)
        s_j = [0] * len(centroids)

        def assign(batch: list[Outcome]) -> None:
            for (nll, length), ok in batch:
                j = nearest(z(rollout_features(nll, length)), centroids)
                n_j[j] += 1
                s_j[j] += ok

        assign(outcomes)
        frozen: set[int] = set()  # sticky: a cluster once frozen is never sampled for again
        while True:
            n = sum(n_j)
            half = [wilson_interval(s, m, c.wilson_z)[1] for s, m in zip(s_j, n_j, strict=True)]
            p = sum((m / n) * (s / m) for s, m in zip(s_j, n_j, strict=True) if m)
            d = math.sqrt(sum((m / n) ** 2 * h * h for m, h in zip(n_j, half, strict=True) if m))
            frozen |= {
                j
                for j, (m, h) in enumerate(zip(n_j, half, strict=True))
                if m >= c.freeze_n and h <= c.freeze_halfwidth
            }
            active = [j for j, m in enumerate(n_j) if m and j not in frozen]
            if d <= c.eps_node or n >= c.k_max_node or not active:
                break
            h_max = max(half[j] for j in active)
            k_step = min(max(math.ceil(h_max * c.k_step_scale), 1), c.k_step_max, c.k_max_node - n)
            more = await draw(k_step)
            if not more:  # budget spent
                break
            assign(more)
        return Estimate(mc=p, rollouts=n, uncertainty=d, cluster_sizes=list(n_j))


def make_estimator(config: SearchConfig) -> FixedEstimator | AdaptiveEstimator:
    return AdaptiveEstimator(config) if config.estimator == "adaptive" else FixedEstimator(config)
