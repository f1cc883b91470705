"""The engine and `amcs generate` end to end: real tiny policy, real files, real processes."""

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from amcs.backends.base import BackendConfigError, BackendUnavailableError
from amcs.backends.hf import HFBackend
from amcs.grading import Grader
from amcs.problems import arith_problems
from amcs.records import RecordWriter, meta_path_for, read_data, read_meta, shard_problems
from amcs.scheduler import ServerGoneError, generate_to_file
from amcs.search import make_config

# Small searches keep the suite fast; the code path is the same as the defaults'.
# min_root_mc=0: no screening, so every problem with a right root rollout is searched.
SMALL = {"max_new_tokens": 120, "rollout_budget": 40, "max_search_count": 3, "min_root_mc": 0.0}


@pytest.fixture(scope="module")
def backend():
    b = HFBackend(max_batch_size=128)
    yield b
    asyncio.run(b.aclose())


async def _run(backend, problems, out, *, seed=0, method="amcs", retries=3, **kw):
    config = make_config(method, **SMALL)
    async with Grader() as grader:
        return await generate_to_file(
            problems,
            backend,
            grader,
            config,
            out,
            model_name="tiny",
            seed=seed,
            concurrency=8,
            retries=retries,
            **kw,
        )


@pytest.mark.slow
def test_same_seed_gives_identical_files_and_other_seed_differs(backend, tmp_path):
    problems = arith_problems(6, seed=1)
    asyncio.run(_run(backend, problems, tmp_path / "a.jsonl", seed=3))
    asyncio.run(_run(backend, problems, tmp_path / "b.jsonl", seed=3))
    asyncio.run(_run(backend, problems, tmp_path / "c.jsonl", seed=4))
    a = (tmp_path / "a.jsonl").read_bytes()
    assert a and a == (tmp_path / "b.jsonl").read_bytes()
    assert a != (tmp_path / "c.jsonl").read_bytes()
    meta = read_meta(meta_path_for(tmp_path / "a.jsonl"))
    assert [m["problem_id"] for m in meta] == [p.id for p in problems]  # input order
    # The data file is a dataset as it stands.
    import datasets

    ds = datasets.load_dataset("json", data_files=str(tmp_path / "a.jsonl"), split="train")
    assert len(ds) == sum(m["paths"] for m in meta) > 0
    assert set(ds.column_names) >= {"prompt", "completions", "labels", "values", "rollouts"}


@pytest.mark.slow
def test_shards_partition_the_job_and_match_the_whole_run(backend, tmp_path):
    problems = arith_problems(6, seed=2)
    asyncio.run(_run(backend, problems, tmp_path / "all.jsonl"))
    parts = []
    for i in range(2):
        shard = shard_problems(problems, i, 2)
        asyncio.run(_run(backend, shard, tmp_path / f"s{i}.jsonl"))
        parts.append({m["problem_id"] for m in read_meta(meta_path_for(tmp_path / f"s{i}.jsonl"))})
    assert parts[0].isdisjoint(parts[1]) and parts[0] | parts[1] == {p.id for p in problems}
    # Per-problem seeds come from (run seed, problem id), so a shard writes the same lines.
    whole = sorted(map(json.dumps, read_data(tmp_path / "all.jsonl")))
    split = sorted(json.dumps(r) for i in range(2) for r in read_data(tmp_path / f"s{i}.jsonl"))
    assert whole == split


class FlakyBackend:
    """Fails a seeded fraction of requests with `error`, as a flaky engine would."""

    def __init__(self, inner, failure_rate, seed=0, error=RuntimeError):
        self.inner, self.tokenizer = inner, inner.tokenizer
        self.rate, self.rng = failure_rate, random.Random(seed)
        self.error = error
        self.failures = 0

    async def sample(self, prompt_ids, n, params):
        if self.rng.random() < self.rate:
            self.failures += 1
            raise self.error("injected fault")
        return await self.inner.sample(prompt_ids, n, params)

    async def aclose(self):
        pass


@pytest.mark.slow
def test_injected_faults_are_retried_or_recorded_and_retried_on_resume(backend, tmp_path):
    problems = arith_problems(8, seed=3)
    flaky = FlakyBackend(backend, 0.3, seed=1)
    counters = asyncio.run(_run(flaky, problems, tmp_path / "retry.jsonl", retries=5))
    assert flaky.failures > 0 and counters.retries == flaky.failures
    assert counters.done == 8 and counters.failed == 0

    flaky = FlakyBackend(backend, 0.5, seed=2)
    out = tmp_path / "fail.jsonl"
    counters = asyncio.run(_run(flaky, problems, out, retries=0))
    meta = read_meta(meta_path_for(out))
    assert len(meta) == 8 and counters.failed > 0 and counters.done + counters.failed == 8
    failed = [m["problem_id"] for m in meta if m["status"] == "failed"]
    assert len(failed) == counters.failed == counters.failure_reasons["RuntimeError"]
    assert all(m["reason"] == "RuntimeError: injected fault" for m in meta if m["status"] != "ok")
    # Resuming retries exactly the failed problems; with a healthy backend they all pass.
    counters = asyncio.run(_run(backend, problems, out))
    assert counters.skipped == 8 - len(failed) and counters.retried == len(failed)
    assert counters.done == len(failed) and counters.failed == 0
    last = {m["problem_id"]: m["status"] for m in read_meta(meta_path_for(out))}
    assert last == {p.id: "ok" for p in problems}


class OutageBackend:
    """Refuses every request (as a stopped server) from its `start`-th request for `seconds`."""

    def __init__(self, inner, start, seconds):
        self.inner, self.tokenizer = inner, inner.tokenizer
        self.start, self.seconds = start, seconds
        self.calls, self.refused, self.down_at = 0, 0, None

    async def sample(self, prompt_ids, n, params):
        self.calls += 1
        if self.calls >= self.start and self.down_at is None:
            self.down_at = time.monotonic()
        if self.down_at is not None and time.monotonic() - self.down_at < self.seconds:
            self.refused += 1
            raise BackendUnavailableError("connection refused (injected)")
        return await self.inner.sample(prompt_ids, n, params)

    async def aclose(self):
        pass


@pytest.mark.slow
def test_an_outage_is_waited_for_and_no_problem_fails(backend, tmp_path):
    problems = arith_problems(6, seed=4)
    down = OutageBackend(backend, start=4, seconds=3)  # during the 6 root requests
    counters = asyncio.run(_run(down, problems, tmp_path / "o.jsonl", retries=0))
    assert down.refused > 0 and counters.outages == 1
    assert counters.failed == 0 and counters.done == 6
    # Requests during the outage wait for one prober instead of all hammering the server.
    assert down.refused < 8 + 8  # the in-flight ones once, plus the probes (backoff 0.5, 1, 2)


def test_an_outage_longer_than_the_patience_stops_the_run_resumably(backend, tmp_path):
    problems = arith_problems(6, seed=5)
    down = OutageBackend(backend, start=3, seconds=60)
    out = tmp_path / "g.jsonl"
    with pytest.raises(ServerGoneError, match="has not answered for 1 s"):
        asyncio.run(_run(down, problems, out, retries=0, patience=1.0))
    committed = read_meta(meta_path_for(out)) if meta_path_for(out).exists() else []
    assert all(m["status"] == "ok" for m in committed)  # nothing recorded as failed


class PoisonBackend:
    """A healthy server that answers HTTP 500 to the requests of one prompt (a request the
    server chokes on), and whose health check can be switched off (an outage)."""

    def __init__(self, inner, poison_prompt):
        self.inner, self.tokenizer = inner, inner.tokenizer
        self.poison = poison_prompt
        self.up = True
        self.health_checks = 0
        self.calls_while_down = 0

    async def health(self):
        self.health_checks += 1
        return self.up

    async def sample(self, prompt_ids, n, params):
        if not self.up:
            self.calls_while_down += 1
            raise ConnectionError("HTTP 502 from the proxy")
        if list(prompt_ids[: len(self.poison)]) == self.poison:
            raise ConnectionError("HTTP 500: internal server error")
        return await self.inner.sample(prompt_ids, n, params)

    async def aclose(self):
        pass


def test_a_healthy_server_failing_one_request_fails_that_problem_only(backend, tmp_path):
    from amcs.prompts import prompt_ids

    problems = arith_problems(4, seed=7)
    poison = PoisonBackend(backend, prompt_ids(backend.tokenizer, problems[1].question))
    counters = asyncio.run(_run(poison, problems, tmp_path / "p.jsonl", retries=1))
    assert counters.failed == 1 and counters.done == 3 and counters.outages == 0
    meta = {m["problem_id"]: m for m in read_meta(meta_path_for(tmp_path / "p.jsonl"))}
    assert meta[problems[1].id]["reason"] == "ConnectionError: HTTP 500: internal server error"
    assert poison.health_checks == 2  # asked once per failed attempt: healthy, so not an outage


@pytest.mark.slow
def test_an_outage_is_probed_with_the_health_check(backend, tmp_path):
    problems = arith_problems(3, seed=8)
    poison = PoisonBackend(backend, [-1])
    inner_sample = poison.sample

    async def sample(prompt_ids, n, params):
        poison.calls = getattr(poison, "calls", 0) + 1
        if poison.calls == 2:  # the server goes away for 3 s after its first answer
            poison.up = False
            asyncio.get_running_loop().call_later(3, setattr, poison, "up", True)
        return await inner_sample(prompt_ids, n, params)

    poison.sample = sample
    counters = asyncio.run(_run(poison, problems, tmp_path / "h.jsonl", retries=0))
    assert counters.failed == 0 and counters.done == 3 and counters.outages == 1
    # The requests in flight fail once each; after that only health checks probe the server.
    assert 1 <= poison.calls_while_down <= 3 and poison.health_checks >= 2


class MisconfiguredBackend:
    def __init__(self, inner):
        self.inner, self.tokenizer = inner, inner.tokenizer

    async def sample(self, prompt_ids, n, params):
        raise BackendConfigError("the server does not serve model 'x' (it serves: tiny)")

    async def aclose(self):
        pass


def test_a_configuration_error_stops_the_run_without_failed_problems(backend, tmp_path):
    out = tmp_path / "c.jsonl"
    with pytest.raises(BackendConfigError, match="does not serve model"):
        asyncio.run(_run(MisconfiguredBackend(backend), arith_problems(4, seed=6), out))
    assert not out.exists() and not meta_path_for(out).exists()


def _default_sigint() -> None:
    # A shell starts background jobs with SIGINT ignored, and a child inherits that; Python then
    # leaves Ctrl-C ignored. Give the run the terminal's default, as a user's shell would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(*args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "generate", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
        **kw,
    )


def _start_run_of_40(out, committed):
    """Start `amcs generate` on 40 problems; return once `committed` problems are on disk."""
    args = ["--problems", "arith:40", "--out", str(out), "--quiet", "--concurrency", "16"]
    args += [f"--set={k}={v}" for k, v in SMALL.items()]
    proc = _cli(*args)
    meta = meta_path_for(out)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if meta.exists() and meta.read_text().count("\n") >= committed + 1:  # + the header
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"run ended too soon: {proc.communicate()[1][-2000:]}"
    return proc, args, meta


@pytest.mark.slow
def test_kill_and_resume_holds_every_problem_exactly_once(tmp_path):
    out = tmp_path / "data.jsonl"
    proc, args, meta = _start_run_of_40(out, 5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = len(read_meta(meta))
    assert 5 <= done_at_kill < 40

    resumed = _cli(*args)
    _, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr[-3000:]
    records = read_meta(meta)
    ids = [m["problem_id"] for m in records]
    assert sorted(ids) == sorted(f"arith-0-{i}" for i in range(40))  # each exactly once
    lines = out.read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # nothing torn
    per_problem = {}
    for r in read_data(out):
        per_problem[r["problem_id"]] = per_problem.get(r["problem_id"], 0) + 1
    assert all(per_problem.get(m["problem_id"], 0) == m["paths"] for m in records)


@pytest.mark.slow
def test_cli_refuses_a_second_writer_and_an_existing_file(tmp_path):
    out = tmp_path / "d.jsonl"
    with RecordWriter(out):
        proc = _cli("--problems", "arith:2", "--out", str(out), "--quiet")
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2 and "another amcs process is writing" in stderr
    out.write_text('{"a line": "of someone\'s data"}\n')
    proc = _cli("--problems", "arith:2", "--out", str(out), "--no-resume")
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "--overwrite" in stderr


def test_cli_bad_problem_file_stops_before_generation(tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"question": "1+1", "answer": "2"}\n{"question": "oops"\n')
    proc = _cli("--problems", str(bad), "--out", str(tmp_path / "o.jsonl"))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "p.jsonl:2: malformed JSON" in stderr
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.slow
def test_ctrl_c_finishes_writes_and_leaves_a_resumable_file(tmp_path):
    out = tmp_path / "data.jsonl"
    proc, args, meta = _start_run_of_40(out, 3)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "run the same command again to resume" in stderr
    committed = read_meta(meta)
    assert len(out.read_bytes()) == committed[-1]["data_end"]  # nothing half-written
    assert all(json.loads(line) for line in out.read_text().splitlines())
    resumed = _cli(*args)
    _, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr[-3000:]
    assert len(read_meta(meta)) == 40


def _tree_nodes(tree):
    nodes, todo = [], [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        todo.extend(node["children"])
    return nodes


@pytest.mark.slow
@pytest.mark.parametrize("method", ["amcs", "shepherd"])
def test_kept_rollouts_are_the_rollouts_of_each_estimate_and_change_no_label(
    backend, tmp_path, method
):
    problems = arith_problems(3, seed=11)
    plain, kept = tmp_path / "plain.jsonl", tmp_path / "kept.jsonl"
    asyncio.run(_run(backend, problems, plain, method=method))
    asyncio.run(_run(backend, problems, kept, method=method, keep_rollouts=True))
    assert kept.read_bytes() == plain.read_bytes()  # the same labels, byte for byte
    plain_meta = read_meta(meta_path_for(plain))
    assert all("kept_rollouts" not in n for m in plain_meta for n in _tree_nodes(m["tree"]))
    estimated = 0
    for m in read_meta(meta_path_for(kept)):
        assert m["status"] == "ok"
        every = [r for n in _tree_nodes(m["tree"]) for r in n.get("kept_rollouts", [])]
        # Each rollout the problem drew is kept once, on the node it estimated.
        assert len(every) == m["stats"]["rollouts"]
        assert sum(r["tokens"] for r in every) == m["stats"]["tokens"]
        assert sum(r["finish_reason"] == "length" for r in every) == m["stats"]["truncated"]
        for node in _tree_nodes(m["tree"]):
            if not node["rollouts"] or node.get("exact"):
                assert "kept_rollouts" not in node  # never estimated, or a graded solution
                continue
            estimated += 1
            rollouts = node["kept_rollouts"]
            assert len(rollouts) == node["rollouts"]
            right = sum(r["correct"] for r in rollouts)
            assert right / len(rollouts) == pytest.approx(node["mc"], abs=1e-9)
            if node["early_exit"]:
                assert right in (0, len(rollouts))
            for r in rollouts:
                assert set(r) == {"text", "correct", "tokens", "finish_reason", "mean_nll"}
                assert r["tokens"] > 0 and r["text"] and r["mean_nll"] >= 0
                assert r["finish_reason"] in ("stop", "length")
                if r["finish_reason"] == "length":
                    assert not r["correct"]  # a cut rollout counts as wrong
                if r["correct"]:
                    assert "\\boxed{" in r["text"]  # the continuation states the answer
    assert estimated >= len(problems)  # every root at least


def test_each_line_keeps_the_bare_question_and_the_text_the_policy_saw(backend, tmp_path):
    from amcs.prompts import prompt_ids

    problems = arith_problems(2, seed=12)
    out = tmp_path / "p.jsonl"
    asyncio.run(_run(backend, problems, out))
    by_id = {p.id: p for p in problems}
    shown = {
        p.id: backend.tokenizer.decode(prompt_ids(backend.tokenizer, p.question)) for p in problems
    }
    for m in read_meta(meta_path_for(out)):
        assert m["policy_prompt"] == shown[m["problem_id"]]
    lines = list(read_data(out))
    assert lines
    for line in lines:
        question = by_id[line["problem_id"]].question
        assert line["prompt"] == question  # TRL's convention, what train and filter read
        assert line["policy_prompt"] == shown[line["problem_id"]] != question
        assert line["policy_prompt"].startswith(question)  # the tiny policy's plain template
