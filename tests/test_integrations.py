"""``FaithfulnessCallback`` against the real integrations: W&B (offline), TensorBoard, DDP (gloo).

Nothing is mocked on the reading side: the W&B run is read back from its ``.wandb`` log and its
media files, TensorBoard from its event files with TensorBoard's own reader, and the distributed
runs are real ``torchrun`` process groups on CPU. Runs that own global state (a W&B run, a process
group) go through ``tests/dist_worker.py`` in a subprocess, always with a timeout, so a hang fails
the test instead of the suite.

Note the section names: ``Trainer``'s W&B and TensorBoard callbacks rewrite every key that does not
start with ``eval_``/``test_`` to ``train/<key>``, so ``faith/accuracy`` is stored as
``train/faith/accuracy``. Tables and the chart are logged to the W&B run directly and keep their
names.
"""

from __future__ import annotations

import glob
import json
import math
import sys
from pathlib import Path

import pytest
from helpers.distributed import (
    TIMINGS,
    WORKER,
    faith_by_step,
    rank_state,
    round_records,
    run_process,
    torchrun,
)
from helpers.models import one_thread
from helpers.trainers import attach, faith_config, faith_logs, make_trainer, read_history
from helpers.vocabulary import arithmetic_problems as probe_problems
from helpers.wandb_log import wandb_config, wandb_history, wandb_metric_definitions

from faithcb.history import read_run_info

TABLE_COLUMNS = [
    "step",
    "id",
    "question",
    "chain",
    "answer",
    "gold",
    "correct",
    "n_steps",
    "early_answering_aoc",
    "filler_invariance",
    "paraphrase_invariance",
    "info_gain_total",
]
EXACT_METRICS = (
    "accuracy",
    "unparsed_rate",
    "mean_steps",
    "mean_chain_tokens",
    "early_answering_aoc",
    "filler_invariance",
    "filler_k0_agreement",
    "problems_scored",
    "problems_unscored",
)
LOGPROB_METRICS = (
    "info_gain_total",
    "info_gain_per_step",
    "info_gain_positive_fraction",
    "info_gain_delta_ppl",
)


def _close(a: float, b: float, tol: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


# ---------------------------------------------------------------------- W&B
@pytest.mark.slow
def test_wandb_offline_run_holds_scalars_tables_and_chart(tmp_path, weights):
    pytest.importorskip("wandb")
    out = tmp_path / "out"
    rc, output = run_process(
        [
            sys.executable,
            str(WORKER),
            "--out",
            str(out),
            "--weights",
            str(weights),
            "--report-to",
            "wandb",
            "--problems",
            "3",
            "--max-steps",
            "4",
            "--every",
            "2",
        ],
        {
            "WANDB_MODE": "offline",
            "WANDB_DIR": str(tmp_path),
            "WANDB_PROJECT": "faithcb-tests",
            "WANDB_SILENT": "true",
        },
    )
    assert rc == 0, output[-4000:]
    logged = faith_by_step(rank_state(out, 0)["log_history"], prefix="faith")  # faith/ and faith_ci/
    assert sorted(logged) == [0, 2, 4]

    (run_dir,) = (Path(p) for p in glob.glob(str(tmp_path / "wandb" / "offline-run-*")))
    (log_file,) = run_dir.glob("run-*.wandb")
    rows = wandb_history(log_file)

    # Every faith key is on the trainer's step axis; headline metrics keep their best value in the
    # direction the registry declares (AOC: higher = more coupled -> max; filler: lower -> min).
    definitions = wandb_metric_definitions(log_file)
    assert definitions["train/faith/*"].step_metric == "train/global_step"
    # Bookkeeping sections are hidden from the automatic panels, still logged (rows below).
    assert all(definitions[f"train/{p}*"].options.hidden for p in ("faith_n/", "faith_delta_n/", "faith_missing/"))
    assert not any(definitions[f"train/{p}*"].options.hidden for p in ("faith/", "faith_ci/", "faith_delta/"))

    # The run's settings record is the run config's faithcb entry, as the history's first line has it.
    config = wandb_config(log_file)
    info = next(v for k, v in config.items() if k[0] == "faithcb")
    info = info.get("value", info)  # W&B wraps config values as {"value": ...}
    assert info == read_run_info(out)
    assert definitions["train/faith/early_answering_aoc"].summary.max
    assert definitions["train/faith/filler_invariance"].summary.min
    assert not definitions["train/faith/filler_invariance"].summary.max

    # Scalars: one row per round at the trainer's step, every faith value as the Trainer logged it.
    scalar_rows = {r["train/global_step"]: r for r in rows if "train/faith/problems_scored" in r}
    assert sorted(scalar_rows) == [0, 2, 4]
    for step, row in scalar_rows.items():
        assert row["train/faith/problems_total"] == 3
        assert row["train/faith/unparsed_rate"] == pytest.approx(logged[step]["faith/unparsed_rate"])
        # accuracy is over parsed answers (how many parse depends on what the tiny model writes)
        parsed = round(3 * (1 - row["train/faith/unparsed_rate"]))
        assert row["train/faith_n/accuracy"] == parsed  # hidden, still logged
        assert ("train/faith_ci/accuracy_low" in row) == (parsed >= 2)  # an interval needs two problems
        assert "train/faith/early_answering_aoc" in row
        for key, value in logged[step].items():
            assert _close(row[f"train/{key}"], value, 1e-12), (step, key)

    # The per-problem table: one per round, this round's problems only, one row per problem.
    table_rows = {
        r["train/global_step"]: r["faith_tables/records"] for r in rows if "faith_tables/records" in r
    }
    assert sorted(table_rows) == [0, 2, 4]
    for step, ref in table_rows.items():
        assert ref["_type"] == "table-file" and ref["nrows"] == 3 and ref["ncols"] == len(TABLE_COLUMNS)
        table = json.loads((run_dir / "files" / ref["path"]).read_text(encoding="utf-8"))
        assert table["columns"] == TABLE_COLUMNS
        records = round_records(out, step)
        assert len(table["data"]) == len(records) == 3
        col = {name: i for i, name in enumerate(TABLE_COLUMNS)}
        for data_row, record in zip(table["data"], records):
            assert data_row[col["step"]] == step
            assert data_row[col["id"]] == record["id"]
            assert data_row[col["answer"]] == record["answer"] and data_row[col["gold"]] == record["gold"]
            # An unparsed answer leaves a problem without probe results: None in the table.
            aoc = record.get("early_answering", {}).get("aoc")
            assert data_row[col["early_answering_aoc"]] == (None if aoc is None else pytest.approx(aoc))

    # The train-end chart: accuracy and early-answering AOC over the probed steps.
    (chart,) = [r for r in rows if "faith_charts/accuracy_vs_coupling_table" in r]
    ref = chart["faith_charts/accuracy_vs_coupling_table"]
    table = json.loads((run_dir / "files" / ref["path"]).read_text(encoding="utf-8"))
    assert table["columns"] == ["step", "lineKey", "lineVal"]
    series: dict[str, dict[int, float]] = {}
    for step, key, value in table["data"]:
        series.setdefault(key, {})[step] = value
    # (A NaN metric, e.g. accuracy with no parsed answer, is left out of the scalars.)
    accuracy = {s: logged[s].get("faith/accuracy", math.nan) for s in (0, 2, 4)}
    assert series["accuracy"] == pytest.approx(accuracy, nan_ok=True)
    aoc = {s: logged[s].get("faith/early_answering_aoc", math.nan) for s in (0, 2, 4)}
    assert series["early-answering AOC (coupling)"] == pytest.approx(aoc, nan_ok=True)


@pytest.mark.slow
def test_wandb_table_and_scalars_carry_a_registered_user_probe(tmp_path, weights):
    """tests/toy_probe.py's metric reaches W&B's scalars and table columns; no faithcb edit needed."""
    pytest.importorskip("wandb")
    out = tmp_path / "out"
    argv = [sys.executable, str(WORKER), "--out", str(out), "--weights", str(weights), "--report-to", "wandb",
            "--problems", "2", "--max-steps", "2", "--every", "2", "--probes", "early_answering,toy", "--toy-probe"]
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_PROJECT": "faithcb-tests",
           "WANDB_SILENT": "true"}
    rc, output = run_process(argv, env)
    assert rc == 0, output[-4000:]
    (run_dir,) = (Path(p) for p in glob.glob(str(tmp_path / "wandb" / "offline-run-*")))
    (log_file,) = run_dir.glob("run-*.wandb")
    rows = wandb_history(log_file)
    tables = [r["faith_tables/records"] for r in rows if "faith_tables/records" in r]
    assert tables
    for ref in tables:
        table = json.loads((run_dir / "files" / ref["path"]).read_text(encoding="utf-8"))
        assert table["columns"] == [*TABLE_COLUMNS, "toy_score"]
        scores = [row[-1] for row in table["data"] if row[-1] is not None]
        assert all(score == 0.5 for score in scores)
    scored = [r for r in rows if "train/faith/toy_score" in r]
    logged = [e for e in rank_state(out, 0)["log_history"] if "faith/toy_score" in e]
    assert len(scored) == len(logged) and all(r["train/faith/toy_score"] == 0.5 for r in scored)


# ---------------------------------------------------------------------- TensorBoard
@pytest.mark.slow
def test_tensorboard_event_files_hold_every_round(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir = tmp_path / "tb"
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(logdir))  # transformers 5: no logging_dir argument
    with one_thread():
        trainer = make_trainer("trainer", tmp_path / "run", max_steps=4, report_to=["tensorboard"])
        attach(trainer, faith_config(faith_num_problems=3, faith_every_n_steps=2), problems=probe_problems(3))
        trainer.train()

    logged = faith_logs(trainer, prefix="faith")  # faith/, faith_ci/ and faith_curve/ keys
    assert sorted(logged) == [0, 2, 4]
    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0}).Reload()  # 0: keep every event
    tags = set(events.Tags()["scalars"])
    scored = events.Scalars("train/faith/problems_total")
    assert [e.step for e in scored] == [0, 2, 4]
    assert [e.value for e in scored] == [3.0, 3.0, 3.0]
    for key in {k for keys in logged.values() for k in keys}:
        assert f"train/{key}" in tags, key
        expected = {step: keys[key] for step, keys in logged.items() if key in keys}
        got = {e.step: e.value for e in events.Scalars(f"train/{key}")}
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-6), key  # stored as float32


# ---------------------------------------------------------------------- DDP (torchrun, gloo, CPU)
@pytest.mark.dist
def test_ddp_two_processes_match_one(tmp_path, weights):
    """Each rank probes its share of the problems; the gathered round equals a single-process one."""
    one, two = tmp_path / "one", tmp_path / "two"
    rc, output = torchrun(1, one, weights, "--problems", "5")
    assert rc == 0, output[-4000:]
    rc, output = torchrun(2, two, weights, "--problems", "5")
    assert rc == 0, output[-4000:]

    # The split: 5 problems as 3 + 2, at each of the two rounds (steps 0 and 2).
    assert rank_state(one, 0)["world_size"] == 1 and rank_state(two, 0)["world_size"] == 2
    assert rank_state(one, 0)["records_calls"] == [5, 5]
    assert rank_state(two, 0)["records_calls"] == [3, 3]
    assert rank_state(two, 1)["records_calls"] == [2, 2]

    # Gathered records at step 0 (before any update, so the weights are identical): same problems
    # in the same order, same answers and agreements, log-probs equal up to batching noise.
    single, gathered = round_records(one, 0), round_records(two, 0)
    assert [r["id"] for r in gathered] == [r["id"] for r in single] == [p.id for p in probe_problems(5)]
    for a, b in zip(single, gathered):
        for key in ("chain", "answer", "status", "n_steps", "chain_tokens"):
            assert a[key] == b[key], (a["id"], key)
        probes = [p for p in ("early_answering", "filler", "info_gain") if p in a]
        assert probes == [p for p in ("early_answering", "filler", "info_gain") if p in b], a["id"]
        for probe in (p for p in probes if p != "info_gain"):  # agreement probes
            assert a[probe]["agree"] == b[probe]["agree"], (a["id"], probe)
            assert a[probe]["answers"] == b[probe]["answers"], (a["id"], probe)
            assert b[probe]["logp"] == pytest.approx(a[probe]["logp"], abs=1e-4), (a["id"], probe)
        if "info_gain" in probes:
            assert b["info_gain"]["logp_gold"] == pytest.approx(a["info_gain"]["logp_gold"], abs=1e-4)
    assert sum("early_answering" in r for r in single) >= 3  # the pre-trained model's answers parse

    # Metrics logged at step 0 agree with the single process.
    m1 = faith_by_step(rank_state(one, 0)["log_history"])[0]
    m2 = faith_by_step(rank_state(two, 0)["log_history"])[0]
    assert m2["faith/problems_total"] == 5
    for name in EXACT_METRICS:
        assert m2[f"faith/{name}"] == pytest.approx(m1[f"faith/{name}"], abs=1e-6), name
    for name in LOGPROB_METRICS:
        assert m2[f"faith/{name}"] == pytest.approx(m1[f"faith/{name}"], abs=1e-3), name

    # Every rank ends every round with the same metrics (hence the same early-stopping decision).
    r0, r1 = (faith_by_step(rank_state(two, r)["log_history"]) for r in (0, 1))
    assert sorted(r0) == sorted(r1) == [0, 2]
    for step in r0:
        assert set(r0[step]) == set(r1[step])
        for key in r0[step]:
            if key not in TIMINGS:
                assert r1[step][key] == pytest.approx(r0[step][key], abs=1e-12), (step, key)

    # Only rank 0 writes the history: one line per round, not one per rank.
    assert [h["step"] for h in read_history(two / "run")] == [0, 2]


@pytest.mark.dist
def test_ddp_probe_failure_on_one_rank_does_not_hang(tmp_path, weights):
    """Rank 1 raises inside every probe: both ranks still finish training, rank 0 logs the failure."""
    out = tmp_path / "fail"
    rc, output = torchrun(
        2, out, weights, "--problems", "2", "--probes", "early_answering", env={"FAITHCB_TEST_FAIL_RANK": "1"}
    )
    assert rc == 0, output[-4000:]
    for rank in (0, 1):
        state = rank_state(out, rank)
        assert state["records_calls"] == [1, 1]  # both ranks reached both rounds
        assert any("train_runtime" in entry for entry in state["log_history"])  # training finished
        logged = faith_by_step(state["log_history"])
        assert {step: {k: v for k, v in keys.items() if k not in TIMINGS} for step, keys in logged.items()} == {
            0: {"faith/probe_failed": 1.0, "faith/rounds_skipped": 0.0},
            2: {"faith/probe_failed": 1.0, "faith/rounds_skipped": 0.0},
        }
    history = read_history(out / "run")
    assert [h["step"] for h in history] == [0, 2]
    assert all("injected failure on rank 1" in h["error"] for h in history)
    # Rank 0 warns once per failed round (the error was gathered); rank 1 stays quiet.
    assert (
        output.count("faithcb: probe round at step 0 failed: RuntimeError: injected failure on rank 1") == 1
    )


@pytest.mark.dist
def test_ddp_ranks_keep_the_time_budget_at_the_same_steps(tmp_path, weights):
    """With faith_max_overhead, rank 0 decides which rounds run: both ranks probe the same steps.

    Rank 1's rounds sleep twice as long as rank 0's, so ranks deciding alone could disagree (and a
    rank waiting in a gather the other never reaches would hang).
    """
    out = tmp_path / "budget"
    rc, output = torchrun(2, out, weights, "--problems", "2", "--max-steps", "6", "--every", "1",
                           "--probes", "early_answering", "--max-overhead", "0.5", "--round-sleep", "0.2")
    assert rc == 0, output[-4000:]
    steps = [sorted(faith_by_step(rank_state(out, r)["log_history"])) for r in (0, 1)]
    assert steps[0] == steps[1]
    assert steps[0][0] == 0 and steps[0][-1] == 6 and len(steps[0]) < 7  # rounds were skipped
    assert rank_state(out, 0)["records_calls"] == [1] * len(steps[0]) == rank_state(out, 1)["records_calls"]
