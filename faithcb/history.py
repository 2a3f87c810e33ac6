"""The JSONL history of a run: its schema, the writer the callback uses, and the one reader.

One line per round and role::

    {"step": 40, "epoch": 0.5, "run": "sft", "reason": "schedule", "role": "model", "seconds": 12.3,
     "metrics": {"accuracy": {"value", "ci_low", "ci_high", "n"}, ...}, "scalars": {...},
     "changes": {"accuracy": {"value", "ci_low", "ci_high", "n"}, ...},
     "curve": {"x": [...], "mean": [...], "ci_low": [...], "ci_high": [...]},
     "errors": [...], "early_stop": "reason"}

``role`` is ``"model"`` (the live model) or ``"base"`` (the PEFT base model, adapters disabled).
A round that failed has ``"error"`` instead of metrics. Before the rounds, the run's first line is
its header, ``{"run_info": {...}}`` (``faithcb.runinfo``: settings, layout, model, problems, versions),
written once when a run starts; a run started again into the same file appends its own header
before its rounds. ``read_history`` returns the rounds only (histories without a header, from
before it existed, read as before); ``read_run_info`` returns the header. Per-problem records of each round go to
``faith_records/step_NNNNNN[_base].jsonl`` beside the history. The callback, ``faithcb report``,
``faithcb demo`` and the benchmarks all read histories through ``read_history``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from faithcb.errors import HistoryFormatError

__all__ = ["HEADER_KEY", "HISTORY_NAME", "HistoryFormatError", "HistoryWriter", "find_history", "measured_rounds",
           "metric_value", "read_history", "read_run_info", "round_lines"]

HISTORY_NAME = "faith_history.jsonl"
RECORDS_DIR = "faith_records"
ROLES = ("model", "base")
HEADER_KEY = "run_info"  # the header line's one key; a round line always has "step"


def is_header(line: Any) -> bool:
    """Whether a parsed history line is a run header rather than a round."""
    return isinstance(line, dict) and HEADER_KEY in line and "step" not in line


def round_lines(
    *, step: int, epoch: float | None, run: str, reason: str, seconds: float,
    result=None, base=None, error: str | None = None, early_stop: str | None = None,
    best_step: int | None = None, changes: dict[str, dict[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """The history lines of one round: the live model's, then the base model's when measured.

    ``result`` and ``base`` are ``RoundResult``s (anything with ``to_dict(with_records=...)``).
    ``changes`` are the paired changes from the run's first round (value, ci_low, ci_high, n per
    metric), kept so a reader (the model card) need not pair the records again.
    A round that stopped training also says where to go back to: ``best_step``, the round early
    stopping found best.
    """
    common = {"step": step, "epoch": epoch, "run": run, "reason": reason}
    model: dict[str, Any] = {**common, "role": "model", "seconds": seconds}
    if result is not None:
        model.update(result.to_dict(with_records=False))
        if changes:
            model["changes"] = changes
    else:
        model["error"] = error
    if early_stop:
        model["early_stop"] = early_stop
        model["best_step"] = best_step
    lines = [model]
    if base is not None:
        lines.append({**common, "role": "base", **base.to_dict(with_records=False)})
    return lines


class HistoryWriter:
    """Appends rounds to ``out_dir/filename`` and writes their per-problem records beside it."""

    def __init__(self, out_dir: str | os.PathLike, filename: str = HISTORY_NAME, *, log_records: bool = True):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / filename
        self.log_records = log_records

    def write_header(self, run_info: dict[str, Any]) -> None:
        """Start a run: its header line, before its rounds (a resumed run does not call this)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({HEADER_KEY: run_info}) + "\n")

    def write_round(self, lines: Sequence[dict[str, Any]], records: dict[str, Sequence[dict]] | None = None) -> None:
        """Append ``lines``; with ``log_records``, write ``records[role]`` for the round's step."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            for line in lines:
                f.write(json.dumps(line) + "\n")
        if not (self.log_records and records and lines):
            return
        (self.out_dir / RECORDS_DIR).mkdir(exist_ok=True)
        step = lines[0]["step"]
        for role, rows in records.items():
            with open(records_path(self.path, step, role), "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row) + "\n")

    def rewind(self, step: int) -> None:
        """Drop rounds after ``step`` (resuming from that checkpoint), like the Trainer's log_history.

        They came from the run that went on past the checkpoint; the resumed run probes those
        steps again, and keeping both would put every later step twice in the history and report.
        A last line cut short (a run killed mid-write: no newline, no valid JSON) is dropped with a
        warning; left in place, the next round would be appended to it and spoil both.
        """
        if not self.path.is_file():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n") and not _parses(lines[-1]):
            warnings.warn(
                f"faithcb: {self.path}: dropping the cut last line of the history (a run killed while "
                f"writing it?): {lines[-1][:60]!r}", RuntimeWarning, stacklevel=2,
            )
            lines, cut = lines[:-1], True
        else:
            cut = False
        kept = []
        for line in lines:
            try:
                later = json.loads(line).get("step", 0) > step
            except (ValueError, AttributeError, TypeError):
                later = False  # not ours to judge: keep it
            if not later:
                kept.append(line)
        if cut or len(kept) != len(lines):
            self.path.write_text("".join(kept), encoding="utf-8")


def _parses(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def records_path(history_file: str | os.PathLike, step: int, role: str = "model") -> Path:
    """Where the per-problem records of ``role``'s round at ``step`` lie, beside the history file."""
    suffix = "" if role == "model" else f"_{role}"
    return Path(history_file).parent / RECORDS_DIR / f"step_{step:06d}{suffix}.jsonl"


def read_records(history: str | os.PathLike, step: int, role: str = "model") -> list[dict]:
    """The per-problem records of one round (``history``: the history file or its directory).

    Empty when the run kept none (``faith_log_records=False``) or the round failed.
    """
    path = records_path(find_history(history), step, role)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def find_history(path: str | os.PathLike) -> Path:
    """The history file at ``path``: the file itself, or the shallowest one inside a directory."""
    path = Path(path)
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
    """Read a faithcb history's rounds: a JSONL file, or a directory holding ``faith_history.jsonl``.

    Header lines (``read_run_info``) are not rounds and are left out.

    A directory is searched recursively (shallowest match first, so a Trainer ``output_dir`` or
    one of its checkpoints works). Blank lines are skipped. Raises :class:`FileNotFoundError` when
    nothing is found and :class:`HistoryFormatError` (a ``ValueError``) naming the file and line
    for malformed content. A last line without a trailing newline that does not parse is taken to
    be a round still being written by a live run: it is skipped with a warning.
    """
    return [line for line in _read_lines(find_history(path)) if not is_header(line)]


def read_run_info(path: str | os.PathLike) -> dict[str, Any] | None:
    """The run header of a history (file or directory): what settings, model, problems and versions
    produced its rounds; the last one when several runs wrote to the file. None for a history
    written before headers existed."""
    headers = [line[HEADER_KEY] for line in _read_lines(find_history(path)) if is_header(line)]
    return headers[-1] if headers else None


def _read_lines(file: Path) -> list[dict]:
    text = file.read_text(encoding="utf-8")
    lines = text.split("\n")
    rounds: list[dict] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            is_last_partial = lineno == len(lines) and not text.endswith("\n")
            if is_last_partial and rounds:
                warnings.warn(f"{file}:{lineno}: skipping incomplete last line (a run still writing?)", stacklevel=2)
                continue
            raise HistoryFormatError(f"{file}:{lineno}: malformed JSON in faithcb history: {exc.msg}") from exc
        _check_line(obj, f"{file}:{lineno}")
        rounds.append(obj)
    return rounds


def _check_line(obj: Any, where: str) -> None:
    if not isinstance(obj, dict):
        raise HistoryFormatError(f"{where}: expected a JSON object per line, got {type(obj).__name__}")
    if is_header(obj):
        if not isinstance(obj[HEADER_KEY], dict):
            raise HistoryFormatError(f"{where}: '{HEADER_KEY}' must be an object, got {type(obj[HEADER_KEY]).__name__}")
        return
    if "step" not in obj:
        raise HistoryFormatError(f"{where}: history record has no 'step' field")
    if "metrics" in obj and not isinstance(obj["metrics"], dict):
        raise HistoryFormatError(f"{where}: 'metrics' must be an object, got {type(obj['metrics']).__name__}")
    if not isinstance(obj.get("step"), (int, float)) or isinstance(obj.get("step"), bool):
        raise HistoryFormatError(f"{where}: 'step' must be a number, got {obj.get('step')!r}")


def measured_rounds(rounds: Sequence[dict], role: str = "model") -> list[dict]:
    """The rounds of ``role`` that have metrics (failed rounds left out), by step."""
    return sorted(
        (r for r in rounds if r.get("role", "model") == role and isinstance(r.get("metrics"), dict)),
        key=lambda r: r["step"],
    )


def metric_value(round_line: dict | None, name: str) -> float:
    """A round's value of metric ``name``; NaN when the round or the metric is missing."""
    if round_line is None:
        return float("nan")
    m = round_line.get("metrics", {}).get(name)
    if not isinstance(m, dict) or m.get("value") is None:
        return float("nan")
    return float(m["value"])
