"""The HTTP backends against a loopback server that samples from the bundled tiny policy."""

from __future__ import annotations

import asyncio
import socket

import pytest
from typer.testing import CliRunner

from amcs.assets import TINY_POLICY
from amcs.backends import make_backend
from amcs.backends.base import (
    BackendConfigError,
    BackendUnavailableError,
    PromptTooLongError,
    SamplingParams,
)
from amcs.backends.http import OpenAICompletionsBackend, SGLangHTTPBackend, http_error
from amcs.prompts import prompt_ids
from amcs.records import meta_path_for, read_meta
from amcs.testing import LoopbackServer
from cli.main import app

runner = CliRunner()
STOP = SamplingParams(temperature=1.0, max_new_tokens=60, stop=("\n\n",), seed=7)


@pytest.fixture(scope="module")
def server():
    with LoopbackServer() as s:
        yield s


@pytest.fixture(autouse=True)
def _reset(server):
    server.requests.clear()
    server.fail_next = server.reject_next = 0


def _prompt(tokenizer) -> list[int]:
    return prompt_ids(tokenizer, "What is 12 + 7 * 3?")


def _check_rollouts(rollouts, tokenizer, n):
    assert len(rollouts) == n
    for r in rollouts:
        assert r.token_ids and tokenizer.decode(r.token_ids) == r.text
        assert r.logprob_sum <= 0
        assert r.finish_reason in ("stop", "length")
        if r.finish_reason == "length":
            assert r.num_tokens == STOP.max_new_tokens
        assert tokenizer.eos_token_id not in r.token_ids


def test_sglang_http_rollouts_and_request_fields(server):
    async def go():
        b = make_backend("sglang-http", str(TINY_POLICY), urls=[server.url])
        try:
            ids = _prompt(b.tokenizer)
            many = await b.sample(ids, 4, STOP)
            one = await b.sample(ids, 1, SamplingParams(temperature=0, max_new_tokens=30))
            again = await b.sample(ids, 4, STOP)
            return b, ids, many, one, again
        finally:
            await b.aclose()

    b, ids, many, one, again = asyncio.run(go())
    assert isinstance(b, SGLangHTTPBackend)
    _check_rollouts(many, b.tokenizer, 4)
    assert len(one) == 1 and one[0].token_ids
    assert [r.token_ids for r in again] == [r.token_ids for r in many]  # seeded
    assert many[0].cached_tokens == 0 and again[0].cached_tokens == len(ids)
    path, body = server.requests[0]
    assert path == "/generate"
    assert set(body) == {"input_ids", "sampling_params", "return_logprob"}
    assert body["input_ids"] == ids and body["return_logprob"] is True
    assert body["sampling_params"] == {
        "n": 4,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": -1,
        "max_new_tokens": 60,
        "stop": ["\n\n"],
        "no_stop_trim": True,
        "sampling_seed": 7,
    }
    assert "sampling_seed" not in server.requests[1][1]["sampling_params"]


def test_openai_completions_rollouts_and_request_fields(server, monkeypatch):
    monkeypatch.setenv("AMCS_TEST_KEY", "sk-test")

    async def go():
        b = OpenAICompletionsBackend(server.url, "tiny", TINY_POLICY, api_key_env="AMCS_TEST_KEY")
        s = SGLangHTTPBackend([server.url, server.url], TINY_POLICY)
        try:
            ids = _prompt(b.tokenizer)
            many = await b.sample(ids, 3, STOP)
            greedy = SamplingParams(temperature=0, max_new_tokens=30)
            g1 = await b.sample(ids, 1, greedy)
            g2 = await s.sample(ids, 1, greedy)
            return b, ids, many, g1, g2
        finally:
            await b.aclose()
            await s.aclose()

    b, ids, many, g1, g2 = asyncio.run(go())
    _check_rollouts(many, b.tokenizer, 3)
    assert g1[0].token_ids == g2[0].token_ids and g1[0].text == g2[0].text
    assert abs(g1[0].logprob_sum - g2[0].logprob_sum) < 1e-4
    path, body = server.requests[0]
    assert path == "/v1/completions"
    assert body["model"] == "tiny" and body["prompt"] == ids
    assert body["n"] == 3 and body["max_tokens"] == 60 and body["logprobs"] == 1
    assert body["stop"] == ["\n\n"] and body["seed"] == 7
    assert body["temperature"] == 1.0 and body["top_p"] == 1.0


def test_http_errors(server):
    async def go():
        b = SGLangHTTPBackend(server.url, TINY_POLICY)
        try:
            ids = _prompt(b.tokenizer)
            server.reject_next = 1  # a 400 not about the prompt: the configuration is wrong
            with pytest.raises(BackendConfigError, match="HTTP 400: injected"):
                await b.sample(ids, 1, STOP)
            server.fail_next = 1
            with pytest.raises(ConnectionError, match="HTTP 500") as err:
                await b.sample(ids, 1, STOP)
            assert not isinstance(err.value, BackendUnavailableError)
        finally:
            await b.aclose()

    asyncio.run(go())


# What real servers answer (vLLM 0.32, SGLang, sglang-router 0.3.2), and the kind each becomes.
ANSWERS = [
    (503, "Service Unavailable", BackendUnavailableError),
    (502, "Bad Gateway", BackendUnavailableError),
    (504, "Gateway Timeout", BackendUnavailableError),
    (429, "Too many requests", BackendUnavailableError),
    (
        500,
        "error sending request for url (http://127.0.0.1:41861/generate)",
        BackendUnavailableError,
    ),
    (500, "RuntimeError: engine core died", ConnectionError),
    (404, "The model `tiny` does not exist. Valid aliases: /m.", BackendConfigError),
    (400, "max_tokens=600 cannot be greater than max_model_len=512.", BackendConfigError),
    (400, "Token id 99999 is out of vocabulary", BackendConfigError),
    (401, "Unauthorized", BackendConfigError),
    (
        422,
        "prompt: data did not match any variant of untagged enum StringOrArray",
        BackendConfigError,
    ),
    (
        400,
        "This model's maximum context length is 512 tokens. However, your prompt contains 540 "
        "input tokens, which exceeds this limit even without any output tokens.",
        PromptTooLongError,
    ),
    (
        400,
        "The input (600 tokens) is longer than the model's context length (512 tokens).",
        PromptTooLongError,
    ),
    (413, "Payload Too Large", PromptTooLongError),
]


@pytest.mark.parametrize(("status", "message", "kind"), ANSWERS)
def test_http_error_kinds(status, message, kind):
    err = http_error(status, message, "http://h:1/v1/completions")
    assert type(err) is kind
    assert str(err).startswith(f"http://h:1/v1/completions answered HTTP {status}: {message}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_names_the_url(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}"

    async def go():
        b = SGLangHTTPBackend(url, TINY_POLICY)
        with pytest.raises(ConnectionError, match=f"cannot reach SGLang server at {url}"):
            await b.sample([1, 2, 3], 1, STOP)
        await b.aclose()

    asyncio.run(go())
    r = runner.invoke(
        app,
        ["generate", "--backend", "sglang-http", "--url", url, "--problems", "arith:2"]
        + ["--out", str(tmp_path / "d.jsonl"), "-q"],
    )
    assert r.exit_code == 2, r.output
    assert f"cannot reach SGLang server at {url}" in r.output
    r = runner.invoke(
        app, ["generate", "--backend", "openai", "--out", str(tmp_path / "e.jsonl"), "-q"]
    )
    assert r.exit_code == 2 and "--url" in r.output


ARGS = ["--set", "max_new_tokens=120", "--set", "rollout_budget=40", "--set", "max_search_count=3"]


def _generate(url: str, out, problems: str, *extra: str):
    return runner.invoke(
        app,
        ["generate", "--backend", "sglang-http", "--url", url, "--problems", problems]
        + ["--out", str(out), "-q", "--concurrency", "8", *ARGS, *extra],
    )


@pytest.mark.slow
def test_cli_generate_end_to_end_with_cache_ratio(server, tmp_path):
    out = tmp_path / "d.jsonl"
    r = _generate(server.url, out, "arith:6")
    assert r.exit_code == 0, r.output
    assert "prefix cache hit ratio" in r.output
    meta = read_meta(meta_path_for(out))
    assert len(meta) == 6 and all(m["status"] == "ok" for m in meta)
    assert all(p == "/generate" for p, _ in server.requests)
    # The server caches like a radix tree, so most prompt tokens of an AMCS run are cache hits:
    # the k rollouts of a node share its prefix, and a node's prefix is tokens already generated.
    cached = sum(m["stats"]["cached_tokens"] for m in meta)
    prompt = sum(m["stats"]["prompt_tokens"] for m in meta)
    assert cached / prompt > 0.8, f"cache hit ratio {cached / prompt:.2f}"


@pytest.mark.slow
def test_server_killed_mid_run_stops_after_the_patience_and_resumes(tmp_path):
    out = tmp_path / "d.jsonl"
    with LoopbackServer() as dying:
        dying.die_after = 5
        r = _generate(dying.url, out, "arith:6", "--patience", "2")
    # The server never came back: the run stops (exit 1) instead of failing every problem.
    assert r.exit_code == 1, r.output
    assert "has not answered for 2 s" in r.output and "run the same command again" in r.output
    committed = read_meta(meta_path_for(out)) if meta_path_for(out).exists() else []
    assert all(m["status"] == "ok" for m in committed) and len(committed) < 6
    with LoopbackServer() as fresh:
        r = _generate(fresh.url, out, "arith:7")
    assert r.exit_code == 0, r.output
    meta = read_meta(meta_path_for(out))
    ids = [m["problem_id"] for m in meta]
    assert len(ids) == 7 and len(set(ids)) == 7 and all(m["status"] == "ok" for m in meta)


def test_openai_token_ids_from_token_strings_ids_or_text():
    b = OpenAICompletionsBackend("http://127.0.0.1:9", "tiny", TINY_POLICY)
    tok = b.tokenizer
    ids = tok("12 + 7 = 19\n\n", add_special_tokens=False)["input_ids"]
    text = tok.decode(ids)
    assert b._token_ids(tok.convert_ids_to_tokens(ids), text) == ids
    assert b._token_ids([f"token_id:{i}" for i in ids], text) == ids
    # Decoded pieces that are not vocabulary tokens: fall back to re-encoding the text.
    pieces = ["\u2400" + tok.decode([i]) for i in ids]
    assert b._token_ids(pieces, text) == ids


def test_openai_sends_the_only_served_model_name(server):
    """The loopback server serves one model, "tiny": the backend sends that name whatever the
    tokenizer path is, and asks no vLLM-only fields of a server that is not vLLM."""

    async def go():
        b = OpenAICompletionsBackend(server.url, str(TINY_POLICY))
        try:
            await b.sample([34, 5, 8], 2, SamplingParams(temperature=0, max_new_tokens=4))
        finally:
            await b.aclose()
        return b

    b = asyncio.run(go())
    assert b.request_model == "tiny" and b.max_model_len is None
    ((_, body),) = server.requests
    assert body["model"] == "tiny" and body["n"] == 1  # greedy: one choice, given twice
    assert body["max_tokens"] == 4 and "return_tokens_as_token_ids" not in body


def test_make_backend_takes_a_served_model_name_for_openai_only():
    b = make_backend("openai", str(TINY_POLICY), url="http://127.0.0.1:9", served_model="tiny")
    assert isinstance(b, OpenAICompletionsBackend) and b.served_model == "tiny"
    b = make_backend(
        "sglang-http", str(TINY_POLICY), urls=["http://127.0.0.1:9"], served_model=None
    )
    assert isinstance(b, SGLangHTTPBackend) and b.urls == ["http://127.0.0.1:9"]
    with pytest.raises(ValueError, match="for the openai backend, not sglang-http"):
        make_backend("sglang-http", str(TINY_POLICY), urls=["http://127.0.0.1:9"], served_model="x")
