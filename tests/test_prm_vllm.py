"""A PRM that `amcs train` saved, served by the real vLLM CPU server (pooling runner) and scored
over the network: its step scores equal the in-process scorer's, `amcs eval` and `amcs eval steps`
take its URL, and what goes wrong (no server, a server that is not a PRM, a server that goes
away) is one error naming the URL, never a score.

The tests using the fixture ``vllm_prm_server`` are in the servers tier (tests/conftest.py
SERVER_FIXTURES); the server starts once for the module (training ~25 s and start-up ~45 s on a
free 2-core machine), on one xdist worker. The error paths that need no vLLM run in the fast tier.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from typer.testing import CliRunner

from amcs.backends.base import BackendUnavailableError
from amcs.domains.arith import ANSWER_TEMPLATE, generate_problems
from amcs.prm import load_prm, load_scorer
from amcs.prm.names import ScorerError
from amcs.prm.remote import ServedPRMScorer, load_served_prm
from amcs.testing import LoopbackServer
from cli.main import app
from tests.servers import free_port, require_server_env, start_vllm
from tests.test_training import arith_rows

pytestmark = pytest.mark.xdist_group("test_prm_vllm")  # one worker: one PRM server

# vLLM computes in float32 like the in-process scorer; observed max difference 1.2e-7.
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def trained_prm(tmp_path_factory):
    """A token-classification PRM trained by `amcs train` on exact arithmetic labels (~25 s)."""
    require_server_env()
    root = tmp_path_factory.mktemp("prm")
    data = root / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in arith_rows(48, seed=1)))
    out = root / "prm"
    result = CliRunner().invoke(
        app,
        ["train", "--data", str(data), "--out", str(out), "--max-steps", "6",
         "--batch-size", "8", "--lr", "3e-3"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["architectures"] == [
        "LlamaForTokenClassification"
    ]
    return out


@pytest.fixture(scope="module", name="vllm_prm_server")
def vllm_prm_server_fixture(trained_prm):
    """vLLM serving the trained PRM with the pooling runner (token_classify)."""
    server = start_vllm(trained_prm, runner="pooling")
    yield server
    server.stop()


def solutions(n: int) -> list[tuple[str, list[str]]]:
    """Right solutions and the same ones with a wrong final answer."""
    items = []
    for problem in generate_problems(n, seed=5):
        steps = list(problem.solution_steps)
        items.append((problem.question, steps))
        wrong = ANSWER_TEMPLATE.format(value=problem.answer + 1)
        items.append((problem.question, steps[:-1] + [wrong]))
    return items


def test_served_step_scores_equal_the_in_process_scorers(vllm_prm_server, trained_prm):
    items = solutions(20)
    scorer = load_scorer(vllm_prm_server.url, max_batch_size=8)
    assert isinstance(scorer, ServedPRMScorer)
    assert scorer.served_model == str(trained_prm)

    async def score_all():
        try:
            return await asyncio.gather(*(scorer.score(q, s) for q, s in items))
        finally:
            await scorer.aclose()

    served = asyncio.run(score_all())
    local = load_prm(trained_prm).score_batch(items)
    assert [len(s) for s in served] == [len(s) for _, s in items]
    diff = max(
        abs(a - b) for x, y in zip(served, local, strict=True) for a, b in zip(x, y, strict=True)
    )
    print(f"max |vLLM - in-process| step score difference: {diff:.3g}")
    assert diff < TOLERANCE
    # the PRM tells the steps apart: scores are not one constant
    assert max(max(s) for s in served) - min(min(s) for s in served) > 0.01
    # 40 concurrent calls went in batches of at most 8: 5 requests, every call answered
    assert scorer.calls == len(items) and scorer.requests == 5 and scorer.retries == 0
    # the blocking form gives the same scores
    again = ServedPRMScorer(vllm_prm_server.url).score_batch(items[:3])
    flat = [x for row in served[:3] for x in row]
    assert [x for row in again for x in row] == pytest.approx(flat, abs=TOLERANCE)


def test_eval_steps_with_the_url_reports_what_the_directory_does(
    vllm_prm_server, trained_prm, tmp_path
):
    data = tmp_path / "steps.jsonl"
    rows = [
        {"problem": q, "steps": s, "label": -1 if i % 2 == 0 else len(s) - 1}
        for i, (q, s) in enumerate(solutions(6))
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    reports = []
    for prm in (vllm_prm_server.url, str(trained_prm)):
        out = tmp_path / f"report-{len(reports)}.json"
        result = CliRunner().invoke(
            app, ["eval", "steps", "--data", str(data), "--prm", prm, "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
        report = json.loads(out.read_text())
        assert report.pop("prm") == prm
        reports.append(report)
    assert reports[0] == reports[1]
    assert reports[0]["n"] == 12


def test_eval_best_of_n_with_the_url_picks_what_the_directory_picks(
    vllm_prm_server, trained_prm, tmp_path
):
    results = []
    for prm in (vllm_prm_server.url, str(trained_prm)):
        out = tmp_path / f"eval-{len(results)}"
        result = CliRunner().invoke(
            app,
            ["eval", "--problems", "arith-heldout:3", "--strategies", "best-of-n", "--n", "2",
             "--prm", prm, "--no-baseline", "--out", str(out), "--quiet"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
        results.append(records)
    served, local = results
    assert len(served) == len(local) == 3
    n_scores = 0
    for a, b in zip(served, local, strict=True):
        # the same samples (same seed), scored alike, so the same one chosen
        assert [c["text"] for c in a["candidates"]] == [c["text"] for c in b["candidates"]]
        assert (a["chosen"], a["answer"], a["correct"]) == (b["chosen"], b["answer"], b["correct"])
        for x, y in zip(a["candidates"], b["candidates"], strict=True):
            assert x["step_scores"] == pytest.approx(y["step_scores"], abs=TOLERANCE)
            n_scores += len(x["step_scores"])
    assert n_scores > 0


def test_no_server_is_one_error_naming_the_url(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ScorerError, match=re.escape(url)):
        load_scorer(url)
    data = tmp_path / "steps.jsonl"
    question, steps = solutions(1)[0]
    data.write_text(json.dumps({"problem": question, "steps": steps, "label": -1}) + "\n")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        json.dumps({"prompt": question, "completions": steps, "labels": [True] * len(steps)}) + "\n"
    )
    for command in (
        ["eval", "steps", "--prm", url, "--data", str(data)],
        ["filter", str(rows), "--judge", url, "--out", str(tmp_path / "kept.jsonl")],
    ):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and url in lines[0] and "cannot reach" in lines[0], result.output
    assert not (tmp_path / "kept.jsonl").exists()


def test_a_server_that_is_not_a_pooling_model_is_a_clear_error():
    """A generation server has no /pooling route: vLLM's (generate runner) answers it with
    HTTP 404, as the loopback stand-in of the generation backends' tests does."""
    server = LoopbackServer()
    try:
        with pytest.raises(ScorerError) as caught:
            load_scorer(server.url)
    finally:
        server.close()
    message = str(caught.value)
    assert server.url in message and "HTTP 404" in message
    assert "not a token-classification pooling model" in message
    assert "--runner pooling" in message and "\n" not in message


def test_a_served_prm_of_another_input_format_is_refused_not_scored_wrongly(tmp_path):
    """A Qwen2.5-Math-PRM-style checkpoint (step token <extra_0>, a ProcessRewardModel head)
    builds its inputs otherwise: scored as a token classifier its scores would be wrong with no
    error, so the scorer refuses it by name; so does a --prm-format other than token-cls."""
    import shutil

    from transformers import AutoTokenizer

    from amcs.assets import TINY_POLICY

    qwen_like = tmp_path / "qwen-like"
    shutil.copytree(TINY_POLICY, qwen_like)
    tokenizer = AutoTokenizer.from_pretrained(str(qwen_like))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<extra_0>"]})
    tokenizer.save_pretrained(qwen_like)
    config = json.loads((qwen_like / "config.json").read_text())
    config["architectures"] = ["Qwen2ForProcessRewardModel"]
    (qwen_like / "config.json").write_text(json.dumps(config))
    server = LoopbackServer()
    try:
        with pytest.raises(ScorerError) as caught:
            load_served_prm(server.url, tokenizer=qwen_like)
        with pytest.raises(ScorerError) as flagged:
            load_scorer(server.url, prm_format="step-tag")
    finally:
        server.close()
    message = str(caught.value)
    assert server.url in message and "is a qwen-prm PRM" in message and "--prm DIR" in message
    assert "--prm-format step-tag" in str(flagged.value) and "token-cls only" in str(flagged.value)


def test_a_server_that_goes_away_is_an_error_after_the_patience_not_a_score(
    vllm_prm_server, trained_prm
):
    """Last: it stops the PRM server."""
    scorer = ServedPRMScorer(vllm_prm_server.url, patience=3, backoff=0.2)
    question, steps = solutions(1)[0]

    async def score_after_stop():
        try:
            first = await scorer.score(question, steps)
            vllm_prm_server.stop()
            with pytest.raises(BackendUnavailableError) as caught:
                await scorer.score(question, steps)
            return first, caught.value
        finally:
            await scorer.aclose()

    first, error = asyncio.run(score_after_stop())
    assert len(first) == len(steps)
    assert vllm_prm_server.url in str(error) and "has not answered for 3 s" in str(error)
    assert scorer.retries >= 2 and scorer.requests == 1
