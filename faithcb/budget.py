"""The probing time budget: how much of training's wall time the rounds may take.

``OverheadBudget`` keeps two clocks — seconds spent probing, seconds spent training (wall time
since training began, less probing) — and answers one question before a scheduled round: would
running it keep ``probing / training`` within ``max_fraction``, if it costs what the last round
cost? It is a pure object (times are passed in), so it is table-tested without a Trainer; its
state rides in checkpoints so a resumed run keeps the accounting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from faithcb.errors import ConfigError


@dataclass
class OverheadBudget:
    """Probing seconds against training seconds; ``max_fraction=0`` means no budget (always allow)."""

    max_fraction: float = 0.0
    probe_seconds: float = 0.0  # all rounds so far (this run and, after a resume, the runs before)
    train_seconds_before: float = 0.0  # training seconds of earlier runs (restored on resume)
    last_round_seconds: float = math.nan
    skipped: int = 0
    _started_at: float | None = None
    _probe_at_start: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_fraction:
            raise ConfigError(f"faith_max_overhead: must be >= 0 (0 = no budget), got {self.max_fraction}")

    def start(self, now: float) -> None:
        """Training (re)starts at ``now``: the wall clock from here counts as training or probing."""
        self._started_at = now
        self._probe_at_start = self.probe_seconds

    def add_round(self, seconds: float) -> None:
        self.probe_seconds += seconds
        self.last_round_seconds = seconds

    def train_seconds(self, now: float) -> float:
        """Training wall time so far: time since start, less this run's probing, plus earlier runs'."""
        if self._started_at is None:
            return self.train_seconds_before
        this_run = (now - self._started_at) - (self.probe_seconds - self._probe_at_start)
        return self.train_seconds_before + max(0.0, this_run)

    def fraction(self, now: float) -> float:
        """Probing seconds so far / training seconds so far (NaN before any training)."""
        train = self.train_seconds(now)
        return self.probe_seconds / train if train > 0 else math.nan

    def allows(self, now: float) -> bool:
        """Whether a round now, costing what the last one did, keeps the fraction within budget."""
        if self.max_fraction <= 0 or not math.isfinite(self.last_round_seconds):
            return True
        train = self.train_seconds(now)
        return train > 0 and (self.probe_seconds + self.last_round_seconds) / train <= self.max_fraction

    def state(self, now: float) -> dict[str, Any]:
        return {"probe_seconds": self.probe_seconds, "train_seconds": self.train_seconds(now),
                "last_round_seconds": self.last_round_seconds, "skipped": self.skipped}

    def load_state(self, state: dict[str, Any]) -> None:
        self.probe_seconds = float(state.get("probe_seconds", 0.0))
        self.train_seconds_before = float(state.get("train_seconds", 0.0))
        self.last_round_seconds = float(state.get("last_round_seconds", math.nan))
        self.skipped = int(state.get("skipped", 0))
