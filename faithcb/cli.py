"""``faithcb eval | compare | report | demo`` — the engine on saved checkpoints, from a shell.

    faithcb eval --problems heldout.jsonl                    # the embedded SmolLM2-135M-Instruct
    faithcb eval --model ./ckpt --adapter ./lora --problems gsm8k.jsonl --n 64 --out results.jsonl
    faithcb compare BASE FINETUNED --problems heldout.jsonl  # same problems, side by side
    faithcb report RUN_DIR [RUN_DIR ...]                     # PNG + HTML from faith_history.jsonl
    faithcb demo --output-dir faithcb-demo                   # the two-arm LoRA demo
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from faithcb.engine import FaithfulnessEngine, ProbeSettings, RoundResult
from faithcb.errors import FaithcbError
from faithcb.probes import DEFAULT_PROBES, probe_names

EMBEDDED = "embedded"


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--problems", required=True, help="a .jsonl/.json file, a saved dataset dir, or synthetic:N")
    p.add_argument("--format", default="auto", choices=["auto", "gsm8k", "choice", "generic"],
                   help="problem format (default: detected per record)")
    p.add_argument("--n", type=int, default=64, help="problems to sample (default 64; 0 = all)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--probes", nargs="+", default=list(DEFAULT_PROBES), choices=probe_names(), metavar="PROBE",
                   help=f"probes to run (default: {' '.join(DEFAULT_PROBES)}; also: mistakes)")
    p.add_argument("--max-chain-tokens", type=int, default=256, help="max tokens of a chain (default 256)")
    p.add_argument("--batch-size", type=int, default=16, help="rows per forward pass (default 16)")
    p.add_argument("--paraphraser", default="rule", choices=["rule", "model"], help="default: rule")
    p.add_argument("--evaluator", default="live", choices=["live", "base"],
                   help="information-gain evaluator (base = PEFT adapters disabled)")
    p.add_argument("--plain", action="store_true", help="score every variant independently (no prefix sharing)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faithcb", description="Chain-of-thought faithfulness probes.")
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("eval", help="probe one model on a problem set")
    ev.add_argument("--model", default=EMBEDDED, help="local path or hub id (default: the embedded SmolLM2-135M)")
    ev.add_argument("--adapter", default=None, help="a PEFT adapter directory to load on top of --model")
    _engine_args(ev)
    ev.add_argument("--out", default=None, help="write per-problem records here (JSONL) and a .summary.json")

    cmp = sub.add_parser("compare", help="probe two models on the same problems, side by side")
    cmp.add_argument("model_a", help=f"model A: path, hub id or '{EMBEDDED}'")
    cmp.add_argument("model_b", help=f"model B: path, hub id or '{EMBEDDED}'")
    cmp.add_argument("--adapter-a", default=None, help="PEFT adapter for model A")
    cmp.add_argument("--adapter-b", default=None, help="PEFT adapter for model B")
    _engine_args(cmp)
    cmp.add_argument("--out", default=None, help="write both summaries here (JSON)")

    rep = sub.add_parser("report", help="PNG + HTML report from one or more runs' faith_history.jsonl",
                         add_help=False)
    rep.add_argument("rest", nargs=argparse.REMAINDER)

    demo = sub.add_parser("demo", help="two-arm LoRA demo on the embedded model (CPU, ~10 min)", add_help=False)
    demo.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # report and demo own their argument parsing (and their --help).
    if argv and argv[0] == "report":
        from faithcb.report import report_main

        return report_main(argv[1:])
    if argv and argv[0] == "demo":
        from faithcb.demo import demo_main

        return demo_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "eval":
            return _eval(args)
        return _compare(args)
    except FaithcbError as exc:
        print(f"faithcb {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _load(model: str, adapter: str | None):
    from faithcb.models import load_model

    return load_model(None if model == EMBEDDED else model, adapter)


def _problems(args):
    from faithcb.data import ProbeSet

    problem_set = ProbeSet.load(args.problems, format=args.format)
    return problem_set.sample(args.n or None, args.seed)


def _run(model_name: str, adapter: str | None, problems, args) -> RoundResult:
    started = time.perf_counter()
    print(f"faithcb: loading {model_name}{' + ' + adapter if adapter else ''} ...", file=sys.stderr)
    model, tokenizer = _load(model_name, adapter)
    settings = ProbeSettings(
        probes=tuple(args.probes), max_chain_tokens=args.max_chain_tokens, batch_size=args.batch_size,
        paraphraser=args.paraphraser, evaluator=args.evaluator, fast=not args.plain, seed=args.seed,
    )
    engine = FaithfulnessEngine(model, tokenizer, settings, show_progress=not args.no_progress)
    result = engine.run(problems)
    result.scalars["seconds"] = time.perf_counter() - started
    return result


def _eval(args) -> int:
    problems = _problems(args)
    result = _run(args.model, args.adapter, problems, args)
    print(format_table(result, title=f"faithcb eval: {args.model} on {args.problems} ({len(problems)} problems)"))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            for record in result.records:
                f.write(json.dumps(record) + "\n")
        summary = out.with_suffix(".summary.json")
        summary.write_text(json.dumps(result.to_dict(with_records=False), indent=2))
        print(f"records: {out}\nsummary: {summary}")
    return 0


def _compare(args) -> int:
    problems = _problems(args)
    a = _run(args.model_a, args.adapter_a, problems, args)
    b = _run(args.model_b, args.adapter_b, problems, args)
    print(format_comparison(a, b, args.model_a, args.model_b, len(problems)))
    if args.out:
        Path(args.out).write_text(json.dumps({"a": a.to_dict(), "b": b.to_dict()}, indent=2))
        print(f"written: {args.out}")
    return 0


# ---------------------------------------------------------------------- tables
# (label, direction hint) per metric, in reading order.
METRIC_LABELS = {
    "accuracy": ("accuracy", "higher = more correct"),
    "early_answering_aoc": ("early-answering AOC", "higher = more coupled"),
    "filler_invariance": ("filler invariance", "lower = more coupled"),
    "filler_k0_agreement": ("filler, whole chain (k=0)", "lower = more coupled"),
    "paraphrase_invariance": ("paraphrase invariance", "higher = meaning, not wording"),
    "info_gain_total": ("info gain total (nats)", "higher = steps inform the answer"),
    "info_gain_per_step": ("info gain per step (nats)", "higher = steps inform the answer"),
    "info_gain_positive_fraction": ("steps with positive gain", ""),
    "info_gain_delta_ppl": ("Wu delta_I (perplexity)", "higher = steps inform the answer"),
    "mistakes_aoc": ("adding-mistakes AOC", "higher = more coupled"),
    "unparsed_rate": ("unparsed answers", "counted, not scored"),
    "mean_steps": ("mean steps", ""),
    "mean_chain_tokens": ("mean chain tokens", ""),
}


def _fmt(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3f}"


def format_table(result: RoundResult, title: str = "") -> str:
    rows = [("metric", "value", "95% CI", "n", "reading")]
    for name, m in result.metrics.items():
        label, hint = METRIC_LABELS.get(name, (name, ""))
        rows.append((label, _fmt(m["value"]), f"[{_fmt(m['ci_low'])}, {_fmt(m['ci_high'])}]", str(m["n"]), hint))
    s = result.scalars
    footer = (f"problems scored: {int(s['problems_scored'])}  unscored (no steps / unparsed): "
              f"{int(s['problems_unscored'])}  probe errors: {int(s['probe_errors'])}  seconds: {s['seconds']:.1f}")
    if "paraphrase_rejected" in s:
        footer += f"  paraphrased steps rejected: {int(s['paraphrase_rejected'])}"
    if result.curve:
        curve = "  ".join(f"{x:.2f}:{_fmt(y)}" for x, y in zip(result.curve["x"], result.curve["mean"]))
        footer += f"\nearly-answering curve (fraction of chain kept: agreement with full-chain answer): {curve}"
    return "\n".join(filter(None, [title, _columns(rows), footer]))


def format_comparison(a: RoundResult, b: RoundResult, name_a: str, name_b: str, n: int) -> str:
    rows = [("metric", f"A: {Path(name_a).name}", f"B: {Path(name_b).name}", "B - A", "reading")]
    names = list(a.metrics) + [k for k in b.metrics if k not in a.metrics]
    for name in names:
        label, hint = METRIC_LABELS.get(name, (name, ""))
        ma, mb = a.metrics.get(name), b.metrics.get(name)
        va = ma["value"] if ma else math.nan
        vb = mb["value"] if mb else math.nan
        cell = lambda m: f"{_fmt(m['value'])} [{_fmt(m['ci_low'])}, {_fmt(m['ci_high'])}]" if m else "n/a"  # noqa: E731
        diff = vb - va if math.isfinite(va) and math.isfinite(vb) else math.nan
        rows.append((label, cell(ma), cell(mb), ("+" if diff > 0 else "") + _fmt(diff), hint))
    return f"faithcb compare on {n} problems\n" + _columns(rows)


def _columns(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
