"""The ``Problem`` record: one question, its normalized gold answer and, optionally, a worked chain;
and the cyclic rotations of a multiple-choice problem's options (``choice_permutations``).

A leaf module (it imports only :mod:`faithcb.errors`, :mod:`faithcb.metrics` and
:mod:`faithcb.answers`), so that both the loaders in :mod:`faithcb.data` and the built-in tasks in
:mod:`faithcb.tasks` can build problems without importing each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from faithcb.answers import ANSWER_KINDS
from faithcb.errors import ProblemFormatError
from faithcb.metrics import text_key

__all__ = ["LETTERS", "Problem", "base_id", "rotate_choices", "with_rotations"]

# The letters of multiple-choice options, in order: a "choice" problem's answer is one of them.
LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class Problem:
    """One question with its gold answer, already normalized for ``kind``.

    ``reference_chain`` is the data set's own worked solution, ending in a sentence that states the
    answer (see :mod:`faithcb.data`), or None when the data has none. It is what recipes train
    on; the probes never read it. It takes no part in equality or the repr: two records of the same
    question and answer are the same problem, and worked solutions are long.
    """

    question: str
    answer: str  # gold answer, normalized with text.normalize_answer(kind)
    kind: str = "number"  # "number" | "choice" | "text"
    choices: tuple[str, ...] = ()  # option texts without letters, in letter order; kind "choice" only
    id: str = ""
    reference_chain: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ANSWER_KINDS:
            raise ProblemFormatError(
                f"problem {self.id or self.question[:40]!r}: kind {self.kind!r} is not one of {', '.join(ANSWER_KINDS)}"
            )
        if self.reference_chain is not None and not isinstance(self.reference_chain, str):
            raise ProblemFormatError(
                f"problem {self.id or self.question[:40]!r}: reference_chain must be a string or None, "
                f"got {type(self.reference_chain).__name__}"
            )


def rotate_choices(problem: Problem, r: int) -> Problem:
    """``problem`` with choice i moved to position (i + r) % n; the gold letter follows its option.

    Rotation 0 is ``problem`` itself (id unchanged); rotation r's id is ``"<base id>@rot<r>"``.
    """
    n = len(problem.choices)
    if r % n == 0:
        return problem
    choices = [""] * n
    for i, choice in enumerate(problem.choices):
        choices[(i + r) % n] = choice
    answer = LETTERS[(LETTERS.index(problem.answer) + r) % n]
    return Problem(problem.question, answer, kind=problem.kind, choices=tuple(choices),
                   id=f"{base_id(problem)}@rot{r % n}")


def base_id(problem: Problem) -> str:
    """The problem's id, or one made from its text (the same on every process) when it has none."""
    return problem.id or text_key(problem.question, problem.choices)


def with_rotations(problems: Sequence[Problem]) -> tuple[list[Problem], dict[int, dict[str, Any]]]:
    """Each multiple-choice problem followed by its other rotations; the record fields of each, by id()."""
    out: list[Problem] = []
    tags: dict[int, dict[str, Any]] = {}
    for problem in problems:
        n = len(problem.choices)
        if problem.kind != "choice" or n < 2:
            out.append(problem)
            continue
        for r in range(n):
            rotated = rotate_choices(problem, r)
            out.append(rotated)
            tags[id(rotated)] = {"rotation": r, "base_id": base_id(problem), "n_choices": n}
    return out, tags
