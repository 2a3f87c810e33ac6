"""The ``Problem`` record: one question, its normalized gold answer and, optionally, a worked chain.

A leaf module (it imports only :mod:`faithcb.errors` and :mod:`faithcb.text`), so that both the
loaders in :mod:`faithcb.data` and the built-in tasks in :mod:`faithcb.tasks` can build problems
without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from faithcb.errors import ProblemFormatError
from faithcb.text import ANSWER_KINDS

__all__ = ["Problem"]


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
