"""``faithcb eval`` and ``faithcb compare`` end to end: checkpoints saved on disk, a problem file, the real loader.

Nothing is replaced: ``faithcb.models.load_model`` reads the saved checkpoints (and a PEFT adapter),
``ProbeSet.load`` the JSONL problem file, and the engine probes. The CLI asks in the default prompt
layout (plain, without a chat template), so the module trains its own tiny llama in that layout
once (80 steps of 8; 12 s and 33 s measured on the 2-core machine shared with other jobs, as the
setup time of the first test in `pytest --durations=8`): its chains end where the cue starts and
its answers parse, so every probe reports a number.
"""

from __future__ import annotations

import copy
import json
import math
import re
from types import SimpleNamespace

import pytest
import torch
from helpers.models import cli_model, one_thread, pretrained_model
from helpers.vocabulary import STYLE, arithmetic

from faithcb import cli
from faithcb.data import ProbeSet
from faithcb.engine import FaithfulnessEngine
from faithcb.models import load_model
from faithcb.results import paired_changes
from faithcb.runinfo import incomparable
from faithcb.settings import ProbeSettings
from faithcb.testing import tiny_model, tiny_tokenizer

# Trains its own model and saves checkpoints: seconds to tens of seconds on 2 shared cores.
pytestmark = pytest.mark.slow

PROBES = ["early_answering", "filler"]
MAX_CHAIN = "128"  # room for the chain and the cue the model writes after it (about 90 characters)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Saved checkpoints (trained, untrained), a LoRA adapter for the trained one, a problem file."""
    root = tmp_path_factory.mktemp("cli")
    tok = tiny_tokenizer()
    trained = cli_model(tok)  # trained once per session (helpers.models), shared with the other CLI tests
    for name, model in (("trained", trained), ("untrained", tiny_model(tok, "llama", seed=1))):
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)

    from peft import LoraConfig, get_peft_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        # init_lora_weights=False: both LoRA matrices random, so the adapter changes the model.
        lora = get_peft_model(copy.deepcopy(trained), LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM"))
    lora.save_pretrained(root / "lora")

    problems = root / "problems.jsonl"
    problems.write_text("".join(
        json.dumps({"id": p.id, "question": p.question, "answer": p.answer}) + "\n" for p, _ in arithmetic(6, seed=5)
    ))
    return SimpleNamespace(root=root, trained=str(root / "trained"), untrained=str(root / "untrained"),
                           lora=str(root / "lora"), problems=str(problems))


def engine_args(work, *extra: str) -> list[str]:
    return ["--problems", work.problems, "--n", "0", "--probes", *PROBES, "--max-chain-tokens", MAX_CHAIN,
            "--no-progress", *extra]


def run_eval(work, tmp_path, name: str, *extra: str) -> tuple[str, list[dict], dict]:
    """``faithcb eval``: (printed table, records from --out, summary)."""
    out = tmp_path / f"{name}.jsonl"
    model = getattr(work, name.split("+")[0])
    assert cli.main(["eval", "--model", model, *engine_args(work, "--out", str(out), *extra)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    return out, records, json.loads(out.with_suffix(".summary.json").read_text())


def split_row(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def fmt(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3f}"


def same_metrics(a: dict, b: dict) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # NaN-safe, exact


# ------------------------------------------------------------------------------------------ eval
def test_eval_prints_and_writes_the_round_of_a_saved_checkpoint(work, tmp_path, capsys):
    out, records, summary = run_eval(work, tmp_path, "trained")
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert lines[0] == f"faithcb eval: {work.trained} on {work.problems} (6 problems)"
    assert split_row(lines[1]) == ["metric", "value", "95% CI", "n", "reading"]

    # Records: one per problem of the file, probed (the trained model's chains end and parse).
    ids = [json.loads(line)["id"] for line in open(work.problems)]
    assert sorted(r["id"] for r in records) == sorted(ids)
    ok = [r for r in records if r["status"] == "ok"]
    assert len(ok) >= 4, [(r["chain"], r["status"]) for r in records]
    for r in ok:
        assert r["chain_tokens"] <= int(MAX_CHAIN)
        assert len(r["early_answering"]["agree"]) == r["n_steps"] + 1 and r["early_answering"]["agree"][-1]
        assert "Given all of the above" not in r["chain"]  # cut where the model wrote the cue itself
    assert summary["scalars"]["problems_scored"] == len(ok)

    # The table shows the summary's numbers, one row per metric, labelled from the registry.
    rows = {split_row(line)[0]: split_row(line) for line in lines[3:] if "  " in line}
    for name, label, reading in cli.metric_rows(summary["metrics"]):
        m = summary["metrics"][name]
        expected = [label, fmt(m["value"]), f"[{fmt(m['ci_low'])}, {fmt(m['ci_high'])}]", str(m["n"])]
        assert rows[label][:4] == expected, (name, rows[label])
        assert rows[label][4:] == ([reading] if reading else [])
    for name in ("early_answering_aoc", "filler_invariance", "accuracy"):
        assert math.isfinite(summary["metrics"][name]["value"]), name
    assert f"records: {out}" in printed and f"summary: {out.with_suffix('.summary.json')}" in printed

    # The same round in-process (same loader, settings and problems) gives the same numbers.
    args = cli.build_parser().parse_args(["eval", *engine_args(work)])
    model, tok = load_model(work.trained)
    problems = ProbeSet.load(work.problems).sample(None, args.seed)
    result = FaithfulnessEngine(model, tok, cli.probe_settings(args), show_progress=False).run(problems)
    assert same_metrics(json.loads(json.dumps(result.to_dict(with_records=False)["metrics"])), summary["metrics"])


def test_eval_loads_the_adapter_on_top_of_the_model(work, tmp_path, capsys):
    _, plain, _ = run_eval(work, tmp_path, "trained")
    _, adapted, summary = run_eval(work, tmp_path, "trained+lora", "--adapter", work.lora)
    assert f"loading {work.trained} + {work.lora}" in capsys.readouterr().err
    by_id = {r["id"]: r["chain"] for r in plain}
    assert any(r["chain"] != by_id[r["id"]] for r in adapted), "the adapter changed no chain"

    args = cli.build_parser().parse_args(["eval", *engine_args(work)])
    model, tok = load_model(work.trained, work.lora)
    assert hasattr(model, "disable_adapter")  # a PEFT model
    problems = ProbeSet.load(work.problems).sample(None, args.seed)
    records = FaithfulnessEngine(model, tok, cli.probe_settings(args), show_progress=False).records(problems)
    assert [r["chain"] for r in records] == [r["chain"] for r in adapted]


# ------------------------------------------------------------------------------------------ compare
def test_compare_shows_each_models_round_and_b_minus_a(work, tmp_path, capsys):
    _, _, eval_a = run_eval(work, tmp_path, "trained")
    _, _, eval_b = run_eval(work, tmp_path, "untrained")
    capsys.readouterr()
    out = tmp_path / "compare.json"
    assert cli.main(["compare", work.trained, work.untrained, *engine_args(work, "--out", str(out))]) == 0
    lines = capsys.readouterr().out.splitlines()
    saved = json.loads(out.read_text())
    # Each side is exactly that model's own `faithcb eval` round.
    assert same_metrics(saved["a"]["metrics"], eval_a["metrics"])
    assert same_metrics(saved["b"]["metrics"], eval_b["metrics"])
    # Each side says how it was made: its own model, and the same settings and problems as eval's.
    assert [saved[side]["run_info"]["model"]["name_or_path"] for side in "ab"] == [work.trained, work.untrained]
    assert incomparable(saved["a"]["run_info"], saved["b"]["run_info"]) == []
    assert incomparable(saved["a"]["run_info"], eval_a["run_info"]) == []

    assert lines[0] == "faithcb compare on 6 problems"
    assert split_row(lines[1]) == ["metric", "A: trained (own problems)", "B: untrained (own problems)",
                                   "B - A paired [95% CI]", "n paired", "B - A unpaired", "reading"]
    rows = {split_row(line)[0]: split_row(line) for line in lines[3:-2] if "  " in line}
    paired = paired_changes(saved["a"]["records"], saved["b"]["records"], list({**eval_a["metrics"], **eval_b["metrics"]}))
    signs = set()
    signed = lambda x: ("+" if math.isfinite(x) and x > 0 else "") + fmt(x)  # noqa: E731
    for name, label, reading in cli.metric_rows([*eval_a["metrics"], *eval_b["metrics"]]):
        # A metric only one side measured (the untrained model's chains never reach the probes) is n/a.
        a, b = eval_a["metrics"].get(name), eval_b["metrics"].get(name)
        cell = lambda m: f"{fmt(m['value'])} [{fmt(m['ci_low'])}, {fmt(m['ci_high'])}]" if m else "n/a"  # noqa: E731
        va, vb = (m["value"] if m else math.nan for m in (a, b))
        diff = vb - va if math.isfinite(va) and math.isfinite(vb) else math.nan
        change = paired.get(name)
        shown = "n/a" if change is None else (
            f"{signed(change['value'])} [{signed(change['ci_low'])}, {signed(change['ci_high'])}]")
        n = str(change["n"]) if change else "0"
        expected = [label, cell(a), cell(b), shown, n, signed(diff), *([reading] if reading else [])]
        assert rows[label] == expected, (name, rows[label])
        signs.add(signed(diff)[0])
    assert {"+", "-"} <= signs  # the case this is for: differences of both signs were shown
    assert lines[-2].startswith("paired: B - A over the problems both models scored")
    assert lines[-1] == f"written: {out}"


def test_compare_reports_a_bad_model_path_in_one_line(work, tmp_path, capsys):
    not_a_dir = tmp_path / "model.bin"
    not_a_dir.write_text("")
    assert cli.main(["compare", str(not_a_dir), work.trained, *engine_args(work)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("faithcb compare")]
    assert err == [f"faithcb compare: error: {not_a_dir} is a file; pass a checkpoint directory or a Hugging Face Hub id"]


# ---------------------------------------------------------------------------------- regressions
# Moved from tests/test_regressions.py (issue 13's review, one bug each; issue 19 sorted them by subject).


@pytest.mark.slow
def test_compare_reports_b_minus_a_with_its_sign_in_the_right_columns(tok, tmp_path, monkeypatch, capsys):
    """Regression (issue 13, bug 11): the sign of ``faithcb compare``'s difference and its table.

    Two different tiny models through ``faithcb compare`` (loading replaced by the tiny models, as in
    tests/test_cli.py; tests/test_cli_eval_compare.py runs it on saved checkpoints): each column
    holds its own model's value, and the difference is B - A, with a '+' when B is higher. Run both
    ways round, the difference changes sign.
    """
    models = {"trained": pretrained_model(tok).eval(), "untrained": tiny_model(tok, "llama", seed=0)}
    monkeypatch.setattr(cli, "_load", lambda name, adapter: (models[name], tok))
    # The CLI probes in the default prompt layout; the tiny models were trained on STYLE's.
    monkeypatch.setattr(cli, "probe_settings", lambda args: ProbeSettings(
        probes=tuple(args.probes), style=STYLE, max_chain_tokens=40, answer_max_tokens=4))
    common = ["--problems", "synthetic:4", "--n", "4", "--no-progress", "--probes", "early_answering"]

    def table(a: str, b: str) -> dict[str, list[str]]:
        out = tmp_path / f"{a}-{b}.json"
        assert cli.main(["compare", a, b, *common, "--out", str(out)]) == 0
        lines = capsys.readouterr().out.splitlines()
        header = lines[1]
        assert re.split(r"\s{2,}", header)[:6] == ["metric", f"A: {a} (own problems)", f"B: {b} (own problems)",
                                                   "B - A paired [95% CI]", "n paired", "B - A unpaired"]
        rows = {}
        for line in lines[3:]:
            if line.startswith("written:"):
                break
            label = re.split(r"\s{2,}", line)[0]
            rows[label] = re.findall(r"([+-]?\d+\.\d{3}|n/a)(?: \[[^\]]*\])?", line[len(label):])[:4]
        return rows, json.loads(out.read_text())

    ab, saved_ab = table("trained", "untrained")
    ba, saved_ba = table("untrained", "trained")
    tokens_a = saved_ab["a"]["metrics"]["mean_chain_tokens"]["value"]
    tokens_b = saved_ab["b"]["metrics"]["mean_chain_tokens"]["value"]
    assert tokens_a < tokens_b  # the trained model ends its chains; the untrained one runs to the limit
    same = lambda x, y: json.dumps(x, sort_keys=True) == json.dumps(y, sort_keys=True)  # noqa: E731 (NaN-safe)
    assert same(saved_ba["a"]["metrics"], saved_ab["b"]["metrics"]) and same(saved_ba["b"]["metrics"], saved_ab["a"]["metrics"])
    # Every problem has a chain length, so the paired and unpaired differences are the same here.
    a_cell, b_cell, paired, unpaired = ab["tokens per chain"]
    assert (a_cell, b_cell) == (f"{tokens_a:.3f}", f"{tokens_b:.3f}"), ab["tokens per chain"]
    assert paired == unpaired == f"+{tokens_b - tokens_a:.3f}", f"B - A = {tokens_b - tokens_a:+.3f} shown as {paired}"
    minus = f"-{tokens_b - tokens_a:.3f}"
    assert ba["tokens per chain"] == [f"{tokens_b:.3f}", f"{tokens_a:.3f}", minus, minus]
