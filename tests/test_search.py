"""The searches on the real tiny policy, audited with the arithmetic domain's exact checker."""

import asyncio
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amcs.backends.base import Rollout
from amcs.backends.hf import HFBackend
from amcs.domains.arith import ArithConfig, check_steps, generate_problems
from amcs.grading import Grader
from amcs.problems import Problem, arith_problems
from amcs.prompts import prompt_ids
from amcs.search import make_config, run_search
from amcs.search.context import SearchContext
from amcs.search.estimators import AdaptiveEstimator, FixedEstimator, kmeans, wilson_interval
from amcs.search.omega import Candidate, TreeSearch
from amcs.search.selection import candidate_score, q_value, u_value
from amcs.steps import StepSplitter


@pytest.fixture(scope="module")
def backend():
    b = HFBackend(max_batch_size=128)
    yield b
    asyncio.run(b.aclose())


@pytest.fixture(scope="module")
def grader():
    g = Grader()
    yield g
    asyncio.run(g.aclose())


def context(backend, grader, problem, **overrides):
    config = make_config(overrides.pop("method", "amcs"), max_new_tokens=120, **overrides)
    return SearchContext(
        problem=problem,
        backend=backend,
        checker=grader,
        config=config,
        prompt_ids=prompt_ids(backend.tokenizer, problem.question),
        seed=7,
        splitter=StepSplitter(backend.tokenizer),
    )


# --- formulas ---------------------------------------------------------------------------------


def test_wilson_interval_matches_hand_computed_values():
    centre, half = wilson_interval(3, 6)
    # p = 0.5, n = 6, z = 1.96: centre 0.5, half = 1.96 sqrt(0.25/6 + 3.8416/144) / 1.64027
    assert centre == pytest.approx(0.5)
    assert half == pytest.approx(1.96 * math.sqrt(0.25 / 6 + 3.8416 / 144) / (1 + 3.8416 / 6))
    assert wilson_interval(0, 6)[0] > 0  # never a zero-width interval at 0 successes


def test_selection_formulas():
    config = make_config("amcs")
    assert q_value(1.0, 0, config) == 1.0
    assert q_value(0.0, 500, config) == pytest.approx(0.5 * 0.9)
    assert u_value(16, 3, config) == pytest.approx(0.125 * 4 / 4)
    # Early on exploration dominates, later exploitation: w_1 = exp(-1/20), w_100 = exp(-5).
    early = candidate_score(0.5, 100, 0, 4, 1, config)
    w = math.exp(-1 / 20)
    assert early == pytest.approx((1 - w) * q_value(0.5, 100, config) + w * u_value(4, 0, config))
    omega = make_config("omegaprm")
    assert candidate_score(0.5, 100, 0, 4, 1, omega) == pytest.approx(
        q_value(0.5, 100, omega) + u_value(4, 0, omega)
    )


def test_kmeans_is_seeded_and_separates_groups():
    pts = [(0.0, 0.0), (0.1, 0.0), (5.0, 5.0), (5.1, 5.0), (-5.0, 5.0), (-5.1, 5.1)]
    a = kmeans(pts, 3, seed=1)
    assert a == kmeans(pts, 3, seed=1)
    assert sorted(round(x) for x, _ in a) == [-5, 0, 5]


def run(coro):
    return asyncio.run(coro)


def label(backend, grader, problem, method, seed, **overrides):
    """Run one search of `problem` with the real policy and grader."""
    config = make_config(method, **overrides)
    ids = prompt_ids(backend.tokenizer, problem.question)
    return run(run_search(problem, backend, grader, config, ids, seed=seed))


def fake_draw(p_correct: float, seed: int):
    """Outcomes with known success probability, for the estimators alone."""
    rng = random.Random(seed)

    async def draw(k):
        return [
            ((rng.uniform(0.1, 2.0), rng.randint(5, 60)), rng.random() < p_correct)
            for _ in range(k)
        ]

    return draw


def test_adaptive_estimator_exits_early_when_clear_and_samples_more_when_uncertain():
    est = AdaptiveEstimator(make_config("amcs"))
    clear = run(est.estimate(fake_draw(1.0, 0), seed=0))
    assert clear.early_exit and clear.mc == 1.0 and clear.rollouts == 6
    unsure = [run(est.estimate(fake_draw(0.5, s), seed=s)) for s in range(30)]
    mixed = [e for e in unsure if not e.early_exit]
    # Mixed outcomes usually leave the uncertainty d above eps_node = 0.2, so more are drawn.
    assert mixed and all(6 <= e.rollouts <= 20 for e in mixed)
    assert sum(e.rollouts > 6 for e in mixed) >= 0.8 * len(mixed)
    assert abs(sum(e.mc for e in mixed) / len(mixed) - 0.5) < 0.15
    fixed = run(FixedEstimator(make_config("omegaprm")).estimate(fake_draw(0.5, 1), seed=0))
    assert fixed.rollouts == 16


# --- the real policy ----------------------------------------------------------------------------


def planted(problem, backend, rng):
    """The reference solution with one wrong result planted at a step after the first (at the
    first step the tiny policy often recomputes the value and recovers, so MC stays > 0 there)."""
    steps = list(problem.meta["steps"])
    i = rng.randrange(1, len(steps) - 1)
    lhs, rhs = steps[i].rsplit(" = ", 1)
    steps[i] = f"{lhs} = {int(rhs) + rng.choice([-3, -1, 1, 2])}"
    ids = backend.tokenizer("\n\n".join(steps), add_special_tokens=False)["input_ids"]
    return i, ids


def test_binary_search_finds_planted_first_errors(backend, grader):
    """Plant an error in a reference solution: the binary search, estimating MC with the real
    policy, must point at the planted step, which the exact checker confirms is the first error."""
    rng = random.Random(0)
    found = total = 0
    for p in generate_problems(12, seed=3, config=ArithConfig(min_ops=3, max_ops=4, operand_max=9)):
        problem = Problem(p.id, p.question, str(p.answer), {"steps": p.solution_steps})
        ctx = context(backend, grader, problem, method="omegaprm", k=16)
        ctx.root.mc = 0.5
        i, ids = planted(problem, backend, rng)
        path = run(
            TreeSearch(ctx)._locate_first_error(Candidate(ctx.root, Rollout(ids, "", 0.0, "stop")))
        )
        total += 1
        full = [ctx.splitter.text(s) for s in ctx.splitter.split(ids)]
        assert check_steps(p.expression, full).first_error == i
        # Whatever it finds, the search is consistent: values > 0 up to the error, 0 at it.
        assert path.values[-1] == 0 and all(v > 0 for v in path.values[:-1])
        found += len(path.steps) - 1 == i
    assert found >= 0.75 * total, f"located {found}/{total} planted errors"


def test_labelled_paths_are_consistent_with_the_search(backend, grader):
    """Every AMCS path: labels are MC > threshold; steps before the last are positive; a path
    ending in a negative step ends at a measured MC of 0; no path is written twice."""
    for problem in arith_problems(8, seed=5):
        result = label(
            backend,
            grader,
            problem,
            "amcs",
            1,
            max_new_tokens=120,
            rollout_budget=60,
            max_search_count=4,
        )
        assert result.stats.rollouts <= 60
        seen = set()
        for path in result.paths:
            assert path["labels"] == [v > 0 for v in path["values"]]
            assert all(path["labels"][:-1])
            if not path["labels"][-1]:
                assert path["values"][-1] == 0 and path["rollouts"][-1] >= 1
            key = tuple(path["completions"])
            assert key not in seen
            seen.add(key)


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    budget=st.integers(1, 40),
    k0=st.integers(1, 6),
    eps=st.floats(0.05, 0.5),
    searches=st.integers(1, 6),
    seed=st.integers(0, 10_000),
)
def test_amcs_never_exceeds_its_budget(backend, grader, budget, k0, eps, searches, seed):
    problem = arith_problems(1, seed=seed)[0]
    result = label(
        backend,
        grader,
        problem,
        "amcs",
        seed,
        rollout_budget=budget,
        k0=k0,
        eps_node=eps,
        max_search_count=searches,
        max_new_tokens=100,
    )
    assert result.stats.rollouts <= budget
    assert result.stats.searches <= searches
    for path in result.paths:
        assert (
            len(path["completions"])
            == len(path["labels"])
            == len(path["values"])
            == len(path["rollouts"])
        )


def test_shepherd_labels_every_step_with_n_rollouts(backend, grader):
    problem = arith_problems(1, seed=2)[0]
    result = label(
        backend, grader, problem, "shepherd", 0, k=4, num_solutions=3, max_new_tokens=120
    )
    assert 1 <= len(result.paths) <= 3
    for path in result.paths:
        # Every step but the graded last one got its own N = 4 rollouts (or reused a prefix).
        assert all(n == 4 for n in path["rollouts"][:-1])
        assert path["labels"] == [v > 0 for v in path["values"]]
        assert all(v in {0, 0.25, 0.5, 0.75, 1} for v in path["values"])
