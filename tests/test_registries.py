"""Backends, search methods and verification strategies as registries with traits: an entry added
by one registry line is known to every command, and the commands read its traits, not its name."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from amcs.backends import BACKENDS, make_backend, register_backend
from amcs.search import METHODS, make_config, register_method
from amcs.search.methods import TREE_SEARCH
from amcs.verification import STRATEGIES, register_strategy
from amcs.verification.base import Candidate, StrategyResult, final_answer
from amcs.verification.context import Run, VerifyContext
from cli.main import app

runner = CliRunner()


def test_the_built_in_entries_and_their_traits():
    assert list(BACKENDS) == ["hf", "sglang", "sglang-http", "openai"]
    needs_url = [name for name, spec in BACKENDS.items() if spec.needs_url]
    in_process = [name for name, spec in BACKENDS.items() if spec.in_process]
    assert (needs_url, in_process) == (["sglang-http", "openai"], ["hf", "sglang"])
    assert BACKENDS["openai"].one_url and BACKENDS["openai"].takes("served_model")
    assert BACKENDS["sglang"].package == "sglang"
    assert list(METHODS) == ["amcs", "omegaprm", "shepherd"]
    assert make_config("omegaprm").selection == "sum" and make_config("shepherd").k == 8
    assert list(STRATEGIES) == ["greedy", "majority", "best-of-n", "weighted-vote", "beam", "mcts"]
    traits = {n: (s.needs_prm, s.rescoring, s.budgeted) for n, s in STRATEGIES.items()}
    assert traits == {
        "greedy": (False, False, False),
        "majority": (False, False, True),
        "best-of-n": (True, True, True),
        "weighted-vote": (True, True, True),
        "beam": (True, False, True),
        "mcts": (True, False, True),
    }
    with pytest.raises(ValueError, match="rescoring needs needs_prm"):
        register_strategy("broken", STRATEGIES["greedy"].run, rescoring=True)
    with pytest.raises(ValueError, match="a strategy named 'greedy' is already registered"):
        register_strategy("greedy", STRATEGIES["majority"].run)


# --- a backend --------------------------------------------------------------------------------


@pytest.fixture
def extra_backends():
    added = []

    def add(name, build, **traits):
        added.append(name)
        return register_backend(name, build, **traits)

    yield add
    for name in added:
        BACKENDS.unregister(name)


def test_a_new_backend_is_checked_by_its_traits(extra_backends, tmp_path):
    built = []

    def build(model, options):
        built.append((model, dict(options)))
        raise ValueError("built")

    extra_backends("remote", build, needs_url=True, one_url=True)
    extra_backends("exotic", build, package="no_such_package_xyz", install_hint="pip install xyz")
    out = ["--out", str(tmp_path / "x.jsonl")]
    r = runner.invoke(app, ["generate", "--backend", "remote", *out])
    assert r.exit_code == 2 and "the remote backend needs a server URL: pass --url" in r.output
    r = runner.invoke(app, ["generate", "--backend", "exotic", *out])
    assert r.exit_code == 2 and r.output.strip().endswith("error: pip install xyz")
    r = runner.invoke(app, ["generate", "--backend", "nope", *out])
    assert r.exit_code == 2
    assert "unknown --backend 'nope'; choose one of hf, sglang, sglang-http, openai, remote" in (
        r.output
    )
    # make_backend hands the build function the URLs as a list, and its own options
    with pytest.raises(ValueError, match="built"):
        make_backend("remote", "tok", url="http://127.0.0.1:9", timeout=5)
    assert built == [("tok", {"urls": ["http://127.0.0.1:9"], "timeout": 5})]
    with pytest.raises(ValueError, match="the remote backend takes exactly one --url"):
        make_backend("remote", "tok", urls=["http://a", "http://b"])
    with pytest.raises(ValueError, match="is for the openai backend, not remote"):
        make_backend("remote", "tok", url="http://a", served_model="x")


def test_a_new_in_process_backend_runs_generate(extra_backends, tmp_path):
    from amcs.backends.hf import HFBackend

    sizes = []

    def small_batches(model, options):
        sizes.append(options["max_batch_size"])
        return HFBackend(model, **options)

    extra_backends(
        "hf-small",
        small_batches,
        in_process=True,
        options={"max_batch_size": "max_batch_size", "deterministic": "deterministic"},
    )
    out = tmp_path / "run.jsonl"
    args = ["generate", "--backend", "hf-small", "--max-batch-size", "3", "--problems", "arith:1"]
    r = runner.invoke(app, [*args, "--set", "max_new_tokens=40", "-q", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert sizes == [3]
    (meta,) = [json.loads(x) for x in out.with_suffix(".meta.jsonl").read_text().splitlines()[1:]]
    assert meta["status"] == "ok" and meta["stats"]["rollouts"] > 0
    r = runner.invoke(app, [*args, "--model", "no/such/dir", "--out", str(tmp_path / "y.jsonl")])
    assert r.exit_code == 2 and "--model no/such/dir: no such model directory" in r.output


# --- a search method ----------------------------------------------------------------------------


def test_a_new_search_method_is_a_preset_every_command_knows(tmp_path):
    register_method("amcs-k4", TREE_SEARCH, {"k0": 4, "k_max_node": 8})
    try:
        config = make_config("amcs-k4", k0=5)
        assert (config.method, config.k0, config.k_max_node) == ("amcs-k4", 5, 8)
        out = tmp_path / "run.jsonl"
        r = runner.invoke(
            app,
            ["generate", "--method", "amcs-k4", "--problems", "arith:1", "-q", "--out", str(out)]
            + ["--set", "max_new_tokens=40", "--set", "min_root_mc=0"],
        )
        assert r.exit_code == 0, r.output
        meta = [json.loads(x) for x in out.with_suffix(".meta.jsonl").read_text().splitlines()]
        assert meta[0]["fingerprint"]["method"] == "amcs-k4"
        assert meta[1]["tree"]["rollouts"] == 4  # the preset's k0 (root all right or all wrong)
        register_method("bad", TREE_SEARCH, {"k00": 1})
        with pytest.raises(ValueError, match="method bad's preset sets unknown parameter"):
            make_config("bad")
    finally:
        METHODS.unregister("amcs-k4")
        METHODS.unregister("bad")


# --- a verification strategy --------------------------------------------------------------------


async def shortest_of_n(ctx: VerifyContext, question: str, n: int | None = None) -> StrategyResult:
    """n samples; the shortest one that states an answer wins. No PRM."""
    run = Run(ctx, "shortest-of-n", question, n)
    rollouts = await run.sample([], run.config.n)
    candidates = [
        Candidate(r.text, final_answer(r.text, not r.truncated), None, [], not r.truncated)
        for r in rollouts
    ]
    answered = [i for i, c in enumerate(candidates) if c.answer is not None]
    chosen = min(answered, key=lambda i: rollouts[i].num_tokens) if answered else None
    return run.result(candidates, chosen)


def test_a_new_strategy_runs_in_eval_without_a_prm(tmp_path):
    register_strategy("shortest-of-n", shortest_of_n)
    try:
        out = tmp_path / "eval"
        r = runner.invoke(
            app,
            ["eval", "--strategies", "shortest-of-n,greedy", "--n", "1,3", "--no-baseline"]
            + ["--problems", "arith-heldout:2", "--prm", "/no/such/prm", "--out", str(out)]
            + ["-q", "--set", "max_new_tokens=80"],
        )
        # no strategy needs a PRM: the missing one is never loaded
        assert r.exit_code == 0, r.output
        results = json.loads((out / "results.json").read_text())
        cells = [(row["strategy"], row["n"]) for row in results["results"]]
        assert cells == [("shortest-of-n", 1), ("shortest-of-n", 3), ("greedy", 1)]
        assert results["settings"]["prm"] is None
        records = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
        for record in records:
            if record["strategy"] == "shortest-of-n":
                assert len(record["candidates"]) == record["n"]
    finally:
        STRATEGIES.unregister("shortest-of-n")
