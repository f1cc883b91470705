"""A hostile but fair user: wrong flags, bad numbers, the output named as the input, a deleted
meta file, another run's meta file, kill -9 at random moments, a server that goes away.

Every case goes through the real `amcs` program (a subprocess) and asserts what the user sees —
one line, exit code 2 (or the documented behaviour), no traceback — and that no byte of their
input or output was lost or changed.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from amcs.records import meta_path_for, read_data, read_meta

# Small searches keep this fast; the code paths are the defaults'.
SMALL = ["--set=max_new_tokens=120", "--set=rollout_budget=30", "--set=max_search_count=2"]


def amcs(*args: str, cwd: Path | None = None, timeout: float = 600, env=None):
    """Run the real program; return (exit code, stdout, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    return proc.returncode, proc.stdout, proc.stderr


def one_line_error(code: int, stderr: str, *fragments: str, exit_code: int = 2) -> str:
    """Assert a one-line `error: ...` with the given exit code and no traceback; return it."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert code == exit_code, f"exit {code}: {stderr[-2000:]}"
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def generate(out: Path, *extra: str, problems: str = "arith:4"):
    return amcs("generate", "--problems", problems, "--out", str(out), "-q", *SMALL, *extra)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 4-problem run, copied fresh into each test's folder by `run_copy`."""
    folder = tmp_path_factory.mktemp("finished")
    code, _, stderr = generate(folder / "data.jsonl", "--concurrency", "4")
    assert code == 0, stderr[-3000:]
    assert len(read_meta(meta_path_for(folder / "data.jsonl"))) == 4
    return folder


@pytest.fixture
def run_copy(finished_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(finished_run, folder)
    return folder / "data.jsonl"


# --- options checked before any model loads ------------------------------------------------------

BAD_OPTIONS = [
    (["--limit", "-1"], "--limit must be an integer >= 1, got -1"),
    (["--limit", "0"], "--limit must be an integer >= 1"),
    (["--concurrency", "0"], "--concurrency must be an integer >= 1, got 0"),
    (["--concurrency", "-1"], "--concurrency must be an integer >= 1"),
    (["--max-inflight", "0"], "--max-inflight must be an integer >= 1"),
    (["--max-batch-size", "0"], "--max-batch-size must be an integer >= 1"),
    (["--retries", "-2"], "--retries must be an integer >= 0"),
    (["--patience", "-5"], "--patience must be a number >= 0"),
    (["--request-timeout", "0"], "--request-timeout must be a number > 0"),
    (["--set", "k0=abc"], "k0 must be an integer >= 1, got 'abc'"),
    (["--set", "k0=2.5"], "k0 must be an integer >= 1, got 2.5"),
    (["--set", "k0=0"], "k0 must be an integer >= 1"),
    (["--set", "temporal_decay=0"], "temporal_decay must be a number > 0"),
    (["--set", "zero_exit_upper=2"], "zero_exit_upper must be a number in (0, 1]"),
    (["--set", "clusters=0"], "clusters must be an integer >= 1"),
    (["--set", "alpha=0"], "alpha must be a number in (0, 1]"),
    (["--set", "beta=1.5"], "beta must be a number in (0, 1]"),
    (["--set", "threshold=1"], "threshold must be a number in [0, 1)"),
    (["--set", "top_p=0"], "top_p must be a number in (0, 1]"),
    (["--set", "k_max_node=3"], "k_max_node (3) must be >= k0 (6)"),
    (["--set", "estimator=magic"], "estimator must be one of adaptive, fixed"),
    (["--set", "nonsense=1"], "unknown search parameter(s): nonsense"),
    (["--set", "k0"], "--set expects KEY=VALUE"),
    (["--method", "magic"], "unknown method 'magic'"),
    (["--backend", "bogus"], "unknown --backend 'bogus'"),
    (["--backend", "openai"], "needs a server URL"),
    (["--shard", "5/4"], "--shard: bad shard '5/4'"),
    (["--shard", "abc"], "--shard: bad shard 'abc'"),
    (["--prompt-format", "fancy"], "--prompt-format must be auto, chat or plain"),
    (["--overwrite"], "--overwrite applies only with --no-resume"),
    (["--model", "/nonexistent/policy"], "--model /nonexistent/policy: no such model directory"),
    (["--model", "./nope"], "--model ./nope: no such model directory"),
]


@pytest.mark.parametrize(
    ("args", "message"), BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS]
)
def test_bad_options_are_one_line_and_write_nothing(tmp_path, args, message):
    code, _, stderr = amcs("generate", "--out", str(tmp_path / "o.jsonl"), *args)
    one_line_error(code, stderr, message)
    assert list(tmp_path.iterdir()) == []  # no data, meta or lock file left behind


def test_bad_recipe_values_name_the_option(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("concurrency: lots\nsearch:\n  k0: 2.5\n")
    code, _, stderr = amcs("generate", "--recipe", str(recipe), "--out", str(tmp_path / "o.jsonl"))
    one_line_error(code, stderr, "--concurrency must be an integer >= 1, got 'lots'")
    recipe.write_text("search:\n  k0: 2.5\n")
    code, _, stderr = amcs("generate", "--recipe", str(recipe), "--out", str(tmp_path / "o.jsonl"))
    one_line_error(code, stderr, "k0 must be an integer >= 1, got 2.5")
    code, _, stderr = amcs(
        "generate", "--recipe", str(tmp_path), "--out", str(tmp_path / "o.jsonl")
    )
    one_line_error(code, stderr, str(tmp_path))


# --- bad inputs -----------------------------------------------------------------------------------


def test_bad_problem_inputs_are_one_line(tmp_path):
    out = str(tmp_path / "out" / "o.jsonl")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(
        b'{"question": "1+1", "answer": "2"}\n{"question": "caf\xe9", "answer": "1"}\n'
    )
    code, _, stderr = amcs("generate", "--problems", str(latin), "--out", out)
    one_line_error(code, stderr, "latin.jsonl:2: not UTF-8 text")
    code, _, stderr = amcs("generate", "--problems", str(tmp_path), "--out", out)
    one_line_error(code, stderr, str(tmp_path))
    parquet = tmp_path / "p.parquet"
    parquet.write_bytes(b"PAR1 this is not a parquet file")
    code, _, stderr = amcs("generate", "--problems", str(parquet), "--out", out)
    one_line_error(code, stderr, "p.parquet")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, _, stderr = amcs("generate", "--problems", str(empty), "--out", out)
    one_line_error(code, stderr, "empty.jsonl")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_messages_are_printed_as_they_are(tmp_path):
    # ":-1:" is an emoji code and "[red]" markup to Rich; a message must show them verbatim.
    problems = tmp_path / "[red]:-1:.jsonl"
    problems.write_text('{"question": "oops"}\n')
    code, _, stderr = amcs("generate", "--problems", str(problems), "--out", str(tmp_path / "o"))
    one_line_error(code, stderr, "[red]:-1:.jsonl:1: missing answer")


def test_out_may_not_be_an_input_or_a_directory(tmp_path):
    problems = tmp_path / "problems.jsonl"
    problems.write_text('{"question": "What is 1 + 1?", "answer": "2"}\n')
    before = problems.read_bytes()
    code, _, stderr = amcs("generate", "--problems", str(problems), "--out", str(problems))
    one_line_error(code, stderr, "would overwrite the input")
    # Also when the problem file is the output's meta file.
    meta_named = tmp_path / "x.meta.jsonl"
    meta_named.write_bytes(before)
    code, _, stderr = amcs(
        "generate", "--problems", str(meta_named), "--out", str(tmp_path / "x.jsonl")
    )
    one_line_error(code, stderr, "would overwrite the input")
    assert problems.read_bytes() == before == meta_named.read_bytes()
    code, _, stderr = amcs("generate", "--out", str(tmp_path))
    one_line_error(code, stderr, "is a directory")
    code, _, stderr = amcs("generate", "--out", "/proc/amcs-cannot/o.jsonl")
    one_line_error(code, stderr, "/proc/amcs-cannot")


def test_debug_shows_the_traceback(tmp_path):
    out = str(tmp_path / "o.jsonl")
    code, _, stderr = amcs("generate", "--recipe", str(tmp_path), "--out", out)
    one_line_error(code, stderr, "Is a directory")
    code, _, stderr = amcs("--debug", "generate", "--recipe", str(tmp_path), "--out", out)
    assert code != 0 and "Traceback" in stderr and "IsADirectoryError" in stderr
    # Also for errors the command handles itself (here: a problem file that is a directory).
    code, _, stderr = amcs(
        "generate", "--problems", str(tmp_path), "--out", out, env={"AMCS_DEBUG": "1"}
    )
    assert code == 2 and "Traceback" in stderr and "is a directory" in stderr


# --- resume that cannot destroy data --------------------------------------------------------------


def test_deleted_meta_file_refuses_and_keeps_the_data(run_copy):
    meta_path_for(run_copy).unlink()
    before = snapshot(run_copy.parent)
    code, _, stderr = generate(run_copy)
    one_line_error(code, stderr, "meta file data.meta.jsonl is missing", "--overwrite")
    assert snapshot(run_copy.parent) == before


def test_meta_file_of_another_run_refuses_and_changes_nothing(run_copy, tmp_path):
    other = tmp_path / "other" / "data.jsonl"
    code, _, stderr = generate(other, "--seed", "5", problems="arith:3")
    assert code == 0, stderr[-2000:]
    # The same options except the seed: refused by the fingerprint.
    shutil.copy(meta_path_for(other), meta_path_for(run_copy))
    before = snapshot(run_copy.parent)
    code, _, stderr = generate(run_copy)
    one_line_error(code, stderr, "seed: 5 -> 0")
    assert snapshot(run_copy.parent) == before
    # Its header made to match: refused by the offsets and problem ids it does not prove.
    lines = meta_path_for(other).read_text().splitlines(keepends=True)
    header = json.loads(lines[0])
    header["fingerprint"]["seed"] = 0
    meta_path_for(run_copy).write_text(json.dumps(header) + "\n" + "".join(lines[1:]))
    before = snapshot(run_copy.parent)
    code, _, stderr = generate(run_copy)
    one_line_error(code, stderr, "do not belong together")
    assert snapshot(run_copy.parent) == before


def test_resume_with_other_options_is_refused_naming_them(run_copy):
    before = snapshot(run_copy.parent)
    code, _, stderr = generate(run_copy, "--set", "k0=8", "--method", "amcs")
    one_line_error(code, stderr, "search.k0: 6 -> 8", "--no-resume --overwrite")
    code, _, stderr = generate(run_copy, "--model", "some/other-model")
    one_line_error(code, stderr, "model: 'amcs/tiny-arith-policy' -> 'some/other-model'")
    assert snapshot(run_copy.parent) == before


def test_overwrite_without_no_resume_keeps_a_finished_output(run_copy):
    before = snapshot(run_copy.parent)
    code, _, stderr = generate(run_copy, "--overwrite")
    one_line_error(code, stderr, "--overwrite applies only with --no-resume")
    code, _, stderr = generate(run_copy, "--no-resume")
    one_line_error(code, stderr, "already exists", "--overwrite")
    assert snapshot(run_copy.parent) == before


def test_a_finished_run_resumes_to_nothing_without_loading_a_model(run_copy):
    before = snapshot(run_copy.parent)
    code, _, stderr = generate(run_copy)
    assert code == 0 and "all 4 problems are already done" in stderr, stderr[-2000:]
    assert snapshot(run_copy.parent) == before


def test_torn_lines_in_the_middle_are_one_line_errors(run_copy):
    meta = meta_path_for(run_copy)
    lines = meta.read_text().splitlines(keepends=True)
    meta.write_text(lines[0] + lines[1][: len(lines[1]) // 2] + "\n" + "".join(lines[2:]))
    before = snapshot(run_copy.parent)
    code, _, stderr = generate(run_copy)
    one_line_error(code, stderr, "data.meta.jsonl:2: invalid JSON")
    assert snapshot(run_copy.parent) == before


def test_a_changed_problem_file_is_refused(tmp_path):
    problems = tmp_path / "p.jsonl"
    rows = [
        {"id": f"q{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(2)
    ]
    problems.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o" / "d.jsonl"
    code, _, stderr = generate(out, problems=str(problems))
    assert code == 0, stderr[-2000:]
    rows[1]["question"] = "What is 7 + 7?"
    problems.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = snapshot(out.parent)
    code, _, stderr = generate(out, problems=str(problems))
    one_line_error(code, stderr, "problem 'q1'", "another question")
    assert snapshot(out.parent) == before


# --- kill -9 at random moments ----------------------------------------------------------------------

KILL_PROBLEMS = "arith:60"
KILL_ARGS = ["--seed", "11"]


def _committed(meta: Path) -> int:
    return len(read_meta(meta)) if meta.exists() else 0


def test_kill_9_at_eight_random_moments_loses_nothing(tmp_path):
    whole = tmp_path / "whole" / "data.jsonl"
    code, _, stderr = generate(whole, *KILL_ARGS, "--concurrency", "8", problems=KILL_PROBLEMS)
    assert code == 0, stderr[-3000:]

    out = tmp_path / "killed" / "data.jsonl"
    meta = meta_path_for(out)
    rng = random.Random(7)
    kills = 0
    args = [sys.executable, "-m", "cli", "generate", "--problems", KILL_PROBLEMS]
    # Fewer searches at once than the uninterrupted run (the bytes must not depend on it), so
    # commits come a few at a time and the kills land before the end.
    args += ["--out", str(out), "-q", *SMALL, *KILL_ARGS, "--concurrency", "2"]
    while kills < 8:
        before = _committed(meta)
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # Half of the kills land after a new commit (mid-search of the next problems), the
        # others at a random moment of start-up or search.
        wait_commit = rng.random() < 0.5
        deadline = time.monotonic() + (120 if wait_commit else rng.uniform(0.3, 5))
        while time.monotonic() < deadline and proc.poll() is None:
            if wait_commit and _committed(meta) > before:
                time.sleep(rng.uniform(0, 0.5))
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before kill {kills + 1}: {proc.communicate()}"
        proc.kill()
        proc.wait()
        kills += 1
        # After every kill, what is committed is what the uninterrupted run wrote there.
        committed = read_meta(meta) if meta.exists() else []
        if committed:
            end = committed[-1]["data_end"]
            assert out.read_bytes()[:end] == whole.read_bytes()[:end]
    code, _, stderr = amcs(*args[3:])
    assert code == 0, stderr[-3000:]
    records = read_meta(meta)
    ids = [m["problem_id"] for m in records]
    assert len(ids) == len(set(ids)) == 60  # none lost, none duplicated
    assert all(m["status"] == "ok" for m in records)
    assert [json.loads(line) for line in out.read_text().splitlines()]  # none torn
    per_problem: dict[str, int] = {}
    for row in read_data(out):
        per_problem[row["problem_id"]] = per_problem.get(row["problem_id"], 0) + 1
    assert per_problem == {m["problem_id"]: m["paths"] for m in records if m["paths"]}
    assert out.read_bytes() == whole.read_bytes()  # the uninterrupted run, byte for byte


# --- a server that goes away and comes back ---------------------------------------------------------


class RestartableServer:
    """The loopback /generate server, which can stop listening and come back on the same port."""

    def __init__(self):
        from amcs.testing import LoopbackServer

        self.server = LoopbackServer()
        self.url = self.server.url

    def stop(self):
        """Refuse new connections and drop requests on open keep-alive connections unanswered."""
        with self.server._lock:
            self.server.die_after = self.server.served
        self.server.stop_serving()

    def start_again(self):
        s = self.server
        s.die_after = None
        s.httpd = ThreadingHTTPServer(("127.0.0.1", s.port), s._handler())
        s.httpd.daemon_threads = True
        s._thread = threading.Thread(target=s.httpd.serve_forever, daemon=True)
        s._thread.start()
        s._closed = False

    def close(self):
        self.server.close()


def test_a_server_stopped_for_10_s_mid_run_ends_with_no_failed_problem(tmp_path):
    server = RestartableServer()
    try:
        out = tmp_path / "d.jsonl"
        args = [
            sys.executable,
            "-m",
            "cli",
            "generate",
            "--problems",
            "arith:12",
            "--out",
            str(out),
        ]
        args += [
            "-q",
            *SMALL,
            "--backend",
            "sglang-http",
            "--url",
            server.url,
            "--concurrency",
            "4",
        ]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and _committed(meta_path_for(out)) < 2:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.05)
        server.stop()
        stopped_at = server.server.served
        time.sleep(10)
        server.start_again()
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        assert "waiting for the server" in stderr and "answers again" in stderr
        records = read_meta(meta_path_for(out))
        assert len(records) == 12 and all(m["status"] == "ok" for m in records)
        assert server.server.served > stopped_at  # work went on after the restart
    finally:
        server.close()


# --- issue 21 (b): a problem file changed under a run, SIGTERM and interrupted eval/train, --limit
# on a large file -----------------------------------------------------------------------------------


def _write_problems(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _sigint_default() -> None:
    # A shell starts background jobs with SIGINT ignored, and a child inherits that; give the
    # command the terminal's default, as a user's shell would (see tests/test_scheduler.py).
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_default,
    )


def _wait_until(proc: subprocess.Popen, ready, what: str, limit: float = 600) -> None:
    """Poll ``ready()`` until it holds; the command must still be running then (a hang guard,
    not a speed target)."""
    deadline = time.monotonic() + limit
    while not ready():
        assert proc.poll() is None, f"ended before {what}: {proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"no {what} after {limit} s"
        time.sleep(0.05)


def _interrupted_line(code: int, stderr: str, exit_code: int, *fragments: str) -> str:
    """The one `interrupted...` line of an interrupted command (library progress bars, such as
    transformers' "Loading weights", may come before it); no traceback."""
    assert "Traceback" not in stderr and "Aborted" not in stderr, stderr[-3000:]
    assert code == exit_code, f"exit {code}: {stderr[-3000:]}"
    lines = [line for line in stderr.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1 and stderr.rstrip().endswith(lines[0]), stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


PROBLEM_ROWS = [
    {"id": "q0", "question": "What is 7 + 7?", "answer": "14"},
    {"id": "q1", "question": "What is 3 + 4?", "answer": "7"},
    {"id": "q2", "question": "What is 9 - 2?", "answer": "7"},
    {"id": "q3", "question": "What is 2 * 6?", "answer": "12"},
]


def test_a_committed_problem_changed_moved_or_deleted_in_the_problem_file_is_refused(tmp_path):
    """Point 2: a run killed after its first commit, then the problem file edited. Resuming must
    refuse any change to a committed problem (its answer, its place, its presence) with one line
    naming it, and change no byte; the file restored, the run resumes and extends to --limit 4."""
    problems = tmp_path / "problems.jsonl"
    _write_problems(problems, PROBLEM_ROWS)
    out = tmp_path / "run" / "data.jsonl"
    meta = meta_path_for(out)
    first = ["generate", "--problems", str(problems), "--limit", "3", "--out", str(out), "-q"]
    proc = _start(*first, *SMALL, "--concurrency", "1")
    _wait_until(proc, lambda: _committed(meta) >= 1, "a first commit")
    proc.kill()
    proc.wait()
    assert [m["problem_id"] for m in read_meta(meta)][:1] == ["q0"]

    def refused(rows: list[dict], *fragments: str) -> None:
        _write_problems(problems, rows)
        # kill -9 left its lock file (the OS dropped the lock): the refused resume removes it.
        before = {k: v for k, v in snapshot(out.parent).items() if not k.endswith(".lock")}
        code, _, stderr = generate(out, "--limit", "3", problems=str(problems))
        one_line_error(code, stderr, *fragments, "--no-resume --overwrite")
        assert snapshot(out.parent) == before  # data and meta byte for byte, no lock left

    answer_changed = [dict(PROBLEM_ROWS[0], answer="15"), *PROBLEM_ROWS[1:]]
    refused(answer_changed, "problem 'q0' was committed", "with answer '14'", "give '15'")
    question_changed = [dict(PROBLEM_ROWS[0], question="What is 7 + 8?"), *PROBLEM_ROWS[1:]]
    refused(question_changed, "problem 'q0'", "another question")
    refused(PROBLEM_ROWS[1:], "problem 'q0'", "is not among this run's problems any more")
    swapped = [PROBLEM_ROWS[1], PROBLEM_ROWS[0], *PROBLEM_ROWS[2:]]
    refused(swapped, "problem 'q0'", "as this run's problem 1, is now problem 2")

    # Restored: the run resumes, and a larger --limit extends it (its committed problems are the
    # first ones of the longer list).
    _write_problems(problems, PROBLEM_ROWS)
    code, _, stderr = generate(out, "--limit", "4", problems=str(problems))
    assert code == 0, stderr[-3000:]
    records = read_meta(meta)
    assert [m["problem_id"] for m in records] == ["q0", "q1", "q2", "q3"]
    assert [m["answer"] for m in records] == ["14", "7", "7", "12"]
    answers = {r["id"]: r["answer"] for r in PROBLEM_ROWS}
    assert all(row["answer"] == answers[row["problem_id"]] for row in read_data(out))


def test_resume_compares_answers_only_where_the_meta_file_has_them(run_copy):
    """A meta file whose lines lack an answer or a question (none that amcs wrote, but the check
    is new) still resumes; a finished run resumes to nothing with a smaller arith:N too."""
    meta = meta_path_for(run_copy)
    header, *lines = meta.read_text().splitlines(keepends=True)
    stripped = []
    for line in lines:
        record = json.loads(line)
        record.pop("answer")
        record.pop("question")
        stripped.append(json.dumps(record) + "\n")
    meta.write_text(header + "".join(stripped))
    before = snapshot(run_copy.parent)
    code, _, stderr = generate(run_copy)
    assert code == 0 and "all 4 problems are already done" in stderr, stderr[-2000:]
    code, _, stderr = generate(run_copy, problems="arith:2")
    assert code == 0 and "all 2 problems are already done" in stderr, stderr[-2000:]
    assert snapshot(run_copy.parent) == before


def test_a_sharded_run_checks_its_own_problems_only(tmp_path):
    """Each shard's committed problems are its share, in order: a change to a problem of another
    shard does not concern it; a change to one of its own is refused."""
    from amcs.records import shard_of

    problems = tmp_path / "problems.jsonl"
    _write_problems(problems, PROBLEM_ROWS)
    out = tmp_path / "run" / "data.jsonl"
    code, _, stderr = generate(out, "--shard", "0/2", problems=str(problems))
    assert code == 0, stderr[-3000:]
    mine = [m["problem_id"] for m in read_meta(meta_path_for(out))]
    assert mine == [r["id"] for r in PROBLEM_ROWS if shard_of(r["id"], 2) == 0] and mine
    others = [i for i, r in enumerate(PROBLEM_ROWS) if r["id"] not in mine]
    assert others
    before = snapshot(out.parent)
    rows = [dict(r) for r in PROBLEM_ROWS]
    rows[others[0]]["answer"] = "999"
    _write_problems(problems, rows)
    code, _, stderr = generate(out, "--shard", "0/2", problems=str(problems))
    assert code == 0 and "problems are already done" in stderr, stderr[-2000:]
    rows = [dict(r) for r in PROBLEM_ROWS]
    rows[[r["id"] for r in rows].index(mine[-1])]["answer"] = "999"
    _write_problems(problems, rows)
    code, _, stderr = generate(out, "--shard", "0/2", problems=str(problems))
    one_line_error(code, stderr, f"problem {mine[-1]!r} was committed", "give '999'")
    assert snapshot(out.parent) == before


def test_sigterm_stops_generate_like_ctrl_c_and_the_run_resumes(tmp_path):
    """Point 9: SIGTERM ends generate as Ctrl-C does: what finished is committed, nothing
    half-written, the lock file removed, one line, exit 143; the same command resumes it."""
    out = tmp_path / "data.jsonl"
    meta = meta_path_for(out)
    args = ["generate", "--problems", "arith:10", "--out", str(out), "-q", *SMALL]
    args += ["--concurrency", "2"]
    proc = _start(*args)
    _wait_until(proc, lambda: _committed(meta) >= 1, "a first commit")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    _interrupted_line(
        proc.returncode,
        stderr,
        143,
        "interrupted by SIGTERM: ",
        f"committed to {out}; run the same command again to resume",
    )
    assert not out.with_name(out.name + ".lock").exists()
    committed = read_meta(meta)
    assert 1 <= len(committed) < 10
    assert len(out.read_bytes()) == committed[-1]["data_end"]  # nothing half-written
    code, _, stderr = amcs(*args)
    assert code == 0, stderr[-3000:]
    ids = [m["problem_id"] for m in read_meta(meta)]
    assert sorted(ids) == sorted(f"arith-0-{i}" for i in range(10))  # each exactly once


def test_an_interrupted_eval_has_no_report_and_resumes_to_one(tmp_path):
    """Point 9: Ctrl-C during `amcs eval` keeps the finished runs (records.jsonl, whole lines)
    and leaves no results.json or plot; the same command resumes and writes the report."""
    out = tmp_path / "eval"
    records = out / "records.jsonl"
    args = ["eval", "--problems", "arith-heldout:24", "--strategies", "greedy", "--n", "1"]
    args += ["--no-baseline", "--concurrency", "1", "--out", str(out), "-q"]
    proc = _start(*args)
    _wait_until(proc, lambda: records.exists() and records.read_text().count("\n") >= 1, "a run")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    _interrupted_line(
        proc.returncode,
        stderr,
        130,
        "interrupted: finished runs are in",
        "no report was written; run the same command again to resume",
    )
    assert not (out / "results.json").exists() and not (out / "accuracy_vs_tokens.png").exists()
    kept = [json.loads(line) for line in records.read_text().splitlines()]
    assert 1 <= len(kept) < 24
    code, _, stderr = amcs(*args)
    assert code == 0, stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    assert report["results"][0]["problems"] == 24
    assert (out / "accuracy_vs_tokens.png").stat().st_size > 0
    assert records.read_text().count("\n") == 24  # the kept runs were not run again
    assert [p.name for p in out.iterdir() if ".partial" in p.name] == []


def test_a_report_cut_short_leaves_no_results_json(tmp_path, monkeypatch):
    """The report of an evaluation: results.json goes last and an earlier one first, so a report
    interrupted while the plot is drawn leaves none (and no partial files)."""
    from amcs import evaluation

    rows = [{"strategy": "greedy", "n": 1, "accuracy": 1.0, "tokens_per_problem": 10.0}]
    rows[0] |= {"prm_calls_per_problem": 0.0, "problems": 1}
    evaluation.write_report(tmp_path, rows, {"first": True})
    assert json.loads((tmp_path / "results.json").read_text())["settings"] == {"first": True}

    def cut_short(rows, path, title=""):
        Path(path).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluation, "plot_accuracy_vs_tokens", cut_short)
    with pytest.raises(KeyboardInterrupt):
        evaluation.write_report(tmp_path, rows, {"second": True})
    assert not (tmp_path / "results.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accuracy_vs_tokens.png", "results.md"]
    assert (tmp_path / "accuracy_vs_tokens.png").read_bytes() != b"\x89PNG half"


def test_sigterm_during_train_leaves_no_prm(finished_run, tmp_path):
    """Point 9: `amcs train` has no checkpoints to resume from, so SIGTERM must leave nothing in
    --out that looks like a trained PRM: one line, exit 143, no config, weights or amcs_prm.json."""
    out = tmp_path / "prm"
    args = ["train", "--data", str(finished_run / "data.jsonl"), "--out", str(out)]
    proc = _start(*args, "--max-steps", "1000000", "--set", "logging_steps=1")
    stderr_seen: list[str] = []

    def reader() -> None:
        for line in proc.stderr:
            stderr_seen.append(line)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    _wait_until(proc, lambda: any("training on" in s for s in stderr_seen), "training")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=300)
    thread.join(timeout=60)
    stderr = "".join(stderr_seen)
    _interrupted_line(
        proc.returncode,
        stderr,
        143,
        "interrupted by SIGTERM: training stopped before the PRM was saved",
        "does not resume",
    )
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert not {"config.json", "amcs_prm.json"} & set(left), left
    assert not [name for name in left if name.endswith((".safetensors", ".bin"))], left
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".prm")] == []


class _FakeModel:
    def __init__(self, weights: bytes):
        self.weights = weights

    def save_pretrained(self, folder: str) -> None:
        Path(folder, "config.json").write_text('{"new": true}')
        Path(folder, "model.safetensors").write_bytes(self.weights)


class _FakeTokenizer:
    def save_pretrained(self, folder: str) -> None:
        Path(folder, "tokenizer.json").write_text("{}")


class _FakeTrainer:
    def __init__(self, weights: bytes):
        self.model = _FakeModel(weights)
        self.accelerator = type("A", (), {"wait_for_everyone": staticmethod(lambda: None)})()

    def is_world_process_zero(self) -> bool:
        return True


def test_a_prm_save_cut_short_never_leaves_a_loadable_mix(tmp_path, monkeypatch):
    """save_prm writes beside --out and moves the files in with config.json and amcs_prm.json
    last (an older PRM's removed first): cut at any move, --out holds the old PRM whole, or no
    config.json (nothing loads), never new weights under an old config or the reverse; files of
    the user's in --out stay."""
    from amcs.training import save
    from amcs.training.config import PRMTrainingConfig

    config = PRMTrainingConfig()
    out = tmp_path / "prm"
    save.save_prm(_FakeTrainer(b"old"), _FakeTokenizer(), out, "base", config)
    assert (out / "model.safetensors").read_bytes() == b"old" and (out / "amcs_prm.json").exists()
    (out / "notes.txt").write_text("mine")
    (out / "model-00001-of-00002.safetensors").write_bytes(b"stale shard of an older save")
    real_replace = os.replace
    for cut in range(4):  # model.safetensors, tokenizer.json, config.json, amcs_prm.json
        calls = []

        def replace(src, dst, cut=cut, calls=calls):
            calls.append(Path(dst).name)
            if len(calls) > cut:
                raise KeyboardInterrupt
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", replace)
        with pytest.raises(KeyboardInterrupt):
            save.save_prm(_FakeTrainer(b"new"), _FakeTokenizer(), out, "base", config)
        monkeypatch.setattr(os, "replace", real_replace)
        names = {p.name for p in out.iterdir()}
        assert "notes.txt" in names and not (tmp_path / ".prm.saving").exists()
        assert "amcs_prm.json" not in names, (cut, names)
        if "config.json" in names:
            assert json.loads((out / "config.json").read_text()) == {"new": True}
            assert (out / "model.safetensors").read_bytes() == b"new"
    save.save_prm(_FakeTrainer(b"new"), _FakeTokenizer(), out, "base", config)
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "amcs_prm.json",
        "config.json",
        "model.safetensors",
        "notes.txt",
        "tokenizer.json",
    ]
    assert (out / "model.safetensors").read_bytes() == b"new"


def test_limit_reads_only_the_problems_it_keeps(tmp_path):
    """Point 7: --limit N reads a JSONL file up to its Nth problem and a Parquet file up to the
    row group that holds it: garbage after them is not read, so it does not stop the command
    (without --limit it does, naming the file and line)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"id": f"r{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(15)
    ]
    jsonl = tmp_path / "big.jsonl"
    lines = [json.dumps(r) + "\n" for r in rows]
    lines[9] = "this line is not JSON\n"  # line 10
    jsonl.write_text("".join(lines))
    code, stdout, stderr = amcs("problems", str(jsonl), "--limit", "5")
    assert code == 0 and "5 problems from" in stdout, stderr[-2000:]
    code, _, stderr = amcs("problems", str(jsonl))
    one_line_error(code, stderr, "big.jsonl:10: malformed JSON")

    parquet = tmp_path / "big.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet, row_group_size=5)
    metadata = pq.ParquetFile(parquet).metadata
    assert metadata.num_row_groups == 3
    raw = bytearray(parquet.read_bytes())
    for group in (1, 2):  # every page of the second and third row group overwritten
        for column in range(metadata.num_columns):
            chunk = metadata.row_group(group).column(column)
            start = chunk.dictionary_page_offset or chunk.data_page_offset
            raw[start : start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size
    parquet.write_bytes(bytes(raw))
    code, stdout, stderr = amcs("problems", str(parquet), "--limit", "5")
    assert code == 0 and "5 problems from" in stdout, stderr[-2000:]
    assert "r4" in stdout
    code, _, stderr = amcs("problems", str(parquet))
    one_line_error(code, stderr, "big.parquet: not a readable Parquet file")


# --- issue 21 (a): no output over an input, no hang on a FIFO, no internal error -------------------
# One check (amcs.outputs.check_output) guards every command that writes; these cases go through
# each command and assert the one line the user sees and that no byte of the run changed.


def _refused(code: int, stderr: str, option: str, path, folder: Path, before: dict) -> None:
    """A one-line error naming the option and the file, and the folder byte for byte as before."""
    one_line_error(code, stderr, f"{option} {path}")
    assert snapshot(folder) == before


def test_an_output_may_not_replace_a_file_of_an_input_run(run_copy, tmp_path):
    data, meta = run_copy, meta_path_for(run_copy)
    folder = data.parent
    before = snapshot(folder)
    link = tmp_path / "link.jsonl"
    link.symlink_to(data)  # the run's files lie beside what the link points to
    overwrite = "would overwrite"
    cases = [
        (["view", str(data), "--out", str(data)], data, f"{overwrite} the input {data}"),
        (["view", str(meta), "--out", str(data)], data, f"{overwrite} {data}, the data file"),
        (["view", str(data), "--out", str(meta)], meta, f"{overwrite} {meta}, the meta file"),
        (["export", str(data), "-f", "trl", "--out", str(meta)], meta, "the meta file"),
        (
            ["filter", str(data), "--judge", "arith-oracle", "--out", str(meta)],
            meta,
            f"{overwrite} {meta}, the meta file of the input {data}",
        ),
        (
            ["filter", str(link), "--judge", "arith-oracle", "--out", str(meta)],
            meta,
            f"{overwrite} {meta}, the meta file of the input {link}",
        ),
        (
            ["filter", str(data), "--judge", "arith-oracle", "--out", str(data) + ".lock"],
            f"{data}.lock",
            f"{overwrite} {data}.lock, the lock file of the input {data}",
        ),
        (
            ["eval", "steps", "--data", str(data), "--prm", "arith-oracle", "--out", str(meta)],
            meta,
            f"{overwrite} {meta}, the meta file of the input {data}",
        ),
        (
            ["eval", "steps", "--data", str(data), "--write-data", str(meta)],
            meta,
            f"{overwrite} {meta}, the meta file",
        ),
    ]
    for args, path, message in cases:
        if str(path).endswith(".lock"):
            Path(path).write_bytes(b"")  # as a running generate leaves it
            before = snapshot(folder)
        option = "--write-data" if "--write-data" in args else "--out"
        code, _, stderr = amcs(*args, timeout=120)
        _refused(code, stderr, option, path, folder, before)
        assert message in stderr, stderr


def test_train_and_eval_outputs_may_not_replace_their_inputs(tmp_path):
    # `amcs train` imports transformers before it checks anything (seconds): one case only, the
    # one that would lose most (save_pretrained over the base model's weights).
    base = tmp_path / "model"
    base.mkdir()
    (base / "config.json").write_text("{}\n")
    data = tmp_path / "rows.jsonl"
    data.write_text('{"prompt": "1+1", "completions": ["2"], "labels": [true]}\n')
    evaldir = tmp_path / "eval"
    evaldir.mkdir()
    (evaldir / "records.jsonl").write_text('{"question": "1+1", "answer": "2"}\n')
    before = snapshot(tmp_path), snapshot(base), snapshot(evaldir)
    code, _, stderr = amcs("train", "--data", str(data), "--base", str(base), "--out", str(base))
    one_line_error(code, stderr, f"--out {base} would overwrite the input folder {base}")
    code, _, stderr = amcs(
        "eval", "--problems", str(evaldir / "records.jsonl"), "--out", str(evaldir)
    )
    one_line_error(
        code,
        stderr,
        f"--out {evaldir} (its records.jsonl {evaldir / 'records.jsonl'}) would overwrite the input",
    )
    out = tmp_path / "report.json"
    code, _, stderr = amcs(
        "eval", "steps", "--data", "arith:2", "--out", str(out), "--write-data", str(out)
    )
    one_line_error(code, stderr, f"--write-data {out} and --out {out} name the same file")
    assert (snapshot(tmp_path), snapshot(base), snapshot(evaldir)) == before


def test_a_fifo_or_a_device_as_output_is_refused_without_hanging(run_copy, tmp_path):
    import stat

    data = run_copy
    folder = data.parent
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    before = snapshot(folder)
    fifo_error = f"{fifo} is a FIFO, not a regular file"
    commands = [
        ["view", str(data), "--out", str(fifo)],
        ["export", str(data), "-f", "trl", "--out", str(fifo)],
        ["filter", str(data), "--judge", "arith-oracle", "--out", str(fifo)],
        ["generate", "--problems", "arith:1", "--out", str(fifo)],
        ["eval", "steps", "--data", str(data), "--prm", "arith-oracle", "--out", str(fifo)],
    ]
    for args in commands:  # a regression hangs on open(): the timeout turns it into a failure
        code, _, stderr = amcs(*args, timeout=120)
        one_line_error(code, stderr, "--out " + fifo_error)
    # The FIFO as the meta file of --out, and as a folder for eval.
    meta_fifo = tmp_path / "new.meta.jsonl"
    os.mkfifo(meta_fifo)
    code, _, stderr = amcs(
        "generate", "--problems", "arith:1", "--out", str(tmp_path / "new.jsonl")
    )
    one_line_error(code, stderr, f"its meta file {meta_fifo} is a FIFO, not a regular file")
    code, _, stderr = amcs("eval", "--out", str(fifo), timeout=120)
    one_line_error(code, stderr, f"--out {fifo} is a FIFO, not a folder")
    # /dev/null: view only (it truncates and writes; a regression does no harm to the device).
    code, _, stderr = amcs("view", str(data), "--out", "/dev/null")
    one_line_error(code, stderr, "--out /dev/null is a character device, not a regular file")
    # export renames its output into place: a regression would replace the device, so it meets
    # a private copy of /dev/null (making one needs root).
    device = tmp_path / "null"
    try:
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        device = None
    if device is not None:
        code, _, stderr = amcs("export", str(data), "-f", "trl", "--out", str(device))
        one_line_error(code, stderr, f"--out {device} is a character device")
        assert stat.S_ISCHR(os.stat(device).st_mode)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and stat.S_ISFIFO(os.stat(meta_fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "run") == sorted(
        ["out.fifo", "new.meta.jsonl"] + (["null"] if device is not None else [])
    )
    assert snapshot(folder) == before


def test_a_write_that_fails_names_its_file(run_copy, tmp_path):
    import resource

    def small_files() -> None:  # writes past 200 bytes fail with EFBIG ("File too large")
        resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))

    before = snapshot(run_copy.parent)
    out = tmp_path / "kept.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "filter", str(run_copy), "--judge", "arith-oracle"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=small_files,
    )
    one_line_error(
        proc.returncode, proc.stderr, f"error: {tmp_path / '.kept.jsonl.partial'}: File too large"
    )
    assert not out.exists() and snapshot(run_copy.parent) == before


def test_a_lone_surrogate_is_a_one_line_error_with_file_and_line(run_copy, tmp_path):
    problems = tmp_path / "problems.jsonl"
    problems.write_text(
        '{"question": "1+1", "answer": "2"}\n\n{"question": "x\\ud800", "answer": "1"}\n'
    )
    out = tmp_path / "out" / "o.jsonl"
    code, _, stderr = amcs("generate", "--problems", str(problems), "--out", str(out))
    one_line_error(code, stderr, f"{problems}:3: lone surrogate \\ud800 at column 16")
    as_json = tmp_path / "problems.json"
    as_json.write_text('[\n  {"question": "1+1", "answer": "2"},\n  {"question": "\\uDC00"}\n]\n')
    code, _, stderr = amcs("generate", "--problems", str(as_json), "--out", str(out))
    one_line_error(code, stderr, f"{as_json}:3: lone surrogate \\uDC00 at column 17")
    # A valid pair (an emoji) is text, and so is an escaped backslash before "ud800": the file is
    # read past its first line (to the missing answer on its second).
    fine = tmp_path / "fine.jsonl"
    fine.write_text('{"question": "\\ud83d\\ude00 \\\\ud800", "answer": "2"}\n{"question": "q"}\n')
    code, _, stderr = amcs("generate", "--problems", str(fine), "--out", str(out))
    one_line_error(code, stderr, f"{fine}:2: missing answer")
    # A data file (train, export, filter read it): its second line holds one.
    lines = run_copy.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"prompt": "', b'"prompt": "\\udfff', 1)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"".join(lines))
    where = f"{bad}:2: lone surrogate \\udfff"
    for args in (
        ["train", "--data", str(bad), "--out", str(tmp_path / "prm")],
        ["export", str(bad), "-f", "trl", "--out", str(tmp_path / "e.jsonl")],
        ["filter", str(bad), "--judge", "arith-oracle", "--out", str(tmp_path / "k.jsonl")],
    ):
        code, _, stderr = amcs(*args, timeout=120)
        one_line_error(code, stderr, where)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["run", "problems.jsonl", "problems.json", "fine.jsonl", "bad.jsonl"]
    )


def test_a_policy_is_no_token_cls_prm(tmp_path):
    from amcs.assets import TINY_POLICY

    data = tmp_path / "steps.jsonl"
    data.write_text('{"problem": "1+1", "steps": ["1+1 = 2", "\\\\boxed{2}"], "label": -1}\n')
    code, stdout, stderr = amcs(
        "eval", "steps", "--data", str(data), "--prm", str(TINY_POLICY), "--prm-format", "token-cls"
    )
    assert code == 2 and "Traceback" not in stderr and "F1" not in stdout, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert errors == [stderr.strip().splitlines()[-1]], stderr[-2000:]
    assert f"cannot use {TINY_POLICY} as a token-cls PRM" in errors[0]
    assert "score.weight" in errors[0] and "--prm-format" in errors[0]
    assert "MISSING" not in stderr  # transformers' load report is not shown for a refused one


def test_the_bundled_prm_still_loads_with_its_head():
    from amcs.assets import TINY_PRM
    from amcs.prm import load_prm

    scorer = load_prm(TINY_PRM)
    assert scorer.prm_format == "token-cls"
    question = "What is 2 + 3 * 4?"
    right, wrong = scorer.score_batch(
        [(question, ["3 * 4 = 12", "2 + 12 = 14"]), (question, ["3 * 4 = 13", "2 + 13 = 15"])]
    )
    # Its trained head tells a right first step from a wrong one (a random head would not).
    assert right[0] > 0.9 and wrong[0] < 0.1, (right, wrong)


# --- issue 21 (c): secrets never leak, the viewer survives markup, NaN is refused -----------------
#
# A server that echoes the request's headers into its error body must not put the API key into
# stderr, the meta file or the view page; a question full of markup must not break the page, and
# `amcs view --serve` answers only to loopback names; NaN, infinities and MC values outside
# [0, 1] are refused by every reader, naming file and line, before anything is written.

PLANTED_KEY = "sk-amcs-PLANTED-3f9a7c21e5d84b60"


def _files_under(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.rglob("*")) if p.is_file()]


def _sample_once(server, monkeypatch) -> Exception | None:
    """One request of the openai backend to ``server`` with the planted key; what it raised."""
    import asyncio

    from amcs.assets import TINY_POLICY
    from amcs.backends.base import SamplingParams
    from amcs.backends.http import OpenAICompletionsBackend

    monkeypatch.setenv("OPENAI_API_KEY", PLANTED_KEY)
    backend = OpenAICompletionsBackend(server.url, str(TINY_POLICY))

    async def go():
        try:
            await backend.sample([1, 2, 3], 2, SamplingParams(max_new_tokens=4))
        except Exception as exc:  # noqa: BLE001 - returned for the test to look at
            return exc
        finally:
            await backend.aclose()

    return asyncio.run(go())


def test_an_api_key_the_server_echoes_is_redacted_from_stderr_records_and_the_page(
    tmp_path, monkeypatch
):
    from amcs.backends.base import BackendConfigError
    from amcs.testing import LoopbackServer

    env = {"OPENAI_API_KEY": PLANTED_KEY}
    server_args = ["--backend", "openai", "--url"]
    run = tmp_path / "run" / "data.jsonl"
    with LoopbackServer() as server:
        # A 400 about the prompt's length fails each problem with the server's words as its
        # reason; the body also echoes the request's headers, Authorization included.
        server.echo_headers = (400, "This model's maximum context length is 64 tokens")
        code, stdout, stderr = amcs(
            "generate", "--problems", "arith:2", "--out", str(run), "-q", *SMALL,
            *server_args, server.url, "--retries", "0", env=env,
        )  # fmt: skip
        assert code == 1, stderr[-3000:]
        assert "2 problem(s) failed (2 PromptTooLongError" in stderr
        # An eval cannot go on without its samples: it stops with the server's words, one line.
        code2, stdout2, stderr2 = amcs(
            "eval", "--problems", "arith-heldout:2", "--strategies", "greedy", "--n", "1",
            "--prm", "arith-oracle", "--out", str(tmp_path / "eval"), "-q",
            *server_args, server.url, env=env,
        )  # fmt: skip
        assert code2 == 2, stderr2[-3000:]
        assert "answered HTTP 400: This model's maximum context length" in stderr2
        assert "'Authorization': 'Bearer [redacted]'" in stderr2
        assert "internal error" not in stderr2
        # A 401 whose message quotes the key, as OpenAI's does (in process: a second program
        # would load the tokenizer again): the error that stops a run holds no key.
        server.echo_headers = (401, f"Incorrect API key provided: {PLANTED_KEY}")
        refused = _sample_once(server, monkeypatch)
        assert len(server.requests) >= 3  # the generation requests reached the echo
    assert isinstance(refused, BackendConfigError), refused
    assert "answered HTTP 401: Incorrect API key provided: [redacted]" in str(refused)
    assert "'Authorization': 'Bearer [redacted]'" in str(refused)

    records = read_meta(meta_path_for(run))
    assert [m["status"] for m in records] == ["failed", "failed"]
    for m in records:
        # What the server said survives; only the secret is gone.
        assert "answered HTTP 400: This model's maximum context length is 64 tokens" in m["reason"]
        assert "'Authorization': 'Bearer [redacted]'" in m["reason"]
        assert "'Host': '127.0.0.1:" in m["reason"]
    assert "Bearer [redacted]" in stderr  # each failure's warning line quotes the reason

    page = tmp_path / "run" / "page.html"
    code3, stdout3, stderr3 = amcs("view", str(run), "--out", str(page), env=env)
    assert code3 == 0, stderr3
    assert "Bearer [redacted]" in page.read_text(encoding="utf-8")

    written = _files_under(tmp_path)
    assert page in written and meta_path_for(run) in written
    for path in written:
        assert PLANTED_KEY.encode() not in path.read_bytes(), path
    for text in (stdout, stderr, stdout2, stderr2, stdout3, stderr3, str(refused)):
        assert PLANTED_KEY not in text


def test_redact_replaces_secrets_in_every_echo_format(monkeypatch):
    from amcs.redaction import redact, remember_secret

    # A key that looks like no known key format is redacted by its value (from the environment
    # or registered by the backend that sent it); a short placeholder value is left alone.
    monkeypatch.setenv("OPENAI_API_KEY", "plain-value-4471")
    remember_secret("registered-1234567")
    remember_secret("EMPTY")
    cases = {
        "401: key plain-value-4471 and registered-1234567 refused; EMPTY": (
            "401: key [redacted] and [redacted] refused; EMPTY"
        ),
        "GET /v1 HTTP/1.1\r\nAuthorization: Bearer tok.abc-123\r\nHost: h\r\n": (
            "GET /v1 HTTP/1.1\r\nAuthorization: Bearer [redacted]\r\nHost: h\r\n"
        ),
        "{'authorization': 'Basic dXNlcjpw', 'X-Api-Key': 'k9'}": (
            "{'authorization': 'Basic [redacted]', 'X-Api-Key': '[redacted]'}"
        ),
        '{"api-key": "k9", "proxy-authorization": "Token t1"}': (
            '{"api-key": "[redacted]", "proxy-authorization": "Token [redacted]"}'
        ),
        '{\\"Authorization\\": \\"Bearer t2\\"}': '{\\"Authorization\\": \\"Bearer [redacted]\\"}',
        "GET /x?api_key=q1&n=2 Bearer b3; sk-abcdefghijklmnopqrstu9": (
            "GET /x?api_key=[redacted]&n=2 Bearer [redacted]; [redacted]"
        ),
        "cannot reach http://me:pw0rd@host:8000/v1": "cannot reach http://me:[redacted]@host:8000/v1",
        "Authorization header missing; maximum context length is 64 tokens": (
            "Authorization header missing; maximum context length is 64 tokens"
        ),
    }
    for text, expected in cases.items():
        assert redact(text) == expected
        assert redact(expected) == expected  # redacting twice changes nothing


def _tiny_run(folder: Path) -> Path:
    """A run of one failed problem, as the writer lays it out: enough for `amcs view`."""
    folder.mkdir()
    data = folder / "data.jsonl"
    data.write_bytes(b"")
    header = {"format": "amcs-meta", "version": 1, "fingerprint": {"method": "amcs"}}
    record = {"problem_id": "p0", "question": "1 + 1?", "answer": "2", "status": "failed"}
    record |= {"reason": "RuntimeError: x", "paths": 0, "stats": {}, "tree": None, "data_end": 0}
    meta_path_for(data).write_text(json.dumps(header) + "\n" + json.dumps(record) + "\n")
    return data


def _get(port: int, path: str, host: str | None) -> tuple[int, bytes]:
    """A raw GET with exactly this Host header (None: none at all)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        head = f"GET {path} HTTP/1.1\r\n" + (f"Host: {host}\r\n" if host is not None else "")
        sock.sendall((head + "Connection: close\r\n\r\n").encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    return int(raw.split(b" ", 2)[1]), raw.partition(b"\r\n\r\n")[2]


def test_view_serve_answers_only_loopback_host_names(tmp_path):
    data = _tiny_run(tmp_path / "run")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "view", str(data), "--serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.poll() else "")
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        # DNS rebinding: a page on evil.example resolved to 127.0.0.1 sends its own name.
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "", None):
            for path in ("/", "/api/info", "/api/problem?index=0"):
                status, body = _get(port, path, host)
                assert status == 403, (host, path, status)
                assert b"p0" not in body and b"1 + 1?" not in body
        for host in ("127.0.0.1", f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
            status, body = _get(port, "/api/info", host)
            assert status == 200 and json.loads(body)["total_problems"] == 1, host
        status, _ = _get(port, "/", f"LOCALHOST:{port}")
        assert status == 200
        assert _get(port, "/", "localhost:1")[0] == 403  # another port is another origin
    finally:
        proc.terminate()
        proc.wait(timeout=10)


GOOD_ROW = {"prompt": "What is 1 + 1?", "completions": ["1 + 1 = 2", "2"], "labels": [True, True]}


def _data_with_value(folder: Path, value: str) -> Path:
    """A TRL/amcs data file whose second line has MC value ``value`` (JSON text, e.g. NaN)."""
    folder.mkdir(exist_ok=True)
    path = folder / "data.jsonl"
    good = json.dumps(GOOD_ROW | {"values": [1.0, 1.0]})
    bad = json.dumps(GOOD_ROW | {"labels": [True, False], "values": [1.0, 0.0]})
    bad = bad.replace('"values": [1.0, 0.0]', f'"values": [1.0, {value}]')
    path.write_text(good + "\n" + bad + "\n")
    return path


BAD_VALUES = ["NaN", "Infinity", "-Infinity", "-0.5", "7.0", "true", '"0.5"']


def test_export_refuses_mc_values_that_are_not_in_0_1(tmp_path):
    from amcs.export import export_records
    from amcs.prm_data import PRMDataError

    out = tmp_path / "exported.jsonl"
    out.write_bytes(b"the previous export\n")
    for value in BAD_VALUES:
        data = _data_with_value(tmp_path / "in", value)
        message = f"{data}:2: values must be MC values in [0, 1] or null, value 2 is {value}"
        for fmt in ("trl", "shepherd", "processbench"):
            with pytest.raises(PRMDataError) as refused:
                export_records(data, fmt, out)
            assert str(refused.value) == message
            assert out.read_bytes() == b"the previous export\n"  # byte for byte as it was
    # Through the program: one line, and still nothing written.
    code, _, stderr = amcs("export", str(data), "--format", "trl", "--out", str(out))
    one_line_error(code, stderr, message)
    assert out.read_bytes() == b"the previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported.jsonl", "in"]


def test_export_refuses_a_tree_mc_that_is_nan_or_out_of_range(tmp_path):
    from amcs.export import ExportError, export_records

    data = _tiny_run(tmp_path / "run")
    meta = meta_path_for(data)
    header, record = meta.read_text().splitlines()
    tree = {"text": "", "mc": 0.5, "children": [{"text": "1 + 1 = 2", "children": []}]}
    out = tmp_path / "tree.jsonl"
    for mc in ("Infinity", "-0.5", "7.0", "NaN"):
        ok = json.loads(record) | {"status": "ok", "reason": None, "tree": tree}
        line = json.dumps(ok).replace('"children": []}', f'"children": [], "mc": {mc}}}')
        meta.write_text(header + "\n" + line + "\n")
        message = f"{meta}:2: problem 'p0': a search tree node's mc is {mc}, not an MC value"
        with pytest.raises(ExportError, match=re.escape(message)):
            export_records(data, "tree", out)
        assert not out.exists()
    code, _, stderr = amcs("export", str(data), "--format", "tree", "--out", str(out))
    one_line_error(code, stderr, message)
    assert not out.exists()


def test_train_refuses_nan_values_by_file_and_line(tmp_path):
    from amcs.prm_data import PRMDataError, load_prm_rows
    from amcs.training.tokenize import relabel

    data = _data_with_value(tmp_path, "NaN")
    message = f"{data}:2: values must be MC values in [0, 1] or null, value 2 is NaN"
    # Hard labels at a threshold: NaN > 0.5 is false, which made a silent "-" label.
    out = tmp_path / "prm"
    code, _, stderr = amcs("train", "--data", str(data), "--out", str(out), "--threshold", "0.5")
    one_line_error(code, stderr, message)
    assert not out.exists()
    # Hard and soft training read rows through one loader (a second program would only import
    # torch again); the relabelling refuses such rows built in code too.
    for fmt in ("auto", "amcs", "trl"):
        with pytest.raises(PRMDataError) as refused:
            load_prm_rows(data, fmt)
        assert str(refused.value) == message
    with pytest.raises(ValueError, match=r"values must be MC values in \[0, 1\]"):
        relabel(GOOD_ROW | {"values": [1.0, float("nan")]}, 0.5)


def test_filter_and_the_run_reader_refuse_nan_values(tmp_path):
    from amcs.records import RecordFormatError

    data = _data_with_value(tmp_path, "NaN")
    out = tmp_path / "kept.jsonl"
    code, _, stderr = amcs("filter", str(data), "--judge", "arith-oracle", "--out", str(out))
    one_line_error(
        code, stderr, f"{data}:2: values must be MC values in [0, 1] or null, value 2 is NaN"
    )
    assert not out.exists() and not out.with_name("kept.jsonl.summary.json").exists()
    data = _data_with_value(tmp_path, "7.0")
    with pytest.raises(RecordFormatError, match=rf"{data}:2: values must be .* value 2 is 7.0"):
        list(read_data(data))
    # A label NaN is neither "+" nor "-".
    data.write_text(json.dumps(GOOD_ROW).replace("[true, true]", "[true, NaN]") + "\n")
    with pytest.raises(RecordFormatError, match=rf"{data}:1: labels must be booleans .* label 2"):
        list(read_data(data))


BAD_ANSWERS = [
    ("[1, 2]", "got a list ([1, 2])"),
    ('{"value": 2}', 'got a dict ({"value": 2})'),
    ("true", "got the boolean true"),
    ("NaN", "got NaN, not a finite number"),
    ("-Infinity", "got -Infinity, not a finite number"),
]


def test_problem_answers_must_be_strings_or_numbers(tmp_path):
    from amcs.problems import ProblemError, load_problems

    problems = tmp_path / "p.jsonl"
    for answer, message in BAD_ANSWERS:
        problems.write_text(
            '{"question": "What is 1 + 1?", "answer": "2"}\n'
            f'{{"question": "What is 2 + 2?", "final_answer": {answer}}}\n'
        )
        expected = f"{problems}:2: field 'final_answer' must be a string or a number, {message}"
        with pytest.raises(ProblemError) as refused:
            load_problems(problems)
        assert str(refused.value) == expected
    # Through the program: one line before any model loads, nothing written.
    out = tmp_path / "out" / "o.jsonl"
    code, _, stderr = amcs("generate", "--problems", str(problems), "--out", str(out))
    one_line_error(code, stderr, expected)
    assert not out.parent.exists()
    # Integers and finite floats are answers, as str() writes them.
    problems.write_text('{"question": "a", "answer": 4}\n{"question": "b", "answer": 1.5}\n')
    assert [p.answer for p in load_problems(problems)] == ["4", "1.5"]


def test_problem_answers_from_parquet_are_checked_too(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from amcs.problems import ProblemError, load_problems

    path = tmp_path / "p.parquet"
    pq.write_table(
        pa.table({"question": ["1 + 1?", "2 + 2?"], "answer": [2.0, float("nan")]}), path
    )
    with pytest.raises(ProblemError, match=r"p.parquet:row 2: field 'answer' .* got NaN"):
        load_problems(path)
    pq.write_table(pa.table({"question": ["1 + 1?"], "answer": [[1, 2]]}), path)
    with pytest.raises(ProblemError, match=r"p.parquet:row 1: field 'answer' .* got a list"):
        load_problems(path)
    pq.write_table(pa.table({"question": ["1 + 1?"], "answer": [True]}), path)
    with pytest.raises(ProblemError, match=r"p.parquet:row 1: field 'answer' .* boolean true"):
        load_problems(path)
    pq.write_table(pa.table({"question": ["1 + 1?", "2 + 2?"], "answer": [2, 4]}), path)
    assert [p.answer for p in load_problems(path)] == ["2", "4"]
