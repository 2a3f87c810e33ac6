"""The live dashboards: TensorBoard's custom-scalars layout and W&B's metric definitions.

The layout is read back from a real training run's event files with TensorBoard's own reader; the
W&B definitions of a real offline run are checked in tests/test_integrations.py, here how
directions map to summaries and, in a real offline W&B run read back from its ``.wandb`` log, the
early-answering curve plot of every round.
"""

from __future__ import annotations

import glob
import json
import math
import re
import sys
from pathlib import Path

import pytest
from helpers.distributed import WORKER, run_process
from helpers.models import one_thread
from helpers.scripted import script_records
from helpers.trainers import attach, faith_config, faith_logs, make_trainer
from helpers.wandb_log import wandb_config, wandb_history

from faithcb import logkeys, tensorboard_layout
from faithcb.probes import DEFAULT_PROBES
from faithcb.wandb_sink import CURVE_CHART, CURVE_COLUMNS, WandbReporter, curve_rows, metric_definitions


def _charts(layout) -> dict[str, dict]:
    """{category title: {chart title: chart}}, charts in the order TensorBoard's page shows them."""
    return {
        c.title: {chart.title: chart for chart in tensorboard_layout.displayed_order(c.chart)}
        for c in layout.category
    }


def _tags(chart) -> list[str]:
    """Every tag a chart draws (multiline regexes back to the tag they anchor)."""
    if chart.HasField("margin"):
        return [t for s in chart.margin.series for t in (s.value, s.lower, s.upper)]
    return [re.sub(r"\\(.)", r"\1", t.removesuffix("$")) for t in chart.multiline.tag]


def test_layout_for_the_default_probes():
    pytest.importorskip("tensorboard")
    charts = _charts(tensorboard_layout.build_layout(DEFAULT_PROBES))
    assert list(charts) == ["faithcb: faithfulness", "faithcb: health", "faithcb: cost"]
    faithfulness = charts["faithcb: faithfulness"]
    assert list(faithfulness) == [
        "accuracy (95% interval)",
        "early-answering AOC (higher = more coupled)",
        "filler invariance (lower = more coupled)",
        "paraphrase invariance (neutral)",
        "information gain (total) (higher = more coupled)",
        "change from the first round: accuracy (paired)",
        "change from the first round: early-answering AOC (paired)",
        "change from the first round: filler invariance (paired)",
        "change from the first round: paraphrase invariance (paired)",
        "change from the first round: information gain (total) (paired)",
    ]
    (aoc,) = faithfulness["early-answering AOC (higher = more coupled)"].margin.series
    assert (aoc.value, aoc.lower, aoc.upper) == (
        "train/faith/early_answering_aoc", "train/faith_ci/early_answering_aoc_low",
        "train/faith_ci/early_answering_aoc_high",
    )
    # One metric per chart: TensorBoard draws every line of a chart in the run's colour (margin and
    # multiline charts alike), so two metrics on one chart would be one colour.
    for choice in (True, False):
        every = [c for category in _charts(tensorboard_layout.build_layout(DEFAULT_PROBES, choice=choice)).values()
                 for c in category.values()]
        assert all(len(c.margin.series) == 1 if c.HasField("margin") else len(c.multiline.tag) == 1 for c in every)
    assert [s.value for s in faithfulness["accuracy (95% interval)"].margin.series] == ["train/faith/accuracy"]
    (change,) = faithfulness["change from the first round: filler invariance (paired)"].margin.series
    assert (change.value, change.lower, change.upper) == (
        "train/faith_delta/filler_invariance", "train/faith_delta_ci/filler_invariance_low",
        "train/faith_delta_ci/filler_invariance_high",
    )
    health = [t for chart in charts["faithcb: health"].values() for t in _tags(chart)]
    assert health == [
        "train/faith/unparsed_rate", "train/faith/truncated_rate", "train/faith/answer_truncated_rate",
        "train/faith/letter_full_top_share", "train/faith/letter_gold_top_share",
        "train/faith/letter_full_gold_chance_agreement", "train/faith/letter_full_entropy_normalized",
        "train/faith/letter_gold_entropy_normalized",
        "train/faith/problems_scored",
    ]
    assert [t for chart in charts["faithcb: cost"].values() for t in _tags(chart)] == [
        "train/faith/seconds", "train/faith/overhead_fraction",
    ]
    # A multiline tag is a regex matched from the start: anchored, accuracy does not pull in accuracy_strict.
    assert all(t.endswith("$") for chart in charts["faithcb: health"].values() for t in chart.multiline.tag)


def test_layout_follows_the_probes_thatrun_process():
    pytest.importorskip("tensorboard")
    (faithfulness, *_) = tensorboard_layout.build_layout(["filler"]).category
    titles = [chart.title for chart in tensorboard_layout.displayed_order(faithfulness.chart)]
    assert titles[0] == "accuracy (95% interval)"
    assert not any("AOC" in t or "paraphrase" in t for t in titles)


def test_letter_charts_only_with_multiple_choice_problems():
    pytest.importorskip("tensorboard")
    numeric = _charts(tensorboard_layout.build_layout(DEFAULT_PROBES, choice=False))["faithcb: health"]
    choice = _charts(tensorboard_layout.build_layout(DEFAULT_PROBES, choice=True))["faithcb: health"]
    assert not any("letter" in t for chart in numeric.values() for t in _tags(chart))
    assert [t for t in choice if t not in numeric] == [t for t in choice if t.startswith("letter bias")]
    assert len(choice) == len(numeric) + 5


def test_margin_charts_are_stored_in_the_order_tensorboard_reverses():
    """TensorBoard's page draws line charts first, then margin charts last-stored first (seen in
    Chromium with TensorBoard 2.21, docs/img/dashboard_tensorboard.png): stored reversed, shown as listed."""
    pytest.importorskip("tensorboard")
    (faithfulness, health, _) = tensorboard_layout.build_layout(DEFAULT_PROBES).category
    assert faithfulness.chart[-1].title == "accuracy (95% interval)"
    assert health.chart[0].title == "unparsed answers (share of problems)"  # line charts: as listed
    mixed = [_chart("margin", "m1"), _chart("multiline", "l1"), _chart("margin", "m2"), _chart("multiline", "l2")]
    stored = tensorboard_layout.displayed_order(mixed)
    assert [c.title for c in stored] == ["l1", "l2", "m2", "m1"]
    assert [c.title for c in tensorboard_layout.displayed_order(stored)] == ["l1", "l2", "m1", "m2"]


def _chart(kind: str, title: str):
    from tensorboard.plugins.custom_scalar import layout_pb2

    if kind == "margin":
        series = layout_pb2.MarginChartContent.Series(value="v", lower="l", upper="u")
        return layout_pb2.Chart(title=title, margin=layout_pb2.MarginChartContent(series=[series]))
    return layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=["v$"]))


def _read_layout(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    assert metadata.CONFIG_SUMMARY_TAG in events.PluginTagToContent(metadata.PLUGIN_NAME)
    (stored,) = events.Tensors(metadata.CONFIG_SUMMARY_TAG)
    return events, layout_pb2.Layout.FromString(stored.tensor_proto.string_val[0])


@pytest.mark.slow
def test_training_run_writes_the_layout_beside_the_scalars(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    logdir = tmp_path / "tb"
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(logdir))  # transformers 5: no logging_dir argument
    # Scripted rounds: every metric, its interval and its paired change exist, whatever a tiny
    # model writes (a model seeded otherwise left too few paired problems for a change's interval).
    script_records(monkeypatch, [0.5, 0.3, 0.3, 0.3])
    with one_thread():
        trainer = make_trainer("trainer", tmp_path / "run", max_steps=2, report_to=["tensorboard"])
        attach(trainer, faith_config(faith_every_n_steps=2))
        trainer.train()

    events, layout = _read_layout(logdir)
    # The test's arithmetic problems are numeric: no letter-bias charts.
    assert layout == tensorboard_layout.build_layout(["early_answering", "filler"], choice=False)
    scalars = set(events.Tags()["scalars"])
    logged = {f"train/{k}" for keys in faith_logs(trainer, prefix="faith").values() for k in keys}
    assert logged <= scalars
    drawn = {t for category in layout.category for chart in category.chart for t in _tags(chart)}
    # Every chart tag of a metric the run logged is a scalar tag TensorBoard holds (two rounds, so
    # the paired changes and their intervals are there too); the rest are keys this run never logs.
    for tag in drawn:
        name = re.sub(r"^train/faith(_ci|_delta|_delta_ci)?/|_(low|high)$", "", tag)
        if f"train/faith/{name}" in logged:
            assert tag in scalars, tag
    assert {"train/faith/early_answering_aoc", "train/faith_ci/early_answering_aoc_low",
            "train/faith_delta/filler_invariance", "train/faith_delta_ci/filler_invariance_high",
            "train/faith/seconds", "train/faith/unparsed_rate"} <= drawn & scalars


@pytest.mark.slow  # trains a tiny Trainer
def test_no_layout_without_tensorboard_in_report_to(tmp_path):
    trainer = make_trainer("trainer", tmp_path / "run", max_steps=2)
    assert tensorboard_layout.write_for_trainer(trainer, DEFAULT_PROBES) is False


def test_write_layout_to_a_directory(tmp_path):
    pytest.importorskip("tensorboard")
    assert tensorboard_layout.write_layout(tmp_path, ["filler"]) == tmp_path
    _, layout = _read_layout(tmp_path)
    assert layout == tensorboard_layout.build_layout(["filler"])


# ---------------------------------------------------------------------- W&B
class _FakeRun:
    def __init__(self):
        self.calls = []

    def define_metric(self, name, **kwargs):
        self.calls.append((name, kwargs))


def test_wandb_definitions_follow_each_metrics_direction(monkeypatch):
    run = _FakeRun()
    monkeypatch.setattr("faithcb.wandb_sink.active_run", lambda: run)
    WandbReporter(DEFAULT_PROBES).define_metrics()
    step = "train/global_step"
    hidden = {"faith_n/", "faith_delta_n/", "faith_missing/"}
    sections = [(f"train/{p}*", {"step_metric": step, "summary": "last", **({"hidden": True} if p in hidden else {})})
                for p in logkeys.ALL_PREFIXES if p not in (logkeys.TABLES, logkeys.CHARTS)]
    assert {"faith/", "faith_ci/", "faith_n/", "faith_missing/", "faith_curve/"} <= {p for p in logkeys.ALL_PREFIXES}
    assert run.calls == [
        *sections,
        ("train/faith/early_answering_aoc", {"step_metric": step, "summary": "last,max"}),
        ("train/faith/filler_invariance", {"step_metric": step, "summary": "last,min"}),
        ("train/faith/paraphrase_invariance", {"step_metric": step, "summary": "last"}),
        ("train/faith/info_gain_total", {"step_metric": step, "summary": "last,max"}),
    ]
    assert metric_definitions(["mistakes"])[len(sections)] == (
        "train/faith/mistakes_answer_changed_fraction", {"step_metric": step, "summary": "last,max"}
    )


def test_wandb_definitions_need_arun_process(monkeypatch):
    monkeypatch.setattr("faithcb.wandb_sink.active_run", lambda: None)
    WandbReporter(DEFAULT_PROBES).define_metrics()  # nothing to define on, nothing raised


def test_curve_rows_leave_out_points_without_a_value():
    nan = math.nan
    curve = {"x": [0.0, 0.5, 1.0], "mean": [0.25, nan, 1.0], "ci_low": [0.1, nan, nan], "ci_high": [0.6, nan, nan]}
    assert curve_rows(8, curve) == [[8, "step 8", 0.0, 0.25, 0.1, 0.6], [8, "step 8", 1.0, 1.0, None, None]]
    assert curve_rows(8, {}) == []  # no early answering this round: no rows, nothing logged


@pytest.mark.slow
def test_wandb_offline_run_draws_each_rounds_early_answering_curve(tmp_path, weights):
    """A real offline W&B run (rounds at steps 0, 2, 4): one line plot, keep -> agreement, per round."""
    pytest.importorskip("wandb")
    out = tmp_path / "out"
    argv = [sys.executable, str(WORKER), "--out", str(out), "--weights", str(weights), "--report-to", "wandb",
            "--problems", "3", "--max-steps", "4", "--every", "2", "--probes", "early_answering"]
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_PROJECT": "faithcb-tests",
           "WANDB_SILENT": "true"}
    rc, output = run_process(argv, env)
    assert rc == 0, output[-4000:]
    (run_dir,) = (Path(p) for p in glob.glob(str(tmp_path / "wandb" / "offline-run-*")))
    (log_file,) = run_dir.glob("run-*.wandb")

    # The plot spec: W&B's line preset over the curve table, the fraction kept on x, one line per round.
    spec = wandb_config(log_file)[("_wandb", "visualize", CURVE_CHART)]
    assert spec["panel_config"]["panelDefId"] == "wandb/line/v0"
    assert spec["panel_config"]["fieldSettings"] == {"x": "keep", "y": "agreement", "stroke": "round"}
    assert f'"{CURVE_CHART}_table"' in json.dumps(spec["panel_config"]["userQuery"])

    # The curve the callback logged as faith_curve/keep_* scalars, by step (key names unchanged).
    log_history = json.loads((out / "rank0.json").read_text(encoding="utf-8"))["log_history"]
    scalars = {
        e["step"]: {int(k.removeprefix("faith_curve/keep_")) / 100: v for k, v in e.items() if k.startswith("faith_curve/")}
        for e in log_history if any(k.startswith("faith_curve/") for k in e)
    }
    assert sorted(scalars) == [0, 2, 4] and all(len(points) == 5 for points in scalars.values())

    # One table per round, each holding that round's curve and every earlier one (W&B draws the last).
    tables = {r["train/global_step"]: r[f"{CURVE_CHART}_table"] for r in wandb_history(log_file)
              if f"{CURVE_CHART}_table" in r}
    assert sorted(tables) == [0, 2, 4]
    for step, ref in tables.items():
        table = json.loads((run_dir / "files" / ref["path"]).read_text(encoding="utf-8"))
        assert table["columns"] == list(CURVE_COLUMNS)
        lines: dict[str, dict[float, float]] = {}
        for row in table["data"]:
            row = dict(zip(CURVE_COLUMNS, row))
            assert row["round"] == f"step {row['step']}"
            lines.setdefault(row["step"], {})[row["keep"]] = row["agreement"]
        assert sorted(lines) == [s for s in (0, 2, 4) if s <= step]
        for s, points in lines.items():
            assert points == pytest.approx(scalars[s]), (step, s)


# ---------------------------------------------------------------------------------- regressions
# Moved from tests/test_regressions.py (issue 13's review, one bug each; issue 19 sorted them by subject).


@pytest.mark.slow  # trains a tiny Trainer
def test_wandb_table_columns_hold_the_values_their_names_say(tmp_path, monkeypatch):
    """Regression (issue 13, bug 5): W&B per-round table columns swapped (faithcb/wandb_sink.py).

    A real offline W&B run; the table file it writes is read back and every column checked by name
    against the record. Every field has a distinct value, so any swap of two columns shows.
    """
    wandb = pytest.importorskip("wandb")
    from faithcb.wandb_sink import WandbReporter

    monkeypatch.delenv("WANDB_DISABLED", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    probes = ["early_answering", "filler", "paraphrase", "info_gain", "mistakes"]
    records = [
        {
            "id": f"p{i}", "question": f"question {i}?", "chain": f"chain {i}.", "answer": str(10 + i),
            "gold": str(20 + i), "correct": bool(i % 2), "n_steps": 3 + i,
            "early_answering": {"aoc": 0.11 + i}, "filler": {"invariance": 0.22 + i},
            "paraphrase": {"invariance": 0.33 + i}, "info_gain": {"total": 0.44 + i},
            "mistakes": {"answer_changed_fraction": 0.55 + i},
        }
        for i in range(2)
    ]
    expected = {
        "step": lambda r: 7, "id": lambda r: r["id"], "question": lambda r: r["question"],
        "chain": lambda r: r["chain"], "answer": lambda r: r["answer"], "gold": lambda r: r["gold"],
        "correct": lambda r: r["correct"], "n_steps": lambda r: r["n_steps"],
        "early_answering_aoc": lambda r: r["early_answering"]["aoc"],
        "filler_invariance": lambda r: r["filler"]["invariance"],
        "paraphrase_invariance": lambda r: r["paraphrase"]["invariance"],
        "info_gain_total": lambda r: r["info_gain"]["total"],
        "mistakes_answer_changed_fraction": lambda r: r["mistakes"]["answer_changed_fraction"],
    }
    run = wandb.init(mode="offline", dir=str(tmp_path), project="faithcb-tests")
    try:
        WandbReporter(probes).log_round_table(7, records)
    finally:
        run.finish()
    (path,) = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "files" / "media" / "table" / "faith_tables" / "records_*.table.json"))
    table = json.loads(Path(path).read_text(encoding="utf-8"))
    assert sorted(table["columns"]) == sorted(expected)
    assert len(table["data"]) == len(records)
    for row, record in zip(table["data"], records):
        by_name = dict(zip(table["columns"], row))
        for name, value_of in expected.items():
            assert by_name[name] == value_of(record), f"column {name!r} holds {by_name[name]!r}, record has {value_of(record)!r}"

