"""Steps that fit any model: separator escapes, no empty step, the line-based rules
(min_step_chars, max_solution_steps) on real tokenizers, and the separator read back by train and
eval from what generate and train recorded."""

import json

import pytest
from typer.testing import CliRunner

from amcs.fields import ConfigError
from amcs.records import RecordWriter, meta_path_for, recorded_search, run_fingerprint
from amcs.search import make_config
from amcs.steps import (
    DEFAULT_SEPARATOR,
    StepSplitter,
    decode_escapes,
    group_pieces,
    parse_separator,
    split_steps,
)
from amcs.verification import VerifyConfig, make_verify_config
from cli.main import app

runner = CliRunner()

# How SmolLM2-135M-Instruct writes a solution: an intro, a numbered list with single newlines,
# a blank line, a heading on its own line, and the answer.
SMOLLM2_STYLE = (
    "To find the total, follow these steps:\n"
    "1. Tom starts with 3 apples.\n"
    "2. He buys 5 more, so 3 + 5 = 8.\n"
    "\n"
    "Step 3:\n"
    "Check: 8 - 5 = 3.\n"
    "\n"
    "The answer is 8."
)
SMOLLM2_STEPS = [
    "To find the total, follow these steps:",
    "1. Tom starts with 3 apples.",
    "2. He buys 5 more, so 3 + 5 = 8.",
    "Step 3:\nCheck: 8 - 5 = 3.",
    "The answer is 8.",
]


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2))


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from transformers import AutoTokenizer

    from amcs.assets import TINY_POLICY

    return AutoTokenizer.from_pretrained(str(TINY_POLICY))


# --- escapes -------------------------------------------------------------------------------


def test_escapes_decode_to_the_same_text_everywhere():
    assert decode_escapes("\\n") == "\n"
    assert decode_escapes("\\n\\n") == DEFAULT_SEPARATOR
    assert decode_escapes("\\t|\\r") == "\t|\r"
    assert decode_escapes("\\\\n") == "\\n"  # an escaped backslash stays a backslash
    assert decode_escapes("\\boxed") == "\\boxed"  # an unknown escape is left alone
    assert decode_escapes("a\\") == "a\\"
    # The search, training and verification configs all read a separator this way.
    assert make_config(separator="\\n").separator == "\n"
    assert make_verify_config(separator="\\n").separator == "\n"
    from amcs.training.config import make_training_config

    assert make_training_config({"separator": "\\n"}).separator == "\n"
    # A separator that is already text is kept (a real newline, "ки").
    assert make_config(separator="\n").separator == "\n"
    assert parse_separator(" ки") == " ки"


@pytest.mark.parametrize("bad", ["", "\x00", "\\n\x1b", 3])
def test_an_empty_or_unprintable_separator_is_refused_naming_the_key(bad):
    with pytest.raises(ConfigError, match="^separator must"):
        parse_separator(bad)
    with pytest.raises(ConfigError, match="^separator must"):
        make_config(separator=bad)
    with pytest.raises(ConfigError, match="^separator must"):
        make_verify_config(separator=bad)
    with pytest.raises(ConfigError, match="^separator must"):
        StepSplitter(None, bad)
    with pytest.raises(ConfigError, match="^separator must be a string, got None"):
        parse_separator(None)


def test_step_rules_are_checked_in_every_config():
    with pytest.raises(ConfigError, match="min_step_chars must be an integer >= 0"):
        make_config(min_step_chars=-1)
    with pytest.raises(ConfigError, match="max_solution_steps must be an integer >= 0"):
        VerifyConfig(max_solution_steps=-2)
    with pytest.raises(ConfigError, match="min_step_chars must be an integer >= 0"):
        VerifyConfig(min_step_chars=1.5)


def test_set_values_keep_their_types_and_whitespace_text_as_typed():
    from cli.common import parse_sets

    got = parse_sets(
        [
            "k0=8",
            "lora_target_modules=[q,v]",
            "top_k=null",
            "garbled_filter=false",
            "separator=\\n",
            "system_prompt= be brief ",
            "title='\"quoted\"'",
        ]
    )
    assert got == {
        "k0": 8,
        "lora_target_modules": ["q", "v"],
        "top_k": None,
        "garbled_filter": False,
        "separator": "\\n",  # decoded by the config that reads it, as a recipe's value is
        "system_prompt": " be brief ",
        "title": '"quoted"',
    }
    # A real newline (what --set separator=$'\n' passes) was null, i.e. "not given", for YAML.
    assert parse_sets(["separator=\n"]) == {"separator": "\n"}
    assert parse_sets(["separator=\n\n"]) == {"separator": DEFAULT_SEPARATOR}
    assert parse_sets(["separator=.\n"]) == {"separator": ".\n"}
    assert parse_sets(["max-new-tokens=96"]) == {"max_new_tokens": 96}


def test_set_without_a_value_or_with_broken_yaml_is_one_line_naming_the_key(tmp_path):
    out = tmp_path / "x.jsonl"
    r = runner.invoke(app, ["generate", "--set", "separator=", "--out", str(out)])
    assert r.exit_code == 2 and "--set separator= has no value" in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = runner.invoke(app, ["generate", "--set", "k0=[1", "--out", str(out)])
    assert r.exit_code == 2 and "--set k0='[1': cannot read the value" in r.output
    r = runner.invoke(app, ["generate", "--set", "separator=\x00", "--out", str(out)])
    assert r.exit_code == 2 and "--set separator='\\x00': cannot read" in r.output
    recipe = tmp_path / "r.yaml"
    recipe.write_text('search:\n  separator: "\\x1b"\n')
    r = runner.invoke(app, ["generate", "--recipe", str(recipe), "--out", str(out)])
    assert r.exit_code == 2 and "separator must be printable text" in r.output
    assert "(in --set or the recipe's search:)" in r.output
    assert not out.exists()


# --- the rules on pieces -------------------------------------------------------------------


def test_group_pieces_rules():
    # Rule 1: a blank piece joins the step before it; leading blanks join the first step.
    assert group_pieces(["a", "", " ", "b"]) == [(0, 3), (3, 4)]
    assert group_pieces(["", "a", "b"]) == [(0, 2), (2, 3)]
    assert group_pieces(["a", "\n"]) == [(0, 2)]
    assert group_pieces(["", "  "]) == []
    # Rule 2: short steps take in the next piece; a short last one joins the one before.
    assert group_pieces(["1.", "First line", "Second line", "ok"], min_step_chars=5) == [
        (0, 2),
        (2, 4),
    ]
    assert group_pieces(["ab", "", "cd", "efgh"], min_step_chars=4) == [(0, 3), (3, 4)]
    assert group_pieces(["42"], min_step_chars=10) == [(0, 1)]  # alone, a short step stays
    # Rule 3: the cap.
    assert group_pieces(["a", "b", "c", "d"], max_solution_steps=2) == [(0, 1), (1, 4)]
    assert group_pieces(["a", "b"], max_solution_steps=2) == [(0, 1), (1, 2)]
    assert group_pieces(["a", "b", "c"], max_solution_steps=1) == [(0, 3)]


def test_text_steps_are_never_empty():
    text = "1 + 2 = 3\n\n\n\n 3 * 4 = 12 \n\nThe answer is 12.\n\n"
    assert split_steps(text) == ["1 + 2 = 3", "3 * 4 = 12", "The answer is 12."]
    assert split_steps(text, "\n") == ["1 + 2 = 3", "3 * 4 = 12", "The answer is 12."]
    assert split_steps("\n\n \n", "\n") == []


def test_numbered_list_text_splits_into_its_items():
    assert split_steps(SMOLLM2_STYLE) == [
        "To find the total, follow these steps:\n1. Tom starts with 3 apples.\n2. He buys 5 "
        "more, so 3 + 5 = 8.",
        "Step 3:\nCheck: 8 - 5 = 3.",
        "The answer is 8.",
    ]  # the default "\n\n" makes a list one step
    assert split_steps(SMOLLM2_STYLE, "\n", min_step_chars=8) == SMOLLM2_STEPS
    assert split_steps(SMOLLM2_STYLE, "\n", min_step_chars=8, max_solution_steps=3) == [
        *SMOLLM2_STEPS[:2],
        "2. He buys 5 more, so 3 + 5 = 8.\n\nStep 3:\nCheck: 8 - 5 = 3.\n\nThe answer is 8.",
    ]


# --- the token splitter on real tokenizers -------------------------------------------------


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_smollm2_blank_lines_merge_into_the_step_before_on_ids(smollm2_tokenizer):
    tok = smollm2_tokenizer
    text = "3 + 4 = 7.\n\n7 * 2 = 14.\n\n\nThe answer is 14.\n"
    ids = _ids(tok, text)
    splitter = StepSplitter(tok, "\n")
    pieces = splitter.pieces(ids)
    # SmolLM2 writes these blank lines as "\n" "\n" and "\n\n" "\n": each blank line is a piece
    assert [tok.decode(p) for p in pieces if not tok.decode(p).strip()] == ["\n", "\n"]
    steps = splitter.split(ids)
    assert [splitter.text(s) for s in steps] == ["3 + 4 = 7.", "7 * 2 = 14.", "The answer is 14."]
    assert [t for s in steps for t in s] == ids  # every id kept, in order, none re-tokenised
    assert tok.decode(steps[0]).endswith(".\n\n") and tok.decode(steps[1]).endswith(".\n\n\n")


def test_smollm2_numbered_list_splits_into_its_items(smollm2_tokenizer):
    tok = smollm2_tokenizer
    ids = _ids(tok, SMOLLM2_STYLE)
    splitter = StepSplitter(tok, "\n", min_step_chars=8)
    steps = splitter.split(ids)
    assert [splitter.text(s) for s in steps] == SMOLLM2_STEPS
    assert [t for s in steps for t in s] == ids
    # Every step but the last ends at the token that completes the separator.
    assert all(tok.decode(s[-1:]).endswith("\n") for s in steps[:-1])
    # The default separator makes the list one step; the cap keeps the first steps as they are.
    assert len(StepSplitter(tok).split(ids)) == 3
    capped = StepSplitter(tok, "\n", min_step_chars=8, max_solution_steps=3).split(ids)
    assert capped[:2] == steps[:2] and [t for s in capped for t in s] == ids
    assert tok.decode(capped[2]).strip().endswith("The answer is 8.")
    # The text splitter gives the same steps (the rules are one implementation).
    assert split_steps(tok.decode(ids), "\n", min_step_chars=8) == SMOLLM2_STEPS


def test_smollm2_has_no_token_that_goes_on_past_a_newline(smollm2_tokenizer):
    """What the module docstring claims: a newline token of SmolLM2 holds at most more
    whitespace, so a "\\n" step never ends mid-token."""
    tok = smollm2_tokenizer
    newline_tokens = [tok.decode([i]) for i in range(len(tok)) if "\n" in tok.decode([i])]
    assert len(newline_tokens) > 10
    assert all(not t.split("\n", 1)[1].strip() for t in newline_tokens)


def test_tiny_policy_steps_are_the_same_with_either_newline_separator(tiny_tokenizer):
    tok = tiny_tokenizer
    text = "1 + 2 = 3\n\n3 * 4 = 12\n\nThe answer is \\boxed{12}."
    ids = _ids(tok, text)
    two = StepSplitter(tok).split(ids)
    one = StepSplitter(tok, "\n").split(ids)
    assert len(two) == 3 and [tok.decode(s).strip() for s in two] == split_steps(text)
    assert one == two


def test_splitter_for_config_reads_the_step_rules(tiny_tokenizer):
    config = make_config(separator="\\n", min_step_chars=5, max_solution_steps=4)
    splitter = StepSplitter.for_config(tiny_tokenizer, config)
    assert (splitter.separator, splitter.min_step_chars, splitter.max_solution_steps) == (
        "\n",
        5,
        4,
    )


def test_resume_refuses_another_splitter(tmp_path):
    from amcs.records import OutputMismatchError

    data = tmp_path / "d.jsonl"

    def fingerprint(**search):
        return run_fingerprint(
            method="amcs",
            model="m",
            seed=0,
            search=make_config(**search).to_dict(),
            problems="arith",
        )

    path = {
        "completions": ["1 + 1 = 2"],
        "labels": [True],
        "values": [1.0],
        "rollouts": [6],
        "method": "amcs",
        "model": "m",
    }
    with RecordWriter(data, fingerprint=fingerprint(separator="\\n", min_step_chars=8)) as w:
        w.write_problem("p1", "What is 1 + 1?", "2", [path])
    assert recorded_search(data)["separator"] == "\n"
    with pytest.raises(OutputMismatchError, match="min_step_chars: 8 -> 0"):
        RecordWriter(data, resume=True, fingerprint=fingerprint(separator="\\n"))


# --- generate -> train -> eval with a single-newline separator ------------------------------


@pytest.fixture(scope="module")
def newline_run(tmp_path_factory):
    """A tiny run of the bundled policy, its separator given as a shell user types it."""
    data = tmp_path_factory.mktemp("nl") / "nl.jsonl"
    r = runner.invoke(
        app,
        [
            "generate",
            "--problems",
            "arith:2",
            "--out",
            str(data),
            "-q",
            "--set",
            "separator=\\n",
            "--set",
            "max_new_tokens=100",
            "--set",
            "k0=3",
            "--set",
            "rollout_budget=8",
            "--set",
            "max_search_count=1",
        ],
    )
    assert r.exit_code == 0, r.output
    return data


@pytest.fixture(scope="module")
def newline_prm(newline_run):
    out = newline_run.parent / "prm"
    r = runner.invoke(
        app, ["train", "--data", str(newline_run), "--out", str(out), "--max-steps", "1"]
    )
    assert r.exit_code == 0, r.output
    assert f"separator '\\n' (as {meta_path_for(newline_run)} records)" in r.output
    return out


def test_generate_records_the_decoded_separator_and_writes_no_empty_step(newline_run):
    header = json.loads(meta_path_for(newline_run).read_text().splitlines()[0])
    assert header["fingerprint"]["search"]["separator"] == "\n"
    rows = [json.loads(line) for line in newline_run.read_text().splitlines()]
    assert rows
    for row in rows:
        # The tiny policy writes "\n\n": with "\n" each blank line joined its step.
        assert len(row["completions"]) >= 2
        assert all(step.strip() and "\n" not in step for step in row["completions"])


def test_train_takes_the_separator_from_the_data(newline_prm):
    assert json.loads((newline_prm / "amcs_prm.json").read_text())["separator"] == "\n"


def test_train_refuses_data_split_with_different_separators(newline_run, tmp_path):
    other = tmp_path / "other.jsonl"
    fingerprint = run_fingerprint(
        method="amcs", model="m", seed=0, search=make_config().to_dict(), problems="other"
    )
    path = {
        "completions": ["1 + 1 = 2", "The answer is \\boxed{2}."],
        "labels": [True, True],
        "values": [1.0, 1.0],
        "rollouts": [6, 6],
        "method": "amcs",
        "model": "m",
    }
    with RecordWriter(other, fingerprint=fingerprint) as w:
        w.write_problem("q1", "What is 1 + 1?", "2", [path])
    out = tmp_path / "prm"
    r = runner.invoke(
        app, ["train", "--data", str(newline_run), "--data", str(other), "--out", str(out)]
    )
    assert r.exit_code == 2 and "split with different separators" in r.output
    assert "'\\n'" in r.output and "'\\n\\n'" in r.output and "--set separator=" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not out.exists()
    # As generate does, train reads a real newline given with --set (it was "None").
    r = runner.invoke(
        app,
        ["train", "--data", str(other), "--out", str(out), "--max-steps", "1"]
        + ["--set", "separator=\n"],
    )
    assert r.exit_code == 0, r.output
    assert "warning: separator '\\n' given, but" in r.output
    assert json.loads((out / "amcs_prm.json").read_text())["separator"] == "\n"


def test_eval_takes_the_separator_from_the_prm_unless_given(newline_prm, tmp_path):
    def evaluate(out, *extra):
        r = runner.invoke(
            app,
            ["eval", "--problems", "arith-heldout:1", "--strategies", "best-of-n", "--n", "1"]
            + ["--no-baseline", "--out", str(out), "-q", "--set", "max_new_tokens=100", *extra],
        )
        assert r.exit_code == 0, r.output
        results = json.loads((out / "results.json").read_text())
        return r.output, results["settings"]["verify"]

    output, verify = evaluate(tmp_path / "a", "--prm", str(newline_prm))
    assert verify["separator"] == "\n"
    assert f"as {newline_prm / 'amcs_prm.json'} records" in output
    _, verify = evaluate(tmp_path / "b", "--prm", str(newline_prm), "--set", "separator=\\n\\n")
    assert verify["separator"] == DEFAULT_SEPARATOR
