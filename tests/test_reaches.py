"""Reaches into other libraries' private internals fail closed: a rename is a clear setup error.

Each test simulates the rename the guard is for (the real library cannot be made to rename its
internals here) and checks that the reach refuses instead of going on silently: DeepSpeed ZeRO-3's
start-of-forward hook (without it, rounds under ZeRO-3 hang) and ``Trainer._save_checkpoint``
(without it, the round that stopped training is not saved under ``save_strategy="best"``). The
attention-kernel reach of the packed scorer is tested in tests/test_lm.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from helpers.models import one_thread, tokenizer
from helpers.trainers import attach, faith_config, make_trainer

from faithcb.checkpointing import check_save_checkpoint
from faithcb.distributed import check_zero3_hook, pause_zero3_start_hook
from faithcb.errors import ConfigError


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


# ---------------------------------------------------------------------- DeepSpeed ZeRO-3's hook
def _accelerator(stage: int, offload) -> SimpleNamespace:
    """An accelerator as faithcb reads it under DeepSpeed: engine -> ZeRO optimizer -> parameter offload."""
    engine = SimpleNamespace(zero_optimization_stage=lambda: stage, optimizer=SimpleNamespace(parameter_offload=offload))
    return SimpleNamespace(deepspeed_engine_wrapped=SimpleNamespace(engine=engine))


def _module_with_hooks(calls: list[str]):
    module = torch.nn.Linear(2, 2)
    # DeepSpeed registers its start-of-forward hook first; a later hook must keep running after it.
    start = module.register_forward_pre_hook(lambda *_: calls.append("deepspeed"))
    module.register_forward_pre_hook(lambda *_: calls.append("other"))
    return module, start


def test_the_zero3_hook_is_paused_and_put_back_in_order():
    calls: list[str] = []
    module, start = _module_with_hooks(calls)
    accelerator = _accelerator(3, SimpleNamespace(fwd_pre_hook=start))
    check_zero3_hook(accelerator)  # where expected: no error

    restore = pause_zero3_start_hook(accelerator)
    module(torch.zeros(1, 2))
    assert calls == ["other"]
    restore()
    calls.clear()
    module(torch.zeros(1, 2))
    assert calls == ["deepspeed", "other"]


@pytest.mark.parametrize(
    "offload",
    [SimpleNamespace(), SimpleNamespace(forward_pre_hook=None), SimpleNamespace(fwd_pre_hook=object())],
    ids=["hook-gone", "hook-renamed", "not-a-torch-handle"],
)
def test_zero3_without_the_expected_hook_is_a_setup_error(offload):
    import deepspeed

    with pytest.raises(ConfigError, match=f"DeepSpeed {deepspeed.__version__}.*would hang"):
        check_zero3_hook(_accelerator(3, offload))
    with pytest.raises(ConfigError):
        pause_zero3_start_hook(_accelerator(3, offload))


def test_other_zero_stages_and_plain_runs_need_no_hook():
    check_zero3_hook(_accelerator(2, SimpleNamespace()))
    check_zero3_hook(SimpleNamespace())  # no DeepSpeed at all
    assert pause_zero3_start_hook(SimpleNamespace())() is None


# ---------------------------------------------------------------------- Trainer._save_checkpoint
def _best_saving_trainer(tmp_path):
    return make_trainer(
        "trainer", tmp_path, tok=tokenizer(), max_steps=2, n_eval=4, save_strategy="best",
        eval_strategy="steps", eval_steps=1, metric_for_best_model="faith/early_answering_aoc",
    )


def _stopping_config():
    return faith_config(faith_every_n_steps=0, faith_on_evaluate=True, faith_early_stopping=True)


@pytest.mark.slow
def test_the_private_save_is_checked_before_step_0(tmp_path, monkeypatch):
    trainer = _best_saving_trainer(tmp_path)
    check_save_checkpoint(trainer, early_stopping=True)  # the real Trainer: as expected

    # A transformers release that renamed it, or changed its arguments.
    def renamed(self, model, trial, metrics=None):
        raise AssertionError("never called")

    monkeypatch.setattr(type(trainer), "_save_checkpoint", renamed)
    with pytest.raises(ConfigError, match=r"_save_checkpoint\(model, trial\).*takes \('model', 'trial', 'metrics'\)"):
        attach(trainer, _stopping_config())
    monkeypatch.delattr(type(trainer), "_save_checkpoint")
    with pytest.raises(ConfigError, match="which is missing in transformers"):
        attach(trainer, _stopping_config())
    # Without early stopping (or with another save strategy) the private method is never called.
    check_save_checkpoint(trainer, early_stopping=False)
