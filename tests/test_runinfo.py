"""The run's settings record (faithcb.runinfo): what it holds, where it is kept (the history's first
line, read back by read_run_info and faithcb report), and which differences make runs incomparable."""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
from helpers.models import pretrained_model, tokenizer
from helpers.trainers import attach, faith_config, make_trainer
from helpers.vocabulary import arithmetic_problems

from faithcb import report
from faithcb.history import HistoryFormatError, HistoryWriter, read_history, read_run_info, round_lines
from faithcb.runinfo import SPEED_ONLY, incomparable, model_info, problems_info, run_info
from faithcb.settings import ProbeSettings


def _info(settings=None, problems=None, **kwargs):
    problems = problems if problems is not None else arithmetic_problems()[:4]
    return run_info(settings=settings or ProbeSettings(), problems=problems, source="synthetic:4", **kwargs)


def test_run_info_holds_every_setting_the_versions_and_the_problems():
    info = _info(layout="plain", model_name="toy")
    assert set(info["settings"]) == {f.name for f in dataclasses.fields(ProbeSettings)}
    assert info["settings"]["style"]["layout"] == "auto" and info["layout"] == "plain"
    assert info["settings"]["probes"] == list(ProbeSettings().probes)
    assert {"faithcb", "torch", "transformers", "trl", "peft", "python"} <= set(info["versions"])
    assert info["versions"]["torch"] and info["versions"]["transformers"]
    assert info["problems"]["source"] == "synthetic:4" and info["problems"]["n"] == 4
    json.dumps(info)  # JSON-ready as it stands


def test_a_callable_setting_is_recorded_by_name():
    def my_splitter(text):
        return text.split(".")

    info = _info(ProbeSettings(splitter=my_splitter))
    assert info["settings"]["splitter"].endswith("my_splitter>")


def test_problem_hash_is_the_sample_and_its_order():
    problems = arithmetic_problems()
    assert problems_info(problems[:4])["sha256"] == problems_info(list(problems[:4]))["sha256"]
    assert problems_info(problems[:4])["sha256"] != problems_info(problems[1:5])["sha256"]
    assert problems_info(problems[:4])["sha256"] != problems_info(problems[:4][::-1])["sha256"]


def test_model_record_names_the_model_and_hashes_its_config():
    model = pretrained_model(tokenizer())
    a = model_info(model, name="here")
    assert a["name_or_path"] == "here" and a["device"] == "cpu" and a["dtype"] == "float32" and a["adapter"] is None
    model.config._name_or_path = "/elsewhere/copy"  # the same config copied elsewhere hashes the same
    assert model_info(model)["config_sha256"] == a["config_sha256"]
    model.config.num_hidden_layers += 1
    assert model_info(model)["config_sha256"] != a["config_sha256"]


def test_incomparable_names_settings_layout_and_problems_not_speed_or_model():
    base = _info(layout="plain", model_name="a")
    assert incomparable(base, _info(layout="plain", model_name="b")) == []  # the model is what is compared
    faster = {k: v for k, v in {"batch_size": 2, "generation": "static", "fast": False}.items() if k in SPEED_ONLY}
    assert incomparable(base, _info(ProbeSettings(**faster), layout="plain")) == []
    longer = _info(ProbeSettings(max_chain_tokens=128), layout="plain")
    assert incomparable(base, longer) == ["setting max_chain_tokens: 512 vs 128"]
    assert incomparable(base, _info(layout="two_turn")) == ["prompt layout: plain vs two_turn"]
    other = _info(problems=arithmetic_problems()[1:5], layout="plain")
    assert len(incomparable(base, other)) == 1 and incomparable(base, other)[0].startswith("problems: ")
    assert incomparable(base, None) and incomparable(None, None) == []


def _round(step):
    return round_lines(step=step, epoch=0.0, run="r", reason="schedule", seconds=1.0, error="x")


def test_history_header_is_read_apart_from_the_rounds(tmp_path):
    writer = HistoryWriter(tmp_path)
    info = _info()
    writer.write_header(info)
    writer.write_round(_round(0))
    writer.write_round(_round(2))
    assert (tmp_path / "faith_history.jsonl").read_text().startswith('{"run_info": {')  # the first line
    assert read_run_info(tmp_path) == info  # JSON-pure: read back equal
    assert [r["step"] for r in read_history(tmp_path)] == [0, 2]  # every reader sees rounds only
    assert read_run_info(tmp_path)["problems"] == info["problems"]
    writer.rewind(0)  # resuming from step 0 drops later rounds and keeps the header
    assert [r["step"] for r in read_history(tmp_path)] == [0] and read_run_info(tmp_path) is not None


def test_history_without_header_reads_as_before(tmp_path):
    HistoryWriter(tmp_path).write_round(_round(0))
    assert [r["step"] for r in read_history(tmp_path)] == [0]
    assert read_run_info(tmp_path) is None


def test_malformed_header_names_the_line(tmp_path):
    (tmp_path / "faith_history.jsonl").write_text('{"run_info": 3}\n')
    with pytest.raises(HistoryFormatError, match=r"faith_history.jsonl:1: 'run_info' must be an object"):
        read_history(tmp_path)


@pytest.mark.slow  # trains a tiny SFTTrainer with a LoRA adapter
def test_callback_history_starts_with_the_run_info_and_report_shows_it(tmp_path):
    tok = tokenizer()
    trainer = make_trainer("sft_lora", tmp_path / "a", model=pretrained_model(tok), tok=tok, max_steps=1)
    attach(trainer, faith_config(faith_every_n_steps=1, faith_max_chain_tokens=24, faith_probes=["early_answering"]))
    trainer.train()
    assert (tmp_path / "a" / "faith_history.jsonl").read_text().startswith('{"run_info": {')  # the first line
    info = read_run_info(tmp_path / "a")
    assert info["settings"]["max_chain_tokens"] == 24 and info["config"]["faith_max_chain_tokens"] == 24
    assert info["layout"] == "plain" and info["problems"]["n"] == 4 and info["problems"]["source"] == "<in memory>"
    assert info["model"]["adapter"]["peft_type"] == "LORA" and info["model"]["adapter"]["r"] == 4
    assert info["model"]["config_sha256"] and info["model"]["dtype"] == "float32"
    assert info["versions"]["trl"] and info["versions"]["peft"]
    assert [r["step"] for r in read_history(tmp_path / "a") if r["role"] == "model"] == [0, 1]

    # A second run whose chains were cut shorter: its history is the first one's with the header
    # of such a run (training it again would only cost time). The report shows both runs' settings
    # and says why their numbers do not compare.
    lines = (tmp_path / "a" / "faith_history.jsonl").read_text().splitlines()
    info["settings"]["max_chain_tokens"] = 20
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "faith_history.jsonl").write_text("\n".join([json.dumps({"run_info": info}), *lines[1:]]) + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, page = report.write_report([tmp_path / "a", tmp_path / "b"], tmp_path / "report")
    html = page.read_text(encoding="utf-8")
    assert "Run settings" in html and "max_chain_tokens" in html and info["problems"]["sha256"][:12] in html
    assert "setting max_chain_tokens: 24 vs 20" in html
    assert any("setting max_chain_tokens: 24 vs 20" in str(w.message) for w in caught)
