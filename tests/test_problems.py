"""Problem loading: formats, field mapping, and errors that name the file and line."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import shared_data
from typer.testing import CliRunner

from amcs.problems import Problem, ProblemError, load_problems, question_id
from cli.main import app


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_arith_source_is_seeded_and_sized():
    assert len(load_problems("arith")) == 200
    a = load_problems("arith:7", seed=1)
    assert len(a) == 7 and a == load_problems("arith:7", seed=1)
    assert a != load_problems("arith:7", seed=2)
    assert a[0].meta["domain"] == "arith" and a[0].meta["expression"] in a[0].question
    assert len(load_problems("arith:50", limit=5)) == 5


def test_field_mapping_and_gsm8k_answers(tmp_path):
    f = write(
        tmp_path / "p.jsonl",
        json.dumps({"problem": "1+1?", "answer": "2", "unique_id": "a"})
        + "\n\n"
        + json.dumps({"query": "q2", "final_answer": 3, "level": 5})
        + "\n"
        + json.dumps({"question": "q3", "answer": "so 40 + 2 = 42\n#### 1,042"})
        + "\n",
    )
    ps = load_problems(f)
    assert [p.question for p in ps] == ["1+1?", "q2", "q3"]
    assert [p.answer for p in ps] == ["2", "3", "1042"]
    assert ps[0].id == "a" and ps[1].meta == {"level": 5}


def test_ids_without_an_id_field_are_the_question_hash_not_a_position(tmp_path):
    questions = ["What is 2 + 3?", "What is 2 + 3? ", "Tom has 3 apples."]
    a = write(
        tmp_path / "a.jsonl",
        "".join(json.dumps({"question": q, "answer": "5"}) + "\n" for q in questions),
    )
    b = write(
        tmp_path / "b.json",
        json.dumps(
            [{"problem": q, "answer": 1} for q in reversed(questions)]
            + [{"problem": "x", "answer": 1, "id": 7}]
        ),
    )
    ids = [p.id for p in load_problems(a)]
    # sha256("What is 2 + 3?") = 1ea26256ebae...: q- and its first 12 hex digits.
    assert ids[0] == "q-1ea26256ebae" == question_id("What is 2 + 3?")
    assert len(set(ids)) == 3  # one trailing space is another question
    assert all(len(i) == 14 and i.startswith("q-") and int(i[2:], 16) >= 0 for i in ids)
    # Another file, another order, another field name: the same question keeps its id.
    from_b = {p.question: p.id for p in load_problems(b)}
    assert {q: from_b[q] for q in questions} == dict(zip(questions, ids, strict=True))
    assert from_b["x"] == "7"  # an id field wins
    assert [p.id for p in load_problems("arith:2")] == ["arith-0-0", "arith-0-1"]  # its own


def test_the_same_question_twice_without_ids_is_refused_naming_both_lines(tmp_path):
    line = json.dumps({"question": "What is 2 + 3?", "answer": "5"}) + "\n"
    f = write(
        tmp_path / "p.jsonl", line + json.dumps({"question": "q", "answer": "1"}) + "\n" + line
    )
    with pytest.raises(ProblemError) as info:
        load_problems(f)
    assert str(info.value) == (
        f"{f}:3: no id field, and the same question as {f}:1: a problem without an id is named "
        "by its question's hash (q-1ea26256ebae), which is taken; remove the duplicate or give "
        "each an id field (id | unique_id | problem_id | idx)"
    )
    # With id fields the same question may appear twice (datasets do have repeats).
    f = write(
        tmp_path / "ids.jsonl",
        line.replace("{", '{"id": "a", ') + line.replace("{", '{"id": "b", '),
    )
    assert [p.id for p in load_problems(f)] == ["a", "b"]


def test_json_and_parquet(tmp_path):
    rows = [{"question": f"q{i}", "answer": str(i), "id": f"x{i}"} for i in range(3)]
    j = write(tmp_path / "p.json", json.dumps(rows))
    assert [p.id for p in load_problems(j)] == ["x0", "x1", "x2"]
    import datasets

    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "p.parquet"))
    assert load_problems(tmp_path / "p.parquet") == load_problems(j)


def test_explicit_fields(tmp_path):
    f = write(tmp_path / "p.jsonl", json.dumps({"input": "q", "target": "7"}) + "\n")
    with pytest.raises(ProblemError, match="missing question"):
        load_problems(f)
    assert load_problems(f, question_field="input", answer_field="target") == [
        Problem(id=question_id("q"), question="q", answer="7")
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{"question": "q", "answer": "1"}\n{"question": "q", "answer": \n',
            r"p.jsonl:2: malformed JSON",
        ),
        ('{"question": "q", "answer": "1"}\n{"answer": "1"}\n', r"p.jsonl:2: missing question"),
        ('{"question": "q"}\n', r"p.jsonl:1: missing answer"),
        ('{"question": "q", "answer": ""}\n', r"p.jsonl:1: missing answer"),
        (
            '{"id": 1, "question": "q", "answer": "1"}\n\n{"id": 1, "question": "r", "answer": "2"}\n',
            r"p.jsonl:3: duplicate id '1' \(first at .*p.jsonl:1\)",
        ),
        ("[1, 2]\n", r"p.jsonl:1: expected a JSON object"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, text, message):
    f = write(tmp_path / "p.jsonl", text)
    with pytest.raises(ProblemError, match=message):
        load_problems(f)


def test_missing_file(tmp_path):
    with pytest.raises(ProblemError, match="no such file"):
        load_problems(tmp_path / "nope.jsonl")


def test_cli_reports_bad_input_with_exit_2(tmp_path):
    f = write(tmp_path / "p.jsonl", '{"question": "q"}\n')
    result = CliRunner().invoke(app, ["problems", str(f)])
    assert result.exit_code == 2
    assert "p.jsonl:1: missing answer" in result.output


def test_real_datasets_load():
    gsm = load_problems(shared_data("gsm8k_test.jsonl"))
    assert len(gsm) == 1319 and gsm[0].answer == "18"
    assert all(p.answer.lstrip("-").replace(".", "").isdigit() for p in gsm)
    math500 = load_problems(shared_data("math500.jsonl"))
    assert len(math500) == 500 and len({p.id for p in math500}) == 500
    assert "solution" in math500[0].meta


# Hostile input: every case is one ProblemError naming the file (and line), and through the CLI
# one line on stderr with exit status 2.


def test_non_utf8_jsonl_names_the_line_and_column(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_bytes(b'{"question": "q", "answer": "1"}\n\n{"question": "caf\xe9", "answer": "2"}\n')
    with pytest.raises(ProblemError) as info:
        load_problems(f)
    assert str(info.value) == (
        f"{f}:3: not UTF-8 text (byte 0xe9 at column 18); save the file as UTF-8"
    )


def test_non_utf8_json_names_the_line(tmp_path):
    f = tmp_path / "p.json"
    f.write_bytes(b'[{"question": "q",\n  "answer": "\xff"}]\n')
    with pytest.raises(ProblemError) as info:
        load_problems(f)
    assert (
        str(info.value) == f"{f}:2: not UTF-8 text (byte 0xff at column 14); save the file as UTF-8"
    )


def test_utf8_with_byte_order_mark_loads(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_bytes(b'\xef\xbb\xbf{"question": "q", "answer": "1"}\n')
    assert load_problems(f) == [Problem(id=question_id("q"), question="q", answer="1")]


def test_directory_is_not_a_problem_file(tmp_path):
    (tmp_path / "d.jsonl").mkdir()
    for source in (tmp_path, tmp_path / "d.jsonl"):
        with pytest.raises(ProblemError) as info:
            load_problems(source)
        assert str(info.value) == f"{source}: is a directory, not a problem file"


def test_corrupt_parquet(tmp_path):
    f = tmp_path / "p.parquet"
    f.write_bytes(b'{"question": "this is JSON, not Parquet"}\n')
    with pytest.raises(ProblemError) as info:
        load_problems(f)
    message = str(info.value)
    assert message.startswith(f"{f}: not a readable Parquet file (") and "\n" not in message


@pytest.mark.parametrize(
    ("name", "text"), [("p.jsonl", ""), ("p.jsonl", "\n  \n"), ("p.json", "[]")]
)
def test_empty_file_has_no_problems(tmp_path, name, text):
    f = write(tmp_path / name, text)
    with pytest.raises(ProblemError) as info:
        load_problems(f)
    assert str(info.value) == f"no problems in {f}"


def test_bad_arith_sources():
    for source in ("arith:-1", "arith:x", "arith-heldout:"):
        with pytest.raises(ProblemError) as info:
            load_problems(source)
        assert str(info.value) == (
            f"bad problem source {source!r}: the arith domain is arith, arith:N or "
            "arith-heldout:N with N a whole number"
        )
    with pytest.raises(ProblemError, match=r"^no problems in arith:0$"):
        load_problems("arith:0")


def test_local_looking_paths_are_missing_files_not_hub_names(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    for source in (
        "./nosuch",  # starts with .
        "~/amcs-no-such-problems",  # starts with ~
        str(tmp_path / "nosuch"),  # absolute
        "data/nosuch",  # its directory exists here
        "a/b/c",  # a hub id has at most one /
        "my problems",  # a hub id has no spaces
    ):
        with pytest.raises(ProblemError) as info:
            load_problems(source)
        assert str(info.value) == f"{source}: no such file"


def test_files_named_like_the_domain_are_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "arithmetic.jsonl", '{"question": "q", "answer": "1"}\n')
    assert [p.question for p in load_problems("arithmetic.jsonl")] == ["q"]


def test_cli_errors_are_one_line_with_exit_2(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"question": "\xff", "answer": "1"}\n')
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "corrupt.parquet").write_bytes(b"PAR1 not really")
    cases = {
        str(bad): f"{bad}:1: not UTF-8 text (byte 0xff at column 15); save the file as UTF-8",
        str(tmp_path): f"{tmp_path}: is a directory, not a problem file",
        str(tmp_path / "empty.jsonl"): f"no problems in {tmp_path / 'empty.jsonl'}",
        "./no/such": "./no/such: no such file",
    }
    runner = CliRunner()
    for source, message in cases.items():
        result = runner.invoke(app, ["problems", source])
        assert (result.exit_code, result.stderr) == (2, f"error: {message}\n"), source
        assert result.stdout == ""
    result = runner.invoke(app, ["problems", str(tmp_path / "corrupt.parquet")])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(
        f"error: {tmp_path / 'corrupt.parquet'}: not a readable Parquet"
    )


def test_cli_prints_names_and_problems_verbatim(tmp_path):
    # Brackets and colons are text, not Rich markup or emoji codes, in errors and in the preview.
    empty = write(tmp_path / "p[bold]x.jsonl", "")
    result = CliRunner().invoke(app, ["problems", str(empty)])
    assert (result.exit_code, result.stderr) == (2, f"error: no problems in {empty}\n")
    f = write(
        tmp_path / "p.jsonl", json.dumps({"question": "Is [b]x[/b] :smile: a set?", "answer": "1"})
    )
    result = CliRunner().invoke(app, ["problems", str(f)])
    assert result.exit_code == 0
    assert "Is [b]x[/b] :smile: a set?" in result.stdout


def _closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _amcs_offline_hub(args, tmp_path):
    """Run the real CLI with the hub endpoint unreachable and an empty-or-given datasets cache."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    }
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{_closed_port()}"
    env["HF_DATASETS_CACHE"] = str(tmp_path / "hf-cache")
    result = subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    )
    return result, env["HF_ENDPOINT"]


@pytest.mark.slow
def test_hub_name_with_the_hub_unreachable_fails_at_once(tmp_path):
    # Before: huggingface_hub retried for ~30 s and printed a line per retry.
    result, endpoint = _amcs_offline_hub(["problems", "someone/no-such-set:test"], tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "error: someone/no-such-set: no such file, and no Hugging Face dataset of that name in "
        f"the local cache (the hub at {endpoint} cannot be reached)\n"
    )


@pytest.mark.slow
def test_hub_name_loads_from_the_local_cache_when_the_hub_is_unreachable(tmp_path):
    from datasets.packaged_modules.json.json import Json

    rows = write(
        tmp_path / "rows.jsonl",
        '{"question": "1+1?", "answer": "2", "id": "a"}\n{"question": "2+2?", "answer": "4", "id": "b"}\n',
    )
    # What load_dataset("mini") leaves in the cache: <cache>/mini/default/<version>/<hash>/.
    Json(
        cache_dir=str(tmp_path / "hf-cache"),
        dataset_name="mini",
        config_id="default",
        hash="0123abcd",
        data_files={"test": str(rows)},
    ).download_and_prepare()
    result, endpoint = _amcs_offline_hub(["problems", "mini"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        f"mini: loaded from the local Hugging Face cache (the hub at {endpoint} cannot be reached)\n"
    )
    assert "2 problems from mini" in result.stdout and "2+2?" in result.stdout
    result, endpoint = _amcs_offline_hub(["problems", "mini:train"], tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "error: mini: no such file, and loading it as a Hugging Face dataset (split 'train') "
        "failed: ValueError: Unknown split \"train\". Should be one of ['test'].\n"
    )


def test_cli_error_does_not_render_emoji_codes(tmp_path):
    empty = write(tmp_path / "x:-1:.jsonl", "")
    result = CliRunner().invoke(app, ["problems", str(empty)])
    assert (result.exit_code, result.stderr) == (2, f"error: no problems in {empty}\n")


def test_generate_stops_on_an_empty_problem_file_before_any_model_or_output(tmp_path):
    empty = write(tmp_path / "p.jsonl", "\n")
    out = tmp_path / "run" / "data.jsonl"
    result = CliRunner().invoke(app, ["generate", "--problems", str(empty), "--out", str(out)])
    assert (result.exit_code, result.stderr) == (2, f"error: no problems in {empty}\n")
    assert not out.parent.exists()


def test_malformed_json_names_line_and_column(tmp_path):
    f = write(tmp_path / "p.jsonl", '{"question": "q", "answer": "1"}\r\n{"question": \r\n')
    with pytest.raises(ProblemError) as info:
        load_problems(f)
    assert str(info.value) == f"{f}:2: malformed JSON (Expecting value at column 14)"


@pytest.mark.slow
def test_hub_name_with_a_configuration_loads_it(tmp_path):
    """NAME:CONFIG:SPLIT picks a configuration (GSM8K on the hub is openai/gsm8k:main:test)."""
    from datasets.packaged_modules.json.json import Json

    rows = write(
        tmp_path / "rows.jsonl",
        '{"question": "Tom has 3 apples and buys 5. How many?", "answer": "3 + 5 = 8\\n#### 8"}\n',
    )
    Json(
        cache_dir=str(tmp_path / "hf-cache"),
        dataset_name="gsm-mini",
        config_name="main",
        config_id="main",
        hash="0123abcd",
        data_files={"test": str(rows)},
    ).download_and_prepare()
    result, _ = _amcs_offline_hub(["problems", "gsm-mini:main:test"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "1 problems from gsm-mini" in result.stdout and "Tom has 3 apples" in result.stdout
    result, _ = _amcs_offline_hub(["problems", "gsm-mini:main:test:x"], tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "error: gsm-mini:main:test:x: a hub dataset is NAME, NAME:SPLIT or NAME:CONFIG:SPLIT\n"
    )
