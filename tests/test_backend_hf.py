"""The transformers backend, on the bundled tiny policy: real generation, no mocks."""

import asyncio

import pytest
import torch

from amcs.assets import TINY_POLICY
from amcs.backends.base import Backend, SamplingParams
from amcs.backends.hf import HFBackend
from amcs.domains.arith import generate_problems
from amcs.prompts import prompt_ids


@pytest.fixture(scope="module")
def backend():
    b = HFBackend(TINY_POLICY, max_batch_size=64)
    yield b
    asyncio.run(b.aclose())


@pytest.fixture(scope="module")
def prompts(backend):
    return [prompt_ids(backend.tokenizer, p.question) for p in generate_problems(40, seed=99)]


def run(coro):
    return asyncio.run(coro)


def test_implements_the_protocol(backend):
    assert isinstance(backend, Backend)


def test_rollouts_are_consistent(backend, prompts):
    rollouts = run(
        backend.sample(prompts[0], 4, SamplingParams(temperature=1.0, max_new_tokens=120, seed=1))
    )
    assert len(rollouts) == 4
    for r in rollouts:
        assert r.text == backend.tokenizer.decode(r.token_ids)
        assert r.finish_reason in ("stop", "length")
        assert r.logprob_sum <= 0 and r.num_tokens > 0
    # logprob_sum is the model's own log-probability of the tokens: recompute it with a forward pass.
    r = rollouts[0]
    ids = torch.tensor([prompts[0] + r.token_ids])
    with torch.no_grad():
        logits = backend.model(ids).logits[0, len(prompts[0]) - 1 : -1]
    expected = (
        torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(r.token_ids)[:, None]).sum()
    )
    assert r.logprob_sum == pytest.approx(expected.item(), abs=1e-3)


def test_greedy_matches_transformers_generate(backend, prompts):
    for ids in prompts[:3]:
        (ours,) = run(backend.sample(ids, 1, SamplingParams(temperature=0, max_new_tokens=100)))
        ref = backend.model.generate(
            torch.tensor([ids]), do_sample=False, max_new_tokens=100, pad_token_id=backend.pad_id
        )[0, len(ids) :].tolist()
        ref = [t for t in ref if t not in backend.eos_ids]
        assert ours.token_ids == ref
    # top_k = 1 is greedy too.
    (a,) = run(backend.sample(prompts[0], 1, SamplingParams(temperature=0, max_new_tokens=60)))
    (b,) = run(
        backend.sample(
            prompts[0], 1, SamplingParams(temperature=1.0, top_k=1, max_new_tokens=60, seed=5)
        )
    )
    assert a.token_ids == b.token_ids


def test_seeded_rollouts_do_not_depend_on_batch_company(backend, prompts):
    params = SamplingParams(temperature=1.0, max_new_tokens=80, seed=123)
    alone = run(backend.sample(prompts[0], 3, params))

    async def crowded():
        others = [
            backend.sample(
                p, 2, SamplingParams(temperature=0.8, top_p=0.9, max_new_tokens=80, seed=i)
            )
            for i, p in enumerate(prompts[1:20])
        ]
        *_, mine = await asyncio.gather(*others, backend.sample(prompts[0], 3, params))
        return mine

    assert [r.token_ids for r in run(crowded())] == [r.token_ids for r in alone]
    # Rollouts of one request differ from each other, and another seed gives other rollouts.
    assert len({tuple(r.token_ids) for r in alone}) > 1
    other = run(
        backend.sample(prompts[0], 3, SamplingParams(temperature=1.0, max_new_tokens=80, seed=124))
    )
    assert [r.token_ids for r in other] != [r.token_ids for r in alone]


def test_stop_strings_and_length(backend, prompts):
    rollouts = run(
        backend.sample(
            prompts[1],
            6,
            SamplingParams(temperature=1.0, max_new_tokens=100, stop=("\n\n",), seed=3),
        )
    )
    for r in rollouts:
        if r.finish_reason == "stop" and "\n\n" in r.text:
            assert r.text.endswith("\n\n") and r.text.count("\n\n") == 1
    assert any(r.text.endswith("\n\n") for r in rollouts)
    short = run(backend.sample(prompts[1], 2, SamplingParams(max_new_tokens=3, seed=0)))
    assert all(r.num_tokens == 3 and r.finish_reason == "length" for r in short)


def test_concurrent_callers_are_decoded_together(backend, prompts):
    backend.peak_rows = 0

    async def many():
        return await asyncio.gather(
            *(
                backend.sample(p, 1, SamplingParams(max_new_tokens=40, seed=i))
                for i, p in enumerate(prompts[:32])
            )
        )

    results = run(many())
    assert len(results) == 32
    assert backend.peak_rows >= 16


def test_late_requests_join_a_running_batch(backend, prompts):
    """Continuous batching: a request made while a long one is decoding is served before the
    long one ends, and gets the same rollouts as it would alone."""
    params = SamplingParams(temperature=1.0, max_new_tokens=5, seed=9)
    alone = run(backend.sample(prompts[3], 2, params))

    async def main():
        # A full solution is 30-90 tokens; the late request needs 5 once it has joined.
        long = asyncio.create_task(backend.sample(prompts[4], 4, SamplingParams(temperature=0)))
        start = backend.forward_passes
        while backend.forward_passes < start + 3:
            await asyncio.sleep(0.001)
        late = await backend.sample(prompts[3], 2, params)
        return late, long.done(), await long

    late, long_done_first, _ = run(main())
    assert [r.token_ids for r in late] == [r.token_ids for r in alone]
    assert not long_done_first


def test_event_loop_stays_responsive(backend, prompts):
    async def main():
        ticks = 0

        async def heartbeat():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        beat = asyncio.create_task(heartbeat())
        await backend.sample(prompts[2], 32, SamplingParams(max_new_tokens=100, seed=0))
        beat.cancel()
        return ticks

    assert run(main()) > 5


def test_bad_requests(backend):
    with pytest.raises(ValueError, match="empty"):
        run(backend.sample([], 1, SamplingParams()))
    too_long = [5] * (backend.max_positions + 1)
    with pytest.raises(ValueError, match="no room"):
        run(backend.sample(too_long, 1, SamplingParams()))
    assert run(backend.sample([5], 0, SamplingParams())) == []


@pytest.mark.gpu
def test_cuda_greedy_matches_the_cpu_backend(backend, prompts):
    gpu = HFBackend(TINY_POLICY, device="cuda", dtype=torch.float32)
    try:
        params = SamplingParams(temperature=0, max_new_tokens=100)
        for ids in prompts[:4]:
            (a,) = run(gpu.sample(ids, 1, params))
            (b,) = run(backend.sample(ids, 1, params))
            assert a.token_ids == b.token_ids
    finally:
        run(gpu.aclose())
