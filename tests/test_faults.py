"""Faults during training: a round that raises, an interrupt mid-round, a history cut mid-write.

A failing round (CUDA out of memory, simulated by raising ``torch.OutOfMemoryError`` from a forward
hook, or any other exception) is reported in the logs and the history, leaves everything it touched
as it was — model mode, gradient checkpointing, padding side, cache flag, RNG — and training goes
on to the next round, which runs. A ``KeyboardInterrupt`` restores the same state before it
propagates. The faults are made on purpose (hooks that raise at one step), never left to chance.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from helpers.models import one_thread, pretrained_model, tokenizer
from helpers.trainers import attach, faith_config, faith_logs, make_trainer
from transformers import TrainerCallback

from faithcb.history import HistoryWriter, read_history

FAIL_STEP = 2  # rounds at 0, 2, 4: the one at FAIL_STEP raises


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


class _Snapshot(TrainerCallback):
    """What a round must leave as it was, taken at every step end (before or after the round's callback)."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.seen: dict[int, tuple] = {}

    def take(self, step: int) -> None:
        model = self.trainer.model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.seen[step] = (
            model.training,
            base.config.use_cache,
            self.trainer.processing_class.padding_side,
            torch.is_grad_enabled(),
            base.is_gradient_checkpointing,
            torch.get_rng_state().clone(),
        )

    def on_step_end(self, args, state, control, **kwargs):
        self.take(state.global_step)


def _same(a: tuple, b: tuple) -> bool:
    return a[:5] == b[:5] and torch.equal(a[5], b[5])


def _failing_run(tmp_path, error: BaseException):
    """An SFT + LoRA run with gradient checkpointing whose round at FAIL_STEP raises ``error``."""
    tok = tokenizer()
    trainer = make_trainer("sft_lora", tmp_path, model=pretrained_model(tok), tok=tok, max_steps=4,
                           gradient_checkpointing=True)
    before = _Snapshot(trainer)
    trainer.add_callback(before)
    attach(trainer, faith_config(faith_every_n_steps=2, faith_strict=False))
    after = _Snapshot(trainer)
    trainer.add_callback(after)

    def fail_in_the_round(_module, _args):
        # Rounds run without gradients; training's own forward passes never raise.
        if trainer.state.global_step == FAIL_STEP and not torch.is_grad_enabled():
            raise error

    base = trainer.model.get_base_model()
    base.get_input_embeddings().register_forward_pre_hook(fail_in_the_round)
    return trainer, before, after


@pytest.mark.parametrize(
    "error", [torch.OutOfMemoryError("CUDA out of memory (simulated)"), RuntimeError("a probe broke")],
    ids=["cuda-oom", "exception"],
)
@pytest.mark.slow
def test_a_failing_round_is_reported_and_training_goes_on(error, tmp_path):
    trainer, before, after = _failing_run(tmp_path, error)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()

    assert trainer.state.global_step == 4
    failed = [str(w.message) for w in caught if f"probe round at step {FAIL_STEP} failed" in str(w.message)]
    assert failed and type(error).__name__ in failed[0]
    logs = faith_logs(trainer)
    assert logs[FAIL_STEP].get("faith/probe_failed") == 1.0
    assert "faith/accuracy" not in logs[FAIL_STEP]
    # The next round ran and measured.
    assert "faith/probe_failed" not in logs[4] and "faith/problems_scored" in logs[4]
    history = [h for h in read_history(tmp_path) if h["role"] == "model"]
    assert [h["step"] for h in history] == [0, 2, 4]
    assert type(error).__name__ in history[1]["error"] and "metrics" not in history[1]
    assert "metrics" in history[2]
    # Everything the round touched is as it was, gradient checkpointing included.
    for step in (FAIL_STEP, 4):
        assert _same(before.seen[step], after.seen[step]), step
    assert after.seen[4][4] is True


@pytest.mark.slow
def test_an_interrupt_mid_round_restores_the_state_before_it_propagates(tmp_path):
    trainer, before, _ = _failing_run(tmp_path, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert trainer.state.global_step == FAIL_STEP
    now = _Snapshot(trainer)
    now.take(FAIL_STEP)
    # The trainer leaves the model in training mode at a step end; the round must hand it back so.
    assert _same(before.seen[FAIL_STEP], now.seen[FAIL_STEP])
    assert now.seen[FAIL_STEP][4] is True  # gradient checkpointing back on


def test_a_history_cut_mid_write_resumes_with_a_warning(tmp_path):
    writer = HistoryWriter(tmp_path)
    for step in (0, 2, 4):
        writer.write_round([{"step": step, "role": "model", "metrics": {}}])
    text = writer.path.read_text(encoding="utf-8")
    cut = text + json.dumps({"step": 6, "role": "model", "metrics": {}})[:25]  # killed mid-write
    writer.path.write_text(cut, encoding="utf-8")

    with pytest.warns(RuntimeWarning, match="cut last line"):
        writer.rewind(2)  # resuming from checkpoint-2
    writer.write_round([{"step": 4, "role": "model", "metrics": {}}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left to skip: the file is whole again
        assert [h["step"] for h in read_history(writer.path)] == [0, 2, 4]


def test_a_whole_history_is_rewound_without_a_warning(tmp_path):
    writer = HistoryWriter(tmp_path)
    for step in (0, 2, 4):
        writer.write_round([{"step": step, "role": "model", "metrics": {}}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        writer.rewind(2)
    assert [h["step"] for h in read_history(writer.path)] == [0, 2]
