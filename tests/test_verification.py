"""Verification strategies: exact unit tests on a scripted backend and PRM, then the real tiny policy
with the exact arithmetic PRM (ArithOracleScorer)."""

import asyncio
import itertools
import zlib

import pytest

from amcs.assets import TINY_POLICY
from amcs.backends.base import Rollout
from amcs.backends.hf import HFBackend
from amcs.domains.arith import ArithConfig, check_steps, generate_problems
from amcs.grading import answers_match_fast, extract_answer
from amcs.seeds import derive_seed
from amcs.verification import (
    MCTS,
    STRATEGIES,
    ArithOracleScorer,
    Candidate,
    Run,
    StepScorer,
    VerifyConfig,
    VerifyContext,
    aggregate,
    best_index,
    majority_choice,
    puct,
    run_strategy,
    split_steps,
    vote,
    weighted_choice,
)

SEP = "\n\n"
QUESTION = "What is 1 + 1?"


def run(coro):
    return asyncio.run(coro)


# --- test doubles ------------------------------------------------------------------------------


class ScriptedBackend:
    """Backend test double. script(path_text, n, params) gives (text, n_tokens, finish_reason) for
    each of the n rollouts requested from the prefix whose generated text is path_text. A text new
    after its prefix gets fresh token ids (the same text after the same prefix, the same ids), and
    a prefix that is not the prompt plus ids this backend returned raises KeyError: strategies
    must build prefixes from token ids."""

    tokenizer = None

    def __init__(self, script):
        self.script = script
        self.paths = {(0,): ""}
        self.requests = []  # (path_text, n, params)
        self.returned: list[Rollout] = []
        self._ids = itertools.count(1000)
        self._known = {}

    async def sample(self, prompt_ids, n, params):
        path = self.paths[tuple(prompt_ids)]
        self.requests.append((path, n, params))
        out = []
        for text, n_tokens, finish in self.script(path, n, params):
            key = (tuple(prompt_ids), text)
            if key not in self._known:
                self._known[key] = [next(self._ids) for _ in range(n_tokens)]
            ids = self._known[key]
            self.paths[tuple(prompt_ids) + tuple(ids)] = path + text
            out.append(Rollout(ids, text, -1.0, finish))
        self.returned.extend(out)
        return out

    async def aclose(self):
        pass


class TableScorer:
    """StepScorer test double: a step's score is table[step], else fn(step)."""

    def __init__(self, table=None, fn=lambda step: 0.5):
        self.table = table or {}
        self.fn = fn
        self.calls = 0
        self.seen = []

    async def score(self, question, steps):
        self.calls += 1
        self.seen.append(list(steps))
        return [self.table.get(s, self.fn(s)) for s in steps]


def scripted_ctx(script, scorer=None, **config):
    backend = ScriptedBackend(script)
    ctx = VerifyContext(backend, scorer, VerifyConfig(**config), prompt=lambda tok, q: [0])
    return ctx, backend


def fixed_samples(texts):
    """Whole-solution requests return `texts` in order (each len(text) tokens)."""

    def script(path, n, params):
        assert n == len(texts) and not params.stop
        return [(t, len(t), "stop") for t in texts]

    return script


def chain_script(depth=3):
    """A policy that writes depth - 1 arithmetic steps and an answer step. The numbers, and so the
    texts and token counts (2..6 per step), vary with the request seed and the rollout index;
    temperature 0 always writes 0. Requests with a stop string get one step, others the rest."""

    def one(path, i, params):
        done = path.count(SEP)
        text, tokens = "", 0
        for d in range(done, depth):
            v = 0 if params.temperature == 0 else (params.seed + 7 * i + d) % 5
            step = (
                f"{d} + {v} = {d + v}{SEP}" if d < depth - 1 else f"The answer is \\boxed{{{v}}}."
            )
            text, tokens = text + step, tokens + 2 + v
            if params.stop:
                break
        return text, tokens, "stop"

    return lambda path, n, params: [one(path, i, params) for i in range(n)]


def endless_script(path, n, params):
    """Never finishes: every step is new text ending in the separator."""
    d = path.count(SEP)
    return [(f"d{d} s{params.seed % 997} r{i}{SEP}", 3, "stop") for i in range(n)]


def tree_script(tree):
    """tree[path_text] lists the next steps; a step without the separator ends the solution."""

    def script(path, n, params):
        steps = tree[path]
        assert n == len(steps)
        return [(s, 2, "stop") for s in steps]

    return script


# --- aggregation, splitting, voting ----------------------------------------------------------


def test_aggregate_formulas():
    s = [0.9, 0.5, 0.8]
    assert aggregate(s, "last") == 0.8
    assert aggregate(s, "min") == 0.5
    assert aggregate(s, "prod") == pytest.approx(0.36)
    assert aggregate(s, "mean") == pytest.approx(2.2 / 3)
    assert aggregate([0.25], "prod") == 0.25
    for how in ("last", "min", "prod", "mean"):
        assert aggregate([], how) == 0.0
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(s, "max")
    with pytest.raises(ValueError):
        VerifyConfig(aggregation="max")


def test_split_steps_drops_empty_pieces():
    assert split_steps("1 + 2 = 3\n\n\n\n 3 * 4 = 12 \n\nThe answer is 12.") == [
        "1 + 2 = 3",
        "3 * 4 = 12",
        "The answer is 12.",
    ]
    assert split_steps("  \n\n ") == []


def test_vote_groups_numbers_by_value_and_ties_go_to_the_first_answer():
    winner, totals = vote(["3", "5", "5.0", None, "3"])
    assert winner == 0 and totals == {"3": 2.0, "5": 2.0}
    winner, totals = vote(["5", "3", "3", "5"])
    assert winner == 0
    winner, totals = vote([None, "1,000", "\\frac{1}{2}", "1000", " \\frac{1}{2} ", "x"])
    assert winner == 1 and totals == {"1,000": 2.0, "\\frac{1}{2}": 2.0, "x": 1.0}
    assert vote([None, None]) == (None, {})


def test_best_index_prefers_answers_then_score_then_earliest():
    c = [
        Candidate("a", None, 0.99),
        Candidate("b", "1", 0.5),
        Candidate("c", "2", 0.7),
        Candidate("d", "3", 0.7),
    ]
    assert best_index(c) == 2
    assert best_index([Candidate("a", None, 0.1), Candidate("b", None, 0.3)]) == 1
    assert best_index([]) is None


# --- whole-sample strategies (scripted) ----------------------------------------------------------


def boxed(*answers):
    return [f"step {i}{SEP}The answer is \\boxed{{{a}}}." for i, a in enumerate(answers)]


def test_majority_ties_go_to_the_first_answer_and_make_no_prm_calls():
    texts = boxed("7", "8", "8.0", "7") + ["no answer"]
    scorer = TableScorer()
    ctx, backend = scripted_ctx(fixed_samples(texts), scorer)
    result = run(run_strategy("majority", ctx, QUESTION, 5))
    assert result.answer == "7" and result.text == texts[0] and result.chosen == 0
    assert result.votes == {"7": 2.0, "8": 2.0}
    assert [c.score for c in result.candidates] == [0.4, 0.4, 0.4, 0.4, None]
    assert result.prm_calls == 0 and scorer.calls == 0
    assert result.tokens == sum(map(len, texts)) and result.requests == 1

    texts = boxed("8", "7", "7")
    ctx, _ = scripted_ctx(fixed_samples(texts))
    result = run(run_strategy("majority", ctx, QUESTION, 3))
    assert result.answer == "7" and result.text == texts[1]


def test_best_of_n_picks_the_top_aggregate_and_the_earliest_on_ties():
    texts = [
        f"{x}{SEP}{y}{SEP}The answer is \\boxed{{{i}}}."
        for i, (x, y) in enumerate([("a", "b"), ("c", "d"), ("e", "f"), ("g", "h")])
    ]
    table = {"a": 0.9, "b": 0.2, "c": 0.5, "d": 0.6, "e": 0.6, "f": 0.6, "g": 1.0, "h": 0.1}
    table |= {f"The answer is \\boxed{{{i}}}.": v for i, v in enumerate([0.9, 0.8, 0.8, 0.3])}
    # By hand, samples 0..3 score: last .9 .8 .8 .3; min .2 .5 .6 .1; prod .162 .24 .288 .03;
    # mean 2/3 .633 2/3 .467 (a tie between 0 and 2: the earlier wins).
    expected = {"last": 0, "min": 2, "prod": 2, "mean": 0}
    for how, chosen in expected.items():
        scorer = TableScorer(table)
        ctx, _ = scripted_ctx(fixed_samples(texts), scorer, aggregation=how)
        result = run(run_strategy("best-of-n", ctx, QUESTION, 4))
        assert result.chosen == chosen and result.answer == str(chosen), how
        assert result.text == texts[chosen]
        assert result.prm_calls == 4 and scorer.calls == 4
        assert result.candidates[0].step_scores == [0.9, 0.2, 0.9]
    assert [c.score for c in result.candidates] == pytest.approx([2 / 3, 1.9 / 3, 2 / 3, 1.4 / 3])
    # Ties under "last": with sample 0's answer step at .1, samples 1 and 2 tie at .8.
    table["The answer is \\boxed{0}."] = 0.1
    ctx, _ = scripted_ctx(fixed_samples(texts), TableScorer(table), aggregation="last")
    result = run(run_strategy("best-of-n", ctx, QUESTION, 4))
    assert result.answer == "1" and result.text == texts[1]


def test_best_of_n_skips_the_prm_for_an_empty_sample():
    texts = ["", *boxed("4")]
    ctx, _ = scripted_ctx(fixed_samples(texts), TableScorer())
    result = run(run_strategy("best-of-n", ctx, QUESTION, 2))
    assert result.prm_calls == 1 and result.candidates[0].score == 0.0 and result.answer == "4"


def test_weighted_vote_by_hand():
    texts = boxed("5", "6", "6.0", "5") + ["no answer here"]
    table = {"step 0": 0.5, "step 1": 0.375, "step 2": 0.25, "step 3": 0.125, "no answer here": 1.0}
    scorer = TableScorer(table, fn=lambda s: 1.0)  # answer steps score 1; min picks the above
    ctx, _ = scripted_ctx(fixed_samples(texts), scorer, aggregation="min")
    result = run(run_strategy("weighted-vote", ctx, QUESTION, 5))
    # "5": 0.5 + 0.125 = 0.625 and "6": 0.375 + 0.25 = 0.625 tie: the first answer wins.
    assert result.votes == {"5": 0.625, "6": 0.625}
    assert result.answer == "5" and result.chosen == 0
    assert result.prm_calls == 5  # the sample without an answer is scored but does not vote

    table |= {"step 1": 0.5, "step 2": 0.25}  # "6": 0.75 now beats "5": 0.625
    ctx, _ = scripted_ctx(
        fixed_samples(texts), TableScorer(table, fn=lambda s: 1.0), aggregation="min"
    )
    result = run(run_strategy("weighted-vote", ctx, QUESTION, 5))
    assert result.votes == {"5": 0.625, "6": 0.75}
    assert result.answer == "6" and result.chosen == 1  # the best-scored sample saying 6


def test_weighted_vote_can_overrule_the_majority():
    texts = boxed("1", "2", "2")
    scores = {"step 0": 0.9, "step 1": 0.3, "step 2": 0.3}
    scorer = TableScorer(scores, fn=lambda s: 1.0)
    ctx, _ = scripted_ctx(fixed_samples(texts), scorer, aggregation="min")
    assert run(run_strategy("weighted-vote", ctx, QUESTION, 3)).answer == "1"
    assert run(run_strategy("majority", ctx, QUESTION, 3)).answer == "2"


# --- accounting, every strategy ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_tokens_and_prm_calls_are_counted(name):
    scorer = TableScorer(fn=lambda s: (len(s) % 4) / 4)
    ctx, backend = scripted_ctx(chain_script(depth=4), scorer, expansions=2, seed=3)
    result = run(run_strategy(name, ctx, QUESTION, 6))
    assert result.tokens == sum(r.num_tokens for r in backend.returned) > 0
    assert result.rollouts == len(backend.returned)
    assert result.requests == len(backend.requests)
    assert result.prm_calls == scorer.calls
    expected_calls = {
        "greedy": 0,
        "majority": 0,
        "best-of-n": 6,
        "weighted-vote": 6,
        "beam": result.rollouts,  # every candidate step is scored once
        "mcts": result.stats.get("nodes", 1) - 1,  # one call per distinct new node
    }
    assert result.prm_calls == expected_calls[name]
    assert result.text == result.candidates[result.chosen].text
    assert result.answer == extract_answer(result.text) in {"0", "1", "2", "3", "4"}
    for _, n, params in backend.requests:
        if name == "greedy":
            assert params.temperature == 0 and n == 1
        if name in ("beam", "mcts") and params.temperature > 0:
            assert params.stop == (SEP,) and n == 2 and params.max_new_tokens == 128
        elif name == "mcts":  # no solution finished: the most visited path is completed
            assert params.stop == () and n == 1 and params is backend.requests[-1][2]


def test_seeds_come_from_seed_question_and_call_index():
    ctx, backend = scripted_ctx(chain_script(), seed=11)
    r = Run(ctx, "x", QUESTION, 2)
    run(r.sample([], 1))
    run(r.sample([], 1))
    seeds = [p.seed for _, _, p in backend.requests]

    def seed(*parts):
        return derive_seed(*parts, separator="\x00")

    assert seeds == [seed(11, QUESTION, 0), seed(11, QUESTION, 1)]
    assert len({seed(11, QUESTION, 0), seed(12, QUESTION, 0), seed(11, "q", 0)}) == 3


def test_majority_best_of_and_weighted_vote_pick_different_known_answers():
    answers = ["5", "5.0", "5", "7", "7", None, "9"]
    scores = [0.1, 0.1, 0.1, 0.6, 0.6, 0.99, 0.95]

    def cands(answers, scores):
        return [Candidate("", a, s) for a, s in zip(answers, scores, strict=True)]

    pool = cands(answers, scores)
    assert majority_choice(pool) == (0, {"5": 3.0, "7": 2.0, "9": 1.0})  # "5.0" is the same number
    assert best_index(pool) == 6  # 0.95; the 0.99 sample states no answer
    assert weighted_choice(pool)[0] == 3  # "7": 1.2 > "9": 0.95 > "5": 0.3
    assert weighted_choice(pool)[1] == pytest.approx({"5": 0.3, "7": 1.2, "9": 0.95})
    # Ties: best-of to the earliest, vote totals to the answer that appeared first.
    assert best_index(cands(["1", "2"], [0.5, 0.5])) == 0
    assert weighted_choice(cands(["2", "1", "1"], [0.5, 0.25, 0.25]))[0] == 0
    assert weighted_choice(cands(["2", "1", "1"], [0.5, 0.2, 0.4]))[0] == 2  # best sample of "1"
    assert majority_choice(cands([None, None], [None, None])) == (0, {})
    assert majority_choice([]) == (None, {})
    assert weighted_choice(cands([None, None], [0.2, 0.3])) == (1, {})
    assert weighted_choice(cands(["4", "4"], [None, 0.5]))[0] == 1  # a missing score counts 0


def test_strategies_need_a_prm_and_a_known_name():
    ctx, _ = scripted_ctx(chain_script())
    with pytest.raises(ValueError, match="needs a PRM"):
        run(run_strategy("best-of-n", ctx, QUESTION, 2))
    with pytest.raises(ValueError, match="unknown strategy"):
        run(run_strategy("best-of-all", ctx, QUESTION, 2))


# --- beam search (scripted) ----------------------------------------------------------------------


def seeded_score(step):
    """A fixed pseudo-random score per step text."""
    return zlib.crc32(step.encode()) % 1000 / 1000


def test_beam_keeps_the_w_best_beams_and_respects_max_depth():
    # Steps read "d<depth> s<seed> r<index>": a pseudo-random score from seed and index.
    scorer = TableScorer(fn=lambda s: (7 * int(s.split()[1][1:]) + 31 * int(s[-1])) % 101 / 100)
    ctx, backend = scripted_ctx(endless_script, scorer, expansions=4, max_depth=3)
    result = run(run_strategy("beam", ctx, QUESTION, 8))
    assert result.stats == {"width": 2, "depth": 3, "open_per_depth": [2, 2, 2]}
    assert len(backend.requests) == 6 and all(n == 4 for _, n, _ in backend.requests)
    assert result.prm_calls == 24 and result.rollouts == 24
    # The requests at depth d + 1 come from the 2 best candidates of depth d (ties: earlier).
    for d in (1, 2):
        parents = [p for p, _, _ in backend.requests if p.count(SEP) == d - 1]
        children = [
            p + r.text
            for p, r in zip(
                [p for p, n, _ in backend.requests for _ in range(n)], backend.returned, strict=True
            )
            if p in parents
        ]
        best = sorted(children, key=lambda t: -scorer.fn(split_steps(t)[-1]))[:2]
        assert [p for p, _, _ in backend.requests if p.count(SEP) == d] == best
    # Nothing finished within max_depth: the answer falls back to the best open beam.
    assert all(not c.finished for c in result.candidates) and len(result.candidates) == 2
    assert result.chosen == 0 and result.answer is None


def test_beam_ranks_by_the_aggregation_its_final_choice_uses():
    """Width 2: A (0.9) and B (0.5) survive depth 1. At depth 2, B1's own step scores 0.95 but its
    path's weakest step is B's 0.5: "last" keeps B1 and A1, "min" keeps A1 (0.6) and A2 (0.55)."""
    ans = "The answer is \\boxed{1}."
    tree = {"": [f"A{SEP}", f"B{SEP}"]}
    for parent in "AB":
        tree[f"{parent}{SEP}"] = [f"{parent}1{SEP}", f"{parent}2{SEP}"]
        for child in "12":
            tree[f"{parent}{SEP}{parent}{child}{SEP}"] = [ans, ans]
    scores = {"A": 0.9, "B": 0.5, "A1": 0.6, "A2": 0.55, "B1": 0.95, "B2": 0.1, ans: 0.7}
    for how, kept in (("last", ["B1", "A1"]), ("min", ["A1", "A2"])):
        ctx, backend = scripted_ctx(
            tree_script(tree), TableScorer(scores), expansions=2, dedupe=True, aggregation=how
        )
        result = run(run_strategy("beam", ctx, QUESTION, 4))
        depth_3 = [p for p, _, _ in backend.requests if p.count(SEP) == 2]
        assert depth_3 == [f"{c[0]}{SEP}{c}{SEP}" for c in kept], how
        assert result.stats["open_per_depth"] == [2, 2, 2]


def test_beam_stops_when_w_solutions_are_complete():
    ctx, backend = scripted_ctx(chain_script(depth=2), TableScorer(fn=seeded_score), expansions=4)
    result = run(run_strategy("beam", ctx, QUESTION, 8))
    assert result.stats["depth"] == 2 and len(backend.requests) == 4
    done = [c for c in result.candidates if c.finished]
    assert len(done) == 8 and len(result.candidates) == 8
    best = max(range(8), key=lambda i: (done[i].score, -i))
    assert result.chosen == best and result.answer == extract_answer(done[best].text)


def test_beam_dedupe_drops_repeated_candidates():
    def same_step(path, n, params):
        return [(f"step {path.count(SEP)}{SEP}", 3, "stop")] * n

    for dedupe, open_per_depth in ((False, [2, 2, 2]), (True, [2, 1, 1])):
        ctx, backend = scripted_ctx(same_step, TableScorer(), max_depth=3, dedupe=dedupe)
        result = run(run_strategy("beam", ctx, QUESTION, 8))
        assert result.stats["open_per_depth"] == open_per_depth
        assert result.tokens == 3 * 4 * sum(open_per_depth)


def test_beam_width_is_at_least_one():
    ctx, backend = scripted_ctx(endless_script, TableScorer(), expansions=4, max_depth=2)
    result = run(run_strategy("beam", ctx, QUESTION, 3))
    assert result.stats["width"] == 1 and len(backend.requests) == 2


# --- MCTS (scripted) -----------------------------------------------------------------------------


def test_puct_formula():
    assert puct(0.5, 0.25, 9, 2, 2.0) == pytest.approx(0.5 + 2.0 * 0.25 * 3 / 3)
    assert puct(0.1, 0.5, 4, 0, 0.0) == 0.1


def test_mcts_backs_up_values():
    ans7, ans8 = "The answer is \\boxed{7}.", "The answer is \\boxed{8}."
    tree = {
        "": [f"A{SEP}", f"B{SEP}"],
        f"B{SEP}": [f"B1{SEP}", f"B2{SEP}"],
        f"B{SEP}B1{SEP}": [ans7, ans8],
        f"A{SEP}": [f"A1{SEP}", f"A2{SEP}"],
    }
    values = {"A": 0.2, "B": 0.6, "B1": 0.9, "B2": 0.1, ans7: 0.8, ans8: 0.3}
    scorer = TableScorer(values)
    ctx, backend = scripted_ctx(tree_script(tree), scorer, expansions=2, c_puct=1.0)
    search = MCTS(Run(ctx, "mcts", QUESTION, 3))
    result = run(search.search())
    root = search.root
    a, b = root.children
    b1, b2 = b.children
    s7, s8 = b1.children
    # Iteration 1 expands the root; 2 selects B (0.6 + 0.354 > 0.2 + 0.354); 3 selects B then B1
    # (B: 1.6/3 + 0.5 * 2/4 = 0.783 > A: 0.2 + 0.5 * 2/2 = 0.7; B1: 0.9 + 0.433 > B2: 0.1 + 0.433).
    visits = [(n.visits, n.value_sum) for n in (root, a, b, b1, b2, s7, s8)]
    expected = [(6, 2.9), (1, 0.2), (5, 2.7), (3, 2.0), (1, 0.1), (1, 0.8), (1, 0.3)]
    for (n, w), (en, ew) in zip(visits, expected, strict=True):
        assert n == en and w == pytest.approx(ew)
    assert b.q == pytest.approx(2.7 / 5)
    assert result.stats["iterations"] == 3 and len(backend.requests) == 3
    assert result.prm_calls == 6 and result.tokens == 12
    assert [c.answer for c in result.candidates] == ["7", "8"]
    assert result.answer == "7" and result.candidates[0].step_scores == [0.6, 0.9, 0.8]
    assert result.text == f"B{SEP}B1{SEP}{ans7}"


def test_mcts_revisits_finished_leaves_without_generating():
    one, two = "The answer is \\boxed{1}.", "The answer is \\boxed{2}."
    ctx, backend = scripted_ctx(
        tree_script({"": [one, two]}), TableScorer({one: 0.9, two: 0.4}), expansions=2
    )
    search = MCTS(Run(ctx, "mcts", QUESTION, 4))
    result = run(search.search())
    c1, c2 = search.root.children
    assert (c1.visits, c2.visits, search.root.visits) == (4, 1, 5)
    assert c1.value_sum == pytest.approx(3.6) and search.root.value_sum == pytest.approx(4.0)
    assert len(backend.requests) == 1 and result.prm_calls == 2
    assert result.stats["iterations"] == 4 and result.answer == "1"


def test_mcts_merges_identical_steps_into_one_child():
    ctx, backend = scripted_ctx(
        tree_script({"": [f"A{SEP}", f"A{SEP}", f"B{SEP}"], f"A{SEP}": ["\\boxed{1}"]}),
        TableScorer(),
        expansions=3,
    )
    search = MCTS(Run(ctx, "mcts", QUESTION, 1))
    result = run(search.search())
    assert [c.path.text for c in search.root.children] == [f"A{SEP}", f"B{SEP}"]
    assert search.root.visits == 2 and result.prm_calls == 2
    assert result.tokens == 2 + 2 + 2 + 2  # three step samples and the greedy completion
    assert result.answer == "1"  # A and B tie on visits: the earlier child is completed


def test_mcts_completes_the_most_visited_path_greedily():
    def script(path, n, params):
        if not params.stop:  # the greedy completion
            assert params.temperature == 0 and n == 1
            return [("The answer is \\boxed{3}.", 5, "stop")]
        return endless_script(path, n, params)

    ctx, backend = scripted_ctx(script, TableScorer(), expansions=1, max_depth=2)
    result = run(run_strategy("mcts", ctx, QUESTION, 3))
    assert len(backend.requests) == 3  # two expansions, then the completion
    assert result.answer == "3" and result.text.count(SEP) == 2
    assert result.tokens == 3 + 3 + 5 and result.prm_calls == 2
    assert result.candidates[-1].score is None


# --- the oracle PRM ------------------------------------------------------------------------------


def test_oracle_scores_steps_exactly():
    oracle = ArithOracleScorer()
    assert isinstance(oracle, StepScorer)
    problem = generate_problems(1, seed=5, config=ArithConfig(min_ops=3, max_ops=3))[0]
    steps = list(problem.solution_steps)
    assert run(oracle.score(problem.question, steps)) == [1.0] * len(steps)
    a, op, b, _, c = steps[0].split()
    wrong = [f"{a} {op} {b} = {int(c) + 1}", *steps[1:]]
    scores = run(oracle.score(problem.question, wrong))
    assert scores[0] == 0.0 and scores[-1] == 0.0
    assert oracle.calls == 2
    with pytest.raises(ValueError):
        run(oracle.score("Why?", ["1 + 1 = 2"]))


# --- the real tiny policy with the oracle PRM -----------------------------------------------------


class Recording:
    """Passes requests to a real backend and keeps every rollout it returns."""

    def __init__(self, backend):
        self.backend = backend
        self.tokenizer = backend.tokenizer
        self.returned = []

    async def sample(self, prompt_ids, n, params):
        out = await self.backend.sample(prompt_ids, n, params)
        self.returned.extend(out)
        return out

    async def aclose(self):
        pass


@pytest.fixture(scope="module")
def policy():
    b = HFBackend(TINY_POLICY, max_batch_size=64)
    yield b
    run(b.aclose())


@pytest.fixture(scope="module")
def problems():
    return generate_problems(12, seed=20260, config=ArithConfig(min_ops=4, max_ops=5))


def solved(problem, text):
    return check_steps(problem.expression, split_steps(text)).solved


def correct(problem, answer):
    return answer is not None and bool(answers_match_fast(answer, str(problem.answer)))


async def run_all(name, ctx, problems, n):
    return await asyncio.gather(*(run_strategy(name, ctx, p.question, n) for p in problems))


@pytest.mark.slow
def test_oracle_best_of_8_beats_majority_and_picks_solved_samples(policy, problems):
    ctx = VerifyContext(policy, ArithOracleScorer(), VerifyConfig(aggregation="min", seed=1))
    maj = run(run_all("majority", ctx, problems, 8))
    best = run(run_all("best-of-n", ctx, problems, 8))
    maj_acc = sum(correct(p, r.answer) for p, r in zip(problems, maj, strict=True))
    best_acc = sum(correct(p, r.answer) for p, r in zip(problems, best, strict=True))
    assert best_acc >= maj_acc
    some_solved = 0
    for p, m, b in zip(problems, maj, best, strict=True):
        # Same seed, same first request: both strategies judged the same 8 samples.
        assert [c.text for c in m.candidates] == [c.text for c in b.candidates]
        assert b.prm_calls == 8 and m.prm_calls == 0 and b.tokens == m.tokens
        if any(solved(p, c.text) for c in b.candidates):
            some_solved += 1
            assert solved(p, b.text) and correct(p, b.answer)
    # The oracle finds every solved problem's solution; the seeded samples solve 10 of 12 and
    # majority voting gets 9 of them right.
    assert (maj_acc, best_acc, some_solved) == (9, 10, 10)


@pytest.mark.parametrize("name", ["beam", "mcts"])
def test_real_step_search_counts_every_token(policy, problems, name):
    recording = Recording(policy)
    ctx = VerifyContext(recording, ArithOracleScorer(), VerifyConfig(aggregation="min"))
    results = run(run_all(name, ctx, problems[:6], 8))
    assert sum(r.tokens for r in results) == sum(r.num_tokens for r in recording.returned)
    assert sum(r.prm_calls for r in results) == ctx.scorer.calls
    scored_right = 0
    for p, r in zip(problems[:6], results, strict=True):
        chosen = r.candidates[r.chosen]
        assert r.text == chosen.text
        # The oracle's scores of the step-by-step path agree with checking the whole text.
        if chosen.score == 1.0:
            scored_right += 1
            assert solved(p, r.text)
    assert scored_right == 6  # every problem's chosen path is a right one


@pytest.mark.slow
def test_real_runs_are_reproducible(policy, problems):
    ctx = VerifyContext(policy, ArithOracleScorer(), VerifyConfig(seed=7, expansions=2))
    for name in STRATEGIES:
        first = run(run_all(name, ctx, problems[:2], 4))
        again = run(run_all(name, ctx, problems[:2], 4))
        assert [r.to_dict() for r in first] == [r.to_dict() for r in again], name


# --- candidates cut at the token limit -----------------------------------------------------------


def test_a_sample_cut_at_the_token_limit_is_unfinished_and_never_votes():
    # Sample 1 stopped in the middle of "12": its "1" would outvote the finished "12".
    texts = [*boxed("12"), "step 0\n\nThe answer is 1", "step 0\n\nThe answer is 1"]

    def script(path, n, params):
        return [(t, len(t), "stop" if i == 0 else "length") for i, t in enumerate(texts)]

    ctx, _ = scripted_ctx(script, TableScorer(fn=lambda s: 0.9 if "1" in s else 0.1))
    for name in ("majority", "best-of-n", "weighted-vote"):
        result = run(run_strategy(name, ctx, QUESTION, 3))
        assert [c.finished for c in result.candidates] == [True, False, False], name
        assert [c.answer for c in result.candidates] == ["12", None, None], name
        assert result.answer == "12" and result.chosen == 0, name
    assert run(run_strategy("majority", ctx, QUESTION, 3)).votes == {"12": 1.0}
    # Every sample cut: no answer at all, so the result is wrong whatever the text says.
    ctx, _ = scripted_ctx(lambda path, n, params: [("The answer is \\boxed{2}", 5, "length")])
    for name in ("greedy", "majority"):
        result = run(run_strategy(name, ctx, QUESTION, 1))
        assert result.answer is None and not result.candidates[0].finished, name
        assert result.text == "The answer is \\boxed{2}"  # the text is kept as it was


def test_a_step_cut_at_the_limit_does_not_end_the_solution():
    # The first step holds an answer but was cut at step_max_new_tokens ("1" of "12"): the path
    # goes on, and the next step finishes it. With no tokens left after the cut, the path is
    # unfinished and states no answer.
    cut, rest = "The answer is 1", "2."

    def script(path, n, params):
        return [(cut, 4, "length") if path == "" else (rest, 2, "stop")] * n

    for name in ("beam", "mcts"):
        ctx, backend = scripted_ctx(script, TableScorer(), expansions=1, max_new_tokens=50)
        result = run(run_strategy(name, ctx, QUESTION, 2))
        assert result.answer == "12" and result.text == cut + rest, name
        assert result.candidates[result.chosen].finished, name
        ctx, backend = scripted_ctx(script, TableScorer(), expansions=1, max_new_tokens=4)
        result = run(run_strategy(name, ctx, QUESTION, 2))
        assert result.answer is None, name
        assert all(not c.finished and c.answer is None for c in result.candidates), name
        # no tokens left: nothing is sampled after the cut
        assert backend.requests and all(path == "" for path, _, _ in backend.requests), name


def test_real_policy_candidates_cut_at_a_tiny_max_new_tokens_are_unfinished(policy, problems):
    ctx = VerifyContext(
        policy,
        ArithOracleScorer(),
        VerifyConfig(max_new_tokens=6, step_max_new_tokens=4, expansions=2, seed=3),
    )
    for name in STRATEGIES:
        results = run(run_all(name, ctx, problems[:2], 2))
        candidates = [c for r in results for c in r.candidates]
        assert candidates, name
        # 6 tokens hold no tiny-policy solution: every candidate was cut, none states an answer.
        assert all(not c.finished and c.answer is None for c in candidates), name
        assert all(r.answer is None for r in results), name
        assert all(c.text for c in candidates), name
