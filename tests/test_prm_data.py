"""PRM data loaders: each format on hand-written and real sample files, round trips, errors."""

import json

import pytest
from conftest import shared_data
from typer.testing import CliRunner

from amcs.export import export_records
from amcs.prm_data import PRMDataError, detect_format, load_prm_rows, write_trl
from amcs.records import RecordWriter
from cli.main import app

TAG = "ки"


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


def shepherd(question, steps, labels):
    def body(tags):
        return "\n".join(
            f"Step {i}: {s} {t}" for i, (s, t) in enumerate(zip(steps, tags, strict=True), 1)
        )

    return {
        "input": f"{question} {body([TAG] * len(steps))}",
        "label": f"{question} {body(['+' if x else '-' for x in labels])}",
        "task": "GSM8K",
    }


def step(ratings, chosen=None, human=None):
    return {
        "completions": [{"text": f"c{i}", "rating": r} for i, r in enumerate(ratings)],
        "human_completion": None if human is None else {"text": human, "rating": None},
        "chosen_completion": chosen,
    }


def prm800k(steps, problem="What is 1+1?"):
    return {"question": {"problem": problem}, "label": {"steps": steps, "finish_reason": "x"}}


# --- hand-written examples, one per format ---


def test_trl_and_amcs_rows(tmp_path):
    trl = {"prompt": "Q", "completions": ["a", "b"], "labels": [True, False], "extra": 1}
    amcs = dict(trl, values=[0.75, 0], rollouts=[4, 4], problem_id="p")
    path = write_jsonl(tmp_path / "d.jsonl", [amcs, dict(amcs, labels=[1, 0])])
    rows = load_prm_rows(path)
    assert rows[0] == {
        "prompt": "Q",
        "completions": ["a", "b"],
        "labels": [True, False],
        "values": [0.75, 0.0],
    }
    assert rows[1]["labels"] == [True, False] and type(rows[1]["labels"][0]) is bool
    rows = load_prm_rows(write_jsonl(tmp_path / "t.jsonl", [trl]), fmt="trl")
    assert rows == [{"prompt": "Q", "completions": ["a", "b"], "labels": [True, False]}]


def test_shepherd_hand_example(tmp_path):
    record = {
        "input": "What is 2+3? Step 1: 2+3 = 5 ки\nStep 2: The answer is: 5 ки",
        "label": "What is 2+3? Step 1: 2+3 = 5 +\nStep 2: The answer is: 5 -",
        "task": "GSM8K",
    }
    rows = load_prm_rows(write_jsonl(tmp_path / "s.jsonl", [record]))
    assert rows == [
        {
            "prompt": "What is 2+3?",
            "completions": ["2+3 = 5", "The answer is: 5"],
            "labels": [True, False],
        }
    ]


def test_prm800k_hand_example(tmp_path):
    steps = [
        step([1], chosen=0),
        step([0, 1], chosen=0),  # neutral, chosen
        step([-1, -1], human="human step"),  # no chosen: the human completion, positive
        step([-1, 1]),  # no chosen, no human: the first completion, negative: the row ends
        step([1], chosen=0),
    ]
    path = write_jsonl(tmp_path / "p.jsonl", [prm800k(steps)])
    (row,) = load_prm_rows(path)
    assert row == {
        "prompt": "What is 1+1?",
        "completions": ["c0", "c0", "human step", "c0"],
        "labels": [True, True, True, False],
    }
    (strict,) = load_prm_rows(path, "prm800k", neutral_is_positive=False)
    assert strict["completions"] == ["c0", "c0"] and strict["labels"] == [True, False]


def test_prm800k_stops_at_missing_steps_and_skips_empty_samples(tmp_path):
    no_text = {"completions": None, "human_completion": None, "chosen_completion": None}
    records = [
        prm800k([step([1], chosen=0), no_text, step([1], chosen=0)]),
        prm800k([step([1], chosen=0), step([None], chosen=0)]),  # unrated model step
        prm800k([no_text], problem="empty"),
    ]
    rows = load_prm_rows(write_jsonl(tmp_path / "p.jsonl", records))
    assert [r["completions"] for r in rows] == [["c0"], ["c0"]]


# --- auto-detection and the writer ---


def test_detect_format():
    assert detect_format({"prompt": "", "completions": [], "labels": []}) == "trl"
    assert detect_format({"prompt": "", "completions": [], "labels": [], "values": []}) == "amcs"
    assert detect_format({"input": "", "label": ""}) == "shepherd"
    assert detect_format({"question": {}, "label": {}}) == "prm800k"
    with pytest.raises(PRMDataError, match="meta.jsonl"):
        detect_format({"problem_id": "p", "data_end": 0})


def test_write_trl_round_trip(tmp_path):
    rows = [
        {"prompt": "Q", "completions": ["a"], "labels": [True], "values": [0.5]},
        {"prompt": "R", "completions": ["b", "c"], "labels": [False, True]},
    ]
    assert write_trl(rows, tmp_path / "out" / "t.jsonl") == 2
    assert load_prm_rows(tmp_path / "out" / "t.jsonl") == rows


# --- round trip through amcs's shepherd exporter ---


def test_shepherd_round_trip_with_export(tmp_path):
    paths = [
        (["  Add 2 and 3.  ", "So 2+3 = 5.\nThe answer is: 5"], [True, False]),
        (["x", "", "y"], [False, True, True]),
    ]
    data = tmp_path / "data.jsonl"
    with RecordWriter(data, resume=False) as writer:
        for i, (steps, labels) in enumerate(paths):
            writer.write_problem(
                f"p{i}",
                f"Question {i}:\nwhat is 2+3?",
                "5",
                [
                    {
                        "completions": steps,
                        "labels": labels,
                        "values": [float(x) for x in labels],
                        "rollouts": [4] * len(steps),
                        "method": "amcs",
                        "model": "tiny",
                    }
                ],
            )
    out = tmp_path / "shepherd.jsonl"
    assert export_records(data, "shepherd", out) == 2
    rows = load_prm_rows(out)
    assert [r["prompt"] for r in rows] == ["Question 0:\nwhat is 2+3?", "Question 1:\nwhat is 2+3?"]
    assert [r["completions"] for r in rows] == [[s.strip() for s in p[0]] for p in paths]
    assert [r["labels"] for r in rows] == [p[1] for p in paths]
    # The amcs data file itself keeps its soft values.
    assert load_prm_rows(data)[0]["values"] == [1.0, 0.0]


# --- the real sample files ---


def test_math_shepherd_samples():
    path = shared_data("formats/samples_math-shepherd.jsonl")
    rows = load_prm_rows(path)
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert len(rows) == len(records)
    for row, record in zip(rows, records, strict=True):
        assert row["prompt"] and not row["prompt"].endswith(" ")
        assert record["input"].startswith(row["prompt"] + " Step 1: ")
        assert len(row["completions"]) == len(row["labels"]) == record["input"].count(TAG)
        assert not any(c.startswith("Step ") or c != c.strip() for c in row["completions"])
        # Rebuilding the Math-Shepherd line from the row gives the original back.
        rebuilt = shepherd(row["prompt"], row["completions"], row["labels"])
        assert (rebuilt["input"], rebuilt["label"]) == (record["input"], record["label"])
    assert rows[0]["labels"] == [True, True, True, True, False]
    assert (
        rows[0]["completions"][1]
        == "She spends 40 * 3 = <<40*3=120>>120 on clarinet lessons per week."
    )


def test_prm800k_samples():
    path = shared_data("formats/samples_prm800k.jsonl")
    rows = load_prm_rows(path)
    assert load_prm_rows(path, "prm800k") == rows
    assert len(rows) == 6
    for row in rows:
        assert len(row["completions"]) == len(row["labels"]) > 0
        assert all(row["labels"][:-1])  # only the last step can be negative
    assert rows[0]["prompt"].startswith("Three pencils and a jumbo eraser")
    # Step 2 has no chosen completion: the human one is used and counts as positive.
    assert rows[0]["completions"][1] == "We have $3p+e=1.24$ and $5p+e=1.82$."
    assert rows[0]["labels"] == [True] * 6
    # found_error: the last step has no chosen completion, its first one is rated -1.
    assert rows[1]["labels"] == [True] * 6 + [False]
    # Neutral steps become negative and end the row when neutral_is_positive is off.
    # (row 1's second step is a chosen completion rated 0).
    strict = load_prm_rows(path, neutral_is_positive=False)
    assert strict[1]["labels"] == [True, False]
    assert strict[1]["completions"] == rows[1]["completions"][:2]
    assert strict[0] == rows[0]


# --- bad input ---


def test_bad_inputs_name_file_and_line(tmp_path):
    good = {"prompt": "Q", "completions": ["a"], "labels": [True]}
    cases = [
        ("{not json", "malformed JSON"),
        (json.dumps(dict(good, labels=[True, False])), "labels must be a list as long"),
        (json.dumps(dict(good, labels=["yes"])), "booleans"),
        (json.dumps(dict(good, values=[0.5, 1.0])), "values must be"),
        (json.dumps([1, 2]), "expected a JSON object"),
    ]
    for i, (line, message) in enumerate(cases):
        path = tmp_path / f"bad{i}.jsonl"
        path.write_text(json.dumps(good) + "\n\n" + line + "\n")
        with pytest.raises(PRMDataError, match=f"bad{i}.jsonl:3: .*{message}"):
            load_prm_rows(path)


def test_bad_shepherd_and_prm800k_rows(tmp_path):
    bad_label = shepherd("Q", ["a", "b"], [True, True])
    bad_label["label"] = bad_label["label"].replace("+", "?", 1)
    no_step = {"input": f"Q just text {TAG}", "label": "Q just text +"}
    for i, (record, message) in enumerate(
        [(bad_label, "step 1"), (no_step, "Step 1:"), ({"input": "Q", "label": "Q"}, "must end")]
    ):
        path = write_jsonl(tmp_path / f"s{i}.jsonl", [record])
        with pytest.raises(PRMDataError, match=f"s{i}.jsonl:1: .*{message}"):
            load_prm_rows(path, "shepherd")
    path = write_jsonl(
        tmp_path / "p.jsonl", [prm800k([step([1], chosen=0)]), prm800k([step([1], 3)])]
    )
    with pytest.raises(PRMDataError, match="p.jsonl:2: step 1: chosen_completion 3"):
        load_prm_rows(path)


def test_unknown_format_and_missing_sources(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "x.jsonl", [{"foo": 1}])
    with pytest.raises(PRMDataError, match="x.jsonl:1: cannot tell the format"):
        load_prm_rows(path)
    with pytest.raises(ValueError, match="unknown PRM data format"):
        load_prm_rows(path, "csv")
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    # Missing files, and names that only a local path can be: never sent to the hub.
    for source in (tmp_path / "missing.jsonl", "missing.json", "./data", "runs/data", "~/x y"):
        with pytest.raises(PRMDataError) as info:
            load_prm_rows(source)
        assert str(info.value) == f"{source}: no such file"
    with pytest.raises(PRMDataError) as info:
        load_prm_rows(tmp_path / "runs")
    assert str(info.value) == f"{tmp_path / 'runs'}: is a directory, not a data file"


def test_hub_name_with_the_hub_unreachable_fails_at_once(tmp_path, monkeypatch):
    import socket

    import datasets
    from huggingface_hub import constants

    with socket.socket() as s:  # a loopback port nobody listens on: refused at once
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "empty-cache")
    with pytest.raises(PRMDataError) as info:
        load_prm_rows("someone/no-such-prm-dataset")
    assert str(info.value) == (
        "someone/no-such-prm-dataset: no such file, and no Hugging Face dataset of that name in "
        f"the local cache (the hub at {endpoint} cannot be reached)"
    )
    # The library's own flags are back as they were: offline mode was for that one load.
    assert (constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE) == (False, False)


def test_hub_rows_go_through_the_converters(monkeypatch):
    import datasets

    calls = []

    def fake(name, config=None, split=None):
        calls.append((name, config, split))
        return [shepherd("Q", ["a"], [True])]

    monkeypatch.setattr(datasets, "load_dataset", fake)
    assert load_prm_rows("org/math-shepherd") == [
        {"prompt": "Q", "completions": ["a"], "labels": [True]}
    ]
    assert calls == [("org/math-shepherd", None, "train")]


# --- hostile input through `amcs train`: one line, exit status 2, before any model loads ---


def test_non_utf8_data_names_file_and_line(tmp_path):
    data = tmp_path / "d.jsonl"
    good = json.dumps({"prompt": "Q", "completions": ["a"], "labels": [True]}).encode()
    data.write_bytes(good + b"\n" + good + b"\n" + b'{"prompt": "\xc3(", "completions": []}\n')
    with pytest.raises(PRMDataError) as info:
        load_prm_rows(data)
    assert str(info.value) == (
        f"{data}:3: not UTF-8 text (byte 0xc3 at column 13); save the file as UTF-8"
    )
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "m")])
    assert (result.exit_code, result.stderr) == (2, f"error: {info.value}\n")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["true", "false"], "label 1 is 'true'"),
        ([True, None], "label 2 is None"),
        ([1, 2], "label 2 is 2"),
    ],
)
def test_labels_must_be_booleans_or_0_1(tmp_path, labels, message):
    data = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"prompt": "Q", "completions": ["a", "b"], "labels": [1, 0]},
            {"prompt": "Q", "completions": ["a", "b"], "labels": labels},
        ],
    )
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert result.stderr == f"error: {data}:2: labels must be booleans (or 0/1), {message}\n"


def test_unmeasured_values_load_as_none(tmp_path):
    """amcs generate writes null where a step's MC was not measured; it loads as None."""
    path = tmp_path / "data.jsonl"
    row = {"prompt": "Q", "completions": ["a", "b"], "labels": [True, False]}
    path.write_text(json.dumps(row | {"values": [None, 0.0], "rollouts": [0, 6]}) + "\n")
    assert load_prm_rows(path)[0]["values"] == [None, 0.0]
