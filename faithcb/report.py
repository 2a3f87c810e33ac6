"""Turn one or more faithcb histories into a paper-ready figure and a self-contained HTML page.

``write_report([...run dirs...], out_dir)`` writes ``report.png`` and ``report.html`` (the figure
embedded as a base64 data URI, a glossary of the metrics shown, and one table per run with every
metric of every round). ``faithcb report RUN_DIR ...`` is the command line (:func:`make_parser`).

The figure is a table of panels (:data:`PANELS`): each entry names the metrics it shows and the
function that draws its kind of panel (metrics over training steps, early-answering curves,
first-to-last summary). Labels and directions come from the metric registry
(``faithcb.probes.registry``), so a probe registered by the user shows up in the tables and, through
the "other probes" panel, in the figure, without editing this module. Histories are read with
``faithcb.history.read_history``.

matplotlib is imported lazily and switched to the non-interactive Agg backend inside
:func:`write_report`, so importing :mod:`faithcb` never touches the user's plotting setup.
"""

from __future__ import annotations

import argparse
import base64
import html
import itertools
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from faithcb.errors import ConfigError, FaithcbError
from faithcb.history import (
    HISTORY_NAME,
    HistoryFormatError,
    find_history,
    measured_rounds,
    read_history,
    read_run_info,
)
from faithcb.metrics import Metric
from faithcb.probes.registry import in_registry_order, round_metrics
from faithcb.runinfo import incomparable

# Okabe-Ito colour-blind-safe palette; run i always gets colour i in every panel.
_PALETTE = ["#D55E00", "#0072B2", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]

# (marker, linestyle) of the 1st, 2nd, ... metric of a panel; colour is kept for the run.
_STYLES = (("o", "-"), ("s", ":"), ("^", "--"), ("D", "-."))

# Panel keys in braces become the panel's letter (the table below decides the letters).
_HOW_TO_READ = (
    "Each marker is one probe round during fine-tuning; shaded bands are 95% intervals "
    "over the probed problems, and dashed lines with hollow markers are the frozen base model "
    "(adapters disabled) where it was probed. <b>Accuracy</b> ({accuracy}) is the share of problems whose "
    "answer under the model's own chain of thought matches the gold answer. <b>Early-answering "
    "AOC</b> ({aoc}) is one minus the area under the early-answering curve ({curves}): the chain is cut to its "
    "first x fraction and the model is asked for its answer; the curve is the share of problems "
    "whose answer already equals the full-chain answer. <b>Higher AOC = the answer depends on more "
    "of the chain = more coupled</b>; an AOC near 0 means the answer is fixed before the reasoning "
    "is written (a flat curve near 1). <b>Information gain per step</b> ({info_gain}) is how many nats of "
    "log-probability of the gold answer each reasoning step adds. <b>Filler invariance</b> ({invariance}) is "
    "the share of cut points k &lt; n at which the answer still equals the full-chain answer when the "
    'rest of the chain is replaced by filler (" ...") of the same token length, averaged over problems: '
    "<b>higher = the answer ignores the rest of the chain = less coupled</b>. <b>Paraphrase invariance</b> "
    "(same panel) is that share when the steps after k are reworded instead (in continue mode: the steps "
    "up to k are reworded and the model writes the rest), over the cut points whose text the paraphrase "
    "changed, with the answer line and a final restatement of the answer left out of the reworded text: "
    "it does not measure coupling (<b>neither direction is more coupled</b>); a drop means the answer "
    "follows the chain's wording rather than its meaning. "
    "The pattern to look for is accuracy rising while AOC falls: the model gets the answer right "
    "without using its stated reasoning."
)
_HOW_TO_READ_OTHER = (
    " <b>Other probes</b> ({other}) shows the headline metrics of probes without a panel of their own "
    "(and any metric this installation does not know); the glossary below says which way each one is "
    "more coupled."
)


# --------------------------------------------------------------------------------------------
# Metrics: names, labels and directions from the registry
# --------------------------------------------------------------------------------------------


def _registry() -> dict[str, Metric]:
    """Every registered metric by name, in registry order (built-in and user probes alike)."""
    return {m.name: m for m in round_metrics()}


def ordered_metrics(names: Iterable[str]) -> list[str]:
    """``names`` in registry order, then any metric the registry does not know, sorted."""
    return in_registry_order(names)


def _label(name: str) -> str:
    metric = _registry().get(name)
    return metric.label if metric else name


_DIRECTION_HINTS = {"higher": "↑ higher = more coupled", "lower": "↑ higher = less coupled"}
# A metric's own reading, in a legend of metrics that do not share one.
_LEGEND_DIRECTIONS = {"higher": "higher = more coupled", "lower": "higher = less coupled",
                      "neutral": "no coupling direction"}


def _direction(name: str) -> str | None:
    metric = _registry().get(name)
    return metric.direction if metric else None


def _direction_hint(names: Sequence[str]) -> str:
    """The y axis's reading, when every metric of the panel has it ('' when neutral, unknown or mixed).

    A panel whose metrics read differently (filler: higher = less coupled; paraphrase: neutral)
    gets no axis-wide reading; each legend entry says its own (:func:`_legend_label`).
    """
    directions = {_direction(n) for n in names}
    return _DIRECTION_HINTS.get(directions.pop(), "") if len(directions) == 1 else ""


def _legend_label(name: str, names: Sequence[str]) -> str:
    """A metric's legend entry: its label, and its own reading when the panel's metrics differ."""
    if len({_direction(n) for n in names}) == 1:
        return _label(name)
    direction = _direction(name)
    return f"{_label(name)} ({_LEGEND_DIRECTIONS[direction]})" if direction else _label(name)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _num(x: Any) -> float:
    """A finite float, or NaN for None / NaN / non-numbers."""
    if isinstance(x, bool) or x is None:
        return math.nan
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def _role(rec: dict) -> str:
    return str(rec.get("role") or "model")


def _metric(rec: dict, name: str) -> tuple[float, float, float]:
    """Value and 95% interval of metric ``name`` in one round (NaN where missing)."""
    m = (rec.get("metrics") or {}).get(name)
    if isinstance(m, dict):
        return _num(m.get("value")), _num(m.get("ci_low")), _num(m.get("ci_high"))
    if isinstance(m, (int, float)):
        return _num(m), math.nan, math.nan
    return math.nan, math.nan, math.nan


def _logged(runs) -> set[str]:
    """Names of every metric any round of any run logged."""
    return {n for run in runs for rec in run["records"] for n in (rec.get("metrics") or {})}


def _series(
    records: list[dict], name: str, role: str
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Steps, values and CI bounds of one metric for one role, rounds with no value dropped."""
    rows = []
    for rec in records:
        if _role(rec) != role:
            continue
        v, lo, hi = _metric(rec, name)
        if math.isnan(v):
            continue
        rows.append((float(rec["step"]), v, lo, hi))
    rows.sort(key=lambda r: r[0])
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows]


def _fmt(x: float, nd: int = 3) -> str:
    return "n/a" if math.isnan(x) else f"{x:.{nd}f}"


def _step_str(step: Any) -> str:
    s = _num(step)
    if math.isnan(s):
        return str(step)
    return str(int(s)) if s == int(s) else f"{s:g}"


def _default_label(records: list[dict], path: Path) -> str:
    for rec in records:
        if rec.get("run"):
            return str(rec["run"])
    p = path.resolve()
    return (p.parent.name if p.is_file() else p.name) or str(path)


def _run_dir(path: Path) -> Path:
    return path.parent if path.is_file() else path


def _first_last(records: list[dict]) -> tuple[dict | None, dict | None]:
    """The first and last measured live-model rounds (failed rounds have nothing to show)."""
    rounds = measured_rounds(records)
    if not rounds:
        return None, None
    return rounds[0], rounds[-1]


# --------------------------------------------------------------------------------------------
# Figure: a table of panels, one drawing function per kind of panel
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Panel:
    """One panel of the figure.

    ``draw(ax, panel, runs)`` is the panel's kind. ``metrics`` are metric names (their labels
    and directions come from the registry); ``other=True`` makes the panel take the metrics no
    other panel shows (filled in by :func:`layout`). ``ylabel`` is the y quantity with its unit,
    ``{label}`` standing for the first metric's label. ``ylim`` is ``"unit"`` (the 0-1 range) or
    ``"within_unit"`` (the data's range clipped to 0-1, at least 0.3 tall). Panels with
    ``over_steps`` share their x axis, the training step.
    """

    key: str
    draw: Callable[[Any, Panel, list[dict]], None]
    title: str
    metrics: tuple[str, ...] = ()
    ylabel: str = ""
    ylim: str | None = None
    zero_line: bool = False
    over_steps: bool = True
    other: bool = False


def _not_measured(ax, text: str = "not measured") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=12, color="0.45")
    # tick_params, not set_xticks([]): the time panels share their x axis, so clearing ticks here
    # would clear them on the panels that do have data.
    ax.tick_params(bottom=False, left=False, labelbottom=False, labelleft=False)
    ax.grid(False)
    for s in ax.spines.values():
        s.set_color("0.8")


def _plot_metric(ax, runs, name: str, *, marker: str = "o", linestyle: str = "-", base: bool = True) -> bool:
    """Plot one metric for every run (model solid with band; base dashed, hollow). True if anything drawn."""
    drawn = False
    for run in runs:
        c = run["color"]
        x, v, lo, hi = _series(run["records"], name, "model")
        if x:
            drawn = True
            ax.plot(x, v, linestyle=linestyle, marker=marker, color=c, lw=2, ms=5.5, zorder=3, label=run["label"])
            band = [
                (xi, a, b) for xi, a, b in zip(x, lo, hi, strict=True) if not (math.isnan(a) or math.isnan(b))
            ]
            if len(band) >= 2:
                _fill_band(ax, [p[0] for p in band], [p[1] for p in band], [p[2] for p in band], c, 0.15)
            elif len(band) == 1:  # a single round: an error bar instead of a band
                xi, a, b = band[0]
                ax.vlines([xi], [a], [b], color=c, alpha=0.5, lw=1.5, zorder=2)
        if base:
            bx, bv, blo, bhi = _series(run["records"], name, "base")
            if bx:
                drawn = True
                err_lo = [0.0 if math.isnan(a) else max(0.0, y - a) for y, a in zip(bv, blo, strict=True)]
                err_hi = [0.0 if math.isnan(b) else max(0.0, b - y) for y, b in zip(bv, bhi, strict=True)]
                ax.errorbar(
                    bx, bv, yerr=[err_lo, err_hi], linestyle="--", marker=marker, mfc="white", mec=c, mew=1.6,
                    color=c, lw=1.3, ms=6, capsize=2.5, elinewidth=0.9, alpha=0.9, zorder=2,
                    label=f"{run['label']} base",
                )
    return drawn


def _fill_band(ax, xs, low, high, color, alpha: float) -> None:
    """A shaded 95% interval behind the lines."""
    ax.fill_between(xs, low, high, color=color, alpha=alpha, lw=0, zorder=1)


def _grid(ax) -> None:
    ax.grid(True, color="0.9", lw=0.8)
    ax.set_axisbelow(True)


def draw_metrics(ax, panel: Panel, runs) -> None:
    """Kind "metrics over steps": each metric of the panel for every run, one style per metric."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    styles = dict(zip(panel.metrics, itertools.cycle(_STYLES)))
    drawn = {
        name: _plot_metric(ax, runs, name, marker=styles[name][0], linestyle=styles[name][1])
        for name in panel.metrics
    }
    if not any(drawn.values()):
        _not_measured(ax)
        return
    ax.xaxis.set_major_locator(MaxNLocator(nbins="auto", integer=True))
    ax.set_xlabel("training step (optimizer updates)")
    if panel.ylabel:
        quantity = panel.ylabel.format(label=_label(panel.metrics[0]))
    else:  # the "other probes" panel: metrics of unknown units
        quantity = _label(panel.metrics[0]) if len(panel.metrics) == 1 else "value"
    hint = _direction_hint(panel.metrics)
    ax.set_ylabel(f"{quantity}\n{hint}" if hint else quantity)
    _grid(ax)
    if panel.ylim == "unit":
        ax.set_ylim(-0.03, 1.03)
    elif panel.ylim == "within_unit":
        lo, hi = ax.get_ylim()
        ax.set_ylim(max(lo, -0.03), min(max(hi, 0.3), 1.03))
    if panel.zero_line:
        ax.axhline(0.0, color="0.5", lw=0.9, zorder=0)
    if len(panel.metrics) > 1:  # which line is which metric (colour is the run's)
        handles = []
        for name in panel.metrics:
            marker, linestyle = styles[name]
            if drawn[name]:
                handles.append(Line2D([], [], color="0.25", marker=marker, ls=linestyle, lw=1.8,
                                      label=_legend_label(name, panel.metrics)))
            else:
                handles.append(Line2D([], [], color="none", label=f"{_legend_label(name, panel.metrics)}: not measured"))
        ax.legend(handles=handles, loc="best", frameon=True, framealpha=0.9,
                  title="metric (colour = run)", title_fontsize=8.5)


def _curve(rec: dict | None):
    """The early-answering curve of a round as (x, mean, ci_low, ci_high) points, or None."""
    if rec is None:
        return None
    cv = rec.get("curve")
    if not isinstance(cv, dict) or not isinstance(cv.get("x"), list) or not isinstance(cv.get("mean"), list):
        return None
    x = [_num(v) for v in cv["x"]]
    m = [_num(v) for v in cv["mean"]]
    n = min(len(x), len(m))
    lo = [_num(v) for v in (cv.get("ci_low") or [])][:n]
    hi = [_num(v) for v in (cv.get("ci_high") or [])][:n]
    pts = [
        (x[i], m[i], lo[i] if i < len(lo) else math.nan, hi[i] if i < len(hi) else math.nan)
        for i in range(n)
        if not (math.isnan(x[i]) or math.isnan(m[i]))
    ]
    return pts or None


def draw_curves(ax, panel: Panel, runs) -> None:
    """Kind "early-answering curves": the first and last round's curve of every run."""
    from matplotlib.lines import Line2D

    drawn = False
    for run in runs:
        c = run["color"]
        first, last = _first_last(run["records"])
        pairs = [(first, "first")] if first is last else [(first, "first"), (last, "last")]
        for rec, which in pairs:
            pts = _curve(rec)
            if pts is None:
                continue
            drawn = True
            light = which == "first" and first is not last
            ax.plot(
                [p[0] for p in pts], [p[1] for p in pts], "-", marker="o", color=c,
                alpha=0.45 if light else 1.0, lw=1.5 if light else 2.2, ms=4.5 if light else 5.5,
                mfc="white" if light else c, zorder=2 if light else 3,
                label=f"{run['label']}, step {_step_str(rec['step'])}",
            )
            band = [p for p in pts if not (math.isnan(p[2]) or math.isnan(p[3]))]
            if len(band) >= 2:
                _fill_band(
                    ax, [p[0] for p in band], [p[2] for p in band], [p[3] for p in band], c, 0.07 if light else 0.15
                )
    if not drawn:
        _not_measured(ax)
        return
    ax.set_xlabel("fraction of the chain of thought kept (0 = no chain)")
    ax.set_ylabel("share of answers equal to full-chain answer")
    ax.set_xlim(-0.03, 1.03)
    # Headroom above 1.0 holds the legend, so it never covers a curve (curves end at 1.0).
    ax.set_ylim(-0.03, 1.55)
    ax.set_yticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    _grid(ax)
    hint = "high & flat = answer fixed early (low AOC)"
    legend = {"loc": "upper center", "ncol": 2, "frameon": True, "framealpha": 0.9, "title_fontsize": 8.5}
    if len(runs) <= 2:
        ax.legend(title=f"faint = first round, bold = last\n{hint}", **legend)
    else:  # many runs: a style key only; colours are in the figure legend
        key = [
            Line2D([], [], color="0.3", alpha=0.45, lw=1.5, marker="o", ms=4.5, mfc="white", label="first round"),
            Line2D([], [], color="0.3", lw=2.2, marker="o", ms=5.5, label="last round"),
        ]
        ax.legend(handles=key, title=f"colour = run\n{hint}", **legend)


def summary_lines(run, names: Sequence[str]) -> list[str]:
    """First → last value of each metric in ``names`` for one run, as monospace text lines."""
    first, last = _first_last(run["records"])
    if first is None:
        return ["no model rounds"]
    out = [f"steps {_step_str(first['step'])} → {_step_str(last['step'])}"]
    width = max((len(_label(n)) for n in names), default=0) + 2
    for name in names:
        a, b = _metric(first, name)[0], _metric(last, name)[0]
        label = _label(name)
        if math.isnan(a) and math.isnan(b):
            out.append(f"{label:<{width}}not measured")
            continue
        delta = "" if math.isnan(a) or math.isnan(b) else f"  ({b - a:+.2f})"
        out.append(f"{label:<{width}}{_fmt(a, 2):>5} → {_fmt(b, 2):<5}{delta}")
    return out


def draw_summary(ax, panel: Panel, runs) -> None:
    """Kind "summary": first → last round of each run, for the metrics the figure plots."""
    ax.axis("off")
    blocks = [(run, summary_lines(run, panel.metrics)) for run in runs]
    needed = sum(0.105 + 0.062 * len(lines) for _, lines in blocks)
    k = min(1.0, 0.98 / needed)  # shrink to fit when many runs are compared
    y = 0.98
    for run, lines in blocks:
        ax.text(0.0, y, run["label"], transform=ax.transAxes, fontsize=max(7.0, 11.5 * k),
                fontweight="bold", color=run["color"], va="top")
        y -= 0.075 * k
        for line in lines:
            ax.text(0.03, y, line, transform=ax.transAxes, fontsize=max(6.5, 10 * k), family="monospace", va="top")
            y -= 0.062 * k
        y -= 0.03 * k


# The figure, in reading order (letters follow this order; three panels a row).
PANELS: tuple[Panel, ...] = (
    Panel("accuracy", draw_metrics, "Task accuracy", ("accuracy",),
          ylabel="{label} (fraction of problems correct)", ylim="unit"),
    Panel("aoc", draw_metrics, "Chain–answer coupling (early-answering AOC)", ("early_answering_aoc",),
          ylabel="{label} (0–1)", ylim="within_unit"),
    Panel("curves", draw_curves, "Early-answering curves (first → last round)", over_steps=False),
    Panel("info_gain", draw_metrics, "Information gain per reasoning step", ("info_gain_per_step",),
          ylabel="{label} (nats)", zero_line=True),
    Panel("invariance", draw_metrics, "Filler & paraphrase invariance",
          ("filler_invariance", "paraphrase_invariance"),
          ylabel="share of cut points whose answer\nequals the full-chain answer", ylim="unit"),
    Panel("other", draw_metrics, "Other probes", other=True),
    Panel("summary", draw_summary, "First → last round", over_steps=False),
)


def other_metrics(runs, panels: Sequence[Panel] = PANELS) -> list[str]:
    """Logged metrics for the "other probes" panel: what no panel shows and no panel's probe owns.

    That is the headline metrics of a registered probe without a panel (a user probe, or
    mistakes), and every metric the registry does not know (a probe registered in the process
    that wrote the history but not in this one).
    """
    registry = _registry()
    shown = {n for p in panels for n in p.metrics}
    covered = {registry[n].probe for n in shown if n in registry}
    picked = []
    for name in ordered_metrics(_logged(runs)):
        metric = registry.get(name)
        if name in shown:
            continue
        if metric is None or (metric.probe is not None and metric.probe not in covered and metric.headline):
            picked.append(name)
    return picked


def layout(runs, panels: Sequence[Panel] = PANELS) -> list[Panel]:
    """The panels to draw for ``runs``: the "other" panel filled in (dropped when empty), and the
    summary panel given every metric plotted over steps, in registry order."""
    out = []
    for panel in panels:
        if panel.other:
            names = other_metrics(runs, panels)
            if names:
                out.append(replace(panel, metrics=tuple(names)))
        else:
            out.append(panel)
    plotted = ordered_metrics(n for p in out if p.over_steps for n in p.metrics)
    return [replace(p, metrics=tuple(plotted)) if p.draw is draw_summary else p for p in out]


def _letter(i: int) -> str:
    return chr(ord("A") + i)


def _draw_figure(runs, title: str, png_path: Path, panels: Sequence[Panel]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    rc = {
        "font.size": 10.5,
        "axes.labelsize": 10.5,
        "axes.titlesize": 12,
        "legend.fontsize": 9,
        "xtick.labelsize": 9.5,
        "ytick.labelsize": 9.5,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
    cols = 3
    rows = math.ceil(len(panels) / cols)
    with plt.rc_context(rc):
        fig = plt.figure(figsize=(16, 4.8 * rows), dpi=150, layout="constrained")
        gs = fig.add_gridspec(rows, cols)
        steps_ax = None  # every panel over training steps shares this x axis
        for i, panel in enumerate(panels):
            ax = fig.add_subplot(gs[i // cols, i % cols], sharex=steps_ax if panel.over_steps else None)
            if panel.over_steps and steps_ax is None:
                steps_ax = ax
            ax.set_title(f"{_letter(i)}  {panel.title}", loc="left", fontsize=12, fontweight="bold")
            panel.draw(ax, panel, runs)

        # Figure-level legend: one entry per run (+ base style when any base round exists).
        handles = [Line2D([], [], color=r["color"], marker="o", lw=2, label=r["label"]) for r in runs]
        if any(_role(rec) == "base" for r in runs for rec in r["records"]):
            handles.append(
                Line2D([], [], color="0.3", marker="o", mfc="white", ls="--", lw=1.3, label="base model (adapters off)")
            )
        handles.append(matplotlib.patches.Patch(color="0.5", alpha=0.25, label="95% interval (by the metric's kind)"))
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False, fontsize=10.5)
        fig.suptitle(title, fontsize=15, fontweight="bold")
        fig.savefig(png_path, dpi=150, facecolor="white")
        plt.close(fig)


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1400px;
       color: #222; line-height: 1.45; padding: 0 16px; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
p.how { background: #f6f8fa; border-left: 4px solid #888; padding: 10px 14px; }
p.warn { background: #fff4e5; border-left: 4px solid #D55E00; padding: 6px 14px; }
tr.differs td { background: #fff4e5; }
img.fig { width: 100%; height: auto; border: 1px solid #eee; }
.meta { color: #666; font-size: 0.9em; }
.tw { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85em; white-space: nowrap; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: right; }
th { background: #f0f0f0; position: sticky; top: 0; }
td.l, th.l { text-align: left; }
table.gloss td { white-space: normal; }
tr.base td { color: #555; font-style: italic; background: #fafafa; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border-radius: 2px; vertical-align: -0.1em;
          margin-right: 0.35em; }
"""

_MORE_COUPLED = {"higher": "higher", "lower": "lower", "neutral": "neither (neutral)"}


def _cell(rec: dict, name: str) -> str:
    m = (rec.get("metrics") or {}).get(name)
    if m is None:
        return "—"
    v, lo, hi = _metric(rec, name)
    if math.isnan(v):
        return "n/a"
    if math.isnan(lo) or math.isnan(hi):
        return f"{v:.3f}"
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def _tooltip(name: str) -> str:
    metric = _registry().get(name)
    if metric is None:
        return "not a registered metric here"
    return f"{metric.label}: {metric.meaning} (more coupled: {_MORE_COUPLED[metric.direction]})"


def _glossary(names: Sequence[str]) -> str:
    """One row per metric shown: its label, which way is more coupled, and what it means."""
    registry = _registry()
    out = ['<div class="tw"><table class="gloss">',
           '<tr><th class="l">metric</th><th class="l">label</th><th class="l">more coupled when</th>'
           '<th class="l">meaning</th></tr>']
    for name in names:
        m = registry.get(name)
        label, direction, meaning = (
            (m.label, _MORE_COUPLED[m.direction], m.meaning) if m
            else ("—", "—", "not a registered metric here (a probe registered by the run that wrote the history?)")
        )
        out.append(
            f'<tr><td class="l"><code>{html.escape(name)}</code></td><td class="l">{html.escape(label)}</td>'
            f'<td class="l">{html.escape(direction)}</td><td class="l">{html.escape(meaning)}</td></tr>'
        )
    out.append("</table></div>")
    return "\n".join(out)


def _run_table(run) -> str:
    records = sorted(run["records"], key=lambda r: (float(r["step"]), _role(r) != "model"))
    names = ordered_metrics(_logged([run]))
    head = ["step", "epoch", "role"] + names + ["problems", "seconds"]
    out = [
        '<div class="tw"><table>',
        "<tr>"
        + "".join(
            f'<th class="{"l" if h == "role" else ""}"'
            + (f' title="{html.escape(_tooltip(h))}"' if h in names else "")
            + f">{html.escape(h)}</th>"
            for h in head
        )
        + "</tr>",
    ]
    for r in records:
        sc = r.get("scalars") or {}
        ep = _num(r.get("epoch"))
        secs = _num(sc.get("seconds", r.get("seconds")))
        probs = sc.get("problems_scored")
        cells = [_step_str(r["step"]), "" if math.isnan(ep) else f"{ep:.2f}", html.escape(_role(r))]
        cells += [_cell(r, n) for n in names]
        cells += ["" if probs is None else html.escape(str(probs)), "" if math.isnan(secs) else f"{secs:.1f}"]
        cls = ' class="base"' if _role(r) == "base" else ""
        out.append(
            f"<tr{cls}>"
            + "".join(f'<td class="{"l" if i == 2 else ""}">{c}</td>' for i, c in enumerate(cells))
            + "</tr>"
        )
    out.append("</table></div>")
    return "\n".join(out)


def settings_rows(info: dict | None) -> dict[str, str]:
    """A run's settings record (``faithcb.runinfo``) as label -> text, in the report's order."""
    if not info:
        return {"recorded": "no (a history from before faithcb recorded run settings)"}
    model, problems = info.get("model") or {}, info.get("problems") or {}
    adapter = model.get("adapter") or {}
    rows = {
        "faithcb": str(info.get("faithcb")),
        "model": f"{model.get('name_or_path')} (config sha256 {str(model.get('config_sha256'))[:12]})",
        "adapter": (f"{adapter.get('peft_type')} r={adapter.get('r')} {adapter.get('path') or ''}".strip()
                    if adapter else "none"),
        "device, dtype": f"{model.get('device')}, {model.get('dtype')}",
        "problems": f"{problems.get('n')} from {problems.get('source')} (sha256 {str(problems.get('sha256'))[:12]})",
        "layout": str(info.get("layout")),
    }
    for key, value in (info.get("settings") or {}).items():
        if isinstance(value, dict):  # the prompt style: one row per field
            rows.update({f"{key}.{k}": _setting_text(v) for k, v in value.items()})
        else:
            rows[key] = _setting_text(value)
    rows.update({name: str(version) for name, version in (info.get("versions") or {}).items()})
    return rows


def _setting_text(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def incomparable_runs(runs) -> list[str]:
    """Why runs' numbers do not compare with the first run's (settings, layout, problems), one line each."""
    first = runs[0]
    return [f"{first['label']} vs {r['label']}: {line}" for r in runs[1:]
            for line in incomparable(first.get("info"), r.get("info"))]


def _settings_table(runs) -> str:
    """One column per run, one row per recorded setting; rows that differ between runs are marked."""
    per_run = [settings_rows(r.get("info")) for r in runs]
    labels = list(dict.fromkeys(label for rows in per_run for label in rows))
    out = ['<div class="tw"><table class="gloss">',
           '<tr><th class="l">setting</th>' + "".join(
               f'<th class="l"><span class="swatch" style="background:{r["color"]}"></span>{html.escape(r["label"])}</th>'
               for r in runs) + "</tr>"]
    for label in labels:
        values = [rows.get(label, "—") for rows in per_run]
        row_class = ' class="differs"' if len(set(values)) > 1 else ""
        out.append(f'<tr{row_class}><td class="l"><code>{html.escape(label)}</code></td>'
                   + "".join(f'<td class="l">{html.escape(v)}</td>' for v in values) + "</tr>")
    out.append("</table></div>")
    return "\n".join(out)


def _how_to_read(panels: Sequence[Panel]) -> str:
    letters = {p.key: _letter(i) for i, p in enumerate(panels)}
    text = _HOW_TO_READ.format(**letters)
    if "other" in letters:
        text += _HOW_TO_READ_OTHER.format(**letters)
    return text


def _write_html(runs, title: str, png_path: Path, html_path: Path, panels: Sequence[Panel]) -> None:
    b64 = base64.b64encode(png_path.read_bytes()).decode("ascii")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        '<p class="meta">Runs: '
        + ", ".join(
            f'<span class="swatch" style="background:{r["color"]}"></span>{html.escape(r["label"])} '
            f"(<code>{html.escape(str(r['source']))}</code>)"
            for r in runs
        )
        + "</p>",
        "<h2>How to read this</h2>",
        f'<p class="how">{_how_to_read(panels)}</p>',
        f'<img class="fig" alt="{html.escape(title)}: faithfulness metrics over training" '
        f'src="data:image/png;base64,{b64}">',
        "<h2>Metrics</h2>",
        _glossary(ordered_metrics(_logged(runs))),
        "<h2>Run settings</h2>",
        *(f'<p class="warn">Not comparable: {html.escape(line)}</p>' for line in incomparable_runs(runs)),
        _settings_table(runs),
    ]
    for r in runs:
        parts.append(
            f'<h2><span class="swatch" style="background:{r["color"]}"></span>{html.escape(r["label"])}</h2>'
        )
        parts.append(
            '<p class="meta">Each cell: value [95% CI low, high]; "—" = probe not run, '
            '"n/a" = not computed this round.</p>'
        )
        parts.append(_run_table(r))
    parts.append("</body></html>\n")
    html_path.write_text("\n".join(parts), encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def write_report(
    runs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    labels: Sequence[str] | None = None,
    title: str = "faithcb report",
) -> tuple[Path, Path]:
    """Write ``report.png`` and ``report.html`` for one or more runs into ``out_dir``.

    Each entry of ``runs`` is a history file or a directory containing one (see
    :func:`faithcb.history.read_history`). ``labels`` overrides the legend names (default: the
    records' ``run`` field, else the folder name). Returns ``(png_path, html_path)``. Raises
    ``FileNotFoundError`` for a missing history, ``HistoryFormatError`` for a malformed or empty
    one and ``ConfigError`` for bad arguments.
    """
    if isinstance(runs, (str, os.PathLike)):
        runs = [runs]
    if not runs:
        raise ConfigError("write_report needs at least one run")
    if labels is not None and len(labels) != len(runs):
        raise ConfigError(f"got {len(labels)} labels for {len(runs)} runs")
    loaded = []
    seen: dict[str, int] = {}
    for i, src in enumerate(runs):
        file = find_history(src)
        records = read_history(file)
        if not records:
            raise HistoryFormatError(f"{file}: history has no rounds yet")
        label = str(labels[i]) if labels is not None else _default_label(records, file)
        if label in seen:  # keep legend entries distinguishable
            seen[label] += 1
            label = f"{label} ({seen[label]})"
        else:
            seen[label] = 1
        loaded.append({"label": label, "records": records, "source": file, "color": _PALETTE[i % len(_PALETTE)],
                       "info": read_run_info(file)})

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png_path = out / "report.png"
    html_path = out / "report.html"
    for line in incomparable_runs(loaded):  # the page says it too; a script gets a warning
        warnings.warn(f"faithcb report: runs not comparable: {line}", UserWarning, stacklevel=2)
    panels = layout(loaded)
    _draw_figure(loaded, title, png_path, panels)
    _write_html(loaded, title, png_path, html_path, panels)
    return png_path, html_path


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

_DESCRIPTION = "Render faithcb history files into report.png and a self-contained report.html."


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs", nargs="+", metavar="RUN_DIR",
        help=f"a run output directory (searched for {HISTORY_NAME}) or the file itself",
    )
    parser.add_argument(
        "--out", default=None,
        help="output directory (default: the run directory, or the parent of the first when several)",
    )
    parser.add_argument("--labels", default=None, help="comma-separated legend labels, one per run")
    parser.add_argument("--title", default="faithcb report", help="figure and page title")


def make_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``faithcb report`` to ``subparsers`` (of ``faithcb.cli``); its handler is :func:`run`."""
    parser = subparsers.add_parser(
        "report", help="PNG + HTML report from one or more runs' faith_history.jsonl", description=_DESCRIPTION
    )
    _add_arguments(parser)
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """``faithcb report``: write the report, print its two paths. Raises faithcb's errors."""
    labels = None
    if args.labels is not None:
        labels = [s.strip() for s in args.labels.split(",")]
        if len(labels) != len(args.runs):
            raise ConfigError(f"--labels has {len(labels)} entries for {len(args.runs)} runs")
    if args.out is not None:
        out = Path(args.out)
    else:
        first = _run_dir(Path(args.runs[0]))
        out = first if len(args.runs) == 1 else first.resolve().parent
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        png, page = write_report(args.runs, out, labels=labels, title=args.title)
    for warning in caught:  # one line each, not Python's warning format with a source line
        print(str(warning.message).replace("faithcb report: ", "faithcb report: warning: ", 1), file=sys.stderr)
    print(png)
    print(page)
    return 0


def report_main(argv: Sequence[str] | None = None) -> int:
    """``faithcb report ARGS`` as a function: the same parser; an error is one line and status 2."""
    parser = argparse.ArgumentParser(prog="faithcb")
    make_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.handler(args)
    except (FaithcbError, FileNotFoundError) as exc:
        print(f"faithcb report: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


__all__ = ["HISTORY_NAME", "PANELS", "Panel", "layout", "make_parser", "read_history", "report_main", "write_report"]
