"""The "Faithfulness" section of the model card (faithcb.model_card): built from the history, put
into the README.md a real trainer writes, replaced (not repeated) when the card is written again."""

from __future__ import annotations

import math

import pytest
from helpers.models import pretrained_model, tokenizer
from helpers.trainers import attach, faith_config, make_trainer, read_history

from faithcb.history import HistoryWriter, read_run_info, round_lines
from faithcb.model_card import END, START, TITLE, faithfulness_section, put_section


class _Result:
    def __init__(self, metrics):
        self.metrics = metrics

    def to_dict(self, with_records=False):
        return {"metrics": self.metrics, "scalars": {}, "curve": {}}


def _metric(value, low, high, n):
    return {"value": value, "ci_low": low, "ci_high": high, "n": n}


def test_section_shows_the_last_round_its_intervals_and_the_paired_change(tmp_path):
    writer = HistoryWriter(tmp_path)
    writer.write_round(round_lines(step=0, epoch=0.0, run="r", reason="start", seconds=1.0,
                                   result=_Result({"early_answering_aoc": _metric(0.5, 0.4, 0.6, 8)})))
    last = {"accuracy": _metric(0.25, 0.1, 0.5, 8), "early_answering_aoc": _metric(0.75, 0.6, 0.85, 7),
            "mean_steps": _metric(3.0, 2.0, 4.0, 8)}
    writer.write_round(round_lines(
        step=40, epoch=1.0, run="r", reason="end", seconds=1.0, result=_Result(last),
        changes={"early_answering_aoc": _metric(0.2, 0.05, 0.3, 6)},
    ))
    section = faithfulness_section(tmp_path / "faith_history.jsonl")
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| metric | step 40 [95% CI] | n | change from step 0 [95% CI] | n paired |")
    assert rows[1] == "| accuracy | 0.250 [0.100, 0.500] | 8 | n/a | 0 |  |"
    assert rows[2] == "| early-answering AOC | 0.750 [0.600, 0.850] | 7 | +0.200 [+0.050, +0.300] | 6 | higher = more coupled |"
    assert len(rows) == 3  # bookkeeping (mean_steps) is not a headline
    assert "not recorded" in section  # a history without a settings header says so
    assert faithfulness_section(tmp_path / "missing.jsonl") is None


def test_put_section_replaces_its_own_block_and_keeps_the_rest(tmp_path):
    card = tmp_path / "README.md"
    card.write_text("---\nlicense: mit\n---\n# my model\n")
    put_section(card, "## Faithfulness\nold")
    put_section(card, "## Faithfulness\nnew")
    text = card.read_text()
    assert text.startswith("---\nlicense: mit\n---\n# my model\n\n" + START)
    assert text.count(START) == 1 and text.count(END) == 1 and "new" in text and "old" not in text


@pytest.mark.slow  # trains a tiny SFTTrainer
def test_a_real_trainers_card_gets_the_section(tmp_path):
    tok = tokenizer()
    trainer = make_trainer("sft", tmp_path, model=pretrained_model(tok), tok=tok, max_steps=2)
    attach(trainer, faith_config(faith_every_n_steps=1))
    trainer.train()
    trainer.create_model_card()  # what push_to_hub calls
    trainer.create_model_card(model_name="again")  # written again: one section, the trainer's card around it
    text = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert text.count(TITLE + "\n") == 1 and text.count(START) == 1
    assert "This model was trained with SFT." in text  # TRL's own card is still there
    last = [h for h in read_history(tmp_path) if h["role"] == "model"][-1]
    assert last["step"] == 2
    aoc, change = last["metrics"]["early_answering_aoc"], last["changes"]["early_answering_aoc"]
    row = next(line for line in text.splitlines() if line.startswith("| early-answering AOC |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # a bound that does not exist (fewer than two problems scored, as what the tiny model writes
    # may leave) reads n/a
    bound = lambda x: f"{x:.3f}" if math.isfinite(x) else "n/a"  # noqa: E731
    assert cells[1] == f"{aoc['value']:.3f} [{bound(aoc['ci_low'])}, {bound(aoc['ci_high'])}]"
    assert cells[2] == str(aoc["n"])
    assert cells[4] == str(change["n"]) and math.isfinite(change["value"])
    assert f"`{read_run_info(tmp_path)['problems']['source']}`" in text
    assert "max_chain_tokens=40" in text and "transformers " in text
