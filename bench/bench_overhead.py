#!/usr/bin/env python
"""Training-time overhead of FaithfulnessCallback, measured on CPU and extrapolated to a GPU recipe.

Runs the same short SFT (TRL ``SFTTrainer``, LoRA r=8 on q_proj/v_proj of the embedded
SmolLM2-135M-Instruct, synthetic arithmetic texts in the probes' own chat layout) twice in one
process, from the same initial weights: without the callback and with ``FaithfulnessCallback`` at
the default cadence (``FaithConfig()`` defaults: 16 problems, 8 rounds spread over training + a
baseline round at step 0, default probes, and -- because the model is a PEFT model -- the base
reference round, computed once). It prints the wall-time overhead %.

It then runs one standalone round on the trained model with token accounting (chain generation:
prompt and generated tokens; probing: forward tokens processed by ``ProbeLM``), and uses those
counts to say how the overhead scales and to estimate it for a GPU recipe (``--gpu-*`` options);
the method and its assumptions are printed next to the numbers (and written up in
docs/performance.md).

Usage (from the repository root)::

    python bench/bench_overhead.py                      # 24 steps, batch 8, default FaithConfig
    python bench/bench_overhead.py --steps 12 --json overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import torch

from faithcb.callback import FaithfulnessCallback
from faithcb.config import FaithConfig
from faithcb.data import ProbeSet
from faithcb.engine import FaithfulnessEngine
from faithcb.history import read_history
from faithcb.problem import Problem
from faithcb.scoring import TokenCounter
from faithcb.tasks.arithmetic import make_examples
from faithcb.training import training_rows


def train_texts(tokenizer, n: int, seed: int = 1) -> list[str]:
    """Synthetic arithmetic SFT texts in exactly the layout the probes read (chat template)."""
    examples = make_examples(n, seed=seed)
    problems = [Problem(e["question"], e["answer"]) for e in examples]
    rows = training_rows(problems, tokenizer, chains=[e["chain"] for e in examples], fmt="text")
    return [r["text"] + tokenizer.eos_token for r in rows]


def build_trainer(model, tokenizer, texts, out_dir: str, steps: int, batch: int, lora_r: int):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    set_seed(0)
    args = SFTConfig(
        output_dir=out_dir,
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=2e-4,
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        seed=0,
        data_seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
        max_length=512,
        dataset_num_proc=None,
    )
    peft = LoraConfig(
        r=lora_r,
        lora_alpha=2 * lora_r,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj"],
        task_type="CAUSAL_LM",
    )
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict({"text": texts}),
        processing_class=tokenizer,
        peft_config=peft,
    )


class StepTimer:
    """A TrainerCallback that records the wall time of every optimizer step (probe rounds excluded:
    it is added first, so its on_step_end runs before the faithfulness callback's)."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Timer(TrainerCallback):
            def __init__(self):
                self.marks: list[float] = []

            def on_step_begin(self, args, state, control, **kw):
                self._t = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                self.marks.append(time.perf_counter() - self._t)

        return _Timer()


def run_arm(with_callback: bool, args, texts, problems, out_root: str) -> dict[str, Any]:
    from faithcb.models import load_embedded_model

    model, tok = load_embedded_model()
    out = os.path.join(out_root, "with" if with_callback else "without")
    trainer = build_trainer(model, tok, texts, out, args.steps, args.batch, args.lora_r)
    timer = StepTimer()
    trainer.add_callback(timer)
    cb = None
    if with_callback:
        cfg = FaithConfig(
            faith_show_progress=False, faith_num_rounds=args.rounds, faith_num_problems=args.num_problems
        )
        cb = FaithfulnessCallback(trainer, problems, cfg)
        trainer.add_callback(cb)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    rounds: list[dict[str, Any]] = []
    if cb is not None:
        for row in read_history(os.path.join(out, cfg.faith_history_file)):
            secs = row.get("seconds", row.get("scalars", {}).get("seconds"))
            rounds.append({"step": row["step"], "role": row["role"], "seconds": secs})
    # Training tokens actually fed: the collator's batches are not visible to callbacks, so count the
    # dataset's tokenized lengths over the batches the sampler drew (approximation: mean length x batch).
    lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
    return {
        "seconds": seconds,
        "step_seconds": timer.marks,
        "rounds": rounds,
        "mean_example_tokens": sum(lengths) / len(lengths),
        "max_example_tokens": max(lengths),
        "model": model,
        "tokenizer": tok,
        "trainer": trainer,
    }


def round_profile(model, tokenizer, problems, cfg: FaithConfig) -> dict[str, float]:
    """One round on ``model`` split into chain generation and probing, with token counts."""
    engine = FaithfulnessEngine(model, tokenizer, cfg.probe_settings(), show_progress=False)
    lm = engine.lm
    # ProbeLM's accounting hook, a fresh TokenCounter per phase: forward positions, and the
    # tokens generate() returned (not forward positions of their own).
    with lm.session():
        lm.counter = TokenCounter()
        t0 = time.perf_counter()
        chains = engine.generate_chains(list(problems))
        t1 = time.perf_counter()
        gen_prompt, gen_new = lm.counter.processed, lm.counter.generated
        chains = engine.read_full_answers(chains)
        t2 = time.perf_counter()
        lm.counter = TokenCounter()
        engine.probe(chains)
        t3 = time.perf_counter()
    n = len(problems)
    return {
        "problems": n,
        "chain_seconds": t1 - t0,
        "answer_seconds": t2 - t1,
        "probe_seconds": t3 - t2,
        "chain_prompt_tokens": gen_prompt,  # padded prompt positions (ProbeLM counts the prompt)
        "chain_new_tokens": gen_new,  # generated tokens (each one decode step of the batch)
        "probe_processed": lm.counter.processed + lm.counter.generated,  # scoring + any generation in probes
        "probe_real": lm.counter.real,
        "probe_forward_calls": lm.counter.forward_calls,
        "mean_chain_tokens": sum(len(c.chain_ids) for c in chains) / max(1, len(chains)),
        "mean_prompt_tokens": sum(len(c.prompt_ids) for c in chains) / max(1, len(chains)),
        "mean_steps": sum(c.n_steps for c in chains) / max(1, len(chains)),
    }


def estimate(
    rounds: int,
    problems: int,
    gen_tokens_per_problem: float,
    scored_tokens_per_problem: float,
    steps: int,
    train_tokens_per_step: float,
    backward_factor: float = 3.0,
) -> float:
    """Compute-bound overhead: forward-token work of the rounds over forward+backward work of training.

    rounds x problems x (chain generation tokens + scored tokens)  /  (backward_factor x steps x tokens/step).
    The model size cancels (both sides cost about 2 x params FLOPs per forward token).
    """
    return (
        rounds
        * problems
        * (gen_tokens_per_problem + scored_tokens_per_problem)
        / (backward_factor * steps * train_tokens_per_step)
    )


def describe_round(prof: dict[str, float], where: str) -> str:
    return (
        f"one round of {prof['problems']} problems ({where}): chains {prof['chain_seconds']:.1f} s "
        f"({prof['chain_new_tokens']} new tokens, {prof['chain_prompt_tokens']} prompt), a_full "
        f"{prof['answer_seconds']:.1f} s, probes {prof['probe_seconds']:.1f} s ({prof['probe_processed']} forward "
        f"tokens, {prof['probe_real']} real, {prof['probe_forward_calls']} calls); mean prompt "
        f"{prof['mean_prompt_tokens']:.0f} tokens, chain {prof['mean_chain_tokens']:.0f} tokens, "
        f"{prof['mean_steps']:.1f} steps"
    )


def gpu_estimates(prof: dict[str, float], args) -> tuple[float, float, float]:
    """The GPU recipe's overhead from one measured round: compute-bound and latency-bound."""
    g_rounds = FaithConfig().faith_num_rounds + 1 + 1  # 8 scheduled + step-0 baseline + PEFT base reference
    g_n = FaithConfig().faith_num_problems
    n = prof["problems"]
    # Per problem on GSM8K: scale the measured per-problem scored tokens by context length
    # (scored tokens grow ~linearly in chain length with the fast path: prefix once + fillers).
    scale = (args.gpu_prompt_tokens + args.gpu_chain_tokens) / (
        prof["mean_prompt_tokens"] + prof["mean_chain_tokens"]
    )
    g_scored = prof["probe_processed"] / n * scale
    g_gen = args.gpu_prompt_tokens + args.gpu_chain_tokens
    g_train = args.gpu_batch * args.gpu_seq
    compute_bound = estimate(g_rounds, g_n, g_gen, g_scored, args.gpu_steps, g_train)
    # Latency-bound: chain generation and a_full are one batched decode step per new token (16
    # problems = one batch); probing is the round's forward calls (packed: several problems per
    # call), scaled linearly to 16 problems when the measured round had fewer (an upper bound).
    calls = prof["probe_forward_calls"] * max(1.0, g_n / n)
    decode_steps = args.gpu_chain_tokens + FaithConfig().faith_answer_max_tokens
    round_s = (decode_steps * args.gpu_decode_ms + calls * args.gpu_forward_ms) / 1e3
    latency_bound = g_rounds * round_s / (args.gpu_steps * args.gpu_step_s)
    print("")
    print(
        f"GPU recipe estimate: {args.gpu_steps} steps x batch {args.gpu_batch} x {args.gpu_seq} tokens, GSM8K "
        f"(~{args.gpu_prompt_tokens:.0f} prompt + {args.gpu_chain_tokens:.0f} chain tokens), {g_rounds} rounds x {g_n} problems"
    )
    print(
        f"  compute-bound (token ratio, FLOPs; the model size cancels): {compute_bound * 100:.2f}% "
        f"[{g_rounds} x {g_n} x ({g_gen:.0f} + {g_scored:.0f}) / (3 x {args.gpu_steps} x {g_train})]"
    )
    print(
        f"  latency-bound ({decode_steps:.0f} decode steps x {args.gpu_decode_ms:.0f} ms + {calls:.0f} probing "
        f"forward calls x {args.gpu_forward_ms:.0f} ms; step {args.gpu_step_s} s): round ~{round_s:.1f} s, "
        f"overhead ~{latency_bound * 100:.1f}%"
    )
    return compute_bound, latency_bound, round_s


def round_only(args, load) -> int:
    """One round on the untrained embedded model (no training): its cost and the GPU estimate."""
    from faithcb.models import load_embedded_model

    model, tok = load_embedded_model()
    spec = args.problems or f"synthetic:{args.num_problems}"
    problems = ProbeSet.load(spec).sample(args.num_problems, 0)
    cfg = FaithConfig(faith_show_progress=False, faith_num_problems=args.num_problems)
    prof = round_profile(model, tok, problems, cfg)
    print(describe_round(prof, spec))
    finish(args, load, prof)
    return 0


def finish(args, load, prof: dict[str, float], **measured) -> None:
    """Print the GPU estimate and the end load; write every figure to ``--json`` if asked."""
    compute_bound, latency_bound, round_s = gpu_estimates(prof, args)
    end = os.getloadavg()
    print(f"load average at end {end[0]:.1f} {end[1]:.1f} {end[2]:.1f}")
    if args.json:
        figures = {
            "args": vars(args),
            **measured,
            "round_profile": prof,
            "gpu_compute_bound": compute_bound,
            "gpu_latency_bound": latency_bound,
            "gpu_round_seconds": round_s,
            "load_start": load,
            "load_end": end,
        }
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2, default=str)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--texts", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=FaithConfig().faith_num_rounds)
    ap.add_argument("--num-problems", type=int, default=FaithConfig().faith_num_problems)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--round-only",
        action="store_true",
        help="skip training: time one round on the untrained embedded model, then the GPU estimate",
    )
    ap.add_argument(
        "--problems", default=None, help="with --round-only: 'synthetic:N' or a JSONL file (e.g. GSM8K train)"
    )
    # The GPU recipe to extrapolate to.
    ap.add_argument("--gpu-steps", type=int, default=1000)
    ap.add_argument("--gpu-batch", type=int, default=16)
    ap.add_argument("--gpu-seq", type=int, default=512)
    ap.add_argument(
        "--gpu-chain-tokens", type=float, default=128, help="GSM8K chains mostly reach the 128 cap"
    )
    ap.add_argument("--gpu-prompt-tokens", type=float, default=110, help="GSM8K question in the chat prompt")
    ap.add_argument(
        "--gpu-decode-ms",
        type=float,
        default=25.0,
        help="assumed latency of one batched decode step of HF generate (0.5-1.5B, eager)",
    )
    ap.add_argument(
        "--gpu-step-s",
        type=float,
        default=0.35,
        help="assumed optimizer-step time of the GPU recipe (batch x seq tokens fwd+bwd)",
    )
    ap.add_argument(
        "--gpu-forward-ms",
        type=float,
        default=25.0,
        help="assumed latency of one small probing forward call (launch-bound)",
    )
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} cpus, torch {torch.__version__} threads {torch.get_num_threads()}, "
        f"load average at start {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}",
        flush=True,
    )
    if args.round_only:
        return round_only(args, load)
    problems = ProbeSet.synthetic(args.num_problems, seed=1000).sample(args.num_problems, 0)
    out_root = tempfile.mkdtemp(prefix="faithcb-overhead-")
    try:
        from faithcb.models import load_embedded_model

        _, tok = load_embedded_model()
        texts = train_texts(tok, args.texts)
        without = run_arm(False, args, texts, problems, out_root)
        print(f"without callback: {without['seconds']:.1f} s for {args.steps} steps", flush=True)
        with_cb = run_arm(True, args, texts, problems, out_root)
        print(f"with callback:    {with_cb['seconds']:.1f} s", flush=True)
        cfg = FaithConfig(faith_show_progress=False, faith_num_problems=args.num_problems)
        prof = round_profile(with_cb["model"], with_cb["tokenizer"], problems, cfg)
    finally:
        shutil.rmtree(out_root, ignore_errors=True)

    overhead = (with_cb["seconds"] - without["seconds"]) / without["seconds"]
    # Rounds actually computed: every model round, and base-reference rounds that were not reused
    # (the PEFT base round is computed once; later history lines repeat it with seconds = NaN).
    computed = [
        r
        for r in with_cb["rounds"]
        if isinstance(r["seconds"], (int, float)) and r["seconds"] == r["seconds"]
    ]
    n_rounds = len(computed)
    round_secs = [r["seconds"] for r in with_cb["rounds"] if r["seconds"] is not None]
    step_s = sum(without["step_seconds"]) / len(without["step_seconds"])
    train_tok_step = without["mean_example_tokens"] * args.batch
    n = prof["problems"]
    gen_pp = (prof["chain_prompt_tokens"] + prof["chain_new_tokens"]) / n
    scored_pp = prof["probe_processed"] / n
    model_overhead = estimate(n_rounds, n, gen_pp, scored_pp, args.steps, train_tok_step)

    print("")
    print(
        f"CPU run: SFT+LoRA r={args.lora_r}, {args.steps} steps x batch {args.batch} "
        f"(~{train_tok_step:.0f} tokens/step, mean example {without['mean_example_tokens']:.0f} tokens)"
    )
    print(
        f"  wall: without {without['seconds']:.1f} s, with {with_cb['seconds']:.1f} s -> overhead {overhead * 100:.0f}%"
    )
    listing = ", ".join("{}@{} {:.1f}s".format(r["role"], r["step"], r["seconds"]) for r in computed)
    print(
        f"  mean optimizer step {step_s:.2f} s; {n_rounds} probe rounds (incl. step-0 baseline and the "
        f"PEFT base reference): {listing}"
    )
    print("  " + describe_round(prof, "on the trained model"))
    print(
        f"  token model: rounds x problems x (gen {gen_pp:.0f} + scored {scored_pp:.0f} tokens) / "
        f"(3 x steps x {train_tok_step:.0f}) = {model_overhead * 100:.0f}% (measured {overhead * 100:.0f}%)"
    )

    finish(
        args,
        load,
        prof,
        overhead=overhead,
        without_seconds=without["seconds"],
        with_seconds=with_cb["seconds"],
        rounds=with_cb["rounds"],
        mean_step_seconds=step_s,
        train_tokens_per_step=train_tok_step,
        token_model_overhead=model_overhead,
        round_seconds=round_secs,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
