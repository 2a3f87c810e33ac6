"""Multiple choice under cyclic rotations of the choices (``choice_permutations``, issue 10).

Rotation r moves choice i to position (i + r) % n and the gold letter with its option; a problem
whose a_full, mapped back to the original options, names more than one option is unstable.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import pytest
from helpers.vocabulary import STYLE

from faithcb import cli
from faithcb.config import FaithConfig
from faithcb.engine import FaithfulnessEngine, ProbeSettings
from faithcb.problem import LETTERS, Problem, rotate_choices
from faithcb.results import aggregate, metric_values, problem_key
from faithcb.testing import ScriptedLM, tiny_model, tiny_tokenizer


# ---------------------------------------------------------------------- rotating one problem
def test_rotation_moves_each_choice_and_the_gold_letter_with_its_option():
    p = Problem("Which is x?", "B", kind="choice", choices=("w", "x", "y", "z"), id="q")
    assert rotate_choices(p, 0) is p
    expected = {
        1: (("z", "w", "x", "y"), "C"),
        2: (("y", "z", "w", "x"), "D"),
        3: (("x", "y", "z", "w"), "A"),
    }
    for r, (choices, answer) in expected.items():
        q = rotate_choices(p, r)
        assert (q.choices, q.answer, q.id, q.question, q.kind) == (choices, answer, f"q@rot{r}", p.question, "choice")
        assert q.choices[LETTERS.index(q.answer)] == "x"  # the gold option itself never changes


def test_a_problem_without_id_gets_the_same_base_id_every_time():
    p = Problem("Which is x?", "A", kind="choice", choices=("x", "y"))
    a, b = rotate_choices(p, 1), rotate_choices(Problem("Which is x?", "A", kind="choice", choices=("x", "y")), 1)
    assert a.id == b.id and re.fullmatch(r"#[0-9a-f]{8}@rot1", a.id)
    assert (a.choices, a.answer) == (("y", "x"), "B")


# ---------------------------------------------------------------------- choice_unstable_rate
def rec(base: str, rotation: int, answer: str | None, *, gold: str = "A", n: int = 4) -> dict:
    """A multiple-choice record as the engine writes it with choice_permutations on."""
    return {"id": base if rotation == 0 else f"{base}@rot{rotation}", "sample": 0, "question": "q", "gold": gold,
            "kind": "choice", "chain": "c", "steps": ["s", "s"], "n_steps": 2, "chain_tokens": 20,
            "answer_text": answer, "answer": answer, "correct": None if answer is None else answer == gold,
            "status": "ok" if answer is not None else "unparsed",
            "rotation": rotation, "base_id": base, "n_choices": n}


def rotations(base: str, answers: Sequence[str | None], gold0: str) -> list[dict]:
    n = len(answers)
    return [rec(base, r, a, gold=LETTERS[(LETTERS.index(gold0) + r) % n], n=n) for r, a in enumerate(answers)]


def test_choice_unstable_rate_by_hand():
    records = (
        rotations("stable", ["B", "C", "D", "A"], "B")  # option 1 ("B") followed through every move
        + rotations("letter_d", ["D", "D", "D", "D"], "A")  # options 3, 2, 1, 0: letter bias
        + rotations("three", ["C", "A", "B"], "C")  # n = 3: option 2 every time, stable
        + rotations("unparsed", ["A", None, "C", "D"], "A")  # not every rotation parsed: left out
        + rotations("missing", ["A", "B", "C", "D"], "A")[:3]  # a rotation missing: left out
    )
    s = aggregate(records).scalars
    assert s["choice_unstable_n"] == 3
    assert s["choice_unstable_rate"] == pytest.approx(1 / 3)
    # The rotations of one problem are one unit of every interval.
    res = aggregate(records)
    assert res.metrics["accuracy"]["n"] == 5
    acc = metric_values(records, "accuracy")
    assert acc["stable"] == 1.0 and acc["letter_d"] == 0.25 and acc["three"] == 1.0
    assert problem_key(records[1], 1) == "stable"
    table = cli.format_table(res)
    assert "chosen option changes under rotations of the choices: 0.333 of 3 problems" in table


def test_no_rotation_records_no_scalar_and_nothing_measurable_is_nan():
    plain = [{k: v for k, v in r.items() if k not in ("rotation", "base_id", "n_choices")}
             for r in rotations("p", ["A", "B"], "A")]
    assert "choice_unstable_rate" not in aggregate(plain).scalars
    assert "chosen option changes" not in cli.format_table(aggregate(plain))
    s = aggregate(rotations("p", ["A", None], "A")).scalars
    assert s["choice_unstable_n"] == 0 and math.isnan(s["choice_unstable_rate"])


# ---------------------------------------------------------------------- settings, config, CLI
def test_setting_config_and_flag():
    assert ProbeSettings().choice_permutations is False
    assert FaithConfig().probe_settings().choice_permutations is False
    assert FaithConfig(faith_choice_permutations=True).probe_settings().choice_permutations is True
    for command in ("eval", "compare"):
        models = ["a", "b"] if command == "compare" else []
        args = cli.build_parser().parse_args([command, *models, "--problems", "x", "--choice-permutations"])
        assert cli.probe_settings(args).choice_permutations is True
        args = cli.build_parser().parse_args([command, *models, "--problems", "x"])
        assert cli.probe_settings(args).choice_permutations is False


# ---------------------------------------------------------------------- the engine, scripted
CHAIN = "3 + 4 = 7. So it is 7."


PROBLEMS = [
    Problem("Which is 3 + 4?", "B", kind="choice", choices=("6", "7", "8", "9"), id="c4"),
    Problem("Ann has 3 pens, gets 4 more. How many?", "7", id="n1"),
    Problem("Which is 4 + 3?", "A", kind="choice", choices=("7", "5", "1"), id="c3"),
]


def engine(pick, **kw) -> FaithfulnessEngine:
    tok = tiny_tokenizer()
    settings = ProbeSettings(probes=("early_answering", "filler"), style=STYLE, **kw)
    return FaithfulnessEngine(tiny_model(tok, "llama", hidden_size=16, num_layers=1), tok, settings,
                              show_progress=False, strict=True, lm=ScriptedLM(tok, CHAIN, pick=pick, answer_max_tokens=4))


def reads_the_options(options: list[str]) -> int:
    return options.index("7")  # finds the option "7" wherever it is


def always_last(options: list[str]) -> int:
    return len(options) - 1  # "D" (or "C") whatever the order


def test_engine_rotations_records_and_stability():
    eng = engine(reads_the_options, choice_permutations=True)
    records = eng.records(PROBLEMS)
    assert len(records) == 4 + 1 + 3
    assert [r["id"] for r in records] == ["c4", "c4@rot1", "c4@rot2", "c4@rot3", "n1", "c3", "c3@rot1", "c3@rot2"]
    assert [r.get("rotation") for r in records] == [0, 1, 2, 3, None, 0, 1, 2]
    assert [r.get("base_id") for r in records] == ["c4"] * 4 + [None] + ["c3"] * 3
    assert [r.get("n_choices") for r in records] == [4] * 4 + [None] + [3] * 3
    # The gold letter follows the option "7"; the model reads the options, so it is always right.
    assert [r["gold"] for r in records] == ["B", "C", "D", "A", "7", "A", "B", "C"]
    assert [r["answer"] for r in records] == [r["gold"] for r in records]
    assert all(r["status"] == "ok" and "early_answering" in r and "filler" in r for r in records)
    # The model saw the rotated choices.
    assert "A) 9\nB) 6\nC) 7\nD) 8" in eng.lm.prompt_texts[1]
    res = aggregate(records)
    assert res.scalars["choice_unstable_rate"] == 0.0 and res.scalars["choice_unstable_n"] == 2
    assert res.metrics["accuracy"]["n"] == 3  # problems, not rotations

    biased = aggregate(engine(always_last, choice_permutations=True).records(PROBLEMS))
    assert biased.scalars["choice_unstable_rate"] == 1.0 and biased.scalars["choice_unstable_n"] == 2
    assert biased.metrics["accuracy"]["value"] == pytest.approx((1 / 4 + 1 + 1 / 3) / 3)


def test_option_off_gives_exactly_the_old_records():
    eng = engine(always_last)
    off = eng.records(PROBLEMS)
    with eng.lm.session():  # what records() did before the option existed
        old = eng.probe(eng.read_full_answers(eng.generate_chains(PROBLEMS)))
    assert off == old
    assert [r["id"] for r in off] == ["c4", "n1", "c3"]
    assert not any({"rotation", "base_id"} & set(r) for r in off)
    assert "choice_unstable_rate" not in aggregate(off).scalars
    # With the option on, rotation 0 of each problem is the old record plus the new fields.
    on = engine(always_last, choice_permutations=True).records(PROBLEMS)
    firsts = [{k: v for k, v in r.items() if k not in ("rotation", "base_id")}
              for r in on if r.get("rotation", 0) == 0]
    assert firsts == off
