"""Builders for tiny training runs with ``FaithfulnessCallback`` (shared by the callback tests).

Everything runs on CPU in seconds: a 2-layer width-64 llama over the character-level tiny
tokenizer, short arithmetic texts in a compact prompt layout (:data:`STYLE`), and a few optimizer
steps. :func:`pretrained_model` starts from weights trained once per session with ``train_tiny``,
so greedy chains already end in a parsable answer and every probe reports a number.

Typical use::

    tok = tokenizer()
    trainer = make_trainer("sft", tmp_path, model=pretrained_model(tok), tok=tok, max_steps=4)
    cb = attach(trainer, faith_config(faith_every_n_steps=2))
    trainer.train()
    rounds = faith_logs(trainer)  # {step: {"faith/accuracy": ..., ...}}
"""

from __future__ import annotations

import contextlib
import functools
import random
from pathlib import Path
from typing import Any

import torch

from faithcb import history
from faithcb.callback import FaithfulnessCallback
from faithcb.config import FaithConfig
from faithcb.problem import Problem
from faithcb.prompting import PromptStyle
from faithcb.testing import tiny_model, tiny_tokenizer, train_tiny
from faithcb.training import training_rows

__all__ = [
    "KINDS",
    "arithmetic",
    "STYLE",
    "attach",
    "faith_config",
    "faith_logs",
    "make_trainer",
    "one_thread",
    "pretrained_model",
    "probe_problems",
    "read_history",
    "tokenizer",
    "train_texts",
    "rng_states",
    "with_dropout",
]

# "7+2-4+3?\n7+2=9. 9-4=5. 5+3=8.\nSo 8": question, chain, cue, answer
STYLE = PromptStyle(plain_question="{question}\n", instruction="", plain_cue="\n", number_answer_prefix="So")
KINDS = ("trainer", "sft", "sft_lora", "grpo")


def tokenizer():
    """The character-level tiny tokenizer without a chat template (plain :data:`STYLE` layout)."""
    return tiny_tokenizer()


def arithmetic(n: int, seed: int) -> list[tuple[Problem, str]]:
    """``n`` seeded ``(problem, chain)`` pairs like ``("7+2-4+3?", "7+2=9. 9-4=5. 5+3=8.")``, answer "8".

    Much shorter than :mod:`faithcb.tasks.arithmetic` word problems (about 35 characters with the
    chain), so a character-level model learns them in seconds and a probe round stays cheap.
    """
    rng = random.Random(f"tests-arithmetic:{seed}")
    out = []
    for i in range(n):
        a, b, d = rng.randint(2, 9), rng.randint(2, 9), rng.randint(2, 9)
        c = rng.randint(1, a + b - 1)
        steps = [f"{a}+{b}={a + b}.", f"{a + b}-{c}={a + b - c}.", f"{a + b - c}+{d}={a + b - c + d}."]
        problem = Problem(f"{a}+{b}-{c}+{d}?", str(a + b - c + d), id=f"arith-{seed}-{i}")
        out.append((problem, " ".join(steps)))
    return out


def probe_problems(n: int = 4, seed: int = 5) -> list[Problem]:
    """Held-out problems for the probes (a different seed from the training texts)."""
    return [p for p, _ in arithmetic(n, seed)]


def train_texts(tok, n: int = 64, seed: int = 1) -> tuple[list[str], list[int]]:
    """Training texts in the probes' layout (without eos) and where each completion starts."""
    pairs = arithmetic(n, seed)
    rows = training_rows([p for p, _ in pairs], tok, chains=[c for _, c in pairs], style=STYLE, fmt="text")
    return [r["text"] for r in rows], [r["completion_start"] for r in rows]


@functools.cache
def _pretrained_state() -> dict[str, torch.Tensor]:
    tok = tokenizer()
    model = tiny_model(tok, "llama", seed=0)
    texts, starts = train_texts(tok, n=64, seed=1)
    train_tiny(model, tok, texts, steps=200, completion_starts=starts)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def pretrained_model(tok=None):
    """A fresh copy of the tiny llama pre-trained (once per session) on :func:`train_texts`."""
    model = tiny_model(tok or tokenizer(), "llama", seed=0)
    model.load_state_dict(_pretrained_state())
    return model


@contextlib.contextmanager
def one_thread():
    """Run tiny CPU models on one thread: on a busy machine the spinning intra-op pool of 2+
    threads made tiny forward passes 10-20x slower (see ``faithcb.testing.train_tiny``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def faith_config(**overrides: Any) -> FaithConfig:
    """A ``FaithConfig`` sized for tests: 4 problems, 2 probes, short chains, no progress bars."""
    values: dict[str, Any] = {
        "faith_num_problems": 4,
        "faith_probes": ["early_answering", "filler"],
        "faith_max_chain_tokens": 40,
        "faith_answer_max_tokens": 4,
        "faith_bootstrap_resamples": 200,
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
        trainer, probe_problems() if problems is None else problems, config or faith_config(), style=STYLE
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
    **arg_overrides: Any,
):
    """A ready-to-train tiny trainer of ``kind`` (one of :data:`KINDS`).

    - ``"trainer"``: ``transformers.Trainer`` on the tokenized texts with a causal-LM collator.
    - ``"sft"`` / ``"sft_lora"``: ``trl.SFTTrainer`` on a ``"text"`` dataset, full fine-tuning or a
      PEFT LoRA (q_proj/v_proj) on top of the model.
    - ``"grpo"``: ``trl.GRPOTrainer`` on plain-text prompts (the probes' question layout), 2
      generations of at most 8 tokens, rewarded for containing a digit.

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
    texts, _ = train_texts(tok, n=n_texts, seed=1)
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
    prompts = [r["prompt"] for r in training_rows(problems, tok, style=STYLE, fmt="prompt")]
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
        reward_funcs=_digit_reward,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": prompts}),
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


def with_dropout(model, p: float = 0.1):
    """``model`` (a tiny llama) with attention dropout ``p``: training then draws from the torch RNG,
    so a probe round that moved the RNG would change the weights training produces."""
    model.config.attention_dropout = p
    for module in model.modules():
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = p
    return model


def rng_states() -> dict[str, Any]:
    """The global Python, NumPy, torch CPU (and CUDA) RNG states, comparable with ``==``/``equal``."""
    import numpy as np

    state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (state[0], state[1].tolist(), *state[2:]),
        "torch": torch.get_rng_state().tolist(),
        "cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }
