"""FaithfulnessCallback inside real (tiny) Trainer, SFTTrainer (+LoRA) and GRPOTrainer runs.

Every run is a few optimizer steps of a 2-layer llama on CPU (see ``tests/helpers/trainers.py``). The
early-stopping and failure tests replace ``FaithfulnessEngine.records`` with scripted records so
the metric each round reports, and hence the step training must stop at, is known in advance.
"""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from helpers.models import one_thread, pretrained_model, tokenizer
from helpers.scripted import script_records, scripted_records
from helpers.trainers import attach, faith_config, faith_logs, make_trainer, read_history
from helpers.vocabulary import STYLE
from helpers.vocabulary import arithmetic_problems as probe_problems
from transformers import TrainerCallback

from faithcb.callback import FaithfulnessCallback
from faithcb.engine import FaithfulnessEngine
from faithcb.errors import ConfigError
from faithcb.rounds import RoundRunner

pytestmark = pytest.mark.slow  # every test trains a tiny Trainer / SFTTrainer / GRPOTrainer

# Reported on every round, whatever the model writes (unparsed answers included).
ALWAYS = ("faith/problems_total", "faith/problems_scored", "faith/unparsed_rate", "faith/mean_steps", "faith/mean_chain_tokens")
# Reported once answers parse (the pre-trained tiny model's do).
PROBED = ("faith/accuracy", "faith/early_answering_aoc", "faith/filler_invariance")


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture
def tok():
    # A fresh tokenizer per test: a round that leaked a change into a shared one would hide it.
    return tokenizer()


def _count_measures(monkeypatch) -> list[bool]:
    """Record the ``base`` flag of every ``RoundRunner.measure`` call (the real method still runs)."""
    calls: list[bool] = []
    real = RoundRunner.measure

    def counting(self, *, base):
        calls.append(base)
        return real(self, base=base)

    monkeypatch.setattr(RoundRunner, "measure", counting)
    return calls


# ---------------------------------------------------------------------- metrics at the cadence
@pytest.mark.parametrize("kind", ["trainer", "sft", "sft_lora", "grpo"])
def test_rounds_logged_at_cadence(kind, tok, tmp_path, monkeypatch):
    calls = _count_measures(monkeypatch)
    trainer = make_trainer(kind, tmp_path, tok=tok, max_steps=4)
    attach(trainer, faith_config(faith_every_n_steps=2))
    trainer.train()

    assert trainer.state.global_step == 4
    rounds = faith_logs(trainer)
    assert sorted(rounds) == [0, 2, 4]
    for step, logs in rounds.items():
        missing = [k for k in ALWAYS + PROBED if k not in logs]
        assert not missing, f"step {step}: {missing} not logged"
        assert logs["faith/problems_total"] == 4 and 1 <= logs["faith/problems_scored"] <= 4
        assert logs["faith/unparsed_rate"] < 1
        assert 0 <= logs["faith/early_answering_aoc"] <= 1
        assert "faith/early_stop" not in logs and "faith/probe_failed" not in logs
    # Intervals sit in their own section, one pair per metric.
    ci = faith_logs(trainer, "faith_ci/")
    assert ci[0]["faith_ci/early_answering_aoc_low"] <= rounds[0]["faith/early_answering_aoc"]
    # One log entry per round: the trainer's own loss logs stay separate.
    entries = [e for e in trainer.state.log_history if "faith/problems_scored" in e]
    assert [e["step"] for e in entries] == [0, 2, 4]
    assert all("loss" not in e for e in entries)
    # A round does not swallow the trainer's own log at its step (logging_steps=1: every step).
    train_logs = [e for e in trainer.state.log_history if "loss" in e]
    assert [e["step"] for e in train_logs] == [1, 2, 3, 4]
    # The callback logs through the base Trainer.log: TRL's own log() would merge (and clear) the
    # trainer's accumulated metrics into the round's entry and take them from the next loss log.
    own = {"sft": "mean_token_accuracy", "sft_lora": "mean_token_accuracy", "grpo": "reward"}.get(kind)
    if own:
        assert all(own in e for e in train_logs), train_logs
        assert all(own not in e for e in entries)

    history = read_history(tmp_path)
    model_lines = [h for h in history if h["role"] == "model"]
    assert [h["step"] for h in model_lines] == [0, 2, 4]
    assert [h["reason"] for h in model_lines] == ["start", "schedule", "end"]
    assert all("early_answering_aoc" in h["metrics"] for h in model_lines)

    base = faith_logs(trainer, "faith_base/")
    if kind == "sft_lora":
        # The frozen base model is measured once and its numbers re-logged with every round.
        assert calls.count(True) == 1
        assert calls.count(False) == 3
        assert sorted(base) == [0, 2, 4]
        for logs in base.values():
            assert "faith_base/early_answering_aoc" in logs and "faith_base/problems_scored" in logs
        assert base[0]["faith_base/early_answering_aoc"] == base[4]["faith_base/early_answering_aoc"]
        base_lines = [h for h in history if h["role"] == "base"]
        assert [h["step"] for h in base_lines] == [0, 2, 4]
        assert len(history) == 6
    else:
        assert calls == [False, False, False]
        assert base == {}
        assert len(history) == 3


def test_training_changes_the_logged_metrics(tok, tmp_path):
    """The rounds measure the live weights: a fast learning rate moves the metrics between rounds."""
    trainer = make_trainer("trainer", tmp_path, tok=tok, max_steps=4, learning_rate=3e-2)
    attach(trainer, faith_config(faith_every_n_steps=4))
    trainer.train()
    rounds = faith_logs(trainer)
    assert sorted(rounds) == [0, 4]
    keys = ("faith/mean_chain_tokens", "faith/early_answering_aoc", "faith/unparsed_rate", "faith/mean_steps")
    assert any(rounds[0].get(k) != rounds[4].get(k) for k in keys)


@pytest.mark.parametrize(
    ("overrides", "max_steps", "expected"),
    [
        ({"faith_every_n_steps": 0, "faith_num_rounds": 3}, 6, [0, 2, 4, 6]),
        ({"faith_every_n_steps": 0, "faith_num_rounds": 2, "faith_round_at_start": False}, 4, [2, 4]),
        ({"faith_every_n_steps": 2, "faith_round_at_end": False}, 5, [0, 2, 4]),
        ({"faith_every_n_steps": 2}, 5, [0, 2, 4, 5]),
    ],
)
def test_schedule(overrides, max_steps, expected, tok, tmp_path, monkeypatch):
    script_records(monkeypatch, [0.5] * 10)
    trainer = make_trainer("trainer", tmp_path, tok=tok, max_steps=max_steps)
    attach(trainer, faith_config(**overrides))
    trainer.train()
    assert sorted(faith_logs(trainer)) == expected


def test_rounds_on_evaluate(tok, tmp_path, monkeypatch):
    """faith_on_evaluate alone probes after each evaluation, at the evaluation's step."""
    script_records(monkeypatch, [0.5] * 10)
    trainer = make_trainer(
        "trainer", tmp_path, tok=tok, max_steps=4, n_eval=4, eval_strategy="steps", eval_steps=2
    )
    cfg = faith_config(
        faith_every_n_steps=0,
        faith_num_rounds=0,
        faith_round_at_start=False,
        faith_round_at_end=False,
        faith_on_evaluate=True,
    )
    attach(trainer, cfg)
    trainer.train()
    assert sorted(faith_logs(trainer)) == [2, 4]
    assert [h["reason"] for h in read_history(tmp_path)] == ["evaluate", "evaluate"]


# ---------------------------------------------------------------------- non-interference
class _Snapshot(TrainerCallback):
    """Records what a probe round must leave untouched, at the hooks where rounds happen."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.seen: list[tuple] = []

    def _take(self, state):
        model = self.trainer.model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.seen.append(
            (
                state.global_step,
                model.training,
                base.config.use_cache,
                self.trainer.processing_class.padding_side,
                torch.is_grad_enabled(),
                base.is_gradient_checkpointing if hasattr(base, "is_gradient_checkpointing") else None,
                torch.get_rng_state().clone(),
            )
        )

    def on_train_begin(self, args, state, control, **kwargs):
        self._take(state)

    def on_step_end(self, args, state, control, **kwargs):
        self._take(state)


def _train(kind, tok, out, *, with_callback: bool, gradient_checkpointing: bool = False):
    trainer = make_trainer(
        kind,
        out,
        model=pretrained_model(tok),
        tok=tok,
        max_steps=4,
        **({} if kind == "trainer" else {"gradient_checkpointing": gradient_checkpointing}),
    )
    before = after = None
    if with_callback:
        before = _Snapshot(trainer)
        trainer.add_callback(before)
        attach(trainer, faith_config(faith_every_n_steps=1))
        after = _Snapshot(trainer)
        trainer.add_callback(after)
    trainer.train()
    return trainer, before, after


@pytest.mark.parametrize(
    ("kind", "gradient_checkpointing"), [("trainer", False), ("sft_lora", False), ("sft_lora", True)]
)
def test_callback_does_not_change_training(kind, gradient_checkpointing, tok, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # is_gradient_checkpointing is deprecated
        plain, _, _ = _train(
            kind, tok, tmp_path / "plain", with_callback=False, gradient_checkpointing=gradient_checkpointing
        )
        probed, before, after = _train(
            kind, tok, tmp_path / "probed", with_callback=True, gradient_checkpointing=gradient_checkpointing
        )

    assert sorted(faith_logs(probed)) == [0, 1, 2, 3, 4]
    a = dict(plain.model.named_parameters())
    b = dict(probed.model.named_parameters())
    assert a.keys() == b.keys()
    changed = [n for n in a if not torch.equal(a[n].detach(), b[n].detach())]
    assert not changed, f"weights differ after training with the callback: {changed[:5]}"
    # The run did train (the comparison above is not vacuous).
    start = pretrained_model(tok).state_dict()
    trained = plain.model.get_base_model() if hasattr(plain.model, "get_base_model") else plain.model
    if kind == "trainer":
        assert any(not torch.equal(start[n], p) for n, p in trained.state_dict().items())
    else:
        assert any("lora_B" in n and p.abs().sum() > 0 for n, p in plain.model.named_parameters())

    # Mode, cache flag, padding side, grad mode, checkpointing and RNG are as before each round.
    assert len(before.seen) == len(after.seen) == 5
    assert {s[3] for s in after.seen} == {"right"}
    for x, y in zip(before.seen, after.seen):
        assert x[:6] == y[:6]
        assert torch.equal(x[6], y[6]), f"step {x[0]}: the global RNG moved during the round"
    if gradient_checkpointing:
        assert all(s[5] for s in after.seen)


# ---------------------------------------------------------------------- early stopping


@pytest.mark.parametrize(
    ("values", "settings", "stop_step"),
    [
        # best 0.8; 0.78 is within min_delta (good); 0.6 bad (1); 0.7 bad (2) -> stop at 3.
        ([0.8, 0.78, 0.6, 0.7, 0.1, 0.1, 0.1], {}, 3),
        # A good round in between resets the count: bad, good, bad, bad -> stop at 4.
        ([0.8, 0.6, 0.8, 0.6, 0.6, 0.6, 0.6], {}, 4),
        # Patience 1 stops at the first bad round.
        ([0.8, 0.8, 0.5, 0.5, 0.5, 0.5, 0.5], {"faith_stop_patience": 1}, 2),
        # Against the baseline 0.5 the later 0.7s are fine; against the best 0.9 they are bad.
        ([0.5, 0.9, 0.7, 0.7, 0.7, 0.7, 0.7], {"faith_stop_reference": "baseline"}, None),
        ([0.5, 0.9, 0.7, 0.7, 0.7, 0.7, 0.7], {"faith_stop_reference": "best"}, 3),
        # min_delta 0.3: drops of 0.2 do not count.
        ([0.8, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6], {"faith_stop_min_delta": 0.3}, None),
        # filler invariance: lower = more coupled, so its mode is "min" by itself and rises are bad.
        ([0.2, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], {"faith_stop_metric": "filler_invariance"}, 2),
        ([0.2, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], {"faith_stop_metric": "filler_invariance", "faith_stop_mode": "min"}, 2),
        # ... and falls are not.
        ([0.8, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], {"faith_stop_metric": "filler_invariance"}, None),
    ],
)
def test_early_stopping_stops_at_the_predicted_step(values, settings, stop_step, tok, tmp_path, monkeypatch):
    script_records(monkeypatch, values)
    trainer = make_trainer("trainer", tmp_path, tok=tok, max_steps=6)
    cfg = faith_config(
        # The stopper's mechanics on scripted values: 'best' without the interval, patience 2, named
        # (not the defaults, which docs/validation.md chose: the paired change needs real records).
        **{"faith_every_n_steps": 1, "faith_early_stopping": True, "faith_stop_patience": 2,
           "faith_stop_reference": "best", "faith_stop_require_ci": False, **settings}
    )
    cb = attach(trainer, cfg)
    trainer.train()

    rounds = faith_logs(trainer)
    stopped = [s for s, logs in rounds.items() if logs.get("faith/early_stop") == 1.0]
    history = read_history(tmp_path)
    if stop_step is None:
        assert trainer.state.global_step == 6
        assert stopped == [] and cb.stopped_at is None
        assert not list(tmp_path.glob("checkpoint-*"))
        assert all("early_stop" not in h for h in history)
        return
    assert trainer.state.global_step == stop_step
    assert sorted(rounds) == list(range(stop_step + 1))  # no extra round at train end
    assert stopped == [stop_step]
    assert cb.stopped_at == stop_step
    assert (tmp_path / f"checkpoint-{stop_step}").is_dir()
    assert [p.name for p in tmp_path.glob("checkpoint-*")] == [f"checkpoint-{stop_step}"]
    last = history[-1]
    assert last["step"] == stop_step
    assert cfg.faith_stop_metric in last["early_stop"] and cfg.faith_stop_reference in last["early_stop"]
    assert all("early_stop" not in h for h in history[:-1])


def test_resume_continues_early_stopping_state(tok, tmp_path, monkeypatch):
    cfg = faith_config(faith_every_n_steps=2, faith_early_stopping=True, faith_stop_patience=3,
                       faith_stop_reference="best", faith_stop_require_ci=False)
    # Run 1: best 0.8 at step 0, a bad round at step 2 (checkpoint-2 saved), then fine rounds.
    script_records(monkeypatch, [0.8, 0.6, 0.8, 0.8])
    first = make_trainer("trainer", tmp_path, tok=tok, max_steps=6, save_strategy="steps", save_steps=2)
    attach(first, cfg)
    first.train()
    assert first.state.global_step == 6
    assert (tmp_path / "checkpoint-2").is_dir()
    assert [h["step"] for h in read_history(tmp_path)] == [0, 2, 4, 6]

    # Run 2 resumes at step 2: two more bad rounds make three with the restored one -> stop at 6.
    # (Reset state would take 0.5 at step 4 as the new best and never stop.)
    rounds_run = script_records(monkeypatch, [0.5, 0.5, 0.5])
    second = make_trainer("trainer", tmp_path, tok=tok, max_steps=6, save_strategy="steps", save_steps=2)
    cb = attach(second, cfg)
    restored = {}

    class Peek(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            restored.update(
                bad_rounds=cb.bad_rounds,
                best=cb.best,
                baseline=cb.baseline,
                history=[h["step"] for h in cb.history],
                probed=list(cb.probed_steps),
            )

    second.add_callback(Peek())
    second.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))

    assert restored == {"bad_rounds": 1, "best": 0.8, "baseline": 0.8, "history": [0, 2], "probed": [0, 2]}
    assert len(rounds_run) == 2  # steps 4 and 6 only: no new step-0 round, step 2 not repeated
    assert cb.probed_steps == [0, 2, 4, 6]
    assert [h["step"] for h in cb.history] == [0, 2, 4, 6]
    assert cb.stopped_at == 6 and cb.bad_rounds == 3
    entries = [e for e in second.state.log_history if "faith/problems_scored" in e]
    assert [e["step"] for e in entries] == [0, 2, 4, 6]
    assert entries[-1].get("faith/early_stop") == 1.0
    # The JSONL history is rewound to the checkpoint too: each step once, the resumed values last.
    history = read_history(tmp_path)
    assert [h["step"] for h in history] == [0, 2, 4, 6]
    assert [h["metrics"]["early_answering_aoc"]["value"] for h in history] == [0.8, 0.6, 0.5, 0.5]
    assert "early_stop" in history[-1]


# ---------------------------------------------------------------------- a shared step-0 round
def test_a_shared_start_round_is_logged_not_measured(tok, tmp_path, monkeypatch):
    """Two runs from one starting model (a sweep's arms): the second logs the first's step-0 round."""
    first = make_trainer("trainer", tmp_path / "a", model=pretrained_model(tok), tok=tok, max_steps=2)
    measured = attach(first, faith_config(faith_every_n_steps=2))
    first.train()
    assert measured.start_round is not None and len(measured.start_round.records) == 4

    calls = _count_measures(monkeypatch)
    second = make_trainer("trainer", tmp_path / "b", model=pretrained_model(tok), tok=tok, max_steps=2)
    shared = FaithfulnessCallback(
        second, probe_problems(), faith_config(faith_every_n_steps=2), style=STYLE, start_round=measured.start_round
    )
    second.add_callback(shared)
    second.train()

    assert calls == [False]  # step 2 only: step 0 was not measured again
    def same(x, y):  # NaN-aware (an unmeasurable metric is NaN in both)
        return json.dumps(x, sort_keys=True) == json.dumps(y, sort_keys=True)

    mine, theirs = faith_logs(second)[0], faith_logs(first)[0]
    mine.pop("faith/seconds"), theirs.pop("faith/seconds")
    assert same(mine, theirs) and "faith/early_answering_aoc" in mine
    lines = [h for h in read_history(tmp_path / "b") if h["role"] == "model"]
    assert [h["step"] for h in lines] == [0, 2] and same(lines[0]["metrics"], read_history(tmp_path / "a")[0]["metrics"])
    assert "faith_delta/mean_chain_tokens" in faith_logs(second, prefix="faith")[2]  # paired with the shared round
    assert measured.start_round.scalars["seconds"] > 0  # the given round's own timing is left alone


def test_a_start_round_of_other_problems_or_never_used_is_refused(tok, tmp_path):
    trainer = make_trainer("trainer", tmp_path / "a", model=pretrained_model(tok), tok=tok, max_steps=2)
    measured = attach(trainer, faith_config(faith_every_n_steps=2))
    trainer.train()
    other = make_trainer("trainer", tmp_path / "b", tok=tok, max_steps=2)
    with pytest.raises(ConfigError, match="start_round: it probed other problems"):
        FaithfulnessCallback(other, probe_problems(seed=6), faith_config(), style=STYLE, start_round=measured.start_round)
    with pytest.raises(ConfigError, match="faith_round_at_start=False"):
        FaithfulnessCallback(
            other, probe_problems(), faith_config(faith_round_at_start=False), style=STYLE,
            start_round=measured.start_round,
        )


# ---------------------------------------------------------------------- failures
def test_probe_failure_is_reported_and_training_goes_on(tok, tmp_path, monkeypatch):
    def broken(self, problems):
        raise RuntimeError("boom in the probe")

    monkeypatch.setattr(FaithfulnessEngine, "records", broken)
    trainer = make_trainer("trainer", tmp_path, tok=tok, max_steps=4)
    attach(trainer, faith_config(faith_every_n_steps=2, faith_strict=False))
    with pytest.warns(RuntimeWarning, match="boom in the probe") as caught:
        trainer.train()
    assert sum("boom" in str(w.message) for w in caught) == 3
    assert trainer.state.global_step == 4
    rounds = faith_logs(trainer)
    assert sorted(rounds) == [0, 2, 4]
    # A failed round logs the failure and what probing has cost so far, nothing else.
    cost = {"faith/overhead_fraction", "faith/rounds_skipped"}
    assert all({k: v for k, v in logs.items() if k not in cost} == {"faith/probe_failed": 1.0} for logs in rounds.values())
    history = read_history(tmp_path)
    assert [h["step"] for h in history] == [0, 2, 4]
    assert all("RuntimeError: boom in the probe" in h["error"] for h in history)


def test_probe_failure_raises_when_strict(tok, tmp_path, monkeypatch):
    def broken(self, problems):
        raise RuntimeError("boom in the probe")

    monkeypatch.setattr(FaithfulnessEngine, "records", broken)
    trainer = make_trainer("trainer", tmp_path, tok=tok, max_steps=4)
    attach(trainer, faith_config(faith_every_n_steps=2, faith_strict=True))
    with pytest.raises(RuntimeError, match="boom in the probe"):
        trainer.train()


def test_nan_metric_does_not_count_for_early_stopping(tok, tmp_path, monkeypatch):
    """Rounds whose watched metric is NaN (nothing scorable) neither stop training nor reset the count."""
    script_records(monkeypatch, [0.8, 0.5, math.nan, 0.5, 0.8, 0.8, 0.8])
    trainer = make_trainer("trainer", tmp_path, tok=tok, max_steps=6)
    cfg = faith_config(faith_every_n_steps=1, faith_early_stopping=True, faith_stop_patience=2,
                       faith_stop_reference="best", faith_stop_require_ci=False)
    attach(trainer, cfg)
    trainer.train()
    assert trainer.state.global_step == 3


# ---------------------------------------------------------------------- paired changes and n
def _records_per_problem(values: list[float]) -> list[dict]:
    """One record per problem, problem i with early-answering AOC values[i]."""
    return [{**r, "early_answering": {**r["early_answering"], "aoc": v}}
            for r, v in zip(scripted_records(0.0, len(values)), values)]


def test_rounds_log_n_and_the_paired_change_from_the_baseline(tok, tmp_path, monkeypatch):
    # 16 problems: with fewer, a paired interval cannot rule out that some problems gained.
    base = [0.25 + 0.045 * i for i in range(16)]
    rounds = [base, [v - 0.2 for v in base], [v - 0.2 + (0.01 if i % 2 else -0.01) for i, v in enumerate(base)]]
    queue = list(rounds)
    monkeypatch.setattr(FaithfulnessEngine, "records", lambda self, problems: _records_per_problem(queue.pop(0)))
    trainer = make_trainer("trainer", tmp_path, tok=tok, max_steps=4)
    attach(trainer, faith_config(faith_every_n_steps=2))
    trainer.train()
    logs = faith_logs(trainer, prefix="faith")
    assert logs[0]["faith_n/early_answering_aoc"] == 16.0
    assert "faith_delta/early_answering_aoc" not in logs[0]  # the baseline round itself
    for step in (2, 4):
        assert logs[step]["faith_delta_n/early_answering_aoc"] == 16.0
        delta = logs[step]["faith_delta/early_answering_aoc"]
        low, high = logs[step]["faith_delta_ci/early_answering_aoc_low"], logs[step]["faith_delta_ci/early_answering_aoc_high"]
        assert delta == pytest.approx(-0.2) and low <= -0.2 <= high and high < 0
    # The unpaired round intervals of step 0 and step 4 overlap; the paired one excludes zero.
    ci = faith_logs(trainer, "faith_ci/")
    assert ci[0]["faith_ci/early_answering_aoc_low"] < ci[4]["faith_ci/early_answering_aoc_high"]


def test_a_headline_metric_that_cannot_be_measured_is_flagged(tok, tmp_path, monkeypatch):
    """Records without early answering (e.g. every chain truncated): faith_missing/ says so."""
    no_probe = [{k: v for k, v in r.items() if k != "early_answering"} for r in scripted_records(0.5)]
    monkeypatch.setattr(FaithfulnessEngine, "records", lambda self, problems: [dict(r) for r in no_probe])
    trainer = make_trainer("trainer", tmp_path, tok=tok, max_steps=2)
    attach(trainer, faith_config(faith_every_n_steps=2))
    trainer.train()
    logs = faith_logs(trainer, prefix="faith")
    assert all(step_logs.get("faith_missing/early_answering_aoc") == 1.0 for step_logs in logs.values())
    assert all("faith/early_answering_aoc" not in step_logs for step_logs in logs.values())
    assert all("faith_missing/filler_invariance" not in step_logs for step_logs in logs.values())


def test_stop_on_nan_without_early_stopping_trains_to_the_end(tok, tmp_path, monkeypatch):
    """Regression (issue 19, bug 2): faith_stop_on_nan alone must not stop a run whose stopping is off."""
    script_records(monkeypatch, [0.8, math.nan, math.nan, math.nan, math.nan])
    trainer = make_trainer("trainer", tmp_path, tok=tok, max_steps=4)
    cb = attach(trainer, faith_config(faith_every_n_steps=1, faith_early_stopping=False,
                                      faith_stop_on_nan=True, faith_stop_patience=1))
    trainer.train()
    assert trainer.state.global_step == 4 and cb.stopped_at is None
    assert not any("faith/early_stop" in e for e in trainer.state.log_history)


def test_a_runner_injected_through_the_seam_measures_every_round(tok, tmp_path):
    """``runner_class`` is the seam for tests: the callback's rounds come from the injected runner."""
    from faithcb.results import aggregate

    class Scripted(RoundRunner):
        def measure(self, *, base):
            return aggregate(scripted_records(0.25, len(self.problems))), None

    class Callback(FaithfulnessCallback):
        runner_class = Scripted

    trainer = make_trainer("trainer", tmp_path, tok=tok, max_steps=2)
    # The model is never probed: a forward pass without gradients (a round's) would fail.
    def no_rounds(_module, _args):
        assert torch.is_grad_enabled(), "the real model was probed"

    trainer.model.get_input_embeddings().register_forward_pre_hook(no_rounds)
    trainer.add_callback(Callback(trainer, probe_problems(), faith_config(faith_every_n_steps=1), style=STYLE))
    trainer.train()
    rounds = faith_logs(trainer)
    assert sorted(rounds) == [0, 1, 2]
    assert all(logs["faith/early_answering_aoc"] == 0.25 for logs in rounds.values())
