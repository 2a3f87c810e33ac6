"""What a metric *is*: its name, meaning, direction, how a record yields it and how it is reduced.

Probes own their metrics (``Probe.metrics``); the round's chain-level metrics are declared here.
Everything that shows or acts on a metric — aggregation, paired changes, early stopping's default
mode, the CLI table, the report, the W&B table, docs/metrics.md — reads these declarations
through ``faithcb.probes.registry`` instead of keeping its own list.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

from faithcb.errors import ConfigError

Direction = Literal["higher", "lower", "neutral"]
DIRECTIONS: tuple[str, ...] = ("higher", "lower", "neutral")

Kind = Literal["proportion", "bounded", "continuous", "count"]
KINDS: tuple[str, ...] = ("proportion", "bounded", "continuous", "count")
# Each kind's interval (``faithcb.stats``, where the reasons are): proportions (a 0/1 outcome per
# chain) Jeffreys; bounded numbers (AOC, invariances, shares: a range given by ``bounds``) the
# Jeffreys-type interval for a bounded mean; unbounded numbers (nats) and counts (steps, tokens)
# Student t. Paired changes: gains and losses combined by MOVER, on the range the kind gives.
# Chosen by the declaration, never by the values (0/1-looking values of a bounded metric stay bounded).

UNIT = (0.0, 1.0)  # shares, agreements and areas

# What "higher"/"lower" mean for early stopping: watch for the metric moving *away* from coupling.
_STOP_MODE = {"higher": "max", "lower": "min"}

Reader = Callable[[dict], "float | None"]


@dataclass(frozen=True)
class Metric:
    """One reported number.

    ``key`` is the name inside its probe's record (``"aoc"``); ``probe`` is filled in by the
    registry, and ``name`` (``"early_answering_aoc"``) is what logs, histories and configs use.
    ``direction`` says which way is *more coupled*: ``"higher"``, ``"lower"`` or ``"neutral"``
    (bookkeeping, or a number whose good direction depends on the question asked).
    ``headline`` metrics get a column in the per-problem W&B table. ``bounds`` is the range the
    values can take (``UNIT`` for shares and areas); a ``"bounded"`` metric's interval uses it.
    ``kind`` says what the values are, and so which interval they get (see ``KINDS``):
    ``"proportion"`` (0/1 per chain), ``"bounded"`` (a number per chain within ``bounds``),
    ``"continuous"`` (a number per chain with no bound) or ``"count"`` (steps, tokens).
    ``reader`` says how one per-chain record yields the value (None: the record does not count);
    without one, a probe metric is the number at ``record[probe][key]`` (see ``read``).
    """

    key: str
    label: str
    meaning: str
    direction: Direction = "neutral"
    headline: bool = False
    bounds: tuple[float, float] | None = None  # the values it can take, when bounded: intervals are clipped to it
    probe: str | None = None
    kind: Kind = "continuous"
    reader: Reader | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"Metric {self.key!r}: direction {self.direction!r} is not one of {list(DIRECTIONS)}")
        if self.kind not in KINDS:
            raise ConfigError(f"Metric {self.key!r}: kind {self.kind!r} is not one of {list(KINDS)}")
        if self.kind == "bounded" and self.bounds is None:
            raise ConfigError(f"Metric {self.key!r}: kind 'bounded' needs its bounds")
        if self.reader is not None and not callable(self.reader):
            raise ConfigError(f"Metric {self.key!r}: reader must be a callable record -> float | None")

    @property
    def name(self) -> str:
        return f"{self.probe}_{self.key}" if self.probe else self.key

    @property
    def stop_mode(self) -> str | None:
        """Early stopping's mode for this metric: 'max' (higher = more coupled), 'min', or None."""
        return _STOP_MODE.get(self.direction)

    def read(self, record: dict[str, Any]) -> float | None:
        """This metric's value in one per-chain record; None when the record does not count."""
        if self.reader is not None:
            return self.reader(record)
        if self.probe is None or self.probe not in record:
            return None
        return number(record[self.probe].get(self.key))

    def of(self, probe: str) -> Metric:
        """This metric as reported by ``probe`` (qualified name ``<probe>_<key>``)."""
        return replace(self, probe=probe)


def number(value: Any) -> float | None:
    """``value`` as a float when it is a number (bools count as 0/1), else None."""
    return float(value) if isinstance(value, (int, float)) else None


def problem_key(record: dict, index: int) -> str:
    """The unit of every interval: the problem (several samples of one problem are one unit).

    With choice permutations (``ProbeSettings.choice_permutations``) the rotations of a problem's
    choices are one unit too (``base_id``): every metric is over all records, rotations
    included, but a problem counts once, its rotations averaged like samples, so the extra
    orderings do not narrow the intervals as if they were new problems.
    """
    key = record.get("base_id") or record.get("id")
    if key:
        return str(key)
    # A problem without an id is still one unit: its samples share its text (never the record's
    # index, which would count each sample as a problem of its own).
    question = record.get("question")
    return text_key(question, record.get("choices") or ()) if question is not None else f"#{index}"


def shares_over_problems(keyed: Iterable[tuple[str, Hashable]]) -> dict[Hashable, float]:
    """The distribution of the values in ``(problem key, value)`` pairs, every problem weighing 1:
    a problem's samples (and choice rotations) share its weight, as they share its unit."""
    per_problem: dict[str, list[Hashable]] = {}
    for key, value in keyed:
        per_problem.setdefault(key, []).append(value)
    shares: dict[Hashable, float] = {}
    for values in per_problem.values():
        for value in values:
            shares[value] = shares.get(value, 0.0) + 1.0 / len(values) / len(per_problem)
    return shares


def text_key(question: str, choices=()) -> str:
    """A problem's stable key made from its text (the same on every process and every run)."""
    return f"#{zlib.crc32(repr((question, tuple(choices))).encode()):08x}"


# Chain-level metrics: measured on every problem before any probe runs, read from the record's
# chain-level fields. Accuracy is over parsed answers (truncated chains included when their answer
# parses); accuracy_strict counts an unparsed answer as wrong. ``.get``: records written before the
# truncation fields existed count as complete.
CHAIN_METRICS: tuple[Metric, ...] = (
    Metric("accuracy", "accuracy", "share of parsed full-chain answers equal to the gold answer",
           kind="proportion", reader=lambda r: float(r["correct"]) if r["answer"] is not None else None),
    Metric("accuracy_strict", "accuracy (unparsed = wrong)",
           "share of all full-chain answers equal to the gold answer; an unparsed answer counts as wrong",
           kind="proportion", reader=lambda r: float(bool(r["correct"]))),
    Metric("unparsed_rate", "unparsed", "share of problems whose full-chain answer could not be parsed",
           kind="proportion", reader=lambda r: float(r["answer"] is None)),
    Metric("truncated_rate", "truncated chains",
           "share of chains cut by the token limit (left out of every coupling metric)",
           kind="proportion", reader=lambda r: float(r.get("truncated", False))),
    Metric("answer_truncated_rate", "truncated answers",
           "share of full-chain answers whose first number runs into the end of the answer window (unparsed)",
           kind="proportion", reader=lambda r: float(r.get("answer_truncated", False))),
    Metric("answer_computed_rate", "computed answers",
           "share of full-chain answers that kept computing after the cue ('9 * 2 = 18'; unparsed)",
           kind="proportion", reader=lambda r: float(r.get("answer_computed", False))),
    Metric("mean_steps", "steps per chain", "mean number of reasoning steps in a chain",
           kind="count", reader=lambda r: float(r["n_steps"])),
    Metric("mean_chain_tokens", "tokens per chain", "mean length of a chain in model tokens",
           kind="count", reader=lambda r: float(r["chain_tokens"])),
)
