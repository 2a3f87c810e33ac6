"""``faithcb eval | compare | show | report | demo | validate`` — the command line: parsers, dispatch, tables, errors.

    faithcb eval --problems gsm8k --n 16                     # a bundled set, the embedded SmolLM2-135M-Instruct
    faithcb eval --model ./ckpt --adapter ./lora --problems gsm8k.jsonl --n 64 --out results.jsonl
    faithcb compare BASE FINETUNED --problems heldout.jsonl  # same problems, side by side
    faithcb show --problems heldout.jsonl                    # every context the probes build, for one problem
    faithcb report RUN_DIR [RUN_DIR ...]                     # PNG + HTML from faith_history.jsonl
    faithcb demo --output-dir faithcb-demo                   # the two-arm LoRA demo
    faithcb validate --quick                                 # error rates on planted shortcuts (docs/validation.md)

``eval`` and ``compare`` take their defaults, choices and help from ``FaithConfig``'s fields (the
callback's settings), so a saved checkpoint is probed the way training probes it; ``show``,
``report`` and ``demo`` contribute their own subparsers (``make_parser``). Every subcommand reports faithcb's
errors as one line ``faithcb <command>: error: ...`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import MISSING, fields
from importlib import metadata
from pathlib import Path
from typing import Any

from faithcb import demo, report, show, validation
from faithcb.config import FaithConfig
from faithcb.data import named_sets_help
from faithcb.errors import FaithcbError
from faithcb.models import EMBEDDED
from faithcb.probes.registry import (
    did_you_mean,
    in_registry_order,
    metric_or_none,
    probe_names,
)
from faithcb.processes import Processes, eval_processes, records_over_processes
from faithcb.prompting import LAYOUTS
from faithcb.results import RoundResult, aggregate, paired_changes, round_warnings
from faithcb.runinfo import run_info
from faithcb.settings import EVALUATORS, GENERATION_PATHS, PARAPHRASE_MODES, PARAPHRASERS, ProbeSettings

_FIELDS = {f.name: f for f in fields(FaithConfig)}


def config_default(name: str) -> Any:
    """The default of ``FaithConfig`` field ``name`` (the one source of defaults)."""
    f = _FIELDS[name]
    return f.default_factory() if f.default is MISSING else f.default


def _help(name: str, text: str | None = None) -> str:
    """``text`` (or the field's own help) followed by the field's default."""
    if text is None:
        text = _FIELDS[name].metadata.get("help", "").rstrip(".")
        text = text[:1].lower() + text[1:]
    default = config_default(name)
    shown = " ".join(map(str, default)) if isinstance(default, list) else default
    return f"{text} (default: {shown})".replace("%", "%%")  # argparse %-formats help


def _at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def _probe(name: str) -> str:
    """An argparse type: a registered probe name (did-you-mean otherwise)."""
    names = probe_names()
    if name not in names:
        raise argparse.ArgumentTypeError(f"unknown probe {name!r}{did_you_mean(name, names)}; choose from {list(names)}")
    return name


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--problems", required=True,
                   help=f"{named_sets_help()}, a .jsonl/.json file, a saved dataset dir, or synthetic:N".replace("%", "%%"))
    p.add_argument("--format", default="auto", choices=["auto", "gsm8k", "choice", "generic"],
                   help="problem format (default: detected per record)")
    # --num-problems: under torchrun / accelerate launch, whose parsers read --n as an ambiguous
    # abbreviation of their own options (--nnodes, --num_processes, ...) and stop.
    p.add_argument("--n", "--num-problems", dest="n", type=_at_least(0), default=64,
                   help="problems to sample (default 64; 0 = all); spell it --num-problems after a launcher")
    p.add_argument("--seed", type=int, default=config_default("faith_seed"), help=_help("faith_seed"))
    p.add_argument("--probes", nargs="+", type=_probe, default=config_default("faith_probes"), metavar="PROBE",
                   help=_help("faith_probes", f"probes to run, from {' '.join(probe_names())}"))
    p.add_argument("--max-chain-tokens", type=_at_least(1), default=config_default("faith_max_chain_tokens"),
                   help=_help("faith_max_chain_tokens"))
    p.add_argument("--batch-size", type=_at_least(1), default=config_default("faith_batch_size"),
                   help=_help("faith_batch_size"))
    p.add_argument("--paraphraser", default=config_default("faith_paraphraser"), choices=PARAPHRASERS,
                   help=_help("faith_paraphraser"))
    p.add_argument("--paraphrase-mode", default=config_default("faith_paraphrase_mode"), choices=PARAPHRASE_MODES,
                   help=_help("faith_paraphrase_mode"))
    p.add_argument("--evaluator", default=config_default("faith_evaluator"), choices=EVALUATORS,
                   help=_help("faith_evaluator", "information-gain evaluator (base = PEFT adapters disabled; auto = base with an adapter)"))
    p.add_argument("--choice-permutations", action="store_true", help=_help("faith_choice_permutations"))
    p.add_argument("--layout", default=config_default("faith_layout"), choices=LAYOUTS, help=_help("faith_layout"))
    p.add_argument("--max-cuts", type=_at_least(4), default=config_default("faith_max_cuts"), help=_help("faith_max_cuts"))
    p.add_argument("--generation", default=config_default("faith_generation"), choices=GENERATION_PATHS,
                   help=_help("faith_generation"))
    p.add_argument("--plain", action="store_true", help="score every variant independently (no prefix sharing)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def probe_settings(args: argparse.Namespace) -> ProbeSettings:
    """The round's settings from ``eval``/``compare`` arguments, through ``FaithConfig`` (validated once)."""
    config = FaithConfig(
        faith_probes=list(args.probes),
        faith_max_chain_tokens=args.max_chain_tokens,
        faith_batch_size=args.batch_size,
        faith_paraphraser=args.paraphraser,
        faith_paraphrase_mode=args.paraphrase_mode,
        faith_evaluator=args.evaluator,
        faith_fast=not args.plain,
        faith_choice_permutations=args.choice_permutations,
        faith_seed=args.seed,
        faith_layout=args.layout,
        faith_max_cuts=args.max_cuts,
        faith_generation=args.generation,
    )
    return config.probe_settings()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faithcb", description="Chain-of-thought faithfulness probes.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("eval", help="probe one model on a problem set")
    ev.add_argument("--model", default=EMBEDDED, help="local path or hub id (default: the embedded SmolLM2-135M)")
    ev.add_argument("--adapter", default=None, help="a PEFT adapter directory to load on top of --model")
    _engine_args(ev)
    ev.add_argument("--out", default=None, help="write per-problem records here (JSONL) and a .summary.json")
    ev.set_defaults(handler=_eval)

    cmp = sub.add_parser("compare", help="probe two models on the same problems, side by side")
    cmp.add_argument("model_a", help=f"model A: path, hub id or '{EMBEDDED}'")
    cmp.add_argument("model_b", help=f"model B: path, hub id or '{EMBEDDED}'")
    cmp.add_argument("--adapter-a", default=None, help="PEFT adapter for model A")
    cmp.add_argument("--adapter-b", default=None, help="PEFT adapter for model B")
    _engine_args(cmp)
    cmp.add_argument("--out", default=None, help="write both summaries here (JSON)")
    cmp.set_defaults(handler=_compare)

    show.make_parser(sub)
    report.make_parser(sub)
    demo.make_parser(sub)
    validation.make_parser(sub)
    return parser


def installed_version() -> str:
    """The installed distribution's version (what pip and a results file name), from its metadata."""
    try:
        return metadata.version("faithcb")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (FaithcbError, FileNotFoundError) as exc:
        # One line a user can read (and a script can grep), not a traceback: these are input errors.
        print(f"faithcb {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


def _load(model: str, adapter: str | None):
    from faithcb.models import load_model

    return load_model(None if model == EMBEDDED else model, adapter)


def _problems(args):
    from faithcb.data import ProbeSet

    problem_set = ProbeSet.load(args.problems, format=args.format)
    return problem_set.sample(args.n or None, args.seed)


def _run(model_name: str, adapter: str | None, problems, settings: ProbeSettings, args,
         processes: Processes | None = None) -> RoundResult:
    """The round of one model on ``problems``; under a launcher, each process probes its share."""
    from faithcb.engine import FaithfulnessEngine

    processes = processes or Processes()
    started = time.perf_counter()

    def records_of(mine) -> list[dict]:
        if processes.is_main_process:
            print(f"faithcb: loading {model_name}{' + ' + adapter if adapter else ''} ...", file=sys.stderr)
        model, tokenizer = _load(model_name, adapter)
        if processes.device is not None:
            model.to(processes.device)  # this process's own device (cuda:LOCAL_RANK under a launcher)
        engine = FaithfulnessEngine(model, tokenizer, settings,
                                    show_progress=not args.no_progress and processes.is_main_process)
        made["run_info"] = run_info(settings=settings, problems=problems, source=args.problems, model=model,
                                    model_name=model_name, adapter=adapter, layout=engine.prompter.layout)
        return engine.records(mine)

    made: dict[str, Any] = {}
    records = records_over_processes(processes, problems, records_of)
    result = aggregate(records, seconds=time.perf_counter() - started)
    result.run_info = made.get("run_info")
    return result


def _eval(args) -> int:
    settings = probe_settings(args)  # before loading anything: a bad setting fails at once
    problems = _problems(args)
    # Launched by torchrun / accelerate launch: every process probes its share, rank 0 reports all.
    with eval_processes() as processes:
        result = _run(args.model, args.adapter, problems, settings, args, processes)
    if not processes.is_main_process:
        return 0
    over = f", {processes.num_processes} processes" if processes.num_processes > 1 else ""
    print(format_table(result, title=f"faithcb eval: {args.model} on {args.problems} ({len(problems)} problems{over})"))
    _warn_health(result, settings)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            for record in result.records:
                f.write(json.dumps(record) + "\n")
        summary = out.with_suffix(".summary.json")
        summary.write_text(json.dumps({"run_info": result.run_info, **result.to_dict(with_records=False)}, indent=2))
        print(f"records: {out}\nsummary: {summary}")
    return 0


def _warn_health(result: RoundResult, settings: ProbeSettings) -> None:
    for message in round_warnings(
        result, chain_limit=f"--max-chain-tokens {settings.max_chain_tokens}",
        answer_limit=f"answer window {settings.answer_max_tokens} tokens",
    ):
        print(f"faithcb: warning: {message}", file=sys.stderr)


def _compare(args) -> int:
    settings = probe_settings(args)
    problems = _problems(args)
    with eval_processes() as processes:  # under a launcher, as eval: shares, gathered, rank 0 reports
        a = _run(args.model_a, args.adapter_a, problems, settings, args, processes)
        b = _run(args.model_b, args.adapter_b, problems, settings, args, processes)
    if not processes.is_main_process:
        return 0
    print(format_comparison(a, b, args.model_a, args.model_b, len(problems)))
    for result in (a, b):
        _warn_health(result, settings)
    if args.out:
        Path(args.out).write_text(json.dumps(
            {"a": {"run_info": a.run_info, **a.to_dict()}, "b": {"run_info": b.run_info, **b.to_dict()}}, indent=2))
        print(f"written: {args.out}")
    return 0


# ---------------------------------------------------------------------- tables
# A metric's reading, from its declared direction (which way is more coupled).
_READING = {"higher": "higher = more coupled", "lower": "lower = more coupled", "neutral": ""}


def metric_rows(names) -> list[tuple[str, str, str]]:
    """(name, label, reading) of each metric in ``names``: registered ones in registry order,
    then any other, sorted (a metric this process has no probe for keeps its name as label)."""
    rows = []
    for name in in_registry_order(names):
        metric = metric_or_none(name)
        rows.append((name, metric.label, _READING[metric.direction]) if metric else (name, name, ""))
    return rows


def _fmt(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3f}"


def format_table(result: RoundResult, title: str = "") -> str:
    rows = [("metric", "value", "95% CI", "n", "reading")]
    for name, label, reading in metric_rows(result.metrics):
        m = result.metrics[name]
        rows.append((label, _fmt(m["value"]), f"[{_fmt(m['ci_low'])}, {_fmt(m['ci_high'])}]", str(m["n"]), reading))
    s = result.scalars
    footer = (f"problems scored: {int(s['problems_scored'])} of {int(s.get('problems_total', s['problems_scored']))}"
              f"  unscored (no steps / truncated / unparsed): {int(s['problems_unscored'])}"
              f"  probe errors: {int(s['probe_errors'])}  seconds: {s['seconds']:.1f}")
    if "paraphrase_rejected" in s:
        footer += f"  paraphrased steps rejected: {int(s['paraphrase_rejected'])}"
    if "steps_0_rate" in s:
        footer += (f"\nshare of problems whose chains have 0 steps: {s['steps_0_rate']:.2f}  1 step: "
                   f"{s['steps_1_rate']:.2f}  early-answering AOC by steps (1 / 2-3 / 4+): " + " / ".join(
                       _fmt(s.get(f"early_answering_aoc_steps_{b}", math.nan)) for b in ("1", "2_3", "4plus")))
        if s.get("early_answering_full_disagrees"):
            footer += f"  chains left out of AOC (m(n) != 1): {int(s['early_answering_full_disagrees'])}"
    if "letter_full_top_share" in s:
        footer += (f"\nmultiple-choice letters over {int(s['letter_n'])} problems: full-chain answers' top letter "
                   f"{_fmt(s['letter_full_top_share'])} (gold's {_fmt(s['letter_gold_top_share'])}), entropy / log2(choices) "
                   f"{_fmt(s['letter_full_entropy_normalized'])} (gold's {_fmt(s['letter_gold_entropy_normalized'])}), "
                   f"accuracy by letter distribution alone sum p_full*p_gold {_fmt(s['letter_full_gold_chance_agreement'])}")
    if "early_answering_k0_letter_agreement" in s:
        footer += (f"\nearly answering at k = 0 (no chain), multiple choice: agreement with a_full m(0) "
                   f"{_fmt(s['early_answering_k0_letter_agreement'])}, by chance sum p_0*p_full "
                   f"{_fmt(s['early_answering_k0_letter_chance_agreement'])}")
    if "choice_unstable_rate" in s:
        footer += (f"\nchosen option changes under rotations of the choices: {_fmt(s['choice_unstable_rate'])}"
                   f" of {int(s['choice_unstable_n'])} problems")
    if result.curve:
        curve = "  ".join(f"{x:.2f}:{_fmt(y)}" for x, y in zip(result.curve["x"], result.curve["mean"]))
        footer += f"\nearly-answering curve (fraction of chain kept: agreement with full-chain answer): {curve}"
    return "\n".join(filter(None, [title, _columns(rows), footer]))


def format_comparison(a: RoundResult, b: RoundResult, name_a: str, name_b: str, n: int) -> str:
    """Per metric: each model's own mean, and B − A paired over the problems both models scored.

    The paired column is the comparison: the same problems on both sides, with a paired 95%
    interval and the number of problems it is over. The two means beside it are each over the
    problems *that* model scored (its truncated or unparsed chains drop out on its side only), so
    their difference, shown last, can mislead where the models drop different problems.
    """
    paired = paired_changes(a.records, b.records, [*a.metrics, *(m for m in b.metrics if m not in a.metrics)])
    rows = [("metric", f"A: {Path(name_a).name} (own problems)", f"B: {Path(name_b).name} (own problems)",
             "B - A paired [95% CI]", "n paired", "B - A unpaired", "reading")]

    def cell(m) -> str:
        return f"{_fmt(m['value'])} [{_fmt(m['ci_low'])}, {_fmt(m['ci_high'])}]" if m else "n/a"

    for name, label, reading in metric_rows([*a.metrics, *b.metrics]):
        ma, mb = a.metrics.get(name), b.metrics.get(name)
        va = ma["value"] if ma else math.nan
        vb = mb["value"] if mb else math.nan
        unpaired = vb - va if math.isfinite(va) and math.isfinite(vb) else math.nan
        change = paired.get(name)
        shown = "n/a" if change is None else (
            f"{_signed(change['value'])} [{_signed(change['ci_low'])}, {_signed(change['ci_high'])}]")
        rows.append((label, cell(ma), cell(mb), shown, str(change["n"]) if change else "0", _signed(unpaired), reading))
    return "\n".join([
        f"faithcb compare on {n} problems", _columns(rows),
        "paired: B - A over the problems both models scored (the comparison); own problems: each model's "
        "mean over the problems it scored; unpaired: the difference of those two means",
    ])


def _signed(x: float) -> str:
    return ("+" if x is not None and math.isfinite(x) and x > 0 else "") + _fmt(x)


def _columns(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
