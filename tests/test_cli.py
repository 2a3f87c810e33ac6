"""``faithcb`` command line: defaults from FaithConfig, registry-driven tables, one-line errors."""

from __future__ import annotations

import json
import re

import pytest
import toy_probe as toy

from faithcb import cli, demo, report
from faithcb.config import FaithConfig
from faithcb.errors import ConfigError
from faithcb.probes.base import CURVE_GRID
from faithcb.results import aggregate
from faithcb.settings import EVALUATORS, PARAPHRASERS


def _parse(argv):
    return cli.build_parser().parse_args(argv)


def _record(i: int, correct: bool, **probes) -> dict:
    """A per-problem record as the engine writes it (only what ``aggregate`` reads)."""
    return {"id": f"p{i}", "answer": "1", "correct": correct, "n_steps": 3, "chain_tokens": 20,
            "status": "ok", **probes}


def _error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"faithcb {command}: error: "), err
    return lines[0]


# ---------------------------------------------------------------------- defaults and choices
@pytest.mark.parametrize("argv", [["eval", "--problems", "synthetic:2"], ["compare", "a", "b", "--problems", "x"]])
def test_engine_options_default_to_faithconfig(argv):
    args = _parse(argv)
    config = FaithConfig()
    assert args.max_chain_tokens == config.faith_max_chain_tokens == 512  # one source of defaults
    assert args.batch_size == config.faith_batch_size
    assert args.seed == config.faith_seed
    assert args.probes == config.faith_probes
    assert (args.paraphraser, args.evaluator) == (config.faith_paraphraser, config.faith_evaluator)
    # Same settings object as the callback builds from its defaults.
    assert cli.probe_settings(args) == config.probe_settings()


def test_choices_and_help_come_from_the_settings():
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    actions = {a.dest: a for a in sub.choices["eval"]._actions}
    assert tuple(actions["paraphraser"].choices) == PARAPHRASERS
    assert tuple(actions["evaluator"].choices) == EVALUATORS
    assert "default: 512" in actions["max_chain_tokens"].help
    assert "generated chain" in actions["max_chain_tokens"].help  # FaithConfig's field help


def test_options_reach_the_settings():
    args = _parse(["eval", "--problems", "x", "--max-chain-tokens", "7", "--plain", "--probes", "filler",
                   "--seed", "3", "--batch-size", "2", "--evaluator", "base", "--paraphraser", "model"])
    s = cli.probe_settings(args)
    assert (s.max_chain_tokens, s.fast, s.probes, s.seed, s.batch_size) == (7, False, ("filler",), 3, 2)
    assert (s.evaluator, s.paraphraser) == ("base", "model")


# ---------------------------------------------------------------------- errors: one line, status 2
def test_report_missing_dir_is_one_line(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "does-not-exist")]) == 2
    assert "does-not-exist" in _error_line(capsys, "report")


def test_report_malformed_history_is_one_line(tmp_path, capsys):
    (tmp_path / "faith_history.jsonl").write_text(json.dumps({"step": 0, "metrics": {}}) + "\n{not json}\n")
    assert cli.main(["report", str(tmp_path)]) == 2
    assert re.search(r"faith_history\.jsonl:2: malformed JSON", _error_line(capsys, "report"))

    (tmp_path / "faith_history.jsonl").write_text("")
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "no rounds" in _error_line(capsys, "report")


def test_report_label_count_is_one_line(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path), str(tmp_path), "--labels", "only-one"]) == 2
    assert "--labels" in _error_line(capsys, "report")


def test_eval_missing_problem_file_is_one_line(tmp_path, capsys):
    # Fails while reading the problems, before any model is loaded.
    assert cli.main(["eval", "--problems", str(tmp_path / "nope.jsonl"), "--no-progress"]) == 2
    assert "nope.jsonl" in _error_line(capsys, "eval")


def test_demo_error_is_one_line(monkeypatch, capsys):
    def fail(args):
        raise ConfigError("first line\n  second line")

    monkeypatch.setattr(demo, "settings_from_args", fail)
    assert cli.main(["demo", "--no-wandb"]) == 2
    assert _error_line(capsys, "demo").endswith("error: first line second line")


@pytest.mark.parametrize("argv", [
    ["eval", "--problems", "x", "--probes", "early_answring"],
    ["eval", "--problems", "x", "--max-chain-tokens", "0"],
    ["compare", "a", "b", "--problems", "x", "--n", "-1"],
    ["demo", "--steps", "0"],
])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"faithcb {argv[0]}: error: argument" in err
    if "early_answring" in argv:
        assert "did you mean 'early_answering'" in err


@pytest.mark.parametrize("command", ["report", "demo", "eval", "compare"])
def test_subcommand_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    assert f"usage: faithcb {command}" in capsys.readouterr().out


def test_report_main_still_works(tmp_path, capsys):
    assert report.report_main([str(tmp_path / "missing")]) == 2
    assert "missing" in _error_line(capsys, "report")


# ---------------------------------------------------------------------- tables
def _early(aoc: float) -> dict:
    return {"aoc": aoc, "curve": [1.0 - aoc] * (len(CURVE_GRID) - 1) + [1.0]}


def _comparison_rows(text: str) -> dict[str, list[str]]:
    lines = text.splitlines()
    return {cells[0]: cells for cells in ([c.strip() for c in line.split("  ") if c.strip()] for line in lines[3:-1])}


def test_format_comparison_difference_is_b_minus_a():
    a = aggregate([_record(0, False), _record(1, False), _record(2, True), _record(3, False)])
    b = aggregate([_record(0, True), _record(1, True), _record(2, True), _record(3, False)])
    text = cli.format_comparison(a, b, "runs/base", "runs/tuned", 4)
    assert text.splitlines()[0] == "faithcb compare on 4 problems"
    assert "A: base (own problems)" in text and "B: tuned (own problems)" in text
    assert "B - A paired [95% CI]" in text and "B - A unpaired" in text and text.splitlines()[-1].startswith("paired:")
    row = _comparison_rows(text)["accuracy"]
    assert row[1].startswith("0.250 [") and row[2].startswith("0.750 [")
    assert row[3].startswith("+0.500 [") and row[4] == "4" and row[5] == "+0.500"  # B - A, not A - B
    assert _comparison_rows(text)["steps per chain"][5] == "0.000"  # no change, no sign


def test_compare_with_itself_is_exactly_zero_with_intervals_holding_zero():
    records = [_record(i, i % 3 == 0, early_answering=_early(i / 8)) for i in range(8)]
    result = aggregate(records)
    rows = _comparison_rows(cli.format_comparison(result, result, "m", "m", 8)).values()
    for cells in (c for c in rows if c[4] != "0"):  # metrics the records do not carry stay n/a
        value, interval = cells[3].split(" ", 1)
        low, high = (float(x) for x in interval.strip("[]").split(", "))
        assert float(value) == 0.0 and low <= 0.0 <= high, cells


def test_compare_pairs_over_problems_both_models_scored():
    """Regression (issue 20, item 1): B's chains on the high-AOC problems were cut, so B's own mean
    fell while no problem scored by both changed: the paired column says 0, the unpaired one does not."""
    aoc = [0.2, 0.2, 0.2, 0.2, 0.8, 0.8, 0.8, 0.8]
    a = aggregate([_record(i, True, early_answering=_early(v)) for i, v in enumerate(aoc)])
    b_records = [_record(i, True, early_answering=_early(v)) for i, v in enumerate(aoc)]
    for r in b_records[4:]:
        del r["early_answering"]  # truncated: B never reached the probes on these
        r["status"] = "truncated"
    b = aggregate(b_records)
    row = _comparison_rows(cli.format_comparison(a, b, "a", "b", 8))["early-answering AOC"]
    assert row[3].startswith("0.000 [") and row[4] == "4"  # paired over the 4 problems both scored
    assert row[5] == "-0.300"  # the unpaired difference of means, labelled as such


def test_format_table_on_an_aggregate_follows_the_registry():
    records = [_record(i, i % 2 == 0, filler={"invariance": 0.25, "k0_agreement": 0.0}) for i in range(4)]
    table = cli.format_table(aggregate(records, seconds=1.0), title="T")
    lines = table.splitlines()
    assert lines[0] == "T" and lines[1].split()[:2] == ["metric", "value"]
    labels = [line.split("  ")[0] for line in lines[3:]]
    # Registry order: chain metrics, then the probes' metrics; labels and readings from the registry.
    assert labels[:10] == ["accuracy", "accuracy (unparsed = wrong)", "unparsed", "truncated chains",
                           "truncated answers", "computed answers", "steps per chain", "tokens per chain",
                           "filler invariance", "filler, whole chain"]
    filler = next(line for line in lines if line.startswith("filler invariance"))
    assert "0.250" in filler and filler.endswith("lower = more coupled")
    assert "problems scored: 4" in table


def test_metric_rows_put_unknown_metrics_last_sorted():
    rows = cli.metric_rows(["zeta", "early_answering_aoc", "alpha", "accuracy"])
    assert [r[0] for r in rows] == ["accuracy", "early_answering_aoc", "alpha", "zeta"]
    assert rows[1][1:] == ("early-answering AOC", "higher = more coupled")
    assert rows[2] == ("alpha", "alpha", "")


# ---------------------------------------------------------------------- a user probe, end to end
@pytest.fixture
def toy_probe():
    toy.register()
    yield toy.ToyProbe
    toy.unregister()


def test_user_probe_metric_in_cli_table(toy_probe):
    records = [_record(i, True, toy=toy.ToyProbe().record(None, [])) for i in range(3)]
    result = aggregate(records)
    assert result.metrics["toy_score"]["value"] == 0.5
    row = next(line for line in cli.format_table(result).splitlines() if line.startswith("toy score"))
    assert "0.500" in row and row.endswith("higher = more coupled")
    comparison = cli.format_comparison(result, result, "a", "b", 3)
    assert any(line.startswith("toy score") for line in comparison.splitlines())


def test_user_probe_metric_in_report(toy_probe, tmp_path):
    rounds = [
        {"step": step, "run": "toy-run", "role": "model",
         "metrics": {"accuracy": {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 3},
                     "toy_score": {"value": score, "ci_low": score - 0.1, "ci_high": score + 0.1, "n": 3}}}
        for step, score in ((0, 0.25), (10, 0.75))
    ]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "faith_history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rounds))
    assert cli.main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 0
    page = (tmp_path / "out" / "report.html").read_text()
    assert re.search(r"<th [^>]*title=\"toy score: a constant, to trace a user metric \(more coupled: higher\)\">toy_score</th>", page)
    assert "0.750 [0.650, 0.850]" in page
    assert "<b>Other probes</b> (F)" in page  # the figure got a panel for it

    # The figure: a panel for the user probe's headline metric, and a summary line for it.
    runs = [{"label": "toy-run", "records": report.read_history(tmp_path / "run")}]
    panels = report.layout(runs)
    assert [p.key for p in panels] == ["accuracy", "aoc", "curves", "info_gain", "invariance", "other", "summary"]
    assert panels[5].metrics == ("toy_score",)
    assert "toy score" in "\n".join(report.summary_lines(runs[0], panels[-1].metrics))
    assert any("toy score" in line and "0.25 → 0.75" in line for line in report.summary_lines(runs[0], ("toy_score",)))


# ---------------------------------------------------------------------- eval end to end (tiny model)
@pytest.mark.slow
def test_eval_end_to_end_with_a_tiny_model(monkeypatch, tmp_path, capsys):
    from faithcb.testing import tiny_model, tiny_tokenizer

    loaded = []

    def load(model, adapter):
        loaded.append((model, adapter))
        tok = tiny_tokenizer()
        return tiny_model(tok, "llama", seed=0).eval(), tok

    monkeypatch.setattr(cli, "_load", load)
    out = tmp_path / "res.jsonl"
    argv = ["eval", "--problems", "synthetic:3", "--n", "2", "--no-progress", "--out", str(out)]
    assert cli.main(argv) == 0
    assert loaded == [("embedded", None)]
    printed = capsys.readouterr().out
    assert "faithcb eval: embedded on synthetic:3 (2 problems)" in printed
    assert re.search(r"^tokens per chain\s", printed, re.M)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2
    # The callback's chain budget (FaithConfig), not the CLI's old 256.
    assert all(r["chain_tokens"] <= FaithConfig().faith_max_chain_tokens for r in records)
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert "metrics" in summary
    # How the numbers were made: the run's settings record, the one the callback's history starts with.
    info = summary["run_info"]
    assert info["problems"]["source"] == "synthetic:3" and info["problems"]["n"] == 2
    assert info["settings"]["max_chain_tokens"] == FaithConfig().faith_max_chain_tokens
    assert info["model"]["name_or_path"] == "embedded" and info["model"]["config_sha256"]
    assert info["layout"] in ("two_turn", "think", "plain") and info["versions"]["transformers"]
