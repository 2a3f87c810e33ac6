#!/usr/bin/env python
"""Chain generation paths side by side: plain ``generate``, ``static`` (static cache; eager and,
with ``--compile``, the compiled decode step) and ``continuous`` (``generate_batch``).

One process, one model, the same prompts (the engine's chain prompts for the problems), greedy.
The paths run interleaved (generate, static, continuous, [static compiled], generate again), so a
busy machine slows them alike; the ratios against the mean of the two ``generate`` runs are the
result. Reports each path's seconds and whether its chains are token-identical to ``generate``'s
(exit 1 if not). The compiled path's first call (the compilation) is timed separately.

Usage (from the repository root)::

    python bench/bench_generation.py                      # the bundled GSM8K sample, 16 problems, 512 tokens
    python bench/bench_generation.py --problems my.jsonl  # a JSONL file, a bundled set (gsm8k, aqua), synthetic:N
    python bench/bench_generation.py --compile ...        # + static with the compiled decode step
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

import torch

from faithcb.data import ProbeSet
from faithcb.engine import FaithfulnessEngine
from faithcb.generation import ChainGenerator
from faithcb.settings import ProbeSettings


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(engine: FaithfulnessEngine, prompts, path: str, max_new_tokens: int, batch_size: int, compile=None):
    lm = engine.lm
    with lm.session():
        _sync(lm.device)
        start = time.perf_counter()
        out = ChainGenerator(lm, path, batch_size=batch_size, compile=compile)(prompts, max_new_tokens=max_new_tokens)
        _sync(lm.device)
    return out, time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="default: embedded SmolLM2-135M-Instruct")
    # The bundled GSM8K sample (faithcb.data's named sets): runs from a fresh install, no data directory.
    ap.add_argument("--problems", default="gsm8k", help="a bundled set (gsm8k, aqua), a JSONL file or synthetic:N")
    ap.add_argument("-n", "--num-problems", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-chain-tokens", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--compile", action="store_true", help="also the static path with its compiled decode step")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from faithcb.models import load_model

    model, tokenizer = load_model(args.model)
    model.to(args.device)
    problems = ProbeSet.load(args.problems).sample(args.num_problems, args.seed)
    engine = FaithfulnessEngine(model, tokenizer, ProbeSettings(batch_size=args.batch_size), show_progress=False)
    prompts = [engine.prompt_ids(p) for p in problems]
    load = os.getloadavg()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average at start {load[0]:.1f}")
    print(f"{len(prompts)} prompts, {sum(map(len, prompts))} prompt tokens, limit {args.max_chain_tokens} new tokens")
    # warm-up: first-call allocations and lazy imports, for every path alike
    for path in ("generate", "static", "continuous"):
        timed(engine, prompts[:2], path, 4, args.batch_size, compile=False if path == "static" else None)

    order = [("generate", None), ("static", False), ("continuous", None)]
    compile_seconds = None
    if args.compile:
        _, compile_seconds = timed(engine, prompts, "static", 8, args.batch_size, compile=True)
        print(f"static compiled: first call (compilation) {compile_seconds:.1f} s")
        order.append(("static", True))
    order.append(("generate", None))
    runs = []
    for path, comp in order:
        ids, seconds = timed(engine, prompts, path, args.max_chain_tokens, args.batch_size, compile=comp)
        name = path + ("" if comp is None else (" (compiled)" if comp else " (eager)"))
        runs.append((name, ids, seconds))
        print(f"{name}: {seconds:.1f} s, {sum(map(len, ids))} new tokens", flush=True)

    reference = runs[0][1]
    base = (runs[0][2] + runs[-1][2]) / 2
    ok = True
    rows = []
    print(f"\n{'path':<22}{'seconds':>9}{'x generate':>12}  token-identical")
    for name, ids, seconds in runs:
        same = ids == reference
        ok &= same
        rows.append({"path": name, "seconds": seconds, "ratio": seconds / base, "identical": same})
        print(f"{name:<22}{seconds:>9.1f}{seconds / base:>12.2f}  {same}")
    ended = sum(bool(s) and s[-1] in engine.lm.eos_ids for s in reference)
    end = os.getloadavg()
    print(f"chains ended by their end token: {ended} of {len(reference)}; load average at end {end[0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": rows, "compile_seconds": compile_seconds, "load": [load, end]}, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
