"""Final-answer extraction and equivalence checking for math completions.

`extract_answer` pulls the final answer out of a completion (last ``\\boxed{}``, else
"The answer is X", else GSM8K's ``#### X``). `Grader` decides whether two answers are
equivalent: plain numbers are compared exactly in-process, everything else goes to
math-verify (LaTeX extraction only) in a spawned process pool. The pool is needed for two
reasons: math-verify's own timeouts use SIGALRM, which only works on a main thread, and a
sympy computation can hang where no signal interrupts it. So every check has a deadline,
and a worker that misses it is killed and the pool replaced.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from decimal import Decimal

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


def _init_worker() -> None:
    # math-verify logs every timeout, echoing the (possibly 2,000-character) answer.
    logging.getLogger("math_verify").setLevel(logging.ERROR)


def _verify_in_worker(predicted: str, reference: str, inner_timeout: int) -> bool:
    from math_verify import LatexExtractionConfig, parse, verify

    # LaTeX only: ExprExtractionConfig goes through sympy's parse_expr, i.e. eval().
    config = [LatexExtractionConfig(boxed_match_priority=0)]
    # Wrapping in \boxed{} makes the latex extractor take the whole answer.
    gold = parse(f"\\boxed{{{reference}}}", extraction_config=config, parsing_timeout=inner_timeout)
    pred = parse(f"\\boxed{{{predicted}}}", extraction_config=config, parsing_timeout=inner_timeout)
    # verify's argument order matters: the reference goes first.
    return bool(gold and pred and verify(gold, pred, timeout_seconds=inner_timeout))


def _warm_up_worker() -> None:
    _verify_in_worker("\\frac{1}{2}", "0.5", 1)


class Grader:
    """Async answer-equivalence checker backed by a spawned process pool.

    Every check answers True or False: deadline misses, parse failures and worker crashes
    all count as "not equal" (only workers that cannot start at all raise). Use as
    ``async with Grader() as g:`` or call `aclose()`. The pool starts on the first check
    that needs it, taking a few seconds; spawned workers re-import the parent's
    ``__main__``, so scripts must keep their top-level code under a main guard.
    """

    def __init__(self, max_workers: int = 2, timeout: float = 5.0) -> None:
        self.max_workers = max_workers
        self.timeout = timeout
        # math-verify's own SIGALRM timeouts (whole seconds, applied to each parse and each
        # comparison, ~3 per check) end most slow sympy work before the outer deadline, so
        # the worker survives; the outer deadline is for work no signal can interrupt.
        self._inner_timeout = max(1, int(timeout) // 3)
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

    async def check_completion(self, completion_text: str, reference: str) -> bool:
        """Whether the final answer in `completion_text` is equivalent to `reference`."""
        return await self.equivalent(extract_answer(completion_text), reference)

    async def equivalent(self, predicted: str | None, reference: str) -> bool:
        """Whether `predicted` is mathematically equivalent to the `reference` answer."""
        if self._closed:
            raise RuntimeError("Grader is closed")
        if predicted is None:
            return False
        predicted = normalize_number_spacing(predicted).strip()
        reference = normalize_number_spacing(reference).strip()
        if not predicted or len(predicted) > MAX_ANSWER_CHARS or len(reference) > MAX_ANSWER_CHARS:
            return False
        fast = answers_match_fast(predicted, reference)
        if fast is not None:
            return fast
        # The worker wraps answers in \boxed{...}; a stray brace would escape the wrapper.
        if not (_braces_balanced(predicted) and _braces_balanced(reference)):
            return False
        async with self._slots:
            return await self._check_in_pool(predicted, reference)

    async def _check_in_pool(self, predicted: str, reference: str) -> bool:
        loop = asyncio.get_running_loop()
        # One retry for a check whose pool broke under it (another check's kill, or a crash).
        for _attempt in range(2):
            pool = await self._get_pool()
            if pool is None:
                return False  # closed while this check was in flight
            try:
                async with asyncio.timeout(self.timeout):  # not wait_for: see engine.py
                    return await loop.run_in_executor(
                        pool, _verify_in_worker, predicted, reference, self._inner_timeout
                    )
            except TimeoutError:
                self._replace_pool(pool)  # the worker may be stuck where no signal reaches it
                return False
            except BrokenProcessPool:
                self._replace_pool(pool)
            except Exception:
                return False  # e.g. RecursionError raised in the worker
        return False

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
                # Pay for process start and the sympy import here, outside any deadline.
                loop = asyncio.get_running_loop()
                try:
                    await asyncio.gather(
                        *(
                            loop.run_in_executor(pool, _warm_up_worker)
                            for _ in range(self.max_workers)
                        )
                    )
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
    pairs: list[tuple[str | None, str]], max_workers: int = 2, timeout: float = 5.0
) -> list[bool]:
    """Synchronously check (predicted, reference) pairs; run from a script's main guard,
    since spawned workers re-import ``__main__``."""

    async def run() -> list[bool]:
        async with Grader(max_workers=max_workers, timeout=timeout) as grader:
            return list(await asyncio.gather(*(grader.equivalent(p, r) for p, r in pairs)))

    return asyncio.run(run())
