"""Early stopping on a faithfulness drop, as a pure object: values in, a reason to stop out.

No Trainer here: ``EarlyStopper.update(value, interval)`` is fed one round's value of the watched
metric and returns why training should stop, or None. Its state travels in checkpoints through
``state()`` / ``load_state()``, so a resumed run continues the same counters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from faithcb.errors import ConfigError


@dataclass
class EarlyStopper:
    """Counts rounds in which ``metric`` is worse than its reference; stops after ``patience``.

    ``mode`` is 'max' (higher is better, so a fall is bad) or 'min'. ``reference`` is 'best'
    (the best value so far) or 'baseline' (the first value seen, the step-0 round). A round is
    bad when it is worse than the reference by more than ``min_delta`` and, with
    ``require_ci``, the reference also lies outside the round's interval. ``enabled=False``
    still tracks best and baseline (they are exported and reported) but never stops.
    """

    metric: str
    mode: str = "max"
    patience: int = 2
    min_delta: float = 0.05
    reference: str = "best"
    require_ci: bool = False
    enabled: bool = True
    best: float | None = None
    baseline: float | None = None
    bad_rounds: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ConfigError(f"early stopping mode: {self.mode!r} is not 'max' or 'min'")
        if self.reference not in ("best", "baseline"):
            raise ConfigError(f"early stopping reference: {self.reference!r} is not 'best' or 'baseline'")

    @classmethod
    def from_config(cls, config) -> EarlyStopper:
        """The stopper a ``FaithConfig`` asks for."""
        return cls(
            metric=config.faith_stop_metric,
            mode=config.stop_mode,
            patience=config.faith_stop_patience,
            min_delta=config.faith_stop_min_delta,
            reference=config.faith_stop_reference,
            require_ci=config.faith_stop_require_ci,
            enabled=config.faith_early_stopping,
        )

    def update(self, value: float, interval: tuple[float, float] | None = None) -> str | None:
        """Take one round's value (and its interval); the reason to stop, or None.

        A NaN value (nothing scored this round) changes nothing.
        """
        if value is None or not math.isfinite(value):
            return None
        sign = 1.0 if self.mode == "max" else -1.0
        if self.baseline is None:
            self.baseline = value
        if self.best is None or sign * (value - self.best) > 0:
            self.best = value
        if not self.enabled:
            return None
        reference = self.best if self.reference == "best" else self.baseline
        worse_by = sign * (reference - value)
        low, high = interval if interval is not None else (math.nan, math.nan)
        outside_interval = not (low <= reference <= high)
        bad = worse_by > self.min_delta and (outside_interval or not self.require_ci)
        self.bad_rounds = self.bad_rounds + 1 if bad else 0
        if self.bad_rounds >= self.patience:
            return (
                f"{self.metric} = {value:.3f} is worse than the {self.reference} {reference:.3f} "
                f"by more than {self.min_delta} for {self.bad_rounds} round(s)"
            )
        return None

    def state(self) -> dict[str, Any]:
        """What must survive a checkpoint."""
        return {"best": self.best, "baseline": self.baseline, "bad_rounds": self.bad_rounds}

    def load_state(self, state: dict[str, Any]) -> None:
        self.best = state.get("best")
        self.baseline = state.get("baseline")
        self.bad_rounds = int(state.get("bad_rounds") or 0)
