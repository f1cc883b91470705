"""recipes/tiny-arith/train_base.py: the tiny PRM's base, trained further from the policy. The
sequences it learns from (loss on exactly the results and separators of equation packs, on the
solution of a solution row), and a short run that saves a base the PRM trainer accepts."""

import importlib.util
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from amcs.assets import TINY_POLICY
from amcs.domains.arith import held_out_problems
from amcs.prompts import plain_prompt

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "tiny-arith"
_spec = importlib.util.spec_from_file_location("train_base", RECIPE / "train_base.py")
tb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tb)


@pytest.fixture(scope="module")
def data():
    return tb.BaseData(AutoTokenizer.from_pretrained(TINY_POLICY), problems=300, seed=3)


def decode(tokenizer, ids):
    return tokenizer.decode([i for i in ids if i != tb.IGNORE])


def test_a_pack_teaches_results_only_and_every_result_is_right(data):
    ids, labels = data.pack(size=5)
    assert len(ids) == len(labels)
    text = data.tokenizer.decode(ids)
    equations = text.split("\n\n")[:-1]
    assert len(equations) == 5 and text.endswith("\n\n")
    taught = [t for t in decode(data.tokenizer, labels).split("\n\n") if t]
    for equation, result in zip(equations, taught, strict=True):
        a, op, b, c = tb.EQUATION.match(equation).groups()
        assert c == result  # the loss sits on the result (and its separator), not the operands
        assert {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op] == int(c)
    # No operand token carries a label.
    for i, label in enumerate(labels):
        if label != tb.IGNORE:
            assert label == ids[i]


def test_a_solution_row_is_the_policy_format_with_loss_on_the_solution(data):
    ids, labels = data.solution()
    problem = data.problems[0]
    assert data.tokenizer.decode(ids).startswith(plain_prompt(problem.question))
    assert decode(data.tokenizer, labels) == problem.solution + data.tokenizer.eos_token
    held_out = {p.expression for p in held_out_problems()}
    assert held_out and not held_out & {p.expression for p in data.problems}


def test_a_batch_mixes_packs_and_solutions_with_padding_masked(data):
    batch = data.batch(16, equation_fraction=0.5)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    padded = batch["attention_mask"] == 0
    assert padded.any() and (batch["labels"][padded] == tb.IGNORE).all()
    texts = [
        data.tokenizer.decode(row[mask.bool()])
        for row, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)
    ]
    packs = [t for t in texts if re.match(r"^-?\d+ [-+*] ", t)]
    assert 0 < len(packs) < 16  # both kinds, from one fraction
    assert all(t.startswith("What is ") for t in texts if t not in packs)


@pytest.mark.slow
def test_a_short_run_learns_and_saves_a_base(tmp_path):
    torch.set_num_threads(2)
    metrics = tb.train_base(tmp_path / "base", steps=3, batch_size=4, problems=200, log_every=1)
    assert metrics["steps"] == 3 and metrics["final_loss"] > 0
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    policy = AutoModelForCausalLM.from_pretrained(TINY_POLICY)
    changed = [
        name
        for (name, p), (_, q) in zip(
            trained.named_parameters(), policy.named_parameters(), strict=True
        )
        if not torch.equal(p, q)
    ]
    assert changed  # warm-started from the policy and moved
    assert (
        AutoTokenizer.from_pretrained(tmp_path / "base").get_vocab()
        == AutoTokenizer.from_pretrained(TINY_POLICY).get_vocab()
    )
