"""The log-key scheme (``faithcb.logkeys``): one source for the callback, the dashboards and the docs."""

from __future__ import annotations

import math
from pathlib import Path

from faithcb import logkeys, tensorboard_layout, wandb_sink
from faithcb.results import RoundResult

DOCS = Path(__file__).resolve().parents[1] / "docs" / "callback.md"


def test_docs_list_every_prefix_and_key():
    text = DOCS.read_text(encoding="utf-8")
    keys = [*logkeys.ALL_PREFIXES, logkeys.PROBE_FAILED, logkeys.EARLY_STOP, logkeys.OVERHEAD,
            logkeys.ROUNDS_SKIPPED, logkeys.EVAL]
    missing = [key for key in keys if f"`{key}" not in text]
    assert not missing, f"docs/callback.md does not name {missing}"


def test_dashboards_name_the_logged_keys():
    # The integrations show every key under train/: the dashboards must use the same strings.
    assert tensorboard_layout.VALUE == "train/faith/" and tensorboard_layout.DELTA_CI == "train/faith_delta_ci/"
    assert wandb_sink.CURVE_CHART.startswith(logkeys.CHARTS)
    assert wandb_sink.STEP_METRIC == "train/global_step"


def _result(**metrics) -> RoundResult:
    return RoundResult(
        metrics={name: dict(zip(("value", "ci_low", "ci_high", "n"), v)) for name, v in metrics.items()},
        scalars={"seconds": 1.5, "nan_scalar": math.nan},
        curve={"x": [0.0, 0.5, 1.0], "mean": [0.25, math.nan, 1.0]},
        records=[],
    )


def test_round_logs_sections():
    result = _result(accuracy=(0.5, 0.2, 0.8, 4), early_answering_aoc=(math.nan, math.nan, math.nan, 0),
                     mean_steps=(3.0, math.nan, math.nan, 1))
    changes = {"accuracy": {"value": 0.25, "ci_low": -0.1, "ci_high": 0.6, "n": 3},
               "mean_steps": {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}}
    logs = logkeys.round_logs(result, changes, headline=["early_answering_aoc"])
    assert logs == {
        "faith/accuracy": 0.5, "faith_ci/accuracy_low": 0.2, "faith_ci/accuracy_high": 0.8,
        "faith/mean_steps": 3.0,  # one problem: a value without an interval
        "faith/seconds": 1.5,  # NaN scalars are left out
        "faith_n/accuracy": 4.0, "faith_n/early_answering_aoc": 0.0, "faith_n/mean_steps": 1.0,
        "faith_missing/early_answering_aoc": 1.0,  # a headline metric that could not be measured
        "faith_delta/accuracy": 0.25, "faith_delta_ci/accuracy_low": -0.1, "faith_delta_ci/accuracy_high": 0.6,
        "faith_delta_n/accuracy": 3.0, "faith_delta_n/mean_steps": 0.0,  # the paired n, even when 0
        "faith_curve/keep_000": 0.25, "faith_curve/keep_100": 1.0,
    }


def test_eval_metrics_join_the_evaluation_and_a_missing_best_metric_is_nan():
    history = [{"step": 4, "accuracy": 0.5}]
    metrics = {"eval_loss": 1.0}
    logkeys.add_eval_metrics(metrics, history, 4, "faith/early_answering_aoc")
    assert metrics["eval_faith/accuracy"] == 0.5
    assert math.isnan(metrics["eval_faith/early_answering_aoc"])  # never best, never a KeyError
    stale = {}
    logkeys.add_eval_metrics(stale, history, 6, None)  # the last round is of another step
    assert stale == {}
