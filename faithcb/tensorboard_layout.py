"""TensorBoard's custom-scalars layout for the faith keys: built from the registry, written once.

TensorBoard shows every logged scalar as its own card; this layout (the custom-scalars plugin's
``Layout`` proto) groups the faith keys in three sections instead — *faithfulness* (accuracy and
each headline metric drawn with its 95% interval as a band, then its paired change from the
baseline round), *health* (unparsed and truncated shares, letter bias when there are
multiple-choice problems, problems scored) and *cost* (seconds per round, overhead fraction), one
metric per chart. Titles come from the metric registry.

tensorboard is optional (only in the ``[test]`` extra): it is imported lazily, and without it
nothing is written. The tags are the log keys of ``faithcb.logkeys`` behind the ``train/`` that
the Trainer's TensorBoard integration puts before every logged key.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

from faithcb import logkeys
from faithcb.probes import probe_metrics
from faithcb.probes.registry import metric_or_none

logger = logging.getLogger(__name__)

# The keys as TensorBoard shows them: the Trainer's integration logs every key under train/.
VALUE = logkeys.TRAIN + logkeys.VALUE
CI = logkeys.TRAIN + logkeys.CI
DELTA = logkeys.TRAIN + logkeys.DELTA
DELTA_CI = logkeys.TRAIN + logkeys.DELTA_CI

CATEGORIES = ("faithcb: faithfulness", "faithcb: health", "faithcb: cost")
_DIRECTION = {"higher": "higher = more coupled", "lower": "lower = more coupled", "neutral": "neutral"}


def _exact(tag: str) -> str:
    """A multiline chart's tags are regexes matched at the start: anchor both ends."""
    return re.escape(tag) + "$"


def _series(layout_pb2, name: str, value: str, ci: str):
    return layout_pb2.MarginChartContent.Series(value=value + name, lower=f"{ci}{name}_low", upper=f"{ci}{name}_high")


def _margin(layout_pb2, title: str, names: Sequence[str], *, delta: bool = False):
    value, ci = (DELTA, DELTA_CI) if delta else (VALUE, CI)
    series = [_series(layout_pb2, name, value, ci) for name in names]
    return layout_pb2.Chart(title=title, margin=layout_pb2.MarginChartContent(series=series))


def _multiline(layout_pb2, title: str, names: Sequence[str]):
    content = layout_pb2.MultilineChartContent(tag=[_exact(VALUE + name) for name in names])
    return layout_pb2.Chart(title=title, multiline=content)


def build_layout(probes: Sequence[str], *, choice: bool = True):
    """The ``layout_pb2.Layout`` for a run of ``probes`` (ImportError without tensorboard).

    ``choice``: whether the problems include multiple-choice ones; without them the letter-bias
    charts would stay empty (their keys are never logged), so they are left out.
    """
    from tensorboard.plugins.custom_scalar import layout_pb2

    headline = [m for p in probes for m in probe_metrics(p) if m.headline]
    names = [m.name for m in headline]
    # One metric per chart: TensorBoard draws every line of a chart, margin or multiline, in the
    # run's one colour (seen in Chromium with TensorBoard 2.21), so two metrics on one chart (accuracy
    # with AOC, unparsed with truncated, as before) could be told apart only by hovering.
    faithfulness = [_margin(layout_pb2, "accuracy (95% interval)", ["accuracy"])]
    faithfulness += [_margin(layout_pb2, f"{m.label} ({_DIRECTION[m.direction]})", [m.name]) for m in headline]
    faithfulness += [
        _margin(layout_pb2, f"change from the first round: {_label(n)} (paired)", [n], delta=True)
        for n in ["accuracy"] + names
    ]
    letters = [
        _multiline(layout_pb2, title, [name]) for name, title in (
            ("letter_full_top_share", "letter bias (multiple choice): top letter's share of the full-chain answers"),
            ("letter_gold_top_share", "letter bias: top letter's share of the gold answers (compare with the above)"),
            ("letter_full_gold_chance_agreement", "letter bias: accuracy from the letter distribution alone (sum p_full * p_gold)"),
            ("letter_full_entropy_normalized", "letter bias: entropy / log2(choices) of the full-chain answers (1 = uniform)"),
            ("letter_gold_entropy_normalized", "letter bias: entropy / log2(choices) of the gold answers"),
        )
    ]
    health = [
        _multiline(layout_pb2, "unparsed answers (share of problems)", ["unparsed_rate"]),
        _multiline(layout_pb2, "chains cut by the token limit (share of problems)", ["truncated_rate"]),
        _multiline(layout_pb2, "answers cut by the answer window (share of problems)", ["answer_truncated_rate"]),
        *(letters if choice else []),
        _multiline(layout_pb2, "problems scored (of faith_num_problems probed)", ["problems_scored"]),
    ]
    cost = [
        _multiline(layout_pb2, "seconds per probe round", ["seconds"]),
        _multiline(layout_pb2, "share of training time spent probing", ["overhead_fraction"]),
    ]
    return layout_pb2.Layout(category=[
        layout_pb2.Category(title=title, chart=displayed_order(charts))
        for title, charts in zip(CATEGORIES, (faithfulness, health, cost))
    ])


def displayed_order(charts):
    """The order TensorBoard's Custom Scalars page shows a category's stored ``charts`` in.

    The page (TensorBoard 2.21, seen in Chromium 156) draws a category's line charts first, in
    order, then its margin charts in *reverse* order. The reordering undoes itself, so storing
    ``displayed_order(charts)`` shows ``charts`` as listed when the line charts come first (each of
    our categories holds one kind).
    """
    lines = [c for c in charts if c.HasField("multiline")]
    margins = [c for c in charts if c.HasField("margin")]
    return lines + margins[::-1]


def _label(name: str) -> str:
    metric = metric_or_none(name)
    return metric.label if metric else name


def layout_summary(layout):
    """The layout as the custom-scalars plugin stores it: one string tensor under its config tag."""
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2
    from tensorboard.plugins.custom_scalar import metadata

    tensor = tensor_pb2.TensorProto(
        dtype="DT_STRING", string_val=[layout.SerializeToString()], tensor_shape=tensor_shape_pb2.TensorShapeProto()
    )
    value = summary_pb2.Summary.Value(
        tag=metadata.CONFIG_SUMMARY_TAG, tensor=tensor, metadata=metadata.create_summary_metadata()
    )
    return summary_pb2.Summary(value=[value])


def write_layout(log_dir: str | os.PathLike, probes: Sequence[str], *, choice: bool = True) -> Path | None:
    """Write the layout as its own event file in ``log_dir``; None without tensorboard."""
    try:
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:
        return None
    writer = EventFileWriter(str(log_dir), filename_suffix=".faithcb_layout")
    writer.add_event(event_pb2.Event(wall_time=time.time(), step=0, summary=layout_summary(build_layout(probes, choice=choice))))
    writer.close()
    return Path(writer.get_logdir())


def write_for_trainer(trainer, probes: Sequence[str], *, choice: bool = True) -> bool:
    """Write the layout where the trainer's TensorBoard integration writes, if it has one.

    Call on the main process, after the integration's own ``on_train_begin`` (true for any callback
    added with ``add_callback``). The layout goes through the integration's writer, into its event
    file; without that writer, into a file of its own in the integration's directory. Returns
    whether a layout was written.
    """
    report_to = getattr(trainer.args, "report_to", None) or []
    report_to = [report_to] if isinstance(report_to, str) else list(report_to)
    integration = next(
        (cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == "TensorBoardCallback"), None
    )
    if integration is None or not ({"tensorboard", "all"} & set(report_to)):
        return False
    try:
        summary = layout_summary(build_layout(probes, choice=choice))
    except ImportError:
        return False
    writer = getattr(integration, "tb_writer", None)
    file_writer = getattr(writer, "_get_file_writer", None)  # torch's SummaryWriter and tensorboardX
    if file_writer is not None:
        file_writer().add_summary(summary, 0)
        writer.flush()
        return True
    log_dir = getattr(integration, "logging_dir", None) or getattr(trainer.args, "logging_dir", None)
    if not log_dir:
        logger.info("faithcb: no TensorBoard log directory found; the custom-scalars layout is not written")
        return False
    return write_layout(log_dir, probes, choice=choice) is not None
