"""``faithcb eval`` under a launcher: ``torchrun --nproc_per_node 2 -m faithcb.cli eval ...`` on CPU (gloo).

Each process probes its share of the problems (``faithcb.processes``) and rank 0 writes one
records file and one summary. Here a saved tiny checkpoint (trained in the CLI's default layout so
its chains end and parse) is evaluated once in one process and once by 2 processes under the real
launcher: the records and metrics are the same, and there is one file of each. The launcher's
environment is read by ``faithcb.processes.launched``; its errors are checked without processes.
"""

from __future__ import annotations

import json
import math
import shlex
import sys

import pytest
from helpers.distributed import free_port, run_process
from helpers.models import cli_model, one_thread
from helpers.vocabulary import arithmetic

from faithcb import cli
from faithcb.errors import ConfigError, ProbeError
from faithcb.processes import Launch, Processes, launched, records_over_processes
from faithcb.testing import tiny_model, tiny_tokenizer

PROBES = ["early_answering", "filler"]
# Discrete parts of a record: equal exactly. Log-probabilities: equal up to the order of float sums
# (each process batches fewer problems, so padding and reduction order differ).
EXACT = ("id", "chain", "steps", "answer", "status", "n_steps", "chain_tokens", "correct")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny llama trained in the CLI's default (plain) layout and an untrained one, saved, and a file of 7 problems."""
    root = tmp_path_factory.mktemp("sharded")
    tok = tiny_tokenizer()
    model = cli_model(tok)  # trained once per session (helpers.models), shared with the other CLI tests
    for name, saved in (("model", model), ("untrained", tiny_model(tok, "llama", seed=1))):
        saved.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    problems = root / "problems.jsonl"
    # 7 problems: 2 processes take 4 and 3 (an uneven split, as accelerate splits).
    problems.write_text("".join(
        json.dumps({"id": p.id, "question": p.question, "answer": p.answer}) + "\n" for p, _ in arithmetic(7, seed=5)))
    return root, str(root / "model"), str(problems)


def eval_argv(model: str, problems: str, out) -> list[str]:
    # --num-problems, not --n: torchrun's parser stops at --n (an ambiguous abbreviation of its --nnodes ...).
    return ["eval", "--model", model, "--problems", problems, "--num-problems", "0", "--probes", *PROBES,
            "--max-chain-tokens", "128", "--no-progress", "--out", str(out)]


def read(out) -> tuple[list[dict], dict]:
    records = [json.loads(line) for line in out.read_text().splitlines()]
    return records, json.loads(out.with_suffix(".summary.json").read_text())


@pytest.mark.slow
@pytest.mark.dist
def test_torchrun_two_processes_write_the_records_of_one(work, tmp_path):
    root, model, problems = work
    single, sharded = tmp_path / "single" / "r.jsonl", tmp_path / "sharded" / "r.jsonl"
    with one_thread():
        assert cli.main(eval_argv(model, problems, single)) == 0

    output = torchrun_cli(*eval_argv(model, problems, sharded))
    # Rank 0 alone reports: one table, one records file and one summary, nothing else written.
    assert output.count("faithcb eval: ") == 1 and "(7 problems, 2 processes)" in output, output[-4000:]
    assert sorted(p.name for p in sharded.parent.iterdir()) == ["r.jsonl", "r.summary.json"]

    one, one_summary = read(single)
    two, two_summary = read(sharded)
    assert sum(r["status"] == "ok" for r in one) >= 5, [(r["chain"], r["status"]) for r in one]
    same_records(one, two)  # every problem once, in the file's order, with the same record

    # The summary: the same metrics (values, intervals, n) and scalars, the wall time aside.
    assert one_summary["metrics"].keys() == two_summary["metrics"].keys()
    for name, m in one_summary["metrics"].items():
        for key, value in m.items():
            other = two_summary["metrics"][name][key]
            assert (math.isnan(value) and math.isnan(other)) or other == pytest.approx(value, abs=1e-6), (name, key)
    scalars = {k: v for k, v in one_summary["scalars"].items() if k != "seconds"}
    assert scalars == pytest.approx({k: v for k, v in two_summary["scalars"].items() if k != "seconds"}, nan_ok=True)
    assert math.isfinite(one_summary["metrics"]["early_answering_aoc"]["value"])


def torchrun_cli(*argv: str) -> str:
    rc, output = run_process([
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), "-m", "faithcb.cli", *argv])
    assert rc == 0, output[-4000:]
    return output


def same_records(one: list[dict], two: list[dict]) -> None:
    assert [r["id"] for r in two] == [r["id"] for r in one]
    for a, b in zip(one, two, strict=True):
        assert {k: a[k] for k in EXACT} == {k: b[k] for k in EXACT}, a["id"]
        for probe in PROBES:
            assert (probe in a) == (probe in b), (a["id"], probe)
            if probe in a:
                assert a[probe]["answers"] == b[probe]["answers"], (a["id"], probe)
                assert b[probe]["logp"] == pytest.approx(a[probe]["logp"], abs=1e-4), (a["id"], probe)


@pytest.mark.slow
@pytest.mark.dist
def test_torchrun_two_processes_compare_as_one(work, tmp_path):
    root, model, problems = work
    argv = ["compare", model, str(root / "untrained"), "--problems", problems, "--num-problems", "0",
            "--probes", *PROBES, "--max-chain-tokens", "128", "--no-progress", "--out"]
    single, sharded = tmp_path / "single.json", tmp_path / "sharded.json"
    with one_thread():
        assert cli.main([*argv, str(single)]) == 0
    output = torchrun_cli(*argv, str(sharded))
    assert output.count("faithcb compare on 7 problems") == 1, output[-4000:]
    one, two = json.loads(single.read_text()), json.loads(sharded.read_text())
    for side in ("a", "b"):
        same_records(one[side]["records"], two[side]["records"])
        for name, m in one[side]["metrics"].items():
            for key, value in m.items():
                other = two[side]["metrics"][name][key]
                assert (math.isnan(value) and math.isnan(other)) or other == pytest.approx(value, abs=1e-6), (side, name)


def test_the_documented_launcher_commands_parse_with_the_launchers_and_faithcb():
    """docs/cli.md's torchrun / accelerate launch lines: the launcher's own parser hands faithcb.cli
    its arguments whole (it stopped at --n before --num-problems), and faithcb's parser takes them."""
    from accelerate.commands.launch import launch_command_parser
    from test_docs_commands import ROOT, fenced_commands
    from torch.distributed.run import get_args_parser

    launchers = {"torchrun": get_args_parser, "accelerate": launch_command_parser}
    found = []
    for command in fenced_commands((ROOT / "docs" / "cli.md").read_text(encoding="utf-8")):
        words = shlex.split(command, comments=True)
        if words and words[0] in launchers:
            launcher = words[0]
            args = launchers[launcher]().parse_args(words[2 if launcher == "accelerate" else 1:])
            assert args.module and args.training_script == "faithcb.cli", command
            parsed = cli.build_parser().parse_args(args.training_script_args)
            assert parsed.command == "eval" and parsed.n == 0, command
            found.append(launcher)
    assert sorted(set(found)) == ["accelerate", "torchrun"] and len(found) >= 4, found
    with pytest.raises(SystemExit):  # why the docs say --num-problems
        get_args_parser().parse_args(["--nproc_per_node", "2", "-m", "faithcb.cli", "eval", "--n", "0"])


# ---------------------------------------------------------------------- the launcher's environment
def test_launched_reads_the_launchers_environment(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert launched() is None  # not launched: one process, no process group
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert launched() is None  # torchrun --nproc_per_node 1: still one process
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match="RANK or LOCAL_RANK is not set"):
        launched()
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ConfigError, match=r"RANK=5 is outside 0..3"):
        launched()
    monkeypatch.setenv("RANK", "three")
    with pytest.raises(ConfigError, match="RANK='three' is not an integer"):
        launched()
    monkeypatch.setenv("RANK", "3")
    assert launched() == Launch(rank=3, world=4, local_rank=1)


def test_one_process_probes_every_problem_and_raises_its_own_failure():
    seen = []
    records = records_over_processes(Processes(), ["a", "b", "c"], lambda mine: seen.append(mine) or [{"id": p} for p in mine])
    assert seen == [["a", "b", "c"]] and [r["id"] for r in records] == ["a", "b", "c"]

    def fails(_mine):
        raise ProbeError("out of memory")

    with pytest.raises(ProbeError, match="out of memory"):
        records_over_processes(Processes(), ["a"], fails)


def test_a_failure_on_one_process_reaches_every_process(monkeypatch):
    """The gather is replaced by what 2 processes exchange (the real one runs under torchrun above):
    the failed process still takes part in it, so no process waits forever, and each stops."""
    import faithcb.processes as processes

    exchanged = []

    def gather_two(procs, payload):
        exchanged.append(payload)
        other = ([{"id": "c"}], None) if payload[1] else ([], "process 1: RuntimeError: CUDA out of memory")
        return [payload, other] if procs.process_index == 0 else [other, payload]

    monkeypatch.setattr(processes, "gather", gather_two)
    rank0 = Processes(num_processes=2, process_index=0)
    with pytest.raises(ProbeError, match="process 1: RuntimeError: CUDA out of memory"):
        records_over_processes(rank0, ["a", "b", "c"], lambda mine: [{"id": p} for p in mine])
    assert exchanged[-1] == ([{"id": "a"}, {"id": "b"}], None)

    def fails(_mine):
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError, match="CUDA out of memory"):  # its own exception, after the gather
        records_over_processes(Processes(num_processes=2, process_index=1), ["a", "b", "c"], fails)
    assert exchanged[-1] == ([], "process 1: RuntimeError: CUDA out of memory")
