"""The probing time budget: a pure accounting object, and a real tiny training run that keeps it."""

from __future__ import annotations

import math
import time

import pytest
from helpers.trainers import attach, faith_config, faith_logs, make_trainer, read_history

from faithcb.budget import OverheadBudget
from faithcb.config import FaithConfig
from faithcb.engine import FaithfulnessEngine
from faithcb.errors import ConfigError


def test_accounting_by_hand():
    b = OverheadBudget(0.25)
    b.start(now=100.0)
    b.add_round(2.0)  # step-0 round: 100 -> 102
    assert math.isnan(b.fraction(now=102.0))  # no training yet
    assert b.train_seconds(now=112.0) == 10.0  # 12 s since start, 2 of them probing
    assert b.fraction(now=112.0) == pytest.approx(0.2)
    assert not b.allows(now=112.0)  # (2 + 2) / 10 = 0.4 > 0.25
    assert b.allows(now=118.0)  # (2 + 2) / 16 = 0.25 <= 0.25
    b.add_round(2.0)
    assert b.fraction(now=120.0) == pytest.approx(4.0 / 16.0)


def test_no_budget_always_allows_and_state_survives_a_resume():
    assert OverheadBudget(0.0).allows(now=1.0)
    b = OverheadBudget(0.1)
    b.start(now=0.0)
    b.add_round(1.0)
    b.skipped = 3
    saved = b.state(now=21.0)  # 20 s of training
    resumed = OverheadBudget(0.1)
    resumed.load_state(saved)
    resumed.start(now=500.0)  # a new process: its clock starts anew
    assert resumed.train_seconds(now=510.0) == pytest.approx(30.0)
    assert resumed.fraction(now=510.0) == pytest.approx(1.0 / 30.0) and resumed.skipped == 3


def test_negative_budget_is_refused():
    with pytest.raises(ConfigError, match="faith_max_overhead"):
        FaithConfig(faith_max_overhead=-0.1)


def _records(n: int) -> list[dict]:
    return [{"id": f"p{i}", "sample": 0, "question": "q", "gold": "1", "answer": "1", "correct": True,
             "chain": "c", "n_steps": 1, "chain_tokens": 4, "status": "ok", "kind": "number"} for i in range(n)]


@pytest.mark.slow
def test_training_keeps_the_budget(tok, tmp_path, monkeypatch):
    """Rounds that cost 0.3 s against ~0.2 s training steps: a 0.5 budget must skip most of them."""
    round_cost = 0.3

    def slow_records(self, problems):
        time.sleep(round_cost)
        return _records(len(problems))

    def slow_step(self, *args, **kwargs):  # make training time measurable on any machine
        time.sleep(0.2)
        return original_step(self, *args, **kwargs)

    from transformers import Trainer

    original_step = Trainer.training_step
    monkeypatch.setattr(FaithfulnessEngine, "records", slow_records)
    monkeypatch.setattr(Trainer, "training_step", slow_step)
    budget = 0.5
    trainer = make_trainer("trainer", tmp_path, tok=tok, max_steps=12)
    attach(trainer, faith_config(faith_every_n_steps=1, faith_max_overhead=budget))
    trainer.train()

    rounds = faith_logs(trainer)
    steps = sorted(rounds)
    assert steps[0] == 0 and steps[-1] == 12  # the baseline and the closing round always run
    assert len(steps) < 13  # rounds were skipped to keep the budget
    assert rounds[12]["faith/rounds_skipped"] == 13 - len(steps)
    # Between rounds the fraction stays within the budget (the closing round may overshoot by
    # one round's cost: it always runs).
    for step in steps[1:-1]:
        assert rounds[step]["faith/overhead_fraction"] <= budget + 0.1, (step, rounds[step])
    assert [h["step"] for h in read_history(tmp_path) if h["role"] == "model"] == steps


@pytest.mark.slow
def test_overhead_fraction_is_logged_without_a_budget(tok, tmp_path, monkeypatch):
    monkeypatch.setattr(FaithfulnessEngine, "records", lambda self, problems: _records(len(problems)))
    trainer = make_trainer("trainer", tmp_path, tok=tok, max_steps=4)
    attach(trainer, faith_config(faith_every_n_steps=2))
    trainer.train()
    rounds = faith_logs(trainer)
    assert sorted(rounds) == [0, 2, 4]
    assert "faith/overhead_fraction" not in rounds[0]  # nothing trained yet
    assert all(rounds[s]["faith/overhead_fraction"] > 0 and rounds[s]["faith/rounds_skipped"] == 0 for s in (2, 4))
