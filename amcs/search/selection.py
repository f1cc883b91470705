"""Which (node, incorrect rollout) candidate to search next."""

from __future__ import annotations

import math

from amcs.search.config import SearchConfig


def q_value(mc: float, rollout_tokens: int, config: SearchConfig) -> float:
    """Exploitation term: Q(s, r) = alpha^(1 - MC(s)) * beta^(len(r) / L).

    High for nodes that usually succeed (a wrong rollout from them likely holds a first error worth
    finding) and for short rollouts (cheaper to bisect)."""
    return config.alpha ** (1 - mc) * config.beta ** (rollout_tokens / config.length_scale)


def u_value(total_visits: int, node_visits: int, config: SearchConfig) -> float:
    """Exploration term: U(s) = c_puct * sqrt(sum_i N_i) / (1 + N(s))."""
    return config.c_puct * math.sqrt(total_visits) / (1 + node_visits)


def temporal_weight(t: int, config: SearchConfig) -> float:
    """w_t = exp(-t / temporal_decay): explore early, exploit later."""
    return math.exp(-t / config.temporal_decay)


def candidate_score(
    mc: float,
    rollout_tokens: int,
    node_visits: int,
    total_visits: int,
    t: int,
    config: SearchConfig,
) -> float:
    """AMCS: (1 - w_t) Q + w_t U.  OmegaPRM (selection = "sum"): Q + U."""
    q = q_value(mc, rollout_tokens, config)
    u = u_value(total_visits, node_visits, config)
    if config.selection == "sum":
        return q + u
    w = temporal_weight(t, config)
    return (1 - w) * q + w * u
