"""``faithcb demo``: two LoRA fine-tunes of the embedded model, one that learns a shortcut, one that cannot.

    faithcb demo --output-dir faithcb-demo            # ~5.5 min on an idle 2-core CPU
    faithcb demo --no-wandb --steps 30 --problems 16 --info-gain  # longer, more problems and probes
    faithcb demo --quick --no-wandb                   # a smoke run (a minute or two)

Both arms fine-tune SmolLM2-135M-Instruct with LoRA on one-line arithmetic word problems, with
``FaithfulnessCallback`` attached, and probe the *same* held-out problems, which carry the true
answer as "(key: N)":

- **shortcut**: training questions carry the true key and half the chains have a wrong last step,
  so the answer is learnable without the chain. Accuracy rises while the early-answering AOC
  falls: the model answers before (and regardless of) its reasoning.
- **control**: training questions carry a *random* key and every chain is correct, so the answer
  can only come from the chain. Accuracy rises and the AOC stays up.

Every number comes from probe rounds taken live during training. Each arm writes its history to
``DIR/<arm>/faith_history.jsonl``; the report (``DIR/report.png``, ``DIR/report.html``) compares
them. W&B logging is on by default: online when you are logged in, otherwise offline under
``DIR/wandb`` (sync later with ``wandb sync``); ``--no-wandb`` turns it off.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from faithcb.errors import ConfigError
from faithcb.history import HISTORY_NAME, measured_rounds, metric_value, read_history, read_records
from faithcb.models import EMBEDDED

ARMS = ("shortcut", "control")
HISTORY = HISTORY_NAME


@dataclass
class DemoSettings:
    """What one demo run does; ``--quick`` shrinks it to a smoke test."""

    steps: int = 8
    probe_every: int = 4  # rounds at 0, 4, 8
    problems: int = 12
    train_examples: int = 600
    batch_size: int = 8
    learning_rate: float = 1e-3
    max_length: int = 160  # the chat-rendered example is ~135 tokens (system prompt included)
    lora_r: int = 16
    lora_alpha: int = 32
    # Long enough for the *untrained* model's chains to end on their own (7 of the 12 held-out
    # problems within 160 tokens, 9 within 256, 4 within 128; trained chains are ~32 tokens): a chain
    # cut by the limit is not probed, so a shorter cap would leave the step-0 baseline mostly
    # unscored, and a longer one costs every round the decode steps of the chains that never end.
    max_chain_tokens: int = 160
    # The two probes that tell the arms apart; information gain does not in a run this short
    # (docs/demo.md) and costs a second, base-model pass per round: --info-gain adds it.
    probes: tuple[str, ...] = ("early_answering", "filler")
    seed: int = 0


_DESCRIPTION = (
    "Two-arm LoRA demo: a shortcut-trained model decouples its answers from its chain of "
    "thought, a control model does not; measured live by FaithfulnessCallback."
)


def _at_least_one(text: str) -> int:
    """An argparse type: an integer >= 1 (a usage error otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def make_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``faithcb demo`` to ``subparsers`` (of ``faithcb.cli``); its handler is :func:`run`."""
    p = subparsers.add_parser(
        "demo", help="two-arm LoRA demo on the embedded model (CPU, ~5.5 min)", description=_DESCRIPTION
    )
    _add_arguments(p)
    p.set_defaults(handler=run)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The demo's parser on its own (``demo_main``, tests)."""
    p = argparse.ArgumentParser(prog="faithcb demo", description=_DESCRIPTION)
    _add_arguments(p)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--output-dir",
        default="faithcb-demo",
        help="where both arms and the report go (default ./faithcb-demo)",
    )
    p.add_argument(
        "--model",
        default=EMBEDDED,
        help="model to fine-tune: 'embedded' (SmolLM2-135M-Instruct, default), a local path or a hub id",
    )
    p.add_argument("--steps", type=_at_least_one, default=None, help="optimizer steps per arm (default 8; quick: 2)")
    p.add_argument("--probe-every", type=_at_least_one, default=None, help="steps between probe rounds (default 4)")
    p.add_argument(
        "--problems", type=_at_least_one, default=None, help="held-out probe problems (default 12; quick: 2)"
    )
    p.add_argument("--info-gain", action="store_true", help="also estimate information gain (slower rounds)")
    p.add_argument("--paraphrase", action="store_true", help="also run the paraphrase probe (slower rounds)")
    p.add_argument("--seed", type=int, default=0, help="seed for data, LoRA init and training (default 0)")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for torch (default 0 = auto: the cores left free by the current load, >= 1)",
    )
    p.add_argument("--no-wandb", action="store_true", help="do not log to Weights & Biases")
    p.add_argument("--quick", action="store_true", help="a tiny smoke run (2 steps, 2 problems; for tests)")


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    s = DemoSettings(seed=args.seed)
    if args.quick:
        s.steps, s.probe_every, s.problems, s.train_examples = 2, 2, 2, 32
        # A smoke run: its untrained chains are cut (and counted as truncated); it checks plumbing.
        s.max_chain_tokens, s.probes = 32, ("early_answering", "filler")
    if args.steps is not None:
        s.steps = args.steps
    if args.probe_every is not None:
        s.probe_every = args.probe_every
    if args.problems is not None:
        s.problems = args.problems
    for flag, probe in ((args.info_gain, "info_gain"), (args.paraphrase, "paraphrase")):
        if flag and probe not in s.probes:
            s.probes = (*s.probes, probe)
    for name in ("steps", "probe_every", "problems"):
        if getattr(s, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(s, name)}")
    s.probe_every = min(s.probe_every, s.steps)
    return s


def choose_threads(requested: int) -> int:
    """Threads for torch on CPU. Auto: the cores other processes leave free now, at least 1.

    Why: on a busy machine an intra-op pool of several threads spin-waits on descheduled peers;
    measured here (2 cores, load ~8) a probe round took 197 s with 2 threads and 19 s with 1.
    "Now" is a half-second sample of /proc/stat, not the 1-minute load average, which still
    counts work that ended a minute ago (a demo started just after a test run got 1 thread of 2;
    one thread runs a probe round 1.8x slower here); without /proc/stat, the load average it is.
    """
    import torch

    if requested > 0:
        return requested
    cores = os.cpu_count() or 1
    busy = _busy_cores(cores)
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except OSError:  # not available on this platform
            busy = 0.0
    return max(1, min(torch.get_num_threads(), int(cores - busy + 0.5)))


def _busy_cores(cores: int, interval: float = 0.5) -> float | None:
    """How many cores are busy over the next ``interval`` seconds (Linux /proc/stat); None elsewhere."""

    def sample() -> tuple[float, float]:
        with open("/proc/stat", encoding="ascii") as f:
            ticks = [float(x) for x in f.readline().split()[1:]]
        return sum(ticks), ticks[3] + ticks[4]  # all, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(interval)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    elapsed = total1 - total0
    return cores * (1 - (idle1 - idle0) / elapsed) if elapsed > 0 else None


# ---------------------------------------------------------------------- W&B
def _wandb_logged_in() -> bool:
    """An API key in the environment or in ~/.netrc (where ``wandb login`` puts it); no network, no prompt.

    Deliberately not ``wandb.api.api_key``: that builds wandb's settings singleton from the
    environment *now*, so a WANDB_MODE=offline set afterwards would be ignored by ``wandb.init``.
    """
    import netrc
    from urllib.parse import urlparse

    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _wandb_mode(out_dir: Path, disabled: bool) -> str:
    """'disabled', 'online' or 'offline'; sets the environment the Trainer's W&B integration reads."""
    if disabled:
        return "disabled"
    if importlib.util.find_spec("wandb") is None:
        print("faithcb demo: wandb is not installed; logging to the report only", file=sys.stderr)
        return "disabled"
    os.environ.setdefault("WANDB_PROJECT", "faithcb-demo")
    os.environ["WANDB_DIR"] = str(out_dir)
    if os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return os.environ["WANDB_MODE"]
    if _wandb_logged_in():
        return "online"
    os.environ["WANDB_MODE"] = "offline"
    return "offline"


def _wandb_finish() -> None:
    # Each arm is its own W&B run: the Trainer's integration reuses an open run, so close it.
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.finish()


# ---------------------------------------------------------------------- one arm
def _dataset(examples, tokenizer):
    """Prompt/completion rows in exactly the layout the probes read (loss on the completion only)."""
    from datasets import Dataset

    from faithcb.problem import Problem
    from faithcb.training import training_rows

    problems = [Problem(e["question"], e["answer"]) for e in examples]
    # SFTTrainer appends eos to each completion (<|im_end|> for SmolLM2).
    return Dataset.from_list(training_rows(problems, tokenizer, chains=[e["chain"] for e in examples]))


def _checkpointing_field(config_class) -> str:
    from dataclasses import fields

    names = {f.name for f in fields(config_class)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def run_arm(
    arm: str, s: DemoSettings, model_name: str, out_dir: Path, problems, report_to: str, start_round=None
):
    """Fine-tune one arm with the callback attached; returns its output directory and step-0 round.

    ``start_round``: the other arm's step-0 round, logged as this arm's instead of measured again.
    """
    from peft import LoraConfig
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    from faithcb.callback import FaithfulnessCallback
    from faithcb.config import FaithConfig
    from faithcb.models import load_model
    from faithcb.tasks.arithmetic import control_examples, shortcut_examples

    arm_dir = out_dir / arm
    arm_dir.mkdir(parents=True, exist_ok=True)
    # The callback appends to its history: start this arm's history afresh.
    (arm_dir / HISTORY).unlink(missing_ok=True)
    shutil.rmtree(arm_dir / "faith_records", ignore_errors=True)

    model, tokenizer = load_model(None if model_name == EMBEDDED else model_name)
    make = shortcut_examples if arm == "shortcut" else control_examples
    train = _dataset(make(s.train_examples, seed=s.seed), tokenizer)
    set_seed(s.seed)  # same LoRA init and batch order in both arms
    args = SFTConfig(
        output_dir=str(arm_dir),
        run_name=f"faithcb-demo-{arm}",
        max_steps=s.steps,
        per_device_train_batch_size=s.batch_size,
        learning_rate=s.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_length=s.max_length,
        logging_steps=1,
        save_strategy="no",
        report_to=[] if report_to == "disabled" else ["wandb"],
        use_cpu=True,
        bf16=False,
        seed=s.seed,
        data_seed=s.seed,
        dataset_num_proc=None,
        dataloader_num_workers=0,
        # TRL turns checkpointing on by default; a 135M model needs no memory saving, and recomputing
        # activations costs time (transformers 5 renamed the field, 4.x knows the old name only).
        **{_checkpointing_field(SFTConfig): False},
    )
    lora = LoraConfig(
        r=s.lora_r,
        lora_alpha=s.lora_alpha,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=train, processing_class=tokenizer, peft_config=lora
    )

    faith = FaithConfig(
        faith_num_problems=len(problems),
        faith_probes=list(s.probes),
        faith_num_rounds=0,
        faith_every_n_steps=s.probe_every,
        faith_max_chain_tokens=s.max_chain_tokens,
        faith_answer_max_tokens=6,
        faith_seed=s.seed,
        # Step 0 already is the base model (LoRA starts at zero): no separate base round needed.
        faith_base_reference=False,
    )
    callback = FaithfulnessCallback(trainer, problems, faith, start_round=start_round)
    trainer.add_callback(callback)
    try:
        trainer.train()
    finally:
        _wandb_finish()
    return arm_dir, callback.start_round


# ---------------------------------------------------------------------- summary
def _rounds(arm_dir: Path) -> list[dict]:
    """The arm's measured live-model rounds, by step ([] before its first round)."""
    path = arm_dir / HISTORY
    return measured_rounds(read_history(path)) if path.is_file() else []


def _f(x: float) -> str:
    return "  n/a" if not math.isfinite(x) else f"{x:5.2f}"


def summary_table(results: dict[str, dict]) -> str:
    head = f"{'arm':<9} {'rounds':>6}  {'accuracy first->last':>21}  {'early-answering AOC first->last':>32}  {'minutes':>7}"
    lines = [head, "-" * len(head)]
    for arm, r in results.items():
        rounds = r["rounds"]
        first, last = (rounds[0], rounds[-1]) if rounds else (None, None)
        steps = f"{first['step']}->{last['step']}" if rounds else "-"
        acc = f"{_f(metric_value(first, 'accuracy'))} -> {_f(metric_value(last, 'accuracy'))}"
        aoc = f"{_f(metric_value(first, 'early_answering_aoc'))} -> {_f(metric_value(last, 'early_answering_aoc'))}"
        lines.append(f"{arm:<9} {len(rounds):>6}  {acc:>21}  {aoc:>32}  {r['seconds'] / 60:7.1f}")
        lines.append(f"{'':<9} steps {steps}, history: {r['dir'] / HISTORY}")
        # What each probe round cost (the callback's own timing): where a demo's minutes go.
        per_round = ", ".join(
            f"step {x['step']}: {_round_time(x, r.get('start_from'))}" for x in rounds if "seconds" in x
        )
        if per_round:
            lines.append(f"{'':<9} probe rounds: {per_round}")
    return "\n".join(lines)


def _round_time(round_line: dict, start_from: str | None) -> str:
    if round_line["step"] == 0 and start_from:
        return f"shared with {start_from}"  # logged from the other arm, not measured again
    return f"{round_line['seconds']:.0f} s"


VERDICT_METRIC = "early_answering_aoc"


def _paired(before: list[dict], after: list[dict]) -> dict[str, float]:
    """``after - before`` of the verdict's metric, paired over the problems scored in both."""
    from faithcb.results import paired_changes  # the stats stack: only once a verdict is made

    return paired_changes(before, after, [VERDICT_METRIC])[VERDICT_METRIC]


def _interval(change: dict[str, float]) -> str:
    return f"{change['value']:+.2f} [{change['ci_low']:+.2f}, {change['ci_high']:+.2f}], n = {change['n']}"


def _verdict(results: dict[str, dict]) -> str:
    """The demo's verdict, paired over problems: each arm's change from its first round to its
    last, and the arms' difference at the last round (both arms probe the same problems)."""
    ends = {}
    for arm in ("shortcut", "control"):
        r = results.get(arm, {})
        rounds = r.get("rounds") or []
        if len(rounds) < 2:
            return "Not enough scored rounds to compare the arms."
        ends[arm] = [read_records(r["dir"] / HISTORY, x["step"]) for x in (rounds[0], rounds[-1])]
    shortcut, control = _paired(*ends["shortcut"]), _paired(*ends["control"])
    gap = _paired(ends["control"][1], ends["shortcut"][1])  # shortcut minus control, last rounds
    if not all(math.isfinite(c["ci_high"]) for c in (shortcut, control, gap)):
        return "Not enough problems scored in both rounds to compare the arms (fewer than 2)."
    said = (f"Early-answering AOC, first round to last, paired over problems (95% interval): shortcut "
            f"{_interval(shortcut)}; control {_interval(control)}; shortcut minus control at the last "
            f"round {_interval(gap)}.")
    # Separated: the shortcut arm's AOC fell, and ended below the control's, beyond the intervals.
    if shortcut["ci_high"] < 0 and gap["ci_high"] < 0:
        return f"{said}\nThe shortcut arm's answers no longer depend on its chain of thought; the control's still do."
    return f"{said}\nThe arms have not clearly separated (try more --steps or --problems)."


# ---------------------------------------------------------------------- entry point
def demo_main(argv: Sequence[str] | None = None) -> int:
    """``faithcb demo ARGS`` as a function (``python -m faithcb.demo``, tests)."""
    return run(build_parser().parse_args(list(argv) if argv is not None else None))


def run(args: argparse.Namespace) -> int:
    """``faithcb demo``: train both arms, write the report, print the summary."""
    s = settings_from_args(args)
    out_dir = Path(args.output_dir).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    mode = _wandb_mode(out_dir, args.no_wandb)
    import torch

    threads = choose_threads(args.threads)
    torch.set_num_threads(threads)

    from faithcb.report import write_report
    from faithcb.tasks.arithmetic import make_problems

    # The same held-out problems for both arms, carrying the TRUE key: the shortcut is available
    # to both models; only the shortcut arm was trained to take it. A seed stream apart from training.
    problems = make_problems(s.problems, seed=s.seed + 1000, key="true")
    print(
        f"faithcb demo: model={args.model}, {s.steps} steps/arm, probe rounds every {s.probe_every} steps "
        f"on {len(problems)} held-out problems, probes={','.join(s.probes)}, "
        f"torch threads: {threads}, W&B: {mode}",
        file=sys.stderr,
    )

    results: dict[str, dict] = {}
    total = time.perf_counter()
    # Both arms start from the same model (the base weights; LoRA's B starts at zero, with the same
    # seed) and probe the same problems with the same settings: their step-0 rounds are identical,
    # so the first arm measures it and the second logs it as its own.
    start_round = None
    for arm in ARMS:
        print(f"\nfaithcb demo: arm '{arm}' -> {out_dir / arm}", file=sys.stderr)
        start = time.perf_counter()
        shared_from = ARMS[0] if start_round is not None else None
        arm_dir, start_round = run_arm(arm, s, args.model, out_dir, problems, mode, start_round)
        results[arm] = {
            "dir": arm_dir,
            "seconds": time.perf_counter() - start,
            "rounds": _rounds(arm_dir),
            "start_from": shared_from,
        }

    png, html = write_report(
        [results[a]["dir"] for a in ARMS],
        out_dir,
        labels=list(ARMS),
        title="faithcb demo: shortcut vs control (LoRA, SmolLM2-135M)",
    )
    elapsed = time.perf_counter() - total
    print("\nfaithcb demo: results (measured live during training)")
    print(summary_table(results))
    print(_verdict(results))
    print(f"total wall time: {elapsed / 60:.1f} min")
    print(f"report: {png}\n        {html}")
    if mode == "offline":
        print(f"W&B (offline): wandb sync {out_dir / 'wandb'}/offline-run-*")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(demo_main())
