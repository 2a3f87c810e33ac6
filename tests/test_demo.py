"""``faithcb demo``: argument parsing (fast) and a quick end-to-end run on the embedded model (slow)."""

from __future__ import annotations

import json

import pytest

from faithcb import demo
from faithcb.history import read_history


def _settings(argv):
    return demo.settings_from_args(demo.build_parser().parse_args(argv))


def test_defaults():
    args = demo.build_parser().parse_args([])
    assert args.output_dir == "faithcb-demo" and args.model == "embedded"
    assert not args.no_wandb and not args.quick and args.threads == 0
    s = demo.settings_from_args(args)
    assert (s.steps, s.probe_every, s.problems, s.max_chain_tokens) == (8, 4, 12, 160)
    assert (s.lora_r, s.lora_alpha, s.batch_size, s.learning_rate) == (16, 32, 8, 1e-3)
    assert s.probes == ("early_answering", "filler")


def test_quick_and_overrides():
    s = _settings(["--quick"])
    assert s.steps <= 3 and s.problems <= 3 and s.train_examples <= 64
    s = _settings(["--quick", "--steps", "4", "--problems", "3", "--seed", "7", "--paraphrase", "--info-gain"])
    assert (s.steps, s.problems, s.seed) == (4, 3, 7)
    assert s.probes == ("early_answering", "filler", "info_gain", "paraphrase")
    # probe_every never exceeds the number of steps (the callback refuses a cadence that never fires)
    assert _settings(["--steps", "3"]).probe_every == 3


def test_bad_values_exit_with_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        demo.demo_main(["--steps", "0", "--no-wandb", "--output-dir", "/nonexistent/never-created"])
    assert exc.value.code == 2
    assert "--steps" in capsys.readouterr().err


def test_cli_dispatches_to_the_demo(monkeypatch):
    from faithcb import cli

    seen = []
    monkeypatch.setattr(demo, "run", lambda args: seen.append(args) or 0)
    assert cli.main(["demo", "--quick", "--no-wandb"]) == 0
    assert len(seen) == 1 and seen[0].quick and seen[0].no_wandb and not seen[0].paraphrase
    assert demo.settings_from_args(seen[0]) == _settings(["--quick", "--no-wandb"])


def test_wandb_mode(monkeypatch, tmp_path):
    import os

    assert demo._wandb_mode(tmp_path, disabled=True) == "disabled"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert demo._wandb_mode(tmp_path, disabled=False) == "offline"
    assert os.environ["WANDB_DIR"] == str(tmp_path)


def test_wandb_offline_when_not_logged_in_online_when_logged_in(monkeypatch, tmp_path):
    import os

    netrc = tmp_path / "netrc"
    netrc.write_text("")
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    assert demo._wandb_mode(tmp_path, disabled=False) == "offline"
    assert os.environ["WANDB_MODE"] == "offline"
    monkeypatch.delenv("WANDB_MODE")
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "0" * 40 + "\n")
    netrc.chmod(0o600)
    assert demo._wandb_mode(tmp_path, disabled=False) == "online"


def test_threads():
    assert demo.choose_threads(3) == 3
    assert demo.choose_threads(0) >= 1


def test_auto_threads_leave_busy_cores_alone():
    """Every core kept busy by other processes: one torch thread (more would spin-wait on them)."""
    import os
    import subprocess
    import sys

    import torch

    cores = os.cpu_count() or 1
    threads = torch.get_num_threads()
    torch.set_num_threads(cores)  # auto never exceeds torch's own count: let it choose among all cores
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    try:
        assert demo._busy_cores(cores) > 0.7 * cores
        assert demo.choose_threads(0) == 1
    finally:
        torch.set_num_threads(threads)
        for p in spinners:
            p.kill()
            p.wait()


def test_summary_table_reads_history(tmp_path):
    for arm, (a0, a1) in {"shortcut": (0.9, 0.1), "control": (0.5, 0.6)}.items():
        (tmp_path / arm).mkdir()
        lines = [
            {
                "step": step,
                "role": "model",
                "seconds": seconds,
                "metrics": {"accuracy": {"value": acc}, "early_answering_aoc": {"value": aoc}},
            }
            for step, acc, aoc, seconds in ((0, 0.1, a0, 41.4), (5, 0.9, a1, 12.0))
        ]
        (tmp_path / arm / demo.HISTORY).write_text("\n".join(json.dumps(x) for x in lines))
    results = {
        arm: {"dir": tmp_path / arm, "seconds": 60.0, "rounds": demo._rounds(tmp_path / arm)}
        for arm in demo.ARMS
    }
    results["control"]["start_from"] = "shortcut"  # the demo shares the step-0 round
    table = demo.summary_table(results)
    assert "shortcut" in table and "0.90 ->  0.10" in table and "0.10 ->  0.90" in table
    # each round's time, per arm; the control arm's step 0 is the shortcut arm's round
    assert "probe rounds: step 0: 41 s, step 5: 12 s" in table
    assert "probe rounds: step 0: shared with shortcut, step 5: 12 s" in table


def _arm_with_records(tmp_path, arm: str, per_round: list[list[float]]) -> dict:
    """An arm's history whose round r has early-answering AOC ``per_round[r][i]`` on problem i."""
    from faithcb.history import HistoryWriter

    writer = HistoryWriter(tmp_path / arm)
    for r, values in enumerate(per_round):
        records = [{"id": f"p{i}", "early_answering": {"aoc": v}} for i, v in enumerate(values)]
        mean = sum(values) / len(values)
        line = {"step": 4 * r, "role": "model", "seconds": 1.0, "metrics": {"early_answering_aoc": {"value": mean}}}
        writer.write_round([line], {"model": records})
    return {"dir": tmp_path / arm, "seconds": 60.0, "rounds": demo._rounds(tmp_path / arm)}


def test_the_verdict_is_paired_over_problems(tmp_path):
    first = [0.9, 0.8, 0.9, 0.7, 0.9, 0.8, 0.9, 0.8]
    collapsed = [0.0, 0.1, 0.0, 0.0, 0.1, 0.0, 0.0, 0.0]
    held = [0.9, 0.7, 0.9, 0.8, 0.8, 0.8, 0.9, 0.7]
    results = {"shortcut": _arm_with_records(tmp_path / "a", "shortcut", [first, collapsed]),
               "control": _arm_with_records(tmp_path / "a", "control", [first, held])}
    verdict = demo._verdict(results)
    assert "paired over problems" in verdict and "n = 8" in verdict
    assert "no longer depend on its chain" in verdict
    assert "shortcut -0.81 [" in verdict  # the mean paired change (0.8375 -> 0.025), with its interval

    # Both arms fell alike: no separation, whatever the size of the shortcut arm's own fall.
    results["control"] = _arm_with_records(tmp_path / "b", "control", [first, collapsed])
    assert "have not clearly separated" in demo._verdict(results)
    # One round only: nothing to pair.
    results["control"] = _arm_with_records(tmp_path / "c", "control", [first])
    assert demo._verdict(results) == "Not enough scored rounds to compare the arms."


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert demo.demo_main(["--quick", "--output-dir", str(out), "--no-wandb"]) == 0
    for arm in demo.ARMS:
        rounds = [x for x in read_history(out / arm) if x.get("role", "model") == "model"]
        assert [r["step"] for r in rounds] == [0, 2]
        assert all("metrics" in r and "error" not in r for r in rounds)
        assert rounds[0]["run"] == f"faithcb-demo-{arm}"
    # Both arms start from the same model: the control arm logs the shortcut arm's step-0 round.
    first = [read_history(out / arm)[0] for arm in demo.ARMS]
    assert json.dumps(first[0]["metrics"], sort_keys=True) == json.dumps(first[1]["metrics"], sort_keys=True)
    assert first[1]["seconds"] < 1 and first[0]["seconds"] > first[1]["seconds"]  # logged, not measured
    assert (out / "report.png").stat().st_size > 10_000
    html = (out / "report.html").read_text()
    assert "shortcut" in html and "control" in html
    printed = capsys.readouterr().out
    assert "shortcut" in printed and "control" in printed and str(out / "report.png") in printed
    assert "step 0: shared with shortcut" in printed
