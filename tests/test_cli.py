"""The command line as a user meets it."""

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from amcs.records import RecordWriter
from cli.main import app

runner = CliRunner()


def test_help_lists_the_commands_that_exist():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("generate", "export", "problems"):
        assert command in result.output
    gen = runner.invoke(app, ["generate", "--help"])
    assert gen.exit_code == 0 and "--recipe" in gen.output and "--shard" in gen.output


def test_export_formats(tmp_path):
    data = tmp_path / "d.jsonl"
    with RecordWriter(data) as w:
        path = {
            "completions": ["1 + 1 = 2", "The answer is \\boxed{3}."],
            "labels": [True, False],
            "values": [1.0, 0.0],
            "rollouts": [6, 1],
            "method": "amcs",
            "model": "tiny",
        }
        tree = {"text": "", "mc": 0.5, "rollouts": 6, "children": []}
        w.write_problem("p1", "What is 1 + 1?", "2", [path], tree=tree)
    out = tmp_path / "o.jsonl"
    assert runner.invoke(app, ["export", str(data), "-f", "trl", "-o", str(out)]).exit_code == 0
    assert json.loads(out.read_text()) == {
        "prompt": "What is 1 + 1?",
        "completions": path["completions"],
        "labels": [True, False],
    }
    assert (
        runner.invoke(app, ["export", str(data), "-f", "shepherd", "-o", str(out)]).exit_code == 0
    )
    assert json.loads(out.read_text())["label"].endswith("Step 2: The answer is \\boxed{3}. -")
    assert runner.invoke(app, ["export", str(data), "-f", "tree", "-o", str(out)]).exit_code == 0
    assert json.loads(out.read_text())["reasoning_steps"]["mc_value"] == 0.5
    bad = runner.invoke(app, ["export", str(data), "-f", "csv", "-o", str(out)])
    assert bad.exit_code == 2 and "unknown export format" in bad.output


def test_generate_rejects_bad_options_before_loading_a_model(tmp_path):
    out = tmp_path / "x.jsonl"
    r = runner.invoke(app, ["generate", "--method", "magic", "--out", str(out)])
    assert r.exit_code == 2 and "unknown method 'magic'" in r.output
    r = runner.invoke(app, ["generate", "--set", "k0", "--out", str(out)])
    assert r.exit_code == 2 and "KEY=VALUE" in r.output
    r = runner.invoke(app, ["generate", "--set", "nonsense=1", "--out", str(out)])
    assert r.exit_code == 2 and "unknown search parameter" in r.output
    r = runner.invoke(app, ["generate", "--shard", "3/2", "--out", str(out)])
    assert r.exit_code == 2
    recipe = tmp_path / "r.yaml"
    recipe.write_text("problems: arith:3\nbogus: 1\n")
    r = runner.invoke(app, ["generate", "--recipe", str(recipe), "--out", str(out)])
    assert r.exit_code == 2 and "bogus" in r.output
    assert not out.exists()


RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_recipes_are_valid():
    from amcs.evaluation import EvalConfig
    from amcs.generation import GenerateConfig
    from amcs.recipes import load_recipe
    from amcs.verification import make_verify_config

    for path in sorted(RECIPES.glob("*/generate*.yaml")):
        config = GenerateConfig(**load_recipe(path))  # an unknown key is a TypeError
        config.search_config()
        assert config.search and config.search_config().k0 == config.search.get("k0", 6)
    for path in sorted(RECIPES.glob("*/eval*.yaml")):
        config = EvalConfig(**load_recipe(path))
        assert config.budgets and make_verify_config(**config.verify).temperature == 0.7


@pytest.mark.slow
def test_tiny_recipe_runs_end_to_end_with_command_line_overrides(tmp_path):
    out = tmp_path / "r.jsonl"
    recipe = RECIPES / "tiny-arith" / "generate.yaml"
    result = runner.invoke(
        app, ["generate", "--recipe", str(recipe), "--limit", "3", "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines and all(r["method"] == "amcs" for r in lines)
    assert len({r["problem_id"] for r in lines}) <= 3


def test_prompt_format_options(tmp_path):
    out = tmp_path / "p.jsonl"
    r = runner.invoke(
        app, ["generate", "--prompt-format", "chat", "--problems", "arith:2", "--out", str(out)]
    )
    assert r.exit_code == 2 and "has no chat template" in r.output
    r = runner.invoke(
        app,
        [
            "generate",
            "--prompt-format",
            "plain",
            "--problems",
            "arith:2",
            "--out",
            str(out),
            "-q",
            "--set",
            "max_new_tokens=100",
            "--set",
            "rollout_budget=20",
        ],
    )
    assert r.exit_code == 0, r.output


@pytest.mark.slow
def test_train_command_trains_and_saves_a_prm(tmp_path):
    data = tmp_path / "d.jsonl"
    gen = runner.invoke(
        app,
        [
            "generate",
            "--problems",
            "arith:8",
            "--out",
            str(data),
            "-q",
            "--set",
            "max_new_tokens=100",
        ],
    )
    assert gen.exit_code == 0, gen.output
    out = tmp_path / "prm"
    r = runner.invoke(
        app, ["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--lr", "0.003"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads((out / "amcs_prm.json").read_text())["separator"] == "\n\n"
    assert (out / "model.safetensors").exists()
    bad = runner.invoke(app, ["train", "--out", str(out)])
    assert bad.exit_code == 2 and "no training data" in bad.output


def test_train_recipes_are_valid():
    """Every bundled train recipe builds a config, with canonical field names only (the old
    aliases are for users' recipes)."""
    from amcs.recipes import load_recipe
    from amcs.training.config import PRMTrainingConfig, make_training_config
    from cli.train import COMMAND_DEFAULTS

    fields = PRMTrainingConfig.__dataclass_fields__
    for path in sorted(RECIPES.glob("*/train.yaml")):
        recipe = load_recipe(path)
        settings = {k: v for k, v in recipe.items() if k not in COMMAND_DEFAULTS}
        assert set(settings) <= set(fields), path
        make_training_config(settings)


def _warnings(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("warning: ")]


def test_generate_warnings_point_at_the_fix_and_keep_rollouts_may_be_toggled_on_resume(tmp_path):
    from amcs.records import meta_path_for, read_meta

    out = tmp_path / "cut.jsonl"
    args = ["generate", "--out", str(out), "-q", "--set", "max_new_tokens=8"]
    r = runner.invoke(app, [*args, "--problems", "arith:2"])
    assert r.exit_code == 0, r.output
    meta = read_meta(meta_path_for(out))
    cut = sum(m["stats"]["truncated"] for m in meta)
    rollouts = sum(m["stats"]["rollouts"] for m in meta)
    assert cut > rollouts / 2  # 8 tokens hold no tiny-policy solution
    warnings = _warnings(r.output)
    assert len(warnings) == 2, r.output
    assert 'no "-" labels' in warnings[0] and "root MC 0 on 2 of 2 problems" in warnings[0]
    assert f"{cut} of {rollouts} rollouts" in warnings[1]
    assert "max_new_tokens=8" in warnings[1] and "--set max_new_tokens=512" in warnings[1]
    assert all("policy_prompt" in m and "kept_rollouts" not in m["tree"] for m in meta)

    # --keep-rollouts is no part of the run's identity: resuming with it is accepted, and only
    # the problems searched now keep their rollouts.
    r = runner.invoke(app, [*args, "--problems", "arith:3", "--keep-rollouts"])
    assert r.exit_code == 0, r.output
    meta = read_meta(meta_path_for(out))
    assert [("kept_rollouts" in m["tree"]) for m in meta] == [False, False, True]
    kept = meta[2]["tree"]["kept_rollouts"]
    assert len(kept) == meta[2]["tree"]["rollouts"] > 0
    assert all(x["finish_reason"] == "length" and not x["correct"] for x in kept)
    assert "root MC 0 on 3 of 3 problems" in _warnings(r.output)[0]  # the whole file counts
    # A recipe's keep_rollouts must be a boolean.
    recipe = tmp_path / "r.yaml"
    recipe.write_text("keep_rollouts: sometimes\n")
    r = runner.invoke(app, ["generate", "--recipe", str(recipe), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--keep-rollouts must be true or false" in r.output


def test_screening_and_all_right_problems_are_named_as_causes():
    from amcs.search import make_config
    from cli.progress import run_warnings

    def record(root_mc, screened=0, status="ok"):
        stats = {"rollouts": 6, "truncated": 0, "labels_negative": 0, "screened": screened}
        return {"status": status, "stats": stats, "tree": {"mc": root_mc}}

    config = make_config("amcs", min_root_mc=0.4)
    records = [record(0.0), record(1 / 6, screened=1), record(1.0), record(1.0)]
    (warning,) = run_warnings(records, config, "d.jsonl")
    assert warning.startswith('no "-" labels in d.jsonl')
    assert "root MC 0 on 1 of 4 problems" in warning
    assert "1 of 4 screened out with root MC below min_root_mc=0.4" in warning
    assert "--set min_root_mc=0" in warning and "root MC 1 on 2 of 4" in warning
    # One "-" label anywhere, or nothing finished ok: nothing to say.
    records[2]["stats"]["labels_negative"] = 1
    assert run_warnings(records, config, "d.jsonl") == []
    assert run_warnings([record(0.0, status="failed")], config, "d.jsonl") == []
    # Truncation: more than half of the rollouts, not half.
    half = [record(0.5) | {"stats": {"rollouts": 6, "truncated": 3, "labels_negative": 1}}]
    assert run_warnings(half, config, "d.jsonl") == []
    half[0]["stats"]["truncated"] = 4
    (warning,) = run_warnings(half, config, "d.jsonl")
    assert "4 of 6 rollouts (67%) were cut at max_new_tokens=512" in warning
    assert "--set max_new_tokens=1024" in warning


def test_train_warns_when_the_rows_hold_one_label_class(tmp_path):
    from cli.train import one_class_warning

    rows = [
        {"prompt": "q", "completions": ["a", "b"], "labels": [True, False], "values": [0.5, 0.0]}
    ]
    assert one_class_warning(rows, 0.0) is None
    # At threshold 0.6 the 0.5 step is "-" too: only "-" labels.
    warning = one_class_warning(rows, 0.6)
    assert warning.startswith('the training rows hold only "-" labels (2 steps at threshold 0.6')
    assert "never sees a right step" in warning

    data = tmp_path / "plus.jsonl"
    data.write_text(
        json.dumps({"prompt": "What is 1 + 1?", "completions": ["1 + 1 = 2"], "labels": [True]})
        + "\n"
    )
    r = runner.invoke(
        app, ["train", "--data", str(data), "--out", str(tmp_path / "prm"), "--max-steps", "1"]
    )
    assert r.exit_code == 0, r.output  # a warning, not an error
    (warning,) = _warnings(r.output)
    assert 'only "+" labels (1 step at threshold 0, no "-")' in warning
    assert "never sees a wrong step" in warning


def test_resume_says_whether_the_file_will_be_byte_identical(tmp_path):
    """Every meta line records how its problem was decoded; resuming says plainly whether the
    result equals an uninterrupted run (deterministic decoding then and now) or is a valid
    continuation, and --deterministic is refused with a server backend."""
    from amcs.records import meta_path_for, read_meta

    out = tmp_path / "d.jsonl"
    args = ["generate", "--out", str(out), "-q", "--set", "max_new_tokens=8"]
    r = runner.invoke(app, [*args, "--problems", "arith:1"])
    assert r.exit_code == 0, r.output
    assert "resuming" not in r.output  # a fresh run
    r = runner.invoke(app, [*args, "--problems", "arith:2", "--deterministic"])
    assert r.exit_code == 0, r.output
    assert "after 1 committed problem(s): deterministic decoding then and now" in r.output
    assert "byte for byte" in r.output
    r = runner.invoke(app, [*args, "--problems", "arith:3", "--no-deterministic"])
    assert r.exit_code == 0, r.output
    assert "after 2 committed problem(s): a valid continuation" in r.output
    assert "this session's backend batches rollouts as it pleases" in r.output
    decodings = [m["decoding"] for m in read_meta(meta_path_for(out))]
    assert decodings == ["deterministic", "deterministic", "batched"]
    r = runner.invoke(app, [*args, "--problems", "arith:4", "--deterministic"])
    assert "earlier sessions decoded in plain batches" in r.output
    bad = runner.invoke(
        app, [*args, "--backend", "openai", "--url", "http://127.0.0.1:9", "--deterministic"]
    )
    assert bad.exit_code == 2 and "--deterministic needs the hf backend" in bad.output


# --- one meaning per --set key and per scorer name, in every command (issue 22) -----------------


@pytest.mark.parametrize(
    ("command", "setting", "words"),
    [
        (["generate", "--problems", "arith:1"], "temperature=abc", "temperature must be a number"),
        (["generate", "--problems", "arith:1"], "top_k=-5", "top_k must be an integer >= 0"),
        (["eval", "--problems", "arith-heldout:1"], "temperature=abc", "temperature must be a"),
        (["eval", "--problems", "arith-heldout:1"], "top_k=-5", "top_k must be an integer >= 0"),
        (
            ["eval", "--problems", "arith-heldout:1"],
            "aggregation=max",
            "aggregation must be one of",
        ),
        (["eval", "--problems", "arith-heldout:1"], "nosuch=1", "unknown strategy parameter(s)"),
        (["eval", "steps"], "temperature=abc", "temperature must be a number >= 0, got 'abc'"),
        (["eval", "steps"], "threshold=1.5", "threshold must be a number in [0, 1], got 1.5"),
        (["eval", "steps"], "prm_batch_size=-5", "prm_batch_size must be an integer >= 1"),
        (["eval", "steps"], "nosuch=1", "unknown --set key(s) nosuch"),
        (["filter", "amcs-data.jsonl"], "threshold=abc", "threshold must be a number in [0, 1]"),
        (["filter", "amcs-data.jsonl"], "batch_size=-5", "batch_size must be an integer >= 1"),
        (["filter", "amcs-data.jsonl"], "mode=drop", "mode must be one of keep, mark"),
        (["filter", "amcs-data.jsonl"], "nosuch=1", "unknown --set key(s) nosuch"),
        (["train"], "learning_rate=abc", "learning_rate"),
        (["train"], "lora_r=-1", "lora_r"),
    ],
)
def test_a_bad_set_value_is_one_line_naming_the_key(tmp_path, command, setting, words):
    out = tmp_path / ("out.jsonl" if command[0] == "generate" else "out")
    result = runner.invoke(app, [*command, "--set", setting, "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.output
    assert setting.split("=")[0] in lines[0]
    assert not out.exists()  # refused before anything was written


def test_scorer_names_mean_the_same_in_every_command():
    from amcs.assets import TINY_PRM
    from amcs.prm import load_scorer
    from amcs.prm.names import ScorerError, scorer_location
    from amcs.verification import DomainOracleScorer

    oracle = load_scorer("arith-oracle")
    assert isinstance(oracle, DomainOracleScorer) and oracle.domain.name == "arith"
    right_then_wrong = ["3 * 4 = 12", "2 + 12 = 15"]
    assert asyncio.run(oracle.score("What is 2 + 3 * 4?", right_then_wrong)) == [1.0, 0.0]
    bundled = load_scorer("tiny-prm")
    assert bundled.prm_format == "token-cls"
    # The name and the directory are one PRM: the same scores for the same steps.
    steps = [("What is 2 + 3?", ["2 + 3 = 5", "\\boxed{5}"]), ("1+1", ["1 + 1 = 3"])]
    assert bundled.score_batch(steps) == load_scorer(str(TINY_PRM)).score_batch(steps)
    assert bundled.score_batch(steps) == load_scorer(None).score_batch(steps)
    with pytest.raises(ScorerError, match=r"cannot load the PRM no-such-prm: .*tiny-prm"):
        load_scorer("no-such-prm")
    with pytest.raises(ScorerError, match="policy-confidence reads the policy's probabilities"):
        load_scorer("policy-confidence:/no/such/model")
    # Built-in names are no files that an output could overwrite; a directory is.
    assert [scorer_location(s) for s in ("tiny-prm", "arith-oracle", "policy-confidence")] == [
        None
    ] * 3
    assert scorer_location(str(TINY_PRM)) == TINY_PRM


@pytest.mark.slow
def test_eval_and_eval_steps_take_tiny_prm_as_filter_does(tmp_path):
    from amcs.assets import TINY_PRM

    out = tmp_path / "eval"
    args = ["eval", "--problems", "arith-heldout:2", "--strategies", "best-of-n", "--n", "2"]
    result = runner.invoke(app, [*args, "--prm", "tiny-prm", "--no-baseline", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "results.json").read_text())["results"]
    assert [(r["strategy"], r["n"]) for r in rows] == [("best-of-n", 2)]
    reports = []
    for prm in ("tiny-prm", str(TINY_PRM)):
        report = tmp_path / f"steps-{len(reports)}.json"
        args = ["eval", "steps", "--prm", prm, "--data", "arith-heldout:16", "--out", str(report)]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        reports.append(json.loads(report.read_text()))
    # One PRM under two names: the same predictions at every threshold of the sweep.
    assert reports[0]["prm"] == "tiny-prm" and reports[0]["n"] == 16
    assert reports[0]["n_erroneous"] > 0 and reports[0]["n_correct"] > 0
    assert reports[0]["sweep"] == reports[1]["sweep"] and reports[0]["f1"] == reports[1]["f1"]


# --- the library and the command line are one stage (issue 22) ---------------------------------

SMALL_SEARCH = {"k0": 2, "k_max_node": 4, "max_search_count": 2, "max_new_tokens": 60}


def _python_generate(out: Path, limit: int, **options):
    from amcs import generation

    config = generation.GenerateConfig(
        problems="arith:6", limit=limit, out=out, search=SMALL_SEARCH, concurrency=4, **options
    )
    return generation.run(config)


def _cli_generate(out: Path, limit: int) -> None:
    sets = [part for key, value in SMALL_SEARCH.items() for part in ("--set", f"{key}={value}")]
    args = ["--problems", "arith:6", "--limit", str(limit), "--concurrency", "4", "--quiet"]
    result = runner.invoke(app, ["generate", *args, *sets, "--out", str(out)])
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_a_run_started_from_python_resumes_from_the_cli_and_back(tmp_path):
    from amcs.problems import load_problems
    from amcs.records import OutputError, meta_path_for, read_meta

    first_four = [p.id for p in load_problems("arith:6", limit=4)]
    finished = {}
    for start, resume in ((_python_generate, _cli_generate), (_cli_generate, _python_generate)):
        out = tmp_path / f"{start.__name__}.jsonl"
        start(out, 2)
        data, meta = out.read_bytes(), meta_path_for(out).read_bytes()
        assert [m["problem_id"] for m in read_meta(meta_path_for(out))] == first_four[:2]
        resume(out, 4)
        # The other side resumed the run: the first two problems' bytes untouched, two added
        # (a problem may add no path to the data file; every problem has its meta line).
        assert out.read_bytes().startswith(data)
        assert meta_path_for(out).read_bytes().startswith(meta)
        assert [m["problem_id"] for m in read_meta(meta_path_for(out))] == first_four
        finished[start.__name__] = out.read_bytes()
    # Same inputs, deterministic decoding: both ways write the same data.
    assert finished["_python_generate"] == finished["_cli_generate"]
    # The fingerprint is checked, not only written: another seed is another run.
    with pytest.raises(OutputError, match="seed"):
        _python_generate(tmp_path / "_cli_generate.jsonl", 4, seed=1)


@pytest.mark.parametrize(
    ("command", "module"),
    [(["generate"], "cli.generate"), (["eval"], "cli.eval"), (["filter"], "cli.filter")],
)
def test_every_flag_takes_its_help_and_default_from_the_config_field(command, module):
    import dataclasses
    import importlib

    from cli.common import flag_help

    cli_module = importlib.import_module(module)
    config_class = {
        "cli.generate": "GenerateConfig",
        "cli.eval": "EvalConfig",
        "cli.filter": "FilterConfig",
    }[module]
    config_class = getattr(cli_module, config_class)
    shown = " ".join(runner.invoke(app, [*command, "--help"]).output.split())
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    for name in cli_module.FLAGS:
        text = " ".join(flag_help(config_class, name).split())
        assert text.split(" [default")[0][:40] in shown, name
        default = fields[name].default
        if default is not None and not isinstance(default, bool) and name != "data":
            assert f"[default: {default}]" in flag_help(config_class, name), name


@pytest.mark.slow
def test_an_evaluation_started_from_python_is_finished_by_the_cli(tmp_path):
    from amcs import evaluation

    out = tmp_path / "eval"
    options = {"problems": "arith-heldout:2", "strategies": "greedy,best-of-n", "n": "2"}
    result = evaluation.run(
        evaluation.EvalConfig(**options, prm="arith-oracle", baseline=False, out=str(out))
    )
    assert [(r["strategy"], r["n"]) for r in result.rows] == [("greedy", 1), ("best-of-n", 2)]
    records = (out / "records.jsonl").read_bytes()
    assert len(records.splitlines()) == 4  # 2 cells x 2 problems
    args = [f"--{key}={value}" for key, value in options.items()]
    cli = runner.invoke(
        app, ["eval", *args, "--prm", "arith-oracle", "--no-baseline", "--out", str(out), "-q"]
    )
    assert cli.exit_code == 0, cli.output
    # Every run was already recorded: the CLI reran none and reports the same table.
    assert (out / "records.jsonl").read_bytes() == records
    assert json.loads((out / "results.json").read_text())["results"] == result.rows
