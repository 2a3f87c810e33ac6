"""The one prompt layout of the tests and the problems the tiny models are trained and probed on.

Two problem sets, each for its own models:

- word problems (:func:`probe_problems`, :func:`train_texts`) from :mod:`faithcb.tasks.arithmetic`,
  for the engine and probe tests' tiny models of each family (``helpers.models.trained_model``);
- compact arithmetic like ``"7+2-4+3?"`` / ``"7+2=9. 9-4=5. 5+3=8."`` (:func:`arithmetic`), about 35
  characters with the chain, which a character-level llama learns in seconds: the training-loop
  tests' model (``helpers.models.pretrained_model``) and their probe rounds stay cheap.
"""

from __future__ import annotations

import random

from faithcb.problem import Problem
from faithcb.prompting import PromptStyle
from faithcb.tasks.arithmetic import make_examples, make_problems
from faithcb.testing import tiny_tokenizer
from faithcb.training import training_rows

# "Raj has 6 pens, wins 4 more, then gives away 4. How many pens now?\n<chain>\nSo 6", or for the
# compact arithmetic "7+2-4+3?\n7+2=9. 9-4=5. 5+3=8.\nSo 8": question, chain, cue, answer.
# (cue_question only shows in a chat layout; the choice and text prefixes only for those kinds.)
STYLE = PromptStyle(
    plain_question="{question}\n",
    instruction="",
    plain_cue="\n",
    number_answer_prefix="So",
    text_answer_prefix="So",
    choice_answer_prefix="So (",
    cue_question="Answer?",
)


def probe_problems(n: int = 3, seed: int = 5) -> list[Problem]:
    """Held-out word problems (another seed than :func:`train_texts`)."""
    return make_problems(n, seed=seed)


def train_texts(n: int = 40, seed: int = 1) -> tuple[list[str], list[int]]:
    """Word-problem examples in both layouts (plain and chat), as ``training_rows`` builds them,
    and where each completion starts."""
    examples = make_examples(n, seed=seed)
    problems = [Problem(e["question"], e["answer"]) for e in examples]
    texts, starts = [], []
    for chat in (False, True):
        tok = tiny_tokenizer(chat_template=chat)
        for row in training_rows(problems, tok, chains=[e["chain"] for e in examples], style=STYLE, fmt="text"):
            texts.append(row["text"])
            starts.append(row["completion_start"])
    return texts, starts


def arithmetic(n: int, seed: int) -> list[tuple[Problem, str]]:
    """``n`` seeded ``(problem, chain)`` pairs like ``("7+2-4+3?", "7+2=9. 9-4=5. 5+3=8.")``, answer "8"."""
    rng = random.Random(f"tests-arithmetic:{seed}")
    out = []
    for i in range(n):
        a, b, d = rng.randint(2, 9), rng.randint(2, 9), rng.randint(2, 9)
        c = rng.randint(1, a + b - 1)
        steps = [f"{a}+{b}={a + b}.", f"{a + b}-{c}={a + b - c}.", f"{a + b - c}+{d}={a + b - c + d}."]
        problem = Problem(f"{a}+{b}-{c}+{d}?", str(a + b - c + d), id=f"arith-{seed}-{i}")
        out.append((problem, " ".join(steps)))
    return out


def arithmetic_problems(n: int = 4, seed: int = 5) -> list[Problem]:
    """Held-out compact arithmetic problems for the training-loop tests' rounds."""
    return [p for p, _ in arithmetic(n, seed)]


def arithmetic_texts(tok, n: int = 64, seed: int = 1) -> tuple[list[str], list[int]]:
    """Compact arithmetic training texts in the probes' layout (without eos), and where each
    completion starts."""
    pairs = arithmetic(n, seed)
    rows = training_rows([p for p, _ in pairs], tok, chains=[c for _, c in pairs], style=STYLE, fmt="text")
    return [r["text"] for r in rows], [r["completion_start"] for r in rows]
