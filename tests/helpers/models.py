"""Tiny models trained once per session on :mod:`helpers.vocabulary`, and running them on one thread.

Training happens at most once per session per model (cached state dicts); every call returns a
fresh model loaded from that state, so no test can leak weights or modes into another.

``FAITHCB_TEST_MODEL_SEED`` (default 0) seeds their initial weights: another seed trains models
that write other text, as another CPU's arithmetic can, so a run with it finds the tests that
lean on what one model happens to write instead of making their case on purpose.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
from typing import Any

import torch

from faithcb.testing import tiny_model, tiny_tokenizer, train_tiny
from helpers.vocabulary import arithmetic_texts, train_texts

MODEL_SEED = int(os.environ.get("FAITHCB_TEST_MODEL_SEED", "0"))


def tokenizer():
    """The character-level tiny tokenizer without a chat template (the plain layout)."""
    return tiny_tokenizer()


@functools.cache
def _trained_state(family: str) -> dict[str, torch.Tensor]:
    tok = tiny_tokenizer()  # same ids as the chat variant; <eos> ends every text
    model = tiny_model(tok, family, seed=MODEL_SEED)
    texts, starts = train_texts()
    train_tiny(model, tok, texts, steps=120, batch_size=8, completion_starts=starts)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def trained_model(family: str = "llama", tok=None):
    """A fresh tiny model of ``family`` trained on the word problems (eval mode)."""
    model = tiny_model(tok or tiny_tokenizer(), family, seed=MODEL_SEED)
    model.load_state_dict(_trained_state(family))
    return model.eval()


@functools.cache
def _pretrained_state() -> dict[str, torch.Tensor]:
    tok = tokenizer()
    model = tiny_model(tok, "llama", seed=MODEL_SEED)
    texts, starts = arithmetic_texts(tok, n=64, seed=1)
    train_tiny(model, tok, texts, steps=200, completion_starts=starts)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def pretrained_model(tok=None):
    """A fresh tiny llama pre-trained on the compact arithmetic, so greedy chains already end in a
    parsable answer and every probe of a training-loop round reports a number."""
    model = tiny_model(tok or tokenizer(), "llama", seed=MODEL_SEED)
    model.load_state_dict(_pretrained_state())
    return model


@functools.cache
def _cli_state() -> dict[str, torch.Tensor]:
    from faithcb.prompting import PromptStyle
    from faithcb.training import training_rows
    from helpers.vocabulary import arithmetic

    tok = tokenizer()
    pairs = arithmetic(32, seed=1)
    rows = training_rows([p for p, _ in pairs], tok, chains=[c for _, c in pairs], style=PromptStyle(), fmt="text")
    model = tiny_model(tok, "llama", seed=MODEL_SEED)
    with one_thread():
        train_tiny(model, tok, [r["text"] for r in rows], steps=80, batch_size=8,
                   completion_starts=[r["completion_start"] for r in rows])
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def cli_model(tok=None):
    """A fresh tiny llama trained on the compact arithmetic in the CLI's default layout
    (``PromptStyle()``, plain), for tests that save a checkpoint and run ``faithcb`` on it."""
    model = tiny_model(tok or tokenizer(), "llama", seed=MODEL_SEED)
    model.load_state_dict(_cli_state())
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


def tiny_engine(model, tok, **settings):
    """A strict ``FaithfulnessEngine`` over ``model`` in the tests' :data:`~helpers.vocabulary.STYLE`
    layout, sized for tiny models (short chains and answers)."""
    from faithcb.engine import FaithfulnessEngine
    from faithcb.settings import ProbeSettings
    from helpers.vocabulary import STYLE

    values = {"style": STYLE, "max_chain_tokens": 40, "answer_max_tokens": 4}
    values.update(settings)
    return FaithfulnessEngine(model, tok, ProbeSettings(**values), show_progress=False, strict=True)
