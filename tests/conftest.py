"""Shared fixtures for the probe-engine tests (test_lm, test_probes, test_engine).

Models are tiny char-level LMs from :mod:`faithcb.testing`. Training happens at most once per
session per family (cached state dicts); every test gets a fresh model loaded from that state, so
no test can leak weights or modes into another.
"""

from __future__ import annotations

import functools

import pytest
import torch
from _trainers import one_thread

from faithcb.problem import Problem
from faithcb.prompting import PromptStyle
from faithcb.tasks.arithmetic import make_examples, make_problems
from faithcb.testing import tiny_model, tiny_tokenizer, train_tiny
from faithcb.training import training_rows

# "Raj has 6 pens, wins 4 more, then gives away 4. How many pens now?\n<chain>\nSo 6"
STYLE = PromptStyle(
    plain_question="{question}\n",
    instruction="",
    plain_cue="\n",
    number_answer_prefix="So",
    text_answer_prefix="So",
    choice_answer_prefix="So (",
    cue_question="Answer?",
)


def train_texts(n: int = 40, seed: int = 1) -> tuple[list[str], list[int]]:
    """Arithmetic examples in both layouts (plain and chat), as ``training_rows`` builds them."""
    examples = make_examples(n, seed=seed)
    problems = [Problem(e["question"], e["answer"]) for e in examples]
    texts, starts = [], []
    for chat in (False, True):
        tok = tiny_tokenizer(chat_template=chat)
        for row in training_rows(
            problems, tok, chains=[e["chain"] for e in examples], style=STYLE, fmt="text"
        ):
            texts.append(row["text"])
            starts.append(row["completion_start"])
    return texts, starts


@functools.cache
def _trained_state(family: str) -> dict[str, torch.Tensor]:
    tok = tiny_tokenizer()  # same ids as the chat variant; <eos> ends every text
    model = tiny_model(tok, family, seed=0)
    texts, starts = train_texts()
    train_tiny(model, tok, texts, steps=120, batch_size=8, completion_starts=starts)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def trained_model(family: str = "llama", tok=None):
    """A fresh tiny model of ``family`` with the session's trained weights (eval mode)."""
    model = tiny_model(tok or tiny_tokenizer(), family, seed=0)
    model.load_state_dict(_trained_state(family))
    return model.eval()


def probe_problems(n: int = 3, seed: int = 5) -> list[Problem]:
    return make_problems(n, seed=seed)


@pytest.fixture(scope="session")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def chat_tok():
    return tiny_tokenizer(chat_template=True)


@pytest.fixture(scope="module", name="one_thread")
def one_thread_fixture():
    """Tiny models gain nothing from intra-op threads; on a busy machine spinning pools are slow."""
    with one_thread():
        yield
