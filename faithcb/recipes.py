"""What the training scripts in ``recipes/`` share: data arguments, model loading, data splits, datasets, the GRPO reward.

Importable from the package so that a recipe is an ordinary script (``from faithcb.recipes import
...``) and your own training script can reuse the same pieces. Every row comes from
:func:`faithcb.training.training_rows`, so the model is trained on exactly the layout the
faithfulness probes read; the chains of data files come from ``Problem.reference_chain``, read
once by :mod:`faithcb.data`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from faithcb.answers import extract_answer
from faithcb.data import ProbeSet, is_named, load
from faithcb.errors import ProblemFormatError
from faithcb.models import EMBEDDED
from faithcb.problem import Problem
from faithcb.prompting import PromptStyle
from faithcb.tasks.arithmetic import make_examples, make_problems
from faithcb.training import training_rows

__all__ = [
    "EMBEDDED",
    "DataArguments",
    "correctness_reward",
    "grpo_dataset",
    "load_examples",
    "RolloutArguments",
    "load_model_and_tokenizer",
    "sft_dataset",
]


@dataclass
class DataArguments:
    """Where the training problems (and, by default, the held-out probe problems) come from."""

    dataset: str = field(
        default="synthetic",
        metadata={
            "help": "'synthetic' (built-in arithmetic word problems), a bundled set ('gsm8k': the first 500 "
            "problems of GSM8K train; 'aqua': AQuA-RAT dev), 'hf:<dataset id>[:config][:split]', a local "
            ".jsonl/.json file (GSM8K 'question'/'answer' with '####', or 'question'/'chain'/'answer'), a saved "
            "dataset directory, or a Hugging Face Hub dataset id such as openai/gsm8k (with dataset_config "
            "and dataset_split)."
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


@dataclass
class RolloutArguments:
    """The GRPO recipe's ``CouplingReward`` (faithcb.reward): monitor by default (weight 0)."""

    faith_rollout_probe: bool = field(
        default=True, metadata={"help": "Probe every step's own rollouts (faith_rollout/* at every step)."}
    )
    faith_rollout_weight: float = field(
        default=0.0, metadata={"help": "The coupling reward's weight beside correctness (1.0); 0 = monitor only."}
    )
    faith_rollout_reward_on: str = field(
        default="correct", metadata={"help": "'correct': pay coupling on correct rollouts only; 'all'."}
    )
    faith_rollout_sample: int = field(
        default=0, metadata={"help": "Rollouts probed per step and process (0 = all)."}
    )
    faith_rollout_max_cuts: int = field(default=6, metadata={"help": "Cut points per rollout (at least 4)."})

    def reward(self):
        """The ``CouplingReward`` these fields describe, or None when ``faith_rollout_probe`` is off."""
        if not self.faith_rollout_probe:
            return None
        from faithcb.reward import CouplingReward

        return CouplingReward(
            reward_on=self.faith_rollout_reward_on, sample=self.faith_rollout_sample,
            max_cuts=self.faith_rollout_max_cuts,
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
def _load_problems(data: DataArguments) -> ProbeSet:
    path = Path(data.dataset).expanduser()
    if not path.exists() and is_named(data.dataset):  # the names --problems and faith_problems take
        return load(data.dataset, format=data.dataset_format)
    if path.is_file():
        # The name as given where it works, so problem ids read "<dataset>:<line>".
        return ProbeSet.from_jsonl(
            data.dataset if Path(data.dataset).is_file() else path, format=data.dataset_format
        )
    import datasets

    if path.is_dir():
        ds = datasets.load_from_disk(str(path))
    else:
        ds = datasets.load_dataset(data.dataset, data.dataset_config, split=data.dataset_split)
    return ProbeSet.from_dataset(ds, format=data.dataset_format, source=data.dataset)


def load_examples(data: DataArguments, seed: int = 0) -> tuple[list[tuple[Problem, str]], list[Problem]]:
    """``(train, heldout)``: training ``(problem, chain)`` pairs and held-out probe problems.

    Data files: the first ``holdout`` problems are held out; the rest train on their
    ``reference_chain`` (a problem without one raises :class:`~faithcb.errors.ProblemFormatError`).
    """
    if data.dataset == "synthetic":
        rows = make_examples(
            data.num_train_examples or 600,
            seed,
            key=data.synthetic_key,
            corrupt_fraction=data.synthetic_corrupt_fraction,
        )
        train = [(Problem(r["question"], r["answer"]), r["chain"]) for r in rows]
        # A different seed stream: held-out questions are not training questions.
        return train, make_problems(max(data.holdout, 1), seed=seed + 1000, key=data.synthetic_key)
    problems = _load_problems(data)
    holdout = min(data.holdout, len(problems) - 1)
    heldout = list(problems[:holdout])
    train = []
    for p in problems[holdout:]:
        if p.reference_chain is None:
            raise ProblemFormatError(
                f"{data.dataset}: problem {p.id or p.question[:40]!r}: no reasoning to train on; expected a "
                "GSM8K '####' answer or one of the fields chain, rationale, reasoning, solution"
            )
        train.append((p, p.reference_chain))
    if data.num_train_examples:
        train = train[: data.num_train_examples]
    return train, heldout


def sft_dataset(train: list[tuple[Problem, str]], tokenizer, style: PromptStyle | None = None):
    """Prompt/completion rows; SFTTrainer trains on the completion and appends the eos token.

    ``style``: the layout and wording the callback probes with (``FaithConfig.prompt_style()``),
    so the model is trained in exactly the layout it is probed in.
    """
    from datasets import Dataset

    rows = training_rows([p for p, _ in train], tokenizer, chains=[c for _, c in train], style=style)
    return Dataset.from_list(rows)


def grpo_dataset(train: list[tuple[Problem, str]], tokenizer, style: PromptStyle | None = None):
    """Chain prompts (the probes' layout) with the gold answer for the reward; chains are not used."""
    from datasets import Dataset

    return Dataset.from_list(training_rows([p for p, _ in train], tokenizer, fmt="prompt", style=style))


def correctness_reward(completions, answer, kind, **kwargs) -> list[float]:
    """1.0 when the completion's final answer (faithcb.answers.extract_answer) equals the gold answer."""
    return [
        float(extract_answer(c if isinstance(c, str) else c[-1]["content"], k) == a)
        for c, a, k in zip(completions, answer, kind)
    ]
