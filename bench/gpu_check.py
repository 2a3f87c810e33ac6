#!/usr/bin/env python
"""What a faithcb round costs on this machine's GPU: one command, no network, torch + transformers only.

Builds randomly initialised models with the shapes of Qwen2.5-0.5B and Qwen2.5-1.5B (configs
written below; weights need not be trained to time them) and prints, within ``--budget`` seconds:

1. per model, chain length (256, 512 tokens) and generation path (generate / static / continuous):
   a round's time split into chain generation, a_full and scoring (probing). Chains have a fixed
   length: generation runs with no end token, so every chain decodes exactly ``chain`` tokens; the
   probed chains are written text of ``chain`` tokens in ``--steps`` steps (``engine.chain_from_text``).
2. a LoRA SFT step: the base frozen, rank-8 adapters added by hand on q_proj and v_proj (no peft),
   AdamW on the adapters, gradient checkpointing on (TRL's default), batch ``--train-batch`` x
   ``--train-seq`` tokens, bfloat16 weights.
3. the projected overhead at the default cadence (8 rounds + the step-0 baseline + the PEFT base
   reference = 10 rounds) for 1,000 and 5,000 training steps: rounds x round / (steps x step).
4. float32 vs bfloat16 agreement of the probe outcomes on the same chains (random weights make
   near-ties common: this is a lower bound for a trained model's agreement).
5. per model, the GRPO rollout probe (``faithcb.rollouts.RolloutProbe``, which a GRPO run pays
   every step): one step's rollouts, ``--rollout-prompts`` x ``--rollout-group`` written
   completions of the shortest chain length, scored (a_full, then early answering at every cut);
   seconds, and that time against the LoRA SFT step above (a GRPO step also generates its
   rollouts, so it is likely longer than that step, and the rollout probe's share of it smaller).

The tokenizer is faithcb's character-level test tokenizer (built from code): one token per
character makes chain lengths exact; the models keep Qwen's 151,936-token vocabulary, so the
output projection costs what it costs in Qwen. faithcb is imported from this checkout (it need not
be installed); TRL, W&B and peft are neither needed nor imported.

    python bench/gpu_check.py                 # on the GPU machine (cuda), < 6 minutes
    python bench/gpu_check.py --tiny          # CPU, tiny shapes, the same code path (CI)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # faithcb from this checkout: the GPU machine does not install it
    sys.path.insert(0, REPO)

import torch  # noqa: E402

from faithcb.answers import extract_answer  # noqa: E402
from faithcb.engine import FaithfulnessEngine  # noqa: E402
from faithcb.generation import ChainGenerator  # noqa: E402
from faithcb.problem import Problem  # noqa: E402
from faithcb.rollouts import Rollout, RolloutProbe  # noqa: E402
from faithcb.settings import GENERATION_PATHS, ProbeSettings  # noqa: E402
from faithcb.testing import tiny_tokenizer  # noqa: E402

# Qwen2.5 shapes (config.json of Qwen/Qwen2.5-0.5B / -1.5B); tiny for --tiny.
SHAPES = {
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1024, tie_word_embeddings=True),
}
DEFAULT_ROUNDS = 10  # faith_num_rounds 8 + the step-0 baseline + the PEFT base-model reference


def build_model(shape: str, dtype: torch.dtype, device: str):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**SHAPES[shape], max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6,
                         attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(config)
    return model.to(dtype).eval()


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def chain_text(tokens: int, steps: int) -> str:
    """A chain of exactly ``tokens`` characters (= tokens) in ``steps`` newline-separated steps."""
    per = tokens // steps
    lines = []
    for k in range(steps):
        n = per if k < steps - 1 else tokens - per * (steps - 1) - (steps - 1)
        head = f"Step {k + 1}: {k + 3} + {k + 4} = {2 * k + 7}."
        lines.append((head + " so" * n)[: max(1, n)] if n < len(head) else head + (" ok" * n)[: n - len(head)])
    return "\n".join(lines)


def make_chains(engine: FaithfulnessEngine, n: int, tokens: int, steps: int, a_full: list[list[int]] | None):
    """``n`` scorable chains of ``tokens`` tokens and ``steps`` steps; a_full = the model's own greedy
    answer (read here unless given, so two dtypes can be compared on the same a_full)."""
    chains = [
        engine.chain_from_text(Problem(f"Problem {i}: what is {i} + {i + 1}?", str(2 * i + 1), id=f"p{i}"),
                               chain_text(tokens, steps), key=i)
        for i in range(n)
    ]
    if a_full is None:
        a_full = engine.lm.answer([c.prefix + c.cue_ids for c in chains])
    return [scorable(engine, c, ids) for c, ids in zip(chains, a_full)], a_full


def scorable(engine: FaithfulnessEngine, chain, a_full: list[int]):
    """``chain`` with a_full = ``a_full`` and status ok whether or not it parses: random weights
    rarely write a number, and the check times the scoring a parsed answer gets."""
    text = engine.lm.decode(a_full)
    answer = extract_answer(text, "number", after_cue=True) or "<unparsed>"
    return dataclasses.replace(chain, answer_ids=list(a_full), answer_text=text, answer=answer, status="ok",
                               gold_ids=list(chain.gold_ids) + list(a_full[-1:]))


def round_times(engine, prompts, path: str, chain_tokens: int, steps: int, batch: int) -> dict:
    lm = engine.lm
    eos = lm.eos_ids
    lm.eos_ids = set()  # no end token: every chain decodes exactly chain_tokens tokens
    try:
        with lm.session():
            mem0 = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
            sync()
            t0 = time.perf_counter()
            new = ChainGenerator(lm, path, batch_size=batch)(prompts, max_new_tokens=chain_tokens)
            sync()
            t1 = time.perf_counter()
            resident = (torch.cuda.memory_allocated() - mem0) if torch.cuda.is_available() else 0
    finally:
        lm.eos_ids = eos
    assert all(len(s) == chain_tokens for s in new), "a chain was not of the forced length"
    with lm.session():
        chains, _ = make_chains(engine, len(prompts), chain_tokens, steps, None)
        sync()
        t2 = time.perf_counter()
        records = engine.probe(chains)
        sync()
        t3 = time.perf_counter()
    return {"generation_s": t1 - t0, "a_full+scoring_s": t3 - t1, "scoring_s": t3 - t2,
            "resident_after_generation_bytes": resident, "records": records}


def rollout_probe_times(model, tok, settings: ProbeSettings, prompts: int, group: int, chain_tokens: int,
                        steps: int) -> dict:
    """One GRPO step's rollouts through the rollout probe's work: ``prompts`` x ``group`` written
    completions of ``chain_tokens`` tokens in ``steps`` steps (each a little different), made
    chains, a_full read, then early answering at every cut (``RolloutProbe.records``, with every
    a_full taken as parsed: see ``scorable``); after a warm-up call on two of them."""
    engine = RolloutProbe(model, tok, settings).engine  # its engine: early answering only
    rollouts = []
    for i in range(prompts):
        problem = Problem(f"Problem {i}: what is {i} + {i + 1}?", str(2 * i + 1), id=f"r{i}")
        prompt_ids = engine.prompt_ids(problem)
        for g in range(group):
            text = chain_text(chain_tokens, steps)
            rollouts.append(Rollout(problem, prompt_ids, f"{g % 10}{text[1:]}"))

    def score(batch: list[Rollout]) -> list[dict]:
        with engine.lm.session():
            chains = [dataclasses.replace(engine.chain_from_text(r.problem, r.text, key=i, ended=r.ended),
                                          prompt_ids=list(r.prompt_ids)) for i, r in enumerate(batch)]
            chains = [scorable(engine, c, c.answer_ids) for c in engine.read_full_answers(chains)]
            records = engine.probe(chains)
        engine.chains.clear_cache()
        return records

    score(rollouts[:2])
    sync()
    start = time.perf_counter()
    records = score(rollouts)
    sync()
    seconds = time.perf_counter() - start
    scored = sum("early_answering" in r for r in records)
    return {"rollouts": len(rollouts), "scored": scored, "chain_tokens": chain_tokens, "seconds": seconds}


def lora_step_seconds(model, batch: int, seq: int, repeats: int) -> float:
    """One SFT step with hand-made rank-8 LoRA adapters on q_proj/v_proj, the base frozen."""

    class LoRA(torch.nn.Module):
        def __init__(self, base: torch.nn.Linear, r: int = 8):
            super().__init__()
            self.base = base
            self.a = torch.nn.Parameter(torch.randn(r, base.in_features, device=base.weight.device) / r)
            self.b = torch.nn.Parameter(torch.zeros(base.out_features, r, device=base.weight.device))

        def forward(self, x):
            return self.base(x) + (x.to(self.a.dtype) @ self.a.T @ self.b.T).to(x.dtype)

    for p in model.parameters():
        p.requires_grad_(False)
    for layer in model.model.layers:
        layer.self_attn.q_proj = LoRA(layer.self_attn.q_proj)
        layer.self_attn.v_proj = LoRA(layer.self_attn.v_proj)
    model.train()
    # transformers >= 5.x renamed it (the old name warns); the GPU machine may have either
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), device=next(model.parameters()).device)
    times = []
    for _ in range(repeats + 1):  # the first step warms up
        sync()
        t = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - t)
    model.eval()
    return min(times[1:])


def agreement(a: list[dict], b: list[dict]) -> dict:
    same = total = 0
    gap = 0.0
    for ra, rb in zip(a, b):
        for probe in ("early_answering", "filler", "paraphrase"):
            if probe in ra and probe in rb:
                for x, y in zip(ra[probe]["agree"], rb[probe]["agree"]):
                    same += x == y
                    total += 1
        if "info_gain" in ra and "info_gain" in rb:
            for x, y in zip(ra["info_gain"]["logp_gold"], rb["info_gain"]["logp_gold"]):
                gap = max(gap, abs(x - y))
    return {"variants": total, "same_outcome": same, "rate": same / max(1, total), "max_logp_gold_gap": gap}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on CPU, short chains (CI)")
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--models", default="qwen2.5-0.5b,qwen2.5-1.5b")
    ap.add_argument("--chains", default="512,256", help="chain lengths in tokens (longest first: one static cache)")
    ap.add_argument("--paths", default=",".join(GENERATION_PATHS))
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8, help="steps per probed chain")
    ap.add_argument("--train-batch", type=int, default=16)
    ap.add_argument("--train-seq", type=int, default=512)
    ap.add_argument("--rollout-prompts", type=int, default=8, help="prompts of one GRPO step's rollouts")
    ap.add_argument("--rollout-group", type=int, default=8, help="completions per prompt (TRL's num_generations)")
    ap.add_argument("--budget", type=float, default=330.0, help="seconds; later items are skipped past it")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.tiny:
        args.models, args.chains, args.problems, args.steps = "tiny", "32,24", 4, 4
        args.train_batch, args.train_seq = 2, 64
        args.rollout_prompts, args.rollout_group = 2, 2
        args.device = args.device or "cpu"
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    out: dict = {"device": device, "torch": torch.__version__, "results": [], "skipped": []}
    if device == "cuda":
        out["gpu"] = torch.cuda.get_device_name()
    print(f"gpu_check: device {out.get('gpu', device)}, torch {torch.__version__}, budget {args.budget:.0f} s")
    tok = tiny_tokenizer()
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    settings = ProbeSettings(batch_size=args.problems, answer_max_tokens=8, max_chain_tokens=max(
        int(c) for c in args.chains.split(",")))
    for shape in args.models.split(","):
        if time.perf_counter() - start > args.budget:
            out["skipped"].append(shape)
            continue
        model = build_model(shape, dtype, device)
        engine = FaithfulnessEngine(model, tok, settings, show_progress=False, strict=True)
        prompts = [engine.prompt_ids(Problem(f"Problem {i}: what is {i} + {i + 1}?", "1"))
                   for i in range(args.problems)]
        row: dict = {"model": shape, "dtype": str(dtype).removeprefix("torch."), "rounds": []}
        for path in args.paths.split(","):
            # warm-up (and, for static on GPU, the one-time compilation), timed apart
            t = time.perf_counter()
            round_times(engine, prompts, path, 8, 2, args.problems)
            warm = time.perf_counter() - t
            for chain in (int(c) for c in args.chains.split(",")):
                if time.perf_counter() - start > args.budget:
                    out["skipped"].append(f"{shape} {path} {chain}")
                    continue
                r = round_times(engine, prompts, path, chain, args.steps, args.problems)
                r.pop("records")
                r.update(path=path, chain_tokens=chain, warmup_s=warm)
                row["rounds"].append(r)
                print(f"  {shape} {path:<10} chain {chain:>4}: generation {r['generation_s']:7.2f} s, a_full + "
                      f"scoring {r['a_full+scoring_s']:7.2f} s (scoring {r['scoring_s']:.2f} s); warm-up {warm:.1f} s; "
                      f"left allocated after generation {r['resident_after_generation_bytes'] / 2**20:.0f} MiB",
                      flush=True)
        if time.perf_counter() - start <= args.budget:
            rollout_chain = min(int(c) for c in args.chains.split(","))
            rp = rollout_probe_times(model, tok, settings, args.rollout_prompts, args.rollout_group, rollout_chain,
                                     args.steps)
            row["rollout_probe"] = rp
            print(f"  {shape} rollout probe, one GRPO step ({args.rollout_prompts} prompts x {args.rollout_group} "
                  f"completions of {rollout_chain} tokens): {rp['seconds']:.2f} s, {rp['scored']} scored", flush=True)
        else:
            out["skipped"].append(f"{shape} rollout probe")
        if time.perf_counter() - start <= args.budget:
            step = lora_step_seconds(model, args.train_batch, args.train_seq, repeats=2)
            row["lora_step_s"] = step
            print(f"  {shape} LoRA SFT step (batch {args.train_batch} x {args.train_seq}, r=8 q/v, grad ckpt): {step:.3f} s")
            if "rollout_probe" in row:
                row["rollout_probe"]["per_lora_step"] = row["rollout_probe"]["seconds"] / step
                print(f"    rollout probe per GRPO step: {row['rollout_probe']['per_lora_step']:.2f}x the LoRA SFT step "
                      "(a GRPO step also generates its rollouts: likely longer, the share smaller)")
            for r in row["rounds"]:
                total = r["generation_s"] + r["a_full+scoring_s"]
                r["overhead"] = {steps: DEFAULT_ROUNDS * total / (steps * step) for steps in (1000, 5000)}
                print(f"    projected overhead {r['path']:<10} chain {r['chain_tokens']:>4}: "
                      f"{100 * r['overhead'][1000]:6.1f}% of 1,000 steps, {100 * r['overhead'][5000]:6.1f}% of 5,000")
        else:
            out["skipped"].append(f"{shape} LoRA step")
        out["results"].append(row)
        del engine, model
        if device == "cuda":
            torch.cuda.empty_cache()

    # float32 vs bfloat16: the same chains and a_full (read in float32), the probe outcomes compared.
    first = args.models.split(",")[0]
    if time.perf_counter() - start <= args.budget:
        chain = min(int(c) for c in args.chains.split(","))
        records, a_full = {}, None
        for dt in (torch.float32, torch.bfloat16):
            model = build_model(first, dt, device)
            engine = FaithfulnessEngine(model, tok, settings, show_progress=False, strict=True)
            with engine.lm.session():
                chains, a_full = make_chains(engine, args.problems, chain, args.steps, a_full)
                records[dt] = engine.probe(chains)
            del engine, model
        agree = agreement(records[torch.float32], records[torch.bfloat16])
        out["float32_vs_bfloat16"] = {"model": first, "chain_tokens": chain, **agree}
        print(f"  float32 vs bfloat16 ({first}, chain {chain}): {agree['same_outcome']} of {agree['variants']} "
              f"probe outcomes the same ({100 * agree['rate']:.1f}%), info-gain log p(gold) max gap "
              f"{agree['max_logp_gold_gap']:.3f} nats (random weights: near-ties everywhere)")
    else:
        out["skipped"].append("float32 vs bfloat16")
    absent = [m for m in ("trl", "wandb", "peft") if sys.modules.get(m) is not None]  # None: blocked
    out["imported_but_must_not"] = absent
    out["seconds"] = time.perf_counter() - start
    print(f"gpu_check: {out['seconds']:.0f} s" + (f"; skipped (budget): {out['skipped']}" if out["skipped"] else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2, default=str)
    if absent:
        print(f"gpu_check: imported {absent}, which the GPU machine does not have")
        return 1
    return 0 if not math.isnan(out["seconds"]) else 1


if __name__ == "__main__":
    sys.exit(main())
