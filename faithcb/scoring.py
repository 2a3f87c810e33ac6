"""The scoring vocabulary: what probing asks a language model and what it gets back.

``ScoreRequest``/``ScoreResult``/``ContinuationScore`` are the request and result types of
teacher-forced scoring, ``EndRule`` is the one rule for where generated tokens end (chains,
answers, decoded answers), ``TokenCounter`` is the forward-pass accounting hook, and ``ScoringLM``
is the protocol every model wrapper implements (``faithcb.lm.ProbeLM`` on a real model, the
scripted fakes of the tests). Plain data and typing only: importing this module does not import
torch, so probes and tests can build requests without it.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from faithcb.answers import SlotReading, read_answer_slot

__all__ = [
    "ContinuationScore",
    "EndRule",
    "ScoreRequest",
    "ScoreResult",
    "ScoringLM",
    "TokenCounter",
    "needs_decode",
    "read_answer",
]


@dataclass(frozen=True)
class ScoreRequest:
    """Score ``continuations`` after ``prefix[:cut] + insert + cue``.

    ``group`` names the problem the request belongs to (keyword-only, required): requests with
    the same ``group`` in one ``score`` call must share their ``prefix`` (prompt + full chain) up
    to their cuts, and the fast path computes that prefix's KV cache once for all of them.
    Requests of different problems need different groups. Any hashable value will do; the
    engine uses one key per chain.
    """

    prefix: Sequence[int]
    cut: int
    insert: Sequence[int]
    cue: Sequence[int]
    continuations: tuple[Sequence[int], ...]
    # For multiple choice: token ids of the choice letters; their log-probabilities at the first
    # answer position are returned (the answer is the best-scoring letter).
    choice_ids: tuple[int, ...] = ()
    # When the first continuation is *not* the greedy output, decode up to this many tokens
    # greedily (ending with the terminator) so the caller can compare normalized answers.
    decode_tokens: int = 0
    # Keyword-only so it can be required after the defaulted fields (and so it is always named
    # at the call site: the grouping is a promise the caller makes about the prefixes).
    group: Hashable = field(kw_only=True)

    def context(self) -> list[int]:
        return [*self.prefix[: self.cut], *self.insert, *self.cue]


@dataclass(frozen=True)
class ContinuationScore:
    logprob: float  # sum of log p(t_j | context, t_<j) over the continuation's tokens
    greedy: bool  # every t_j is the argmax at its position


@dataclass(frozen=True)
class ScoreResult:
    continuations: tuple[ContinuationScore, ...]
    choice_logprobs: tuple[float, ...] = ()
    decoded: tuple[int, ...] | None = None  # greedy answer tokens, when asked for and needed


def needs_decode(request: ScoreRequest, result: ScoreResult) -> bool:
    """Whether ``request`` asked for its greedy answer and the exact check says it differs."""
    return bool(request.decode_tokens and result.continuations and not result.continuations[0].greedy)


@dataclass(frozen=True)
class EndRule:
    """Where generated tokens end: the one rule every generation and decoding path applies.

    A token of ``end_ids`` ends the tokens anywhere (end of sequence; the think layout's reasoning
    end for chains). A token of ``newline_ids`` ends them only once the answer has started: after a
    token outside ``lead_ids``, or when it is one itself ("72\n"). ``lead_ids`` are the ids whose
    text (up to a newline in it) is only what may precede an answer -- whitespace, markup, a colon
    (``faithcb.answers.is_lead_text``) -- so "\n\n72.\n" and ":\n\n**72**\n" are decoded to
    their answer rather than ended on a blank line; None takes ``newline_ids`` (a newline opens an
    answer, any other token starts it). A chain ends at ``end_ids`` only (no ``newline_ids``).

    ``ScoringLM`` paths that cut generated tokens (``ProbeLM.generate``, the packed decoder, the
    chain generators) and the engine that reads whether a chain or an answer ended all ask this.
    """

    end_ids: frozenset[int]
    newline_ids: frozenset[int] = frozenset()
    lead_ids: frozenset[int] | None = None

    @classmethod
    def for_answers(cls, lm: ScoringLM) -> EndRule:
        """The rule of ``lm.answer``: its end tokens anywhere, a newline once the answer started."""
        return cls(frozenset(lm.eos_ids), frozenset(lm.newline_ids), getattr(lm, "lead_ids", None))

    def end(self, tokens: Sequence[int]) -> int | None:
        """The index of the token that ends ``tokens``, or None (cut by a length limit)."""
        lead = self.newline_ids if self.lead_ids is None else self.lead_ids
        started = False
        for i, token in enumerate(tokens):
            if token in self.end_ids:
                return i
            starts = token not in lead
            if token in self.newline_ids and (started or starts):
                return i
            started = started or starts
        return None

    def cut(self, tokens: Sequence[int], *, keep: bool) -> list[int]:
        """``tokens`` up to their end, with the ending token (``keep``) or without it.

        An answer keeps its terminator (the teacher-forced greedy check of "14" then the end
        token is not that of "140"); a chain drops it (its text is the chain).
        """
        at = self.end(tokens)
        if at is None:
            return list(tokens)
        return list(tokens[: at + 1 if keep else at])

    def ended(self, tokens: Sequence[int]) -> bool:
        """Whether ``tokens`` (cut by ``cut(keep=True)``) end on their terminator rather than a limit."""
        return bool(tokens) and self.end(tokens) == len(tokens) - 1


def read_answer(lm: ScoringLM, ids: Sequence[int], kind: str) -> SlotReading:
    """The answer in generated answer tokens ``ids`` (cut by ``EndRule.for_answers(lm)``).

    The one answer-slot rule (``faithcb.answers.read_answer_slot``) for a_full and every decoded
    variant alike: a window that ended on its terminator is read whole; one that did not is cut
    only where its first number runs into its end.
    """
    return read_answer_slot(lm.decode(ids), kind, ended=EndRule.for_answers(lm).ended(ids))


@dataclass
class TokenCounter:
    """Forward-pass token accounting: pass one to ``ProbeLM(counter=...)`` (or read ``lm.counter``).

    The benchmarks compare these counts with the distinct-token minimum; nothing in faithcb
    reads them. ``stages`` splits ``processed`` by what the pass was for: ``"generate"``
    (prompts of ``generate``/``answer``), ``"plain"`` (the reference scoring path) and the packed
    path's ``"prefix"``, ``"branch"`` (inserts + cues and their continuations) and ``"decode"``
    (greedy answers decoded from the cache where the exact check failed); ``real_stages`` splits
    ``real`` the same way (a stage's padding is the difference).
    """

    processed: int = 0  # every position fed to a forward pass, padding included
    real: int = 0  # non-padding positions
    forward_calls: int = 0
    generated: int = 0  # tokens returned by generate() (after cutting at the end token)
    stages: dict[str, int] = field(default_factory=dict)
    real_stages: dict[str, int] = field(default_factory=dict)

    def add(self, processed: int, real: int, stage: str) -> None:
        """Record one forward pass (or one ``model.generate`` call: its prompt positions)."""
        self.processed += processed
        self.real += real
        self.forward_calls += 1
        self.stages[stage] = self.stages.get(stage, 0) + processed
        self.real_stages[stage] = self.real_stages.get(stage, 0) + real


@runtime_checkable
class ScoringLM(Protocol):
    """What the engine and the probes use of a language model.

    Everything happens inside ``session()``, which puts the model in the state probing needs and
    undoes it afterwards. Token ids are plain lists of ints throughout.
    """

    tokenizer: Any  # a Hugging Face tokenizer (probes decode the cue with special tokens kept)
    model: Any  # the wrapped model: the engine disables PEFT adapters on it for the base evaluator
    answer_max_tokens: int  # how long an answer ``answer()`` decodes at most
    eos_ids: set[int]  # ids that end generation (a chain that never writes one was cut by the limit)
    newline_ids: frozenset[int]  # ids whose text holds a newline (an answer ends on one or on eos)
    # Optional: ids whose text is only what may precede an answer (``EndRule.lead_ids``); without
    # it a newline opens an answer and any other token starts it.

    def session(self) -> AbstractContextManager[Any]: ...

    def encode(self, text: str, *, special: bool = False) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop_at_newline: bool = False,
        keep_stop: bool = False,
        stop_ids: Collection[int] = (),
    ) -> list[list[int]]: ...

    def answer(self, contexts: Sequence[Sequence[int]]) -> list[list[int]]: ...

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]: ...
