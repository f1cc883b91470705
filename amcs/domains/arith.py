"""Synthetic multi-step integer arithmetic with exact step truth.

A problem is an expression such as ``3 + 4 * (5 - 2) - 7`` over +, -, * with the usual precedence and
optional parentheses. Its reference solution reduces one operation per step, one equation per step,
steps separated by a blank line, and ends with the final-answer step::

    5 - 2 = 3

    4 * 3 = 12

    3 + 12 = 15

    15 - 7 = 8

    The answer is \\boxed{8}.

Because the expression is known, every step a model writes can be checked exactly: a step is correct
when its operands and operator match an operation that can be evaluated next in the current
expression (both operands already numbers) and its result is right. That gives the true label of
every prefix, which is what lets amcs audit its Monte Carlo labels.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from amcs.domains.base import StepCheck

# An expression tree: an int leaf, or (op, left, right).
Expr = int | tuple

QUESTION_TEMPLATE = "What is {expression}?"
ANSWER_TEMPLATE = "The answer is \\boxed{{{value}}}."
STEP_SEPARATOR = "\n\n"

_PRECEDENCE = {"+": 1, "-": 1, "*": 2}
_STEP_RE = re.compile(r"^\s*(-?\d+) ([-+*]) (-?\d+) = (-?\d+)\s*\.?\s*$")
_ANSWER_RE = re.compile(r"^\s*The answer is \\boxed\{(-?\d+)\}\.?\s*$")
_TOKEN_RE = re.compile(r"\s*(\d+|[-+*()])")
_MAX_STEP_CHARS = 200


@dataclass(frozen=True)
class ArithConfig:
    """How problems are drawn. Operands are drawn from [operand_min, operand_max]; problems whose
    intermediate values leave [-max_abs_value, max_abs_value] are redrawn."""

    min_ops: int = 2
    max_ops: int = 6
    operand_min: int = 1
    operand_max: int = 20
    paren_prob: float = 0.5
    max_abs_value: int = 999

    def __post_init__(self) -> None:
        if not 1 <= self.min_ops <= self.max_ops:
            raise ValueError(f"need 1 <= min_ops <= max_ops, got {self.min_ops}, {self.max_ops}")
        if not 0 <= self.operand_min <= self.operand_max:
            raise ValueError("need 0 <= operand_min <= operand_max")


@dataclass(frozen=True)
class ArithProblem:
    id: str
    expression: str
    answer: int
    solution_steps: tuple[str, ...]

    @property
    def question(self) -> str:
        return QUESTION_TEMPLATE.format(expression=self.expression)

    @property
    def solution(self) -> str:
        return STEP_SEPARATOR.join(self.solution_steps)


# --- parsing and printing -------------------------------------------------------------------


def parse_expression(text: str) -> Expr:
    """Parse an integer expression over + - * and parentheses (precedence, left associativity)."""
    tokens: list[str] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m:
            raise ValueError(f"unexpected character at {pos} in {text!r}")
        tokens.append(m.group(1))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    expr, rest = _parse_sum(tokens, 0)
    if rest != len(tokens):
        raise ValueError(f"trailing input in {text!r}")
    return expr


def _parse_sum(tokens: list[str], i: int) -> tuple[Expr, int]:
    left, i = _parse_product(tokens, i)
    while i < len(tokens) and tokens[i] in "+-":
        op = tokens[i]
        right, i = _parse_product(tokens, i + 1)
        left = (op, left, right)
    return left, i


def _parse_product(tokens: list[str], i: int) -> tuple[Expr, int]:
    left, i = _parse_atom(tokens, i)
    while i < len(tokens) and tokens[i] == "*":
        right, i = _parse_atom(tokens, i + 1)
        left = ("*", left, right)
    return left, i


def _parse_atom(tokens: list[str], i: int) -> tuple[Expr, int]:
    if i >= len(tokens):
        raise ValueError("unexpected end of expression")
    tok = tokens[i]
    if tok == "(":
        inner, i = _parse_sum(tokens, i + 1)
        if i >= len(tokens) or tokens[i] != ")":
            raise ValueError("missing ')'")
        return inner, i + 1
    if tok == "-" and i + 1 < len(tokens) and tokens[i + 1].isdigit():
        return -int(tokens[i + 1]), i + 2
    if tok.isdigit():
        return int(tok), i + 1
    raise ValueError(f"unexpected token {tok!r}")


def format_expression(expr: Expr) -> str:
    """Print with the fewest parentheses that keep the tree's meaning."""
    if isinstance(expr, int):
        return str(expr)
    op, left, right = expr
    lhs = format_expression(left)
    rhs = format_expression(right)
    if isinstance(left, tuple) and _PRECEDENCE[left[0]] < _PRECEDENCE[op]:
        lhs = f"({lhs})"
    # A right operand of equal precedence keeps its parentheses so that re-parsing (which
    # associates to the left) gives back the same tree, hence the same reference steps.
    if isinstance(right, tuple) and _PRECEDENCE[right[0]] <= _PRECEDENCE[op]:
        rhs = f"({rhs})"
    return f"{lhs} {op} {rhs}"


def evaluate(expr: Expr) -> int:
    if isinstance(expr, int):
        return expr
    op, left, right = expr
    return _apply(op, evaluate(left), evaluate(right))


def _apply(op: str, a: int, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


# --- reductions -----------------------------------------------------------------------------


def _redexes(expr: Expr, path: tuple[int, ...] = ()) -> list[tuple[tuple[int, ...], tuple]]:
    """Every operation whose operands are both numbers, in evaluation order (left to right)."""
    if isinstance(expr, int):
        return []
    _, left, right = expr
    if isinstance(left, int) and isinstance(right, int):
        return [(path, expr)]
    return _redexes(left, path + (1,)) + _redexes(right, path + (2,))


def _replace(expr: Expr, path: tuple[int, ...], value: int) -> Expr:
    if not path:
        return value
    op, left, right = expr
    if path[0] == 1:
        return (op, _replace(left, path[1:], value), right)
    return (op, left, _replace(right, path[1:], value))


def _matches(redex: tuple, op: str, a: int, b: int) -> bool:
    r_op, r_a, r_b = redex
    if r_op != op:
        return False
    return (r_a, r_b) == (a, b) or (op != "-" and (r_b, r_a) == (a, b))


def _canonical_reductions(expr: Expr):
    """Reduce the leftmost operation that can be evaluated, until one number is left; yields
    (a, op, b, value) for each reduction."""
    while isinstance(expr, tuple):
        path, (op, a, b) = _redexes(expr)[0]
        value = _apply(op, a, b)
        yield a, op, b, value
        expr = _replace(expr, path, value)


def reference_steps(expr: Expr) -> list[str]:
    """The canonical solution: always reduce the leftmost operation that can be evaluated."""
    steps = [f"{a} {op} {b} = {value}" for a, op, b, value in _canonical_reductions(expr)]
    steps.append(ANSWER_TEMPLATE.format(value=evaluate(expr)))
    return steps


def check_steps(expression: str | Expr, steps: list[str]) -> StepCheck:
    """Judge each step a model wrote against the expression, exactly.

    A step ``a op b = c`` is correct when ``a op b`` is an operation the current expression can
    evaluate next (both operands numbers; + and * may be written in either order) and c is its
    value. A wrong result still rewrites the expression (so later steps are judged against what the
    model believes), a step matching no operation leaves it unchanged. The answer step is correct
    when the expression is fully reduced and the boxed number is the expression's true value. Anything after the answer
    step, and any step that parses as neither form, is wrong. Never raises on model text.
    """
    expr = parse_expression(expression) if isinstance(expression, str) else expression
    true_value = evaluate(expr)
    result = StepCheck()
    all_ok = True
    answered = False
    for raw in steps:
        ok = False
        text = raw if len(raw) <= _MAX_STEP_CHARS else ""
        step = _STEP_RE.match(text)
        final = _ANSWER_RE.match(text)
        if answered:
            ok = False
        elif step:
            a, op, b, c = int(step[1]), step[2], int(step[3]), int(step[4])
            for path, redex in _redexes(expr) if isinstance(expr, tuple) else []:
                if _matches(redex, op, a, b):
                    ok = _apply(op, a, b) == c
                    expr = _replace(expr, path, c)
                    break
        elif final:
            answered = True
            ok = isinstance(expr, int) and int(final[1]) == true_value
        all_ok = all_ok and ok
        result.step_correct.append(ok)
        result.prefix_correct.append(all_ok)
    result.solved = answered and all_ok
    return result


# --- generation -----------------------------------------------------------------------------


def _random_expression(rng: random.Random, n_ops: int, config: ArithConfig) -> str:
    operands = [str(rng.randint(config.operand_min, config.operand_max)) for _ in range(n_ops + 1)]
    ops = [rng.choice("+-*") for _ in range(n_ops)]
    # Optionally wrap one run of at least two operands (not the whole expression) in parentheses.
    open_at = close_at = -1
    if n_ops >= 2 and rng.random() < config.paren_prob:
        width = rng.randint(2, n_ops)
        open_at = rng.randint(0, n_ops + 1 - width)
        close_at = open_at + width - 1
    parts = []
    for i, operand in enumerate(operands):
        if i == open_at:
            operand = "(" + operand
        if i == close_at:
            operand = operand + ")"
        parts.append(operand)
        if i < n_ops:
            parts.append(ops[i])
    return " ".join(parts)


def _within_range(expr: Expr, limit: int) -> bool:
    return all(abs(value) <= limit for *_, value in _canonical_reductions(expr))


def generate_problems(
    n: int, seed: int = 0, config: ArithConfig | None = None, id_prefix: str = "arith"
) -> list[ArithProblem]:
    """Draw n distinct problems; the same (n, seed, config) always gives the same list."""
    config = config or ArithConfig()
    rng = random.Random(seed)
    problems: list[ArithProblem] = []
    seen: set[str] = set()
    attempts = 0
    while len(problems) < n:
        attempts += 1
        if attempts > 100 * n + 1000:
            raise ValueError(f"cannot draw {n} distinct problems with {config}")
        n_ops = rng.randint(config.min_ops, config.max_ops)
        text = _random_expression(rng, n_ops, config)
        tree = parse_expression(text)
        if not isinstance(tree, tuple) or not _within_range(tree, config.max_abs_value):
            continue
        expression = format_expression(tree)
        if expression in seen:
            continue
        seen.add(expression)
        steps = reference_steps(tree)
        problems.append(
            ArithProblem(
                id=f"{id_prefix}-{seed}-{len(problems)}",
                expression=expression,
                answer=evaluate(tree),
                solution_steps=tuple(steps),
            )
        )
    return problems


# The held-out set of the bundled tiny models: 4-5 operation problems that neither the tiny policy
# nor the tiny PRM trains on (their recipes exclude these expressions). Evaluations use it.
HELD_OUT_SEED = 20260
HELD_OUT_CONFIG = ArithConfig(min_ops=4, max_ops=5)
HELD_OUT_SIZE = 500


def held_out_problems(n: int = HELD_OUT_SIZE) -> list[ArithProblem]:
    """The first n problems of the held-out set (ids ``heldout-20260-i``)."""
    return generate_problems(n, seed=HELD_OUT_SEED, config=HELD_OUT_CONFIG, id_prefix="heldout")


def expression_from_question(question: str) -> str:
    """Recover the expression from a question written with QUESTION_TEMPLATE."""
    prefix, suffix = QUESTION_TEMPLATE.split("{expression}")
    if not (question.startswith(prefix) and question.endswith(suffix)):
        raise ValueError(f"not an arithmetic question: {question!r}")
    return question[len(prefix) : len(question) - len(suffix)]


def question_expression(question: str) -> str | None:
    """The expression of a question written with QUESTION_TEMPLATE that parses, else None."""
    try:
        expression = expression_from_question(question)
        parse_expression(expression)
    except ValueError:
        return None
    return expression


# --- the domain as amcs.domains registers it ---------------------------------------------------

DEFAULT_COUNT = 200  # problems of a bare ``arith`` (or ``arith-heldout``)
HELD_OUT_SOURCE = "arith-heldout"


class ArithDomain:
    """The bundled domain (:class:`amcs.domains.Domain`): ``arith[:N]`` draws problems with
    :func:`generate_problems` (seeded), ``arith-heldout[:N]`` is :func:`held_out_problems`
    (fixed); a question is the domain's when it is QUESTION_TEMPLATE around an expression, and
    :func:`check_steps` is its step truth. ``problem.meta`` carries the expression."""

    name = "arith"
    title = "arithmetic"
    sources = ("arith", HELD_OUT_SOURCE)
    default_count = DEFAULT_COUNT
    has_step_truth = True

    def problems(self, source: str, count: int, seed: int) -> list:
        from amcs.problems import Problem

        if source == HELD_OUT_SOURCE:
            drawn = held_out_problems(count)
        else:
            drawn = generate_problems(count, seed=seed)
        return [
            Problem(
                id=p.id,
                question=p.question,
                answer=str(p.answer),
                meta={"domain": self.name, "expression": p.expression},
            )
            for p in drawn
        ]

    def owns(self, question: str) -> bool:
        return question_expression(question) is not None

    def check_steps(self, question: str, steps: Sequence[str]) -> StepCheck:
        expression = question_expression(question)
        if expression is None:
            raise ValueError(f"not an arithmetic question: {question!r}")
        return check_steps(expression, list(steps))


ARITH = ArithDomain()
