"""A tiny training run with ``FaithfulnessCallback``, for tests that need a process of its own.

Run by ``tests/test_integrations.py`` either under torchrun (DDP on CPU with gloo)::

    python -m torch.distributed.run --nproc_per_node 2 --master_port 29533 tests/dist_worker.py \
        --out /tmp/ddp --weights /tmp/pretrained.pt --problems 5

or as a plain process (``--report-to wandb`` with ``WANDB_MODE=offline``), so that W&B's global
run state never leaks into the test process.

Every rank writes ``<out>/rank<R>.json``: its ``trainer.state.log_history`` and the number of
problems each ``FaithfulnessEngine.records`` call on that rank received (the callback's share of a
round). The callback's own outputs (``faith_history.jsonl``, ``faith_records/``) land in
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

from _trainers import attach, faith_config, make_trainer, pretrained_model, probe_problems, tokenizer  # noqa: E402

from faithcb.engine import FaithfulnessEngine  # noqa: E402
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
    original = FaithfulnessEngine.records

    def records(self, problems):
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
    # gloo: the CPU backend (ddp_backend outside torchrun makes accelerate expect a process group).
    ddp = {"ddp_backend": "gloo"} if "WORLD_SIZE" in os.environ else {}
    report_to = [] if args.report_to == "none" else args.report_to.split(",")
    trainer = make_trainer(
        "trainer",
        out / "run",
        model=model,
        tok=tok,
        max_steps=args.max_steps,
        batch_size=4,
        report_to=report_to,
        run_name="faithcb-integration",
        **ddp,
    )
    config = faith_config(
        faith_num_problems=args.problems,
        faith_every_n_steps=args.every,
        faith_probes=args.probes.split(","),
        faith_strict=fail_rank is None,
        faith_max_overhead=args.max_overhead,
    )
    attach(trainer, config, problems=probe_problems(args.problems))
    trainer.train()

    payload = {
        "rank": rank,
        "world_size": trainer.accelerator.num_processes,
        "records_calls": calls,
        "log_history": trainer.state.log_history,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(payload), encoding="utf-8")
    # Leave the process group in order: exiting with gloo's threads still alive can abort a rank
    # at interpreter exit ("terminate called without an active exception") after a clean run.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
