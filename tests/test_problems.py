"""Problem loading: formats, field mapping, and errors that name the file and line."""

import json

import pytest
from conftest import shared_data
from typer.testing import CliRunner

from amcs.problems import Problem, ProblemError, load_problems
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
        Problem(id="p0", question="q", answer="7")
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
