"""The in-process SGLang backend: request and response mapping against a stand-in engine, the
install hint without SGLang, and (on a CUDA machine with SGLang) the real engine end to end."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest
from typer.testing import CliRunner

from amcs.assets import TINY_POLICY
from amcs.backends import BACKENDS, make_backend
from amcs.backends.base import Backend, SamplingParams
from amcs.backends.sglang_engine import INSTALL_HINT, SGLangEngineBackend
from amcs.prompts import prompt_ids
from cli.main import app

runner = CliRunner()
HAS_SGLANG = importlib.util.find_spec("sglang") is not None


class StandInEngine:
    """Records async_generate's arguments and answers the way sglang.Engine does: a dict for
    n == 1, a list of dicts otherwise."""

    def __init__(self, eos: int) -> None:
        self.eos = eos
        self.calls: list[dict] = []
        self.shut = 0

    async def async_generate(self, **kwargs):
        self.calls.append(kwargs)
        n = kwargs["sampling_params"]["n"]
        outs = []
        for i in range(n):
            if i % 2 == 0:  # ended by end of sequence, which SGLang reports in output_ids
                ids, lps = [11, 12, self.eos], [-0.5, -0.25, -0.125]
                fr = {"type": "stop", "matched": self.eos}
            else:  # hit max_new_tokens
                ids, lps = [21, 22, 23, 24], [-1.0, -1.0, -1.0, -1.0]
                fr = {"type": "length", "length": 4}
            outs.append(
                {
                    "text": f"out{i}",
                    "output_ids": ids,
                    "meta_info": {
                        "finish_reason": fr,
                        "cached_tokens": 5 * i,
                        "output_token_logprobs": [
                            [lp, t, None] for lp, t in zip(lps, ids, strict=True)
                        ],
                    },
                }
            )
        return outs[0] if n == 1 else outs

    def shutdown(self) -> None:
        self.shut += 1


def _backend():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TINY_POLICY)
    engine = StandInEngine(tok.eos_token_id)
    return SGLangEngineBackend(str(TINY_POLICY), engine=engine), engine


def test_request_and_response_mapping_with_a_stand_in_engine():
    b, engine = _backend()
    assert isinstance(b, Backend) and b.tokenizer.eos_token_id == engine.eos
    params = SamplingParams(
        temperature=0.7, top_p=0.9, top_k=0, max_new_tokens=4, stop=("\n\n",), seed=3
    )

    async def go():
        many = await b.sample([1, 2, 3], 3, params)
        one = await b.sample([4, 5], 1, SamplingParams(temperature=0, top_k=20))
        none = await b.sample([4, 5], 0, params)
        await b.aclose()
        await b.aclose()  # a second close does nothing
        return many, one, none

    many, one, none = asyncio.run(go())
    assert none == [] and len(engine.calls) == 2
    assert engine.calls[0] == {
        "input_ids": [1, 2, 3],
        "sampling_params": {
            "n": 3,
            "temperature": 0.7,
            "top_p": 0.9,
            "top_k": -1,
            "max_new_tokens": 4,
            "stop": ["\n\n"],
            "no_stop_trim": True,
            "sampling_seed": 3,
        },
        "return_logprob": True,
    }
    sp = engine.calls[1]["sampling_params"]
    assert sp["n"] == 1 and sp["top_k"] == 20 and sp["temperature"] == 0
    assert "sampling_seed" not in sp

    assert [r.finish_reason for r in many] == ["stop", "length", "stop"]
    assert many[0].token_ids == [11, 12]  # the end-of-sequence token and its logprob dropped
    assert many[0].logprob_sum == pytest.approx(-0.75)
    assert many[1].token_ids == [21, 22, 23, 24] and many[1].logprob_sum == pytest.approx(-4.0)
    assert [r.cached_tokens for r in many] == [0, 5, 10]
    assert [r.text for r in many] == ["out0", "out1", "out2"]
    assert len(one) == 1 and one[0].token_ids == [11, 12]  # n == 1: a dict, not a list
    assert engine.shut == 1


def test_sample_rejects_empty_prompt_and_wrong_output_count():
    b, engine = _backend()

    async def short(**kwargs):
        return [await StandInEngine.async_generate(engine, **kwargs)]

    with pytest.raises(ValueError, match="empty"):
        asyncio.run(b.sample([], 2, SamplingParams()))
    engine.async_generate = short  # one output for n == 2
    with pytest.raises(RuntimeError, match="1 outputs, asked for 2"):
        asyncio.run(b.sample([1], 2, SamplingParams()))


def test_make_backend_knows_sglang():
    assert "sglang" in BACKENDS
    if HAS_SGLANG:
        pytest.skip("SGLang is installed")
    with pytest.raises(ImportError) as info:
        make_backend("sglang", str(TINY_POLICY), tp_size=1, mem_fraction_static=0.5)
    assert str(info.value) == INSTALL_HINT


@pytest.mark.skipif(HAS_SGLANG, reason="SGLang is installed")
def test_cli_without_sglang_prints_the_install_hint_and_exits_2(tmp_path):
    out = tmp_path / "o.jsonl"
    r = runner.invoke(app, ["generate", "--backend", "sglang", "--limit", "2", "--out", str(out)])
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert lines == [f"error: {INSTALL_HINT}"]
    assert not out.exists()


@pytest.mark.gpu
def test_real_engine_samples_the_tiny_policy():
    pytest.importorskip("sglang")
    stop = SamplingParams(temperature=1.0, max_new_tokens=60, stop=("\n\n",), seed=7)

    async def go():
        b = make_backend(
            "sglang", str(TINY_POLICY), tp_size=1, mem_fraction_static=0.3, context_length=512
        )
        try:
            ids = prompt_ids(b.tokenizer, "What is 12 + 7 * 3?")
            many = await b.sample(ids, 4, stop)
            one = await b.sample(ids, 1, SamplingParams(temperature=0, max_new_tokens=30))
            again = await b.sample(ids, 4, stop)
            return b, ids, many, one, again
        finally:
            await b.aclose()

    b, ids, many, one, again = asyncio.run(go())
    assert len(many) == 4 and len(one) == 1 and one[0].token_ids
    for r in many:
        assert r.token_ids and r.logprob_sum <= 0
        assert r.finish_reason in ("stop", "length")
        assert b.tokenizer.eos_token_id not in r.token_ids
        assert b.tokenizer.decode(r.token_ids) == r.text
    assert max(r.cached_tokens for r in again) > 0  # the prompt came from the radix cache
