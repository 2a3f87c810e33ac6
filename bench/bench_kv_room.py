#!/usr/bin/env python
"""The packed scorer with its cache grown in place (``faithcb.kv_room``) against the old growth by
concatenation, interleaved in one process on the same chains: seconds of ``engine.probe`` per
repeat, and whether the records are identical (exit 1 if not).

The chains (and full-chain answers) are generated once; then the probing phase runs ``--repeats``
times on each side, old and new alternating, so a busy machine slows both alike. On a loaded
machine read the records' identity, not the seconds.

Usage (from the repository root)::

    python bench/bench_kv_room.py                          # embedded SmolLM2-135M, synthetic:8, 128-token chains
    python bench/bench_kv_room.py --problems gsm8k -n 8 --max-chain-tokens 512 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence

import torch

import faithcb.packed as packed
from faithcb import kv_room
from faithcb.data import ProbeSet
from faithcb.engine import FaithfulnessEngine
from faithcb.settings import ProbeSettings


def concatenating(cache, room: int, rows=None) -> None:
    """The growth before kv_room: keep the rows asked for, reserve nothing (every pass copies the cache)."""
    if rows is not None:
        cache.reorder_cache(rows)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint dir or hub id (default: embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--problems", default="synthetic:8", help="a bundled set (gsm8k, aqua), a JSONL file or synthetic:N")
    ap.add_argument("-n", "--num-problems", type=int, default=8)
    ap.add_argument("--max-chain-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from faithcb.models import load_model

    model, tokenizer = load_model(args.model)
    model.to(args.device)
    problems = ProbeSet.load(args.problems).sample(args.num_problems, 0)
    settings = ProbeSettings(probes=["early_answering", "filler", "info_gain"], max_chain_tokens=args.max_chain_tokens)
    engine = FaithfulnessEngine(model, tokenizer, settings, show_progress=False)
    with engine.lm.session():
        chains = engine.read_full_answers(engine.generate_chains(problems))
    load = os.getloadavg()
    print(f"{len(chains)} chains; torch {torch.get_num_threads()} threads; load average at start {load[0]:.1f}")
    seconds: dict[str, list[float]] = {"concatenating": [], "in place": []}
    records: dict[str, list[dict]] = {}
    for _ in range(args.repeats):
        for name, grow in (("concatenating", concatenating), ("in place", kv_room.reserve)):
            packed.reserve = grow
            with engine.lm.session():
                start = time.perf_counter()
                records[name] = engine.probe(list(chains))
                seconds[name].append(time.perf_counter() - start)
            print(f"{name}: {seconds[name][-1]:.2f} s", flush=True)
    packed.reserve = kv_room.reserve
    same = json.dumps(records["concatenating"]) == json.dumps(records["in place"])  # NaN-safe, exact
    for name, times in seconds.items():
        print(f"{name:<14} median {statistics.median(times):.2f} s  ({', '.join(f'{t:.2f}' for t in times)})")
    print(f"records identical: {same}; load average at end {os.getloadavg()[0]:.1f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
