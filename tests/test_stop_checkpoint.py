"""Early stopping keeps a checkpoint of the stopping step, and a faith metric can pick the best one.

Rounds return scripted records (``helpers.scripted.script_records``), so the step training stops at
and the best round are known in advance. Under ``save_strategy="best"`` the Trainer replaces
``control.should_save`` after every evaluation with "is this a new best"; an early stop decided
there would lose its checkpoint unless the callback saves it itself.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers.models import one_thread, tokenizer
from helpers.scripted import script_records
from helpers.trainers import attach, faith_config, make_trainer, read_history
from safetensors.torch import load_file
from transformers import TrainerCallback

pytestmark = pytest.mark.slow  # every test trains (and resumes) a tiny Trainer

# Best 0.8 at step 0 (step 1's equal value is not better), 0.5 at step 2 is bad: patience 1 stops there.
VALUES = [0.8, 0.8, 0.5, 0.5, 0.5, 0.5, 0.5]
STOP = 2


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def _stopping_run(tmp_path, monkeypatch, save_strategy: str):
    script_records(monkeypatch, VALUES)
    args = {"save_strategy": save_strategy}
    if save_strategy == "steps":
        args["save_steps"] = 100  # never on its own before the stop
    if save_strategy == "best":
        # Evaluating every step, rounds on evaluation; the Trainer keeps only new bests of the AOC,
        # and the stopping round's 0.5 is not one.
        args.update(eval_strategy="steps", eval_steps=1, metric_for_best_model="faith/early_answering_aoc",
                    greater_is_better=True)
    # Scripted values, the same on every problem: the 'best' reference (the paired default needs spread).
    rule = {"faith_stop_reference": "best", "faith_stop_require_ci": False}
    cfg = faith_config(faith_every_n_steps=1, faith_early_stopping=True, faith_stop_patience=1, **rule)
    if save_strategy == "best":
        cfg = faith_config(faith_every_n_steps=0, faith_on_evaluate=True, faith_early_stopping=True,
                           faith_stop_patience=1, faith_round_at_end=False, **rule)
    trainer = make_trainer("trainer", tmp_path, tok=tokenizer(), max_steps=6, n_eval=4, **args)
    cb = attach(trainer, cfg)
    trainer.train()
    return trainer, cb


@pytest.mark.parametrize("save_strategy", ["no", "steps", "epoch", "best"])
def test_early_stop_leaves_a_checkpoint_of_the_stopping_step(save_strategy, tmp_path, monkeypatch):
    trainer, cb = _stopping_run(tmp_path, monkeypatch, save_strategy)
    best_step = 0  # rounds at steps 0 (train begin), 1 and 2
    assert trainer.state.global_step == STOP and cb.stopped_at == STOP
    checkpoint = tmp_path / f"checkpoint-{STOP}"
    assert checkpoint.is_dir(), sorted(p.name for p in tmp_path.iterdir())
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["global_step"] == STOP
    saved = state["stateful_callbacks"]["FaithfulnessCallback"]["attributes"]
    assert saved["stopped_at"] == STOP and saved["best_step"] == best_step
    assert [h["step"] for h in saved["history"]][-1] == STOP  # the stopping round is in it
    # The checkpoint holds the weights training stopped with.
    weights = load_file(checkpoint / "model.safetensors")
    assert all(torch.equal(weights[k], v) for k, v in trainer.model.state_dict().items() if k in weights)
    # The history's stop line names the best round's step.
    last = read_history(tmp_path)[-1]
    assert last["step"] == STOP and "early_stop" in last and last["best_step"] == best_step


def test_resuming_from_the_stop_checkpoint_restores_the_stopping_state(tmp_path, monkeypatch):
    first, cb1 = _stopping_run(tmp_path, monkeypatch, "best")
    stopped_weights = {k: v.clone() for k, v in first.model.state_dict().items()}

    script_records(monkeypatch, VALUES)
    second = make_trainer("trainer", tmp_path, tok=tokenizer(), max_steps=6, n_eval=4, save_strategy="best",
                          eval_strategy="steps", eval_steps=1, metric_for_best_model="faith/early_answering_aoc",
                          greater_is_better=True)
    cb2 = attach(second, cb1.config)
    seen = {}

    class Peek(TrainerCallback):  # added after the callback: sees what it restored
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            seen.update(step=state.global_step, stopped_at=cb2.stopped_at, best_step=cb2.best_step,
                        best=cb2.best, bad_rounds=cb2.bad_rounds, history=[dict(h) for h in cb2.history],
                        weights={k: v.clone() for k, v in model.state_dict().items()})
            control.should_training_stop = True  # only the restored state is under test

    second.add_callback(Peek())
    second.train(resume_from_checkpoint=str(tmp_path / f"checkpoint-{STOP}"))
    assert seen["step"] == STOP and seen["stopped_at"] == STOP and seen["best_step"] == 0
    assert seen["best"] == 0.8 and seen["bad_rounds"] == 1
    assert [(h["step"], h["early_answering_aoc"]) for h in seen["history"]] == [(0, 0.8), (1, 0.8), (2, 0.5)]
    assert len(cb1.history) == 3
    assert all(torch.equal(seen["weights"][k], v) for k, v in stopped_weights.items())


def test_faith_metric_picks_the_best_checkpoint_to_load_at_end(tmp_path, monkeypatch):
    """metric_for_best_model="faith/early_answering_aoc": load_best_model_at_end returns step 2's weights."""
    script_records(monkeypatch, [0.3, 0.9, 0.5, 0.4])  # rounds at the evaluations of steps 1..4
    trainer = make_trainer(
        "trainer", tmp_path, tok=tokenizer(), max_steps=4, n_eval=4, eval_strategy="steps", eval_steps=1,
        save_strategy="steps", save_steps=1, metric_for_best_model="faith/early_answering_aoc",
        greater_is_better=True, load_best_model_at_end=True,
    )
    attach(trainer, faith_config(faith_every_n_steps=0, faith_on_evaluate=True, faith_round_at_start=False,
                                 faith_round_at_end=False))
    trainer.train()

    assert trainer.state.best_global_step == 2 and trainer.state.best_metric == 0.9
    assert trainer.state.best_model_checkpoint.endswith("checkpoint-2")
    best, last = (load_file(tmp_path / f"checkpoint-{s}" / "model.safetensors") for s in (2, 4))
    now = trainer.model.state_dict()
    assert all(torch.equal(now[k], best[k]) for k in best)
    assert any(not torch.equal(best[k], last[k]) for k in best)  # (step 4's weights differ)
