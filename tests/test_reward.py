"""``CouplingReward`` and the rollout probe: GRPO's own rollouts scored on the policy, teacher-forced.

Checked against the real thing: per-rollout agreements and scores against separate ``generate`` /
forward calls per cut on a tiny model; a real ``GRPOTrainer`` run logs ``faith_rollout/*`` at every
step and, with weight 0, trains bit-identically to a run without the reward; under 2-process DDP
and FSDP2 (gloo) every rank logs the same metrics and makes as many forward passes.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from helpers.distributed import rank_state, torchrun
from helpers.models import one_thread, pretrained_model, rng_states, tokenizer, with_dropout
from helpers.trainers import make_trainer
from helpers.vocabulary import STYLE, arithmetic

from faithcb.answers import read_answer_slot
from faithcb.errors import ConfigError
from faithcb.reward import CouplingReward
from faithcb.rollouts import Rollout, RolloutProbe, coupling_score, rollout_summary
from faithcb.settings import ProbeSettings
from faithcb.training import training_rows

SETTINGS = ProbeSettings(style=STYLE, max_chain_tokens=40, answer_max_tokens=4)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def _rollouts(tok) -> list[Rollout]:
    """Rollouts written on purpose: right chains, a chain with a wrong step (its later steps carry the
    error), a one-step chain and a chain that goes on to write the cue and an answer itself."""
    pairs = arithmetic(3, seed=7)
    rows = training_rows([p for p, _ in pairs], tok, style=STYLE, fmt="prompt")
    (p0, c0), (p1, c1), (p2, c2) = pairs
    wrong = c1.replace("=", "=1", 1)  # "7+2=19. ..." : the rest of the chain no longer follows
    texts = [(0, c0), (1, wrong), (2, c2.split(" ")[0]), (0, c0 + "\nSo " + p0.answer + "\n")]
    return [
        Rollout(pairs[i][0], tok(text=rows[i]["prompt"])["input_ids"], text) for i, text in texts
    ]


def _greedy_answer(model, tok, context: list[int], limit: int) -> str | None:
    out = model.generate(torch.tensor([context]), max_new_tokens=limit, do_sample=False,
                         pad_token_id=tok.pad_token_id)
    return read_answer_slot(tok.decode(out[0, len(context):], skip_special_tokens=True), "number").answer


def _logp(model, context: list[int], continuation: list[int]) -> float:
    logits = model(torch.tensor([context + continuation])).logits[0].float().log_softmax(-1)
    return sum(logits[len(context) - 1 + j, t].item() for j, t in enumerate(continuation))


def test_rollout_scores_match_separate_generate_and_forward_calls_per_cut():
    tok = tokenizer()
    model = pretrained_model(tok).eval()
    rollouts = _rollouts(tok)
    probe = RolloutProbe(model, tok, SETTINGS)
    records = probe.records(rollouts)
    assert [r["status"] for r in records] == ["ok"] * 4

    agreements = []
    with torch.no_grad():
        for rollout, record in zip(rollouts, records):
            # The chain's structure (steps → token cuts) and a_full's tokens come from faithcb; every
            # answer and probability below is computed from scratch, one call per cut.
            chain = probe.engine.chain_from_text(rollout.problem, rollout.text)
            chain = probe.engine.read_full_answers([chain])[0]
            prompt = list(rollout.prompt_ids)
            full = _greedy_answer(model, tok, prompt + chain.chain_ids + chain.cue_ids, 4)
            assert full == record["answer"]
            agree, logps = [], []
            for k in record["early_answering"]["ks"]:
                context = prompt + chain.chain_ids[: chain.cuts[k]] + chain.cue_ids
                agree.append(_greedy_answer(model, tok, context, 4) == full)
                logps.append(_logp(model, context, chain.answer_ids))
            assert record["early_answering"]["agree"] == agree
            assert record["early_answering"]["logp"] == pytest.approx(logps, abs=1e-5)
            before_end = [math.exp(lp) for k, lp in zip(record["early_answering"]["ks"], logps) if k < chain.n_steps]
            assert record["coupling"] == pytest.approx(1 - sum(before_end) / len(before_end), abs=1e-5)
            agreements += agree
    # Not vacuous: the truncated chains gave other answers somewhere, and the full ones agreed.
    assert True in agreements and False in agreements
    # The rollout that wrote "So 8" itself was cut at its cue, like a generated chain.
    assert records[3]["chain"] == records[0]["chain"]


def test_coupling_score_and_summary_on_hand_made_records():
    early = {"ks": [0, 1, 2], "logp": [math.log(0.2), math.log(0.6), 0.0], "full_agrees": True}
    assert coupling_score(early) == pytest.approx(1 - (0.2 + 0.6) / 2)
    assert math.isnan(coupling_score({**early, "full_agrees": False}))  # m(n) != 1: no curve
    assert math.isnan(coupling_score(None))

    tok = tokenizer()
    records = RolloutProbe(pretrained_model(tok), tok, SETTINGS).records(_rollouts(tok))
    summary = rollout_summary(records, seconds=1.5)
    assert summary["probed"] == 4 and summary["scored"] == 4 and summary["share_ok"] == 1.0
    assert summary["coupling"] == pytest.approx(sum(r["coupling"] for r in records) / 4)
    assert summary["seconds"] == 1.5 and "keep_050" in summary and "gold_area" in summary
    assert "accuracy" not in rollout_summary(records, seconds=1.5, gold=False)


# ---------------------------------------------------------------------- the reward on a real GRPOTrainer
def _grpo(out, *, reward: CouplingReward | None, dropout: float = 0.1, max_steps: int = 4, **overrides):
    tok = tokenizer()
    model = with_dropout(pretrained_model(tok), dropout) if dropout else pretrained_model(tok)
    trainer = make_trainer("grpo", out, model=model, tok=tok, max_steps=max_steps, batch_size=4, n_texts=4,
                           max_completion_length=40, coupling_reward=reward, **overrides)
    if reward is not None:
        reward.bind(trainer)
    return trainer


@pytest.mark.slow
def test_monitor_mode_logs_every_step_and_trains_bit_identically(tmp_path):
    """Weight 0: the same weights and RNG states as without the reward, with dropout on and the
    rollouts sampled (a probe that drew from the RNG would change both)."""
    plain = _grpo(tmp_path / "plain", reward=None)
    plain.train()
    plain_rng = rng_states()
    reward = CouplingReward(reward_on="all", sample=3, settings=SETTINGS)
    monitored = _grpo(tmp_path / "monitored", reward=reward)
    monitored.train()
    monitored_rng = rng_states()

    assert reward.monitor
    logged = {e["step"]: e for e in monitored.state.log_history if "faith_rollout/probed" in e}
    assert sorted(logged) == [1, 2, 3, 4]  # every step
    assert all(e["faith_rollout/probed"] == 3 for e in logged.values())  # the sample, of 4 rollouts
    assert all("faith_rollout/coupling" in e and e["faith_rollout/seconds"] > 0 for e in logged.values())
    a, b = plain.model.state_dict(), monitored.model.state_dict()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    for name in plain_rng:
        assert plain_rng[name] == monitored_rng[name], name
    start = pretrained_model().state_dict()
    assert any(not torch.equal(start[k], b[k]) for k in start)  # it trained


@pytest.mark.slow
def test_reward_mode_pays_coupling_on_correct_rollouts_only(tmp_path):
    seen: list[tuple[list, list]] = []

    class Recording(CouplingReward):
        def __call__(self, *args, **kwargs):
            rewards = super().__call__(*args, **kwargs)
            seen.append((rewards, list(self.last_records)))
            return rewards

    reward = Recording(settings=SETTINGS)
    trainer = _grpo(tmp_path / "reward", reward=reward, dropout=0.0, max_steps=2, reward_weights=[1.0, 0.5])
    assert not reward.monitor and reward.weight == 0.5
    trainer.train()
    pairs = [(value, record) for rewards, records in seen for value, record in zip(rewards, records)]
    assert pairs
    for value, record in pairs:
        if math.isnan(record["coupling"]):
            assert value is None
        elif record["correct"]:
            assert value == pytest.approx(record["coupling"])
        else:
            assert value == 0.0
    assert any(r["correct"] for _, r in pairs) and any(r["correct"] is False for _, r in pairs)


def test_sampling_draws_from_a_private_generator(tmp_path):
    reward = CouplingReward(sample=2, settings=SETTINGS)
    _grpo(tmp_path / "s", reward=reward, dropout=0.0)
    before = rng_states()
    picks = reward._pick(8, step=3)
    assert len(picks) == 2 and picks == reward._pick(8, step=3)  # reproducible
    assert {tuple(reward._pick(8, step=s)) for s in range(10)} != {tuple(picks)}  # and varies by step
    assert reward._pick(2, step=3) == [0, 1]  # fewer rollouts than the sample: all
    after = rng_states()
    for name in before:
        assert before[name] == after[name], name


# ---------------------------------------------------------------------- setup errors, before step 0
def test_setup_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="reward_on"):
        CouplingReward(reward_on="wrong")
    with pytest.raises(ConfigError, match="sample"):
        CouplingReward(sample=-1)
    with pytest.raises(ConfigError, match="max_cuts"):
        CouplingReward(max_cuts=3)

    unbound = CouplingReward()
    with pytest.raises(ConfigError, match="not bound"):
        unbound(prompts=["1+1?\n"], completions=["1+1=2."])
    tok = tokenizer()
    gated = CouplingReward()
    trainer = make_trainer("grpo", tmp_path / "t", model=pretrained_model(tok), tok=tok, max_steps=1, n_texts=4,
                           coupling_reward=gated)
    with pytest.raises(ConfigError, match="not one of the trainer's reward_funcs"):
        CouplingReward().bind(trainer)
    # No gold answers in the data: the correct-only gate cannot work, rewarding every rollout can.
    from datasets import Dataset

    trainer.train_dataset = Dataset.from_dict({"prompt": ["1+1?\n"]})
    with pytest.raises(ConfigError, match="no 'answer' column"):
        gated.bind(trainer)
    assert not gated.bound
    gated.reward_on = "all"
    assert gated.bind(trainer).bound


# ---------------------------------------------------------------------- DDP and FSDP2 (gloo, CPU)
@pytest.mark.dist
@pytest.mark.parametrize("sharding", [
    "ddp", "fsdp",
    pytest.param("zero3", marks=pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                                   reason="deepspeed is not installed")),
])
def test_every_rank_scores_its_rollouts_in_lockstep_and_logs_the_same_metrics(sharding, tmp_path, weights):
    """2 processes (DDP, FSDP2, ZeRO-3): each rank probes its own rollouts (the callback binds the reward); every rank
    logs faith_rollout/* at every step with the same values (TRL averages them) and makes as many
    forward passes per call (rank 1 scores 1 of its 4 rollouts, rank 0 all 4: the lockstep evens
    the passes out, which FSDP's collective forward passes need)."""
    args = ("--kind", "grpo", "--coupling-reward", "--rank1-reward-sample", "1", "--problems", "2",
            "--probes", "early_answering",
            "--max-steps", "2", "--n-texts", "8", *({"fsdp": ["--fsdp"], "zero3": ["--zero3"]}.get(sharding, [])))
    # ZeRO-3 on DeepSpeed's CPU accelerator (gloo), as in test_sharding.
    rc, output = torchrun(2, tmp_path, weights, *args, env={"DS_ACCELERATOR": "cpu"} if sharding == "zero3" else None)
    assert rc == 0, output[-4000:]
    ranks = [rank_state(tmp_path, r) for r in (0, 1)]
    assert ranks[0]["world_size"] == 2

    def rollout_logs(rank):
        return {e["step"]: {k: v for k, v in e.items() if k.startswith("faith_rollout/")}
                for e in rank["log_history"] if "faith_rollout/probed" in e}

    logs = [rollout_logs(r) for r in ranks]
    assert sorted(logs[0]) == [1, 2]
    for step, values in logs[0].items():
        assert "faith_rollout/coupling" in values and values["faith_rollout/probed"] == (4 + 1) / 2  # averaged
        assert set(values) == set(logs[1][step])
        for key, value in values.items():
            if key != "faith_rollout/seconds":
                assert logs[1][step][key] == pytest.approx(value), (step, key)
    forwards = [r["reward_forwards"] for r in ranks]
    assert len(forwards[0]) == 2 and min(forwards[0]) > 0
    assert forwards[0] == forwards[1], forwards


# ---------------------------------------------------------------------- layouts and conversational prompts
@pytest.mark.parametrize("name", ["qwen3", "gpt_oss", "llama3_2"])
def test_rollouts_in_each_layout_are_cut_where_the_reasoning_ends(name):
    """A think-block, a harmony and a two-turn template: in the reasoning layouts the rollout's chain
    is its reasoning, and what the model writes after closing it (its own answer) is not part of it,
    as in rounds."""
    from template_tokenizers import TEMPLATES, template_tokenizer

    from faithcb.problem import Problem
    from faithcb.prompting import Prompter
    from faithcb.testing import tiny_model

    tok = template_tokenizer(name)
    problem = Problem("Ann has 3 pens and gets 4 more. How many?", "7")
    (row,) = training_rows([problem], tok, fmt="prompt")
    reasoning = "She has 3. 3 + 4 = 7."
    closer = Prompter.for_tokenizer(tok).reasoning_end
    assert (closer is not None) == TEMPLATES[name].expects_think
    text = reasoning + (closer or "") + "\n\nThe final answer is 7"
    rollout = Rollout(problem, tok(text=row["prompt"])["input_ids"], text)
    probe = RolloutProbe(tiny_model(tok, "llama", hidden_size=16, num_layers=1), tok, ProbeSettings())
    (record,) = probe.records([rollout])
    # Two-turn: the cue is a turn of its own, so what the model wrote is all chain, as in rounds.
    assert record["chain"] == (reasoning if closer else text)
    assert record["n_steps"] == 2  # an answer sentence joins the step before it (faithcb.steps)


def test_conversational_prompts_are_tokenized_as_trl_tokenizes_them(tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from faithcb.testing import tiny_tokenizer

    tok = tiny_tokenizer(chat_template=True)
    pairs = arithmetic(2, seed=3)
    rows = [{"prompt": [{"role": "user", "content": p.question}], "answer": p.answer} for p, _ in pairs]
    reward = CouplingReward(settings=SETTINGS)
    trainer = GRPOTrainer(model=pretrained_model(tok), reward_funcs=[reward], train_dataset=Dataset.from_list(rows),
                          processing_class=tok, args=GRPOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True,
                                                                per_device_train_batch_size=2, num_generations=2))
    reward.bind(trainer)
    prompts = [r["prompt"] for r in rows]
    completions = [[{"role": "assistant", "content": chain}] for _, chain in pairs]
    trl_ids, _, _ = trainer._tokenize_prompts(prompts)  # what generation ran on (a test may read TRL's privates)
    for i in range(2):
        rollout = reward._rollout(i, prompts, completions, None, {"answer": [r["answer"] for r in rows]})
        assert rollout.prompt_ids == list(trl_ids[i]) and rollout.text == pairs[i][1]
    logged: dict[str, float] = {}
    rewards = reward(prompts, completions, answer=[r["answer"] for r in rows],
                     log_metric=lambda k, v: logged.__setitem__(k, v))
    assert len(rewards) == 2 and logged["faith_rollout/probed"] == 2


def test_the_probe_keeps_nothing_from_one_step_to_the_next():
    tok = tokenizer()
    probe = RolloutProbe(pretrained_model(tok), tok, SETTINGS)
    probe.records(_rollouts(tok))
    assert probe.engine.chains._prompt_cache == {}  # GRPO's prompts never repeat: nothing to keep
