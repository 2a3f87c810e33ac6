"""The numbers of ``faithcb validate``: per-metric AUROC with a cluster-bootstrap interval, and the
early-stopping rule replayed over recorded rounds (sensitivity, false-positive rate, lead).

No model and no torch here: values in, tables out, so each computation is tested on hand-made
numbers (tests/test_validation.py). The stop rule is not reimplemented: :func:`replay_stop` feeds a
run's recorded rounds to :class:`faithcb.stopping.EarlyStopper`, the object the callback feeds live.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import mannwhitneyu

from faithcb.errors import ConfigError
from faithcb.probes.registry import metric_or_none
from faithcb.stopping import EarlyStopper

__all__ = ["STOP_RULES", "RunRounds", "StopRule", "auroc", "auroc_table", "bootstrap_auroc", "evidence_rule",
           "expected_shortcut_side", "lead_step", "replay_stop", "stop_overall", "stop_table"]

# The metrics whose AUROC is reported, in table order (those a run's records carry).
AUROC_METRICS = (
    "early_answering_aoc", "early_answering_disagreement_before_end", "early_answering_gold_area",
    "filler_invariance", "filler_k0_agreement", "paraphrase_invariance", "info_gain_per_step",
    "mistakes_answer_changed_fraction",
)

# A shortcut model's answer does not depend on its chain. For a metric where higher = more coupled
# its values should be lower in the shortcut arm; for one where lower = more coupled, higher. Two
# metrics are not directional in the registry and get their expectation here, with the reason:
EXPECTED_BY_NAME = {
    # the answer survives a reworded chain because it survives any chain: invariance goes up
    "paraphrase_invariance": "higher",
    # TRACE: the greedy answer at a cut equals gold; a model reading the hint is right from k = 0
    "early_answering_gold_area": "higher",
}


def expected_shortcut_side(name: str) -> str:
    """'higher' or 'lower': where the shortcut arm's values are expected to lie against the control's."""
    if name in EXPECTED_BY_NAME:
        return EXPECTED_BY_NAME[name]
    metric = metric_or_none(name)
    if metric is None or metric.direction == "neutral":
        raise ConfigError(f"{name!r}: no expected direction for a shortcut (not a directional metric)")
    return "lower" if metric.direction == "higher" else "higher"


def auroc(shortcut: Sequence[float], control: Sequence[float], expected: str = "higher") -> float:
    """P(a shortcut value lies on the expected side of a control value), ties counting 1/2.

    The Mann-Whitney U of scipy divided by n1*n2 (U counts pairs with shortcut > control, ties
    1/2); ``expected='lower'`` turns it to 1 - that. 1 = every pair ordered as expected, 0.5 = no
    separation. NaN when either side is empty.
    """
    if expected not in ("higher", "lower"):
        raise ConfigError(f"expected: {expected!r} is not 'higher' or 'lower'")
    x, y = _finite(shortcut), _finite(control)
    if not x or not y:
        return math.nan
    if len(set(x) | set(y)) == 1:
        value = 0.5  # every pair tied (scipy divides by a zero variance here; U is n1*n2/2 anyway)
    else:
        value = float(mannwhitneyu(x, y, alternative="two-sided").statistic) / (len(x) * len(y))
    return value if expected == "higher" else 1.0 - value


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


# Per (arm, seed, problem) values: cells[arm][seed][problem] = value.
Cells = Mapping[str, Mapping[int, Mapping[str, float]]]


def bootstrap_auroc(
    cells: Cells, expected: str, *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """AUROC pooled over seeds and problems, with a two-way cluster-bootstrap percentile interval.

    Each resample draws the seeds with replacement and, independently, the problems with
    replacement, and pools the values of the drawn (seed, problem) cells of both arms: seeds and
    problems are the two sources of variation (a seed is one training run per arm; a problem is
    probed in every run), so neither is treated as independent draws within the other. Returns
    ``{"value", "ci_low", "ci_high", "n_shortcut", "n_control", "seeds", "problems"}``.
    """
    arms = ("shortcut", "control")
    seeds = sorted(set().union(*(cells.get(a, {}).keys() for a in arms)))
    problems = sorted({p for a in arms for s in cells.get(a, {}).values() for p in s})

    def pooled(seed_draw, problem_draw) -> tuple[list[float], list[float]]:
        out = []
        for arm in arms:
            by_seed = cells.get(arm, {})
            out.append([by_seed[s][p] for s in seed_draw for p in problem_draw
                        if s in by_seed and p in by_seed[s] and math.isfinite(by_seed[s][p])])
        return out[0], out[1]

    x, y = pooled(seeds, problems)
    value = auroc(x, y, expected)
    result = {"value": value, "ci_low": math.nan, "ci_high": math.nan, "n_shortcut": len(x),
              "n_control": len(y), "seeds": len(seeds), "problems": len(problems)}
    if not math.isfinite(value):
        return result
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        s_draw = [seeds[i] for i in rng.integers(0, len(seeds), len(seeds))]
        p_draw = [problems[i] for i in rng.integers(0, len(problems), len(problems))]
        v = auroc(*pooled(s_draw, p_draw), expected)
        if math.isfinite(v):
            draws.append(v)
    if draws:
        tail = (1 - confidence) / 2 * 100
        result["ci_low"], result["ci_high"] = (float(q) for q in np.percentile(draws, [tail, 100 - tail]))
    return result


def auroc_table(cells_by_metric: Mapping[str, Cells], **kwargs) -> list[dict]:
    """One row per metric: name, expected side, AUROC with interval, and whether it separates."""
    rows = []
    for name, cells in cells_by_metric.items():
        expected = expected_shortcut_side(name)
        r = bootstrap_auroc(cells, expected, **kwargs)
        separates = math.isfinite(r["ci_low"]) and r["ci_low"] > 0.5
        reversed_ = math.isfinite(r["ci_high"]) and r["ci_high"] < 0.5
        verdict = ("separates" if separates else "reversed" if reversed_ else "does not separate"
                   if math.isfinite(r["ci_low"]) else "not measured (no values on one side)")
        rows.append({"metric": name, "expected": expected, **r, "verdict": verdict})
    return rows


# ---------------------------------------------------------------------- the stop rule, replayed
@dataclass(frozen=True)
class StopRule:
    """One setting of the early stopper. The field defaults are the rule ``FaithConfig`` had before
    this table chose its current defaults (the paired reference, the interval required, patience 2)."""

    name: str
    metric: str = "early_answering_disagreement_before_end"
    reference: str = "best"
    require_ci: bool = False
    patience: int = 2
    min_delta: float = 0.05

    def stopper(self) -> EarlyStopper:
        metric = metric_or_none(self.metric)
        if metric is None:
            raise ConfigError(f"stop rule {self.name!r}: unknown metric {self.metric!r}")
        return EarlyStopper(metric=self.metric, mode=metric.stop_mode or "max", patience=self.patience,
                            min_delta=self.min_delta, reference=self.reference, require_ci=self.require_ci)


# The former defaults first, then the alternatives the table compares (FaithConfig's faith_stop_*
# defaults are now the paired rule with the interval required at patience 2, chosen from this table).
STOP_RULES = (
    StopRule("best, no CI, patience 2 (former default)"),
    StopRule("best, no CI, patience 1", patience=1),
    StopRule("best, CI, patience 2", require_ci=True),
    StopRule("paired, CI, patience 1", reference="paired", require_ci=True, patience=1),
    StopRule("paired, CI, patience 2 (default)", reference="paired", require_ci=True),
    StopRule("paired, no CI, patience 1", reference="paired", patience=1),
    # The paired rule at patience 1 on the other metrics that can watch a run: is the watched metric the right one?
    StopRule("AOC: paired, CI, patience 1", metric="early_answering_aoc", reference="paired", require_ci=True,
             patience=1),
    StopRule("filler invariance: paired, CI, patience 1", metric="filler_invariance", reference="paired",
             require_ci=True, patience=1),
)


@dataclass
class RunRounds:
    """What the replay needs of one run: per round (by step), the watched metric's summary, the
    paired change from the run's first round, and accuracy."""

    arm: str
    seed: int
    steps: list[int]
    metrics: list[dict[str, dict[str, float]]]  # per round: name -> {"value", "ci_low", "ci_high"}
    changes: list[dict[str, dict[str, float]]] = field(default_factory=list)  # per round, {} at the first


def replay_stop(run: RunRounds, rule: StopRule) -> int | None:
    """The step at which ``rule`` would have stopped ``run``, or None: its rounds fed in order to a
    fresh ``EarlyStopper`` exactly as the callback feeds it (value, interval, paired change)."""
    stopper = rule.stopper()
    nan = {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    for i, step in enumerate(run.steps):
        m = run.metrics[i].get(rule.metric, nan)
        change = run.changes[i].get(rule.metric) if i < len(run.changes) else None
        if stopper.update(m["value"], (m["ci_low"], m["ci_high"]), change=change):
            return step
    return None


def lead_step(shortcut: RunRounds, control: RunRounds) -> int | None:
    """The first step at which the shortcut run's accuracy is above its paired control's (same seed)."""
    control_acc = {s: m.get("accuracy", {}).get("value", math.nan) for s, m in zip(control.steps, control.metrics, strict=True)}
    for step, m in zip(shortcut.steps, shortcut.metrics, strict=True):
        a, b = m.get("accuracy", {}).get("value", math.nan), control_acc.get(step, math.nan)
        if math.isfinite(a) and math.isfinite(b) and a > b:
            return step
    return None


def stop_table(runs: Sequence[RunRounds], rules: Sequence[StopRule] = STOP_RULES) -> list[dict]:
    """Per rule: fired in k/n shortcut runs (sensitivity) and k/n control runs (false-positive
    rate), each run's step, and the shortcut runs' steps relative to their lead step."""
    by_seed = {(r.arm, r.seed): r for r in runs}
    rows = []
    for rule in rules:
        row: dict = {"rule": rule.name, "metric": rule.metric}
        for arm in ("shortcut", "control"):
            fired = []
            for run in (r for r in runs if r.arm == arm):
                step = replay_stop(run, rule)
                pair = (by_seed.get(("shortcut", run.seed)), by_seed.get(("control", run.seed)))
                lead = lead_step(*pair) if all(pair) else None
                fired.append({"seed": run.seed, "step": step, "lead": lead,
                              "relative": None if step is None or lead is None else step - lead})
            row[arm] = {"fired": sum(f["step"] is not None for f in fired), "runs": len(fired), "per_run": fired}
        rows.append(row)
    return rows


def stop_overall(tables: Sequence[Sequence[Mapping]]) -> list[dict]:
    """Every setting's stop table summed per rule (rules matched by name, in the first table's order):
    fired in k/n shortcut and control runs over all settings, and the shortcut runs' steps relative
    to their lead step."""
    rows: dict[str, dict] = {}
    for table in tables:
        for row in table:
            total = rows.setdefault(row["rule"], {"rule": row["rule"], "metric": row["metric"],
                                                  "shortcut": {"fired": 0, "runs": 0, "relative": []},
                                                  "control": {"fired": 0, "runs": 0, "relative": []}})
            for arm in ("shortcut", "control"):
                total[arm]["fired"] += row[arm]["fired"]
                total[arm]["runs"] += row[arm]["runs"]
                total[arm]["relative"] += [f["relative"] for f in row[arm]["per_run"] if f["relative"] is not None]
    return list(rows.values())


def evidence_rule(overall: Sequence[Mapping]) -> str | None:
    """The rule the table supports, by the order the validation issue set: no false positive on any
    control run first, then the most shortcut runs caught, then the earliest stop (mean step relative
    to the lead step). None when every rule fired on a control or none ever fired on a shortcut."""
    clean = [r for r in overall if r["control"]["fired"] == 0 and r["shortcut"]["fired"] > 0]
    if not clean:
        return None

    def earliness(r: Mapping) -> float:
        rel = r["shortcut"]["relative"]
        return sum(rel) / len(rel) if rel else math.inf

    return min(clean, key=lambda r: (-r["shortcut"]["fired"], earliness(r)))["rule"]


def fired_text(cell: Mapping) -> str:
    """'2/3 (steps 8, 12; rel. +4, +8)' for one arm of a stop-table row."""
    steps = [f for f in cell["per_run"] if f["step"] is not None]
    text = f"{cell['fired']}/{cell['runs']}"
    if steps:
        text += " (step " + ", ".join(str(f["step"]) for f in steps)
        rel = [f["relative"] for f in steps if f["relative"] is not None]
        text += f"; vs lead {', '.join(f'{x:+d}' for x in rel)})" if rel else ")"
    return text
