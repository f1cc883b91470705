"""Output files of amcs generate: round trip, crash recovery, the lock and shards (the exporters
are tested in test_export.py)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from amcs.records import (
    OutputError,
    OutputExistsError,
    OutputLockedError,
    OutputMismatchError,
    RecordFormatError,
    RecordWriter,
    committed_tokens,
    meta_path_for,
    read_data,
    read_meta,
    read_run_header,
    within_budget,
)


def path(steps, labels=None, values=None):
    labels = labels if labels is not None else [True] * len(steps)
    return {
        "completions": steps,
        "labels": labels,
        "values": values if values is not None else [1.0 if x else 0.0 for x in labels],
        "rollouts": [4] * len(steps),
        "method": "amcs",
        "model": "tiny",
    }


def write_sample(writer, problem_id, n_paths=2):
    writer.write_problem(
        problem_id,
        f"question {problem_id}?",
        "42",
        [path([f"step {i}", "the answer is 42"]) for i in range(n_paths)],
        stats={"rollouts": 8},
    )


def start_python(code, tmp_path):
    """A child python that runs ``code`` with ``out`` set and prints 'ready' when it is set up."""
    return subprocess.Popen(
        [sys.executable, "-c", f"from pathlib import Path\nout = Path({str(tmp_path)!r})\n{code}"],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_meta_path():
    assert meta_path_for("a/data.jsonl").as_posix() == "a/data.meta.jsonl"
    assert meta_path_for("a/data.json").as_posix() == "a/data.json.meta.jsonl"


def test_round_trip(tmp_path):
    out = tmp_path / "data.jsonl"
    sizes = []
    with RecordWriter(out) as w:
        assert w.done_ids == set() and w.completed == []
        for pid, n in (("a", 2), ("b", 0), ("c", 3)):
            write_sample(w, pid, n)
            sizes.append(out.stat().st_size)
        with pytest.raises(ValueError, match="already"):
            write_sample(w, "a")
    with RecordWriter(out) as w:
        assert w.done_ids == {"a", "b", "c"}
        assert [m["problem_id"] for m in w.completed] == ["a", "b", "c"]
        assert [m["data_end"] for m in w.completed] == sizes
        assert [m["paths"] for m in w.completed] == [2, 0, 3]
        assert w.completed[0]["stats"] == {"rollouts": 8} and w.completed[0]["tree"] is None
    lines = list(read_data(out))
    assert [line["problem_id"] for line in lines] == ["a", "a", "c", "c", "c"]
    assert list(lines[0]) == [
        "prompt",
        "completions",
        "labels",
        "values",
        "rollouts",
        "problem_id",
        "answer",
        "method",
        "model",
    ]
    assert lines[0]["prompt"] == "question a?" and lines[0]["labels"] == [True, True]
    assert read_meta(meta_path_for(out)) == w.completed


def test_bad_path_writes_nothing(tmp_path):
    out = tmp_path / "data.jsonl"
    with RecordWriter(out) as w:
        with pytest.raises(ValueError, match="same length"):
            w.write_problem("a", "q", "1", [path(["s1", "s2"], labels=[True])])
        assert out.stat().st_size == 0 and w.done_ids == set()


def test_torn_lines_are_cut_and_writing_continues(tmp_path):
    out = tmp_path / "data.jsonl"
    meta = meta_path_for(out)
    with RecordWriter(out) as w:
        write_sample(w, "a")
        write_sample(w, "b")
    committed = out.stat().st_size
    with open(out, "a") as f:  # a problem that crashed mid data, then mid meta line
        f.write(json.dumps({"prompt": "q", "completions": [], "labels": [], "problem_id": "c"}))
        f.write('\n{"prompt": "half a li')
    with open(meta, "a") as f:
        f.write('{"problem_id": "c", "sta')
    with RecordWriter(out) as w:
        assert w.done_ids == {"a", "b"}
        assert out.stat().st_size == committed
        assert meta.read_text().endswith("\n")
        write_sample(w, "c")
    assert [line["problem_id"] for line in read_data(out)] == ["a", "a", "b", "b", "c", "c"]
    assert [m["problem_id"] for m in read_meta(meta)] == ["a", "b", "c"]


def test_data_without_meta_line_is_dropped(tmp_path):
    out = tmp_path / "data.jsonl"
    with RecordWriter(out) as w:
        write_sample(w, "a")
    committed = out.read_bytes()
    with open(out, "a") as f:  # complete data lines whose meta line never made it
        for _ in range(3):
            line = {"prompt": "q", "completions": ["s"], "labels": [True], "problem_id": "b"}
            f.write(json.dumps(line) + "\n")
    with RecordWriter(out) as w:
        assert w.done_ids == {"a"} and out.read_bytes() == committed
        write_sample(w, "b")
    assert [line["problem_id"] for line in read_data(out)] == ["a", "a", "b", "b"]


def test_corrupt_meta_line_in_the_middle_is_an_error(tmp_path):
    out = tmp_path / "data.jsonl"
    with RecordWriter(out) as w:
        write_sample(w, "a")
    meta = meta_path_for(out)
    meta.write_text("not json\n" + meta.read_text())
    with pytest.raises(RecordFormatError, match=r"data\.meta\.jsonl:1: invalid JSON"):
        RecordWriter(out)
    RecordWriter(out, resume=False, overwrite=True).close()  # the failed open released the lock


def test_data_shorter_than_meta_is_an_error(tmp_path):
    out = tmp_path / "data.jsonl"
    with RecordWriter(out) as w:
        write_sample(w, "a")
    out.write_text("")
    with pytest.raises(OutputMismatchError, match="do not belong together"):
        RecordWriter(out)


def test_read_data_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"prompt": "q", "completions": ["s"], "labels": [True]}) + "\n{oops\n"
    )
    with pytest.raises(RecordFormatError, match=r"bad\.jsonl:2: malformed JSON"):
        list(read_data(bad))
    bad.write_bytes(b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(RecordFormatError, match=r"bad\.jsonl:1: not UTF-8 text"):
        list(read_data(bad))
    bad.write_text(json.dumps({"prompt": "q", "completions": ["s"], "labels": []}) + "\n")
    with pytest.raises(RecordFormatError, match=r"bad\.jsonl:1: expected"):
        list(read_data(bad))


CRASH_WRITER = """
from amcs.records import RecordWriter
steps = ["a fairly long step of reasoning " * 40] * 6
p = {"completions": steps, "labels": [True] * 6, "values": [0.5] * 6, "rollouts": [8] * 6,
     "method": "amcs", "model": "m"}
with RecordWriter(out / "data.jsonl") as w:
    print("ready", flush=True)
    for i in range(100000):
        w.write_problem(f"p{i}", "q", "1", [p] * (1 + i % 5), stats={"i": i})
"""


def test_sigkill_mid_run_leaves_a_resumable_file(tmp_path):
    out = tmp_path / "data.jsonl"
    child = start_python(CRASH_WRITER, tmp_path)
    try:
        assert child.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 20
        meta = meta_path_for(out)
        while time.monotonic() < deadline and (not meta.exists() or meta.stat().st_size < 20_000):
            time.sleep(0.01)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    with RecordWriter(out) as w:
        done = w.completed
        assert len(done) >= 2
        ids = [m["problem_id"] for m in done]
        assert len(set(ids)) == len(ids) == len(w.done_ids)
        assert out.stat().st_size == done[-1]["data_end"]
        next_id = f"p{len(ids)}"
        write_sample(w, next_id)
    per_problem = {}
    for line in read_data(out):
        per_problem[line["problem_id"]] = per_problem.get(line["problem_id"], 0) + 1
    assert per_problem == {m["problem_id"]: m["paths"] for m in done} | {next_id: 2}


HOLDER = """
from amcs.records import RecordWriter
w = RecordWriter(out / "data.jsonl")
print("ready", flush=True)
import time
time.sleep(60)
"""


def test_lock_refuses_a_second_writer_until_the_first_dies(tmp_path):
    out = tmp_path / "data.jsonl"
    child = start_python(HOLDER, tmp_path)
    try:
        assert child.stdout.readline().strip() == "ready"
        with pytest.raises(OutputLockedError, match="another amcs process is writing"):
            RecordWriter(out)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert (tmp_path / "data.jsonl.lock").exists()  # a stale lock file does not block
    with RecordWriter(out) as w:
        write_sample(w, "a")


def test_no_resume_refuses_and_overwrite_replaces(tmp_path):
    out = tmp_path / "data.jsonl"
    with RecordWriter(out) as w:
        write_sample(w, "a")
    before = out.read_bytes(), meta_path_for(out).read_bytes()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        RecordWriter(out, resume=False)
    # --overwrite without --no-resume is refused, and changes nothing.
    with pytest.raises(OutputError, match="only with --no-resume"):
        RecordWriter(out, overwrite=True)
    assert (out.read_bytes(), meta_path_for(out).read_bytes()) == before
    with RecordWriter(out, resume=False, overwrite=True) as w:
        assert w.done_ids == set() and not out.exists()
        write_sample(w, "b")
    assert [m["problem_id"] for m in read_meta(meta_path_for(out))] == ["b"]
    with RecordWriter(tmp_path / "fresh.jsonl", resume=False) as w:
        write_sample(w, "a")


FP = {"method": "amcs", "model": "tiny", "seed": 0, "problems": "arith", "search": {"k0": 6}}


def _committed(tmp_path, n=3, fingerprint=FP):
    out = tmp_path / "data.jsonl"
    with RecordWriter(out, fingerprint=fingerprint) as w:
        for i in range(n):
            write_sample(w, f"p{i}", n_paths=i % 3)
    return out, meta_path_for(out)


def _snapshot(*paths):
    return [p.read_bytes() if p.exists() else None for p in paths]


def test_nothing_is_created_until_the_first_commit(tmp_path):
    out = tmp_path / "data.jsonl"
    with RecordWriter(out, fingerprint=FP) as w:
        assert w.done_ids == set()
    assert list(tmp_path.iterdir()) == []  # no data, meta or lock file left behind
    with RecordWriter(out, fingerprint=FP) as w:
        write_sample(w, "a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl", "data.meta.jsonl"]
    header = json.loads(meta_path_for(out).read_text().splitlines()[0])
    assert header == {"format": "amcs-meta", "version": 1, "fingerprint": FP}
    assert read_run_header(meta_path_for(out)) == header
    assert [m["problem_id"] for m in read_meta(meta_path_for(out))] == ["a"]


def test_resume_without_the_meta_file_refuses_and_keeps_the_data(tmp_path):
    out, meta = _committed(tmp_path)
    meta.unlink()
    before = out.read_bytes()
    with pytest.raises(OutputMismatchError, match="meta file data.meta.jsonl is missing"):
        RecordWriter(out, fingerprint=FP)
    assert out.read_bytes() == before and not meta.exists()


def test_resume_with_another_runs_meta_refuses_and_changes_nothing(tmp_path):
    out, meta = _committed(tmp_path / "a", n=3)
    other_out, other_meta = _committed(tmp_path / "b", n=5)
    # Same ids, other paths per problem: offsets do not fall where this data file's lines end.
    with RecordWriter(other_out, fingerprint=FP) as w:
        write_sample(w, "extra", n_paths=4)
    meta.write_bytes(other_meta.read_bytes())
    before = _snapshot(out, meta)
    with pytest.raises(OutputMismatchError, match="do not belong together"):
        RecordWriter(out, fingerprint=FP)
    assert _snapshot(out, meta) == before


def test_resume_checks_problem_ids_of_every_committed_line(tmp_path):
    out, meta = _committed(tmp_path, n=3)
    # Same byte layout, another problem's id in a committed line.
    text = out.read_text().replace('"problem_id": "p1"', '"problem_id": "px"', 1)
    out.write_text(text)
    before = _snapshot(out, meta)
    with pytest.raises(OutputMismatchError, match=r"data.jsonl:1: expected a line of problem 'p1'"):
        RecordWriter(out, fingerprint=FP)
    assert _snapshot(out, meta) == before


def test_resume_refuses_junk_after_the_last_commit(tmp_path):
    out, meta = _committed(tmp_path, n=2)
    with open(out, "a") as f:
        f.write("this is not ours\n")
    before = _snapshot(out, meta)
    with pytest.raises(OutputMismatchError, match="not an uncommitted problem"):
        RecordWriter(out, fingerprint=FP)
    assert _snapshot(out, meta) == before


def test_resume_with_another_configuration_is_refused_naming_it(tmp_path):
    out, meta = _committed(tmp_path)
    before = _snapshot(out, meta)
    other = dict(FP, seed=1, search={"k0": 8})
    with pytest.raises(OutputMismatchError) as exc:
        RecordWriter(out, fingerprint=other)
    assert "search.k0: 6 -> 8" in str(exc.value) and "seed: 0 -> 1" in str(exc.value)
    assert "--no-resume --overwrite" in str(exc.value)
    assert _snapshot(out, meta) == before
    with RecordWriter(out, fingerprint=FP) as w:  # the same configuration resumes
        assert w.done_ids == {"p0", "p1", "p2"}


def test_a_run_written_before_a_fingerprint_key_existed_still_resumes(tmp_path):
    """Runs written before min_step_chars / max_solution_steps existed split steps as their
    neutral values do (0, 0): resuming them with those values works, with others it is refused."""
    out, meta = _committed(tmp_path)  # FP has no min_step_chars / max_solution_steps
    later = dict(FP, search={"k0": 6, "min_step_chars": 0, "max_solution_steps": 0})
    with RecordWriter(out, fingerprint=later) as w:
        assert w.done_ids == {"p0", "p1", "p2"}
    before = _snapshot(out, meta)
    other = dict(FP, search={"k0": 6, "min_step_chars": 8, "max_solution_steps": 0})
    with pytest.raises(OutputMismatchError, match="search.min_step_chars: 0 -> 8"):
        RecordWriter(out, fingerprint=other)
    assert _snapshot(out, meta) == before


def test_a_start_that_committed_nothing_leaves_no_header_behind(tmp_path):
    out = tmp_path / "data.jsonl"
    other = dict(FP, seed=9)
    # Another configuration crashed while writing its first meta line: nothing is committed.
    header = {"format": "amcs-meta", "version": 1, "fingerprint": other}
    meta_path_for(out).write_text(json.dumps(header) + '\n{"problem_id": "a", "sta')
    out.write_text("")
    with RecordWriter(out, fingerprint=FP) as w:
        assert w.done_ids == set()
        write_sample(w, "a")
    assert read_run_header(meta_path_for(out))["fingerprint"] == FP
    with RecordWriter(out, fingerprint=FP) as w:  # and it resumes as this run's
        assert w.done_ids == {"a"}


def test_meta_without_a_header_is_refused(tmp_path):
    out, meta = _committed(tmp_path)
    meta.write_text("".join(meta.read_text().splitlines(keepends=True)[1:]))
    before = _snapshot(out, meta)
    with pytest.raises(OutputMismatchError, match="no run fingerprint"):
        RecordWriter(out, fingerprint=FP)
    assert _snapshot(out, meta) == before


def test_failed_problems_are_retried_and_the_last_record_wins(tmp_path):
    out = tmp_path / "data.jsonl"
    with RecordWriter(out, fingerprint=FP) as w:
        write_sample(w, "a")
        w.write_problem("b", "q b?", "1", [], status="failed", reason="ConnectionError: down")
        write_sample(w, "c")
    with RecordWriter(out, fingerprint=FP, retry_failed=False) as w:
        assert w.done_ids == {"a", "b", "c"} and w.failed_ids == {"b"}
    with RecordWriter(out, fingerprint=FP) as w:
        assert w.done_ids == {"a", "c"} and w.failed_ids == {"b"}
        write_sample(w, "b", n_paths=1)
        assert w.failed_ids == set()
        with pytest.raises(ValueError, match="already"):
            write_sample(w, "b")
    with RecordWriter(out, fingerprint=FP) as w:
        assert w.done_ids == {"a", "b", "c"} and w.failed_ids == set()
    records = read_meta(meta_path_for(out))
    assert [(m["problem_id"], m["status"]) for m in records] == [
        ("a", "ok"),
        ("b", "failed"),
        ("c", "ok"),
        ("b", "ok"),
    ]
    assert [line["problem_id"] for line in read_data(out)] == ["a", "a", "c", "c", "b"]


def test_output_is_a_directory_or_unwritable(tmp_path):
    with pytest.raises(OutputError, match="is a directory"):
        RecordWriter(tmp_path)
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions
            pytest.skip("running as root: a read-only folder is still writable")
        with pytest.raises(OutputError, match="cannot write in"):
            RecordWriter(locked / "d.jsonl")
    finally:
        locked.chmod(0o755)


# --- the budget cut (benchmarks/prm_comparison.py's data streams) --------------------------------------------------------------------------------


def one_step_path(step):
    return {
        "completions": [step],
        "labels": [True],
        "values": [1.0],
        "rollouts": [1],
        "method": "amcs",
        "model": "m",
    }


def write_stream(tmp_path):
    """a ok 100 (2 paths), b failed 50, c ok 200, d ok 100, b retried ok 30 (1 path)."""
    out = tmp_path / "s.jsonl"
    with RecordWriter(out) as w:
        w.write_problem(
            "a", "qa", "1", [one_step_path("a1"), one_step_path("a2")], stats={"tokens": 100}
        )
        w.write_problem("b", "qb", "2", [], status="failed", reason="x", stats={"tokens": 50})
        w.write_problem("c", "qc", "3", [one_step_path("c1")], stats={"tokens": 200})
        w.write_problem("d", "qd", "4", [one_step_path("d1")], stats={"tokens": 100})
    with RecordWriter(out) as w:  # a resumed run retries b
        w.write_problem("b", "qb", "2", [one_step_path("b1")], stats={"tokens": 30})
    return out


def test_budget_cut_keeps_the_longest_prefix_and_no_rows_of_failed_problems(tmp_path):
    out = write_stream(tmp_path)
    # 100 + 50 + 200 = 350 fits 360; d would make 450. b failed inside the prefix (its tokens
    # count) and its ok retry lies beyond it: none of b's rows.
    rows, spent, problems, failed = within_budget(out, 360)
    assert (spent, problems, failed) == (350, 2, 1)
    assert [r["completions"][0] for r in rows] == ["a1", "a2", "c1"]
    assert within_budget(out, 350)[1:] == (350, 2, 1)  # the budget itself fits
    assert within_budget(out, 99)[1:] == (0, 0, 0)
    rows, spent, problems, failed = within_budget(out, 10_000)
    assert (spent, problems, failed) == (480, 4, 1)
    assert sorted(r["completions"][0] for r in rows) == ["a1", "a2", "b1", "c1", "d1"]
    assert committed_tokens(out) == (480, 4)
