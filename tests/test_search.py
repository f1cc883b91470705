"""The searches on the real tiny policy, audited with the arithmetic domain's exact checker."""

import asyncio
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from amcs.assets import TINY_POLICY
from amcs.backends.base import Rollout
from amcs.backends.hf import HFBackend
from amcs.domains.arith import ArithConfig, check_steps, generate_problems
from amcs.grading import Grader
from amcs.problems import Problem, arith_problems
from amcs.prompts import prompt_ids
from amcs.records import read_data
from amcs.scheduler import generate_to_file
from amcs.search import make_config, run_search
from amcs.search.context import SearchContext
from amcs.search.estimators import AdaptiveEstimator, FixedEstimator, kmeans, wilson_interval
from amcs.search.selection import candidate_score, q_value, u_value
from amcs.search.shepherd import ShepherdSearch
from amcs.search.tree_search import CandidateRollout, TreeSearch
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


@pytest.mark.slow
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
        steps = run(
            TreeSearch(ctx)._locate_first_error(
                CandidateRollout(ctx.root, Rollout(ids, "", 0.0, "stop"))
            )
        )
        total += 1
        full = [ctx.splitter.text(s) for s in ctx.splitter.split(ids)]
        assert check_steps(p.expression, full).first_error == i
        # Whatever it finds, the search is consistent: "+" up to the error, "-" at it, from a
        # measured 0 (values > 0 or unmeasured before it).
        (path,) = ctx.finish([steps]).paths
        assert path["labels"] == [True] * (len(steps) - 1) + [False]
        assert path["values"][-1] == 0 and all(v is None or v > 0 for v in path["values"][:-1])
        found += len(steps) - 1 == i
    assert found >= 0.75 * total, f"located {found}/{total} planted errors"


@pytest.mark.slow
def test_labelled_paths_are_consistent_with_the_search(backend, grader):
    """Every AMCS path: labels are MC > threshold where measured; steps before the last are
    positive; a path ending in a negative step ends at a measured MC of 0 from at least k0
    rollouts; no path is written twice."""
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
            min_root_mc=0.0,
        )
        assert result.stats.rollouts <= 60
        assert result.paths or result.stats.screened or result.tree["mc"] in (0, 1)
        seen = set()
        for path in result.paths:
            assert all(
                label == (v > 0)
                for label, v in zip(path["labels"], path["values"], strict=True)
                if v is not None
            )
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
@pytest.mark.slow
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
        # Never a "-" from fewer than k0 rollouts, unless a graded complete solution (1).
        if not path["labels"][-1] and path["rollouts"][-1] < k0:
            assert path["rollouts"][-1] == 1
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
        assert None not in path["values"]
        assert path["labels"] == [v > 0 for v in path["values"]]
        assert all(v in {0, 0.25, 0.5, 0.75, 1} for v in path["values"])


# --- scripted backends: each rule with outcomes that make the expected label unambiguous ------

QUESTION = "What is 3 + 4 * (5 - 2) - 7?"
RIGHT = "5 - 2 = 3\n\n4 * 3 = 12\n\n3 + 12 = 15\n\n15 - 7 = 8\n\nThe answer is \\boxed{8}."
# Wrong from step 2 (0-based) on; WRONG0 is wrong at its first step and has two steps.
WRONG2 = "5 - 2 = 3\n\n4 * 3 = 12\n\n3 + 12 = 16\n\n16 - 7 = 9\n\nThe answer is \\boxed{9}."
WRONG0 = "5 - 2 = 4\n\nThe answer is \\boxed{9}."
CUT = "5 - 2 = 3\n\n4 * 3 = 12\n\n3 + 12 = 1"  # cut at max_new_tokens mid-number
S0, S1, S2W = "5 - 2 = 3\n\n", "4 * 3 = 12\n\n", "3 + 12 = 16\n\n"
GOOD_END, BAD_END = "The answer is \\boxed{8}.", "The answer is \\boxed{9}."


def out(text, finish="stop", nll=0.5):
    """One scripted rollout: its text, finish reason and mean token NLL."""
    return (text, finish, nll)


class Scripted:
    """A backend that answers from a table: the text of the steps so far -> the rollouts it
    returns, in order and cycling. Prefixes not in the table get `default` (a wrong answer)."""

    def __init__(self, tokenizer, prompt_len, table, default=None):
        self.tokenizer, self.prompt_len = tokenizer, prompt_len
        self.table, self.default = table, default or [out(BAD_END)]
        self.served: dict[str, int] = {}
        self.calls: list[tuple[str, int]] = []

    async def sample(self, prompt_ids, n, params):
        prefix = self.tokenizer.decode(prompt_ids[self.prompt_len :])
        self.calls.append((prefix, n))
        outcomes = self.table.get(prefix, self.default)
        rollouts = []
        for _ in range(n):
            i = self.served.get(prefix, 0)
            self.served[prefix] = i + 1
            text, finish, nll = outcomes[i % len(outcomes)]
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            rollouts.append(Rollout(ids, text, -nll * len(ids), finish))
        return rollouts

    async def aclose(self):
        pass


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TINY_POLICY)


def scripted(tokenizer, grader, table, **overrides):
    """A search context for QUESTION (answer 8) over a Scripted backend; no screening unless
    asked (the scripted roots solve 1 in 6)."""
    overrides.setdefault("min_root_mc", 0.0)
    problem = Problem("p0", QUESTION, "8", {})
    ids = prompt_ids(tokenizer, QUESTION)
    script = Scripted(tokenizer, len(ids), table)
    config = make_config(overrides.pop("method", "amcs"), **overrides)
    ctx = SearchContext(
        problem=problem,
        backend=script,
        checker=grader,
        config=config,
        prompt_ids=ids,
        seed=0,
        splitter=StepSplitter(tokenizer),
    )
    return ctx, script


def ids_of(ctx, *steps):
    return [ctx.backend.tokenizer(s, add_special_tokens=False)["input_ids"] for s in steps]


def labels_by_prefix(paths):
    """{prefix (tuple of step texts): set of labels written for it} over all paths."""
    seen: dict[tuple[str, ...], set[bool]] = {}
    for p in paths:
        for i, label in enumerate(p["labels"]):
            seen.setdefault(tuple(p["completions"][: i + 1]), set()).add(label)
    return seen


def test_a_valid_prefix_with_a_false_all_wrong_exit_gets_one_positive_label(tokenizer, grader):
    """The root's correct solution passes through S0 S1; every rollout from S0 S1 happens to be
    wrong (a valid prefix with a low success rate). The error search on WRONG2 must not label
    S0 S1 "-" (it was "+" on the correct path), and finds the true error S2W."""
    table = {
        "": [out(RIGHT)] + [out(WRONG2)] * 5,
        S0 + S1: [out(BAD_END)],  # a k0 all-wrong exit, were it ever estimated
        S0 + S1 + S2W: [out("16 - 7 = 9\n\n" + BAD_END)],
    }
    ctx, _ = scripted(tokenizer, grader, table)
    result = run(TreeSearch(ctx).run())
    assert result.paths, "the search found nothing"
    labels = labels_by_prefix(result.paths)
    assert all(len(v) == 1 for v in labels.values()), labels
    s0, s1, s2 = S0.strip(), S1.strip(), S2W.strip()
    assert labels[(s0, s1)] == {True}
    assert labels[(s0, s1, s2)] == {False}
    error_paths = [p for p in result.paths if not p["labels"][-1]]
    assert [p["completions"] for p in error_paths] == [[s0, s1, s2]]
    # Soft values: measured where estimated, null where not (S0, S1 were never estimated).
    (path,) = error_paths
    assert path["values"] == [None, None, 0.0] and path["rollouts"] == [0, 0, 6]
    positive = next(p for p in result.paths if all(p["labels"]))
    assert positive["values"][-1] == 1.0 and positive["values"][:-1] == [None] * 4


def test_a_correct_completion_below_overrules_an_all_wrong_estimate(tokenizer, grader):
    table = {S0 + S1: [out(BAD_END)], S0 + S1 + "3 + 12 = 15\n\n": [out(GOOD_END), out(BAD_END)]}
    ctx, _ = scripted(tokenizer, grader, table)
    a = ctx.child(ctx.root, ids_of(ctx, S0, S1))
    run(ctx.evaluate(a))
    assert (a.mc, a.rollouts) == (0.0, 6) and ctx.verdict(a.step_ids()) is False
    b = ctx.child(a, ids_of(ctx, "3 + 12 = 15\n\n"))
    run(ctx.evaluate(b))
    assert (b.mc, b.rollouts) == (0.5, 20)  # half right: drawn up to k_max_node
    assert ctx.verdict(a.step_ids()) is True
    result = ctx.finish([b.step_ids()])
    (path,) = result.paths
    assert path["labels"] == [True, True, True]
    # The overruled all-wrong estimate is not written as a value; the data counts it.
    assert path["values"] == [None, None, round(b.mc, 6)]
    assert path["rollouts"] == [0, 6, b.rollouts]
    assert result.stats.overruled == 1


def test_truncated_rollouts_count_as_wrong_and_are_never_searched_or_labelled(tokenizer, grader):
    table = {
        "": [out(RIGHT), out(RIGHT, "length"), out(WRONG2), out(CUT, "length")] + [out(WRONG2)] * 2,
        S0 + S1 + S2W: [out(BAD_END)],
    }
    ctx, _ = scripted(tokenizer, grader, table, eps_node=0.5)  # the root stops at k0
    result = run(TreeSearch(ctx).run())
    assert result.tree["mc"] == pytest.approx(1 / 6)  # the cut correct answer counts as wrong
    assert result.stats.truncated == 2
    assert result.paths and any(not p["labels"][-1] for p in result.paths)
    assert all("3 + 12 = 1" not in p["completions"] for p in result.paths)
    # Math-Shepherd: the cut step of a truncated solution gets no label either.
    table = {"": [out(CUT, "length"), out(RIGHT)], S0: [out(GOOD_END)], S0 + S1: [out(GOOD_END)]}
    ctx, _ = scripted(tokenizer, grader, table, method="shepherd", k=2, num_solutions=2)
    result = run(ShepherdSearch(ctx).run())
    assert sorted(len(p["completions"]) for p in result.paths) == [2, 5]
    assert all("3 + 12 = 1" not in p["completions"] for p in result.paths)
    assert result.stats.unlabelled_steps == 0  # the cut step was dropped before labelling


def test_a_short_estimate_never_gives_a_negative_label(tokenizer, grader):
    """Budget 8: the root takes 6, the error search on WRONG0 gets 2 all-wrong rollouts at its
    first step. Two rollouts are not enough for "-" (k0 = 6), nor an early exit."""
    table = {"": [out(RIGHT)] + [out(WRONG0)] * 5}
    ctx, _ = scripted(tokenizer, grader, table, rollout_budget=8)
    result = run(TreeSearch(ctx).run())
    assert result.stats.rollouts == 8 and result.stats.searches >= 1
    assert result.paths and all(all(p["labels"]) for p in result.paths)
    assert result.stats.early_exits == 0
    # With the budget for k0 rollouts the same first step is a "-" (6 all wrong).
    ctx, _ = scripted(tokenizer, grader, table, rollout_budget=12)
    result = run(TreeSearch(ctx).run())
    negatives = [p for p in result.paths if not p["labels"][-1]]
    assert [p["completions"] for p in negatives] == [["5 - 2 = 4"]]
    assert negatives[0]["rollouts"] == [6] and result.stats.early_exits == 1


def test_screening_and_searching_unsolved_problems(tokenizer, grader):
    table = {"": [out(RIGHT)] + [out(WRONG2)] * 5}  # root MC 1/6
    ctx, _ = scripted(tokenizer, grader, table, min_root_mc=0.3)
    result = run(TreeSearch(ctx).run())
    assert result.stats.searches == 0 and result.stats.screened == 1
    assert result.paths == []  # skipped whole: a rare right answer is often a lucky one
    ctx, _ = scripted(tokenizer, grader, table, min_root_mc=0.1)
    assert run(TreeSearch(ctx).run()).stats.searches >= 1
    # All root rollouts wrong: searched only with search_unsolved (the AMCS paper's code).
    table = {"": [out(WRONG2)]}
    ctx, _ = scripted(tokenizer, grader, table)
    result = run(TreeSearch(ctx).run())
    assert (result.stats.searches, result.paths) == (0, [])
    ctx, _ = scripted(tokenizer, grader, table, search_unsolved=True, max_search_count=1)
    result = run(TreeSearch(ctx).run())
    assert result.stats.searches == 1 and result.paths


def test_candidate_filter_skips_garbled_and_unlikely_rollouts(tokenizer, grader):
    garbled_text = "5 - 2 = 3\n\n" + "0" * 30 + "\n\nThe answer is \\boxed{9}."
    table = {
        "": [out(RIGHT), out(garbled_text), out(WRONG0, nll=4.0)] + [out(WRONG2)] * 3,
        S0 + S1 + S2W: [out(BAD_END)],
    }
    ctx, _ = scripted(tokenizer, grader, table, max_candidate_nll=2.0, eps_node=0.5)
    result = run(TreeSearch(ctx).run())
    assert result.stats.filtered == 2
    texts = {c for p in result.paths for c in p["completions"]}
    assert "0" * 30 not in texts and "5 - 2 = 4" not in texts
    assert any(not p["labels"][-1] for p in result.paths)
    # Without the filter both are searched.
    ctx, _ = scripted(tokenizer, grader, table, garbled_filter=False, eps_node=0.5)
    result = run(TreeSearch(ctx).run())
    assert result.stats.filtered == 0
    assert "5 - 2 = 4" in {c for p in result.paths for c in p["completions"]}


def test_known_prefixes_narrow_the_binary_search_without_new_rollouts(tokenizer, grader):
    table = {S0: [out(GOOD_END), out(BAD_END)], S0 + S1: [out(GOOD_END), out(BAD_END)]}
    table[S0 + S1 + S2W] = [out(BAD_END)]
    ctx, script = scripted(tokenizer, grader, table)
    a = ctx.child(ctx.root, ids_of(ctx, S0))
    run(ctx.evaluate(a))
    z = ctx.child(ctx.root, ids_of(ctx, S0, S1, S2W))
    run(ctx.evaluate(z))
    assert (a.mc, a.rollouts, z.mc, z.rollouts) == (0.5, 20, 0.0, 6)
    script.calls.clear()
    ids = tokenizer(WRONG2, add_special_tokens=False)["input_ids"]
    path = run(
        TreeSearch(ctx)._locate_first_error(
            CandidateRollout(ctx.root, Rollout(ids, WRONG2, 0.0, "stop"))
        )
    )
    # Only the unknown prefix between them (S0 S1) is estimated; the error is S2W.
    assert {p for p, _ in script.calls} == {S0 + S1}
    assert [ctx.splitter.text(s) for s in path] == [S0.strip(), S1.strip(), S2W.strip()]
    (record,) = ctx.finish([path]).paths
    assert record["labels"] == [True, True, False]


def test_u_is_defined_at_the_first_pop(tokenizer, grader):
    ctx, _ = scripted(tokenizer, grader, {"": [out(RIGHT)] + [out(WRONG2)] * 5})
    run(ctx.evaluate(ctx.root))
    # An MC evaluation counts as a visit: N(root) = 1, sum_i N_i = 1, so U = c_puct / 2 > 0.
    assert (ctx.root.visits, ctx.total_visits) == (1, 1)
    assert u_value(max(1, ctx.total_visits), ctx.root.visits, ctx.config) == pytest.approx(
        0.125 / 2
    )
    # Before any evaluation the total is floored at 1 (never sqrt(0) = 0).
    assert u_value(max(1, 0), 0, ctx.config) == pytest.approx(0.125)


def _candidate(ctx, mc, visits, tokens=50):
    node = ctx.root.add_child([[1]])
    node.mc, node.visits = mc, visits
    return CandidateRollout(node, Rollout([1] * tokens, "", 0.0, "stop"))


def test_selection_explores_first_and_exploits_later(tokenizer, grader):
    ctx, _ = scripted(tokenizer, grader, {})
    ctx.total_visits = 6
    search = TreeSearch(ctx)
    likely = _candidate(ctx, 0.9, visits=5)  # high Q, visited often
    fresh = _candidate(ctx, 0.2, visits=1)  # low Q, barely visited
    search.pool = [likely, fresh]
    assert search._pop(1) is fresh  # w_1 = 0.95: U decides
    search.pool = [likely, fresh]
    assert search._pop(100) is likely  # w_100 = 0.007: Q decides


def test_candidates_are_rescored_at_every_pop(tokenizer, grader):
    ctx, _ = scripted(tokenizer, grader, {}, selection="sum")
    ctx.total_visits = 2
    search = TreeSearch(ctx)
    x1 = _candidate(ctx, 0.5, visits=1)
    x2 = CandidateRollout(x1.node, x1.rollout)
    y = _candidate(ctx, 0.5, visits=1)
    search.pool = [x1, x2, y]
    first = search._pop(1)
    assert first is x1
    first.node.visits += 1  # what run() does after a pop
    ctx.total_visits += 1
    # x2 scored as before the pop would tie y and win on order; re-scored, its U has dropped.
    assert search._pop(2) is y


# --- the adaptive estimator's rules, on scripted outcomes ------------------------------------


def scripted_draw(batches):
    """draw(k) returning the next k of a list of outcomes; records the sizes asked for."""
    queue = list(batches)
    asked: list[int] = []

    async def draw(k):
        asked.append(k)
        got, queue[:] = queue[:k], queue[k:]
        return got

    return draw, asked


def same(ok, nll=0.5, length=20):
    return ((nll, length), ok)


def test_estimator_zero_exit_and_one_exit_at_k0():
    est = AdaptiveEstimator(make_config("amcs"))
    draw, asked = scripted_draw([same(False)] * 20)
    e = run(est.estimate(draw, seed=0))
    assert (e.mc, e.rollouts, e.early_exit, asked) == (0.0, 6, True, [6])
    draw, asked = scripted_draw([same(True)] * 20)
    e = run(est.estimate(draw, seed=0))
    assert (e.mc, e.rollouts, e.early_exit, asked) == (1.0, 6, True, [6])
    # A short draw (the budget ran out) is no early exit.
    draw, _ = scripted_draw([same(False)] * 2)
    e = run(est.estimate(draw, seed=0))
    assert (e.mc, e.rollouts, e.early_exit) == (0.0, 2, False)
    # zero_exit_upper < 1 draws more before accepting 0: Wilson upper of 0/n < 0.25 needs n >= 12.
    est = AdaptiveEstimator(make_config("amcs", zero_exit_upper=0.25))
    draw, asked = scripted_draw([same(False)] * 20)
    e = run(est.estimate(draw, seed=0))
    assert e.mc == 0 and asked == [6, 6] and sum(wilson_interval(0, 12)) < 0.25


def test_estimator_k_step_eps_and_k_max():
    # One cluster, 3 of 6 right: h = wilson half-width of (3, 6) = 0.327 > eps = 0.2, so
    # k_step = ceil(0.327 * 12) = 4 more; then 7/10 right: h(7, 10) = 0.253 -> 4 more (ceil 3.04).
    outcomes = [same(i % 2 == 0) for i in range(6)] + [same(True)] * 14
    est = AdaptiveEstimator(make_config("amcs", clusters=1))
    draw, asked = scripted_draw(outcomes)
    e = run(est.estimate(draw, seed=0))
    h6 = wilson_interval(3, 6)[1]
    h10 = wilson_interval(7, 10)[1]
    assert asked[:3] == [6, math.ceil(h6 * 12), math.ceil(h10 * 12)]
    assert e.uncertainty <= 0.2 and e.mc == pytest.approx(
        sum(ok for _, ok in outcomes[: e.rollouts]) / e.rollouts
    )
    # k_max_node = 8 caps the second draw at 2.
    draw, asked = scripted_draw(outcomes)
    e = run(AdaptiveEstimator(make_config("amcs", clusters=1, k_max_node=8)).estimate(draw, 0))
    assert asked == [6, 2] and e.rollouts == 8
    # eps_node = 0.5: d = 0.327 already small enough; mixed, so no early exit.
    draw, asked = scripted_draw(outcomes)
    e = run(AdaptiveEstimator(make_config("amcs", clusters=1, eps_node=0.5)).estimate(draw, 0))
    assert asked == [6] and e.mc == 0.5 and not e.early_exit
    # k_step_max = 2 clips the step.
    draw, asked = scripted_draw(outcomes)
    run(AdaptiveEstimator(make_config("amcs", clusters=1, k_step_max=2)).estimate(draw, 0))
    assert asked[1] == 2


def test_estimator_a_frozen_cluster_stays_frozen():
    """Cluster A (short, confident rollouts) freezes at k0 (3/3 right, h = 0.28 <= 0.3); cluster
    B does not. A later wrong rollout that lands in A widens its interval, but A stays frozen, so
    the estimate stops once B freezes instead of sampling on to k_max_node."""
    a = (0.1, 10)
    b = (2.0, 60)
    first = [(a, True)] * 3 + [(b, True), (b, False), (b, True)]
    later = [(a, False)] + [(b, True)] * 60
    config = make_config(
        "amcs", clusters=2, freeze_halfwidth=0.3, eps_node=0.0, k_max_node=40, k_step_max=6
    )
    draw, asked = scripted_draw(first + later)
    e = run(AdaptiveEstimator(config).estimate(draw, seed=0))
    # k0 = 6, then k_step = ceil(h_B * 12) = 5 with h_B = h(2, 3); A gets its wrong rollout
    # (3/4: h = 0.33 > 0.3, which would thaw it) and B reaches 6/7 (h = 0.24): all frozen, stop.
    assert asked == [6, math.ceil(wilson_interval(2, 3)[1] * 12)] == [6, 5]
    assert wilson_interval(3, 4)[1] > 0.3 >= wilson_interval(6, 7)[1]
    assert (e.rollouts, e.cluster_sizes) == (11, [4, 7]), "a frozen cluster came back"
    assert e.mc == pytest.approx(9 / 11)


# --- a real run: one label per prefix, none on a cut step --------------------------------------


class Recording:
    """The real backend, remembering every rollout it returned (prompt ids, rollout)."""

    def __init__(self, inner):
        self.inner, self.tokenizer = inner, inner.tokenizer
        self.seen: list[tuple[list[int], Rollout]] = []

    async def sample(self, prompt_ids, n, params):
        rollouts = await self.inner.sample(prompt_ids, n, params)
        self.seen += [(list(prompt_ids), r) for r in rollouts]
        return rollouts

    async def aclose(self):
        pass


@pytest.mark.slow
def test_a_60_problem_run_writes_one_label_per_prefix_and_none_on_a_cut_step(
    backend, grader, tmp_path
):
    """60 problems through the engine with the real tiny policy, rollouts capped at 40 tokens so
    that many are cut mid-solution: no prefix of a problem is written with two labels, and no
    labelled prefix ends in a step that only ever appeared cut off."""
    problems = arith_problems(60, seed=11)
    recording = Recording(backend)
    config = make_config("amcs", max_new_tokens=40, min_root_mc=0.0)
    out = tmp_path / "data.jsonl"
    run(
        generate_to_file(
            problems, recording, grader, config, out, model_name="tiny", seed=3, concurrency=64
        )
    )
    records = list(read_data(out))
    assert records and any(not all(r["labels"]) for r in records)
    splitter = StepSplitter(backend.tokenizer)
    cut: set[tuple[str, tuple[str, ...]]] = set()
    complete: set[tuple[str, tuple[str, ...]]] = set()
    for problem in problems:
        prompt = prompt_ids(backend.tokenizer, problem.question)
        for ids, rollout in recording.seen:
            if ids[: len(prompt)] != prompt:
                continue
            steps = splitter.split(ids[len(prompt) :] + rollout.token_ids)
            texts = tuple(splitter.text(s) for s in steps)
            if rollout.finish_reason == "length":
                cut.add((problem.id, texts))
            else:
                complete.update((problem.id, texts[: i + 1]) for i in range(len(texts)))
    assert len(cut) >= 20, "too few truncated rollouts to test the rule"
    only_cut = cut - complete
    by_problem: dict[str, dict] = {}
    for r in records:
        labels = by_problem.setdefault(r["problem_id"], {})
        for prefix, seen in labels_by_prefix([r]).items():
            labels.setdefault(prefix, set()).update(seen)
            assert (r["problem_id"], prefix) not in only_cut, f"a cut step was labelled: {prefix}"
    two = {(pid, p) for pid, ls in by_problem.items() for p, s in ls.items() if len(s) > 1}
    assert not two, f"prefixes written with both labels: {sorted(two)[:3]}"


def test_a_search_cut_by_the_budget_writes_no_negative_label_and_is_counted(tokenizer, grader):
    """The rule behind "a prefix measured at MC 0 but no \"-\" written" (the root stops at k0:
    eps_node 0.5): the error search on WRONG2
    measures S0 S1 S2W 16-7=9 at MC 0 from k0 rollouts (the first error is at or before it), then
    has 2 rollouts left for S0 S1 S2W: a short all-wrong estimate, so the first error is not
    located. The search writes only the steps known to be fine and counts itself `unlocated`;
    with budget for one more full estimate it locates the error and writes the "-"."""
    late = S0 + S1 + S2W + "16 - 7 = 9\n\n"
    table = {"": [out(RIGHT)] + [out(WRONG2)] * 5, late: [out(BAD_END)]}
    ctx, _ = scripted(tokenizer, grader, table, rollout_budget=14, max_search_count=1, eps_node=0.5)
    result = run(TreeSearch(ctx).run())
    zero = ctx.lookup(ids_of(ctx, S0, S1, S2W, "16 - 7 = 9\n\n"))
    assert zero is not None and (zero.mc, zero.rollouts) == (0.0, 6)
    assert result.labels_negative == 0 and result.stats.unlocated == 1
    assert result.stats.rollouts == 14 and result.stats.searches == 1
    ctx, _ = scripted(tokenizer, grader, table, rollout_budget=18, max_search_count=1, eps_node=0.5)
    result = run(TreeSearch(ctx).run())
    assert result.labels_negative == 1 and result.stats.unlocated == 0
    negatives = [p["completions"] for p in result.paths if not p["labels"][-1]]
    assert negatives == [[S0.strip(), S1.strip(), S2W.strip()]]
