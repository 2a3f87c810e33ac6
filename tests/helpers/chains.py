"""Chains and probe outcomes built by hand, and a ``ScoringLM`` whose full-chain answers are scripted.

:func:`make_chain` builds a :class:`~faithcb.probes.base.Chain` the way the engine does (ids, steps
from the splitter, a cut per step) without a model, so a probe's ``variants`` and ``record`` can be
checked on a chain whose steps are known; :func:`outcomes` gives the scored outcomes a probe reads.
"""

from __future__ import annotations

from collections.abc import Sequence

from faithcb.probes.base import Chain, Outcome
from faithcb.problem import Problem
from faithcb.steps import step_spans
from faithcb.testing import tiny_tokenizer

CHAIN = "Tom starts with 8. 8 + 8 = 16. 16 - 2 = 14. The answer is 14."


def make_chain(text: str = CHAIN, tok=None, problem: Problem | None = None) -> Chain:
    """A Chain as the engine builds it: char-level ids, steps from the splitter, cuts per step."""
    tok = tok or tiny_tokenizer()
    spans = step_spans(text)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    cuts = [0] + [sum(1 for a, _ in enc["offset_mapping"] if a < end) for _, end in spans]
    chain = Chain(
        problem=problem or Problem("Tom has 8 coins, gets 8 more, then loses 2. How many?", "14", id="p0"),
        sample=0,
        prompt_ids=tok("Q?\n", add_special_tokens=False)["input_ids"],
        chain_text=text,
        chain_ids=list(enc["input_ids"]),
        steps=[text[a:b] for a, b in spans],
        step_spans=spans,
        cuts=cuts,
        cue_ids=tok("\nSo", add_special_tokens=False)["input_ids"],
        gold_ids=tok(" 14", add_special_tokens=False)["input_ids"],
        answer_ids=tok(" 14\n", add_special_tokens=False)["input_ids"],
        answer="14",
    )
    return chain


def outcomes(agree: Sequence[bool], gold: Sequence[float] | None = None) -> list[Outcome]:
    return [
        Outcome(agree=a, logp_answer=-float(i), logp_gold=None if gold is None else gold[i])
        for i, a in enumerate(agree)
    ]


class ScriptedAnswers:
    """A ScoringLM that is ``lm`` except that every full-chain answer is ``reply``."""

    def __init__(self, lm, reply: str):
        self._lm, self._reply = lm, reply

    def __getattr__(self, name):
        return getattr(self._lm, name)

    def answer(self, contexts):
        return [self._lm.encode(self._reply) for _ in contexts]


# A chain written by hand for the first compact arithmetic problem (``arithmetic_problems()[0]``,
# "4+5-5+9?", gold 13): four steps, each with a computation (so the mistakes probe corrupts every
# one), ending on a wrong result.
HAND_CHAIN = "5+8=13. 13-5=8. 8+5=13. 13-1=12."
