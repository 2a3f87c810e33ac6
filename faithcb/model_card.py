"""The "Faithfulness" section of the model card a trainer writes (``README.md`` in ``output_dir``).

Trainers write their card in ``create_model_card`` (``Trainer``'s, or TRL's override), which
``push_to_hub`` and TRL's checkpoint saving call; transformers offers no hook there, so
``add_to_model_card`` wraps that method on the one trainer instance the callback probes: the card
is written as before, then the section built from the run's history is put into it. The section
sits between two HTML comments, so writing the card again replaces it instead of adding a second.

The section: the last round's headline metrics with their 95% intervals, each one's paired change
from the run's first round (over the problems scored in both), the problems, the settings that
make the numbers comparable, the library versions, and where the full history lies.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Any

from faithcb.history import measured_rounds, read_history, read_run_info
from faithcb.probes.registry import metric_or_none

START = "<!-- faithcb:faithfulness:start -->"
END = "<!-- faithcb:faithfulness:end -->"
TITLE = "## Faithfulness"
# Besides every probe's headline metrics: accuracy (what the chains are for) and early answering's
# length-free companion of AOC (the default stop metric; AOC's range moves with chain length).
EXTRA_METRICS = ("accuracy", "early_answering_disagreement_before_end")
# The settings a reader needs to reproduce or compare the numbers, in this order.
CARD_SETTINGS = ("probes", "max_chain_tokens", "answer_max_tokens", "max_cuts", "do_sample", "temperature",
                 "num_samples", "seed", "paraphraser", "paraphrase_mode", "evaluator", "choice_permutations")
_READING = {"higher": "higher = more coupled", "lower": "lower = more coupled", "neutral": ""}


def card_metrics(round_line: dict[str, Any]) -> list[str]:
    """The metrics the card shows, of those the round has: accuracy, the headline ones, the companion."""
    present = round_line.get("metrics", {})
    headline = [name for name in present if (m := metric_or_none(name)) and m.headline]
    ordered = [EXTRA_METRICS[0], *headline, *EXTRA_METRICS[1:]]
    return [name for name in dict.fromkeys(ordered) if name in present]


def faithfulness_section(history_file: str | os.PathLike) -> str | None:
    """The section's markdown, from the history (None when no round was measured yet)."""
    history_file = Path(history_file)
    if not history_file.is_file():
        return None
    rounds = measured_rounds(read_history(history_file))
    if not rounds:
        return None
    info = read_run_info(history_file) or {}
    last, first = rounds[-1], rounds[0]
    problems = info.get("problems", {})
    lines = [
        TITLE, "",
        f"Chain-of-thought faithfulness measured during fine-tuning with faithcb's perturbation probes, on "
        f"{problems.get('n', '?')} held-out problems from `{problems.get('source', '?')}`"
        + (f" (sha256 of the problems `{problems['sha256'][:12]}`)" if problems.get("sha256") else "")
        + f". Last round: step {last['step']}; changes are paired over the problems scored in both that round "
        f"and the run's first round (step {first['step']}); intervals are 95%.", "",
        f"| metric | step {last['step']} [95% CI] | n | change from step {first['step']} [95% CI] | n paired | reading |",
        "|---|---|---|---|---|---|",
    ]
    changes = last.get("changes", {})
    for name in card_metrics(last):
        m, metric = last["metrics"][name], metric_or_none(name)
        change = changes.get(name) if last is not first else None
        lines.append(
            f"| {metric.label if metric else name} | {_fmt(m.get('value'))} [{_fmt(m.get('ci_low'))}, "
            f"{_fmt(m.get('ci_high'))}] | {m.get('n', '')} | "
            + (f"{_signed(change['value'])} [{_signed(change['ci_low'])}, {_signed(change['ci_high'])}] | {change['n']}"
               if change else "n/a | 0")
            + f" | {_READING.get(metric.direction, '') if metric else ''} |"
        )
    lines += ["", *_settings_lines(info), "",
              f"Every round, with all metrics and per-problem records: `{history_file.name}` in the training "
              f"output directory (`faithcb report <output_dir>` draws it)."]
    return "\n".join(lines)


def _settings_lines(info: dict[str, Any]) -> list[str]:
    if not info:
        return ["Settings: not recorded (a history written before faithcb recorded run settings)."]
    settings = info.get("settings", {})
    shown = ", ".join(f"{key}={_value(settings[key])}" for key in CARD_SETTINGS if key in settings)
    versions = info.get("versions", {})
    libs = ", ".join(f"{name} {version}" for name, version in versions.items() if version)
    model = info.get("model", {})
    return [
        f"Settings: layout={info.get('layout')}, {shown}.",
        f"Model probed: `{model.get('name_or_path') or 'unnamed'}` ({model.get('dtype')} on {model.get('device')}); {libs}.",
    ]


def _value(value: Any) -> str:
    return "+".join(map(str, value)) if isinstance(value, list) else str(value)


def _fmt(x: Any) -> str:
    return "n/a" if not isinstance(x, (int, float)) or not math.isfinite(x) else f"{x:.3f}"


def _signed(x: Any) -> str:
    return ("+" if isinstance(x, (int, float)) and math.isfinite(x) and x > 0 else "") + _fmt(x)


def put_section(card_file: str | os.PathLike, section: str) -> None:
    """Put ``section`` into the card at ``card_file``: in place of an earlier one, else at the end."""
    path = Path(card_file)
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    block = f"{START}\n{section}\n{END}\n"
    if START in text and END in text:
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        text = head + block + tail.lstrip("\n")
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block
    path.write_text(text, encoding="utf-8")


def add_to_model_card(trainer, history_file: str | os.PathLike) -> None:
    """Make ``trainer.create_model_card`` (and so ``push_to_hub``) also write the Faithfulness section."""
    original = getattr(trainer, "create_model_card", None)
    if original is None:  # not a transformers Trainer: it writes no card to add to
        return

    @functools.wraps(original)
    def create_model_card(*args, **kwargs):
        out = original(*args, **kwargs)
        # The trainer writes the card on the main process only; the other processes have nothing to add to.
        is_main = getattr(trainer, "is_world_process_zero", lambda: True)()
        section = faithfulness_section(history_file) if is_main else None
        if section:
            put_section(Path(trainer.args.output_dir) / "README.md", section)
        return out

    trainer.create_model_card = create_model_card
