"""What faithcb sends to W&B beyond the scalars: metric definitions (bookkeeping keys hidden), the
run's settings record in the run config, a per-problem table and the early-answering curve per
round, and a closing chart.

Scalars reach W&B through ``Trainer.log`` like every other integration; this module only adds
W&B-specific objects, and only to a run the Trainer's integration already started (it never
calls ``wandb.init``). Table columns come from the metric registry: one per headline metric of
each probe the round runs, so a registered user probe gets its column too.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from faithcb import logkeys
from faithcb.probes import DEFAULT_PROBES, probe_metrics, probe_names

RECORD_COLUMNS = ("step", "id", "question", "chain", "answer", "gold", "correct", "n_steps")
STEP_METRIC = logkeys.TRAIN + "global_step"  # the Trainer's W&B integration logs this with every row
# Bookkeeping sections: logged (a script or the run page can read them) but hidden from the
# automatic panels, which would otherwise put a chart of "16 problems" beside every metric.
HIDDEN_PREFIXES = (logkeys.N, logkeys.DELTA_N, logkeys.MISSING)
# The sections the callback logs through Trainer.log (train/ + prefix); tables and charts are
# logged by this module directly, outside train/. One glob per section and none overlapping, so no
# key depends on which of two matching globs W&B applies.
LOGGED_PREFIXES = tuple(p for p in logkeys.ALL_PREFIXES if p not in (logkeys.TABLES, logkeys.CHARTS))
RUN_CONFIG_KEY = "faithcb"  # the run's settings record (faithcb.runinfo) in the W&B run config
# A headline metric's run summary: its last value and its best one in the direction of coupling.
_BEST = {"higher": "last,max", "lower": "last,min", "neutral": "last"}
SUMMARY_SERIES = {"accuracy": "accuracy", "early_answering_aoc": "early-answering AOC (coupling)"}
# The early-answering curve as one line plot: fraction of the chain kept -> agreement with the full
# chain's answer, one line per round. W&B draws a custom chart from the *last* table logged under
# its key, so every round logs the rounds so far (a few points each) and the chart shows them all.
CURVE_CHART = logkeys.CHARTS + "early_answering_curve"
CURVE_COLUMNS = ("step", "round", "keep", "agreement", "ci_low", "ci_high")
CURVE_TITLE = "faithcb: early-answering curve (fraction of chain kept -> agreement), one line per round"


def active_run():
    """The W&B run the Trainer's integration started, or None (not installed, disabled, no run)."""
    if os.environ.get("WANDB_DISABLED", "").lower() in ("true", "1"):
        return None
    try:
        import wandb
    except ImportError:
        return None
    return wandb.run


def _headline_metrics(probes: Sequence[str]):
    # The default probes always have a column (empty when not run), so tables of runs with
    # different probe sets line up; other probes (mistakes, registered ones) join when they run.
    shown = [p for p in probe_names() if p in DEFAULT_PROBES or p in probes]
    return [m for p in shown for m in probe_metrics(p) if m.headline]


def metric_definitions(probes: Sequence[str]) -> list[tuple[str, dict]]:
    """``define_metric`` calls, as (name, keyword arguments): every faith key on the trainer's step
    axis with its last value as summary (bookkeeping sections hidden from the automatic panels),
    then each headline metric also with its best value."""
    definitions = [
        (f"{logkeys.TRAIN}{prefix}*", {"step_metric": STEP_METRIC, "summary": "last",
                                       **({"hidden": True} if prefix in HIDDEN_PREFIXES else {})})
        for prefix in LOGGED_PREFIXES
    ]
    for m in (m for p in probes for m in probe_metrics(p) if m.headline):
        definitions.append((logkeys.TRAIN + logkeys.VALUE + m.name, {"step_metric": STEP_METRIC, "summary": _BEST[m.direction]}))
    return definitions


def table_columns(probes: Sequence[str]) -> list[str]:
    """The per-problem table's columns: the record's fields, then the probes' headline metrics."""
    return list(RECORD_COLUMNS) + [m.name for m in _headline_metrics(probes)]


def table_rows(step: int, records: Sequence[dict], probes: Sequence[str]) -> list[list]:
    """One row per problem record, in ``table_columns(probes)`` order."""
    metrics = _headline_metrics(probes)
    rows = []
    for r in records:
        row = [step, r["id"], r["question"], r["chain"], r["answer"], r["gold"], r["correct"], r["n_steps"]]
        row += [r.get(m.probe, {}).get(m.key) for m in metrics]
        rows.append(row)
    return rows


def curve_rows(step: int, curve: dict[str, list[float]]) -> list[list]:
    """A round's early-answering curve as table rows, in ``CURVE_COLUMNS`` order.

    ``curve`` is ``RoundResult.curve`` (x, mean, ci_low, ci_high on the grid; empty without early
    answering); points with no value (no problem scored) are left out, as in ``faith_curve/``.
    """
    x, mean = curve.get("x", []), curve.get("mean", [])
    low, high = curve.get("ci_low", [None] * len(x)), curve.get("ci_high", [None] * len(x))
    return [
        [step, f"step {step}", keep, y, lo if _finite(lo) else None, hi if _finite(hi) else None]
        for keep, y, lo, hi in zip(x, mean, low, high)
        if _finite(y)
    ]


class WandbReporter:
    """Logs each round's per-problem table and early-answering curve, and at the end accuracy
    against coupling. Call on the main process only; every method is a no-op without a W&B run."""

    def __init__(self, probes: Sequence[str], *, log_records: bool = True):
        self.probes = tuple(probes)
        self.log_records = log_records
        # The curve rows of every round logged so far (after a resume: of the rounds since).
        self.curve_so_far: list[list] = []

    def define_metrics(self) -> None:
        """Declare the faith keys' step axis and summaries (once, at train begin, on rank 0)."""
        run = active_run()
        if run is None or not hasattr(run, "define_metric"):
            return
        for name, kwargs in metric_definitions(self.probes):
            run.define_metric(name, **kwargs)

    def log_run_info(self, info: dict) -> None:
        """The run's settings record (``faithcb.runinfo.run_info``) as the run config's ``faithcb`` entry."""
        run = active_run()
        if run is None or not hasattr(run, "config"):
            return
        run.config.update({RUN_CONFIG_KEY: info}, allow_val_change=True)

    def log_round_table(self, step: int, records: Sequence[dict]) -> None:
        run = active_run()
        if run is None or not self.log_records:
            return
        import wandb

        table = wandb.Table(columns=table_columns(self.probes))
        for row in table_rows(step, records, self.probes):
            table.add_data(*row)
        # One table per round (this round's problems only), at the trainer's step axis.
        run.log({logkeys.TABLES + "records": table, STEP_METRIC: step})

    def log_round_curve(self, step: int, curve: dict[str, list[float]]) -> None:
        """The early-answering curve of this round and the ones before it, as one line plot."""
        run = active_run()
        rows = curve_rows(step, curve)
        if run is None or not rows:
            return
        import wandb

        self.curve_so_far += rows
        table = wandb.Table(columns=list(CURVE_COLUMNS), data=[list(r) for r in self.curve_so_far])
        chart = wandb.plot.line(table, "keep", "agreement", stroke="round", title=CURVE_TITLE)
        run.log({CURVE_CHART: chart, STEP_METRIC: step})

    def log_summary_chart(self, history: Sequence[dict]) -> None:
        """Accuracy and early-answering AOC over the rounds where both were measured."""
        run = active_run()
        rounds = [h for h in history if all(_finite(h.get(name)) for name in SUMMARY_SERIES)]
        if run is None or not rounds:
            return
        import wandb

        chart = wandb.plot.line_series(
            xs=[h["step"] for h in rounds],
            ys=[[h[name] for h in rounds] for name in SUMMARY_SERIES],
            keys=list(SUMMARY_SERIES.values()),
            title="faithcb: accuracy vs chain coupling",
            xname="training step",
        )
        run.log({logkeys.CHARTS + "accuracy_vs_coupling": chart})


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
