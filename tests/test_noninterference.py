"""Training with ``FaithfulnessCallback`` is bit-identical to training without it.

A test of this must be able to fail, so here everything that could expose a leak is switched on:
rounds sample their chains (``faith_do_sample``: they draw from the RNG), the model has attention
dropout (training draws from the RNG after every round, so a moved RNG changes the weights), and
training runs into a second epoch (the data order of epoch 2 is drawn after rounds have run).
Compared after training: every weight, bit for bit, and the Python, NumPy, torch (and CUDA) RNG
states. The callback leaves the RNG alone because ``ProbeLM.session`` restores every RNG state
after a round; without that restore these tests fail.
"""

from __future__ import annotations

import pytest
import torch
from helpers.distributed import rank_state, torchrun
from helpers.models import one_thread, pretrained_model, rng_states, tokenizer, with_dropout
from helpers.trainers import attach, faith_config, faith_logs, make_trainer

STEPS = 4  # 2 epochs: every kind below has 2 optimizer steps per epoch
N_TEXTS = {"trainer": 8, "sft": 8, "sft_lora": 8, "grpo": 4}  # GRPO: 2 prompts per step


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def _train(kind: str, out, *, with_callback: bool):
    tok = tokenizer()
    trainer = make_trainer(
        kind, out, model=with_dropout(pretrained_model(tok), 0.1), tok=tok, max_steps=STEPS, batch_size=4,
        n_texts=N_TEXTS[kind],
        # GRPO: room for chains to end, so completions (and rewards) differ and the policy moves.
        **({"max_completion_length": 40} if kind == "grpo" else {}),
    )
    if with_callback:
        attach(trainer, faith_config(faith_every_n_steps=1, faith_do_sample=True, faith_num_problems=3))
    trainer.train()
    return trainer, rng_states()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["trainer", "sft", "sft_lora", "grpo"])
def test_training_is_bit_identical_with_sampled_rounds_and_dropout(kind, tmp_path):
    plain, plain_rng = _train(kind, tmp_path / "plain", with_callback=False)
    probed, probed_rng = _train(kind, tmp_path / "probed", with_callback=True)

    assert sorted(faith_logs(probed)) == list(range(STEPS + 1))  # a round before every step and after the last
    assert max(e.get("epoch", 0) for e in probed.state.log_history) >= 2  # into the second epoch
    a, b = plain.model.state_dict(), probed.model.state_dict()
    assert a.keys() == b.keys()
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    assert not changed, f"weights differ after training with the callback: {changed[:5]}"
    for name in plain_rng:
        assert plain_rng[name] == probed_rng[name], f"the {name} RNG differs after training with the callback"

    # The comparison is not vacuous: the run trained, and a round does draw from the RNG.
    start = pretrained_model().state_dict()
    if kind == "sft_lora":
        assert any("lora_B" in k and v.abs().sum() > 0 for k, v in b.items())
    else:
        base = probed.model.state_dict()
        assert any(not torch.equal(start[k], base[k]) for k in start)


@pytest.mark.dist
def test_ddp_training_is_bit_identical_with_sampled_rounds_and_dropout(tmp_path, weights):
    """2-process DDP (gloo): each rank's weights and RNG states are those of the run without rounds."""
    probed, plain = tmp_path / "probed", tmp_path / "plain"
    args = ("--problems", "3", "--probes", "early_answering,filler", "--do-sample", "--dropout", "0.1",
            "--n-texts", "16", "--max-steps", "4", "--every", "1", "--save-state")
    rc, output = torchrun(2, probed, weights, *args)
    assert rc == 0, output[-4000:]
    rc, output = torchrun(2, plain, weights, *args, "--no-callback")
    assert rc == 0, output[-4000:]

    logged = [e for e in rank_state(probed, 0)["log_history"] if "faith/problems_total" in e]
    assert [e["step"] for e in logged] == [0, 1, 2, 3, 4]
    assert max(e.get("epoch", 0) for e in rank_state(probed, 0)["log_history"]) >= 2  # 16 texts, 8 a step
    for rank in (0, 1):
        a = torch.load(plain / f"state{rank}.pt", weights_only=False)
        b = torch.load(probed / f"state{rank}.pt", weights_only=False)
        changed = [k for k in a["weights"] if not torch.equal(a["weights"][k], b["weights"][k])]
        assert not changed, f"rank {rank}: weights differ with the callback: {changed[:5]}"
        for name in a["rng"]:
            assert a["rng"][name] == b["rng"][name], f"rank {rank}: the {name} RNG differs with the callback"


# ---------------------------------------------------------------------------------- regressions
# Moved from tests/test_regressions.py (issue 13's review, one bug each; issue 19 sorted them by subject).


@pytest.mark.slow
def test_a_round_runs_in_eval_mode_without_gradients_and_training_resumes_in_train_mode(tok, tmp_path, one_thread):
    """Regression (issue 13, bug 7): probing outside the model session (train mode, gradients on).

    A forward pre-hook on the model records ``model.training`` and ``torch.is_grad_enabled()`` at
    every forward. The trainer's forwards carry ``labels``; a round's (generation, scoring) do not.
    """
    trainer = make_trainer("trainer", tmp_path, tok=tok, max_steps=4)
    model = trainer.model
    seen: list[tuple[bool, bool, bool]] = []  # (training forward, model.training, grad enabled)

    def hook(module, args, kwargs):
        seen.append(("labels" in kwargs, module.training, torch.is_grad_enabled()))

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        attach(trainer, faith_config(faith_every_n_steps=2, faith_probes=["early_answering"], faith_num_problems=2))
        trainer.train()
    finally:
        handle.remove()
    probing = [s for s in seen if not s[0]]
    training = [s for s in seen if s[0]]
    assert probing and len(training) == 4
    assert all(not is_training and not grad for _, is_training, grad in probing), (
        f"{sum(1 for _, t, g in probing if t or g)} of {len(probing)} probe forwards ran in train mode or with "
        "gradients enabled"
    )
    assert all(is_training and grad for _, is_training, grad in training), "training resumed without train mode"
    assert model.training  # left in train mode after the closing round, as the Trainer had it

