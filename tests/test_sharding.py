"""Rounds under several processes: every rank does the same amount of collective work.

With sharded weights (FSDP, DeepSpeed ZeRO-3 without gathered weights) each forward pass is a
collective, so a round in which ranks make different numbers of passes hangs the job. Ranks probe
different problems, whose chains differ in length, so the callback pads the split (every rank
handles as many problems) and runs the passes in lockstep (``faithcb.callback._forwards_in_lockstep``).
Here that is checked under real 2-process DDP on CPU (gloo), counting each rank's passes.
"""

from __future__ import annotations

import pytest
from test_integrations import _rank, _records, _torchrun, weights  # noqa: F401  (weights: a fixture)

from faithcb.callback import _share


def test_share_pads_every_rank_to_the_longest_share():
    problems = list("abcde")
    shares = [_share(problems, rank, 2) for rank in (0, 1)]
    assert shares == [(["a", "b", "c"], []), (["d", "e"], ["d"])]
    # Fewer problems than ranks: an empty share is padded too (it still must run the passes).
    assert _share(["a"], 1, 3) == ([], ["a"])
    assert _share(["a"], 0, 3) == (["a"], [])
    # Concatenated in rank order the real shares are the round's problems, in order.
    for n in range(0, 8):
        for world in (1, 2, 3, 4):
            parts = [_share(list(range(n)), r, world) for r in range(world)]
            assert [p for mine, _ in parts for p in mine] == list(range(n))
            assert len({len(mine) + len(pad) for mine, pad in parts}) == 1 or n == 0


def test_ddp_ranks_make_the_same_forward_passes(tmp_path, weights):  # noqa: F811
    """5 problems on 2 ranks (3 + 2, the short share padded): equal passes per rank at every round,
    and the gathered records equal a single process's (the padding's records are discarded)."""
    one, two = tmp_path / "one", tmp_path / "two"
    args = ("--problems", "5", "--probes", "early_answering,filler")
    rc, output = _torchrun(1, one, weights, *args)
    assert rc == 0, output[-4000:]
    rc, output = _torchrun(2, two, weights, *args)
    assert rc == 0, output[-4000:]

    r0, r1 = _rank(two, 0), _rank(two, 1)
    # Rank 1 probes its 2 problems, then 1 repeated problem as padding, at each round (steps 0, 2).
    assert r0["records_calls"] == [3, 3]
    assert r1["records_calls"] == [2, 1, 2, 1]
    # The same number of forward passes on both ranks, at both rounds.
    assert len(r0["round_forwards"]) == 2 and min(r0["round_forwards"]) > 0
    assert r0["round_forwards"] == r1["round_forwards"], (r0["round_forwards"], r1["round_forwards"])

    # Step 0 (weights still identical): the gathered round is the single process's, padding gone.
    single, gathered = _records(one, 0), _records(two, 0)
    assert len(gathered) == 5
    for a, b in zip(single, gathered, strict=True):
        for key in ("id", "chain", "answer", "status", "n_steps", "chain_tokens"):
            assert a[key] == b[key], (a["id"], key)
        for probe in ("early_answering", "filler"):
            assert (probe in a) == (probe in b)
            if probe in a:
                assert a[probe]["answers"] == b[probe]["answers"], (a["id"], probe)
                assert b[probe]["logp"] == pytest.approx(a[probe]["logp"], abs=1e-4), (a["id"], probe)
