"""Scoring a round's planned variants: every probe's variants of every chain, in as few passes as can be.

The engine's third phase asks each probe for its variants of each chain (a ``Planned`` per chain
and probe); ``score_variants`` turns them into ``Outcome``s. Variants of different probes that
build the same context (same chain, cut and insert) are scored once; each context's answer is
checked exactly against a_full (teacher-forced greedy) and decoded only where that check fails; a
chain's contexts go to the model together, so they share its prefix cache. With the PEFT base
model as evaluator, log p(gold) is scored a second time with the adapters off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from faithcb.probes.base import Chain, Outcome, Variant
from faithcb.problem import LETTERS
from faithcb.scoring import ScoreRequest, ScoreResult, ScoringLM, read_answer

__all__ = ["Planned", "score_variants"]


@dataclass(frozen=True)
class Planned:
    """One probe's variants of one chain."""

    chain: Chain
    probe: Any
    variants: list[Variant]


@dataclass
class _Context:
    """One distinct context to score (variants with the same cut and insert share it) and its results."""

    chain: Chain
    variant: Variant
    wants_gold: bool = False
    result: ScoreResult | None = None
    base_gold: float | None = None  # log p(gold) under the PEFT base model (evaluator "base")
    decoded: str | None = None  # the variant's own normalized answer, where the exact check failed


def score_variants(
    plan: Sequence[Planned], lm: ScoringLM, *, base_gold: bool, batch_size: int, progress: Callable[..., Any],
) -> dict[tuple[int, Variant], Outcome]:
    """Each planned variant's ``Outcome``, keyed by ``(chain key, variant)``.

    ``base_gold``: score log p(gold) under the base model (``lm.model.disable_adapter()``).
    ``batch_size`` chains go to ``lm.score`` at a time, each a step of the ``progress`` bar (a
    ``tqdm``-like factory).
    """
    contexts: dict[tuple[int, int, tuple[int, ...]], _Context] = {}
    for planned in plan:
        for v in planned.variants:
            ctx = contexts.setdefault(_key(planned.chain, v), _Context(planned.chain, v))
            ctx.wants_gold |= v.wants_gold

    per_chain: dict[int, list[_Context]] = {}
    for ctx in contexts.values():
        per_chain.setdefault(ctx.chain.key, []).append(ctx)
    problems = list(per_chain.values())
    # lm.score batches problems together (they share forward passes): hand it a slice of
    # batch_size problems at a time, which is also the progress bar's step.
    with progress(total=len(problems), desc="faithcb: scoring", unit="problem") as bar:
        for start in range(0, len(problems), batch_size):
            chunk = problems[start : start + batch_size]
            group = [ctx for contexts_of in chunk for ctx in contexts_of]
            results = lm.score([_request(lm, ctx, ctx.wants_gold and not base_gold) for ctx in group])
            for ctx, res in zip(group, results):
                ctx.result = res
            golds = [ctx for ctx in group if ctx.wants_gold]
            if base_gold and golds:
                with _adapters_off(lm):
                    for ctx, res in zip(golds, lm.score([_request(lm, ctx, True, False) for ctx in golds])):
                        ctx.base_gold = res.continuations[0].logprob
            bar.update(len(chunk))

    # Free-form answers whose exact check failed: compare their decoded, normalized answers, read
    # by the same slot rule as a_full (a window that cut the first number is unparsed, not a prefix).
    for ctx in contexts.values():
        if ctx.result.decoded is not None:
            ctx.decoded = read_answer(lm, ctx.result.decoded, ctx.chain.problem.kind).answer

    return {
        (planned.chain.key, v): _outcome(contexts[_key(planned.chain, v)], v.wants_gold, base_gold)
        for planned in plan
        for v in planned.variants
    }


def _key(chain: Chain, variant: Variant) -> tuple[int, int, tuple[int, ...]]:
    """What makes a context distinct: its chain, where the chain is cut and what is inserted there."""
    return chain.key, variant.prefix_cut(chain), tuple(variant.insert)


def _request(lm: ScoringLM, ctx: _Context, with_gold: bool, with_answer: bool = True) -> ScoreRequest:
    chain, v = ctx.chain, ctx.variant
    conts = ((chain.answer_ids,) if with_answer else ()) + ((chain.gold_ids,) if with_gold else ())
    # Free-form answers: where the exact check fails, read the variant's own answer.
    decode = lm.answer_max_tokens if with_answer and not chain.choice_ids else 0
    return ScoreRequest(
        chain.prefix, v.prefix_cut(chain), v.insert, chain.cue_ids, conts, chain.choice_ids, decode,
        group=chain.key,  # one group per chain: its variants share the chain's prefix cache
    )


@contextlib.contextmanager
def _adapters_off(lm: ScoringLM):
    with lm.model.disable_adapter():
        yield


def _outcome(ctx: _Context, wants_gold: bool, base_gold: bool) -> Outcome:
    chain, res = ctx.chain, ctx.result
    answer_score = res.continuations[0]
    if chain.choice_ids:
        lp = res.choice_logprobs
        answer = LETTERS[max(range(len(lp)), key=lp.__getitem__)]
        agree = answer == chain.answer
    elif answer_score.greedy:
        answer, agree = chain.answer, True
    else:
        answer = ctx.decoded
        agree = answer is not None and answer == chain.answer
    gold = None
    if wants_gold:
        gold = ctx.base_gold if base_gold else res.continuations[-1].logprob
    return Outcome(agree=agree, logp_answer=answer_score.logprob, logp_gold=gold, answer=answer)
