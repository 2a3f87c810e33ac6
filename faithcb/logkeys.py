"""The log-key scheme: every key a round logs, and the one function that builds a round's logs.

The callback logs these keys through ``Trainer.log``; the TensorBoard layout
(``faithcb.tensorboard_layout``) and the W&B sink (``faithcb.wandb_sink``) name the same keys as the
integrations show them, behind ``TRAIN``; docs/callback.md lists them (a test compares). One
prefix a section, so W&B's automatic panels and TensorBoard's cards group them:
"""

from __future__ import annotations

import math

from faithcb.results import RoundResult

VALUE = "faith/"  # metric values and round scalars: the main section
CI = "faith_ci/"  # their 95% intervals (<name>_low / <name>_high), kept out of the main section
N = "faith_n/"  # how many problems each value is over
DELTA = "faith_delta/"  # change from the baseline round, paired over the same problems
DELTA_CI = "faith_delta_ci/"  # its paired 95% interval
DELTA_N = "faith_delta_n/"  # how many problems the change is paired over (scored in both rounds)
MISSING = "faith_missing/"  # 1 for a headline metric the round could not measure (NaN)
BASE = "faith_base/"  # the PEFT base model (adapters disabled), same names
CURVE = "faith_curve/"  # early-answering curve on the fixed grid: keep_<percent, 3 digits>
EVAL = "eval_" + VALUE  # a round's values inside the Trainer's evaluation metrics
ROLLOUT = "faith_rollout/"  # GRPO only: the step's own rollouts (CouplingReward, through TRL's log_metric)
TABLES = "faith_tables/"  # W&B only: the per-problem table
CHARTS = "faith_charts/"  # W&B only: the curve per round, accuracy vs coupling

ALL_PREFIXES = (VALUE, CI, N, DELTA, DELTA_CI, DELTA_N, MISSING, BASE, CURVE, ROLLOUT, TABLES, CHARTS)

# Round scalars the callback adds itself (the rest come from faithcb.results.aggregate).
PROBE_FAILED = VALUE + "probe_failed"  # 1 when the round measured nothing
EARLY_STOP = VALUE + "early_stop"  # 1 at the round that stopped training
OVERHEAD = VALUE + "overhead_fraction"  # probing seconds / all seconds so far
ROUNDS_SKIPPED = VALUE + "rounds_skipped"  # scheduled rounds the overhead budget skipped

# Where the Trainer's integrations put logged keys: TensorBoard and W&B show them under train/.
TRAIN = "train/"


def curve_key(keep: float) -> str:
    """``faith_curve/keep_050`` for half the chain kept."""
    return f"{CURVE}keep_{round(keep * 100):03d}"


def round_logs(result: RoundResult, changes: dict[str, dict[str, float]], headline: list[str]) -> dict[str, float]:
    """Everything a measured round logs: values, intervals, n, paired changes, flags, the curve."""
    logs = metric_logs(result, VALUE, CI)
    logs.update({N + name: float(m["n"]) for name, m in result.metrics.items()})
    # A NaN value is left out of faith/ (charts cannot draw it); say so instead of going quiet.
    for name in headline:
        if not math.isfinite(result.metrics.get(name, {}).get("value", math.nan)):
            logs[MISSING + name] = 1.0
    for name, change in changes.items():
        logs[DELTA_N + name] = float(change["n"])  # can be far below either round's n
        if math.isfinite(change["value"]):
            logs[DELTA + name] = change["value"]
        if math.isfinite(change["ci_low"]) and math.isfinite(change["ci_high"]):
            logs[f"{DELTA_CI}{name}_low"] = change["ci_low"]
            logs[f"{DELTA_CI}{name}_high"] = change["ci_high"]
    curve = zip(result.curve.get("x", []), result.curve.get("mean", []))
    logs.update({curve_key(x): y for x, y in curve if math.isfinite(y)})
    return logs


def metric_logs(result: RoundResult, prefix: str, ci_prefix: str | None) -> dict[str, float]:
    """The round's finite metric values and scalars under ``prefix``, intervals under ``ci_prefix``."""
    out: dict[str, float] = {}
    for name, m in result.metrics.items():
        if not math.isfinite(m["value"]):
            continue
        out[prefix + name] = m["value"]
        # An interval needs two problems (n < 2 gives NaN bounds): log the bounds that exist.
        if ci_prefix and math.isfinite(m["ci_low"]) and math.isfinite(m["ci_high"]):
            out[f"{ci_prefix}{name}_low"] = m["ci_low"]
            out[f"{ci_prefix}{name}_high"] = m["ci_high"]
    for name, v in result.scalars.items():
        if math.isfinite(v):
            out[prefix + name] = v
    return out


def add_eval_metrics(metrics: dict, history: list[dict], step: int, metric_for_best_model: str | None) -> None:
    """The round's values as ``eval_faith/<name>`` in the evaluation's metrics.

    The Trainer picks its best checkpoint from this very dict after ``on_evaluate``, so
    ``metric_for_best_model="faith/early_answering_aoc"`` (with ``greater_is_better``) makes
    ``load_best_model_at_end`` keep the most faithful checkpoint. (The Trainer has already
    logged the dict, so nothing is logged twice.) A round that measured nothing gives NaN,
    which is never best, rather than a missing key, which would stop training.
    """
    summary = history[-1] if history and history[-1].get("step") == step else {}
    metrics.update({EVAL + name: value for name, value in summary.items() if name != "step"})
    wanted = metric_for_best_model or ""
    wanted = wanted if wanted.startswith("eval_") else f"eval_{wanted}"
    if wanted.startswith(EVAL):
        metrics.setdefault(wanted, math.nan)
