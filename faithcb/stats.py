"""Interval estimates for per-problem metrics, one method per kind of metric, chosen by its declaration.

The kind is what the metric *is* (``faithcb.metrics.Metric.kind``), never guessed from the values:
guessing (the old ``kind="auto"``: Wilson when every value happened to be 0/1, else t) switched
method with the data, so 16 x 0.0 gave [0, 0.194] and 15 x 0.0 + one 0.05 gave [0, 0.0098].

- ``"proportion"`` (a 0/1 outcome per chain, or a per-problem rate when samples are averaged):
  Jeffreys, the equal-tailed Beta(s + 1/2, n - s + 1/2) interval with Brown, Cai & DasGupta's
  boundary rule. Minimum exact coverage over every p at n = 16 is 0.896 (Wilson: 0.836, near
  p = 0.01 and 0.99, where truncated/unparsed rates live); tests/test_coverage.py enumerates it.
- ``"bounded"`` (a number per chain on a known range: AOC, invariances, shares):
  ``bounded_mean_interval``, Jeffreys generalised to a bounded mean (see there). It uses the bound
  itself, so it stays honest when every problem sits exactly at the bound (Lanham's low-coupling
  regime: all 16 AOCs are 0 in 44% of rounds at q = 0.95), where t and every resampling interval
  are a point; and it is continuous in the data.
- ``"continuous"`` (unbounded: information gain in nats) and ``"count"`` (steps, tokens):
  Student t over problems (``mean_interval``).
- paired changes (``paired_difference``): the change split into its gains and losses, each a
  bounded mean, combined by Zou & Donner's MOVER; never zero-width from two problems on, and when
  no problem changed it still allows the few changes 16 problems cannot rule out.

What stays faithcb's own: units are problems (``groups``: samples averaged within a problem first,
so repeated samples never narrow an interval), pairing by problem key, clipping to the bounds, NaN
rules (non-finite values are unscored and dropped; fewer than two units give NaN bounds, never a
zero-width interval). The distributions themselves are ``scipy.stats``'.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence

from scipy import stats as _dist

from faithcb.errors import ConfigError

__all__ = [
    "KINDS",
    "bounded_mean_interval",
    "mean_interval",
    "paired_difference",
    "proportion_interval",
    "summarize",
]

KINDS = ("proportion", "bounded", "continuous", "count")
_NAN = math.nan


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence}")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"unknown kind {kind!r}; use one of {list(KINDS)}")


# --------------------------------------------------------------------------------------------
# One sample


def proportion_interval(
    successes: float, n: int, confidence: float = 0.95, method: str = "jeffreys"
) -> tuple[float, float]:
    """Two-sided interval ``(low, high)`` for a binomial proportion: ``successes`` out of ``n``.

    ``method="jeffreys"`` (default): equal-tailed Beta(s + 1/2, n - s + 1/2) quantiles, with the
    lower end 0 when s = 0 and the upper end 1 when s = n (Brown, Cai & DasGupta 2001, Stat. Sci.).
    Exact coverage of a nominal 95% interval at n = 16, every p: at least 0.896, mean 0.952.
    ``method="wilson"``: the Wilson score interval (same mean coverage, but dips to 0.836 for p
    near 0.01 or 0.99 at n = 16: a single success puts the lower end above such a p).

    ``successes`` may be fractional (the sum of per-problem success rates when samples are
    averaged): a rate in [0, 1] has variance at most p(1 - p), the binomial variance both assume,
    so the interval is then conservative. ``n < 2`` gives ``(nan, nan)``.
    """
    _check_confidence(confidence)
    if not n >= 2:
        return _NAN, _NAN
    if not 0.0 <= successes <= n:
        raise ConfigError(f"successes must lie in [0, n], got {successes} of {n}")
    tail = (1.0 - confidence) / 2.0
    if method == "jeffreys":
        a, b = successes + 0.5, n - successes + 0.5
        low = 0.0 if successes == 0 else float(_dist.beta.ppf(tail, a, b))
        high = 1.0 if successes == n else float(_dist.beta.ppf(1.0 - tail, a, b))
        return low, high
    if method == "wilson":
        z = float(_dist.norm.ppf(1.0 - tail))
        p, z2n = successes / n, z * z / n
        center = (p + z2n / 2.0) / (1.0 + z2n)
        half = z / (1.0 + z2n) * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n))
        low = 0.0 if successes == 0 else max(0.0, center - half)
        high = 1.0 if successes == n else min(1.0, center + half)
        return low, high
    raise ConfigError(f"unknown proportion method {method!r}; use 'jeffreys' or 'wilson'")


def bounded_mean_interval(
    values: Sequence[float], confidence: float = 0.95, bounds: tuple[float, float] = (0.0, 1.0)
) -> tuple[float, float]:
    """Interval ``(low, high)`` for the mean of independent values known to lie in ``bounds``.

    Jeffreys generalised from 0/1 to bounded values: rescale to [0, 1], add half an observation
    at each bound (Jeffreys's Beta(1/2, 1/2) prior, as pseudo-data), and take the Dirichlet
    (Bayesian-bootstrap) posterior of the mean over the n observed values and the two bounds. Its
    mean and variance are closed-form:

        m = (sum x + 1/2) / (n + 1),   v = ((sum x^2 + 1/2) / (n + 1) - m^2) / (n + 2)

    and the interval is the equal-tailed ``confidence`` interval of the Beta with that mean and
    variance. For 0/1 values this *is* the Jeffreys interval (the Beta is Beta(s + 1/2, n - s + 1/2)
    exactly). For spread-out values its width is about Student t's (uniform values at n = 16:
    0.27 vs 0.31, coverage 0.948). At the bound it keeps the width the bound cannot rule out:
    16 x 0.0 gives [0, 0.143] (t: a point, and every bootstrap too), and moving one value to 0.05
    moves the interval by a hair (it is continuous in the data).

    Why this one (``python bench/bench_coverage.py``; tests/test_coverage.py keeps it): on Lanham's
    low-coupling regime, a nominal 95% AOC interval at q = 0.8/0.9/0.95 and n = 16/32 covers
    0.96-0.97 (t clipped to the bounds, used before: 0.88-0.91, 8-12% of intervals entirely below
    the truth), with mean widths 0.24/0.20/0.17 at n = 16; the Wilson-type interval on the mean
    (valid since Var <= mu(1 - mu)) also covers but is wider there (0.30/0.25/0.23) and far wider
    for values spread in the middle (0.44 vs 0.27 for uniform values). Empirical-Bernstein and
    betting intervals were not measured: they hold for every n and distribution, which at n = 16
    costs width (the empirical-Bernstein term alone is 7 ln(2/0.05) / (3 (n - 1)) = 0.57).
    ``n < 2`` gives ``(nan, nan)``.
    """
    _check_confidence(confidence)
    lo, hi = bounds
    if not hi > lo:
        raise ConfigError(f"bounds must be (low, high) with low < high, got {bounds}")
    xs = [(float(v) - lo) / (hi - lo) for v in values]
    n = len(xs)
    if n < 2:
        return _NAN, _NAN
    # A value outside the declared bounds is the metric's bug (aoc_normalized could exceed 1); the
    # round should not die of it, so the interval is computed on the values clipped to the bounds.
    xs = [min(max(x, 0.0), 1.0) for x in xs]
    m = (math.fsum(xs) + 0.5) / (n + 1)
    second = (math.fsum(x * x for x in xs) + 0.5) / (n + 1)
    var = max(second - m * m, 0.0) / (n + 2)
    # The Beta with mean m and variance var has a + b = m(1 - m) / var - 1; var <= m(1 - m)/(n + 2)
    # because x^2 <= x on [0, 1], so a + b >= n + 1 and the Beta always exists.
    total = m * (1.0 - m) / var - 1.0 if var > 0 else math.inf
    tail = (1.0 - confidence) / 2.0
    if math.isinf(total):  # cannot happen with the pseudo-observations; kept for safety
        low = high = m
    else:
        low, high = (float(q) for q in _dist.beta.ppf([tail, 1.0 - tail], m * total, (1.0 - m) * total))
    # Jeffreys's boundary rule: every value at a bound leaves that bound possible (a mean of exactly
    # 0 is a real case: a model that never needs its chain), as the proportion interval does.
    if all(x == 0.0 for x in xs):
        low = 0.0
    if all(x == 1.0 for x in xs):
        high = 1.0
    return lo + low * (hi - lo), lo + high * (hi - lo)


def mean_interval(
    values: Sequence[float], confidence: float = 0.95, bounds: tuple[float, float] | None = None
) -> tuple[float, float]:
    """Student-t interval ``(low, high)`` for the mean of independent ``values``.

    mean +- t_{(1+confidence)/2, n-1} * s / sqrt(n), with s the sample standard deviation. For
    metrics with no bound (information gain in nats) and counts. All-equal values give a
    zero-width interval: an unbounded metric has no scale to invent a spread from (a bounded one
    goes to ``bounded_mean_interval``). ``bounds=(lo, hi)`` clips the interval to that range.
    ``n < 2`` gives ``(nan, nan)``.
    """
    _check_confidence(confidence)
    xs = [float(v) for v in values]
    n = len(xs)
    if n < 2:
        return _NAN, _NAN
    mean = math.fsum(xs) / n
    var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1)
    half = float(_dist.t.ppf(0.5 + confidence / 2.0, n - 1)) * math.sqrt(var / n)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return low, high


def _finite(v: object) -> bool:
    if v is None:
        return False
    try:
        return math.isfinite(float(v))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _unit_means(values: Sequence[float], groups: Sequence[Hashable] | None) -> list[float]:
    """One mean per independent unit (problem), after dropping non-finite (unscored) values."""
    vals = list(values)
    if groups is None:
        return [float(v) for v in vals if _finite(v)]
    grp = list(groups)
    if len(grp) != len(vals):
        raise ConfigError(f"groups has {len(grp)} entries for {len(vals)} values")
    sums: dict[Hashable, list[float]] = {}
    for v, g in zip(vals, grp):
        if _finite(v):
            sums.setdefault(g, []).append(float(v))
    return [math.fsum(xs) / len(xs) for xs in sums.values()]


def _bounds_for(kind: str, bounds: tuple[float, float] | None) -> tuple[float, float] | None:
    if kind == "proportion":
        return (0.0, 1.0)
    if kind == "bounded" and bounds is None:
        raise ConfigError("kind='bounded' needs the metric's bounds")
    return bounds


def summarize(
    values: Iterable[float],
    *,
    kind: str,
    groups: Iterable[Hashable] | None = None,
    confidence: float = 0.95,
    bounds: tuple[float, float] | None = None,
) -> dict[str, float]:
    """``{"value", "ci_low", "ci_high", "n"}`` for per-problem (or per-sample) metric values.

    Non-finite values (NaN: unscored) are dropped. ``groups``, when given, holds one unit id per
    value (the problem id when a problem has several samples): values are averaged within each
    unit first, ``value`` is the mean over units and ``n`` the number of units, so the interval
    is over problems and five identical samples of a problem count once.

    ``kind`` (one of ``KINDS``, from the metric's declaration) picks the interval: proportions
    ``proportion_interval`` (Jeffreys) on the sum of per-unit rates; bounded metrics
    ``bounded_mean_interval`` on ``bounds``; continuous metrics and counts ``mean_interval``
    (Student t, clipped to ``bounds`` when given). Fewer than 2 units: ``ci_low``/``ci_high`` are
    NaN (``value`` is the single unit's mean, or NaN with no units).
    """
    _check_confidence(confidence)
    _check_kind(kind)
    units = _unit_means(list(values), None if groups is None else list(groups))
    n = len(units)
    value = math.fsum(units) / n if n else _NAN
    if kind == "proportion" and any(not 0.0 <= x <= 1.0 for x in units):
        raise ConfigError("kind='proportion' needs values in [0, 1]")
    if n < 2:
        low, high = _NAN, _NAN
    elif kind == "proportion":
        low, high = proportion_interval(min(math.fsum(units), float(n)), n, confidence)
    elif kind == "bounded":
        low, high = bounded_mean_interval(units, confidence, _bounds_for(kind, bounds))  # type: ignore[arg-type]
    else:
        # A count is never negative: its t interval stops at 0 (bounds, when given, still apply).
        low, high = mean_interval(units, confidence, bounds if kind != "count" else _count_bounds(bounds))
    return {"value": value, "ci_low": low, "ci_high": high, "n": n}


def _count_bounds(bounds: tuple[float, float] | None) -> tuple[float, float]:
    return (max(0.0, bounds[0]), bounds[1]) if bounds is not None else (0.0, math.inf)


# --------------------------------------------------------------------------------------------
# Paired changes


def _mover(gains: Sequence[float], losses: Sequence[float], confidence: float) -> tuple[float, float]:
    """MOVER interval (Zou & Donner 2008) for mean(gains) - mean(losses), both on [0, 1].

    Each side's own interval is ``bounded_mean_interval``; their distances from the means are
    combined as a variance would be, with the sample correlation of the two sides (<= 0: a problem
    either gained or lost, so the difference varies more than the two sides do separately).
    """
    n = len(gains)
    g, ell = math.fsum(gains) / n, math.fsum(losses) / n
    g_low, g_high = bounded_mean_interval(gains, confidence)
    l_low, l_high = bounded_mean_interval(losses, confidence)
    sg = math.sqrt(math.fsum((x - g) ** 2 for x in gains))
    sl = math.sqrt(math.fsum((x - ell) ** 2 for x in losses))
    r = math.fsum((x - g) * (y - ell) for x, y in zip(gains, losses)) / (sg * sl) if sg > 0 and sl > 0 else 0.0
    below = (g - g_low) ** 2 + (l_high - ell) ** 2 - 2.0 * r * (g - g_low) * (l_high - ell)
    above = (g_high - g) ** 2 + (ell - l_low) ** 2 - 2.0 * r * (g_high - g) * (ell - l_low)
    diff = g - ell
    return max(-1.0, diff - math.sqrt(max(below, 0.0))), min(1.0, diff + math.sqrt(max(above, 0.0)))


def _change_range(kind: str, bounds: tuple[float, float] | None, xs: Sequence[float], ys: Sequence[float]) -> float:
    """The largest change one problem can make: the width of the bounds, or, for an unbounded
    metric, the range the values of both rounds span (every observed change fits inside it); a
    count changes by at least 1."""
    if kind == "proportion":
        return 1.0
    if kind == "bounded":
        lo, hi = _bounds_for(kind, bounds)  # type: ignore[misc]
        return hi - lo
    everything = [*xs, *ys]
    spread = max(everything) - min(everything)
    return max(spread, 1.0) if kind == "count" else spread


def paired_difference(
    before: Mapping[Hashable, float],
    after: Mapping[Hashable, float],
    *,
    kind: str,
    confidence: float = 0.95,
    bounds: tuple[float, float] | None = None,
) -> dict[str, float]:
    """Change ``after - before`` over the units (problems) scored in both, with a paired interval.

    ``before``/``after`` map a problem id to its per-problem value (samples averaged first). Only
    keys present and finite in both count; ``value`` is the mean of ``after[k] - before[k]`` over
    them and ``n`` their number (it can be far below either round's own n). Pairing removes the
    between-problem variation that two unpaired intervals both carry.

    The interval, for every kind: each problem's change d is split into its gain max(d, 0) and its
    loss max(-d, 0), both between 0 and R (the largest change one problem can make: the bounds'
    width, or the values' range for an unbounded metric, at least 1 for a count); each side gets
    ``bounded_mean_interval`` on [0, R] and the two are combined by MOVER (``_mover``). Why: a t
    interval on the differences is [0, 0] whenever no problem changed (44% of rounds at n = 16
    when 5% of problems change) and covers 0.56 of the time there; here no change still allows
    changes of about R x (the Jeffreys upper bound of the share of changed problems), and the
    interval is never zero-width from two problems on (unless an unbounded metric's values are
    all equal: it has no scale). Coverage in tests/test_coverage.py. ``n < 2``: NaN bounds.
    """
    _check_confidence(confidence)
    _check_kind(kind)
    keys = [k for k in after if k in before and _finite(before[k]) and _finite(after[k])]
    xs = [float(before[k]) for k in keys]
    ys = [float(after[k]) for k in keys]
    n = len(keys)
    diffs = [y - x for x, y in zip(xs, ys)]
    value = math.fsum(diffs) / n if n else _NAN
    if n < 2:
        return {"value": value, "ci_low": _NAN, "ci_high": _NAN, "n": n}
    scale = _change_range(kind, bounds, xs, ys)
    if scale <= 0.0:  # an unbounded metric with one value everywhere: nothing to scale a change by
        return {"value": value, "ci_low": value, "ci_high": value, "n": n}
    gains = [min(max(d, 0.0) / scale, 1.0) for d in diffs]
    losses = [min(max(-d, 0.0) / scale, 1.0) for d in diffs]
    low, high = _mover(gains, losses, confidence)
    return {"value": value, "ci_low": low * scale, "ci_high": high * scale, "n": n}
