import asyncio
import contextlib
import dataclasses
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import shared_data

from amcs.grading import Grader, answers_match_fast, extract_answer, grade_many


def _read_jsonl(name: str) -> list[dict]:
    with shared_data(name).open() as f:
        return [json.loads(line) for line in f if line.strip()]


# --- extraction -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so $x = \boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
        (r"\boxed{1} then \fbox{2} and finally \boxed{ 3 }", "3"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
        (r"\boxed{\left\{ x \right.}", r"\left\{ x \right."),
        (r"The answer is \boxed{5}. The answer is 6.", "5"),  # boxed beats "the answer is"
        ("Work...\nThe answer is 42.", "42"),
        ("the answer is: $\\frac{3}{4}$.\nThanks!", r"\frac{3}{4}"),
        ("The answer is 7. Later, the final answer is 8.", "8"),
        # The answer, not the rest of the sentence.
        ("The answer is 7 apples, and 14 oranges are left.", "7"),
        ("The answer is 3.5 km.", "3.5"),
        ("The answer is $12 dollars; she keeps the rest.", "12"),
        ("The answer is (1, 2), which is the vertex.", "(1, 2)"),
        ("The answer is x = 5; y = 2.", "x = 5; y = 2"),
        ("The final answer is $\\frac{1}{2}$, half of it.", r"\frac{1}{2}"),
        ("#### 1\\,000", "1000"),
        ("Natalia sold 48 clips.\n#### 1,234", "1234"),
        ("#### 12\nmore text\n#### -5", "-5"),
        ("no answer here", None),
        ("The answer is", None),
        (r"\boxed{}", None),
        (r"\boxed{\frac{1}{2}", None),  # truncated: unbalanced
        (r"\boxed{1} and then \boxed{", None),  # the last box is truncated
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


# Inputs that a quadratic scan (or a backtracking regex) would take hours on at 1 MB, built at any
# size n; each with what extraction gives for them.
PATHOLOGICAL = {
    "deep box": lambda n: "\\boxed{" + "{" * n + "1" + "}" * (n + 1),  # too long for an answer
    "unclosed box after text": lambda n: "x" * n + "\\boxed{" + "{" * 1000,
    "backslashes": lambda n: "\\" * n,
    "many answer-is": lambda n: "The answer is " * (n // 14),
    "hashes": lambda n: "#" * n,
    "open clauses": lambda n: "The answer is " + "(1, " * (n // 4),
    "number then a long word": lambda n: "The answer is 7 " + "a" * n + "!",
}


def test_extract_answer_pathological_inputs_give_their_answers():
    mb = 1_000_000
    got = {name: extract_answer(build(mb)) for name, build in PATHOLOGICAL.items()}
    assert got == {
        "deep box": None,
        "unclosed box after text": None,
        "backslashes": None,
        "many answer-is": None,  # the last one says nothing; no box, no ####
        "hashes": "#" * (mb - 4),  # "####" then the rest of the line
        "open clauses": "(1, " * (mb // 4 - 1) + "(1,",  # unclosed: no clause end inside
        "number then a long word": "7 " + "a" * mb + "!",  # not "7 apples": the "!" stays
    }
    assert extract_answer("\\boxed{" + "{" * 500 + "1" + "}" * 501) == "{" * 500 + "1" + "}" * 500


def _cpu_seconds_per_call(function, *args) -> float:
    """This process's CPU time for one ``function(*args)``: the least over 5 rounds of enough
    calls to take 10 ms each. CPU time and the least round, so that other processes on a busy
    machine (which only ever add time to some rounds) do not decide it."""
    calls = 1
    while True:
        start = time.process_time()
        for _ in range(calls):
            function(*args)
        if time.process_time() - start >= 0.01:
            break
        calls *= 2
    rounds = []
    for _ in range(5):
        start = time.process_time()
        for _ in range(calls):
            function(*args)
        rounds.append((time.process_time() - start) / calls)
    return min(rounds)


@pytest.mark.parametrize("name", PATHOLOGICAL)
def test_extract_answer_work_grows_at_most_linearly(name):
    # The scanning happens inside `re` and str methods, where no operation can be counted, so the
    # work at n and 4n is compared: linear scanning costs 4x (capped scanning less), quadratic 16x.
    # Sizes small enough that a quadratic regression fails in seconds instead of hanging.
    n = 20_000
    small = _cpu_seconds_per_call(extract_answer, PATHOLOGICAL[name](n))
    large = _cpu_seconds_per_call(extract_answer, PATHOLOGICAL[name](4 * n))
    assert large / small < 10, f"{name}: 4x the input took {large / small:.1f}x the CPU time"


# --- fast path ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1,000", "1000", True),
        ("1,234,567.0", "1234567", True),
        ("0.5", ".5", True),
        ("-3", "-3.00", True),
        ("$18", "18", True),
        ("\\$18.", "18", True),
        ("$5$", "5", True),
        ("3", "4", False),
        ("-3", "3", False),
        ("0.1", "0.10000001", False),  # exact, no float rounding
        ("\\frac{1}{2}", "0.5", None),
        ("1,2", "12", None),  # a list, not a thousands separator
        ("x", "x", None),
        ("", "1", None),
        ("10\\%", "10", None),
        # Thin spaces and LaTeX's {,} inside a number.
        ("1\\,000", "1000", True),
        ("1{,}000", "1000", True),
        ("1\\!000", "1000", True),
        ("1\u2009000", "1000", True),
        ("1\u202f000\u202f000", "1000000", True),
        ("1\\,000", "1001", False),
    ],
)
def test_answers_match_fast(a, b, expected):
    assert answers_match_fast(a, b) is expected


# --- math-verify path -----------------------------------------------------------------------

EQUIVALENT = [
    (r"\frac{1}{2}", "0.5"),
    (r"\dfrac12", r"\frac{1}{2}"),
    (r"(3, \frac{\pi}{2})", r"\left( 3, \frac{\pi}{2} \right)"),
    (r"2\sqrt{2}", r"\sqrt{8}"),
    (r"\{1, 2\}", r"\{2, 1\}"),
    (r"x^2 + 2x + 1", r"(x+1)^2"),
    (r"\text{(C)}", "C"),
    (r"\$18.90", "18.90"),
    (r"[0, \infty)", r"[0,\infty)"),
]
NOT_EQUIVALENT = [
    (r"\frac{1}{3}", "0.5"),
    (r"(3, \pi)", r"\left( 3, \frac{\pi}{2} \right)"),
    ("x", "y"),
    (r"\sqrt{2}", "2"),
    (r"[0, \infty)", r"(0,\infty)"),
    (r"\text{Monday}", r"\text{Tuesday}"),
]


# One event loop and one warmed-up Grader for the module: starting worker processes (and
# importing sympy in them) costs a few seconds.
@pytest.fixture(scope="module")
def runner():
    with asyncio.Runner() as runner:
        yield runner


@pytest.fixture(scope="module")
def grader(runner):
    grader = Grader()
    yield grader
    runner.run(grader.aclose())


def _gather(runner, grader, pairs):
    return runner.run(_gather_async(grader, pairs))


async def _gather_async(grader, pairs):
    return await asyncio.gather(*(grader.equivalent(p, r) for p, r in pairs))


@pytest.mark.slow
def test_math_verify_equivalence(runner, grader):
    pairs = EQUIVALENT + NOT_EQUIVALENT + [(None, "1")]
    results = _gather(runner, grader, pairs)
    expected = [True] * len(EQUIVALENT) + [False] * (len(NOT_EQUIVALENT) + 1)
    wrong = [
        (p, r, got)
        for (p, r), got, want in zip(pairs, results, expected, strict=True)
        if got != want
    ]
    assert not wrong, wrong


def test_check_completion(runner, grader):
    completions = [
        (r"... so the result is $\boxed{\dfrac{1}{2}}$.", "0.5", True),
        ("She earns 3 * 6 = 18 dollars.\n#### 18", "18", True),
        ("The answer is $\\frac{36}{2}$.", "18", True),
        ("The answer is 17.", "18", False),
        ("The answer is 7 apples, and 14 oranges are left.", "7", True),
        ("The answer is 7 apples, and 14 oranges are left.", "14", False),
        ("So it is \\boxed{1\\,000}.", "1000", True),
        ("So it is \\boxed{1{,}000}.", "1000", True),
        (r"I think \boxed{", "18", False),
        ("No idea.", "18", False),
    ]

    async def scenario():
        return await asyncio.gather(*(grader.check_completion(c, r) for c, r, _ in completions))

    assert runner.run(scenario()) == [want for _, _, want in completions]


@pytest.mark.slow
def test_grade_many():
    pairs = [("1,000", "1000"), (r"\frac{1}{2}", "0.5"), (r"\frac{1}{3}", "0.5"), (None, "1")]
    assert grade_many(pairs, max_workers=1) == [True, True, False, False]


# --- pathological inputs, deadlines and worker recycling -----------------------------------

# An answer sympy grinds on for well over a second of CPU time (it is interruptible: the CPU
# deadline ends it, not a pool kill); as a reference it makes every check that reaches
# math-verify miss its deadlines.
UNFINISHABLE = r"10^{10^{10^{10}}}"


# A wall deadline no check reaches however busy the machine: where a test is about CPU deadlines,
# the wall one only guards against a hang.
HANG_GUARD = 600.0


@contextlib.contextmanager
def tightened(grader: Grader, cpu_limit: float, attempts: int):
    """`grader` with the CPU deadlines ``cpu_limit * 3**n`` for ``attempts`` attempts and
    HANG_GUARD for a wall deadline, restored after."""
    saved = grader.cpu_limit, grader.attempts, grader.timeout
    grader.cpu_limit, grader.attempts, grader.timeout = cpu_limit, attempts, HANG_GUARD
    try:
        yield grader
    finally:
        grader.cpu_limit, grader.attempts, grader.timeout = saved


def test_pathological_answers_are_rejected_safely(runner, grader, tmp_path):
    marker = tmp_path / "pwned"
    code = f"__import__('os').system('touch {marker}')"
    endless = [  # each needs far more than the 0.3 s of CPU of the last attempt
        (UNFINISHABLE, "1"),
        (r"9^{9^{9}}!", r"10^{10^{10}}"),
        ("{" * 900 + "2" + "}" * 900, "1"),
        ("\\sqrt{" * 250 + "2" + "}" * 250, "1"),
    ]
    rejected = [
        ("{" * 5000 + "1" + "}" * 5000, "1"),
        ("1" * 1_000_000, "1"),
        (code, "0"),
        (f"${code}$", "0"),
        (f"\\text{{{code}}}", "0"),
        (f"1+{code}", "1"),
        (f"exec(\"open('{marker}', 'w')\")", "0"),
        ("\\boxed{", "1"),
        ("1} \\boxed{1", "1"),  # would escape the worker's \boxed{} wrapper
    ]
    before = grader.counts()
    with tightened(grader, cpu_limit=0.1, attempts=2):
        grades = runner.run(_grades(grader, endless))
    # A deadline is never a verdict: the endless ones are retried once, then flagged.
    assert [(g.correct, g.unresolved, g.retried) for g in grades] == [(False, True, 1)] * 4
    after = grader.counts()
    assert after["unresolved"] - before["unresolved"] == len(endless)
    assert after["retried"] - before["retried"] == len(endless)
    assert after["restarts"] == before["restarts"]  # the CPU deadline ended them, no kill
    # The rejected ones get a verdict, "not equal", under the default deadlines (seconds of CPU for
    # the ones that reach math-verify, so a busy machine cannot make them miss one either).
    grades = runner.run(_grades(grader, rejected))
    assert [(g.correct, g.unresolved, g.retried) for g in grades] == [(False, False, 0)] * 9
    assert grader.counts()["retried"] == after["retried"]
    assert not marker.exists()


def test_a_missed_deadline_is_retried_with_a_longer_one(runner, grader):
    # The first attempt gets 1 ms of CPU, too little for any math-verify check; the deadline
    # grows x3 per attempt until the check fits and its real verdict comes back.
    before = grader.counts()
    with tightened(grader, cpu_limit=0.001, attempts=9):
        grades = runner.run(_grades(grader, [("(x+2)^3", "x^3+6x^2+12x+8"), ("(x+2)^3", "x^3+8")]))
    assert [g.correct for g in grades] == [True, False]
    assert all(g.retried >= 1 and not g.unresolved for g in grades), grades
    after = grader.counts()
    assert after["retried"] - before["retried"] == sum(g.retried for g in grades)
    assert (after["unresolved"], after["restarts"]) == (before["unresolved"], before["restarts"])


async def _grades(grader, pairs):
    return await asyncio.gather(*(grader.grade(p, r) for p, r in pairs))


# The checks a user saw graded False on a busy machine under math-verify's 1 s wall-clock alarm.
LOAD_SENSITIVE = [
    ("(x+1)^2", "x^2+2x+1"),
    (r"\left(3, \frac{\pi}{2}\right)", r"(3,\frac{\pi}{2})"),
]


@pytest.mark.slow
def test_equivalence_holds_on_a_busy_machine():
    async def scenario():
        async with Grader() as grader:
            assert await grader.equivalent(r"\frac{1}{2}", "0.5")  # workers started and warm
            # More busy loops than cores (2 here): every grading worker competes for CPU.
            busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3)]
            try:
                grades = await _grades(grader, LOAD_SENSITIVE * 2)
            finally:
                for process in busy:
                    process.kill()
                    process.wait()
            return grades, grader.counts()

    grades, counts = asyncio.run(scenario())
    assert [g.correct for g in grades] == [True] * 4
    assert counts["unresolved"] == 0 and counts["checks"] == 5


@pytest.mark.slow
def test_stuck_worker_is_replaced():
    # A CPU deadline the wall deadline always beats: the worker is still busy when the parent's
    # deadline passes, as for work no signal interrupts, so each attempt kills the pool.
    async def scenario():
        async with Grader(max_workers=1, timeout=0.5, cpu_limit=600, attempts=2) as grader:
            stuck = await grader.grade(UNFINISHABLE, "1")
            restarts = grader.restarts
            # The fresh pool serves the next check; the hang guard, not 0.5 s, is its deadline so
            # that a busy machine cannot make it miss one.
            grader.timeout = HANG_GUARD
            after = await grader.grade(r"\frac{3}{4}", "0.75")
            return stuck, restarts, after, grader.counts()

    stuck, restarts, after, counts = asyncio.run(scenario())
    assert (stuck.correct, stuck.retried, stuck.unresolved) == (False, 1, True)
    assert restarts == 2  # each attempt killed its pool
    assert (after.correct, after.retried, after.unresolved) == (True, 0, False)
    assert counts == {"checks": 2, "retried": 1, "unresolved": 1, "restarts": 2}


@pytest.mark.slow
def test_worker_crash_does_not_propagate():
    others = {process.pid for process in multiprocessing.active_children()}  # other graders

    async def scenario():
        async with Grader(max_workers=1, timeout=HANG_GUARD, cpu_limit=0.1, attempts=2) as grader:
            assert await grader.equivalent(r"\frac{3}{4}", "0.75")
            workers = [p.pid for p in multiprocessing.active_children() if p.pid not in others]
            assert len(workers) == 1
            # The worker dies mid-check (the check needs 0.4 s of CPU before it can end, and it
            # has used some of it): the check goes on with the same deadline on a fresh pool,
            # where it misses both deadlines, and ends unresolved; nothing is raised.
            slow = asyncio.create_task(grader.grade(UNFINISHABLE, "1"))
            await asyncio.to_thread(_wait_for_cpu, workers, 0.05)
            os.kill(workers[0], signal.SIGKILL)
            grade = await slow
            assert (grade.correct, grade.retried, grade.unresolved) == (False, 1, True)
            assert grader.restarts == 1
            assert await grader.equivalent(r"\frac{2}{3}", r"\frac{4}{6}")
            return grader.counts()

    counts = asyncio.run(scenario())
    assert counts == {"checks": 3, "retried": 1, "unresolved": 1, "restarts": 1}


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process `pid` has used so far, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # after "pid (name)": field 3 on
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_for_cpu(pids: list[int], seconds: float) -> None:
    """Wait until the processes `pids` together have used `seconds` more CPU time than now: a
    check is running in one of them (idle workers use none). Fails after HANG_GUARD."""
    start = sum(_cpu_seconds(pid) for pid in pids)
    deadline = time.monotonic() + HANG_GUARD  # a hang guard, not a speed target
    while sum(_cpu_seconds(pid) for pid in pids) - start < seconds:
        assert time.monotonic() < deadline, f"no CPU used by {pids} in {HANG_GUARD} s"
        time.sleep(0.01)


# A grader busy in a check and an idle one when Ctrl-C reaches the whole process group.
_INTERRUPTED_SCRIPT = f"""
import asyncio, multiprocessing, sys
from amcs.grading import Grader

async def main():
    async with Grader(max_workers=2) as grader:
        try:
            await grader.equivalent(r"\\frac{{1}}{{2}}", "0.5")
            workers = [p.pid for p in multiprocessing.active_children()]
            print("ready", *workers, flush=True)
            await grader.equivalent(r"{UNFINISHABLE}", "1")
        finally:
            await asyncio.sleep(1)  # other cleanup first, as `amcs generate` closes its backend

if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
"""


@pytest.mark.slow
def test_ctrl_c_leaves_no_worker_tracebacks(tmp_path):
    script = tmp_path / "grade.py"
    script.write_text(_INTERRUPTED_SCRIPT)
    process = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        ready, *workers = process.stdout.readline().split()
        assert ready == "ready" and len(workers) == 2
        _wait_for_cpu([int(pid) for pid in workers], 0.05)  # the unfinishable check is running
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=HANG_GUARD)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr


def test_grader_rejects_use_after_close():
    async def scenario():
        grader = Grader()
        await grader.aclose()
        await grader.equivalent("1", "1")

    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(scenario())


# --- real data ------------------------------------------------------------------------------


@pytest.mark.slow
def test_math500_reference_solutions_grade_correct(runner, grader):
    rows = _read_jsonl("math500.jsonl")
    assert len(rows) == 500
    extracted = [extract_answer(row["solution"]) for row in rows]
    references = [row["answer"] for row in rows]
    # Each solution against the next problem's answer: a rough false-positive check.
    shifted = extracted[1:] + extracted[:1]

    grades = runner.run(
        _grades(grader, list(zip(extracted + shifted, references * 2, strict=True)))
    )
    assert not [g for g in grades if g.unresolved]  # real answers all reach a verdict
    results = [g.correct for g in grades]
    matched, false_positives = results[:500], results[500:]
    failures = [
        (rows[i].get("unique_id", i), extracted[i], references[i])
        for i, ok in enumerate(matched)
        if not ok
    ]
    assert len(failures) <= 5, f"{len(failures)}/500 not matched: {failures}"
    assert sum(false_positives) <= 10, [
        (shifted[i], references[i]) for i, ok in enumerate(false_positives) if ok
    ]


def test_gsm8k_answers_extract():
    rows = _read_jsonl("gsm8k_test.jsonl")
    assert len(rows) > 1000
    failures = []
    for i, row in enumerate(rows):
        answer = extract_answer(row["answer"])
        expected = row["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        if answer != expected or answers_match_fast(answer, expected) is not True:
            failures.append((i, answer, expected))
    assert not failures, failures


# --- grading timeouts in a generate run -----------------------------------------------------


@pytest.mark.slow
def test_grading_timeouts_reach_the_run_files_and_summaries(tmp_path):
    from amcs.backends.hf import HFBackend
    from amcs.problems import arith_problems
    from amcs.records import meta_path_for, read_meta
    from amcs.scheduler import generate_to_file
    from amcs.search import make_config
    from amcs.view.run import Totals
    from cli.progress import summary_table

    problems = arith_problems(3)
    # The first problem's reference cannot be finished: each of its checks that reaches
    # math-verify misses both deadlines. The others' are plain numbers (the exact fast path).
    problems[0] = dataclasses.replace(problems[0], answer=UNFINISHABLE)
    config = make_config(
        "amcs", max_new_tokens=120, rollout_budget=24, max_search_count=2, min_root_mc=0.0
    )
    out = tmp_path / "data.jsonl"

    async def run():
        backend = HFBackend(max_batch_size=64)
        try:
            # Three searches share one grader, as in `amcs generate`.
            async with Grader(cpu_limit=0.05, attempts=2) as grader:
                counters = await generate_to_file(
                    problems, backend, grader, config, out, model_name="tiny", concurrency=3
                )
                return counters, grader.counts()
        finally:
            await backend.aclose()

    counters, counts = asyncio.run(run())
    meta = read_meta(meta_path_for(out))
    assert [m["status"] for m in meta] == ["ok"] * 3
    stats = [m["stats"] for m in meta]
    # Every timeout is its own problem's: the unfinishable one's checks, each retried once.
    assert stats[0]["grading_unresolved"] > 0
    assert stats[0]["grading_retried"] == stats[0]["grading_unresolved"]
    assert [(s["grading_retried"], s["grading_unresolved"]) for s in stats[1:]] == [(0, 0)] * 2
    assert counts["unresolved"] == counters.grading_unresolved == stats[0]["grading_unresolved"]
    assert counts["retried"] == counters.grading_retried == stats[0]["grading_retried"]
    # The view's run totals and the end-of-run summary show them.
    totals = Totals()
    for m in meta:
        totals.add(m)
    assert totals.to_dict()["grading_unresolved"] == counters.grading_unresolved
    assert totals.to_dict()["grading_retried"] == counters.grading_retried
    table = summary_table(counters, out)
    rows = dict(zip(table.columns[0].cells, table.columns[1].cells, strict=True))
    shown = f"{counters.grading_retried:,} / {counters.grading_unresolved:,}"
    assert rows["grading timeouts (retried / unresolved)"] == shown
