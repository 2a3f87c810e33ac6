"""Turn one or more ``faith_history.jsonl`` files into a paper-ready figure and a self-contained HTML page.

``write_report([...run dirs...], out_dir)`` writes ``report.png`` (six panels: accuracy, early-answering
AOC, early-answering curves, information gain, filler/paraphrase invariance, and a first-to-last
summary) and ``report.html`` (the figure embedded as a base64 data URI, plus one table per run with
every metric of every round). ``faithcb report RUN_DIR ...`` is the command-line entry point
(:func:`report_main`).

matplotlib is imported lazily and switched to the non-interactive Agg backend inside
:func:`write_report`, so importing :mod:`faithcb` never touches the user's plotting setup.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HISTORY_NAME = "faith_history.jsonl"

# Okabe-Ito colour-blind-safe palette; run i always gets colour i in every panel.
_PALETTE = ["#D55E00", "#0072B2", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]

# Metrics in the order the HTML tables show them (anything else logged follows, sorted).
_METRIC_ORDER = [
    "accuracy",
    "early_answering_aoc",
    "filler_invariance",
    "filler_k0_agreement",
    "paraphrase_invariance",
    "info_gain_total",
    "info_gain_per_step",
    "info_gain_positive_fraction",
    "info_gain_delta_ppl",
    "unparsed_rate",
    "mean_steps",
    "mean_chain_tokens",
]

_HOW_TO_READ = (
    "Each marker is one probe round during fine-tuning; shaded bands are 95% bootstrap intervals "
    "over the probed problems, and dashed lines with hollow markers are the frozen base model "
    "(adapters disabled) where it was probed. <b>Accuracy</b> (A) is the share of problems whose "
    "answer under the model's own chain of thought matches the gold answer. <b>Early-answering "
    "AOC</b> (B) is one minus the area under the early-answering curve (C): the chain is cut to its "
    "first x fraction and the model is asked for its answer; the curve is the share of problems "
    "whose answer already equals the full-chain answer. <b>Higher AOC = the answer depends on more "
    "of the chain = more coupled</b>; an AOC near 0 means the answer is fixed before the reasoning "
    "is written (a flat curve near 1). <b>Information gain per step</b> (D) is how many nats of "
    "log-probability of the gold answer each reasoning step adds. <b>Filler and paraphrase "
    "invariance</b> (E) are the share of truncation points at which the answer survives replacing "
    'the rest of the chain with filler (" ...") or with a paraphrase: <b>higher = the answer '
    "survives = less coupled</b> (for paraphrase, a drop signals answers keyed on surface wording). "
    "The pattern to look for is accuracy rising while AOC falls: the model gets the answer right "
    "without using its stated reasoning."
)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _find_history(path: Path) -> Path:
    if path.is_file():
        return path
    if path.is_dir():
        direct = path / HISTORY_NAME
        if direct.is_file():
            return direct
        found = sorted(path.rglob(HISTORY_NAME), key=lambda p: (len(p.relative_to(path).parts), str(p)))
        found = [p for p in found if p.is_file()]
        if found:
            return found[0]
        raise FileNotFoundError(f"no {HISTORY_NAME} found in directory {str(path)!r} (searched recursively)")
    raise FileNotFoundError(
        f"history path {str(path)!r} does not exist (expected a {HISTORY_NAME} file or a directory containing one)"
    )


def read_history(path: str | os.PathLike) -> list[dict]:
    """Read a faithcb history: a JSONL file, or a directory holding ``faith_history.jsonl``.

    A directory is searched recursively (shallowest match first, so a Trainer ``output_dir`` or
    one of its checkpoints works). Blank lines are skipped. Raises :class:`FileNotFoundError` when
    nothing is found and :class:`ValueError` naming the file and line for malformed content. A
    last line without a trailing newline that does not parse is taken to be a round still being
    written by a live run: it is skipped with a warning rather than failing the report.
    """
    file = _find_history(Path(path))
    text = file.read_text(encoding="utf-8")
    lines = text.split("\n")
    records: list[dict] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            is_last_partial = lineno == len(lines) and not text.endswith("\n")
            if is_last_partial and records:
                warnings.warn(
                    f"{file}:{lineno}: skipping incomplete last line (a run still writing?)", stacklevel=2
                )
                continue
            raise ValueError(f"{file}:{lineno}: malformed JSON in faithcb history: {exc.msg}") from exc
        if not isinstance(obj, dict):
            raise ValueError(f"{file}:{lineno}: expected a JSON object per line, got {type(obj).__name__}")
        if "step" not in obj:
            raise ValueError(f"{file}:{lineno}: history record has no 'step' field")
        if "metrics" in obj and not isinstance(obj["metrics"], dict):
            raise ValueError(
                f"{file}:{lineno}: 'metrics' must be an object, got {type(obj['metrics']).__name__}"
            )
        if not isinstance(obj.get("step"), (int, float)) or isinstance(obj.get("step"), bool):
            raise ValueError(f"{file}:{lineno}: 'step' must be a number, got {obj.get('step')!r}")
        records.append(obj)
    return records


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
    m = (rec.get("metrics") or {}).get(name)
    if isinstance(m, dict):
        return _num(m.get("value")), _num(m.get("ci_low")), _num(m.get("ci_high"))
    if isinstance(m, (int, float)):
        return _num(m), math.nan, math.nan
    return math.nan, math.nan, math.nan


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


# --------------------------------------------------------------------------------------------
# Figure
# --------------------------------------------------------------------------------------------


def _not_measured(ax, text: str = "not measured") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=12, color="0.45")
    # tick_params, not set_xticks([]): the time panels share their x axis, so clearing ticks here
    # would clear them on the panels that do have data.
    ax.tick_params(bottom=False, left=False, labelbottom=False, labelleft=False)
    ax.grid(False)
    for s in ax.spines.values():
        s.set_color("0.8")


def _plot_metric(
    ax, runs, name: str, *, marker: str = "o", linestyle: str = "-", base: bool = True, label_suffix: str = ""
) -> bool:
    """Plot one metric for every run (model solid with band; base dashed, hollow). True if anything drawn."""
    drawn = False
    for run in runs:
        c = run["color"]
        x, v, lo, hi = _series(run["records"], name, "model")
        if x:
            drawn = True
            ax.plot(
                x,
                v,
                linestyle=linestyle,
                marker=marker,
                color=c,
                lw=2,
                ms=5.5,
                zorder=3,
                label=f"{run['label']}{label_suffix}",
            )
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
                    bx,
                    bv,
                    yerr=[err_lo, err_hi],
                    linestyle="--",
                    marker=marker,
                    mfc="white",
                    mec=c,
                    mew=1.6,
                    color=c,
                    lw=1.3,
                    ms=6,
                    capsize=2.5,
                    elinewidth=0.9,
                    alpha=0.9,
                    zorder=2,
                    label=f"{run['label']} base{label_suffix}",
                )
    return drawn


def _style_time_axis(ax, ylabel: str, title: str, *, unit_range: bool = False) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins="auto", integer=True))
    ax.set_title(title, loc="left", fontsize=12, fontweight="bold")
    ax.set_xlabel("training step (optimizer updates)")
    ax.set_ylabel(ylabel)
    ax.grid(True, color="0.9", lw=0.8)
    ax.set_axisbelow(True)
    if unit_range:
        ax.set_ylim(-0.03, 1.03)


def _first_last(records: list[dict], role: str = "model") -> tuple[dict | None, dict | None]:
    rs = sorted((r for r in records if _role(r) == role), key=lambda r: float(r["step"]))
    if not rs:
        return None, None
    return rs[0], rs[-1]


def _curve(rec: dict | None):
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
    if not pts:
        return None
    return pts


def _plot_curves(ax, runs) -> bool:
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
            x = [p[0] for p in pts]
            m = [p[1] for p in pts]
            light = which == "first" and first is not last
            alpha = 0.45 if light else 1.0
            ax.plot(
                x,
                m,
                "-",
                marker="o",
                color=c,
                alpha=alpha,
                lw=1.5 if light else 2.2,
                ms=4.5 if light else 5.5,
                mfc="white" if light else c,
                zorder=3 if not light else 2,
                label=f"{run['label']}, step {_step_str(rec['step'])}",
            )
            band = [p for p in pts if not (math.isnan(p[2]) or math.isnan(p[3]))]
            if len(band) >= 2:
                _fill_band(
                    ax, [p[0] for p in band], [p[2] for p in band], [p[3] for p in band], c, 0.07 if light else 0.15
                )
    return drawn


def _fill_band(ax, xs, low, high, color, alpha: float) -> None:
    """A shaded 95% interval behind the lines."""
    ax.fill_between(xs, low, high, color=color, alpha=alpha, lw=0, zorder=1)


def _summary_lines(run) -> list[str]:
    first, last = _first_last(run["records"])
    if first is None:
        return ["no model rounds"]
    out = [f"steps {_step_str(first['step'])} → {_step_str(last['step'])}"]
    for name, short in (
        ("accuracy", "accuracy"),
        ("early_answering_aoc", "AOC"),
        ("info_gain_per_step", "IG/step"),
        ("filler_invariance", "filler inv."),
        ("paraphrase_invariance", "paraphr. inv."),
    ):
        a = _metric(first, name)[0]
        b = _metric(last, name)[0]
        if math.isnan(a) and math.isnan(b):
            out.append(f"{short:<14}not measured")
            continue
        delta = "" if math.isnan(a) or math.isnan(b) else f"  ({b - a:+.2f})"
        out.append(f"{short:<14}{_fmt(a, 2):>5} → {_fmt(b, 2):<5}{delta}")
    return out


def _draw_figure(runs, title: str, png_path: Path) -> None:
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
    with plt.rc_context(rc):
        fig = plt.figure(figsize=(16, 9.6), dpi=150, layout="constrained")
        gs = fig.add_gridspec(2, 3)
        ax_a = fig.add_subplot(gs[0, 0])
        ax_b = fig.add_subplot(gs[0, 1], sharex=ax_a)
        ax_c = fig.add_subplot(gs[0, 2])
        ax_d = fig.add_subplot(gs[1, 0], sharex=ax_a)
        ax_e = fig.add_subplot(gs[1, 1], sharex=ax_a)
        ax_f = fig.add_subplot(gs[1, 2])

        # A — accuracy
        if _plot_metric(ax_a, runs, "accuracy"):
            _style_time_axis(
                ax_a, "accuracy (fraction of problems correct)", "A  Task accuracy", unit_range=True
            )
        else:
            ax_a.set_title("A  Task accuracy", loc="left", fontsize=12, fontweight="bold")
            _not_measured(ax_a)

        # B — early-answering AOC
        if _plot_metric(ax_b, runs, "early_answering_aoc"):
            _style_time_axis(
                ax_b,
                "early-answering AOC (0–1)\n↑ answer depends on more of the chain",
                "B  Chain–answer coupling (early-answering AOC)",
            )
            lo, hi = ax_b.get_ylim()
            ax_b.set_ylim(max(lo, -0.03), min(max(hi, 0.3), 1.03))
        else:
            ax_b.set_title("B  Chain–answer coupling (AOC)", loc="left", fontsize=12, fontweight="bold")
            _not_measured(ax_b)

        # C — early-answering curves
        ax_c.set_title(
            "C  Early-answering curves (first → last round)", loc="left", fontsize=12, fontweight="bold"
        )
        if _plot_curves(ax_c, runs):
            ax_c.set_xlabel("fraction of the chain of thought kept (0 = no chain)")
            ax_c.set_ylabel("share of answers equal to full-chain answer")
            ax_c.set_xlim(-0.03, 1.03)
            # Headroom above 1.0 holds the legend, so it never covers a curve (curves end at 1.0).
            ax_c.set_ylim(-0.03, 1.55)
            ax_c.set_yticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
            ax_c.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
            ax_c.grid(True, color="0.9", lw=0.8)
            ax_c.set_axisbelow(True)
            hint = "high & flat = answer fixed early (low AOC)"
            if len(runs) <= 2:
                ax_c.legend(
                    loc="upper center",
                    ncol=2,
                    frameon=True,
                    framealpha=0.9,
                    title_fontsize=8.5,
                    title=f"faint = first round, bold = last\n{hint}",
                )
            else:  # many runs: a style key only; colours are in the figure legend
                key = [
                    Line2D(
                        [],
                        [],
                        color="0.3",
                        alpha=0.45,
                        lw=1.5,
                        marker="o",
                        ms=4.5,
                        mfc="white",
                        label="first round",
                    ),
                    Line2D([], [], color="0.3", lw=2.2, marker="o", ms=5.5, label="last round"),
                ]
                ax_c.legend(
                    handles=key,
                    loc="upper center",
                    ncol=2,
                    frameon=True,
                    framealpha=0.9,
                    title_fontsize=8.5,
                    title=f"colour = run\n{hint}",
                )
        else:
            _not_measured(ax_c)

        # D — information gain per step
        if _plot_metric(ax_d, runs, "info_gain_per_step"):
            _style_time_axis(
                ax_d,
                "information gain per step (nats)\n↑ each step makes gold answer likelier",
                "D  Information gain per reasoning step",
            )
            ax_d.axhline(0.0, color="0.5", lw=0.9, zorder=0)
        else:
            ax_d.set_title(
                "D  Information gain per reasoning step", loc="left", fontsize=12, fontweight="bold"
            )
            _not_measured(ax_d)

        # E — filler and paraphrase invariance
        got_f = _plot_metric(ax_e, runs, "filler_invariance", marker="o", linestyle="-")
        got_p = _plot_metric(ax_e, runs, "paraphrase_invariance", marker="s", linestyle=":")
        if got_f or got_p:
            _style_time_axis(
                ax_e,
                "invariance (share of answers kept)\n↑ higher = less coupled",
                "E  Filler & paraphrase invariance",
                unit_range=True,
            )
            handles = []
            if got_f:
                handles.append(
                    Line2D([], [], color="0.25", marker="o", ls="-", lw=1.8, label='filler (" ...")')
                )
            if got_p:
                handles.append(Line2D([], [], color="0.25", marker="s", ls=":", lw=1.8, label="paraphrase"))
            if not got_f:
                handles.append(Line2D([], [], color="none", label="filler: not measured"))
            if not got_p:
                handles.append(Line2D([], [], color="none", label="paraphrase: not measured"))
            ax_e.legend(
                handles=handles,
                loc="best",
                frameon=True,
                framealpha=0.9,
                title="probe (colour = run)",
                title_fontsize=8.5,
            )
        else:
            ax_e.set_title("E  Filler & paraphrase invariance", loc="left", fontsize=12, fontweight="bold")
            _not_measured(ax_e)

        # F — textual summary, first → last model round per run
        ax_f.set_title("F  First → last round", loc="left", fontsize=12, fontweight="bold")
        ax_f.axis("off")
        blocks = [(run, _summary_lines(run)) for run in runs]
        needed = sum(0.105 + 0.062 * len(lines) for _, lines in blocks)
        k = min(1.0, 0.98 / needed)  # shrink to fit when many runs are compared
        y = 0.98
        for run, lines in blocks:
            ax_f.text(
                0.0,
                y,
                run["label"],
                transform=ax_f.transAxes,
                fontsize=max(7.0, 11.5 * k),
                fontweight="bold",
                color=run["color"],
                va="top",
            )
            y -= 0.075 * k
            for line in lines:
                ax_f.text(
                    0.03,
                    y,
                    line,
                    transform=ax_f.transAxes,
                    fontsize=max(6.5, 10 * k),
                    family="monospace",
                    va="top",
                )
                y -= 0.062 * k
            y -= 0.03 * k

        # Figure-level legend: one entry per run (+ base style when any base round exists).
        handles = [Line2D([], [], color=r["color"], marker="o", lw=2, label=r["label"]) for r in runs]
        if any(_role(rec) == "base" for r in runs for rec in r["records"]):
            handles.append(
                Line2D(
                    [],
                    [],
                    color="0.3",
                    marker="o",
                    mfc="white",
                    ls="--",
                    lw=1.3,
                    label="base model (adapters off)",
                )
            )
        handles.append(matplotlib.patches.Patch(color="0.5", alpha=0.25, label="95% bootstrap CI"))
        fig.legend(
            handles=handles, loc="outside lower center", ncol=len(handles), frameon=False, fontsize=10.5
        )
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
img.fig { width: 100%; height: auto; border: 1px solid #eee; }
.meta { color: #666; font-size: 0.9em; }
.tw { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85em; white-space: nowrap; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: right; }
th { background: #f0f0f0; position: sticky; top: 0; }
td.l, th.l { text-align: left; }
tr.base td { color: #555; font-style: italic; background: #fafafa; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border-radius: 2px; vertical-align: -0.1em;
          margin-right: 0.35em; }
"""


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


def _run_table(run) -> str:
    records = sorted(run["records"], key=lambda r: (float(r["step"]), _role(r) != "model"))
    names = [n for n in _METRIC_ORDER if any(n in (r.get("metrics") or {}) for r in records)]
    extra = sorted({n for r in records for n in (r.get("metrics") or {})} - set(_METRIC_ORDER))
    names += extra
    head = ["step", "epoch", "role"] + names + ["problems", "seconds"]
    out = [
        '<div class="tw"><table>',
        "<tr>"
        + "".join(f'<th class="{"l" if h == "role" else ""}">{html.escape(h)}</th>' for h in head)
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


def _write_html(runs, title: str, png_path: Path, html_path: Path) -> None:
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
        f'<p class="how">{_HOW_TO_READ}</p>',
        f'<img class="fig" alt="{html.escape(title)}: faithfulness metrics over training" '
        f'src="data:image/png;base64,{b64}">',
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
    :func:`read_history`). ``labels`` overrides the legend names (default: the records' ``run``
    field, else the folder name). Returns ``(png_path, html_path)``.
    """
    if isinstance(runs, (str, os.PathLike)):
        runs = [runs]
    if not runs:
        raise ValueError("write_report needs at least one run")
    if labels is not None and len(labels) != len(runs):
        raise ValueError(f"got {len(labels)} labels for {len(runs)} runs")
    loaded = []
    seen: dict[str, int] = {}
    for i, src in enumerate(runs):
        path = Path(src)
        file = _find_history(path)
        records = read_history(file)
        if not records:
            raise ValueError(f"{file}: history has no rounds yet")
        label = str(labels[i]) if labels is not None else _default_label(records, file)
        if label in seen:  # keep legend entries distinguishable
            seen[label] += 1
            label = f"{label} ({seen[label]})"
        else:
            seen[label] = 1
        loaded.append(
            {"label": label, "records": records, "source": file, "color": _PALETTE[i % len(_PALETTE)]}
        )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png_path = out / "report.png"
    html_path = out / "report.html"
    _draw_figure(loaded, title, png_path)
    _write_html(loaded, title, png_path, html_path)
    return png_path, html_path


def report_main(argv: Sequence[str] | None = None) -> int:
    """``faithcb report RUN_DIR [RUN_DIR ...] [--out DIR] [--labels a,b] [--title T]``."""
    parser = argparse.ArgumentParser(
        prog="faithcb report",
        description="Render faithcb history files into report.png and a self-contained report.html.",
    )
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR",
        help=f"a run output directory (searched for {HISTORY_NAME}) or the file itself",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="output directory (default: the run directory, or the parent of the first when several)",
    )
    parser.add_argument("--labels", default=None, help="comma-separated legend labels, one per run")
    parser.add_argument("--title", default="faithcb report", help="figure and page title")
    args = parser.parse_args(list(argv) if argv is not None else None)

    labels = None
    if args.labels is not None:
        labels = [s.strip() for s in args.labels.split(",")]
        if len(labels) != len(args.runs):
            print(
                f"faithcb report: error: --labels has {len(labels)} entries for {len(args.runs)} runs",
                file=sys.stderr,
            )
            return 2
    if args.out is not None:
        out = Path(args.out)
    else:
        first = _run_dir(Path(args.runs[0]))
        out = first if len(args.runs) == 1 else (first.resolve().parent)
    try:
        png, page = write_report(args.runs, out, labels=labels, title=args.title)
    except (FileNotFoundError, ValueError) as exc:
        print(f"faithcb report: error: {exc}", file=sys.stderr)
        return 2
    print(png)
    print(page)
    return 0


__all__ = ["HISTORY_NAME", "read_history", "report_main", "write_report"]
