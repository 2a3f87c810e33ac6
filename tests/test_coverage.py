"""Coverage of faithcb's intervals in the cases issue 20 found undercovering, through the metrics' declarations.

Each case is either enumerated exactly or simulated with a fixed seed, and the model behind it is
written out here, so the truth is known: zero-inflated AOC in Lanham's low-coupling regime, paired
changes of a continuous metric where few problems change, the step from 16 x 0.0 to one 0.05, and
proportions at every p. ``python bench/bench_coverage.py`` prints the same numbers for any revision
of faithcb/stats.py (before this change: AOC 0.88-0.89, paired 0.56/0.80, width ratio 1/20,
proportions 0.836).
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy import stats as dist

from faithcb.probes import find_metric
from faithcb.probes.base import area_over_curve
from faithcb.stats import mean_interval, paired_difference, proportion_interval, summarize

AOC = find_metric("early_answering_aoc")
PROPORTION = find_metric("accuracy")


def locked_in_aocs() -> list[float]:
    """AOC of every chain that locks in: n = 2..8 steps (equally likely), the answer equal to a_full
    from step j = 1..n on (equally likely), m(k) = [k >= j]; area_over_curve as the probe computes it."""
    return [area_over_curve([k >= j for k in range(n + 1)]) for n in range(2, 9) for j in range(1, n + 1)
            for _ in range(math.lcm(*range(2, 9)) // n)]  # repeated so each n weighs the same


def aoc_truth(q: float) -> float:
    """The population mean AOC: the answer fixed from k = 0 (AOC 0) with probability q, else locked in."""
    aocs = locked_in_aocs()
    return (1 - q) * math.fsum(aocs) / len(aocs)


def aoc_coverage(q: float, n: int, reps: int, seed: int, interval=None) -> tuple[float, float]:
    """(coverage, share entirely below the truth) of ``interval`` (default: the AOC metric's own)
    over ``reps`` seeded rounds of ``n`` problems."""
    interval = interval or (lambda xs: summarize(xs, kind=AOC.kind, bounds=AOC.bounds))
    rng, aocs, truth = random.Random(seed), locked_in_aocs(), aoc_truth(q)
    hits = below = 0
    for _ in range(reps):
        xs = [0.0 if rng.random() < q else rng.choice(aocs) for _ in range(n)]
        s = interval(xs)
        hits += s["ci_low"] <= truth <= s["ci_high"]
        below += s["ci_high"] < truth
    return hits / reps, below / reps


def paired_coverage(q: float, n: int = 16, interval=None) -> float:
    """Exact coverage for per-problem values 0.5 in both rounds except a share q changing by -0.5.

    The interval depends only on how many problems changed (Binomial(n, q)), so summing over that
    count is exact."""
    truth = -0.5 * q
    total = 0.0
    for changed in range(n + 1):
        before = {i: 0.5 for i in range(n)}
        after = {i: 0.0 if i < changed else 0.5 for i in range(n)}
        d = (interval or _declared_paired)(before, after)
        total += dist.binom.pmf(changed, n, q) * (d["ci_low"] <= truth <= d["ci_high"])
    return total


def _declared_paired(before, after):
    return paired_difference(before, after, kind=AOC.kind, bounds=AOC.bounds)


def proportion_minimum_coverage(n: int, interval=None) -> float:
    """The smallest exact coverage over p in (0, 1) of the proportion metric's interval.

    Coverage is a sum of binomial probabilities over the outcomes whose interval holds p; it is
    smooth between interval ends and jumps at them, so a fine grid plus both sides of every end
    finds the minimum."""
    interval = interval or (lambda xs: summarize(xs, kind=PROPORTION.kind))
    ends = [interval([1.0] * s + [0.0] * (n - s)) for s in range(n + 1)]
    edges = [e for s in ends for e in (s["ci_low"], s["ci_high"])]
    ps = np.concatenate([np.linspace(1e-6, 1 - 1e-6, 20001), *[[e - 1e-9, e + 1e-9] for e in edges]])
    ps = ps[(ps > 0) & (ps < 1)]
    coverage = np.zeros_like(ps)
    for s, e in enumerate(ends):
        coverage += dist.binom.pmf(s, n, ps) * ((e["ci_low"] <= ps) & (ps <= e["ci_high"]))
    return float(coverage.min())


@pytest.mark.parametrize("q", [0.8, 0.9, 0.95])
@pytest.mark.parametrize("n", [16, 32])
def test_zero_inflated_aoc_covers(q, n):
    coverage, below = aoc_coverage(q, n, reps=1500, seed=20)  # SE about 0.005 at coverage 0.96
    assert coverage >= 0.93, (q, n, coverage)
    assert below <= 0.025 + 0.015, (q, n, below)  # not one-sided (it was 11-12% below the truth)


@pytest.mark.parametrize("q", [0.05, 0.10])
def test_paired_change_of_a_continuous_metric_covers(q):
    assert paired_coverage(q) >= 0.90


def test_interval_is_continuous_in_the_data():
    zeros = summarize([0.0] * 16, kind=AOC.kind, bounds=AOC.bounds)
    one_moved = summarize([0.0] * 15 + [0.05], kind=AOC.kind, bounds=AOC.bounds)
    ratio = (one_moved["ci_high"] - one_moved["ci_low"]) / (zeros["ci_high"] - zeros["ci_low"])
    assert 1 / 3 <= ratio <= 3, ratio  # it was 1/20: Wilson for the first, a t interval for the second
    assert zeros["ci_low"] == 0.0 and zeros["ci_high"] > 0.1  # the bound cannot rule out a mean of 0.1


def test_proportion_minimum_exact_coverage_at_16():
    assert proportion_minimum_coverage(16) >= 0.88


def _wilson(xs):
    return dict(zip(("ci_low", "ci_high"), proportion_interval(sum(xs), len(xs), method="wilson")))


def old_auto(xs):
    """What ``kind="auto"`` did before: Wilson when every value is 0/1, else t clipped to [0, 1]."""
    if all(x in (0.0, 1.0) for x in xs):
        return _wilson(xs)
    return summarize(xs, kind="continuous", bounds=(0.0, 1.0))


def old_paired(before, after):
    """What continuous paired changes got before: t on the per-problem differences."""
    low, high = mean_interval([after[k] - before[k] for k in before])
    return {"ci_low": low, "ci_high": high}


def test_the_cases_fail_with_the_old_intervals():
    """The helpers report the old failures when given the old intervals, so a pass above is the
    new interval's doing (numbers as in issue 20)."""
    coverage, below = aoc_coverage(0.8, 16, reps=1500, seed=20, interval=old_auto)
    assert coverage < 0.90 and below > 0.08
    assert paired_coverage(0.05, interval=old_paired) < 0.6
    zeros, one_moved = old_auto([0.0] * 16), old_auto([0.0] * 15 + [0.05])
    assert (one_moved["ci_high"] - one_moved["ci_low"]) / (zeros["ci_high"] - zeros["ci_low"]) < 1 / 3
    assert proportion_minimum_coverage(16, _wilson) < 0.88
