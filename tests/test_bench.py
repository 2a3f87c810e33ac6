"""bench/bench_probes.py's core comparison on a tiny trained model (fast; the real run is the bench).

Naive one-generate-per-variant probing and faithcb's engine must agree on every variant, and
faithcb must read early answering + information gain in at most 1.5x the distinct tokens.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest
from conftest import STYLE, probe_problems, trained_model

BENCH = pathlib.Path(__file__).resolve().parent.parent / "bench" / "bench_probes.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_probes", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_probes", module)  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def comparison(bench, tok, one_thread):
    model = trained_model("llama", tok)
    return bench.run_comparison(
        model,
        tok,
        probe_problems(4),
        answer_max_tokens=4,
        max_chain_tokens=64,
        style=STYLE,
        plain=True,
        log=lambda *a, **k: None,
    )


def test_identical_agreements(comparison):
    assert comparison.scored >= 2, "too few scorable chains to compare anything"
    assert comparison.mismatches == []
    naive = comparison.sides["naive"]
    for name in ("faithcb", "plain"):
        assert comparison.sides[name].agree == naive.agree
        assert comparison.max_logp_gold_diff[name] < 1e-3
    assert comparison.token_run.agree == {
        i: {"early_answering": a["early_answering"]} for i, a in naive.agree.items()
    }
    # every variant of every scorable problem was compared
    assert (
        sum(len(a["early_answering"]) for a in naive.agree.values()) == comparison.variants["early_answering"]
    )
    assert sum(len(a["filler"]) for a in naive.agree.values()) == comparison.variants["filler"]


def test_processed_tokens_near_distinct(comparison, bench):
    run = comparison.token_run
    distinct = comparison.distinct["ea_ig_global"]
    assert distinct <= comparison.distinct["ea_ig_per_problem"]
    assert run.real <= run.processed <= bench.TOKEN_TARGET * distinct
    # the naive reference re-reads every context from scratch: several times the minimum
    assert comparison.sides["naive"].processed > 2 * distinct


def test_trie_size(bench):
    assert bench.trie_size([]) == 0
    assert bench.trie_size([[1, 2, 3], [1, 2, 4], [1, 2], [5]]) == 5
