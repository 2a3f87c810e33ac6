"""Helpers shared by the recipes: data arguments, model loading, training rows, the GRPO reward.

Every training row is built with ``faithcb.prompting.training_text``, so the model is trained on
exactly the layout the faithfulness probes read (chain prompt + chain + cue + answer); the loss
covers the completion (chain, cue and answer), not the question.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faithcb.data import ProbeSet, Problem
from faithcb.prompting import Prompter, training_text
from faithcb.text import extract_answer

EMBEDDED = "embedded"
_CALCULATOR = re.compile(r"<<[^<>]*>>")  # GSM8K calculator annotations "<<48/2=24>>"
_CHAIN_FIELDS = ("chain", "rationale", "reasoning", "solution")


@dataclass
class DataArguments:
    """Where the training problems (and, by default, the held-out probe problems) come from."""

    dataset: str = field(
        default="synthetic",
        metadata={
            "help": "'synthetic' (built-in arithmetic word problems), a local .jsonl/.json file "
            "(GSM8K 'question'/'answer' with '####', or 'question'/'chain'/'answer'), a saved dataset "
            "directory, or a Hugging Face Hub dataset id such as openai/gsm8k."
        },
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "Hub dataset config, e.g. 'main' for openai/gsm8k."}
    )
    dataset_split: str = field(default="train", metadata={"help": "Hub dataset split."})
    dataset_format: str = field(default="auto", metadata={"help": "Problem format: auto, gsm8k or generic."})
    num_train_examples: int = field(default=600, metadata={"help": "Training rows (0 = all that are left)."})
    holdout: int = field(
        default=64,
        metadata={
            "help": "Problems held out of training for the probes (used unless faith_problems is set)."
        },
    )
    synthetic_key: str = field(
        default="none",
        metadata={"help": "Synthetic task: 'none', 'true' (answer in the question) or 'random'."},
    )
    synthetic_corrupt_fraction: float = field(
        default=0.0, metadata={"help": "Synthetic task: share of chains with a wrong last step."}
    )


# ---------------------------------------------------------------------- model
def load_model_and_tokenizer(model_args):
    """``model_name_or_path`` empty/None/'embedded' -> the embedded SmolLM2-135M-Instruct; else a path or hub id."""
    import torch

    from faithcb.models import load_model

    name = model_args.model_name_or_path
    dtype = getattr(model_args, "dtype", None)
    dtype = getattr(torch, dtype) if dtype not in (None, "auto") else None
    model, tokenizer = load_model(None if name in (None, "", EMBEDDED) else name, dtype=dtype)
    model.train()
    return model, tokenizer


# ---------------------------------------------------------------------- data
def _read_records(data: DataArguments) -> list[dict[str, Any]]:
    path = Path(data.dataset).expanduser()
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            return list(json.loads(text))
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    import datasets

    if path.is_dir():
        return list(datasets.load_from_disk(str(path)))
    return list(datasets.load_dataset(data.dataset, data.dataset_config, split=data.dataset_split))


def chain_of(record: dict[str, Any], problem: Problem) -> str:
    """The worked reasoning of one record, ending in "The answer is X." when it does not already."""
    raw = record.get("answer")
    if isinstance(raw, str) and "####" in raw:  # GSM8K: reasoning lines, then "#### 72"
        # The same closing sentence as the synthetic chains, so every chain states its answer.
        return _CALCULATOR.sub("", raw.rsplit("####", 1)[0]).strip() + f"\nThe answer is {problem.answer}."
    else:
        found = next((record[f] for f in _CHAIN_FIELDS if isinstance(record.get(f), str)), None)
        if found is None:
            raise ValueError(
                f"record {problem.id or problem.question[:40]!r}: no reasoning; expected a GSM8K '####' answer "
                f"or one of the fields {list(_CHAIN_FIELDS)}"
            )
        chain = found.strip()
    if extract_answer(chain, problem.kind) != problem.answer:
        chain = f"{chain}\nThe answer is {problem.answer}."
    return chain


def load_examples(data: DataArguments, seed: int = 0) -> tuple[list[tuple[Problem, str]], list[Problem]]:
    """``(train, heldout)``: training ``(problem, chain)`` pairs and held-out probe problems."""
    if data.dataset == "synthetic":
        from faithcb.tasks.arithmetic import make_examples, make_problems

        rows = make_examples(
            data.num_train_examples or 600,
            seed,
            key=data.synthetic_key,
            corrupt_fraction=data.synthetic_corrupt_fraction,
        )
        train = [(Problem(r["question"], r["answer"]), r["chain"]) for r in rows]
        # A different seed stream: held-out questions are not training questions.
        return train, make_problems(max(data.holdout, 1), seed=seed + 1000, key=data.synthetic_key)
    records = _read_records(data)
    problems = ProbeSet.from_records(records, format=data.dataset_format, source=data.dataset)
    holdout = min(data.holdout, len(problems) - 1)
    heldout = list(problems[:holdout])
    train = [(p, chain_of(r, p)) for r, p in zip(records[holdout:], problems[holdout:])]
    if data.num_train_examples:
        train = train[: data.num_train_examples]
    return train, heldout


def sft_dataset(train: list[tuple[Problem, str]], tokenizer):
    """Prompt/completion rows; SFTTrainer trains on the completion and appends the eos token."""
    from datasets import Dataset

    prompter = Prompter.for_tokenizer(tokenizer)
    prompts, completions = [], []
    for problem, chain in train:
        text, start = training_text(prompter, tokenizer, problem, chain)
        prompts.append(text[:start])
        completions.append(text[start:])
    return Dataset.from_dict({"prompt": prompts, "completion": completions})


def grpo_dataset(train: list[tuple[Problem, str]], tokenizer):
    """Chain prompts (the probes' layout) with the gold answer for the reward; chains are not used."""
    from datasets import Dataset

    prompter = Prompter.for_tokenizer(tokenizer)
    return Dataset.from_dict(
        {
            "prompt": [prompter.pieces(p, tokenizer)[0] for p, _ in train],
            "answer": [p.answer for p, _ in train],
            "kind": [p.kind for p, _ in train],
        }
    )


def correctness_reward(completions, answer, kind, **kwargs) -> list[float]:
    """1.0 when the completion's final answer (faithcb.text.extract_answer) equals the gold answer."""
    return [
        float(extract_answer(c if isinstance(c, str) else c[-1]["content"], k) == a)
        for c, a, k in zip(completions, answer, kind)
    ]
