"""The arithmetic domain: generation and the exact step checker."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amcs.domains.arith import (
    ArithConfig,
    check_steps,
    evaluate,
    expression_from_question,
    format_expression,
    generate_problems,
    parse_expression,
)


def test_same_seed_same_problems_and_distinct_seeds_differ():
    a = generate_problems(50, seed=3)
    assert a == generate_problems(50, seed=3)
    assert [p.expression for p in a] != [p.expression for p in generate_problems(50, seed=4)]
    assert len({p.expression for p in a}) == 50


def test_config_is_respected():
    config = ArithConfig(min_ops=4, max_ops=5, operand_min=2, operand_max=9, max_abs_value=500)
    for p in generate_problems(200, seed=1, config=config):
        numbers = [
            int(t) for t in p.expression.replace("(", " ").replace(")", " ").split() if t.isdigit()
        ]
        assert 5 <= len(numbers) <= 6
        assert all(2 <= x <= 9 for x in numbers)
        assert len(p.solution_steps) - 1 in (4, 5)
        for step in p.solution_steps[:-1]:
            assert abs(int(step.rsplit("=", 1)[1])) <= 500


def test_precedence_and_parentheses():
    assert evaluate(parse_expression("3 + 4 * (5 - 2) - 7")) == 8
    assert evaluate(parse_expression("2 - 3 - 4")) == -5
    assert evaluate(parse_expression("2 - (3 - 4)")) == 3
    assert format_expression(parse_expression("(2 * 3) + 4")) == "2 * 3 + 4"
    assert format_expression(parse_expression("2 - (3 - 4)")) == "2 - (3 - 4)"
    problems = generate_problems(300, seed=0)
    assert any("(" in p.expression for p in problems)
    assert {op for p in problems for op in "+-*" if f" {op} " in p.expression} == set("+-*")


def test_reference_solution_format():
    p = generate_problems(1, seed=0)[0]
    assert p.solution.split("\n\n") == list(p.solution_steps)
    assert p.solution_steps[-1] == f"The answer is \\boxed{{{p.answer}}}."
    assert expression_from_question(p.question) == p.expression


def test_reference_solutions_check_as_all_correct():
    for p in generate_problems(300, seed=11):
        check = check_steps(p.expression, list(p.solution_steps))
        assert check.solved and all(check.step_correct) and check.first_error == -1


def test_hand_checked_steps():
    expr = "3 + 4 * (5 - 2) - 7"
    good = ["5 - 2 = 3", "4 * 3 = 12", "3 + 12 = 15", "15 - 7 = 8", "The answer is \\boxed{8}."]
    assert check_steps(expr, good).solved
    # A wrong product: later steps that follow from it are consistent, but every prefix after it
    # is wrong and so is the answer.
    wrong = ["5 - 2 = 3", "4 * 3 = 13", "3 + 13 = 16", "16 - 7 = 9", "The answer is \\boxed{9}."]
    c = check_steps(expr, wrong)
    assert c.step_correct == [True, False, True, True, False]
    assert c.prefix_correct == [True, False, False, False, False]
    assert c.first_error == 1 and not c.solved
    # Precedence violated: 3 + 4 is not an operation this expression can do first.
    assert check_steps(expr, ["3 + 4 = 7"]).step_correct == [False]
    # Commuted + and * are fine, commuted - is not.
    assert check_steps("2 * 3 + 1", ["3 * 2 = 6", "1 + 6 = 7"]).step_correct == [True, True]
    assert check_steps("5 - 2", ["2 - 5 = -3"]).step_correct == [False]
    # Either independent operation may go first.
    assert check_steps("2 * 3 + 4 * 5", ["4 * 5 = 20", "2 * 3 = 6", "6 + 20 = 26"]).prefix_correct[
        -1
    ]
    # Answering before the expression is reduced is wrong; so is anything after the answer.
    assert check_steps(expr, ["The answer is \\boxed{8}."]).step_correct == [False]
    assert check_steps(
        "1 + 1", ["1 + 1 = 2", "The answer is \\boxed{2}.", "2 + 0 = 2"]
    ).step_correct == [True, True, False]
    # Negative intermediate values.
    assert check_steps(
        "2 - 5 * 1", ["5 * 1 = 5", "2 - 5 = -3", "The answer is \\boxed{-3}."]
    ).solved


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "   ",
        "garbage",
        "1 + = 2",
        "\\boxed{",
        "The answer is \\boxed{}.",
        "9" * 5000,
        "x" * 10**6,
        "1 / 1 = 1",
        "((((",
        "1 + 1 = 2 = 2",
        "\x00\n\n\t",
    ],
)
def test_malformed_steps_are_wrong_never_an_exception(junk):
    c = check_steps("1 + 2 * 3", [junk, "2 * 3 = 6"])
    assert c.step_correct[0] is False
    assert c.prefix_correct == [False, False]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text(alphabet="0123456789 +-*=()\\boxed{}Theansw.\n", max_size=30), max_size=8),
    st.integers(0, 10**6),
)
def test_checker_never_raises_on_random_text(steps, seed):
    p = generate_problems(1, seed=seed % 1000)[0]
    c = check_steps(p.expression, steps)
    assert len(c.step_correct) == len(c.prefix_correct) == len(steps)
    # A prefix is all-correct exactly when every step in it is.
    for i in range(len(steps)):
        assert c.prefix_correct[i] == all(c.step_correct[: i + 1])


def test_a_corrupted_reference_step_is_the_first_error():
    rng = random.Random(0)
    for p in generate_problems(100, seed=5):
        steps = list(p.solution_steps)
        i = rng.randrange(len(steps) - 1)
        lhs, rhs = steps[i].rsplit(" = ", 1)
        steps[i] = f"{lhs} = {int(rhs) + rng.choice([-2, -1, 1, 2])}"
        assert check_steps(p.expression, steps).first_error == i
