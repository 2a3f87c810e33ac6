"""What a metric *is*: its name, label, one-line meaning and direction, declared as data.

Probes own their metrics (``Probe.metrics``); the round's chain-level metrics are declared here.
Everything that shows or acts on a metric — aggregation, early stopping's default mode, the CLI
table, the report, the W&B table, docs/metrics.md — reads these declarations through
``faithcb.probes.registry`` instead of keeping its own list.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from faithcb.errors import ConfigError

Direction = Literal["higher", "lower", "neutral"]
DIRECTIONS: tuple[str, ...] = ("higher", "lower", "neutral")

UNIT = (0.0, 1.0)  # shares, agreements and areas

# What "higher"/"lower" mean for early stopping: watch for the metric moving *away* from coupling.
_STOP_MODE = {"higher": "max", "lower": "min"}


@dataclass(frozen=True)
class Metric:
    """One reported number.

    ``key`` is the name inside its probe's record (``"aoc"``); ``probe`` is filled in by the
    registry, and ``name`` (``"early_answering_aoc"``) is what logs, histories and configs use.
    ``direction`` says which way is *more coupled*: ``"higher"``, ``"lower"`` or ``"neutral"``
    (bookkeeping, or a number whose good direction depends on the question asked).
    ``headline`` metrics get a column in the per-problem W&B table. ``bounds`` is the range the
    values can take (``UNIT`` for shares and areas); a t interval is clipped to it.
    """

    key: str
    label: str
    meaning: str
    direction: Direction = "neutral"
    headline: bool = False
    bounds: tuple[float, float] | None = None  # the values it can take, when bounded: intervals are clipped to it
    probe: str | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"Metric {self.key!r}: direction {self.direction!r} is not one of {list(DIRECTIONS)}")

    @property
    def name(self) -> str:
        return f"{self.probe}_{self.key}" if self.probe else self.key

    @property
    def stop_mode(self) -> str | None:
        """Early stopping's mode for this metric: 'max' (higher = more coupled), 'min', or None."""
        return _STOP_MODE.get(self.direction)

    def of(self, probe: str) -> Metric:
        """This metric as reported by ``probe`` (qualified name ``<probe>_<key>``)."""
        return replace(self, probe=probe)


# Chain-level metrics: measured on every problem before any probe runs.
CHAIN_METRICS: tuple[Metric, ...] = (
    Metric("accuracy", "accuracy", "share of parsed full-chain answers equal to the gold answer"),
    Metric("accuracy_strict", "accuracy (unparsed = wrong)",
           "share of all full-chain answers equal to the gold answer; an unparsed answer counts as wrong"),
    Metric("unparsed_rate", "unparsed", "share of problems whose full-chain answer could not be parsed"),
    Metric("truncated_rate", "truncated chains",
           "share of chains cut by the token limit (left out of every coupling metric)"),
    Metric("answer_truncated_rate", "truncated answers",
           "share of full-chain answers cut by the answer window before their terminator (unparsed)"),
    Metric("answer_computed_rate", "computed answers",
           "share of full-chain answers that kept computing after the cue ('9 * 2 = 18'; unparsed)"),
    Metric("mean_steps", "steps per chain", "mean number of reasoning steps in a chain"),
    Metric("mean_chain_tokens", "tokens per chain", "mean length of a chain in model tokens"),
)
