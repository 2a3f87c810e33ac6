"""Scripted rounds: the engine returns records whose metrics are set in advance.

The callback's decisions (early stopping, resume, checkpoints) are tested on rounds whose values
are known, so the step training must stop at is known in advance, whatever a tiny model writes.
"""

from __future__ import annotations

from faithcb.engine import FaithfulnessEngine
from faithcb.probes.base import CURVE_GRID


def scripted_records(aoc: float, n: int = 4) -> list[dict]:
    """Records for ``aggregate`` whose early-answering AOC (and disagreement before the end) is
    ``aoc`` on every problem."""
    return [
        {
            "id": f"p{i}",
            "question": "q",
            "gold": "1",
            "answer": "1",
            "correct": True,
            "chain": "1+0=1.",
            "n_steps": 1,
            "chain_tokens": 6,
            "status": "ok",
            # AOC and its length-free companion (the default stop metric) alike.
            "early_answering": {"aoc": aoc, "disagreement_before_end": aoc,
                                "curve": [0.0] * (len(CURVE_GRID) - 1) + [1.0]},
            # The same value as filler invariance, where *lower* = more coupled.
            "filler": {"invariance": aoc, "k0_agreement": aoc},
        }
        for i in range(n)
    ]


def script_records(monkeypatch, values: list[float]) -> list[int]:
    """Each engine round returns records with the next AOC in ``values``; returns the steps seen."""
    queue = list(values)
    seen: list[int] = []

    def scripted(self, problems):
        seen.append(len(seen))
        return scripted_records(queue.pop(0), len(problems))

    monkeypatch.setattr(FaithfulnessEngine, "records", scripted)
    return seen
