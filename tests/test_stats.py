"""faithcb.stats: special functions, Wilson/Jeffreys/t intervals, groups, paired differences, coverage.

Expected values are computed here from closed forms (or taken from published tables), never from
the code under test. Coverage is checked two ways: exactly, by enumerating every binomial outcome,
and by a seeded simulation, as issue 10 asks.
"""

from __future__ import annotations

import math
import random
from statistics import NormalDist

import pytest

from faithcb.stats import (
    beta_quantile,
    bootstrap_ci,
    mean_interval,
    paired_difference,
    proportion_interval,
    regularized_beta,
    summarize,
    t_quantile,
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


# ----------------------------------------------------------------------------------------------
# Special functions


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


def test_regularized_beta_closed_forms():
    for x in [1e-6, 0.01, 0.2, 0.5, 0.73, 0.99]:
        assert regularized_beta(x, 1, 1) == pytest.approx(x, abs=1e-14)
        assert regularized_beta(x, 3.7, 1) == pytest.approx(x**3.7, rel=1e-12, abs=1e-15)
        assert regularized_beta(x, 1, 2.5) == pytest.approx(1 - (1 - x) ** 2.5, rel=1e-12, abs=1e-15)
        # integer a, b: the binomial tail P(Bin(a+b-1, x) >= a)
        for a, b in [(2, 3), (5, 5), (12, 4)]:
            m = a + b - 1
            tail = sum(math.comb(m, j) * x**j * (1 - x) ** (m - j) for j in range(a, m + 1))
            assert regularized_beta(x, a, b) == pytest.approx(tail, rel=1e-11, abs=1e-15)
        # half-integer parameters: exactly the Jeffreys (s + 1/2, n - s + 1/2) and t (df/2, 1/2) cases
        for a, b in [(0.5, 0.5), (1.5, 15.5), (8.5, 8.5), (7.5, 0.5), (0.5, 16.5)]:
            assert regularized_beta(x, a, b) == pytest.approx(half_integer_beta_cdf(x, a, b), abs=1e-12)
        assert regularized_beta(x, 2.5, 7) == pytest.approx(1 - regularized_beta(1 - x, 7, 2.5), abs=1e-14)
    assert regularized_beta(0.0, 2, 3) == 0.0 and regularized_beta(1.0, 2, 3) == 1.0


def test_beta_quantile_inverts_the_cdf():
    for q in [0.0005, 0.025, 0.3, 0.5, 0.975, 0.9995]:
        assert beta_quantile(q, 4.0, 1.0) == pytest.approx(q**0.25, rel=1e-12)  # I_x(a, 1) = x^a
        for a, b in [(0.5, 16.5), (1.5, 15.5), (8.5, 8.5), (16.5, 0.5), (7.5, 0.5), (300.5, 2.5)]:
            x = beta_quantile(q, a, b)
            assert 0 < x < 1
            assert half_integer_beta_cdf(x, a, b) == pytest.approx(q, rel=1e-9)
    assert beta_quantile(0.0, 2, 2) == 0.0 and beta_quantile(1.0, 2, 2) == 1.0


def test_t_quantile_closed_forms_and_tables():
    for p in [0.0005, 0.025, 0.1, 0.3, 0.6, 0.9, 0.975, 0.995, 0.9995]:
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)  # Cauchy
        assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)
        alpha = 4 * p * (1 - p)  # df = 4 (Hill 1970)
        q = math.cos(math.acos(math.sqrt(alpha)) / 3) / math.sqrt(alpha)
        assert t_quantile(p, 4) == pytest.approx(math.copysign(2 * math.sqrt(q - 1), p - 0.5), rel=1e-9)
        assert t_quantile(p, 7) == pytest.approx(-t_quantile(1 - p, 7), rel=1e-12)
    # printed tables (6 decimals)
    table_975 = {3: 3.182446, 5: 2.570582, 10: 2.228139, 15: 2.131450, 30: 2.042272, 100: 1.983972}
    table_995 = {3: 5.840909, 5: 4.032143, 10: 3.169273, 15: 2.946713, 30: 2.749996, 100: 2.625891}
    for df, t in table_975.items():
        assert t_quantile(0.975, df) == pytest.approx(t, abs=6e-7)
        assert t_quantile(0.995, df) == pytest.approx(table_995[df], abs=6e-7)
    # large df: tends to the normal quantile, and the Cornish-Fisher branch above 1e6 joins smoothly
    assert t_quantile(0.975, 1e12) == pytest.approx(Z95, abs=1e-11)
    assert t_quantile(0.975, 0.999e6) == pytest.approx(t_quantile(0.975, 1.001e6), abs=1e-8)
    assert t_quantile(0.5, 3) == 0.0


# ----------------------------------------------------------------------------------------------
# Proportions


@pytest.mark.parametrize("s,n", [(0, 8), (1, 16), (8, 16)])
def test_wilson_hand_computed(s, n):
    low, high = proportion_interval(s, n)
    exp_low, exp_high = wilson_by_hand(s, n)
    assert low == pytest.approx(exp_low, abs=1e-9) and high == pytest.approx(exp_high, abs=1e-9)
    assert high - low > 0.2  # never the zero-width [0, 0] the bootstrap gave for 0/8


def test_wilson_closed_form_ends_and_published_values():
    z2 = Z95 * Z95
    assert proportion_interval(0, 8) == (0.0, pytest.approx(z2 / (8 + z2), abs=1e-12))  # 0/8 -> [0, 0.3244]
    assert proportion_interval(8, 8) == (pytest.approx(8 / (8 + z2), abs=1e-12), 1.0)
    assert proportion_interval(8, 16) == pytest.approx((0.2800, 0.7200), abs=5e-5)
    # Newcombe (1998, Stat. Med. 17:857), Table II, method 3 (Wilson score), 4 decimals
    for (s, n), published in {
        (81, 263): (0.2553, 0.3662),
        (15, 148): (0.0624, 0.1605),
        (0, 20): (0.0, 0.1611),
        (1, 29): (0.0061, 0.1718),
        (29, 29): (0.8830, 1.0),
    }.items():
        assert proportion_interval(s, n) == pytest.approx(published, abs=5e-5)
    # a lower confidence gives a narrower interval
    assert proportion_interval(3, 16, 0.8)[1] < proportion_interval(3, 16, 0.95)[1]


def test_jeffreys_is_equal_tailed_beta_with_boundary_rule():
    for s, n in [(1, 16), (8, 16), (15, 16), (3, 29)]:
        low, high = proportion_interval(s, n, method="jeffreys")
        a, b = s + 0.5, n - s + 0.5
        assert half_integer_beta_cdf(low, a, b) == pytest.approx(0.025, abs=1e-10)
        assert half_integer_beta_cdf(high, a, b) == pytest.approx(0.975, abs=1e-10)
    low, high = proportion_interval(0, 16, method="jeffreys")
    assert low == 0.0 and half_integer_beta_cdf(high, 0.5, 16.5) == pytest.approx(0.975, abs=1e-10)
    assert proportion_interval(16, 16, method="jeffreys")[1] == 1.0
    # close to Wilson in the middle
    assert proportion_interval(8, 16, method="jeffreys") == pytest.approx(
        proportion_interval(8, 16), abs=0.01
    )
    with pytest.raises(ValueError):
        proportion_interval(3, 16, method="wald")
    with pytest.raises(ValueError):
        proportion_interval(17, 16)


# ----------------------------------------------------------------------------------------------
# Means


def test_mean_interval_hand_computed():
    xs = [0.2, 0.5, 0.9, 0.4]
    mean = sum(xs) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / 3)
    half = 3.182446305284263 * sd / 2  # t_{0.975, 3} (table), sqrt(4) = 2
    assert mean_interval(xs) == pytest.approx((mean - half, mean + half), abs=1e-9)
    assert mean_interval(xs, bounds=(0.0, 1.0)) == pytest.approx(
        (max(0.0, mean - half), min(1.0, mean + half))
    )
    # all-equal continuous values: zero width, by design (documented in mean_interval)
    assert mean_interval([4.0, 4.0, 4.0]) == (4.0, 4.0)


def test_nan_below_two_units():
    for low, high in [
        proportion_interval(0, 1),
        proportion_interval(1, 1),
        proportion_interval(0, 0),
        mean_interval([]),
        mean_interval([0.3]),
    ]:
        assert math.isnan(low) and math.isnan(high)
    s = summarize([])
    assert s["n"] == 0 and all(math.isnan(s[k]) for k in ("value", "ci_low", "ci_high"))
    s = summarize([0.3, math.nan, None])
    assert s["n"] == 1 and s["value"] == 0.3 and math.isnan(s["ci_low"]) and math.isnan(s["ci_high"])
    s = summarize([1.0, 1.0, 1.0], groups=["p1", "p1", "p1"])  # three samples, one problem
    assert s["n"] == 1 and s["value"] == 1.0 and math.isnan(s["ci_low"])
    d = paired_difference({"a": 0.1, "b": 0.2}, {"a": 0.5, "c": 0.9})  # one shared key
    assert d["n"] == 1 and d["value"] == pytest.approx(0.4) and math.isnan(d["ci_low"])


# ----------------------------------------------------------------------------------------------
# summarize


def test_summarize_picks_wilson_for_0_1_values_and_t_otherwise():
    s = summarize([0.0] * 8)
    assert s == {"value": 0.0, "ci_low": 0.0, "ci_high": pytest.approx(Z95**2 / (8 + Z95**2)), "n": 8}
    s = summarize([1.0] * 3 + [0.0] * 13)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx(wilson_by_hand(3, 16), abs=1e-12)
    s = summarize([1.0] * 3 + [0.0] * 13, method="jeffreys")
    assert (s["ci_low"], s["ci_high"]) == proportion_interval(3, 16, method="jeffreys")
    xs = [0.25, 0.5, 0.75, 1.0, 0.0]
    assert (summarize(xs)["ci_low"], summarize(xs)["ci_high"]) == mean_interval(xs)
    s = summarize([1.0] * 3 + [0.0] * 13, kind="continuous")
    assert (s["ci_low"], s["ci_high"]) == mean_interval([1.0] * 3 + [0.0] * 13)
    # NaNs (unscored problems) are dropped
    assert summarize([1.0, math.nan, 0.0, 0.0])["n"] == 3
    with pytest.raises(ValueError):
        summarize([0.5, 2.0], kind="proportion")
    with pytest.raises(ValueError):
        summarize([0.5, 0.7], method="jeffreys")


def test_summarize_backward_compatible_keys_and_bootstrap_option():
    xs = [0.1, 0.4, 0.35, 0.8, 0.6]
    s = summarize(xs, n_resamples=200)  # existing callers pass n_resamples
    assert set(s) == {"value", "ci_low", "ci_high", "n"} and s["n"] == 5
    assert (s["ci_low"], s["ci_high"]) == mean_interval(xs)  # ... which the t interval ignores
    s = summarize(xs, method="bootstrap", n_resamples=200, seed=3)
    assert (s["value"], s["ci_low"], s["ci_high"]) == bootstrap_ci(xs, n_resamples=200, seed=3)
    assert bootstrap_ci([0.5]) == (0.5, 0.5, 0.5)  # legacy helper unchanged


def test_groups_collapse_identical_samples():
    rng = random.Random(7)
    per_problem = [float(rng.random() < 0.3) for _ in range(16)]
    one = summarize(per_problem)
    ids = [i for i in range(16) for _ in range(5)]
    five = summarize([per_problem[i] for i in ids], groups=ids)
    assert five == one  # exactly: five identical samples per problem add no information
    assert five["n"] == 16
    # without groups the 80 samples would pretend to be 80 problems: narrower
    naive = summarize([per_problem[i] for i in ids])
    assert naive["ci_high"] - naive["ci_low"] < 0.6 * (one["ci_high"] - one["ci_low"])
    # continuous metric, samples in any order
    cont = [rng.random() for _ in range(10)]
    order = [i for _ in range(3) for i in range(10)]
    assert summarize([cont[i] for i in order], groups=order) == summarize(cont)


def test_groups_weight_problems_not_samples():
    # problem A: 4 samples all right; problem B: 1 sample wrong -> the mean over problems is 0.5
    s = summarize([1.0, 1.0, 1.0, 1.0, 0.0], groups=["A", "A", "A", "A", "B"])
    assert s["value"] == 0.5 and s["n"] == 2
    # disagreeing samples: Wilson on the mean per-problem rate with n = problems
    vals = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    ids = ["a", "a", "b", "b", "c", "c", "d", "d"]
    s = summarize(vals, groups=ids)
    assert s["value"] == pytest.approx(0.625) and s["n"] == 4
    assert (s["ci_low"], s["ci_high"]) == proportion_interval(2.5, 4)
    # NaN samples drop out; a problem with only NaN samples drops out
    s = summarize([1.0, math.nan, math.nan, 0.0], groups=["a", "a", "b", "c"])
    assert s["n"] == 2 and s["value"] == 0.5
    with pytest.raises(ValueError):
        summarize([1.0, 0.0], groups=["a"])


# ----------------------------------------------------------------------------------------------
# Coverage (issue 10: p = 0.1 and p = 0.5 at n = 16, >= 0.92)

N = 16
REPS = 4000  # continuous-metric simulations: true coverage 0.95, so 0.93 is > 4 standard errors away
PROPORTION_REPS = 40_000  # at p = 0.5, n = 16 Wilson's exact coverage is 0.9232: 0.92 is 2.4 SE away


def simulated_coverage(p: float, seed: int) -> dict[str, float]:
    """Share of PROPORTION_REPS seeded rounds of N Bernoulli(p) problems whose interval holds p."""
    rng = random.Random(seed)
    hits = {"wilson": 0, "jeffreys": 0}
    for _ in range(PROPORTION_REPS):
        values = [float(rng.random() < p) for _ in range(N)]
        for method in hits:
            s = summarize(values, method=method)
            hits[method] += s["ci_low"] <= p <= s["ci_high"]
    return {method: h / PROPORTION_REPS for method, h in hits.items()}


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_proportion_coverage_exact_and_simulated(p):
    exact = {
        "wilson": exact_coverage(proportion_interval, N, p),
        "jeffreys": exact_coverage(lambda k, n: proportion_interval(k, n, method="jeffreys"), N, p),
    }
    simulated = simulated_coverage(p, seed=10)
    se = math.sqrt(0.95 * 0.05 / PROPORTION_REPS)
    for method in exact:
        assert exact[method] >= 0.92, method
        assert simulated[method] >= 0.92, method
        assert abs(simulated[method] - exact[method]) < 4 * se, method  # the two agree


def test_percentile_bootstrap_undercovers_small_p():
    """The motivating contrast: the old default covers about 0.80 at p = 0.1, n = 16."""

    def old(k, n):
        _, low, high = bootstrap_ci([1.0] * k + [0.0] * (n - k), n_resamples=1000)
        return low, high

    coverage = exact_coverage(old, N, 0.1)
    assert coverage < 0.85  # 0/16 (probability 0.185) alone gives the empty-spread [0, 0]
    assert exact_coverage(proportion_interval, N, 0.1) > coverage + 0.1


def test_t_interval_coverage_normal_and_bounded_metrics():
    rng = random.Random(2024)
    cases = [
        ("normal", lambda: rng.gauss(0.6, 0.2), 0.6),
        ("beta(2,5), a skewed [0,1] metric", lambda: rng.betavariate(2, 5), 2 / 7),
        ("uniform", rng.random, 0.5),
    ]
    for name, draw, mu in cases:
        hits = 0
        for _ in range(REPS):
            low, high = mean_interval([draw() for _ in range(N)])
            hits += low <= mu <= high
        assert hits / REPS >= 0.93, name


# ----------------------------------------------------------------------------------------------
# Paired differences


def test_paired_continuous_detects_a_known_shift_that_unpaired_intervals_miss():
    rng = random.Random(5)
    keys = [f"p{i}" for i in range(N)]
    before = {k: rng.uniform(0.0, 1.0) for k in keys}  # problems differ a lot
    after = {k: before[k] + 0.2 + rng.gauss(0, 0.05) for k in keys}  # each improves by 0.2 +- noise
    d = paired_difference(before, after)
    assert d["n"] == N
    assert d["ci_low"] <= 0.2 <= d["ci_high"]
    assert d["ci_low"] > 0  # the paired interval excludes zero
    diffs = [after[k] - before[k] for k in keys]
    assert (d["ci_low"], d["ci_high"]) == mean_interval(diffs)
    b, a = summarize(list(before.values())), summarize(list(after.values()))
    assert b["ci_high"] > a["ci_low"]  # the two rounds' own intervals overlap


def test_paired_uses_only_keys_finite_in_both():
    before = {"a": 0.2, "b": 0.4, "c": math.nan, "d": 0.1, "e": 0.3}
    after = {"a": 0.5, "b": 0.4, "c": 0.9, "d": 0.6, "x": 1.0}
    d = paired_difference(before, after)
    assert d["n"] == 3 and d["value"] == pytest.approx((0.3 + 0.0 + 0.5) / 3)
    assert (d["ci_low"], d["ci_high"]) == pytest.approx(mean_interval([0.3, 0.0, 0.5]))


def test_paired_proportions_newcombe_published_example():
    # Fagerland, Lydersen & Laake (2014, Stat. Med. 33:2850), Cavo et al. 2012 data:
    # 59 yes/yes, 6 yes(after)/no(before), 16 no/yes, 80 no/no; delta = -0.0621 (-0.1186 to -0.0046)
    pairs = [(1.0, 1.0)] * 59 + [(0.0, 1.0)] * 6 + [(1.0, 0.0)] * 16 + [(0.0, 0.0)] * 80
    before = {i: b for i, (b, _) in enumerate(pairs)}
    after = {i: a for i, (_, a) in enumerate(pairs)}
    d = paired_difference(before, after)
    assert d["value"] == pytest.approx(-10 / 161)
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((-0.1186, -0.0046), abs=5e-5)


def test_paired_proportions_hand_computed_and_never_degenerate():
    # 3 problems turned right, none turned wrong, 13 wrong in both: a marginal is 0 so phi = 0 and
    # the interval is Newcombe's square-and-add of the two Wilson intervals
    before = {i: 0.0 for i in range(16)}
    after = {i: float(i < 3) for i in range(16)}
    d = paired_difference(before, after)
    l1, u1 = wilson_by_hand(3, 16)
    l2, u2 = 0.0, Z95**2 / (16 + Z95**2)
    p1, p2 = 3 / 16, 0.0
    assert d["value"] == pytest.approx(3 / 16)
    assert d["ci_low"] == pytest.approx(p1 - p2 - math.hypot(p1 - l1, u2 - p2), abs=1e-12)
    assert d["ci_high"] == pytest.approx(p1 - p2 + math.hypot(u1 - p1, p2 - l2), abs=1e-12)
    # 1 right in both, 3 turned right, 2 turned wrong, 10 wrong in both: ad - bc = 4 <= n/2, so the
    # continuity-corrected phi is 0 as well (the uncorrected phi would be 4/sqrt(4*12*3*13) = 0.09)
    before = {i: float(i in (0, 4, 5)) for i in range(16)}
    after = {i: float(i in (0, 1, 2, 3)) for i in range(16)}
    d = paired_difference(before, after)
    p1, p2 = 4 / 16, 3 / 16
    (l1, u1), (l2, u2) = wilson_by_hand(4, 16), wilson_by_hand(3, 16)
    assert d["value"] == pytest.approx(1 / 16)
    assert d["ci_low"] == pytest.approx(p1 - p2 - math.hypot(p1 - l1, u2 - p2), abs=1e-12)
    assert d["ci_high"] == pytest.approx(p1 - p2 + math.hypot(u1 - p1, p2 - l2), abs=1e-12)
    # nothing changed: t on the {-1, 0, 1} differences would give [0, 0]; Newcombe does not
    same = {i: float(i < 5) for i in range(16)}
    d = paired_difference(same, dict(same))
    assert d["value"] == 0.0 and d["ci_low"] < -0.05 and d["ci_high"] > 0.05
    # kind="continuous" forces the t interval on the differences
    d = paired_difference(same, dict(same), kind="continuous")
    assert (d["ci_low"], d["ci_high"]) == (0.0, 0.0)


def test_paired_proportion_coverage_exact():
    """Every 2x2 outcome at n = 16 enumerated (multinomial over the four cells)."""
    for cells in [(0.4, 0.1, 0.1, 0.4), (0.2, 0.3, 0.1, 0.4), (0.25, 0.25, 0.25, 0.25)]:
        pa, pb, pc, pd = cells  # both right, right only after, right only before, both wrong
        theta, total = pb - pc, 0.0
        for a in range(N + 1):
            for b in range(N + 1 - a):
                for c in range(N + 1 - a - b):
                    d = N - a - b - c
                    prob = math.factorial(N) / (
                        math.factorial(a) * math.factorial(b) * math.factorial(c) * math.factorial(d)
                    )
                    prob *= pa**a * pb**b * pc**c * pd**d
                    pairs = [(1.0, 1.0)] * a + [(0.0, 1.0)] * b + [(1.0, 0.0)] * c + [(0.0, 0.0)] * d
                    r = paired_difference(
                        {i: x for i, (x, _) in enumerate(pairs)}, {i: y for i, (_, y) in enumerate(pairs)}
                    )
                    total += prob * (r["ci_low"] <= theta <= r["ci_high"])
        assert total >= 0.93, cells


# ----------------------------------------------------------------------------------------------
# Every public function at other confidence levels, and its input checks (issue 13: the tests
# above pin the 95% level; these pin the mapping from `confidence` to the quantile it uses).

Z = {0.90: 1.6448536269514722, 0.95: 1.959963984540054, 0.99: 2.5758293035489004}  # printed normal quantiles
T = {  # printed Student t quantiles t_{(1 + c) / 2, df}
    (0.90, 4): 2.131846786326649, (0.99, 4): 4.604094871415897,
    (0.90, 9): 1.833112932653634, (0.99, 9): 3.249835541592143,
}


@pytest.mark.parametrize("confidence", [0.90, 0.99])
def test_wilson_and_jeffreys_at_other_levels(confidence):
    z = Z[confidence]
    for s, n in [(3, 16), (8, 16), (1, 29)]:
        assert proportion_interval(s, n, confidence) == pytest.approx(wilson_by_hand(s, n, z), abs=1e-9)
        s_ = summarize([1.0] * s + [0.0] * (n - s), confidence=confidence)
        assert (s_["ci_low"], s_["ci_high"]) == pytest.approx(wilson_by_hand(s, n, z), abs=1e-9)
    tail = (1 - confidence) / 2
    low, high = proportion_interval(3, 16, confidence, method="jeffreys")
    assert half_integer_beta_cdf(low, 3.5, 13.5) == pytest.approx(tail, abs=1e-10)
    assert half_integer_beta_cdf(high, 3.5, 13.5) == pytest.approx(1 - tail, abs=1e-10)


@pytest.mark.parametrize("confidence", [0.90, 0.99])
def test_t_intervals_at_other_levels(confidence):
    for xs in ([0.2, 0.5, 0.9, 0.4, 0.7], [0.3, 0.1, 0.7, 0.2, 0.9, 0.5, 0.4, 0.6, 0.8, 0.05]):
        n = len(xs)
        mean = sum(xs) / n
        half = T[(confidence, n - 1)] * math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1) / n)
        expected = (mean - half, mean + half)
        assert mean_interval(xs, confidence) == pytest.approx(expected, abs=1e-9)
        s = summarize(xs, confidence=confidence)
        assert (s["ci_low"], s["ci_high"]) == pytest.approx(expected, abs=1e-9)
        d = paired_difference({i: 1.0 for i in range(n)}, {i: 1.0 + x for i, x in enumerate(xs)}, confidence=confidence)
        assert (d["value"], d["ci_low"], d["ci_high"]) == pytest.approx((mean, *expected), abs=1e-9)
    # bounds clip the interval (summarize passes them through)
    s = summarize([0.9, 1.0, 0.95, 1.0], confidence=confidence, bounds=(0.0, 1.0))
    assert s["ci_high"] == 1.0 and s["ci_low"] < 0.95


@pytest.mark.parametrize("confidence", [0.90, 0.95, 0.99])
def test_newcombe_paired_interval_at_each_level(confidence):
    # 3 turned right, none turned wrong: phi = 0, so the interval is the square-and-add of the Wilsons.
    z = Z[confidence]
    d = paired_difference({i: 0.0 for i in range(16)}, {i: float(i < 3) for i in range(16)}, confidence=confidence)
    l1, u1 = wilson_by_hand(3, 16, z)
    u2 = z * z / (16 + z * z)
    p1 = 3 / 16
    assert d["ci_low"] == pytest.approx(p1 - math.hypot(p1 - l1, u2), abs=1e-12)
    assert d["ci_high"] == pytest.approx(p1 + (u1 - p1), abs=1e-12)


@pytest.mark.parametrize("confidence", [0.90, 0.95])
def test_bootstrap_ci_level(confidence):
    """For a mean of 50 values the bootstrap distribution is close to normal: the percentile
    interval is mean +- z * (plug-in SD) / sqrt(n) up to resampling noise (z: 1.645 or 1.960)."""
    xs = [((i * 37) % 101) / 100 for i in range(50)]
    mean, low, high = bootstrap_ci(xs, n_resamples=4000, confidence=confidence, seed=1)
    assert mean == pytest.approx(sum(xs) / len(xs))
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))
    assert (high - low) / 2 == pytest.approx(Z[confidence] * sd / math.sqrt(len(xs)), rel=0.06)
    assert low < mean < high
    s = summarize(xs, method="bootstrap", confidence=confidence, n_resamples=4000, seed=1)
    assert (s["ci_low"], s["ci_high"]) == (low, high)
    # reproducible and private: the same seed gives the same interval, the global RNG is untouched
    state = random.getstate()
    assert bootstrap_ci(xs, n_resamples=4000, confidence=confidence, seed=1) == (mean, low, high)
    assert random.getstate() == state
    assert all(math.isnan(v) for v in bootstrap_ci([math.nan, None]))


def test_every_function_refuses_impossible_inputs():
    for confidence in (0.0, 1.0, -0.5, 1.5):
        for function, args, kwargs in (
            (proportion_interval, (3, 16, confidence), {}),
            (mean_interval, ([0.1, 0.2, 0.3], confidence), {}),
            (summarize, ([0.1, 0.2],), {"confidence": confidence}),
            (paired_difference, ({1: 0.1}, {1: 0.2}), {"confidence": confidence}),
        ):
            with pytest.raises(ValueError, match="confidence"):
                function(*args, **kwargs)
    for call in (
        lambda: beta_quantile(1.5, 2.0, 3.0),
        lambda: t_quantile(0.0, 3),
        lambda: t_quantile(1.0, 3),
        lambda: t_quantile(0.9, 0),
        lambda: regularized_beta(0.5, 0.0, 1.0),
        lambda: summarize([0.1, 0.2], kind="ordinal"),
        lambda: summarize([0.1, 0.2], method="wald"),
        lambda: paired_difference({1: 0.1, 2: 0.3}, {1: 0.2, 2: 0.4}, kind="ordinal"),
        lambda: summarize([0.1, 0.2], groups=["a"]),
    ):
        with pytest.raises(ValueError):
            call()
    assert beta_quantile(0.0, 2.0, 3.0) == 0.0 and beta_quantile(1.0, 2.0, 3.0) == 1.0
    assert math.isnan(regularized_beta(math.nan, 2.0, 3.0))
