"""Running ``tests/dist_worker.py`` in a subprocess (plain or under ``torchrun``) and reading its results.

Runs that own global state (a W&B run, a process group) go through the worker, always with a
timeout, so a hang fails the test instead of the suite. Each rank writes ``rank<r>.json`` (its log
history and counters) into ``--out``; the run's history and records are under ``<out>/run``.
The pre-trained weights the workers start from come from the ``weights`` fixture (conftest.py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
WORKER = TESTS / "dist_worker.py"
TIMEOUT = 300  # seconds for any subprocess run; a deadlock fails the test here
# Each rank's own clock: the only logged values that may differ between ranks.
TIMINGS = {"faith/seconds", "faith/overhead_fraction"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_process(cmd: list[str], env_extra: dict[str, str] | None = None, cwd: Path | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update({"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    env.update(env_extra or {})
    # A new session so that on timeout the whole group (torchrun and its workers) can be stopped.
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        # torchrun starts its workers in sessions of their own: killing its group leaves them
        # running with our pipe open. SIGTERM lets torchrun stop its workers first.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            try:
                output, _ = proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:  # orphaned workers still hold the pipe
                output = ""
        pytest.fail(f"{' '.join(cmd)} did not finish within {TIMEOUT}s (deadlock?)\n{output[-4000:]}")
    return proc.returncode, output


def torchrun(nproc: int, out: Path, weights: Path, *args: str, env: dict[str, str] | None = None):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        str(WORKER),
        "--out",
        str(out),
        "--weights",
        str(weights),
        *args,
    ]
    return run_process(cmd, env)


def rank_state(out: Path, rank: int) -> dict:
    return json.loads((out / f"rank{rank}.json").read_text(encoding="utf-8"))


def faith_by_step(log_history: list[dict], prefix: str = "faith/") -> dict[int, dict[str, float]]:
    rounds: dict[int, dict[str, float]] = {}
    for entry in log_history:
        keys = {k: v for k, v in entry.items() if k.startswith(prefix)}
        if keys:
            rounds.setdefault(entry["step"], {}).update(keys)
    return rounds


def round_records(out: Path, step: int) -> list[dict]:
    path = out / "run" / "faith_records" / f"step_{step:06d}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


