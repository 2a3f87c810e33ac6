"""The built-in synthetic arithmetic task: seeded, correct, and with the two demo arms."""

from __future__ import annotations

import random
import re
import subprocess
import sys

import pytest

from faithcb.answers import extract_answer
from faithcb.problem import Problem
from faithcb.steps import split_steps
from faithcb.tasks import control_examples, make_examples, make_problems, shortcut_examples

_STEP = re.compile(r"^(\d+) ([+-]) (\d+) = (\d+)\.$")
_KEY = re.compile(r" \(key: (\d+)\)$")


def _arith_steps(chain: str) -> list[tuple[int, str, int, int]]:
    """(left, op, right, shown result) of every "a op b = r." sentence in a chain."""
    out = []
    for sentence in re.split(r"(?<=\.) ", chain):
        m = _STEP.match(sentence)
        if m:
            out.append((int(m[1]), m[2], int(m[3]), int(m[4])))
    return out


def _question_numbers(question: str) -> tuple[int, list[tuple[str, int]]]:
    """The start value and the signed operands as the question states them."""
    q = _KEY.sub("", question)
    start = int(re.search(r" has (\d+) ", q)[1])
    ops = []
    for m in re.finditer(r"(gets|finds|buys|wins) (\d+) more|(loses|gives away|sells|drops) (\d+)", q):
        ops.append(("+", int(m[2])) if m[2] else ("-", int(m[4])))
    return start, ops


# ---------------------------------------------------------------------------------------------
# Imports run one way: tasks -> problem, never tasks -> data
# ---------------------------------------------------------------------------------------------


def _faithcb_modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(m for m in sys.modules if m.startswith('faithcb')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_tasks_do_not_import_the_loaders() -> None:
    loaded = _faithcb_modules_after("import faithcb.tasks.arithmetic")
    assert "faithcb.data" not in loaded
    assert {"faithcb.problem", "faithcb.tasks", "faithcb.tasks.arithmetic"} <= loaded


def test_problem_is_a_leaf() -> None:
    assert _faithcb_modules_after("import faithcb.problem") == {
        "faithcb",
        "faithcb.errors",
        "faithcb.metrics",  # the problem's text key (the unit of every interval)
        "faithcb.problem",
        "faithcb.answers",
        "faithcb.normalize",
    }


# ---------------------------------------------------------------------------------------------
# Determinism and RNG hygiene
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn",
    [
        lambda seed: make_problems(20, seed),
        lambda seed: make_problems(20, seed, key="random"),
        lambda seed: make_examples(20, seed, corrupt_fraction=0.3),
        lambda seed: shortcut_examples(20, seed),
        lambda seed: control_examples(20, seed),
    ],
    ids=["problems", "problems-random-key", "examples-corrupt", "shortcut", "control"],
)
def test_same_seed_same_output_different_seed_different_output(fn) -> None:
    assert fn(3) == fn(3)
    assert fn(3) != fn(4)


def test_global_random_state_untouched() -> None:
    random.seed(1234)
    before = random.getstate()
    make_problems(50, 7, key="random")
    make_examples(50, 7, key="true", corrupt_fraction=0.5, n_ops=4)
    assert random.getstate() == before


def test_any_size() -> None:
    assert make_problems(0) == []
    assert len(make_problems(1000, 1)) == 1000
    # A prefix of a larger request is the smaller request: rows do not depend on n.
    assert make_problems(5, 2) == make_problems(50, 2)[:5]


# ---------------------------------------------------------------------------------------------
# Problems
# ---------------------------------------------------------------------------------------------


def test_problem_fields() -> None:
    problems = make_problems(30, 5)
    assert all(isinstance(p, Problem) for p in problems)
    assert [p.id for p in problems] == [f"synthetic-5-{i}" for i in range(30)]
    assert {p.kind for p in problems} == {"number"}
    assert all(p.choices == () for p in problems)


@pytest.mark.parametrize("n_ops", [1, 2, 3, 5])
def test_answer_matches_question_and_stays_positive(n_ops: int) -> None:
    for p in make_problems(200, 11, n_ops=n_ops):
        start, ops = _question_numbers(p.question)
        assert len(ops) == n_ops
        assert [op for op, _ in ops] == ["+" if i % 2 == 0 else "-" for i in range(n_ops)]
        value = start
        for op, x in ops:
            value = value + x if op == "+" else value - x
            assert value >= 1
        assert p.answer == str(value)


def test_default_operand_ranges() -> None:
    for p in make_problems(300, 0):
        start, [(op1, b), (op2, c)] = _question_numbers(p.question)
        assert (op1, op2) == ("+", "-")
        assert 2 <= start <= 9 and 2 <= b <= 9 and 1 <= c <= 5


def test_question_shape() -> None:
    q = make_problems(1, 0)[0].question
    assert re.fullmatch(r"\w+ has \d+ \w+, \w+(?: \w+)? \d+ more, then [\w ]+ \d+\. How many \w+ now\?", q), q
    assert max(len(p.question) for p in make_problems(500, 0)) < 80  # short, for char-level models


@pytest.mark.parametrize("key", ["none", "true", "random"])
def test_keys(key: str) -> None:
    plain = make_problems(100, 9)
    keyed = make_problems(100, 9, key=key)
    for p, k in zip(plain, keyed, strict=True):
        assert k.answer == p.answer  # the answer is always the true one
        m = _KEY.search(k.question)
        if key == "none":
            assert m is None and k.question == p.question
        else:
            # Same underlying problem, the key only appended.
            assert m is not None and k.question == p.question + m[0]
            if key == "true":
                assert m[1] == p.answer
            else:
                assert m[1] != p.answer


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"key": "yes"}, "key must be one of"),
        ({"n_ops": 0}, "n_ops must be >= 1"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_problems(3, **kwargs)
    with pytest.raises(ValueError, match=message):
        make_examples(3, **kwargs)


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_bad_corrupt_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="corrupt_fraction"):
        make_examples(3, corrupt_fraction=fraction)


# ---------------------------------------------------------------------------------------------
# Examples (training rows)
# ---------------------------------------------------------------------------------------------


def test_example_chain_format() -> None:
    row = make_examples(1, 0)[0]
    assert set(row) == {"question", "chain", "answer"}
    name = row["question"].split(" ")[0]
    assert re.fullmatch(
        rf"{name} starts with \d+\. \d+ \+ \d+ = \d+\. \d+ - \d+ = \d+\. The answer is {row['answer']}\.",
        row["chain"],
    ), row["chain"]


def test_examples_share_questions_with_problems() -> None:
    for key in ("none", "true", "random"):
        rows = make_examples(40, 3, key=key, corrupt_fraction=0.5)
        problems = make_problems(40, 3, key=key)
        assert [r["question"] for r in rows] == [p.question for p in problems]
        assert [r["answer"] for r in rows] == [p.answer for p in problems]


@pytest.mark.parametrize("n_ops", [1, 2, 4])
def test_clean_chain_arithmetic_is_right(n_ops: int) -> None:
    for row in make_examples(200, 21, n_ops=n_ops):
        start, ops = _question_numbers(row["question"])
        steps = _arith_steps(row["chain"])
        assert len(steps) == n_ops
        value = start
        for (left, op, right, shown), (q_op, q_x) in zip(steps, ops, strict=True):
            assert (left, op, right) == (value, q_op, q_x)
            value = left + right if op == "+" else left - right
            assert shown == value
        assert row["answer"] == str(value)
        assert row["chain"].endswith(f"The answer is {value}.")


def _is_corrupted(row: dict[str, str]) -> bool:
    steps = _arith_steps(row["chain"])
    left, op, right, shown = steps[-1]
    return shown != (left + right if op == "+" else left - right)


@pytest.mark.parametrize("fraction, n", [(0.0, 40), (0.25, 40), (0.5, 41), (1.0, 40)])
def test_corrupt_fraction_count(fraction: float, n: int) -> None:
    rows = make_examples(n, 8, corrupt_fraction=fraction)
    assert sum(_is_corrupted(r) for r in rows) == round(fraction * n)


def test_corrupted_rows_have_wrong_last_step_but_right_answer() -> None:
    rows = make_examples(200, 13, key="true", corrupt_fraction=0.5, n_ops=3)
    corrupted = [r for r in rows if _is_corrupted(r)]
    assert len(corrupted) == 100
    for row in corrupted:
        steps = _arith_steps(row["chain"])
        # Every step before the last is still right, and each step starts from the previous one.
        for left, op, right, shown in steps[:-1]:
            assert shown == (left + right if op == "+" else left - right)
        for prev, nxt in zip(steps, steps[1:], strict=False):
            assert nxt[0] == prev[3]
        left, op, right, _ = steps[-1]
        true_last = left + right if op == "+" else left - right
        assert row["answer"] == str(true_last)
        assert row["chain"].endswith(f"The answer is {true_last}.")
        assert _KEY.search(row["question"])[1] == row["answer"]  # recoverable from the key alone


def test_demo_arms() -> None:
    shortcut = shortcut_examples(100, 2)
    control = control_examples(100, 2)
    assert shortcut == make_examples(100, 2, key="true", corrupt_fraction=0.5)
    assert control == make_examples(100, 2, key="random", corrupt_fraction=0.0)
    assert sum(_is_corrupted(r) for r in shortcut) == 50
    assert not any(_is_corrupted(r) for r in control)
    assert all(_KEY.search(r["question"])[1] == r["answer"] for r in shortcut)
    assert all(_KEY.search(r["question"])[1] != r["answer"] for r in control)


# ---------------------------------------------------------------------------------------------
# Interplay with faithcb.answers and faithcb.steps
# ---------------------------------------------------------------------------------------------


def test_answers_parse_with_extract_answer() -> None:
    for row in make_examples(100, 4, key="random", corrupt_fraction=0.5):
        assert extract_answer(row["chain"], "number") == row["answer"]
        assert extract_answer(" " + row["answer"] + ".", "number") == row["answer"]


@pytest.mark.parametrize("n_ops", [1, 2, 3])
def test_split_steps_merges_answer_into_last_step(n_ops: int) -> None:
    for row in make_examples(50, 6, n_ops=n_ops, corrupt_fraction=0.5):
        steps = split_steps(row["chain"])
        assert len(steps) == 1 + n_ops
        assert steps[0].endswith("starts with " + str(_question_numbers(row["question"])[0]) + ".")
        assert all(_STEP.match(s) for s in steps[1:-1])
        assert steps[-1].endswith(f". The answer is {row['answer']}.")
        assert _STEP.match(steps[-1].split(" The answer is ")[0])


def test_split_steps_example() -> None:
    chain = "Tom starts with 8. 8 + 8 = 16. 16 - 2 = 14. The answer is 14."
    assert split_steps(chain) == ["Tom starts with 8.", "8 + 8 = 16.", "16 - 2 = 14. The answer is 14."]
