"""The callback's *when*: the schedule of rounds, the closing round, and when early stopping fires.

Regression tests from issue 13's review live here with their tag (``Regression (issue 13, bug N)``).
Trainings use the tiny llama of ``helpers.models`` pre-trained once per session.
"""

from __future__ import annotations

import dataclasses

import pytest
from helpers.trainers import attach, faith_config, make_trainer, read_history
from transformers import TrainerCallback

from faithcb.config import FaithConfig
from faithcb.stopping import EarlyStopper


@pytest.mark.parametrize("reference", ["best", "baseline", "paired"])
@pytest.mark.parametrize("metric", ["early_answering_aoc", "filler_invariance"])  # higher / lower = coupled
def test_faith_stop_require_ci_is_not_inverted(reference, metric):
    """Regression (issue 13, bug 3): ``faith_stop_require_ci`` inverted (faithcb/stopping.py EarlyStopper).

    Through ``FaithConfig`` -> ``EarlyStopper.from_config``, as the callback builds it. A round
    0.2 worse than its reference (min_delta 0.05, patience 1) stops training with require_ci off
    whatever its interval; with it on, only when the interval excludes the reference (for
    'paired', when the paired interval of the change excludes zero).
    """
    sign = 1.0 if metric == "early_answering_aoc" else -1.0  # which way is worse
    first, worse = 0.5, 0.5 - sign * 0.2
    if reference == "paired":
        change = -sign * 0.2
        excludes = {"value": change, "ci_low": change - 0.05, "ci_high": change + 0.05}
        includes = {"value": change, "ci_low": change - 0.3, "ci_high": change + 0.3}
    else:
        excludes, includes = (worse - 0.05, worse + 0.05), (worse - 0.3, worse + 0.3)
    for require_ci in (False, True):
        for interval_excludes, interval in ((True, excludes), (False, includes)):
            config = FaithConfig(
                faith_early_stopping=True, faith_stop_metric=metric, faith_stop_reference=reference,
                faith_stop_require_ci=require_ci, faith_stop_patience=1, faith_stop_min_delta=0.05,
            )
            stopper = EarlyStopper.from_config(config)
            assert stopper.require_ci is require_ci
            assert stopper.update(first, (first - 0.1, first + 0.1)) is None  # the baseline round
            if reference == "paired":
                reason = stopper.update(worse, (worse - 0.3, worse + 0.3), change=interval)
            else:
                reason = stopper.update(worse, interval)
            should_stop = interval_excludes or not require_ci
            assert (reason is not None) == should_stop, (
                f"require_ci={require_ci}, interval {'excludes' if interval_excludes else 'includes'} the "
                f"reference: {'stopped' if reason else 'did not stop'}"
            )



@pytest.mark.slow
def test_schedule_upper_bound_without_a_closing_round(tok, tmp_path, one_thread):
    """Regression (issue 13, bug 6): the schedule's upper bound (faithcb/callback.py) with ``faith_round_at_end`` off.

    No round is scheduled past max_steps and the last one is exactly right: the last multiple of
    faith_every_n_steps, or max_steps itself for faith_num_rounds. Checked for every small cadence,
    then in two real training runs, where the rounds land on exactly those steps.
    """
    base = faith_config(faith_round_at_start=False, faith_round_at_end=False, faith_probes=["early_answering"],
                        faith_num_problems=2, faith_every_n_steps=3, faith_num_rounds=0)
    trainer = make_trainer("trainer", tmp_path / "a", tok=tok, max_steps=6)
    callback = attach(trainer, base)
    for max_steps in range(1, 25):
        for every in range(1, max_steps + 1):
            callback.config = dataclasses.replace(base, faith_every_n_steps=every, faith_num_rounds=0)
            expected = set(range(every, max_steps - max_steps % every + 1, every))
            assert callback._make_schedule(max_steps) == expected, (max_steps, every)
        for rounds in range(1, 12):
            callback.config = dataclasses.replace(base, faith_every_n_steps=0, faith_num_rounds=rounds)
            schedule = callback._make_schedule(max_steps)
            assert max(schedule) == max_steps and min(schedule) >= 1, (max_steps, rounds, sorted(schedule))
            assert len(schedule) == min(rounds, max_steps), (max_steps, rounds, sorted(schedule))
    callback.config = base
    trainer.train()
    assert [h["step"] for h in read_history(tmp_path / "a")] == [3, 6]

    trainer = make_trainer("trainer", tmp_path / "b", tok=tok, max_steps=7)
    attach(trainer, dataclasses.replace(base, faith_every_n_steps=0, faith_num_rounds=3))
    trainer.train()
    assert [h["step"] for h in read_history(tmp_path / "b")] == [2, 5, 7]  # round(7/3), round(14/3), 7



class _StopAt(TrainerCallback):
    """Another callback that ends training early (as EarlyStoppingCallback or a time limit would)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
        return control


@pytest.mark.slow
def test_training_stopped_by_another_callback_still_gets_a_closing_round(tok, tmp_path, one_thread):
    """Regression (issue 13, bug 10): no closing round when training is stopped by another callback.

    Rounds every 2 steps of 8; another callback stops training at step 3, which is not a
    scheduled step: the faith history must still end with a round at step 3.
    """
    trainer = make_trainer("trainer", tmp_path, tok=tok, max_steps=8)
    callback = attach(trainer, faith_config(faith_every_n_steps=2, faith_probes=["early_answering"], faith_num_problems=2))
    trainer.add_callback(_StopAt(3))
    trainer.train()
    assert trainer.state.global_step == 3
    history = read_history(tmp_path)
    rounds = [(h["step"], h["reason"]) for h in history]
    assert rounds == [(0, "start"), (2, "schedule"), (3, "end")], f"no closing round at step 3: {rounds}"
    assert [h["step"] for h in callback.history] == [0, 2, 3]

