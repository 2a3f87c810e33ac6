"""A tiny training run with ``FaithfulnessCallback``, for tests that need a process of its own.

Run by ``tests/test_integrations.py`` either under torchrun (DDP on CPU with gloo)::

    python -m torch.distributed.run --nproc_per_node 2 --master_port 29533 tests/dist_worker.py \
        --out /tmp/ddp --weights /tmp/pretrained.pt --problems 5

or as a plain process (``--report-to wandb`` with ``WANDB_MODE=offline``), so that W&B's global
run state never leaks into the test process.

Every rank writes ``<out>/rank<R>.json``: its ``trainer.state.log_history`` and the number of
problems each ``FaithfulnessEngine.records`` call on that rank received (the callback's share of a
round), ``padding_calls`` (the same for the callback's padding: repeated problems run so that
every rank handles as many), ``round_forwards``: the model forward passes each round made on that
rank (counted at the input embedding, which every pass calls once), and ``reward_forwards``: the
same for each call of a ``CouplingReward`` (``--coupling-reward``, GRPO). With ``--save-state`` it also
writes ``<out>/state<R>.pt``: the trained weights and the global RNG states after training. The
callback's own outputs (``faith_history.jsonl``, ``faith_records/``) land in
``<out>/run`` (written by rank 0 only).

``FAITHCB_TEST_FAIL_RANK=<r>`` makes every probe round raise on rank ``r`` only (a failure inside
one process's share), with ``faith_strict`` off: training must still finish on every rank.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers.models import pretrained_model, rng_states, tokenizer, with_dropout  # noqa: E402
from helpers.trainers import attach, faith_config, make_trainer  # noqa: E402
from helpers.vocabulary import arithmetic_problems as probe_problems  # noqa: E402

import faithcb.rounds as rounds_module  # noqa: E402
from faithcb.engine import FaithfulnessEngine  # noqa: E402
from faithcb.rounds import RoundRunner  # noqa: E402
from faithcb.testing import tiny_model  # noqa: E402

FAIL_ENV = "FAITHCB_TEST_FAIL_RANK"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for rank<R>.json and the run's outputs (run/)")
    parser.add_argument("--weights", help="state dict saved with torch.save (default: pretrain here)")
    parser.add_argument("--problems", type=int, default=5, help="problems per round")
    parser.add_argument("--max-steps", type=int, default=2)
    parser.add_argument("--every", type=int, default=2, help="faith_every_n_steps")
    parser.add_argument("--probes", default="early_answering,filler,info_gain")
    parser.add_argument("--report-to", default="none", help="comma-separated report_to, or 'none'")
    parser.add_argument("--toy-probe", action="store_true", help="register tests/toy_probe.py's 'toy' probe")
    parser.add_argument("--max-overhead", type=float, default=0.0, help="faith_max_overhead")
    parser.add_argument("--round-sleep", type=float, default=0.0,
                        help="seconds each round sleeps per rank number + 1 (ranks then time rounds differently)")
    parser.add_argument("--no-callback", action="store_true", help="train without FaithfulnessCallback")
    parser.add_argument("--do-sample", action="store_true", help="faith_do_sample: rounds draw from the RNG")
    parser.add_argument("--dropout", type=float, default=0.0, help="attention dropout while training")
    parser.add_argument("--n-texts", type=int, default=32, help="training texts (few: several epochs)")
    parser.add_argument("--save-state", action="store_true", help="write state<R>.pt: weights and RNG states")
    parser.add_argument("--kind", default="trainer", help="make_trainer kind: trainer, sft, sft_lora")
    parser.add_argument("--fsdp", action="store_true", help="FSDP2 through accelerate (see enable_fsdp2)")
    parser.add_argument("--zero3", action="store_true",
                        help="DeepSpeed ZeRO-3 through the Trainer (needs deepspeed and DS_ACCELERATOR=cpu)")
    parser.add_argument("--save-steps", type=int, default=0, help="save a checkpoint every N steps (0: none)")
    parser.add_argument("--coupling-reward", action="store_true",
                        help="GRPO: add a CouplingReward monitor (weight 0); bound by the callback, or explicitly "
                        "with --no-callback")
    parser.add_argument("--rank1-reward-sample", type=int, default=0,
                        help="rank 1 probes only this many rollouts per step: the ranks' work differs on purpose")
    args = parser.parse_args(argv)
    if args.toy_probe:
        import toy_probe

        toy_probe.register()

    torch.set_num_threads(1)  # tiny matrices; a busy machine makes a thread pool much slower
    rank = int(os.environ.get("RANK", "0"))
    fail_rank = os.environ.get(FAIL_ENV)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    calls: list[int] = []
    padding_calls: list[int] = []  # the callback's padding (dummy problems), kept apart
    paddings: list[list] = []
    original = FaithfulnessEngine.records
    original_share = rounds_module.share

    def share(*share_args):
        mine, padding = original_share(*share_args)
        paddings.append(padding)
        return mine, padding

    rounds_module.share = share

    def records(self, problems):
        if any(problems is padding for padding in paddings):
            padding_calls.append(len(problems))
            return original(self, problems)
        calls.append(len(problems))
        time.sleep(args.round_sleep * (rank + 1))
        if fail_rank is not None and rank == int(fail_rank):
            raise RuntimeError(f"injected failure on rank {rank}")
        return original(self, problems)

    FaithfulnessEngine.records = records

    tok = tokenizer()
    if args.weights:
        model = tiny_model(tok, "llama", seed=0)
        model.load_state_dict(torch.load(args.weights, weights_only=True))
    else:
        model = pretrained_model(tok)
    if args.dropout:
        with_dropout(model, args.dropout)

    # Forward passes per round on this rank: counted where every pass goes (the input embedding).
    forwards = [0]
    round_forwards: list[int] = []
    model.get_input_embeddings().register_forward_pre_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))
    original_measure = RoundRunner.measure

    def measure(self, *, base):
        before = forwards[0]
        try:
            return original_measure(self, base=base)
        finally:
            round_forwards.append(forwards[0] - before)

    RoundRunner.measure = measure

    # The same count for each call of the coupling reward (its rollout probe on this rank's rollouts).
    reward_forwards: list[int] = []
    reward = None
    if args.coupling_reward:
        from helpers.vocabulary import STYLE

        from faithcb.reward import CouplingReward
        from faithcb.settings import ProbeSettings

        reward = CouplingReward(
            reward_on="all", settings=ProbeSettings(style=STYLE, max_chain_tokens=40, answer_max_tokens=4)
        )
        if rank == 1 and args.rank1_reward_sample:
            reward.sample = args.rank1_reward_sample
        original_score = CouplingReward._score

        def score(self, rollouts):
            before = forwards[0]
            try:
                return original_score(self, rollouts)
            finally:
                reward_forwards.append(forwards[0] - before)

        CouplingReward._score = score
    # gloo: the CPU backend (ddp_backend outside torchrun makes accelerate expect a process group).
    ddp = {"ddp_backend": "gloo"} if "WORLD_SIZE" in os.environ else {}
    report_to = [] if args.report_to == "none" else args.report_to.split(",")
    saving = {"save_strategy": "steps", "save_steps": args.save_steps} if args.save_steps else {}
    if args.zero3:
        saving.update(ZERO3_ARGS)
    trainer = make_trainer(
        args.kind,
        out / "run",
        model=model,
        tok=tok,
        max_steps=args.max_steps,
        batch_size=4,
        report_to=report_to,
        run_name="faithcb-integration",
        n_texts=args.n_texts,
        **({"coupling_reward": reward, "max_completion_length": 40} if reward is not None else {}),
        **ddp,
        **saving,
    )
    if args.fsdp:
        enable_fsdp2(trainer)
    if args.zero3:
        count_zero3_processes()
    config = faith_config(
        faith_num_problems=args.problems,
        faith_every_n_steps=args.every,
        faith_probes=args.probes.split(","),
        faith_strict=fail_rank is None,
        faith_max_overhead=args.max_overhead,
        faith_do_sample=args.do_sample,
    )
    if not args.no_callback:
        attach(trainer, config, problems=probe_problems(args.problems))
    elif reward is not None:
        reward.bind(trainer)
    trainer.train()
    if args.save_state:
        rng = rng_states()  # before the weights are gathered, which is not training
        # The full weights: unwrapped under DDP; under FSDP gathered from the shards (on rank 0).
        # ZeRO-3 needs its engine; sharded runs gather to rank 0 (others get nothing).
        full = trainer.accelerator.get_state_dict(trainer.model_wrapped) or {}
        weights = {k: v.detach().clone() for k, v in full.items()}
        torch.save({"weights": weights, "rng": rng}, out / f"state{rank}.pt")

    payload = {
        "rank": rank,
        "world_size": trainer.accelerator.num_processes,
        "records_calls": calls,
        "padding_calls": padding_calls,
        "round_forwards": round_forwards,
        "reward_forwards": reward_forwards,
        "log_history": trainer.state.log_history,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(payload), encoding="utf-8")
    # Leave the process group in order: exiting with gloo's threads still alive can abort a rank
    # at interpreter exit ("terminate called without an active exception") after a clean run.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


# DeepSpeed ZeRO-3 on CPU: deepspeed's CPU accelerator (DS_ACCELERATOR=cpu) on gloo. ``use_cpu`` must
# stay off (accelerate never picks DeepSpeed with cpu=True); the global batch is left to DeepSpeed
# (the Trainer computes "auto" from a world size of 1 at that point, then rejects it).
ZERO3_ARGS = {
    "use_cpu": False,
    "deepspeed": {
        "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True},
        "optimizer": {"type": "AdamW", "params": {"lr": "auto", "torch_adam": True}},
    },
}


def count_zero3_processes() -> None:
    """Tell accelerate how many processes DeepSpeed started: on a machine without a GPU it takes
    the job for a single process (``DistributedType.NO`` until DeepSpeed's own ``init_distributed``
    makes a gloo group of 2), so it would neither shard the data nor gather across ranks."""
    import torch.distributed as dist
    from accelerate import PartialState

    state = PartialState()
    state.num_processes, state.process_index = dist.get_world_size(), dist.get_rank()
    state.local_process_index = int(os.environ.get("LOCAL_RANK", state.process_index))


def enable_fsdp2(trainer) -> None:
    """Train ``trainer`` with FSDP2 on CPU: accelerate's own FSDP path, on a gloo process group.

    ``TrainingArguments(fsdp=..., use_cpu=True)`` silently trains with plain DDP: accelerate turns
    an FSDP plugin (or ``ACCELERATE_USE_FSDP``) into ``DistributedType.FSDP`` only for GPU-like
    distributed types, never for ``MULTI_CPU``; without ``use_cpu`` a CPU-only machine is not
    distributed and the Trainer raises "Using fsdp only works in distributed training". Nothing
    below that check needs a GPU: torch's ``fully_shard`` runs on a gloo group. So the state is
    set here to what accelerate sets on GPUs (its shared state, which the Trainer's accelerator
    reads), before ``train()`` prepares the model with ``fsdp2_prepare_model``.
    """
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = trainer.accelerator.state
    state.fsdp_plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2,
        reshard_after_forward=True,  # every forward pass all-gathers its weights: rounds must keep step
        auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=["LlamaDecoderLayer"],
        state_dict_type="FULL_STATE_DICT",
    )
    # Every new AcceleratorState() copies PartialState's shared state over its own: set both.
    PartialState().distributed_type = state.distributed_type = DistributedType.FSDP
    trainer.is_fsdp_enabled = True


if __name__ == "__main__":
    main()
