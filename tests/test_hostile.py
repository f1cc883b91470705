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
        from tests.loopback_server import LoopbackServer

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
    # command the terminal's default, as a user's shell would (see tests/test_engine.py).
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_default,
    )


def _wait_until(proc: subprocess.Popen, ready, what: str, limit: float = 300) -> None:
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

        monkeypatch.setattr(save.os, "replace", replace)
        with pytest.raises(KeyboardInterrupt):
            save.save_prm(_FakeTrainer(b"new"), _FakeTokenizer(), out, "base", config)
        monkeypatch.setattr(save.os, "replace", real_replace)
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
