"""Probing a GRPO step's own rollouts: completions the trainer already generated, scored teacher-forced.

Each rollout (its prompt's token ids and its completion's text) becomes a ``Chain`` by the same
rules as a generated chain (``faithcb.chains``: cut at the answer cue or the reasoning's end, split
into steps); a_full is read greedily after the whole chain and the cue, as in rounds; then the
early-answering probe scores the chain cut at k steps (m(k) against a_full, g(k) against gold)
through the packed scorer. Nothing is generated beyond a_full's few answer tokens, so the cost is
teacher-forced passes over text that already exists, whatever wrote it (HF ``generate`` or vLLM).

Per rollout, beside the early-answering record, ``coupling`` = 1 - mean_k p(a_full | chain cut at
k) over the cut points k < n: the chance that an answer sampled from the truncated chain is not
a_full, averaged over truncations. It is the soft companion of ``disagreement_before_end``
(1 - mean_k m(k)): bounded in [0, 1], continuous where the 0/1 agreements of a group's rollouts
are often all equal (GRPO's advantages are differences within a group, so a reward that ties
gives no signal). Chosen over a Bernoulli JSD between truncated and full answer distributions
(cir-sr) because it needs only log p(a_full), which the scorer computes anyway, and reads as a
probability.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from faithcb.engine import FaithfulnessEngine
from faithcb.probes.base import CURVE_GRID
from faithcb.problem import Problem
from faithcb.results import RoundResult, aggregate
from faithcb.scoring import ScoringLM
from faithcb.settings import ProbeSettings

__all__ = ["ROLLOUT_METRICS", "Rollout", "RolloutProbe", "coupling_score", "rollout_summary"]

NAME = "early_answering"

# The round metrics logged for rollouts, by the short name they get under faith_rollout/.
ROLLOUT_METRICS = {
    "accuracy": "accuracy",
    "disagreement_before_end": "early_answering_disagreement_before_end",
    "aoc": "early_answering_aoc",
    "gold_area": "early_answering_gold_area",
    "n_steps": "n_steps",
}


@dataclass(frozen=True)
class Rollout:
    """One completion to probe.

    ``problem`` carries the gold answer and kind (its question only groups a prompt's rollouts
    into one unit); ``prompt_ids`` are the tokens the completion was written after; ``ended``
    says the completion ended itself (False: cut by the trainer's completion length, so its
    a_full is an early answer and it is not scored, as in rounds).
    """

    problem: Problem
    prompt_ids: list[int]
    text: str
    ended: bool = True


class RolloutProbe:
    """Scores rollouts on ``model`` in place (its state restored after each call).

    ``settings``: the probes' layout, wording, cut points and batch size; only early answering
    runs, whatever ``settings.probes`` says.
    """

    def __init__(self, model, tokenizer, settings: ProbeSettings | None = None, *, lm: ScoringLM | None = None):
        settings = dataclasses.replace(settings or ProbeSettings(), probes=(NAME,))
        self.engine = FaithfulnessEngine(model, tokenizer, settings, show_progress=False, lm=lm)

    @property
    def lm(self) -> ScoringLM:
        return self.engine.lm

    def records(self, rollouts: Sequence[Rollout]) -> list[dict[str, Any]]:
        """One record per rollout, in order: the round record plus ``coupling``."""
        engine = self.engine
        with engine.lm.session():
            chains = [
                dataclasses.replace(
                    engine.chain_from_text(r.problem, r.text, key=i, ended=r.ended), prompt_ids=list(r.prompt_ids)
                )
                for i, r in enumerate(rollouts)
            ]
            chains = engine.read_full_answers(chains)
            records = engine.probe(chains)
        engine.chains.clear_cache()  # every step brings new prompts
        for record in records:
            record["coupling"] = coupling_score(record.get(NAME))
        return records


def coupling_score(early: dict[str, Any] | None) -> float:
    """1 - mean over the cut points k < n of p(a_full | chain cut at k); NaN where m(n) != 1 or no steps."""
    if not early or early.get("full_agrees") is not True:
        return math.nan
    before_end = [lp for k, lp in zip(early["ks"], early["logp"]) if k < early["ks"][-1]]
    if not before_end:
        return math.nan
    return 1.0 - sum(math.exp(lp) for lp in before_end) / len(before_end)


def rollout_summary(records: Sequence[dict[str, Any]], seconds: float, *, gold: bool = True) -> dict[str, float]:
    """What one step's rollouts log under ``faith_rollout/``: metric values (NaN where nothing was
    scored), status shares over the probed rollouts, the early-answering curve and the cost.
    ``gold=False``: the rollouts had no gold answer, so accuracy and the gold area are left out."""
    result: RoundResult = aggregate(list(records), seconds=seconds)
    out: dict[str, float] = {}
    for short, name in ROLLOUT_METRICS.items():
        out[short] = result.metrics.get(name, {}).get("value", math.nan)
    scored = [r["coupling"] for r in records if not math.isnan(r.get("coupling", math.nan))]
    out["coupling"] = sum(scored) / len(scored) if scored else math.nan
    n = len(records)
    for status in ("ok", "no_steps", "truncated", "unparsed"):
        out[f"share_{status}"] = sum(r.get("status") == status for r in records) / n if n else math.nan
    for x, m in zip(CURVE_GRID, result.curve.get("mean", []) if result.curve else []):
        out[f"keep_{round(x * 100):03d}"] = m
    if not gold:
        del out["accuracy"], out["gold_area"]
    out["probed"] = float(n)
    out["scored"] = float(len(scored))
    out["seconds"] = seconds
    return out
