"""Information gain of reasoning steps (after Wu et al. 2025).

``L_k = log p_E(y* | q, s_1..k, cue)`` summed over the gold answer's tokens only (never the whole
sequence), for k = 0..n. ``IG_k = L_k - L_{k-1}`` nats. Reported: ``total = L_n - L_0``,
``per_step = total / n``, the share of steps with ``IG_k > 0``, and Wu's perplexity form
``delta_ppl = (PPL_0 - PPL_n) / n`` with ``PPL_k = exp(-L_k / N)`` over N answer tokens.
The evaluator E is the live model by default (see engine.Evaluator for the others).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from faithcb.metrics import UNIT, Metric
from faithcb.probes.base import Chain, Outcome, Variant
from faithcb.probes.registry import ProbeContext


class InformationGain:
    """Log-probability of the gold answer after k = 0..n steps, and what each step adds."""

    name = "info_gain"
    metrics = (
        Metric("total", "information gain (total)", "nats of log p(gold answer) the whole chain adds",
               "higher", headline=True, kind="continuous"),
        Metric("per_step", "information gain per step", "nats of log p(gold answer) each step adds", "higher",
               kind="continuous"),
        Metric("positive_fraction", "steps with positive gain", "share of steps that make the gold answer likelier",
               "higher", bounds=UNIT, kind="bounded"),
        Metric("delta_ppl", "information gain (ΔPPL)",
               "Wu's perplexity form: drop in answer perplexity per step (per token: tokenizer-dependent)", "higher",
               kind="continuous"),
        Metric("per_step_correct", "information gain per step, correct answers",
               "per_step over the problems whose full-chain answer is right", "higher",
               kind="continuous"),
        Metric("per_step_incorrect", "information gain per step, wrong answers",
               "per_step over the problems whose full-chain answer is wrong", "higher",
               kind="continuous"),
    )

    @classmethod
    def build(cls, context: ProbeContext) -> InformationGain:
        return cls()

    def prepare(self, chains: Sequence[Chain], lm) -> None:
        """Nothing to share across chains."""

    def variants(self, chain: Chain) -> list[Variant]:
        return [Variant(self.name, k, wants_gold=True) for k in chain.cut_ks]

    def record(self, chain: Chain, outcomes: Sequence[Outcome]) -> dict[str, Any]:
        logp = [float(o.logp_gold) if o.logp_gold is not None else math.nan for o in outcomes]
        n = chain.n_steps  # logp[i] is at k = cut_ks[i]; the first is k = 0, the last k = n
        n_tokens = max(1, len(chain.gold_ids))
        ppl = [math.exp(-lp / n_tokens) for lp in logp]
        gains = [logp[i] - logp[i - 1] for i in range(1, len(logp))]  # between consecutive cuts
        per_step = (logp[-1] - logp[0]) / n if n >= 1 else math.nan
        correct = chain.answer is not None and chain.answer == chain.problem.answer
        return {
            "ks": list(chain.cut_ks),
            "logp_gold": logp,
            "gain": gains,
            "ppl": ppl,
            "total": logp[-1] - logp[0] if n >= 1 else math.nan,
            "per_step": per_step,
            "positive_fraction": sum(g > 0 for g in gains) / len(gains) if gains else math.nan,
            "delta_ppl": (ppl[0] - ppl[-1]) / n if n >= 1 else math.nan,
            "per_step_correct": per_step if correct else math.nan,
            "per_step_incorrect": per_step if not correct else math.nan,
        }
