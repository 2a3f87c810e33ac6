"""Tiny training runs with ``FaithfulnessCallback`` attached, for the training-loop tests.

Everything runs on CPU in seconds: the tiny llama of :func:`helpers.models.pretrained_model` over
the character-level tokenizer, the compact arithmetic of :mod:`helpers.vocabulary` in its
:data:`~helpers.vocabulary.STYLE` layout, and a few optimizer steps.

Typical use::

    tok = tokenizer()
    trainer = make_trainer("sft", tmp_path, model=pretrained_model(tok), tok=tok, max_steps=4)
    cb = attach(trainer, faith_config(faith_every_n_steps=2))
    trainer.train()
    rounds = faith_logs(trainer)  # {step: {"faith/accuracy": ..., ...}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from faithcb import history
from faithcb.callback import FaithfulnessCallback
from faithcb.config import FaithConfig
from faithcb.training import training_rows
from helpers.models import pretrained_model, tokenizer
from helpers.vocabulary import STYLE, arithmetic, arithmetic_problems, arithmetic_texts

KINDS = ("trainer", "sft", "sft_lora", "grpo")


def faith_config(**overrides: Any) -> FaithConfig:
    """A ``FaithConfig`` sized for tests: 4 problems, 2 probes, short chains, no progress bars."""
    values: dict[str, Any] = {
        "faith_num_problems": 4,
        "faith_probes": ["early_answering", "filler"],
        "faith_max_chain_tokens": 40,
        "faith_answer_max_tokens": 4,
        "faith_show_progress": False,
        "faith_strict": True,
        "faith_num_rounds": 0,
        "faith_every_n_steps": 2,
    }
    values.update(overrides)
    return FaithConfig(**values)


def attach(trainer, config: FaithConfig | None = None, problems=None) -> FaithfulnessCallback:
    """Build the callback the TRL way (trainer first) and add it to ``trainer``."""
    callback = FaithfulnessCallback(
        trainer, arithmetic_problems() if problems is None else problems, config or faith_config(), style=STYLE
    )
    trainer.add_callback(callback)
    return callback


def _common_args(output_dir, max_steps: int, batch_size: int, overrides: dict[str, Any]) -> dict[str, Any]:
    args: dict[str, Any] = {
        "output_dir": str(output_dir),
        "max_steps": max_steps,
        "per_device_train_batch_size": batch_size,
        "learning_rate": 3e-3,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "bf16": False,
        "seed": 0,
        "data_seed": 0,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }
    args.update(overrides)
    return args


def make_trainer(
    kind: str,
    output_dir: str | Path,
    *,
    model=None,
    tok=None,
    max_steps: int = 4,
    batch_size: int = 8,
    n_texts: int = 32,
    lora_r: int = 4,
    n_eval: int = 0,
    coupling_reward: Any = None,
    **arg_overrides: Any,
):
    """A ready-to-train tiny trainer of ``kind`` (one of :data:`KINDS`).

    - ``"trainer"``: ``transformers.Trainer`` on the tokenized texts with a causal-LM collator.
    - ``"sft"`` / ``"sft_lora"``: ``trl.SFTTrainer`` on a ``"text"`` dataset, full fine-tuning or a
      PEFT LoRA (q_proj/v_proj) on top of the model.
    - ``"grpo"``: ``trl.GRPOTrainer`` on plain-text prompts (the probes' question layout), 2
      generations of at most 8 tokens, rewarded for containing a digit; ``coupling_reward`` (a
      ``faithcb.CouplingReward``) is added as a second reward, with weight 0 (a monitor) unless
      ``reward_weights`` is given.

    ``n_eval`` > 0 adds an eval dataset of that many training texts (Trainer and SFTTrainer).
    ``arg_overrides`` go to the trainer's args class (``TrainingArguments``/``SFTConfig``/``GRPOConfig``).
    The model defaults to :func:`pretrained_model`.
    """
    from datasets import Dataset
    from transformers import set_seed

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    tok = tok or tokenizer()
    model = model if model is not None else pretrained_model(tok)
    texts, _ = arithmetic_texts(tok, n=n_texts, seed=1)
    # LoRA initialisation (and anything else drawn while building) comes from the global RNG:
    # seed it so that two builds with the same arguments train identically.
    set_seed(int(arg_overrides.get("seed", 0)))

    if kind == "trainer":
        from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

        ds = Dataset.from_dict({"text": [t + tok.eos_token for t in texts]})
        ds = ds.map(lambda b: tok(b["text"]), batched=True, remove_columns=["text"])
        args = TrainingArguments(**_common_args(output_dir, max_steps, batch_size, arg_overrides))
        return Trainer(
            model=model,
            args=args,
            train_dataset=ds,
            eval_dataset=ds.select(range(n_eval)) if n_eval else None,
            data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
            processing_class=tok,
        )

    if kind in ("sft", "sft_lora"):
        from trl import SFTConfig, SFTTrainer

        peft_config = None
        if kind == "sft_lora":
            from peft import LoraConfig

            peft_config = LoraConfig(
                r=lora_r,
                lora_alpha=2 * lora_r,
                lora_dropout=0.0,
                target_modules=["q_proj", "v_proj"],
                task_type="CAUSAL_LM",
            )
        overrides = {"max_length": 256, "dataset_num_proc": None, **arg_overrides}
        args = SFTConfig(**_common_args(output_dir, max_steps, batch_size, overrides))
        return SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_dict({"text": texts}),
            eval_dataset=Dataset.from_dict({"text": texts[:n_eval]}) if n_eval else None,
            processing_class=tok,
            peft_config=peft_config,
        )

    from trl import GRPOConfig, GRPOTrainer

    problems = [p for p, _ in arithmetic(n_texts, seed=1)]
    rows = training_rows(problems, tok, style=STYLE, fmt="prompt")  # prompt, answer, kind, choices
    reward_funcs = [_digit_reward]
    if coupling_reward is not None:  # a monitor: weight 0 unless the overrides say otherwise
        reward_funcs.append(coupling_reward)
        arg_overrides = {"reward_weights": [1.0, 0.0], **arg_overrides}
    overrides = {
        "num_generations": 2,
        "max_completion_length": 8,
        "per_device_train_batch_size": 4,
        "temperature": 1.0,
        "learning_rate": 1e-3,
        **arg_overrides,
    }
    args = GRPOConfig(**_common_args(output_dir, max_steps, batch_size, overrides))
    return GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )


def _digit_reward(completions, **kwargs) -> list[float]:
    """1 for a completion that contains a digit, else 0, plus a little for length (never all equal)."""
    return [float(any(ch.isdigit() for ch in c)) + 0.01 * len(c) for c in completions]


def faith_logs(trainer, prefix: str = "faith/") -> dict[int, dict[str, float]]:
    """``{step: {key: value}}`` of the log entries that carry keys starting with ``prefix``."""
    out: dict[int, dict[str, float]] = {}
    for entry in trainer.state.log_history:
        keys = {k: v for k, v in entry.items() if k.startswith(prefix)}
        if keys:
            out.setdefault(entry["step"], {}).update(keys)
    return out


def read_history(output_dir: str | Path, name: str = "faith_history.jsonl") -> list[dict[str, Any]]:
    """The callback's JSONL history lines, through the one reader (NaN parses back as float nan)."""
    return history.read_history(Path(output_dir) / name)


