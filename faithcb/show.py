"""``faithcb show`` — print the exact text of every context the probes build for one problem.

This is what to run first on a new model: which layout was chosen and why, the chain prompt the
model writes from, its chain split into steps, the answer cue, the gold continuation, and for each
probe every context it scores — decoded from the very ids the engine scores, special tokens kept,
with the boundaries marked:

    ⟦prompt⟧   the chain prompt (printed once in full, then abbreviated)
    ⟦+ ...⟧    what a probe inserts in place of the rest of the chain (filler, paraphrase, mistake)
    ⟦cue⟧      the answer cue, which closes the reasoning and opens the answer
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from faithcb.config import FaithConfig
from faithcb.errors import ConfigError
from faithcb.models import EMBEDDED
from faithcb.prompting import LAYOUTS
from faithcb.settings import ProbeSettings

# Shown when no problem file is given: a two-step word problem.
EXAMPLE = {"question": "Tom has 3 boxes of 12 pencils. He gives away 7 pencils. How many pencils does he have left?",
           "answer": "29"}


def make_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("show", help="print every context the probes build for one problem (run this first)")
    p.add_argument("--model", default=EMBEDDED, help="local path or hub id (default: the embedded SmolLM2-135M)")
    p.add_argument("--adapter", default=None, help="a PEFT adapter directory to load on top of --model")
    p.add_argument("--problems", default=None, help="a problem file; its --index-th problem is shown "
                   "(default: a built-in word problem)")
    p.add_argument("--index", type=int, default=0, help="which problem of --problems (default 0)")
    p.add_argument("--layout", default="auto", choices=LAYOUTS, help="prompt layout (default: auto)")
    p.add_argument("--chain", default=None, help="use this chain text instead of generating one")
    p.add_argument("--probes", nargs="+", default=None, metavar="PROBE",
                   help="probes to show (default: the callback's default probes)")
    p.add_argument("--max-chain-tokens", type=int, default=FaithConfig.faith_max_chain_tokens,
                   help="max tokens of the generated chain (default: %(default)s)")
    p.add_argument("--max-cuts", type=int, default=FaithConfig.faith_max_cuts,
                   help="most cut points per problem (default: %(default)s)")
    p.set_defaults(handler=run_show)
    return p


def run_show(args) -> int:
    from faithcb.data import ProbeSet
    from faithcb.models import load_model

    config = FaithConfig(
        faith_layout=args.layout, faith_max_chain_tokens=args.max_chain_tokens, faith_max_cuts=args.max_cuts,
        **({"faith_probes": list(args.probes)} if args.probes else {}),
    )
    if args.problems:
        problems = list(ProbeSet.load(args.problems))
        if not 0 <= args.index < len(problems):
            raise ConfigError(f"--index: {args.index} is outside 0..{len(problems) - 1} ({args.problems})")
        problem = problems[args.index]
    else:
        problem = ProbeSet.from_records([EXAMPLE])[0]
    print(f"faithcb show: loading {args.model} ...", file=sys.stderr)
    model, tokenizer = load_model(None if args.model == EMBEDDED else args.model, args.adapter)
    print(show_text(model, tokenizer, problem, config.probe_settings(), chain_text=args.chain))
    return 0


def show_text(model, tokenizer, problem, settings: ProbeSettings, *, chain_text: str | None = None, lm=None) -> str:
    """The report ``faithcb show`` prints (a string, so tests read it).

    ``lm``: a ``ScoringLM`` to generate and score with instead of the model's own (a scripted one
    in tests, so what a probe continues with is made on purpose).
    """
    from faithcb.engine import FaithfulnessEngine

    engine = FaithfulnessEngine(model, tokenizer, settings, show_progress=False, lm=lm)
    prompter, lm = engine.prompter, engine.lm

    def text(ids: Sequence[int]) -> str:
        return tokenizer.decode(list(ids), skip_special_tokens=False)

    with lm.session():
        if chain_text is None:
            chain = engine.generate_chains([problem])[0]
        else:
            chain = engine.chain_from_text(problem, chain_text)
        for probe in engine.probes:
            probe.prepare([chain], lm)
        variants = [(probe.name, probe.variants(chain)) for probe in engine.probes]

    out = [
        f"layout: {prompter.layout} — {prompter.reason}",
        f"problem: {problem.id or problem.question[:60]!r} ({problem.kind}); gold answer {problem.answer!r}",
        "",
        f"== chain prompt ({len(chain.prompt_ids)} tokens) ==",
        f"⟦prompt⟧{text(chain.prompt_ids)}⟦/prompt⟧",
        "",
        f"== chain ({len(chain.chain_ids)} tokens, {chain.n_steps} steps, status {chain.status}"
        f"{'' if chain.ended else ', cut by the token limit'}) ==",
    ]
    out += [f"  [{k}] {step}" for k, step in enumerate(chain.steps, start=1)]
    out += [
        f"cut points k: {list(chain.cut_ks)}",
        "",
        "== answer cue ==",
        f"⟦cue⟧{text(chain.cue_ids)}⟦/cue⟧",
        "== gold continuation ==",
        f"{text(chain.gold_ids)!r}",
        "",
        "== full context (what a_full is read from) ==",
        f"⟦prompt⟧{text(chain.chain_ids)}⟦cue⟧{text(chain.cue_ids)}",
    ]
    for name, probe_variants in variants:
        out += ["", f"== {name}: {len(probe_variants)} contexts =="]
        for v in probe_variants:
            cut = v.prefix_cut(chain) - len(chain.prompt_ids)
            insert = f"⟦+ {text(v.insert)}⟧" if v.insert else ""
            gold = "  (+ log p(gold))" if v.wants_gold else ""
            out.append(f"-- k={v.k}{gold}\n⟦prompt⟧{text(chain.chain_ids[:cut])}{insert}⟦cue⟧{text(chain.cue_ids)}")
    return "\n".join(out)
