"""GRPO with a coupling reward, and the held-out readout it never trains on (docs/grpo.md).

    python bench/grpo_coupling.py --out outputs/grpo_coupling            # the docs' run
    python bench/grpo_coupling.py --out outputs/gc_smoke --steps 2 --seeds 0   # a smoke run

Three arms from one start (the embedded SmolLM2-135M-Instruct with LoRA, recipes/configs/grpo.yaml),
on the synthetic task whose question states the answer (``synthetic_key: true``: the answer is
recoverable without the chain), each with every seed:

- ``correctness``: the correctness reward only;
- ``coupling``: correctness + ``CouplingReward`` (weight ``--weight``, paid on correct rollouts);
- ``monitor``: correctness + ``CouplingReward`` with weight 0 (measures, never trains).

Each run is the GRPO recipe itself (``recipes/grpo.py``'s ``main``). Written to ``--out``:
``results.json`` (per run: every step's ``faith_rollout/*`` and rewards, every held-out round's
metrics with their intervals) and ``table.md`` (per arm and round: the held-out readouts with
95% intervals, and the rollout coupling per step, means over seeds), plus the rollout probe's
cost in the monitor arm: its seconds per step beside the rest of the step, measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("correctness", "coupling", "monitor")
HELDOUT = ("accuracy", "early_answering_aoc", "early_answering_disagreement_before_end", "early_answering_gold_area",
           "filler_invariance")
ROLLOUT = ("coupling", "disagreement_before_end", "gold_area", "accuracy")


def _recipe():
    spec = importlib.util.spec_from_file_location("grpo_recipe", ROOT / "recipes" / "grpo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_arm(arm: str, seed: int, out: Path, args) -> dict:
    from trl import TrlParser

    from faithcb.history import read_history

    recipe = _recipe()
    argv = [
        "--config", str(ROOT / "recipes" / "configs" / "grpo.yaml"), "--output_dir", str(out),
        "--seed", str(seed), "--max_steps", str(args.steps), "--synthetic_key", "true",
        "--faith_num_rounds", str(args.rounds), "--faith_num_problems", str(args.problems),
        "--faith_probes", "early_answering", "filler", "--faith_show_progress", "false",
        "--max_completion_length", str(args.tokens), "--faith_max_chain_tokens", str(args.tokens),
        "--faith_base_reference", "false",
        "--faith_rollout_probe", "false" if arm == "correctness" else "true",
        "--faith_rollout_weight", str(args.weight if arm == "coupling" else 0.0),
    ]
    data_args, training_args, model_args, faith_args, rollout_args = TrlParser(
        recipe.PARSER_TYPES).parse_args_and_config(argv)
    start = time.perf_counter()
    trainer = recipe.main(data_args, training_args, model_args, faith_args, rollout_args)
    seconds = time.perf_counter() - start
    (out / "log_history.json").write_text(json.dumps(trainer.state.log_history), encoding="utf-8")  # the raw logs
    steps = [
        {k: v for k, v in e.items() if k.startswith(("faith_rollout/", "rewards/", "step_time")) or k == "step"}
        for e in trainer.state.log_history if "step_time" in e
    ]
    rounds = [
        {"step": h["step"], **{m: h["metrics"].get(m) for m in HELDOUT}}
        for h in read_history(out / "faith_history.jsonl") if h.get("role", "model") == "model"
    ]
    return {"arm": arm, "seed": seed, "seconds": seconds, "steps": steps, "rounds": rounds}


def _fmt(summary: dict | None) -> str:
    if not summary or summary.get("value") is None or math.isnan(summary["value"]):
        return "—"
    low, high = summary.get("ci_low"), summary.get("ci_high")
    if low is None or math.isnan(low):
        return f"{summary['value']:.2f}"
    return f"{summary['value']:.2f} [{low:.2f}, {high:.2f}]"


def table(runs: list[dict]) -> str:
    lines = ["### Held-out rounds (problems outside training; value [95% interval] per seed)", "",
             "| arm | seed | step | " + " | ".join(HELDOUT) + " |", "|---|---|---|" + "---|" * len(HELDOUT)]
    for run in runs:
        for r in run["rounds"]:
            lines.append(f"| {run['arm']} | {run['seed']} | {r['step']} | "
                         + " | ".join(_fmt(r[m]) for m in HELDOUT) + " |")
    lines += ["", "### Rollouts (every step's own; mean over seeds)", "",
              "| arm | step | " + " | ".join(f"rollout {m}" for m in ROLLOUT) + " |", "|---|---|" + "---|" * len(ROLLOUT)]
    for arm in ARMS:
        arm_runs = [r for r in runs if r["arm"] == arm]
        steps = sorted({s["step"] for r in arm_runs for s in r["steps"]})
        for step in steps:
            cells = []
            for m in ROLLOUT:
                vals = [s.get(f"faith_rollout/{m}") for r in arm_runs for s in r["steps"] if s["step"] == step]
                vals = [v for v in vals if v is not None]
                cells.append(f"{statistics.mean(vals):.3f}" if vals else "—")
            lines.append(f"| {arm} | {step} | " + " | ".join(cells) + " |")
    monitor = [s for r in runs if r["arm"] == "monitor" for s in r["steps"] if "faith_rollout/seconds" in s]
    if monitor:
        probe = sum(s["faith_rollout/seconds"] for s in monitor)
        rest = sum(s["step_time"] for s in monitor) - probe
        lines += ["", f"Rollout probe cost (monitor arm, {len(monitor)} steps): {probe:.1f} s probing vs "
                  f"{rest:.1f} s for the rest of the steps: +{100 * probe / rest:.0f}% per step."]
    lines += ["", "Wall time per run: " + ", ".join(f"{r['arm']}/{r['seed']} {r['seconds']:.0f} s" for r in runs)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="held-out rounds per run (faith_num_rounds)")
    parser.add_argument("--problems", type=int, default=12, help="held-out problems per round")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--weight", type=float, default=1.0, help="the coupling arm's reward weight")
    parser.add_argument("--tokens", type=int, default=128,
                        help="max_completion_length and faith_max_chain_tokens (the YAML's 64 cut most chains here)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a busy 2-core machine: 1)")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    runs = []
    for seed in args.seeds:
        for arm in args.arms:
            runs.append(run_arm(arm, seed, args.out / f"{arm}_seed{seed}", args))
            (args.out / "results.json").write_text(json.dumps(runs, indent=1), encoding="utf-8")
            print(f"{arm} seed {seed}: {runs[-1]['seconds']:.0f} s", flush=True)
    text = table(runs) + f"\nTotal wall time: {time.perf_counter() - start:.0f} s\n"
    (args.out / "table.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
