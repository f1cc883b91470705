"""Step-level evaluation of a PRM, the way ProcessBench measures it.

A step-evaluation file is JSONL in ProcessBench's layout, one solution per line::

    {"id": "...", "problem": "What is 3 + 4 * 5?", "steps": ["4 * 5 = 20", ...],
     "label": 1, "final_answer_correct": false, "generator": "tiny-arith-policy"}

``label`` is the index of the earliest wrong step, or -1 when every step is correct. A PRM predicts
the earliest error as the first step whose score falls below a threshold (-1 when none does). With
a1 = accuracy of that prediction on erroneous solutions (label >= 0) and a2 = accuracy on correct
ones (label = -1), the score is their harmonic mean F1 = 2 a1 a2 / (a1 + a2), so a PRM that calls
everything right (a1 = 0) or everything wrong (a2 = 0) scores 0.

A problem domain with step truth (:mod:`amcs.domains`, e.g. the bundled arithmetic one) makes
such examples with exact labels (:func:`exact_step_examples`): solutions sampled from a policy,
each step judged by the domain's ``check_steps``.

:func:`read_step_file` also reads labelled paths: an ``amcs generate`` run (or any TRL PRM rows:
``prompt``, ``completions``, ``labels``), told apart per file by the keys of its first line. Each
path is one example whose reference ``label`` is the index of its first "-" step, -1 when all
are "+" (:func:`path_examples`): the reference is then the run's Monte Carlo labels, not human
labels. A path that has a "-" is kept whole (the search cuts it after its first "-", which
changes nothing: a prediction matches only when it finds exactly that step). A path that is all
"+" is a correct full solution only when it states a final answer (``amcs.grading.
extract_answer`` finds one in a step); otherwise it is a prefix (a search stopped by its budget,
a Math-Shepherd path cut at max_new_tokens) and is left out and counted: ProcessBench's a2
measures correct *full* solutions, and a prefix whose later steps nobody judged is not one.
``final_answer_correct`` is the stated answer against the line's ``answer`` where both are plain
numbers (``answers_match_fast``), else unknown (None).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from amcs.backends.base import Backend, SamplingParams
from amcs.domains import Domain, question_domain
from amcs.grading import answers_match_fast, extract_answer
from amcs.jsonl import JSONLinesError, read_json_lines
from amcs.outputs import naming
from amcs.prompts import prompt_ids
from amcs.records import RecordFormatError
from amcs.seeds import derive_seed
from amcs.steps import split_steps

DEFAULT_THRESHOLD = 0.5
SWEEP = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 ... 0.95


class StepDataError(ValueError):
    """Bad step-evaluation input; the message names the file and line."""


@dataclass(frozen=True)
class StepExample:
    id: str
    problem: str
    steps: list[str]
    label: int  # earliest wrong step, -1 when all steps are correct
    final_answer_correct: bool | None = None
    generator: str | None = None


PROCESSBENCH = "processbench"
PATHS = "paths"  # amcs run / TRL PRM rows: prompt, completions, labels
MC_REFERENCE = "reference = the run's Monte Carlo labels, not human labels"
_PATH_KEYS = ("problem_id", "answer", "model")  # what a path example takes from an amcs line


@dataclass(frozen=True)
class StepFile:
    """The examples of a step-evaluation file; ``layout`` is PROCESSBENCH or PATHS, and
    ``prefixes`` counts the all-"+" paths left out because they stop before a final answer."""

    examples: list[StepExample]
    layout: str
    prefixes: int = 0


def read_step_examples(path: str | Path) -> list[StepExample]:
    """The examples of a ProcessBench-layout file or of labelled paths (:func:`read_step_file`)."""
    return read_step_file(path).examples


def read_step_file(path: str | Path) -> StepFile:
    """Read a step-evaluation file, its layout told by the keys of its first line: ``prompt`` or
    ``completions`` (an amcs run, TRL rows) -> labelled paths (:func:`path_examples`), else
    ProcessBench (problem, steps, label). Errors name the file and line."""
    path = Path(path)
    if path.is_dir():
        raise StepDataError(f"{path}: is a directory, not a data file")
    if not path.exists():
        raise StepDataError(f"{path}: no such file")
    try:
        first = next(iter(read_json_lines(path)), (0, None))[1]
        if isinstance(first, dict) and ({"prompt", "completions"} & set(first)):
            from amcs.prm_data import iter_prm_rows

            examples, prefixes = path_examples(iter_prm_rows(path, "trl", keep=_PATH_KEYS))
            return StepFile(examples, PATHS, prefixes)
        return StepFile(_processbench_examples(path), PROCESSBENCH)
    except (JSONLinesError, RecordFormatError) as exc:  # PRMDataError is a RecordFormatError
        raise StepDataError(str(exc)) from None
    except OSError as exc:
        raise StepDataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _processbench_examples(path: Path) -> list[StepExample]:
    examples = []
    for line_no, record in read_json_lines(path):
        where = f"{path}:{line_no}"
        if not isinstance(record, dict):
            raise StepDataError(f"{where}: expected a JSON object")
        missing = [k for k in ("problem", "steps", "label") if k not in record]
        if missing:
            raise StepDataError(f"{where}: missing {', '.join(missing)}")
        steps, label = record["steps"], record["label"]
        if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
            raise StepDataError(f"{where}: 'steps' must be a list of strings")
        if isinstance(label, bool) or not isinstance(label, int) or not -1 <= label < len(steps):
            raise StepDataError(
                f"{where}: 'label' must be -1 or a step index below {len(steps)}, got {label!r}"
            )
        examples.append(
            StepExample(
                id=str(record.get("id", line_no)),
                problem=str(record["problem"]),
                steps=steps,
                label=label,
                final_answer_correct=record.get("final_answer_correct"),
                generator=record.get("generator"),
            )
        )
    return examples


def first_minus(labels: Sequence[bool]) -> int:
    """The index of the first "-" (False) label, -1 when every label is "+"."""
    return next((i for i, label in enumerate(labels) if not label), -1)


def stated_answer(steps: Sequence[str]) -> str | None:
    """The final answer a path states: ``extract_answer`` of its last step that has one."""
    return next((a for a in map(extract_answer, reversed(steps)) if a is not None), None)


def path_examples(rows: Iterable[tuple[str, dict]]) -> tuple[list[StepExample], int]:
    """(examples, prefixes left out) from labelled paths, (location, row) pairs as
    ``amcs.prm_data.iter_prm_rows`` yields them (with ``problem_id``, ``answer``, ``model`` kept
    where the line has them); see the module docstring for the rule.

    id = ``<problem_id>-<k>`` for the k-th path of a problem (from 0), else the line number;
    problem = prompt; steps = completions; label = first "-" or -1; generator = the line's model.
    """
    examples: list[StepExample] = []
    prefixes = 0
    paths_of: Counter[str] = Counter()
    for where, row in rows:
        steps, label = list(row["completions"]), first_minus(row["labels"])
        answer = stated_answer(steps)
        if label < 0 and answer is None:
            prefixes += 1
            continue
        reference = row.get("answer")
        correct = None
        if answer is not None and isinstance(reference, str | int | float):
            correct = answers_match_fast(answer, str(reference))
        pid = row.get("problem_id")
        if isinstance(pid, str):
            example_id = f"{pid}-{paths_of[pid]}"
            paths_of[pid] += 1
        else:
            example_id = where.rsplit(":", 1)[-1]
        model = row.get("model")
        examples.append(
            StepExample(
                id=example_id,
                problem=row["prompt"],
                steps=steps,
                label=label,
                final_answer_correct=correct,
                generator=model if isinstance(model, str) else None,
            )
        )
    return examples, prefixes


def write_step_examples(path: str | Path, examples: Sequence[StepExample]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with naming(path), path.open("w", encoding="utf-8") as f:
        for example in examples:
            f.write(json.dumps(asdict(example), ensure_ascii=False) + "\n")


def predict_first_error(scores: Sequence[float], threshold: float = DEFAULT_THRESHOLD) -> int:
    """The predicted earliest error: the first step scored below ``threshold``, else -1."""
    return next((i for i, s in enumerate(scores) if s < threshold), -1)


def first_error_f1(predictions: Sequence[int], labels: Sequence[int]) -> dict:
    """ProcessBench's metric.

    a1 = mean[pred == label] over erroneous solutions (label >= 0),
    a2 = mean[pred == -1] over correct solutions (label == -1),
    F1 = 2 a1 a2 / (a1 + a2) (0 when a1 + a2 = 0). An empty group counts as accuracy 0.
    """
    if len(predictions) != len(labels):
        raise ValueError("predictions and labels differ in length")
    erroneous = [(p, y) for p, y in zip(predictions, labels, strict=True) if y >= 0]
    correct = [p for p, y in zip(predictions, labels, strict=True) if y < 0]
    a1 = sum(p == y for p, y in erroneous) / len(erroneous) if erroneous else 0.0
    a2 = sum(p == -1 for p in correct) / len(correct) if correct else 0.0
    f1 = 2 * a1 * a2 / (a1 + a2) if a1 + a2 > 0 else 0.0
    return {
        "f1": f1,
        "a1_erroneous": a1,
        "a2_correct": a2,
        "n_erroneous": len(erroneous),
        "n_correct": len(correct),
    }


def f1_at(scores: Sequence[Sequence[float]], labels: Sequence[int], threshold: float) -> dict:
    predictions = [predict_first_error(s, threshold) for s in scores]
    return first_error_f1(predictions, labels) | {"threshold": threshold}


def step_report(
    scores: Sequence[Sequence[float]],
    labels: Sequence[int],
    threshold: float = DEFAULT_THRESHOLD,
    sweep: Sequence[float] = SWEEP,
) -> dict:
    """F1 at ``threshold`` plus the sweep over ``sweep`` and its best point. The best threshold is
    chosen on the same data, so it is an optimistic upper bound, reported as such."""
    table = [f1_at(scores, labels, t) for t in sweep]
    best = max(table, key=lambda row: (row["f1"], -abs(row["threshold"] - threshold)))
    return f1_at(scores, labels, threshold) | {"best_threshold": best, "sweep": table}


async def score_examples(scorer, examples: Sequence[StepExample]) -> list[list[float]]:
    """Step scores of every example from a scorer with ``async score(question, steps)``;
    the calls run concurrently so a batching scorer can group them."""
    return list(await asyncio.gather(*(scorer.score(e.problem, e.steps) for e in examples)))


async def exact_step_examples(
    backend: Backend,
    problems: Sequence,
    *,
    domain: Domain | None = None,
    samples: int = 1,
    temperature: float = 1.0,
    max_new_tokens: int = 200,
    seed: int = 0,
    generator: str = "tiny-arith-policy",
    rules: dict[str, Any] | None = None,
) -> list[StepExample]:
    """Sample ``samples`` solutions per problem (anything with ``id``, ``question`` and
    ``answer``: ``amcs.problems.Problem``, ``amcs.domains.arith.ArithProblem``) and label each
    with exact truth: ``label`` = first wrong step by ``domain.check_steps``, -1 when every step
    is right; ``final_answer_correct`` = the stated answer matches ``answer``
    (``answers_match_fast``). ``domain``: whose truth (default: the registered domain with step
    truth that owns each question; ValueError naming a problem no domain owns). ``rules``: how a
    solution splits into steps (keyword arguments of :func:`amcs.steps.split_steps`, e.g.
    ``amcs.steps.step_rules(config)``; default: the "\\n\\n" separator)."""

    def judge_of(problem) -> Domain:
        found = domain or question_domain(problem.question)
        if found is None:
            raise ValueError(
                f"problem {problem.id}: no problem domain with step truth owns its question"
            )
        return found

    async def one(problem) -> list[StepExample]:
        judge = judge_of(problem)
        params = SamplingParams(
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            seed=derive_seed(seed, problem.id),
        )
        ids = prompt_ids(backend.tokenizer, problem.question)
        rollouts = await backend.sample(ids, samples, params)
        out = []
        for j, rollout in enumerate(rollouts):
            steps = split_steps(rollout.text, **(rules or {}))
            if not steps:
                continue
            check = judge.check_steps(problem.question, steps)
            stated = extract_answer(rollout.text) or ""
            out.append(
                StepExample(
                    id=f"{problem.id}-{j}",
                    problem=problem.question,
                    steps=steps,
                    label=check.first_error,
                    final_answer_correct=answers_match_fast(stated, str(problem.answer)) is True,
                    generator=generator,
                )
            )
        return out

    for problem in problems:
        judge_of(problem)  # every problem has a judge before any sampling starts
    groups = await asyncio.gather(*(one(p) for p in problems))
    return [example for group in groups for example in group]
