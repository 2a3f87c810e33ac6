"""A round's numbers: per-problem records in, metrics with 95% intervals out (``aggregate``).

Records are plain JSON-serializable dicts (one per chain), so processes can gather them and
histories can store them; every metric the registry knows is aggregated from the probe's entry
in each record. No torch here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from faithcb.probes import probe_metrics, probe_names
from faithcb.probes.base import CURVE_GRID, Chain
from faithcb.stats import summarize


@dataclass
class RoundResult:
    """A round's metrics (value + 95% interval + n), extra scalars, the curve, and the records."""

    metrics: dict[str, dict[str, float]]
    scalars: dict[str, float]
    curve: dict[str, list[float]]
    records: list[dict[str, Any]]
    errors: list[str] = field(default_factory=list)

    def to_dict(self, *, with_records: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"metrics": self.metrics, "scalars": self.scalars, "curve": self.curve}
        if self.errors:
            out["errors"] = self.errors
        if with_records:
            out["records"] = self.records
        return out


def chain_record(chain: Chain) -> dict[str, Any]:
    """The chain-level part of a per-problem record (probes add their own entries)."""
    p = chain.problem
    return {
        "id": p.id,
        "sample": chain.sample,
        "question": p.question,
        "gold": p.answer,
        "kind": p.kind,
        "chain": chain.chain_text,
        "steps": list(chain.steps),
        "n_steps": chain.n_steps,
        "chain_tokens": len(chain.chain_ids),
        "answer_text": chain.answer_text,
        "answer": chain.answer,
        "correct": (chain.answer == p.answer) if chain.answer is not None else None,
        "status": chain.status,
        "truncated": not chain.ended,
        "answer_truncated": not chain.answer_ended,
    }


def aggregate(records: Sequence[dict[str, Any]], *, seconds: float = math.nan, resamples: int = 1000) -> RoundResult:
    """Round metrics from per-problem records, each with a 95% bootstrap interval over problems."""
    nan = math.nan
    parsed = [r for r in records if r["answer"] is not None]
    metrics = {
        "accuracy": summarize([float(r["correct"]) for r in parsed], n_resamples=resamples),
        "unparsed_rate": summarize([float(r["answer"] is None) for r in records], n_resamples=resamples),
        # .get: records written before these fields existed count as complete.
        "truncated_rate": summarize([float(r.get("truncated", False)) for r in records], n_resamples=resamples),
        "answer_truncated_rate": summarize(
            [float(r.get("answer_truncated", False)) for r in records], n_resamples=resamples
        ),
        "mean_steps": summarize([r["n_steps"] for r in records], n_resamples=resamples),
        "mean_chain_tokens": summarize([r["chain_tokens"] for r in records], n_resamples=resamples),
    }
    for probe in probe_names():
        rows = [r[probe] for r in records if probe in r]
        if not rows:
            continue
        for metric in probe_metrics(probe):
            metrics[metric.name] = summarize([row.get(metric.key, nan) for row in rows], n_resamples=resamples)

    curve: dict[str, list[float]] = {}
    curves = [r["early_answering"]["curve"] for r in records if "early_answering" in r]
    if curves:
        curve = {"x": list(CURVE_GRID), "mean": [], "ci_low": [], "ci_high": []}
        for i in range(len(CURVE_GRID)):
            s = summarize([c[i] for c in curves], n_resamples=resamples)
            curve["mean"].append(s["value"])
            curve["ci_low"].append(s["ci_low"])
            curve["ci_high"].append(s["ci_high"])

    errors = sorted({f"{name}: {msg}" for r in records for name, msg in r.get("errors", {}).items()})
    scalars = {
        "problems_scored": float(len(records)),
        "problems_unscored": float(sum(r["status"] != "ok" for r in records)),
        "seconds": float(seconds),
        "probe_errors": float(len(errors)),
    }
    if any("paraphrase" in r for r in records):
        scalars["paraphrase_rejected"] = float(sum(r["paraphrase"]["rejected"] for r in records if "paraphrase" in r))
    return RoundResult(metrics=metrics, scalars=scalars, curve=curve, records=list(records), errors=errors)


TRUNCATION_WARN_ABOVE = 0.10  # a round with more chains or answers cut than this says so


def truncation_warnings(result: RoundResult, *, chain_limit: str, answer_limit: str) -> list[str]:
    """Warnings for a round where the token limits cut too many chains or answers.

    ``chain_limit``/``answer_limit`` name the settings to raise, as the caller calls them
    (``faith_max_chain_tokens=128`` in the callback, ``--max-chain-tokens 128`` in the CLI).
    """
    warnings = []
    for metric, what, limit in (("truncated_rate", "chains", chain_limit),
                                ("answer_truncated_rate", "full-chain answers", answer_limit)):
        rate = result.metrics.get(metric, {}).get("value", math.nan)
        if math.isfinite(rate) and rate > TRUNCATION_WARN_ABOVE:
            warnings.append(
                f"{rate:.0%} of {what} hit the token limit ({limit}) and are left out of the coupling "
                f"metrics; raise it"
            )
    return warnings
