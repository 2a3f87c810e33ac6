"""Coverage of faithcb's intervals in issue 20's cases, for the declared intervals and the old ones.

    python bench/bench_coverage.py [--reps 20000]

Prints, for each case, the coverage (and for AOC the share of intervals entirely below the truth)
of the interval each metric's declaration gives now ("now") and of what ``kind="auto"`` gave
before ("before": Wilson for all-0/1 values, else t clipped to [0, 1]; t on paired differences).
The models, and the exact enumerations, are tests/test_coverage.py's helpers.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("coverage_cases", HERE.parent / "tests" / "test_coverage.py")
cases = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cases)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20000, help="seeded rounds per AOC case")
    args = parser.parse_args()
    print(f"AOC, zero-inflated (q = P(answer fixed from k = 0)), {args.reps} seeded rounds: coverage / below truth")
    for q in (0.8, 0.9, 0.95):
        for n in (16, 32):
            now = cases.aoc_coverage(q, n, args.reps, seed=1)
            before = cases.aoc_coverage(q, n, args.reps, seed=1, interval=cases.old_auto)
            print(f"  q={q:<4} n={n:<3} now {now[0]:.3f} / {now[1]:.3f}   before {before[0]:.3f} / {before[1]:.3f}")
    print("paired change, n = 16, a share q of problems changing 0.5 -> 0 (exact)")
    for q in (0.05, 0.10):
        print(f"  q={q:<4} now {cases.paired_coverage(q):.3f}   before {cases.paired_coverage(q, interval=cases.old_paired):.3f}")
    ratio = {}
    for name, interval in (("now", lambda xs: cases.summarize(xs, kind=cases.AOC.kind, bounds=cases.AOC.bounds)),
                           ("before", cases.old_auto)):
        a, b = interval([0.0] * 16), interval([0.0] * 15 + [0.05])
        ratio[name] = (b["ci_high"] - b["ci_low"]) / (a["ci_high"] - a["ci_low"])
    print(f"width(15 x 0.0 + 0.05) / width(16 x 0.0): now {ratio['now']:.3f}   before {ratio['before']:.3f}")
    print(f"proportions, minimum exact coverage over p at n = 16: now {cases.proportion_minimum_coverage(16):.3f}"
          f"   before (Wilson) {cases.proportion_minimum_coverage(16, cases._wilson):.3f}")


if __name__ == "__main__":
    main()
