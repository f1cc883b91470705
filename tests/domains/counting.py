"""A second problem domain, defined outside amcs: counting coins in heaps, with exact step truth.

It shows what adding a domain takes: this one file and one registry line (the last line), no
other module changed. A question lists heaps; a solution adds one heap per step, then states the
count (the bundled tiny policy writes such solutions, so real runs have right and wrong steps)::

    What is 3 + 5 + 4 coins?

    3 + 5 = 8

    8 + 4 = 12

    The answer is \\boxed{12}.

A step ``a + b = c`` is correct when ``a`` is the count so far (the first heap, at the first
step), ``b`` the next heap and ``c = a + b``; a wrong sum still becomes the count so far, so
later steps are judged against what the solver believes. The answer step is correct when every
heap was added and the boxed number is the true count. Anything else is wrong.

Registered when imported: ``AMCS_PLUGINS=tests/domains/counting.py amcs generate --problems
counting:5`` (see amcs.registry); tests call ``register_domain(COUNTING, replace=True)``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from amcs.domains import StepCheck, register_domain
from amcs.problems import Problem

_STEP_RE = re.compile(r"^\s*(-?\d+) \+ (-?\d+) = (-?\d+)\s*\.?\s*$")
_ANSWER_RE = re.compile(r"^\s*The answer is \\boxed\{(-?\d+)\}\.?\s*$")
_QUESTION_RE = re.compile(r"^What is (\d+(?: \+ \d+)+) coins\?$")


def question_for(heaps: Sequence[int]) -> str:
    return f"What is {' + '.join(map(str, heaps))} coins?"


def heaps_of(question: str) -> list[int] | None:
    """The heaps a counting question lists, else None."""
    m = _QUESTION_RE.match(question)
    return [int(x) for x in m.group(1).split(" + ")] if m else None


def reference_steps(heaps: Sequence[int]) -> list[str]:
    steps, total = [], heaps[0]
    for heap in heaps[1:]:
        steps.append(f"{total} + {heap} = {total + heap}")
        total += heap
    return [*steps, f"The answer is \\boxed{{{total}}}."]


class CountingDomain:
    """``counting[:N]``: N questions of 3-5 heaps of 1-30 coins, drawn in order from ``seed``."""

    name = "counting"
    title = "counting"
    sources = ("counting",)
    default_count = 20
    has_step_truth = True

    def problems(self, source: str, count: int, seed: int) -> list[Problem]:
        rng = random.Random(f"counting-{seed}")
        out = []
        for i in range(count):
            heaps = [rng.randint(1, 30) for _ in range(rng.randint(3, 5))]
            out.append(
                Problem(
                    id=f"counting-{seed}-{i}",
                    question=question_for(heaps),
                    answer=str(sum(heaps)),
                    meta={"domain": self.name, "heaps": heaps},
                )
            )
        return out

    def owns(self, question: str) -> bool:
        return heaps_of(question) is not None

    def check_steps(self, question: str, steps: Sequence[str]) -> StepCheck:
        heaps = heaps_of(question)
        if heaps is None:
            raise ValueError(f"not a counting question: {question!r}")
        check, total, added, answered, all_ok = StepCheck(), heaps[0], 1, False, True
        for text in steps:
            step, final = _STEP_RE.match(text), _ANSWER_RE.match(text)
            ok = False
            if answered:
                ok = False
            elif step and added < len(heaps):
                a, b, c = int(step[1]), int(step[2]), int(step[3])
                ok = a == total and b == heaps[added] and c == a + b
                total, added = c, added + 1
            elif final:
                answered = True
                ok = added == len(heaps) and int(final[1]) == sum(heaps)
            all_ok = all_ok and ok
            check.step_correct.append(ok)
            check.prefix_correct.append(all_ok)
        check.solved = answered and all_ok
        return check


COUNTING = CountingDomain()
register_domain(COUNTING, replace=True)
