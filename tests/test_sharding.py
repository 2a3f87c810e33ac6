"""Rounds under several processes: every rank does the same amount of collective work.

With sharded weights (FSDP, DeepSpeed ZeRO-3 without gathered weights) each forward pass is a
collective, so a round in which ranks make different numbers of passes hangs the job. Ranks probe
different problems, whose chains differ in length, so the callback pads the split (every rank
handles as many problems) and runs the passes in lockstep (``faithcb.distributed.forwards_in_lockstep``).
Here that is checked under real 2-process DDP on CPU (gloo), counting each rank's passes, and
under FSDP2 through accelerate on CPU (gloo): without the lockstep the first round there dies in a
collective mismatch (gloo: "Received data size doesn't match expected size").
"""

from __future__ import annotations

import importlib.util

import pytest
from helpers.distributed import TIMINGS, rank_state, round_records, torchrun

from faithcb.distributed import share as _share


def test_share_pads_every_rank_to_the_longest_share():
    problems = list("abcde")
    shares = [_share(problems, rank, 2) for rank in (0, 1)]
    assert shares == [(["a", "b", "c"], []), (["d", "e"], ["d"])]
    # Fewer problems than ranks: an empty share is padded too (it still must run the passes).
    assert _share(["a"], 1, 3) == ([], ["a"])
    assert _share(["a"], 0, 3) == (["a"], [])
    # Concatenated in rank order the real shares are the round's problems, in order.
    for n in range(0, 8):
        for world in (1, 2, 3, 4):
            parts = [_share(list(range(n)), r, world) for r in range(world)]
            assert [p for mine, _ in parts for p in mine] == list(range(n))
            assert len({len(mine) + len(pad) for mine, pad in parts}) == 1 or n == 0


@pytest.mark.dist
def test_ddp_ranks_make_the_same_forward_passes(tmp_path, weights):
    """5 problems on 2 ranks (3 + 2, the short share padded): equal passes per rank at every round,
    and the gathered records equal a single process's (the padding's records are discarded)."""
    one, two = tmp_path / "one", tmp_path / "two"
    args = ("--problems", "5", "--probes", "early_answering,filler")
    rc, output = torchrun(1, one, weights, *args)
    assert rc == 0, output[-4000:]
    rc, output = torchrun(2, two, weights, *args)
    assert rc == 0, output[-4000:]

    r0, r1 = rank_state(two, 0), rank_state(two, 1)
    # Rank 1 probes its 2 problems, then 1 repeated problem as padding, at each round (steps 0, 2).
    assert r0["records_calls"] == [3, 3] and r0["padding_calls"] == []
    assert r1["records_calls"] == [2, 2] and r1["padding_calls"] == [1, 1]
    # The same number of forward passes on both ranks, at both rounds.
    assert len(r0["round_forwards"]) == 2 and min(r0["round_forwards"]) > 0
    assert r0["round_forwards"] == r1["round_forwards"], (r0["round_forwards"], r1["round_forwards"])

    # Step 0 (weights still identical): the gathered round is the single process's, padding gone.
    single, gathered = round_records(one, 0), round_records(two, 0)
    assert len(gathered) == 5
    for a, b in zip(single, gathered, strict=True):
        for key in ("id", "chain", "answer", "status", "n_steps", "chain_tokens"):
            assert a[key] == b[key], (a["id"], key)
        for probe in ("early_answering", "filler"):
            assert (probe in a) == (probe in b)
            if probe in a:
                assert a[probe]["answers"] == b[probe]["answers"], (a["id"], probe)
                assert b[probe]["logp"] == pytest.approx(a[probe]["logp"], abs=1e-4), (a["id"], probe)


# ---------------------------------------------------------------------- FSDP2 (accelerate, gloo, CPU)
def _state(out, rank: int = 0) -> dict:
    import torch

    return torch.load(out / f"state{rank}.pt", weights_only=False)


def _faith_without_timings(rank: dict) -> dict[int, dict[str, float]]:
    rounds: dict[int, dict[str, float]] = {}
    for entry in rank["log_history"]:
        keys = {k: v for k, v in entry.items() if k.startswith("faith") and k not in TIMINGS | {"faith_base/seconds"}}
        if keys:
            rounds.setdefault(entry["step"], {}).update(keys)
    return rounds


def _checkpoint_weights(kind: str, checkpoint) -> dict:
    """The checkpoint loaded the way a user would (transformers / PEFT), as a state dict."""
    from helpers.models import pretrained_model

    if kind == "sft_lora":
        from peft import PeftModel

        return PeftModel.from_pretrained(pretrained_model(), checkpoint).state_dict()
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(checkpoint).state_dict()


@pytest.mark.dist
@pytest.mark.parametrize("kind", ["trainer", "sft_lora"])
def test_fsdp2_rounds_leave_training_and_checkpoint_unchanged(kind, tmp_path, weights):
    """Full fine-tuning and LoRA under FSDP2 (accelerate's path, torch ``fully_shard`` on gloo):
    the ranks log the same rounds, make the same forward passes, train the same weights as without
    the callback, and the saved checkpoint loads to exactly the trained weights."""
    import torch

    probed, plain = tmp_path / "probed", tmp_path / "plain"
    # Sampled chains and dropout: a round that moved the RNG would change what training draws.
    args = ("--fsdp", "--kind", kind, "--problems", "3", "--probes", "early_answering,filler", "--max-steps", "2",
            "--save-state", "--save-steps", "2", "--do-sample", "--dropout", "0.1")
    rc, output = torchrun(2, probed, weights, *args)
    assert rc == 0, output[-4000:]
    rc, output = torchrun(2, plain, weights, *args, "--no-callback")
    assert rc == 0, output[-4000:]

    assert rank_state(probed, 0)["world_size"] == 2
    # Training is unchanged by the rounds (full weights gathered from the shards on rank 0).
    trained = _rounds_agree_and_training_unchanged(probed, plain, kind, weights, "FSDP")

    # The checkpoint written at the last step loads to the trained weights, bit for bit.
    loaded = _checkpoint_weights(kind, probed / "run" / "checkpoint-2")
    assert loaded.keys() == trained.keys()
    differ = [k for k in trained if not torch.equal(loaded[k], trained[k])]
    assert not differ, f"checkpoint differs from the trained weights: {differ[:5]}"


# ---------------------------------------------------------------------- DeepSpeed ZeRO-3 (CPU accelerator)
@pytest.mark.dist
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed")
@pytest.mark.parametrize("kind", ["trainer", "sft_lora"])
def test_zero3_rounds_leave_training_and_checkpoint_unchanged(kind, tmp_path, weights):
    """The same under DeepSpeed ZeRO-3 through the Trainer, on DeepSpeed's CPU accelerator (gloo).

    Needs ``deepspeed`` (in the ``test`` extra; skipped without it). TRL's unwrap gathers the
    ZeRO-3 weights for the round; ``generate`` would still sync every step across ranks
    (``synced_gpus``) unless the callback turned that off. LoRA (SFTTrainer with PEFT) hung in the
    first round until the callback paused DeepSpeed's start-of-forward hook, which TRL's unwrap
    leaves on the PEFT model: it broadcasts at passes through the PEFT model (scoring) but not at
    ``generate``'s (which enter below it), so a generating and a scoring rank deadlocked.
    """
    import torch

    env = {"DS_ACCELERATOR": "cpu"}
    probed, plain = tmp_path / "probed", tmp_path / "plain"
    args = ("--zero3", "--kind", kind, "--problems", "3", "--probes", "early_answering,filler", "--max-steps", "2",
            "--save-state", "--save-steps", "2", "--do-sample", "--dropout", "0.1")
    rc, output = torchrun(2, probed, weights, *args, env=env)
    assert rc == 0, output[-4000:]
    rc, output = torchrun(2, plain, weights, *args, "--no-callback", env=env)
    assert rc == 0, output[-4000:]

    trained = _rounds_agree_and_training_unchanged(probed, plain, kind, weights, "ZeRO-3")
    loaded = _checkpoint_weights(kind, probed / "run" / "checkpoint-2")
    common = [k for k in trained if k in loaded]
    assert common and all(torch.equal(loaded[k], trained[k]) for k in common)


def _rounds_agree_and_training_unchanged(probed, plain, kind: str, start_weights, scheme: str) -> dict:
    """Both ranks logged the same two rounds and passes; the weights equal a run without the
    callback, and the run did train (so the comparison is not vacuous). Returns the trained weights."""
    import torch

    r0, r1 = rank_state(probed, 0), rank_state(probed, 1)
    rounds = _faith_without_timings(r0)
    assert sorted(rounds) == [0, 2] and rounds[0]["faith/problems_total"] == 3
    assert "faith/probe_failed" not in rounds[0] and rounds[0]["faith/problems_scored"] >= 2
    assert rounds == _faith_without_timings(r1)
    assert r0["round_forwards"] == r1["round_forwards"]

    trained, reference = _state(probed)["weights"], _state(plain)["weights"]
    assert trained.keys() == reference.keys() and trained
    changed = [k for k in trained if not torch.equal(trained[k], reference[k])]
    assert not changed, f"{scheme} weights differ with the callback: {changed[:5]}"
    if kind == "trainer":
        start = torch.load(start_weights, weights_only=True)
        assert any(not torch.equal(start[k], trained[k]) for k in start)
    else:
        assert any("lora_B" in k and v.abs().sum() > 0 for k, v in trained.items())
    return trained
