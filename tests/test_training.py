"""training_rows: the one builder of training rows, in exactly the layout the probes read."""

from __future__ import annotations

import pytest

from faithcb import training_rows as exported
from faithcb.errors import ConfigError, ProblemFormatError
from faithcb.problem import Problem
from faithcb.prompting import Prompter, PromptStyle
from faithcb.testing import tiny_tokenizer
from faithcb.training import ROW_FORMATS, training_rows

STYLE = PromptStyle(plain_question="{question}\n", instruction="", plain_cue="\n", number_answer_prefix="So")
PROBLEMS = [
    Problem("2+3?", "5", id="a"),
    Problem("Pick one.", "B", kind="choice", choices=("red", "blue"), id="b"),
]
CHAINS = ["2+3=5.", "Blue is the one. The answer is B."]


@pytest.fixture(params=[False, True], ids=["plain", "chat"])
def tok(request):
    return tiny_tokenizer(chat_template=request.param)


def test_prompt_completion_rows_are_the_probe_layout(tok) -> None:
    rows = training_rows(PROBLEMS, tok, chains=CHAINS)
    prompter = Prompter.for_tokenizer(tok)
    for row, problem, chain in zip(rows, PROBLEMS, CHAINS, strict=True):
        assert set(row) == {"prompt", "completion"}
        prompt, cue = prompter.pieces(problem, tok)
        # What the engine builds around a chain: chain prompt + chain + cue + gold continuation.
        assert row["prompt"] == prompt
        assert row["completion"] == chain + cue + prompter.gold_continuation(problem)
    assert rows[0]["completion"].endswith(" 5") and rows[1]["completion"].endswith("(B")


def test_text_rows_mark_where_the_chain_starts(tok) -> None:
    pc = training_rows(PROBLEMS, tok, chains=CHAINS)
    text = training_rows(PROBLEMS, tok, chains=CHAINS, fmt="text")
    for t, row, chain in zip(text, pc, CHAINS, strict=True):
        assert set(t) == {"text", "completion_start"}
        assert t["text"] == row["prompt"] + row["completion"]
        assert t["text"][t["completion_start"] :].startswith(chain)
        assert not t["text"].endswith(tok.eos_token)


def test_prompt_rows_carry_the_reward_fields(tok) -> None:
    rows = training_rows(PROBLEMS, tok, fmt="prompt")  # no chains needed
    prompter = Prompter.for_tokenizer(tok)
    assert rows == [
        {"prompt": prompter.pieces(p, tok)[0], "answer": p.answer, "kind": p.kind, "choices": list(p.choices)}
        for p in PROBLEMS
    ]


def test_chains_default_to_reference_chains(tok) -> None:
    with_refs = [
        Problem(p.question, p.answer, p.kind, p.choices, p.id, reference_chain=c)
        for p, c in zip(PROBLEMS, CHAINS)
    ]
    assert training_rows(with_refs, tok) == training_rows(PROBLEMS, tok, chains=CHAINS)
    # Explicit chains win over the reference chains.
    assert training_rows(with_refs, tok, chains=["x", "y"])[0]["completion"].startswith("x")


def test_style_reaches_the_rows() -> None:
    tok = tiny_tokenizer()
    (row,) = training_rows(PROBLEMS[:1], tok, chains=CHAINS[:1], style=STYLE, fmt="text")
    assert row == {"text": "2+3?\n2+3=5.\nSo 5", "completion_start": len("2+3?\n")}


def test_errors() -> None:
    tok = tiny_tokenizer()
    with pytest.raises(
        ProblemFormatError, match=r"problem 'a': no reference chain to train on; pass chains="
    ):
        training_rows(PROBLEMS, tok)
    with pytest.raises(ConfigError, match=r"chains: 1 chains for 2 problems"):
        training_rows(PROBLEMS, tok, chains=CHAINS[:1])
    with pytest.raises(
        ConfigError, match=r"unknown row format 'sft'; expected one of prompt_completion, text, prompt"
    ):
        training_rows(PROBLEMS, tok, chains=CHAINS, fmt="sft")
    assert ROW_FORMATS == ("prompt_completion", "text", "prompt")


def test_exported_from_the_package() -> None:
    assert exported is training_rows
