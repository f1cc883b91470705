"""amcs export: the four formats on a real run's files, and hostile input.

Hostile cases go through the real command line: exit status 2, one line on stderr naming the file
and line (or the option), and the previous output file byte for byte unchanged, with no temporary
file left beside it.
"""

import json
import os

import pytest
from typer.testing import CliRunner

from amcs.export import ExportError, export_records
from amcs.prm_data import PRMDataError
from amcs.records import RecordFormatError, RecordWriter, meta_path_for
from amcs.stepeval import PROCESSBENCH, read_step_examples, read_step_file
from cli.main import app

OLD_OUTPUT = b'{"an earlier export": "must survive a failed one"}\n'


def path(steps, labels, values):
    return {
        "completions": steps,
        "labels": labels,
        "values": values,
        "rollouts": [4] * len(steps),
        "method": "amcs",
        "model": "tiny",
    }


TREE = {
    "text": "",
    "mc": 0.5,
    "rollouts": 8,
    "children": [
        {"text": "2 + 2 = 4.", "mc": 1.0, "rollouts": 4, "children": []},
        {"text": "2 + 2 = 5.", "mc": None, "rollouts": 0, "children": []},
    ],
}


@pytest.fixture
def two_step(tmp_path):
    """A run's files: p1 ok with one two-step path and a tree, p2 failed."""
    out = tmp_path / "data.jsonl"
    with RecordWriter(out) as w:
        w.write_problem(
            "p1",
            "What is 2 + 2?",
            "4",
            [path(["2 + 2 = 5.\n", "The answer is: 4"], labels=[False, True], values=[0.0, 1.0])],
            tree=TREE,
        )
        w.write_problem("p2", "What is 1 + 1?", "2", [], status="failed", reason="timeout")
    return out


def files(folder):
    """The files in ``folder`` (a temporary export file would show here), the writer's lock aside."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def export(*args):
    result = CliRunner().invoke(app, ["export", *map(str, args)])
    return result.exit_code, result.stderr


# --- the formats ---


def test_export_trl(two_step, tmp_path):
    assert export_records(two_step, "trl", tmp_path / "trl.jsonl") == 1
    assert (tmp_path / "trl.jsonl").read_text() == (
        '{"prompt": "What is 2 + 2?", "completions": ["2 + 2 = 5.\\n", "The answer is: 4"], '
        '"labels": [false, true]}\n'
    )


def test_export_shepherd(two_step, tmp_path):
    assert export_records(two_step, "shepherd", tmp_path / "s.jsonl") == 1
    line = json.loads((tmp_path / "s.jsonl").read_text())
    assert line == {
        "input": "What is 2 + 2? Step 1: 2 + 2 = 5. ки\nStep 2: The answer is: 4 ки",
        "label": "What is 2 + 2? Step 1: 2 + 2 = 5. -\nStep 2: The answer is: 4 +",
        "task": "amcs",
    }


def test_export_tree(two_step, tmp_path):
    assert export_records(two_step, "tree", tmp_path / "t.jsonl") == 1  # the failed one is skipped
    line = json.loads((tmp_path / "t.jsonl").read_text())
    assert line == {
        "question": "What is 2 + 2?",
        "final_answer": "4",
        "reasoning_steps": {
            "text": "What is 2 + 2?",
            "mc_value": 0.5,
            "children": [
                {"text": "2 + 2 = 4.", "mc_value": 1.0, "children": []},
                {"text": "2 + 2 = 5.", "mc_value": None, "children": []},
            ],
        },
        "question_id": "p1",
    }


def test_export_processbench_and_read_it_back(tmp_path, caplog):
    data = tmp_path / "data.jsonl"
    with RecordWriter(data) as w:
        w.write_problem(
            "q-a",
            "What is 2 + 2?",
            "4",
            [
                path(["2 + 2 = 4.", "The answer is: 4"], [True, True], [1.0, 1.0]),
                path(["2 + 2 = 5."], [False], [0.0]),
                path(["2 + 2 = 4."], [True], [1.0]),  # a prefix: left out
            ],
        )
        w.write_problem("q-b", "What is 1 + 1?", "2", [path(["The answer is: 3"], [False], [0.0])])
    out = tmp_path / "pb.jsonl"
    with caplog.at_level("WARNING", logger="amcs.export"):
        assert export_records(data, "processbench", out) == 3
    assert caplog.messages == [
        f"{data}: left out 1 all-'+' path(s) that stop before a final answer (prefixes, not full "
        "solutions)"
    ]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == [
        {
            "id": "q-a-0",
            "problem": "What is 2 + 2?",
            "steps": ["2 + 2 = 4.", "The answer is: 4"],
            "label": -1,
            "final_answer_correct": True,
            "generator": "tiny",
        },
        {
            "id": "q-a-1",
            "problem": "What is 2 + 2?",
            "steps": ["2 + 2 = 5."],
            "label": 0,
            "generator": "tiny",
        },
        {
            "id": "q-b-0",
            "problem": "What is 1 + 1?",
            "steps": ["The answer is: 3"],
            "label": 0,
            "final_answer_correct": False,
            "generator": "tiny",
        },
    ]
    # The round trip: eval steps reads the export as ProcessBench, with the run's own examples.
    assert read_step_file(out).layout == PROCESSBENCH
    assert read_step_examples(out) == read_step_examples(data)


def test_zero_one_labels_export_as_booleans(tmp_path):
    # amcs train accepts 0/1 labels, so export does, and writes them as booleans.
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "q", "completions": ["a", "b"], "labels": [1, 0]}) + "\n")
    assert export_records(data, "shepherd", tmp_path / "s.jsonl") == 1
    assert json.loads((tmp_path / "s.jsonl").read_text())["label"] == "q Step 1: a +\nStep 2: b -"


def test_success_replaces_the_old_output_and_keeps_its_mode(two_step, tmp_path):
    out = tmp_path / "trl.jsonl"
    out.write_bytes(OLD_OUTPUT)
    out.chmod(0o640)
    assert export(two_step, "-f", "trl", "-o", out) == (0, f"wrote 1 lines to {out}\n")
    assert json.loads(out.read_text())["labels"] == [False, True]
    assert out.stat().st_mode & 0o777 == 0o640
    assert files(tmp_path) == ["data.jsonl", "data.meta.jsonl", "trl.jsonl"]


def test_export_into_a_new_directory(two_step, tmp_path):
    out = tmp_path / "exports" / "deep" / "trl.jsonl"
    assert export_records(two_step, "trl", out) == 1
    assert [json.loads(line)["labels"] for line in out.read_text().splitlines()] == [[False, True]]


# --- hostile input: bad rows ---

GOOD_ROW = {"prompt": "q", "completions": ["a", "b"], "labels": [True, False]}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            json.dumps(dict(GOOD_ROW, labels=["false", True])),
            "labels must be booleans (or 0/1), label 1 is 'false'",
        ),
        (
            json.dumps(dict(GOOD_ROW, labels=[True, None])),
            "labels must be booleans (or 0/1), label 2 is None",
        ),
        (
            json.dumps(dict(GOOD_ROW, completions=[1, 2])),
            "completions must be a list of strings, step 1 is 1",
        ),
        (
            json.dumps(dict(GOOD_ROW, labels=[True])),
            "labels must be a list as long as completions",
        ),
        (json.dumps(dict(GOOD_ROW, prompt=None)), "prompt missing or not a string"),
        ('{"prompt": "q", "completions": ["a"], "lab', "malformed JSON"),
    ],
)
@pytest.mark.parametrize("fmt", ["trl", "shepherd", "processbench"])
def test_bad_row_fails_naming_the_line_and_keeps_the_old_output(tmp_path, line, message, fmt):
    data = tmp_path / "data.jsonl"
    # Two good lines first, so the failure comes after output has been written.
    data.write_text(json.dumps(GOOD_ROW) + "\n" + json.dumps(GOOD_ROW) + "\n\n" + line + "\n")
    out = tmp_path / "out.jsonl"
    out.write_bytes(OLD_OUTPUT)
    code, stderr = export(data, "-f", fmt, "-o", out)
    assert stderr.startswith(f"error: {data}:4: {message}")
    assert code == 2 and stderr.count("\n") == 1 and "Traceback" not in stderr
    assert out.read_bytes() == OLD_OUTPUT
    assert files(tmp_path) == ["data.jsonl", "out.jsonl"]


def test_non_utf8_data_names_the_line(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_bytes(json.dumps(GOOD_ROW).encode() + b'\n{"prompt": "caf\xe9"}\n')
    out = tmp_path / "out.jsonl"
    out.write_bytes(OLD_OUTPUT)
    assert export(data, "-f", "trl", "-o", out) == (
        2,
        f"error: {data}:2: not UTF-8 text (byte 0xe9 at column 16); save the file as UTF-8\n",
    )
    assert out.read_bytes() == OLD_OUTPUT


def test_library_errors_are_value_errors_naming_the_line(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps(dict(GOOD_ROW, labels=["false", "true"])) + "\n")
    with pytest.raises(PRMDataError) as info:
        export_records(data, "trl", tmp_path / "out.jsonl")
    assert str(info.value) == f"{data}:1: labels must be booleans (or 0/1), label 1 is 'false'"
    assert not (tmp_path / "out.jsonl").exists()


def test_meta_file_given_as_data(two_step, tmp_path):
    code, stderr = export(meta_path_for(two_step), "-f", "trl", "-o", tmp_path / "o.jsonl")
    assert code == 2 and stderr.count("\n") == 1
    assert stderr.startswith(f"error: {meta_path_for(two_step)}:1: cannot tell the format")
    assert "this looks like an amcs .meta.jsonl file: pass the data file instead" in stderr


# --- hostile input: paths and options ---


def test_out_may_not_be_an_input_or_a_directory(two_step, tmp_path):
    meta = meta_path_for(two_step)
    before = two_step.read_bytes(), meta.read_bytes()
    (tmp_path / "link.jsonl").symlink_to(two_step)
    os.link(meta, tmp_path / "hard.jsonl")
    choose = "; choose another --out"
    cases = [
        ("trl", two_step, f"--out {two_step} would overwrite the input {two_step}{choose}"),
        (
            "tree",
            meta,
            f"--out {meta} would overwrite {meta}, the meta file of the input {two_step}{choose}",
        ),
        (
            "trl",
            meta,
            f"--out {meta} would overwrite {meta}, the meta file of the input {two_step}{choose}",
        ),
        (
            "shepherd",
            tmp_path / "link.jsonl",
            f"--out {tmp_path / 'link.jsonl'} would overwrite the input {two_step}{choose}",
        ),
        (
            "tree",
            tmp_path / "hard.jsonl",
            f"--out {tmp_path / 'hard.jsonl'} would overwrite {meta}, the meta file of the input "
            f"{two_step}{choose}",
        ),
        ("trl", tmp_path, f"--out {tmp_path} is a directory: give a file name"),
    ]
    for fmt, out, message in cases:
        assert export(two_step, "-f", fmt, "-o", out) == (2, f"error: {message}\n")
    assert (two_step.read_bytes(), meta.read_bytes()) == before


def test_missing_inputs_and_unknown_format(two_step, tmp_path):
    out = tmp_path / "o.jsonl"
    assert export(tmp_path / "nope.jsonl", "-f", "trl", "-o", out) == (
        2,
        f"error: {tmp_path / 'nope.jsonl'}: no such file\n",
    )
    assert export(tmp_path, "-f", "trl", "-o", out) == (
        2,
        f"error: {tmp_path}: is a directory, not a data file\n",
    )
    meta_path_for(two_step).unlink()
    assert export(two_step, "-f", "tree", "-o", out) == (
        2,
        f"error: {meta_path_for(two_step)}: no such file (a tree export reads the run's meta file)\n",
    )
    assert export(two_step, "-f", "csv", "-o", out) == (
        2,
        "error: unknown export format 'csv': choose one of trl, shepherd, tree, processbench, hub\n",
    )
    assert not out.exists()


def test_corrupt_meta_fails_the_tree_export_and_keeps_the_old_output(two_step, tmp_path):
    meta = meta_path_for(two_step)
    out = tmp_path / "t.jsonl"
    out.write_bytes(OLD_OUTPUT)
    lines = meta.read_text().splitlines(keepends=True)  # the run header, p1, p2
    assert [json.loads(line).get("problem_id") for line in lines] == [None, "p1", "p2"]
    meta.write_text(lines[0] + "{broken\n" + "".join(lines[1:]))
    assert export(two_step, "-f", "tree", "-o", out) == (
        2,
        f"error: {meta}:2: invalid JSON (Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1))\n",
    )
    first = json.loads(lines[1])
    first["tree"]["children"][1]["mc"] = "high"
    meta.write_text(lines[0] + json.dumps(first) + "\n" + lines[2])
    assert export(two_step, "-f", "tree", "-o", out) == (
        2,
        f"error: {meta}:2: problem 'p1': a search tree node's mc is \"high\", not an MC value "
        "in [0, 1] or null\n",
    )
    first["tree"]["children"][1] = ["not", "a", "node"]
    meta.write_text(lines[0] + json.dumps(first) + "\n" + lines[2])
    with pytest.raises(ExportError, match="a search tree node is not an object with a text"):
        export_records(two_step, "tree", out)
    assert out.read_bytes() == OLD_OUTPUT
    assert files(tmp_path) == ["data.jsonl", "data.meta.jsonl", "t.jsonl"]


def test_meta_errors_are_record_format_errors(two_step, tmp_path):
    meta = meta_path_for(two_step)
    meta.write_bytes(b'{"problem_id": "\xff"}\n' + meta.read_bytes())
    with pytest.raises(RecordFormatError, match=rf"^{meta}:1: invalid JSON"):
        export_records(two_step, "tree", tmp_path / "t.jsonl")


# --- a run in progress or killed ---


def test_only_committed_problems_are_exported(two_step, tmp_path, caplog):
    # What a kill between a problem's data lines and its meta line leaves: a whole data line of
    # the unfinished problem and a torn one. Resume would cut both; export leaves them out.
    committed = two_step.read_bytes()
    row = dict(GOOD_ROW, problem_id="p3")
    with open(two_step, "ab") as f:
        f.write((json.dumps(row) + "\n" + json.dumps(row)[:20]).encode())
    extra = two_step.stat().st_size - len(committed)
    out = tmp_path / "trl.jsonl"
    with caplog.at_level("WARNING", logger="amcs.prm_data"):
        assert export_records(two_step, "trl", out) == 1
    assert json.loads(out.read_text())["prompt"] == "What is 2 + 2?"
    assert caplog.messages == [
        f"{two_step}: reading the {len(committed)} bytes committed in data.meta.jsonl; the "
        f"{extra} bytes after them belong to a problem not finished (a run in progress, or "
        "killed) and are left out"
    ]


def test_data_shorter_than_its_meta_is_an_error(two_step, tmp_path):
    size = two_step.stat().st_size
    two_step.write_bytes(two_step.read_bytes()[:-5])
    assert export(two_step, "-f", "trl", "-o", tmp_path / "o.jsonl") == (
        2,
        f"error: {two_step} has {size - 5} bytes but {meta_path_for(two_step)} says {size} were "
        "written: the two files do not belong together\n",
    )


def test_a_retried_problem_exports_its_ok_attempt(tmp_path):
    # The meta file starts with the run header; p1 fails, the resumed run retries it and it
    # finishes ok: its ok record is exported (the failed one has no tree), in commit order.
    data = tmp_path / "data.jsonl"
    fingerprint = {"method": "amcs", "seed": 0}
    with RecordWriter(data, fingerprint=fingerprint) as w:
        w.write_problem("p1", "What is 2 + 2?", "4", [], status="failed", reason="timeout")
        w.write_problem("p2", "What is 1 + 1?", "2", [path(["1 + 1 = 2"], [True], [1.0])])
    with RecordWriter(data, fingerprint=fingerprint) as w:
        assert w.done_ids == {"p2"}
        w.write_problem(
            "p1",
            "What is 2 + 2?",
            "4",
            [path(["2 + 2 = 5.", "The answer is: 4"], [False, True], [0.0, 1.0])],
            tree=TREE,
        )
    meta_lines = [json.loads(line) for line in meta_path_for(data).read_text().splitlines()]
    assert "fingerprint" in meta_lines[0] and "problem_id" not in meta_lines[0]
    assert [(m["problem_id"], m["status"]) for m in meta_lines[1:]] == [
        ("p1", "failed"),
        ("p2", "ok"),
        ("p1", "ok"),
    ]
    out = tmp_path / "t.jsonl"
    assert export_records(data, "tree", out) == 1
    assert json.loads(out.read_text())["question_id"] == "p1"
    assert export_records(data, "trl", out) == 2
    assert [json.loads(line)["completions"] for line in out.read_text().splitlines()] == [
        ["1 + 1 = 2"],
        ["2 + 2 = 5.", "The answer is: 4"],
    ]


# --- hub: Parquet shards and a dataset card -----------------------------------------------------


def card_table(text: str) -> dict[str, str]:
    """The first Markdown table's rows of a card section, key -> value (as written)."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| |"):
            key, value = (cell.strip() for cell in line.strip("|").split("|", 1))
            rows.setdefault(key, value.strip("| "))
    return rows


def number(text: str) -> float:
    return float(text.replace(",", ""))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real run of the bundled tiny policy on 4 arithmetic problems (about 15 s)."""
    out = tmp_path_factory.mktemp("run") / "run.jsonl"
    result = CliRunner().invoke(
        app,
        [
            "generate",
            "--problems",
            "arith:4",
            "--out",
            str(out),
            "-q",
            "--set",
            "max_new_tokens=100",
            "--set",
            "rollout_budget=20",
        ],
    )
    assert result.exit_code == 0, result.output
    return out


def load_hub_folder(folder, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "cache"))


def test_hub_export_loads_with_datasets_and_its_card_counts_the_run(
    tiny_run, tmp_path, monkeypatch
):
    from amcs.cards import read_card_metadata
    from amcs.export import HUB_COLUMNS

    out = tmp_path / "hub"
    code, stderr = export(tiny_run, "-f", "hub", "-o", out)
    data_lines = [json.loads(line) for line in tiny_run.read_text().splitlines()]
    assert (code, stderr) == (
        0,
        f"wrote {len(data_lines)} rows (Parquet) and a dataset card to {out}\n",
    )
    loaded = load_hub_folder(out, tmp_path, monkeypatch)
    assert list(loaded) == ["train"]
    train = loaded["train"]
    assert train.num_rows == len(data_lines) and train.column_names == list(HUB_COLUMNS)
    for row, line in zip(train, data_lines, strict=True):
        assert {k: row[k] for k in HUB_COLUMNS} == {k: line[k] for k in HUB_COLUMNS}

    card = (out / "README.md").read_text()
    metadata = read_card_metadata(out / "README.md")
    assert "license" not in metadata and "license:" in card  # left for the user, as a comment
    assert metadata["size_categories"] == ["n<1K"]
    assert metadata["configs"][0]["data_files"][0]["path"] == ["data/train-00000-of-00001.parquet"]
    # The card's counts equal those recomputed here from the data lines and the meta records.
    metas = [json.loads(line) for line in meta_path_for(tiny_run).read_text().splitlines()]
    header, records = metas[0], metas[1:]
    labels = [x for line in data_lines for x in line["labels"]]
    table = card_table(card.split("## Counts", 1)[1])
    expected = {
        "problems (finished ok)": sum(r["status"] == "ok" for r in records),
        "problems with rows": len({line["problem_id"] for line in data_lines}),
        "labelled paths (rows)": len(data_lines),
        "steps": len(labels),
        '"+" steps': labels.count(True),
        '"-" steps': labels.count(False),
        "steps with a measured MC value": sum(
            v is not None for line in data_lines for v in line["values"]
        ),
        "rollouts": sum(r["stats"]["rollouts"] for r in records),
        "generated tokens": sum(r["stats"]["tokens"] for r in records),
        "prompt tokens": sum(r["stats"]["prompt_tokens"] for r in records),
    }
    assert {k: number(table[k]) for k in expected} == expected
    assert number(table["search time, summed over problems (s)"]) == pytest.approx(
        sum(r["stats"]["wall_time"] for r in records), abs=0.06
    )
    # The meta's own label counts agree with the data's (the card could use either).
    assert sum(r["stats"]["labels_positive"] for r in records) == labels.count(True)
    assert sum(r["stats"]["labels_negative"] for r in records) == labels.count(False)
    # How it was made: the run's method, model and every search setting, from the header.
    fingerprint = header["fingerprint"]
    made = card_table(card.split("## How it was made", 1)[1].split("## Columns", 1)[0])
    assert made["model"] == '`"amcs/tiny-arith-policy"`' and made["problems"] == '`"arith"`'
    for key, value in fingerprint["search"].items():
        assert made[key] == f"`{json.dumps(value)}`"
    assert "load_dataset(" in card and "hard label is `value > 0`" in card


def test_hub_export_shards_and_replaces_an_earlier_export(tiny_run, tmp_path, monkeypatch):
    from amcs.export import export_hub

    out = tmp_path / "hub"
    rows = export_hub([tiny_run], out, shard_rows=2)
    shards = sorted(p.name for p in (out / "data").iterdir())
    n = (rows + 1) // 2
    assert shards == [f"train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    assert load_hub_folder(out, tmp_path, monkeypatch)["train"].num_rows == rows
    (out / ".git").mkdir()  # a clone of the dataset repository: not ours to touch
    (out / "notes.txt").write_text("mine")
    assert export_records(tiny_run, "hub", out) == rows
    assert sorted(p.name for p in (out / "data").iterdir()) == ["train-00000-of-00001.parquet"]
    assert sorted(p.name for p in out.iterdir()) == [".git", "README.md", "data", "notes.txt"]
    assert files(tmp_path) == ["cache", "hub"]  # no staging folder left beside it


def test_hub_export_refuses_bad_outputs_and_keeps_an_earlier_export(tiny_run, tmp_path):
    out = tmp_path / "hub"
    export_records(tiny_run, "hub", out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(GOOD_ROW) + "\n" + json.dumps(dict(GOOD_ROW, labels=[1])) + "\n")
    code, stderr = export(tiny_run, bad, "-f", "hub", "-o", out)
    assert (code, stderr) == (2, f"error: {bad}:2: labels must be a list as long as completions\n")
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert files(tmp_path) == ["bad.jsonl", "hub"]
    assert export(tiny_run, "-f", "hub", "-o", tiny_run) == (
        2,
        f"error: --out {tiny_run} would overwrite the input {tiny_run}; choose another --out\n",
    )
    a_file = tmp_path / "bad.jsonl"
    assert export(tiny_run, "-f", "hub", "-o", a_file) == (
        2,
        f"error: --out {a_file} is a file, not a folder; name a folder to write into\n",
    )


def test_hub_export_never_replaces_a_data_folder_or_readme_it_did_not_write(tiny_run, tmp_path):
    """--out names a folder whose data/ holds the input run itself, or a project whose README.md
    is the user's: an export replaces data/ and README.md, so it refuses, and no byte changes."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    run = project / "data" / "run.jsonl"
    run.write_bytes(tiny_run.read_bytes())
    meta = meta_path_for(run)
    meta.write_bytes(meta_path_for(tiny_run).read_bytes())
    (project / "data" / "notes.txt").write_text("mine")
    before = {p: p.read_bytes() for p in project.rglob("*") if p.is_file()}
    assert export(run, "-f", "hub", "-o", project) == (
        2,
        f"error: --out {project}: {project / 'data'} holds files an export did not write "
        "(notes.txt, run.jsonl, run.meta.jsonl) and would lose them; choose another --out\n",
    )
    assert {p: p.read_bytes() for p in project.rglob("*") if p.is_file()} == before
    readme = tmp_path / "repo" / "README.md"
    readme.parent.mkdir()
    readme.write_text("# my project\n")
    assert export(run, "-f", "hub", "-o", readme.parent) == (
        2,
        f"error: --out {readme.parent}: {readme} is not a dataset card amcs wrote and an export "
        "would replace it; choose another --out\n",
    )
    assert readme.read_text() == "# my project\n" and sorted(files(readme.parent)) == ["README.md"]
    # A folder holding an earlier export (its shards and its card) is replaced as before.
    export_records(run, "hub", tmp_path / "hub")
    assert export_records(run, "hub", tmp_path / "hub") > 0
