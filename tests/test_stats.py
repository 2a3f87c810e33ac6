"""faithcb.stats: Jeffreys/Wilson, the bounded-mean interval, t, groups, paired differences, kinds.

Expected values are computed here from closed forms (or taken from published tables), never from
the code under test. Coverage is checked two ways: exactly, by enumerating every binomial outcome,
and by a seeded simulation, as issue 10 asks; the coverage of issue 20's cases is in test_coverage.py.
"""

from __future__ import annotations

import math
import random
from statistics import NormalDist

import pytest

from faithcb.metrics import Metric
from faithcb.stats import (
    bounded_mean_interval,
    mean_interval,
    paired_difference,
    proportion_interval,
    summarize,
)

Z95 = NormalDist().inv_cdf(0.975)


def wilson_by_hand(s: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson (1927): (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    p = s / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return center - half, center + half


def binom_pmf(k: int, n: int, p: float) -> float:
    return math.comb(n, k) * p**k * (1 - p) ** (n - k)


def exact_coverage(interval, n: int, p: float) -> float:
    """P(interval(X, n) contains p) for X ~ Binomial(n, p), summed over every outcome."""
    total = 0.0
    for k in range(n + 1):
        low, high = interval(k, n)
        if low <= p <= high:
            total += binom_pmf(k, n, p)
    return total



def half_integer_beta_cdf(x: float, a: float, b: float) -> float:
    """I_x(a, b) for half-integer a, b from I_x(1/2, 1/2) = (2/π)·asin(√x) and the recurrences
    I_x(a+1, b) = I_x(a, b) - x^a(1-x)^b / (a·B(a, b)), I_x(a, b+1) = I_x(a, b) + x^a(1-x)^b / (b·B(a, b))."""

    def beta_fn(a, b):
        return math.exp(math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))

    value, ca, cb = 2 / math.pi * math.asin(math.sqrt(x)), 0.5, 0.5
    while ca < a:
        value -= x**ca * (1 - x) ** cb / (ca * beta_fn(ca, cb))
        ca += 1
    while cb < b:
        value += x**ca * (1 - x) ** cb / (cb * beta_fn(ca, cb))
        cb += 1
    return value


N = 16
Z = {0.90: 1.6448536269514722, 0.95: 1.959963984540054, 0.99: 2.5758293035489004}  # printed normal quantiles
T = {  # printed Student t quantiles t_{(1 + c) / 2, df}
    (0.90, 4): 2.131846786326649, (0.95, 3): 3.182446305284263, (0.99, 4): 4.604094871415897,
    (0.90, 9): 1.833112932653634, (0.95, 9): 2.262157162740992, (0.99, 9): 3.249835541592143,
}

# ----------------------------------------------------------------------------------------------
# Proportions: Jeffreys by default (Wilson on request)


@pytest.mark.parametrize("confidence", [0.90, 0.95, 0.99])
def test_jeffreys_is_equal_tailed_beta_with_boundary_rule(confidence):
    tail = (1 - confidence) / 2
    for s, n in [(1, 16), (3, 16), (8, 16), (15, 16), (3, 29)]:
        low, high = proportion_interval(s, n, confidence)
        a, b = s + 0.5, n - s + 0.5
        assert half_integer_beta_cdf(low, a, b) == pytest.approx(tail, abs=1e-10)
        assert half_integer_beta_cdf(high, a, b) == pytest.approx(1 - tail, abs=1e-10)
    low, high = proportion_interval(0, 16, confidence)
    assert low == 0.0 and half_integer_beta_cdf(high, 0.5, 16.5) == pytest.approx(1 - tail, abs=1e-10)
    assert proportion_interval(16, 16, confidence)[1] == 1.0
    with pytest.raises(ValueError):
        proportion_interval(3, 16, method="wald")
    with pytest.raises(ValueError):
        proportion_interval(17, 16)


@pytest.mark.parametrize("confidence", [0.90, 0.95, 0.99])
def test_wilson_on_request_hand_computed(confidence):
    z = Z[confidence]
    for s, n in [(3, 16), (8, 16), (1, 29)]:
        assert proportion_interval(s, n, confidence, method="wilson") == pytest.approx(wilson_by_hand(s, n, z), abs=1e-9)
    # Newcombe (1998, Stat. Med. 17:857), Table II, method 3 (Wilson score), 4 decimals
    for (s, n), published in {(81, 263): (0.2553, 0.3662), (0, 20): (0.0, 0.1611), (1, 29): (0.0061, 0.1718)}.items():
        assert proportion_interval(s, n, method="wilson") == pytest.approx(published, abs=5e-5)


# ----------------------------------------------------------------------------------------------
# Bounded means


def test_bounded_mean_interval_is_jeffreys_for_0_1_values_and_hand_computed_otherwise():
    for s in (1, 3, 8, 15):
        values = [1.0] * s + [0.0] * (N - s)
        assert bounded_mean_interval(values) == pytest.approx(proportion_interval(s, N), abs=1e-9)
    # Moments of the Dirichlet posterior written out: m = (sum + 1/2)/(n + 1),
    # v = ((sum x^2 + 1/2)/(n + 1) - m^2)/(n + 2); the interval is the Beta with them, by its CDF.
    xs = [0.2, 0.5, 0.9, 0.4, 0.0, 0.65]
    n = len(xs)
    m = (sum(xs) + 0.5) / (n + 1)
    v = ((sum(x * x for x in xs) + 0.5) / (n + 1) - m * m) / (n + 2)
    total = m * (1 - m) / v - 1
    a, b = m * total, (1 - m) * total
    low, high = bounded_mean_interval(xs)

    def beta_cdf(x, steps=20_000):  # Simpson's rule on the Beta density (a, b > 1 here: no singularity)
        f = lambda t: t ** (a - 1) * (1 - t) ** (b - 1)  # noqa: E731
        h = x / steps
        s = f(0.0) + f(x) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, steps))
        return s * h / 3 / math.exp(math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))

    assert a > 1 and b > 1
    assert beta_cdf(low) == pytest.approx(0.025, abs=1e-7) and beta_cdf(high) == pytest.approx(0.975, abs=1e-7)
    # rescaled to other bounds, and the bound stays possible when every value sits at it
    assert bounded_mean_interval([2 + 4 * x for x in xs], bounds=(2.0, 6.0)) == pytest.approx((2 + 4 * low, 2 + 4 * high))
    assert bounded_mean_interval([0.0] * N)[0] == 0.0 and bounded_mean_interval([1.0] * N)[1] == 1.0
    assert bounded_mean_interval([0.5, 1.5, 1.0]) == bounded_mean_interval([0.5, 1.0, 1.0])  # clipped, no crash


def test_mean_interval_hand_computed_from_printed_t():
    for confidence, xs in [(0.95, [0.2, 0.5, 0.9, 0.4]), (0.90, [0.2, 0.5, 0.9, 0.4, 0.7]),
                           (0.99, [0.2, 0.5, 0.9, 0.4, 0.7]),
                           (0.95, [0.3, 0.1, 0.7, 0.2, 0.9, 0.5, 0.4, 0.6, 0.8, 0.05])]:
        n = len(xs)
        mean = sum(xs) / n
        half = T[(confidence, n - 1)] * math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1) / n)
        assert mean_interval(xs, confidence) == pytest.approx((mean - half, mean + half), abs=1e-9)
        s = summarize(xs, kind="continuous", confidence=confidence)
        assert (s["ci_low"], s["ci_high"]) == pytest.approx((mean - half, mean + half), abs=1e-9)
    assert mean_interval([0.9, 1.0, 0.95, 1.0], bounds=(0.0, 1.0))[1] == 1.0  # clipped
    assert mean_interval([4.0, 4.0, 4.0]) == (4.0, 4.0)  # an unbounded metric has no scale to invent


def test_nan_below_two_units():
    for low, high in [proportion_interval(0, 1), proportion_interval(0, 0), mean_interval([0.3]),
                      bounded_mean_interval([0.3])]:
        assert math.isnan(low) and math.isnan(high)
    for kind in ("proportion", "bounded", "continuous", "count"):
        s = summarize([], kind=kind, bounds=(0.0, 1.0))
        assert s["n"] == 0 and all(math.isnan(s[k]) for k in ("value", "ci_low", "ci_high"))
        s = summarize([0.3, math.nan, None], kind=kind, bounds=(0.0, 1.0))
        assert s["n"] == 1 and s["value"] == 0.3 and math.isnan(s["ci_low"]) and math.isnan(s["ci_high"])
        d = paired_difference({"a": 0.1, "b": 0.2}, {"a": 0.5, "c": 0.9}, kind=kind, bounds=(0.0, 1.0))
        assert d["n"] == 1 and d["value"] == pytest.approx(0.4) and math.isnan(d["ci_low"])


# ----------------------------------------------------------------------------------------------
# The kind comes from the declaration, never from the values


def test_summarize_uses_the_declared_kind_whatever_the_values_look_like():
    zero_one = [1.0] * 3 + [0.0] * 13
    s = summarize(zero_one, kind="proportion")
    assert (s["ci_low"], s["ci_high"]) == proportion_interval(3, 16)
    s = summarize(zero_one, kind="bounded", bounds=(0.0, 1.0))
    assert (s["ci_low"], s["ci_high"]) == bounded_mean_interval(zero_one)
    s = summarize(zero_one, kind="continuous")
    assert (s["ci_low"], s["ci_high"]) == mean_interval(zero_one)
    s = summarize(zero_one, kind="count")  # 0/1-looking values of a count stay a count: t, from 0 up
    assert (s["ci_low"], s["ci_high"]) == mean_interval(zero_one, bounds=(0.0, math.inf))
    assert summarize([1.0, math.nan, 0.0, 0.0], kind="proportion")["n"] == 3  # NaN: unscored
    for bad in (lambda: summarize(zero_one),  # no kind: no guessing
                lambda: summarize(zero_one, kind="auto"),
                lambda: summarize([0.5, 2.0], kind="proportion"),
                lambda: summarize([0.5, 0.7], kind="bounded"),  # a bounded kind needs its bounds
                lambda: paired_difference({1: 0.1, 2: 0.3}, {1: 0.2, 2: 0.4}, kind="auto")):
        with pytest.raises((TypeError, ValueError)):
            bad()
    with pytest.raises(ValueError, match="kind"):
        Metric("x", "x", "x", kind="mean")
    with pytest.raises(ValueError, match="bounds"):
        Metric("x", "x", "x", kind="bounded")


def test_groups_collapse_identical_samples_and_weight_problems():
    rng = random.Random(7)
    per_problem = [float(rng.random() < 0.3) for _ in range(16)]
    ids = [i for i in range(16) for _ in range(5)]
    for kind in ("proportion", "bounded", "continuous"):
        one = summarize(per_problem, kind=kind, bounds=(0.0, 1.0))
        five = summarize([per_problem[i] for i in ids], groups=ids, kind=kind, bounds=(0.0, 1.0))
        assert five == one and five["n"] == 16  # five identical samples per problem add nothing
        naive = summarize([per_problem[i] for i in ids], kind=kind, bounds=(0.0, 1.0))
        assert naive["ci_high"] - naive["ci_low"] < 0.6 * (one["ci_high"] - one["ci_low"])
    s = summarize([1.0, 1.0, 1.0, 1.0, 0.0], groups=["A"] * 4 + ["B"], kind="proportion")
    assert s["value"] == 0.5 and s["n"] == 2
    vals, ids = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0], ["a", "a", "b", "b", "c", "c", "d", "d"]
    s = summarize(vals, groups=ids, kind="proportion")  # Jeffreys on the summed per-problem rates
    assert s["value"] == pytest.approx(0.625) and (s["ci_low"], s["ci_high"]) == proportion_interval(2.5, 4)
    s = summarize([1.0, math.nan, math.nan, 0.0], groups=["a", "a", "b", "c"], kind="proportion")
    assert s["n"] == 2 and s["value"] == 0.5
    with pytest.raises(ValueError):
        summarize([1.0, 0.0], groups=["a"], kind="proportion")


# ----------------------------------------------------------------------------------------------
# Paired differences


def test_paired_detects_a_known_shift_that_unpaired_intervals_miss():
    rng = random.Random(5)
    keys = [f"p{i}" for i in range(N)]
    before = {k: rng.uniform(0.0, 0.7) for k in keys}  # problems differ a lot
    after = {k: before[k] + 0.2 + rng.gauss(0, 0.03) for k in keys}  # each improves by 0.2 +- noise
    for kind, bounds in (("bounded", (0.0, 1.0)), ("continuous", None)):
        d = paired_difference(before, after, kind=kind, bounds=bounds)
        assert d["n"] == N and d["ci_low"] <= 0.2 <= d["ci_high"] and d["ci_low"] > 0, kind
        b = summarize(list(before.values()), kind=kind, bounds=bounds)
        a = summarize(list(after.values()), kind=kind, bounds=bounds)
        assert b["ci_high"] > a["ci_low"]  # the two rounds' own intervals overlap


def test_paired_uses_only_keys_finite_in_both():
    before = {"a": 0.2, "b": 0.4, "c": math.nan, "d": 0.1, "e": 0.3}
    after = {"a": 0.5, "b": 0.4, "c": 0.9, "d": 0.6, "x": 1.0}
    d = paired_difference(before, after, kind="bounded", bounds=(0.0, 1.0))
    assert d["n"] == 3 and d["value"] == pytest.approx((0.3 + 0.0 + 0.5) / 3)


def test_paired_interval_is_mover_of_gains_and_losses_by_hand():
    # 3 of 16 problems gained 1 (0/1 metric), none lost: losses are all 0, so their interval is
    # [0, Jeffreys upper of 0/16]; the correlation is 0 (one side constant) and MOVER is
    # square-and-add of the distances.
    d = paired_difference({i: 0.0 for i in range(16)}, {i: float(i < 3) for i in range(16)}, kind="proportion")
    g_low, g_high = proportion_interval(3, 16)
    l_high = proportion_interval(0, 16)[1]
    p = 3 / 16
    assert d["value"] == pytest.approx(p) and d["n"] == 16
    assert d["ci_low"] == pytest.approx(p - math.hypot(p - g_low, l_high), abs=1e-9)
    assert d["ci_high"] == pytest.approx(p + (g_high - p), abs=1e-9)


@pytest.mark.parametrize("kind", ["proportion", "bounded", "continuous", "count"])
def test_paired_never_zero_width_and_no_change_allows_what_16_problems_cannot_rule_out(kind):
    values = {i: (float(i % 2) if kind == "proportion" else 0.1 * (i % 5)) for i in range(16)}
    if kind == "count":
        values = {i: float(3 + i % 4) for i in range(16)}
    d = paired_difference(values, dict(values), kind=kind, bounds=(0.0, 1.0) if kind in ("proportion", "bounded") else None)
    scale = {"proportion": 1.0, "bounded": 1.0, "continuous": 0.4, "count": 3.0}[kind]  # the largest change
    upper_share = proportion_interval(0, 16)[1]  # Jeffreys: up to 14% of 16 problems could have changed
    assert d["value"] == 0.0 and d["n"] == 16
    assert d["ci_low"] == pytest.approx(-scale * upper_share, rel=1e-6)
    assert d["ci_high"] == pytest.approx(scale * upper_share, rel=1e-6)
    for n in (2, 3):  # from two problems on
        few = {i: values[i] for i in range(n)}
        d = paired_difference(few, dict(few), kind=kind, bounds=(0.0, 1.0))
        assert d["ci_high"] - d["ci_low"] > 0, (kind, n)


def test_paired_refuses_impossible_inputs():
    for confidence in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="confidence"):
            paired_difference({1: 0.1}, {1: 0.2}, kind="bounded", bounds=(0.0, 1.0), confidence=confidence)
        with pytest.raises(ValueError, match="confidence"):
            summarize([0.1, 0.2], kind="bounded", bounds=(0.0, 1.0), confidence=confidence)
    with pytest.raises(ValueError):
        paired_difference({1: 0.1, 2: 0.3}, {1: 0.2, 2: 0.4}, kind="ordinal")


def test_a_count_interval_never_goes_below_zero():
    # 2 and 3 steps: the t interval's lower end (-3.85) would claim a negative step count.
    s = summarize([2.0, 3.0], kind="count")
    assert s["ci_low"] == 0.0 and s["ci_high"] > 3.0
    assert summarize([2.0, 3.0], kind="continuous")["ci_low"] < 0  # an unbounded metric may go below
