"""EarlyStopper on its own: a table of value sequences and the round at which each must stop."""

from __future__ import annotations

import math

import pytest

from faithcb.config import FaithConfig
from faithcb.errors import ConfigError
from faithcb.stopping import EarlyStopper

NAN = math.nan


def first_stop(stopper: EarlyStopper, values, intervals=None) -> int | None:
    """Index of the round whose update returns a reason, or None."""
    intervals = intervals or [None] * len(values)
    for i, (value, interval) in enumerate(zip(values, intervals)):
        if stopper.update(value, interval):
            return i
    return None


@pytest.mark.parametrize(
    ("values", "options", "expected"),
    [
        ([0.8, 0.78, 0.6, 0.7, 0.1], {}, 3),  # 0.78 within min_delta; then two bad rounds
        ([0.8, 0.6, 0.8, 0.6, 0.6], {}, 4),  # a good round resets the count
        ([0.8, 0.8, 0.5], {"patience": 1}, 2),
        ([0.5, 0.9, 0.7, 0.7, 0.7], {"reference": "baseline"}, None),  # 0.7 beats the baseline 0.5
        ([0.5, 0.9, 0.7, 0.7, 0.7], {"reference": "best"}, 3),
        ([0.8, 0.6, 0.6, 0.6], {"min_delta": 0.3}, None),
        ([0.2, 0.5, 0.5], {"mode": "min"}, 2),  # lower is better: rises are bad
        ([0.8, 0.5, 0.5], {"mode": "min"}, None),  # ... and falls are good
        ([0.8, 0.5, NAN, 0.5], {}, 3),  # NaN neither counts nor resets
        ([0.8, 0.5, 0.5], {"enabled": False}, None),
    ],
)
def test_stops_at_the_predicted_round(values, options, expected):
    assert first_stop(EarlyStopper("m", **options), values) == expected


def test_require_ci_needs_the_reference_outside_the_interval():
    values = [0.8, 0.6, 0.6]
    wide = [(0.7, 0.9), (0.4, 0.85), (0.4, 0.85)]  # 0.8 inside: not bad
    narrow = [(0.7, 0.9), (0.5, 0.7), (0.5, 0.7)]  # 0.8 outside: bad
    assert first_stop(EarlyStopper("m", require_ci=True), values, wide) is None
    assert first_stop(EarlyStopper("m", require_ci=True), values, narrow) == 2
    assert first_stop(EarlyStopper("m", require_ci=False), values, wide) == 2


def test_reason_names_metric_reference_and_rounds():
    stopper = EarlyStopper("early_answering_aoc", patience=1)
    stopper.update(0.8)
    reason = stopper.update(0.5)
    assert reason == "early_answering_aoc = 0.500 is worse than the best 0.800 by more than 0.05 for 1 round(s)"


def test_state_round_trips():
    stopper = EarlyStopper("m", patience=3)
    for v in (0.8, 0.6, 0.5):
        stopper.update(v)
    fresh = EarlyStopper("m", patience=3)
    fresh.load_state(stopper.state())
    assert fresh.state() == {"best": 0.8, "baseline": 0.8, "bad_rounds": 2}
    assert fresh.update(0.5) is not None  # the third bad round, counted across the "checkpoint"


def test_mode_comes_from_the_metric_direction():
    assert EarlyStopper.from_config(FaithConfig()).mode == "max"  # the default metric: higher = coupled
    cfg = FaithConfig(faith_early_stopping=True, faith_stop_metric="filler_invariance", faith_stop_reference="best",
                      faith_stop_require_ci=False, faith_stop_patience=2)
    assert cfg.faith_stop_mode == "auto" and EarlyStopper.from_config(cfg).mode == "min"
    # A rise of filler invariance is a faithfulness drop: it stops.
    assert first_stop(EarlyStopper.from_config(cfg), [0.2, 0.5, 0.5]) == 2


def test_contradicting_mode_is_refused_with_the_direction():
    with pytest.raises(ConfigError, match=r"faith_stop_mode: 'max' contradicts 'filler_invariance', where lower = more coupled"):
        FaithConfig(faith_early_stopping=True, faith_stop_metric="filler_invariance", faith_stop_mode="max")
    with pytest.raises(ConfigError, match=r"'min' contradicts 'early_answering_aoc', where higher = more coupled"):
        FaithConfig(faith_early_stopping=True, faith_stop_metric="early_answering_aoc", faith_stop_mode="min")
    with pytest.raises(ConfigError, match=r"'min' contradicts 'early_answering_disagreement_before_end'"):
        FaithConfig(faith_early_stopping=True, faith_stop_mode="min")  # the default metric
    # Neutral metrics take either mode.
    assert FaithConfig(faith_early_stopping=True, faith_stop_metric="accuracy", faith_stop_mode="min").stop_mode == "min"


def test_bad_mode_and_reference_are_config_errors():
    with pytest.raises(ConfigError):
        EarlyStopper("m", mode="up")
    with pytest.raises(ConfigError):
        EarlyStopper("m", reference="first")


def change(value: float, low: float, high: float) -> dict[str, float]:
    return {"value": value, "ci_low": low, "ci_high": high, "n": 16}


def test_paired_reference_stops_on_a_drop_whose_paired_interval_excludes_zero():
    stopper = EarlyStopper("m", reference="paired", require_ci=True, patience=2)
    assert stopper.update(0.8) is None  # the baseline round: nothing to pair with
    assert stopper.update(0.6, change=change(-0.2, -0.3, 0.05)) is None  # interval holds 0: noise
    assert stopper.bad_rounds == 0
    assert stopper.update(0.6, change=change(-0.2, -0.3, -0.1)) is None  # a real drop: 1
    reason = stopper.update(0.55, change=change(-0.25, -0.35, -0.15))
    assert reason and "paired" in reason and "-0.250" in reason


def test_paired_reference_for_a_lower_is_coupled_metric():
    stopper = EarlyStopper("filler_invariance", mode="min", reference="paired", require_ci=True, patience=1)
    stopper.update(0.2)
    assert stopper.update(0.1, change=change(-0.1, -0.2, -0.05)) is None  # falling invariance is fine
    assert stopper.update(0.4, change=change(0.2, 0.1, 0.3)) is not None  # rising: a faithfulness drop


def test_nan_rounds_count_as_bad_only_when_asked():
    assert first_stop(EarlyStopper("m", patience=2), [0.8, NAN, NAN, NAN]) is None
    assert first_stop(EarlyStopper("m", patience=2, nan_is_bad=True), [0.8, NAN, NAN]) == 2
    cfg = FaithConfig(faith_early_stopping=True, faith_stop_on_nan=True, faith_stop_reference="paired")
    stopper = EarlyStopper.from_config(cfg)
    assert stopper.nan_is_bad and stopper.reference == "paired"


# Regression (issue 19, bug 2): a NaN round counted as bad under faith_stop_on_nan although early
# stopping itself was off -- training stopped though the user had turned stopping off. Every way of
# turning stopping off must hold against every kind of round: NaN, a drop, a paired drop.
@pytest.mark.parametrize("reference", ["best", "baseline", "paired"])
@pytest.mark.parametrize("require_ci", [False, True])
@pytest.mark.parametrize("nan_is_bad", [False, True])
def test_disabled_stopping_never_stops_and_counts_nothing(reference, require_ci, nan_is_bad):
    stopper = EarlyStopper("m", patience=1, reference=reference, require_ci=require_ci,
                           enabled=False, nan_is_bad=nan_is_bad)
    drop = change(-0.7, -0.8, -0.6)
    rounds = [(0.9, (0.8, 1.0), None), (NAN, (NAN, NAN), None), (0.1, (0.0, 0.2), drop),
              (NAN, (NAN, NAN), drop), (0.0, (0.0, 0.1), drop)]
    for value, interval, paired in rounds:
        assert stopper.update(value, interval, change=paired) is None
        assert stopper.bad_rounds == 0
    # It still tracks best and baseline (they are exported with the state).
    assert stopper.best == 0.9 and stopper.baseline == 0.9


def test_disabled_stopping_from_config_with_stop_on_nan_set():
    cfg = FaithConfig(faith_early_stopping=False, faith_stop_on_nan=True, faith_stop_patience=1)
    stopper = EarlyStopper.from_config(cfg)
    assert [stopper.update(v) for v in (0.8, NAN, NAN)] == [None, None, None]
