"""Tests for faithcb.report: history reading, the PNG/HTML report and the CLI entry point."""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path

import pytest
import toy_probe

from faithcb.metrics import Metric
from faithcb.probes import register_probe, unregister_probe
from faithcb.report import read_history, report_main, write_report

GRID = [0.0, 0.25, 0.5, 0.75, 1.0]


def _m(value, half=0.08, n=12):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return {"value": value, "ci_low": value, "ci_high": value, "n": 0}
    return {"value": value, "ci_low": max(0.0, value - half), "ci_high": min(1.0, value + half), "n": n}


def _curve(aoc):
    # A concave curve whose area is 1 - aoc (exact for the trapezoid rule on GRID when aoc <= 0.5).
    mean = [min(1.0, 1 - 2 * aoc + 2 * aoc * x) for x in GRID]
    return {
        "x": GRID,
        "mean": mean,
        "ci_low": [max(0, v - 0.1) for v in mean],
        "ci_high": [min(1, v + 0.1) for v in mean],
    }


def _record(step, run, acc, aoc, *, role="model", paraphrase=True, nan_ig=False):
    metrics = {
        "accuracy": _m(acc),
        "early_answering_aoc": _m(aoc, 0.05),
        "filler_invariance": _m(1 - aoc),
        "filler_k0_agreement": _m(1 - aoc * 1.5),
        "info_gain_total": _m(1.5 * aoc / 0.5, 0.3),
        "info_gain_per_step": _m(float("nan")) if nan_ig else _m(0.3 * aoc / 0.5, 0.05),
        "info_gain_positive_fraction": _m(0.5 + aoc / 2),
        "info_gain_delta_ppl": _m(0.1),
        "unparsed_rate": _m(0.0, 0.0),
        "mean_steps": {"value": 4.0, "ci_low": 3.5, "ci_high": 4.5, "n": 12},
        "mean_chain_tokens": {"value": 60.0, "ci_low": 55.0, "ci_high": 65.0, "n": 12},
    }
    if paraphrase:
        metrics["paraphrase_invariance"] = _m(0.9 - aoc / 2)
    return {
        "step": step,
        "epoch": step / 40,
        "run": run,
        "role": role,
        "seconds": 3.0,
        "metrics": metrics,
        "scalars": {"problems_scored": 12, "seconds": 3.0, "paraphrase_rejected": 0},
        "curve": _curve(aoc),
    }


def _write(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # allow_nan: real histories carry NaN for "not computed"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def two_runs(tmp_path):
    steps = [0, 20, 40, 60, 80, 100]
    shortcut = []
    for i, s in enumerate(steps):
        t = i / (len(steps) - 1)
        shortcut.append(_record(s, "shortcut", 0.4 + 0.5 * t, 0.5 - 0.45 * t, nan_ig=(i == 2)))
    shortcut.insert(1, _record(0, "shortcut", 0.4, 0.5, role="base"))
    shortcut.append(_record(100, "shortcut", 0.41, 0.49, role="base"))
    control = [
        _record(s, "control", 0.4 + 0.1 * (i / 5), 0.5 + 0.02 * (-1) ** i, paraphrase=False)
        for i, s in enumerate(steps)
    ]
    # Trainer-like layout: the history sits one level down in the output dir.
    _write(tmp_path / "shortcut" / "faithcb" / "faith_history.jsonl", shortcut)
    _write(tmp_path / "control" / "faith_history.jsonl", control)
    return tmp_path / "shortcut", tmp_path / "control"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_read_history_file_and_recursive_dir(two_runs):
    shortcut, control = two_runs
    recs = read_history(shortcut)  # found recursively
    assert len(recs) == 8 and recs[0]["run"] == "shortcut"
    assert read_history(control / "faith_history.jsonl")[0]["run"] == "control"
    nan_rec = [r for r in recs if r["step"] == 40 and r["role"] == "model"][0]
    assert math.isnan(nan_rec["metrics"]["info_gain_per_step"]["value"])


def test_read_history_errors_name_path_and_line(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        read_history(missing)
    empty_dir = tmp_path / "emptydir"
    empty_dir.mkdir()
    with pytest.raises(FileNotFoundError, match="emptydir"):
        read_history(empty_dir)
    bad = tmp_path / "bad" / "faith_history.jsonl"
    bad.parent.mkdir()
    bad.write_text(
        json.dumps({"step": 1, "metrics": {}}) + "\n\n{not json}\n" + json.dumps({"step": 3}) + "\n"
    )
    with pytest.raises(ValueError, match=r"faith_history\.jsonl:3") as exc:
        read_history(bad.parent)
    assert str(bad) in str(exc.value)
    bad.write_text(json.dumps({"step": 1}) + "\n" + json.dumps([1, 2]) + "\n")
    with pytest.raises(ValueError, match=r":2: expected a JSON object"):
        read_history(bad)
    bad.write_text(json.dumps({"metrics": {}}) + "\n")
    with pytest.raises(ValueError, match=r":1: .*'step'"):
        read_history(bad)


def test_read_history_tolerates_partial_last_line(tmp_path):
    f = tmp_path / "faith_history.jsonl"
    f.write_text(json.dumps({"step": 1, "metrics": {}}) + "\n" + '{"step": 2, "metr')
    with pytest.warns(UserWarning, match="incomplete last line"):
        recs = read_history(f)
    assert [r["step"] for r in recs] == [1]


def test_write_report_two_runs(two_runs, tmp_path):
    out = tmp_path / "out"
    png, page = write_report(list(two_runs), out, title="Shortcut vs control")
    assert png == out / "report.png" and page == out / "report.html"
    assert png.is_file() and page.is_file()

    w, h = _png_size(png)
    assert 1200 <= w <= 4000 and 800 <= h <= 3000
    import matplotlib.image as mpimg

    img = mpimg.imread(png)
    assert img.shape[0] == h and img.shape[1] == w
    assert png.stat().st_size > 50_000  # a real figure, not a blank canvas

    text = page.read_text(encoding="utf-8")
    assert "<title>Shortcut vs control</title>" in text
    assert re.search(r'src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', text)
    assert "shortcut" in text and "control" in text
    assert "How to read this" in text
    assert "0.900 [0.820, 0.980]" in text  # final shortcut accuracy with its CI, 3 decimals
    assert "n/a" in text  # the NaN info gain
    assert "—" in text  # control never measured paraphrase
    outside_image = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)
    assert "http" not in outside_image.lower()  # no external assets (base64 may contain "http" by chance)
    assert "<link" not in text and "<script" not in text


def test_write_report_labels_single_run_and_missing_metrics(tmp_path):
    recs = [
        {"step": s, "run": "only", "metrics": {"accuracy": {"value": 0.5, "ci_low": None, "ci_high": None}}}
        for s in (0, 10)
    ]
    _write(tmp_path / "r" / "faith_history.jsonl", recs)
    png, page = write_report([tmp_path / "r"], tmp_path / "o", labels=["my arm"])
    assert png.is_file()
    text = page.read_text()
    assert "my arm" in text and "0.500" in text
    with pytest.raises(ValueError, match="labels"):
        write_report([tmp_path / "r"], tmp_path / "o", labels=["a", "b"])


def test_report_main(two_runs, tmp_path, capsys):
    shortcut, control = two_runs
    assert report_main([str(shortcut), str(control), "--labels", "short,ctrl", "--title", "T"]) == 0
    out = capsys.readouterr().out.split()
    assert [Path(p).name for p in out] == ["report.png", "report.html"]
    assert Path(out[0]).parent == tmp_path.resolve()  # several runs: parent of the first
    assert "short" in Path(out[1]).read_text()

    assert report_main([str(control)]) == 0
    assert Path(capsys.readouterr().out.split()[0]).parent == control


def test_report_main_missing_dir(tmp_path, capsys):
    assert report_main([str(tmp_path / "does-not-exist")]) == 2
    err = capsys.readouterr().err
    assert "does-not-exist" in err and "error" in err


def test_figure_is_a_table_of_panels(two_runs):
    from faithcb.report import PANELS, layout

    runs = [{"label": p.name, "records": read_history(p)} for p in two_runs]
    panels = layout(runs)
    # The built-in metrics only: the six panels of docs/img/demo_report.png, no "other probes" panel.
    assert [p.key for p in panels] == ["accuracy", "aoc", "curves", "info_gain", "invariance", "summary"]
    assert [p.key for p in PANELS if not p.other] == [p.key for p in panels]
    # The summary lists what the panels plot over steps, in registry order.
    assert panels[-1].metrics == (
        "accuracy", "early_answering_aoc", "filler_invariance", "paraphrase_invariance", "info_gain_per_step"
    )


def test_html_columns_follow_the_registry(two_runs, tmp_path):
    from faithcb.probes import round_metrics

    _, page = write_report([two_runs[0]], tmp_path / "o")
    text = page.read_text()
    table = text[text.rindex("<table>"):]
    heads = re.findall(r"<th [^>]*>([^<]+)</th>", table)
    metrics = heads[3:-2]
    assert metrics == [m.name for m in round_metrics() if m.name in metrics]
    assert metrics[:2] == ["accuracy", "unparsed_rate"] and len(metrics) == 12
    # Every header says what the metric is, from the registry.
    assert 'title="early-answering AOC: 1 - area under m(k)' in table
    assert "(B)" in text and "(E)" in text and "Other probes" not in text


class _TwoMetricProbe(toy_probe.ToyProbe):
    """A user probe with a headline metric and a secondary one."""

    name = "two"
    metrics = (Metric("main", "two: main", "a headline metric", "lower", headline=True),
               Metric("side", "two: side", "a secondary metric", "neutral"))

    def record(self, chain, outcomes):
        return {"main": 0.4, "side": 0.6}


@pytest.fixture
def two_metric_probe():
    register_probe(_TwoMetricProbe, replace=True)
    yield
    unregister_probe(_TwoMetricProbe.name)


def test_metrics_without_a_panel_get_the_other_panel(tmp_path, two_metric_probe):
    from faithcb.report import layout, summary_lines

    recs = [
        {"step": s, "run": "r", "metrics": {
            "accuracy": _m(0.5), "mistakes_answer_changed_fraction": _m(0.2 + s / 100), "filler_k0_agreement": _m(0.1),
            "somebody_elses_metric": _m(3.0 + s), "two_main": _m(0.4), "two_side": _m(0.6),
        }}
        for s in (0, 10)
    ]
    _write(tmp_path / "r" / "faith_history.jsonl", recs)
    runs = [{"label": "r", "records": read_history(tmp_path / "r")}]
    panels = layout(runs)
    other = next(p for p in panels if p.key == "other")
    # A registered probe without a panel shows its headline metrics (registry order); a metric this
    # process does not know (a probe registered elsewhere) shows too; secondary metrics stay in the table.
    assert other.metrics == ("mistakes_answer_changed_fraction", "two_main", "somebody_elses_metric")
    assert [p.key for p in panels][-2:] == ["other", "summary"]
    lines = summary_lines(runs[0], panels[-1].metrics)
    assert any(line.startswith("adding mistakes: answer changed") and "0.20 → 0.30" in line for line in lines)
    assert any(line.startswith("somebody_elses_metric") and "(+10.00)" in line for line in lines)

    png, page = write_report([tmp_path / "r"], tmp_path / "o")
    text = page.read_text()
    assert "<b>Other probes</b> (F)" in text
    assert ">somebody_elses_metric</th>" in text and "13.000" in text
    assert "not a registered metric here" in text
    assert ">two_side</th>" in text and "two: side" in text  # in the table and the glossary
    w, h = _png_size(png)
    assert h > w * 0.8  # a third row of panels


def test_invariance_panel_says_what_each_metric_computes(two_runs):
    """Regression (issue 20, item 9): panel E read "higher = less coupled" for both metrics, but
    paraphrase invariance is neutral; each line now carries its own reading and the axis none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from faithcb.report import PANELS, _how_to_read, draw_metrics

    runs = [{"label": p.name, "records": read_history(p), "color": c} for p, c in zip(two_runs, ("r", "b"))]
    (panel,) = [p for p in PANELS if p.key == "invariance"]
    fig, ax = plt.subplots()
    try:
        draw_metrics(ax, panel, runs)
        ylabel = ax.get_ylabel()
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
    finally:
        plt.close(fig)
    assert "coupled" not in ylabel and "equals the full-chain answer" in ylabel
    assert legend == ["filler invariance (higher = less coupled)", "paraphrase invariance (no coupling direction)"]
    text = _how_to_read(PANELS)
    assert "neither direction is more coupled" in text and "answer line" in text
    assert "survives = less coupled" not in text  # the old sentence, which covered paraphrase too
