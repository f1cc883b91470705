"""Final-answer extraction and equivalence checking for math completions.

`extract_answer` pulls the final answer out of a completion (last ``\\boxed{}``, else
"The answer is X", else GSM8K's ``#### X``). `Grader` decides whether two answers are
equivalent: plain numbers are compared exactly in-process, everything else goes to
math-verify (LaTeX extraction only) in a spawned process pool. The pool is needed because a
check runs under a signal-based deadline, which only works on a process's main thread, and
because a sympy computation can hang where no signal interrupts it. So every check has two
deadlines, CPU time in the worker and wall time in the parent (a worker that misses the latter
is killed and the pool replaced), and a check that misses one is tried again with longer ones:
a deadline never silently turns into "not equal" (see `Grader`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import re
import signal
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from decimal import Decimal

log = logging.getLogger("amcs.grading")

# Longer answers are judged "not equal" without parsing; also bounds the \boxed{} scan.
MAX_ANSWER_CHARS = 2_000

_BOX_OPENERS = ("\\boxed{", "\\fbox{")
# A backslash escapes the next character (\{ and \} are literal braces, not grouping).
_BRACE_TOKEN_RE = re.compile(r"\\.|[{}]", re.DOTALL)
_ANSWER_IS_RE = re.compile(r"\bthe\s+(?:final\s+)?answer\s+is\b:?", re.IGNORECASE)
_GSM8K_RE = re.compile(r"####[ \t]*([^\n]*)")
_THOUSANDS_COMMA_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_PLAIN_NUMBER_RE = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?")
# Thin spaces inside a number: LaTeX \, \! and "\ ", and the Unicode thin and narrow no-break
# spaces; "{,}" is LaTeX's comma that adds no space (a thousands separator).
_NUMBER_SPACE_RE = re.compile(r"(?<=\d)(?:\\[,!: ;]|\u2009|\u202f)(?=\d)")
# Where a sentence or clause ends after "The answer is X": ", and ..." / "; ..." / ". Then".
_CLAUSE_END_RE = re.compile(r"[,;]\s+(?=[A-Za-z]{2,}\b)|\.(?:\s|$)")
# A number followed by words: "7 apples", "$12 dollars", "3.5 km".
_NUMBER_THEN_WORDS_RE = re.compile(
    r"(\\?\$?[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)\s+[A-Za-z][A-Za-z .-]*"
)


def _group_content(text: str, start: int) -> str | None:
    """Content of the brace group opened just before `start`."""
    # Content longer than MAX_ANSWER_CHARS could not be graded anyway; don't scan further.
    window = text[start : start + MAX_ANSWER_CHARS + 1]
    depth = 1
    for token in _BRACE_TOKEN_RE.finditer(window):
        if token[0] == "{":
            depth += 1
        elif token[0] == "}":
            depth -= 1
            if depth == 0:
                return window[: token.start()]
    return None  # unbalanced (e.g. a truncated completion) or too long


def _braces_balanced(text: str) -> bool:
    depth = 0
    for token in _BRACE_TOKEN_RE.finditer(text):
        if token[0] == "{":
            depth += 1
        elif token[0] == "}":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def extract_answer(text: str) -> str | None:
    """Return the final answer stated in `text`, or None if there is none.

    Priority: the last ``\\boxed{...}``/``\\fbox{...}`` (a truncated, unbalanced last box gives
    None rather than an earlier box), else the last "The answer is X", else the last
    ``#### X``.
    """
    start, opener = max((text.rfind(opener), opener) for opener in _BOX_OPENERS)
    if start >= 0:
        return (_group_content(text, start + len(opener)) or "").strip() or None

    matches = list(_ANSWER_IS_RE.finditer(text))
    if matches:
        start = matches[-1].end()
        line_end = text.find("\n", start)
        answer = _answer_clause(text[start : line_end if line_end >= 0 else len(text)])
        if answer:
            return answer

    matches = list(_GSM8K_RE.finditer(text))
    if matches:
        answer = _THOUSANDS_COMMA_RE.sub("", matches[-1].group(1)).strip()
        if answer:
            return normalize_number_spacing(answer)
    return None


def _answer_clause(line: str) -> str:
    """The answer in the rest of a line after "The answer is": a $...$ formula as it is, else
    the text up to the end of the clause (", and 14 oranges are left." is not the answer), and of
    a number followed by words ("7 apples") only the number."""
    line = line.strip()
    if line.startswith("$"):
        end = line.find("$", 1)
        if end > 1:
            return line[1:end].strip()
    depth = 0
    for i, ch in enumerate(line):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and ch in ",;." and _CLAUSE_END_RE.match(line, i):
            line = line[:i]
            break
    answer = line.strip().rstrip(".").strip().strip("$").strip()
    words = _NUMBER_THEN_WORDS_RE.fullmatch(answer)
    return words.group(1) if words else answer


def normalize_number_spacing(s: str) -> str:
    """Remove thin spaces between digits (1\\,000, 1 000 with U+2009/U+202F) and read LaTeX's
    {,} as a comma: "1\\,000" and "1{,}000" both become a plain number."""
    return _NUMBER_SPACE_RE.sub("", s.replace("{,}", ","))


def _plain_number(s: str) -> Decimal | None:
    s = normalize_number_spacing(s).strip()
    if len(s) > 2 and s[0] == s[-1] == "$":
        s = s[1:-1].strip()
    s = s.removeprefix("\\$").removeprefix("$").removesuffix(".").strip()
    if not any(c.isdigit() for c in s) or not _PLAIN_NUMBER_RE.fullmatch(s):
        return None
    return Decimal(s.replace(",", ""))


def answers_match_fast(a: str, b: str) -> bool | None:
    """Exact comparison when both answers are plain numbers ("1,000", "-2.50", "$3"); None otherwise."""
    x, y = _plain_number(a), _plain_number(b)
    if x is None or y is None:
        return None
    return x == y


class _OutOfCpu(BaseException):
    """Raised in a worker when a check has used up its CPU time. A BaseException, so that the
    ``except Exception`` around every parse and comparison in math-verify and sympy lets it
    through instead of turning it into "not equal"."""


def _raise_out_of_cpu(signum: int, frame: object) -> None:
    raise _OutOfCpu


def _init_worker() -> None:
    # Ctrl-C reaches the whole process group: the parent handles it and kills the pool, so a
    # worker ignores it (no KeyboardInterrupt traceback from each worker).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # math-verify warns once that its own timeouts are off (we run it under ours).
    logging.getLogger("math_verify").setLevel(logging.ERROR)


def _verify(predicted: str, reference: str) -> bool:
    from math_verify import LatexExtractionConfig, parse, verify

    # LaTeX only: ExprExtractionConfig goes through sympy's parse_expr, i.e. eval().
    config = [LatexExtractionConfig(boxed_match_priority=0)]
    # Wrapping in \boxed{} makes the latex extractor take the whole answer. math-verify's own
    # SIGALRM timeouts are off (None): they measure wall time, and it reports a timeout as
    # []/False, indistinguishable from "not equal".
    gold = parse(f"\\boxed{{{reference}}}", extraction_config=config, parsing_timeout=None)
    pred = parse(f"\\boxed{{{predicted}}}", extraction_config=config, parsing_timeout=None)
    # verify's argument order matters: the reference goes first.
    return bool(gold and pred and verify(gold, pred, timeout_seconds=None))


def _verify_in_worker(predicted: str, reference: str, cpu_limit: float) -> bool | None:
    """The verdict, or None when the check used `cpu_limit` seconds of this process's CPU time.

    ITIMER_PROF counts CPU time, not wall time, so a busy machine does not change where the
    deadline falls. It fires once (no repeat), so the one SIGPROF is raised either inside the
    check or in the ``finally`` that disarms it; both end in the ``except`` below.
    """
    signal.signal(signal.SIGPROF, _raise_out_of_cpu)
    try:
        signal.setitimer(signal.ITIMER_PROF, cpu_limit)
        try:
            return _verify(predicted, reference)
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
    except _OutOfCpu:
        return None


# Checks run once per new worker, outside any deadline: a fresh worker's first polynomial
# comparison and first use of pi cost ~1 s of CPU together (lazy imports and caches); warm, such
# checks take ~0.1 s.
_WARM_UP = (
    ("\\frac{1}{2}", "0.5"),
    ("(y-1)^2", "y^2-2y+1"),
    ("\\left(2, \\frac{\\pi}{3}\\right)", "(2,\\frac{\\pi}{3})"),
)


def _warm_up_worker() -> None:
    for predicted, reference in _WARM_UP:
        _verify(predicted, reference)


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread while it starts worker processes: a child inherits the mask,
    so a Ctrl-C cannot reach it before its initializer ignores SIGINT. A Ctrl-C in this window
    is delivered to the parent when the mask is restored, not lost."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@dataclass(frozen=True)
class Grade:
    """One check's outcome. ``retried``: attempts of it that missed a deadline and were tried
    again. ``unresolved``: no verdict after the last attempt (a deadline missed every time, or
    its worker died every time); such a check is graded wrong (``correct`` False), so callers
    count it instead of mistaking it for a verdict."""

    correct: bool
    retried: int = 0
    unresolved: bool = False


class Grader:
    """Async answer-equivalence checker backed by a spawned process pool.

    Deadlines. A check's attempt n (0, 1, 2) may use ``cpu_limit * 3**n`` seconds of the
    worker's CPU time (default 2, 6, 18 s) and ``timeout * 3**n`` seconds of wall time in the
    parent (default 5, 15, 45 s), ``attempts`` attempts (default 3). CPU time is what a check
    costs whatever the load: a warm check of the math500 answers (each against its reference and
    against the next problem's) takes at most ~0.5 s of it. The wall deadline is for work no
    signal interrupts, and for a worker so starved (below ``cpu_limit / timeout``, 40%, of a
    core) that a check near its CPU limit would take longer. A missed CPU deadline keeps the worker; a missed
    wall deadline kills the pool (`restarts`). A check whose pool broke under it (another
    check's kill, a crash) is tried again with the same deadlines. What has no verdict after the
    last attempt is graded wrong and counted as unresolved: in `amcs generate` that is a rollout
    graded wrong, counted in its problem's ``grading_unresolved``. Worst case for an answer sympy
    cannot finish: 26 s of one worker's CPU (65 s if stuck where no signal reaches).

    Counters: ``checks`` (every graded answer, fast path included), ``retried`` (attempts that
    missed a deadline and were tried again), ``unresolved``, ``restarts`` (pools replaced).
    Exceptions raised by math-verify mean "not equal"; only workers that cannot start at all
    raise. Use as ``async with Grader() as g:`` or call `aclose()`. The pool starts on the
    first check that needs it, taking a few seconds; spawned workers re-import the parent's
    ``__main__``, so scripts must keep their top-level code under a main guard.
    """

    GROWTH = 3.0  # deadlines grow this much per attempt

    def __init__(
        self,
        max_workers: int = 2,
        timeout: float = 5.0,
        cpu_limit: float = 2.0,
        attempts: int = 3,
    ) -> None:
        if attempts < 1 or timeout <= 0 or cpu_limit <= 0:
            raise ValueError("Grader needs attempts >= 1 and positive deadlines")
        self.max_workers = max_workers
        self.timeout = timeout
        self.cpu_limit = cpu_limit
        self.attempts = attempts
        self.checks = 0
        self.retried = 0
        self.unresolved = 0
        self.restarts = 0  # pools replaced after a deadline miss or crash
        self._pool: ProcessPoolExecutor | None = None
        self._pool_lock = asyncio.Lock()
        # At most one check per worker, so a deadline never counts time spent queued.
        self._slots = asyncio.Semaphore(max_workers)
        self._closed = False

    async def __aenter__(self) -> Grader:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            self._kill_pool(pool)

    def counts(self) -> dict[str, int]:
        return {
            "checks": self.checks,
            "retried": self.retried,
            "unresolved": self.unresolved,
            "restarts": self.restarts,
        }

    async def check_completion(self, completion_text: str, reference: str) -> bool:
        """Whether the final answer in `completion_text` is equivalent to `reference`."""
        return (await self.grade_completion(completion_text, reference)).correct

    async def equivalent(self, predicted: str | None, reference: str) -> bool:
        """Whether `predicted` is mathematically equivalent to the `reference` answer."""
        return (await self.grade(predicted, reference)).correct

    async def grade_completion(self, completion_text: str, reference: str) -> Grade:
        """`check_completion` with its retries and whether it stayed unresolved."""
        return await self.grade(extract_answer(completion_text), reference)

    async def grade(self, predicted: str | None, reference: str) -> Grade:
        """`equivalent` with its retries and whether it stayed unresolved."""
        if self._closed:
            raise RuntimeError("Grader is closed")
        self.checks += 1
        if predicted is None:
            return Grade(False)
        predicted = normalize_number_spacing(predicted).strip()
        reference = normalize_number_spacing(reference).strip()
        if not predicted or len(predicted) > MAX_ANSWER_CHARS or len(reference) > MAX_ANSWER_CHARS:
            return Grade(False)
        fast = answers_match_fast(predicted, reference)
        if fast is not None:
            return Grade(fast)
        # The worker wraps answers in \boxed{...}; a stray brace would escape the wrapper.
        if not (_braces_balanced(predicted) and _braces_balanced(reference)):
            return Grade(False)
        async with self._slots:
            return await self._grade_in_pool(predicted, reference)

    async def _grade_in_pool(self, predicted: str, reference: str) -> Grade:
        loop = asyncio.get_running_loop()
        attempt = broken = 0
        while True:
            pool = await self._get_pool()
            if pool is None:
                raise RuntimeError("Grader is closed")
            scale = self.GROWTH**attempt
            try:
                async with asyncio.timeout(self.timeout * scale):  # not wait_for: see engine.py
                    verdict = await loop.run_in_executor(
                        pool, _verify_in_worker, predicted, reference, self.cpu_limit * scale
                    )
            except TimeoutError:
                self._replace_pool(pool)  # the worker may be stuck where no signal reaches it
                verdict = None
            except BrokenProcessPool:
                self._replace_pool(pool)
                broken += 1
                if broken < self.attempts:
                    continue
                return self._unresolved(attempt, "its worker died each time", predicted, reference)
            except Exception:  # noqa: BLE001 - e.g. RecursionError raised in the worker
                log.debug("grading raised; graded not equal", exc_info=True)
                return Grade(False, attempt)
            if verdict is not None:
                return Grade(verdict, attempt)
            if attempt + 1 == self.attempts:
                return self._unresolved(attempt, "every deadline missed", predicted, reference)
            attempt += 1
            self.retried += 1

    def _unresolved(self, retried: int, why: str, predicted: str, reference: str) -> Grade:
        self.unresolved += 1
        log.warning(
            "grading: no verdict after %d attempt(s) (%s), graded wrong: %.80r vs %.80r",
            retried + 1,
            why,
            predicted,
            reference,
        )
        return Grade(False, retried, unresolved=True)

    async def _get_pool(self) -> ProcessPoolExecutor | None:
        async with self._pool_lock:
            if self._closed:
                return None
            if self._pool is None:
                # spawn, not fork: the parent has torch (and its threads) loaded.
                pool = ProcessPoolExecutor(
                    self.max_workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker,
                )
                # Pay for process start and the sympy import here, outside any deadline. Each
                # submit starts a worker (while it finds none idle), so all start below.
                loop = asyncio.get_running_loop()
                try:
                    with _sigint_blocked():
                        warm = [
                            loop.run_in_executor(pool, _warm_up_worker)
                            for _ in range(self.max_workers)
                        ]
                    await asyncio.gather(*warm)
                except BaseException:
                    self._kill_pool(pool)
                    raise
                if self._closed:
                    self._kill_pool(pool)
                    return None
                self._pool = pool
            return self._pool

    def _replace_pool(self, pool: ProcessPoolExecutor) -> None:
        if self._pool is pool:  # several failing checks may report the same pool
            self._pool = None
            self.restarts += 1
            self._kill_pool(pool)

    @staticmethod
    def _kill_pool(pool: ProcessPoolExecutor) -> None:
        # Python < 3.14 has no public way to kill busy workers; shutdown() would wait for them.
        for process in list((pool._processes or {}).values()):
            process.terminate()
        pool.shutdown(wait=False)


def grade_many(
    pairs: list[tuple[str | None, str]],
    max_workers: int = 2,
    timeout: float = 5.0,
    cpu_limit: float = 2.0,
) -> list[bool]:
    """Synchronously check (predicted, reference) pairs (deadlines as for `Grader`); run from a
    script's main guard, since spawned workers re-import ``__main__``."""

    async def run() -> list[bool]:
        async with Grader(max_workers, timeout, cpu_limit) as grader:
            return list(await asyncio.gather(*(grader.equivalent(p, r) for p, r in pairs)))

    return asyncio.run(run())
