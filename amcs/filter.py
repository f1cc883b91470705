"""The consensus filter: keep the paths where the Monte Carlo labels and a judge agree on the first
wrong step ("The Lessons of Developing Process Reward Models in Mathematical Reasoning",
arXiv 2501.07301, section 3: keep a sample only when the MC estimate's first error and the judge's
first error are the same step, "no error" counting as a position).

A judge is any step scorer (``async score(question, steps) -> [P(step correct)]``): a PRM loaded
with `amcs.prm.load_prm`, `amcs.verification.ArithOracleScorer` (the exact checker), or an
instruct model on any backend asked for the earliest wrong step (`amcs.critic.CriticJudge`). Its
first error is the first step scored below `threshold`; a judge that gives no usable answer
(scores NaN) drops the path as "judge gave no verdict".

`filter_file` streams a data file of `amcs generate` (or any TRL-format JSONL with prompt,
completions, labels) to an output that is written beside its final name and renamed into place
when complete; an interrupted run resumes from a progress file next to it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from amcs.fields import ConfigError, option, validate
from amcs.jsonl import JSONLinesError, read_json_lines
from amcs.outputs import OutputPathError, check_output, naming
from amcs.policy_config import BackendSource, PolicyConfig, open_given
from amcs.prm.names import SCORER_NAMES, scorer_location
from amcs.records import RecordFormatError, committed_end, data_row_problem

MODES = ("keep", "mark")
# Why a path was kept or dropped.
AGREE = "agree"
JUDGE_EARLIER = "judge finds an earlier error"
JUDGE_LATER = "judge finds a later error"
JUDGE_NONE = "judge finds no error where MC does"
MC_NONE = "judge finds an error where MC finds none"
NO_VERDICT = "judge gave no verdict"


class StepScorer(Protocol):
    async def score(self, question: str, steps: list[str]) -> list[float]: ...


class FilterError(ValueError):
    """An input or output the filter cannot use; the message names it."""


def mc_first_error(labels: list[bool]) -> int:
    """Index of the first step labelled "-", or -1 when every step is "+"."""
    return next((i for i, label in enumerate(labels) if not label), -1)


def judge_first_error(scores: list[float], threshold: float) -> int | None:
    """Index of the first step the judge scores below `threshold`, or -1; None when the judge
    gave no verdict (a NaN score)."""
    if any(math.isnan(s) for s in scores):
        return None
    return next((i for i, s in enumerate(scores) if s < threshold), -1)


def verdict(mc: int, judge: int | None) -> str:
    """Why a path with these first errors (-1: none; judge None: no verdict) is kept or
    dropped."""
    if judge is None:
        return NO_VERDICT
    if mc == judge:
        return AGREE
    if mc < 0:
        return MC_NONE
    if judge < 0:
        return JUDGE_NONE
    return JUDGE_EARLIER if judge < mc else JUDGE_LATER


@dataclass
class FilterStats:
    paths: int = 0
    kept: int = 0
    reasons: Counter = field(default_factory=Counter)
    resumed_from: int = 0  # input lines already done by an interrupted run

    @property
    def dropped(self) -> int:
        return self.paths - self.kept

    def to_dict(self) -> dict:
        return {
            "paths": self.paths,
            "kept": self.kept,
            "dropped": self.dropped,
            "kept_fraction": self.kept / self.paths if self.paths else None,
            "reasons": dict(sorted(self.reasons.items())),
            "resumed_from": self.resumed_from,
        }


async def judge_paths(
    records: list[dict], judge: StepScorer, threshold: float
) -> list[tuple[int, int | None, str]]:
    """(MC first error, judge's first error, verdict) for each record; judged concurrently, so a
    PRM scorer batches them."""
    scores = await asyncio.gather(*(judge.score(r["prompt"], r["completions"]) for r in records))
    out = []
    for r, s in zip(records, scores, strict=True):
        mc, jd = mc_first_error(r["labels"]), judge_first_error(s, threshold)
        out.append((mc, jd, verdict(mc, jd)))
    return out


def _read_records(path: Path, skip: int) -> Iterator[tuple[int, dict]]:
    """(line number, record) of each non-blank line after the first `skip` lines; an amcs data
    file is read only as far as its meta file says problems were committed."""
    try:
        for number, record in read_json_lines(path, committed_end(path)):
            if number <= skip:
                continue
            problem = data_row_problem(record)
            if problem is not None:  # NaN or out-of-range values included: never copied on
                raise FilterError(f"{path}:{number}: {problem}")
            yield number, record
    except (JSONLinesError, RecordFormatError) as exc:
        raise FilterError(str(exc)) from None


def _fingerprint(data: Path, judge_name: str, mode: str, threshold: float) -> str:
    st = data.stat()
    key = json.dumps([str(data.resolve()), st.st_size, judge_name, mode, threshold])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def partial_paths(out: Path) -> tuple[Path, Path]:
    """Where an unfinished output and its progress live (beside `out`)."""
    return out.with_name(f".{out.name}.partial"), out.with_name(f".{out.name}.progress")


def summary_path(out: Path) -> Path:
    """Where the counts of a finished run go (beside `out`)."""
    return out.with_name(out.name + ".summary.json")


def check_paths(data: Path, out: Path, judge: str | None = None) -> None:
    """Refuse a missing input, and an output (or a file written beside it) that is the input,
    its run's meta or lock file, the judge, a folder or no regular file
    (:func:`amcs.outputs.check_output`)."""
    if not data.is_file():
        raise FilterError(f"{data}: no such file")
    partial, progress = partial_paths(out)
    beside = [("summary", summary_path(out)), ("partial output", partial), ("progress", progress)]
    try:
        check_output("--out", out, inputs=[judge], runs=[data], beside=beside)
    except OutputPathError as exc:
        raise FilterError(str(exc)) from None


async def filter_file(
    data: Path,
    out: Path,
    judge: StepScorer,
    *,
    judge_name: str,
    mode: str = "keep",
    threshold: float = 0.5,
    batch: int = 64,
    resume: bool = True,
    on_batch=None,
) -> FilterStats:
    """Judge every path of `data` and write to `out`: in mode "keep" the paths where MC and the
    judge agree on the first error; in mode "mark" every path, with ``consensus`` (bool),
    ``judge_first_error`` and ``mc_first_error`` added. Resumes from the progress of an
    interrupted run with the same input, judge, mode and threshold; the output appears only when
    complete. Returns the counts (also written to OUT.summary.json)."""
    if mode not in MODES:
        raise FilterError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    check_paths(data, out)
    partial, progress = partial_paths(out)
    fingerprint = _fingerprint(data, judge_name, mode, threshold)
    stats = FilterStats()
    done_lines, done_bytes = 0, 0
    if resume and partial.exists() and progress.exists():
        try:
            state = json.loads(progress.read_text())
        except ValueError:
            state = {}
        if state.get("fingerprint") == fingerprint and partial.stat().st_size >= state["bytes"]:
            done_lines, done_bytes = state["lines"], state["bytes"]
            stats.paths, stats.kept = state["paths"], state["kept"]
            stats.reasons = Counter(state["reasons"])
            stats.resumed_from = done_lines
    # naming outside open: closing the file flushes too, and may fail the same way.
    with naming(partial), open(partial, "r+b" if done_bytes else "wb") as f:
        f.truncate(done_bytes)
        f.seek(done_bytes)

        async def flush(items: list[tuple[int, dict]]) -> None:
            judged = await judge_paths([r for _, r in items], judge, threshold)
            for (_, record), (mc, jd, why) in zip(items, judged, strict=True):
                stats.paths += 1
                stats.reasons[why] += 1
                agree = why == AGREE
                stats.kept += agree
                if mode == "mark":
                    record = record | {
                        "consensus": agree,
                        "mc_first_error": mc,
                        "judge_first_error": jd,
                    }
                elif not agree:
                    continue
                f.write(json.dumps(record, ensure_ascii=False).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
            state = {
                "fingerprint": fingerprint,
                "lines": items[-1][0],
                "bytes": f.tell(),
                "paths": stats.paths,
                "kept": stats.kept,
                "reasons": dict(stats.reasons),
            }
            tmp = progress.with_name(progress.name + ".tmp")
            with naming(tmp):
                tmp.write_text(json.dumps(state))
            os.replace(tmp, progress)
            if on_batch is not None:
                on_batch(stats)

        pending: list[tuple[int, dict]] = []
        for number, record in _read_records(data, done_lines):
            pending.append((number, record))
            if len(pending) >= batch:
                await flush(pending)
                pending = []
        if pending:
            await flush(pending)
    summary = summary_path(out)
    tmp = summary.with_name(f".{summary.name}.tmp")
    with naming(tmp):
        tmp.write_text(
            json.dumps(
                {"input": str(data), "judge": judge_name, "mode": mode, "threshold": threshold}
                | stats.to_dict(),
                indent=2,
            )
            + "\n"
        )
    os.replace(partial, out)
    os.replace(tmp, summary)
    progress.unlink(missing_ok=True)
    return stats


# --- the filter stage: run(FilterConfig(...)), as `amcs filter` does -----------------------------

INSTRUCT = "instruct"


@dataclass(frozen=True)
class FilterConfig:
    """Every option of `amcs filter`: the input run, where the kept paths go, and the judge."""

    data: str | None = option(None, "a data file of `amcs generate` (or TRL-format JSONL)")
    out: str | None = option(None, "where to write the kept paths (JSONL)")
    judge: str = option(
        "tiny-prm",
        f"who judges the steps: {SCORER_NAMES}, or {INSTRUCT} (an instruct model asked for the "
        "earliest wrong step: --judge-model)",
    )
    judge_model: str | None = option(
        None, f"--judge {INSTRUCT}: the model (path or hub id; for servers the tokenizer)"
    )
    backend: str = option(
        "hf", f"--judge {INSTRUCT}: hf | sglang | sglang-http | openai, as for generate"
    )
    url: list[str] | None = option(None, f"--judge {INSTRUCT}: server URL(s)")
    served_model_name: str | None = option(
        None, f"--judge {INSTRUCT} with openai: the name the server serves the model under"
    )
    max_new_tokens: int = option(
        1024, f"--judge {INSTRUCT}: the most tokens of one critique", min=1
    )
    mode: str = option(
        "keep",
        "keep: write only the paths where both agree; mark: write every path with 'consensus', "
        "'mc_first_error' and 'judge_first_error' added",
        choices=MODES,
    )
    threshold: float = option(
        0.5, "a step the judge scores below this is its first error", min=0, max=1
    )
    prm_format: str | None = option(None, "token-cls, step-tag or qwen-prm [default: detected]")
    batch_size: int = option(32, "steps the PRM scores in one forward pass", min=1)
    resume: bool = option(True, "continue an interrupted run on the same input")

    def __post_init__(self) -> None:
        for name in ("data", "out"):
            if isinstance(getattr(self, name), os.PathLike):
                object.__setattr__(self, name, os.fspath(getattr(self, name)))
        if isinstance(self.url, str):
            object.__setattr__(self, "url", [self.url])
        validate(self)
        if self.data is None or self.out is None:
            raise ConfigError("the filter needs a data file (data) and an output (out)")
        if self.judge == INSTRUCT and not self.judge_model:
            raise ConfigError(
                f"--judge {INSTRUCT} needs --judge-model (the instruct model that judges)"
            )
        if self.judge != INSTRUCT and self.judge_model:
            raise ConfigError(f"--judge-model is for --judge {INSTRUCT}")

    @property
    def judge_name(self) -> str:
        """The judge as the summary and the resume check name it."""
        return f"{self.judge}:{self.judge_model}" if self.judge == INSTRUCT else self.judge

    def judge_policy(self) -> PolicyConfig:
        """--judge instruct: the instruct model and the backend that serves it."""
        return PolicyConfig(
            backend=self.backend,
            model=self.judge_model,
            url=self.url,
            served_model_name=self.served_model_name,
        )


def run(
    config: FilterConfig,
    *,
    backend: BackendSource = None,
    on_batch: Callable[[FilterStats], None] | None = None,
) -> FilterStats:
    """Judge every path of ``config.data`` and write the kept (or marked) ones to
    ``config.out`` (:func:`filter_file`). Checks the paths first (FilterError, ShardError for a
    concatenated file naming two questions by one id); ScorerError when the judge names no
    loadable scorer. With --judge instruct, backend is an open backend (left open), an async
    function that opens one, or None: the one the config names."""
    from amcs.prm import load_scorer
    from amcs.shards import check_combinable

    data, out = Path(config.data), Path(config.out)
    instruct = config.judge == INSTRUCT
    check_paths(data, out, config.judge_model if instruct else scorer_location(config.judge))
    check_combinable([data])  # a concatenated file may name two questions by one id
    scorer = (
        None
        if instruct
        else load_scorer(
            config.judge, prm_format=config.prm_format, max_batch_size=config.batch_size
        )
    )

    async def main() -> FilterStats:
        nonlocal scorer
        opened = None
        if scorer is None:
            from amcs.critic import CriticJudge

            opened = await open_given(backend, config.judge_policy())
            scorer = CriticJudge(opened, max_new_tokens=config.max_new_tokens)
        try:
            return await filter_file(
                data,
                out,
                scorer,
                judge_name=config.judge_name,
                mode=config.mode,
                threshold=config.threshold,
                resume=config.resume,
                on_batch=on_batch,
            )
        finally:
            if not instruct or opened is not backend:  # ours: the PRM, or the judge's backend
                await scorer.aclose()

    return asyncio.run(main())
