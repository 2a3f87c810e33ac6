"""Long chains: time and peak memory of one probe round, by chain length and ``max_cuts``.

    python bench/bench_long_chains.py            # 2,048- and 4,096-token chains, 64 steps
    python bench/bench_long_chains.py --one 2048 16    # one configuration (what each child runs)

Each configuration runs in a fresh process (peak RSS is per process): a tiny float32 model
(faithcb.testing, hidden 64, 2 layers) with room for 4,096+ positions, ``--problems`` chains of the
given length written by hand (64 steps), a_full set on purpose (an untrained model answers
nothing), then early answering, filler and information gain as the callback runs them. The
figures are the engine's scoring work, not generation: generation cost is bounded by
``faith_max_chain_tokens`` and measured in bench_generation.py.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one(chain_tokens: int, max_cuts: int, problems: int, steps: int) -> dict:
    import torch

    from faithcb.engine import FaithfulnessEngine, _with_answer
    from faithcb.problem import Problem
    from faithcb.settings import ProbeSettings
    from faithcb.testing import tiny_model, tiny_tokenizer

    torch.set_num_threads(1)
    tok = tiny_tokenizer()
    model = tiny_model(tok, max_positions=chain_tokens + 512)
    settings = ProbeSettings(probes=("early_answering", "filler", "info_gain"), max_cuts=max_cuts)
    engine = FaithfulnessEngine(model, tok, settings, show_progress=False, strict=True)
    # One token per character (tiny_tokenizer): steps of equal length adding up to chain_tokens.
    per_step = -(-chain_tokens // steps)  # "NNN x x ... x." plus the line break
    step = ("x " * per_step)[: per_step - 6]
    text = "\n".join(f"{i:03d} {step}." for i in range(steps))
    chains = []
    for i in range(problems):
        chain = engine.chain_from_text(Problem(f"What is {i} + 3?", str(i + 3), id=f"p{i}"), text, key=i)
        answer = [*engine.lm.encode(" 5"), min(engine.lm.eos_ids)]
        chains.append(_with_answer(chain, answer, " 5", "5"))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with engine.lm.session():
        records = engine.probe(chains)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "chain_tokens": len(chains[0].chain_ids), "steps": chains[0].n_steps, "max_cuts": max_cuts,
        "cuts": len(chains[0].cut_ks), "problems": problems,
        "variants": sum(len(r[p]["agree"]) if "agree" in r[p] else len(r[p]["logp_gold"])
                        for r in records for p in ("early_answering", "filler", "info_gain")),
        "seconds": round(seconds, 1), "peak_rss_mib": round(peak / 1024), "rss_before_mib": round(rss_before / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=2, type=int, metavar=("CHAIN_TOKENS", "MAX_CUTS"))
    parser.add_argument("--problems", type=int, default=4)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--cuts", type=int, nargs="+", default=[16, 65], help="max_cuts values (65 = every step)")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args.problems, args.steps)))
        return
    print("| chain tokens | steps | max_cuts | cuts used | variants | round time | peak RSS (before the round) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for length in args.lengths:
        for cuts in args.cuts:
            out = subprocess.run(
                [sys.executable, __file__, "--one", str(length), str(cuts), "--problems", str(args.problems),
                 "--steps", str(args.steps)], capture_output=True, text=True, check=True, cwd=REPO,
            ).stdout.strip().splitlines()[-1]
            r = json.loads(out)
            print(f"| {r['chain_tokens']} | {r['steps']} | {r['max_cuts']} | {r['cuts']} | {r['variants']} | "
                  f"{r['seconds']} s | {r['peak_rss_mib']} MiB ({r['rss_before_mib']} MiB) |", flush=True)


if __name__ == "__main__":
    main()
