"""Aggregation helpers: means with percentile-bootstrap 95% intervals over problems."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable


def bootstrap_ci(
    values: Iterable[float], *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of the finite ``values`` and a percentile-bootstrap interval over them.

    NaN entries (unscored problems) are dropped first. No values gives NaNs; one value gives a
    zero-width interval. The resampling RNG is private and seeded, so results are reproducible
    and the global RNG (which training depends on) is never touched.
    """
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return math.nan, math.nan, math.nan
    mean = sum(xs) / len(xs)
    if len(xs) == 1:
        return mean, mean, mean
    rng = random.Random(seed)
    n = len(xs)
    means = sorted(sum(xs[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_resamples))
    tail = (1.0 - confidence) / 2.0
    low = means[int(math.floor(tail * (n_resamples - 1)))]
    high = means[int(math.ceil((1.0 - tail) * (n_resamples - 1)))]
    return mean, low, high


def summarize(values: Iterable[float], **kwargs) -> dict[str, float]:
    """``{"value", "ci_low", "ci_high", "n"}`` for a list of per-problem values (NaNs excluded)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    mean, low, high = bootstrap_ci(xs, **kwargs)
    return {"value": mean, "ci_low": low, "ci_high": high, "n": len(xs)}
