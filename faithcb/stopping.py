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

REFERENCES = ("best", "baseline", "paired")


@dataclass
class EarlyStopper:
    """Counts rounds in which ``metric`` is worse than its reference; stops after ``patience``.

    ``mode`` is 'max' (higher is better, so a fall is bad) or 'min'. ``reference`` is 'best'
    (the best value so far), 'baseline' (the first value seen, the step-0 round) or 'paired'
    (the round's paired change from the baseline round, over the problems scored in both).
    A round is bad when it is worse than the reference by more than ``min_delta`` and, with
    ``require_ci``, the reference also lies outside the round's interval — for 'paired', the
    paired interval of the change excludes zero on the bad side. With ``nan_is_bad`` a round
    whose value could not be measured (NaN) counts as bad; otherwise it changes nothing.
    ``enabled=False`` still tracks best and baseline (they are exported) but never stops.
    """

    metric: str
    mode: str = "max"
    patience: int = 2
    min_delta: float = 0.05
    reference: str = "best"
    require_ci: bool = False
    enabled: bool = True
    nan_is_bad: bool = False
    best: float | None = None
    baseline: float | None = None
    bad_rounds: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ConfigError(f"early stopping mode: {self.mode!r} is not 'max' or 'min'")
        if self.reference not in REFERENCES:
            raise ConfigError(f"early stopping reference: {self.reference!r} is not one of {list(REFERENCES)}")

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
            nan_is_bad=config.faith_stop_on_nan,
        )

    def update(
        self, value: float, interval: tuple[float, float] | None = None, change: dict[str, float] | None = None
    ) -> str | None:
        """Take one round's value (its interval, and its paired change from the baseline round).

        Returns the reason to stop, or None. ``change`` is ``{"value", "ci_low", "ci_high"}``
        (faithcb.results.paired_changes); only the 'paired' reference reads it.
        """
        if value is None or not math.isfinite(value):
            if not (self.enabled and self.nan_is_bad):
                return None  # nothing scored this round: no evidence either way
            self.bad_rounds += 1
            return self._verdict(f"{self.metric} could not be measured")
        sign = 1.0 if self.mode == "max" else -1.0
        if self.baseline is None:
            self.baseline = value
        if self.best is None or sign * (value - self.best) > 0:
            self.best = value
        if not self.enabled:
            return None
        if self.reference == "paired":
            bad, what = self._paired_bad(sign, change)
        else:
            reference = self.best if self.reference == "best" else self.baseline
            worse_by = sign * (reference - value)
            low, high = interval if interval is not None else (math.nan, math.nan)
            outside_interval = not (low <= reference <= high)
            bad = worse_by > self.min_delta and (outside_interval or not self.require_ci)
            what = f"{self.metric} = {value:.3f} is worse than the {self.reference} {reference:.3f} by more than {self.min_delta}"
        self.bad_rounds = self.bad_rounds + 1 if bad else 0
        return self._verdict(what)

    def _paired_bad(self, sign: float, change: dict[str, float] | None) -> tuple[bool, str]:
        if change is None or not math.isfinite(change.get("value", math.nan)):
            return False, ""  # no problem scored in both rounds (the baseline round itself)
        worse_by = -sign * change["value"]
        # The paired interval excludes zero on the bad side: the change is a drop, not noise.
        excludes_zero = (sign * change["ci_high"] < 0) if sign > 0 else (sign * change["ci_low"] < 0)
        bad = worse_by > self.min_delta and (excludes_zero or not self.require_ci)
        what = (f"{self.metric} changed by {change['value']:+.3f} from the baseline round "
                f"[{change['ci_low']:+.3f}, {change['ci_high']:+.3f}] (paired)")
        return bad, what

    def _verdict(self, what: str) -> str | None:
        if self.bad_rounds >= self.patience:
            return f"{what} for {self.bad_rounds} round(s)"
        return None

    def state(self) -> dict[str, Any]:
        """What must survive a checkpoint."""
        return {"best": self.best, "baseline": self.baseline, "bad_rounds": self.bad_rounds}

    def load_state(self, state: dict[str, Any]) -> None:
        self.best = state.get("best")
        self.baseline = state.get("baseline")
        self.bad_rounds = int(state.get("bad_rounds") or 0)
