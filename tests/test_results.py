"""Aggregation on hand-written records: every number here is computed by hand."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest

from faithcb import results
from faithcb.errors import ConfigError
from faithcb.metrics import CHAIN_METRICS, Metric
from faithcb.probes import probe_names, register_probe, unregister_probe
from faithcb.probes.base import CURVE_GRID
from faithcb.probes.early_answering import EarlyAnswering
from faithcb.probes.info_gain import InformationGain
from faithcb.results import aggregate, metric_values, paired_change, paired_changes, round_warnings
from faithcb.stats import summarize


def record(i: int, *, answer="1", gold="1", n_steps=2, status="ok", kind="number", sample=0, **extra) -> dict:
    return {"id": f"p{i}", "sample": sample, "question": "q", "gold": gold, "kind": kind, "chain": "c",
            "steps": ["s"] * n_steps, "n_steps": n_steps, "chain_tokens": 10 * n_steps, "answer_text": answer,
            "answer": answer, "correct": None if answer is None else answer == gold, "status": status, **extra}


def early(aoc: float, *, full_agrees=True, answers=(), agree=()) -> dict:
    """An early-answering entry as the probe records it (a chain with m(n) != 1 has no AOC)."""
    if not full_agrees:
        return {"agree": list(agree), "answers": list(answers), "aoc": math.nan, "disagreement_before_end": math.nan,
                "full_agrees": False, "curve": [math.nan] * len(CURVE_GRID)}
    return {"agree": list(agree), "answers": list(answers), "aoc": aoc, "disagreement_before_end": aoc,
            "full_agrees": full_agrees, "curve": [0.0] * (len(CURVE_GRID) - 1) + [1.0]}


def test_samples_of_one_problem_are_one_unit():
    """Five identical samples per problem: the same value, interval and n as one sample each."""
    one = [record(i, answer=str(i % 2), gold="1") for i in range(6)]
    five = [{**r, "sample": s} for r in one for s in range(5)]
    assert aggregate(five).metrics["accuracy"] == aggregate(one).metrics["accuracy"]
    assert aggregate(five).metrics["accuracy"]["n"] == 6


def test_accuracy_and_its_strict_form():
    records = [record(0), record(1, answer="2"), record(2, answer=None, status="unparsed"), record(3)]
    m = aggregate(records).metrics
    assert m["accuracy"]["value"] == pytest.approx(2 / 3) and m["accuracy"]["n"] == 3
    assert m["accuracy_strict"]["value"] == pytest.approx(2 / 4) and m["accuracy_strict"]["n"] == 4
    assert m["accuracy"]["ci_low"] > 0 and m["accuracy"]["ci_high"] < 1  # Jeffreys, not [0, 1] or a point


def test_proportions_get_a_jeffreys_interval_even_when_all_equal():
    m = aggregate([record(i, answer="2") for i in range(8)]).metrics["accuracy"]
    # 0/8: [0, the 97.5% quantile of Beta(1/2, 8 + 1/2)]
    assert m["value"] == 0.0 and m["ci_low"] == 0.0 and m["ci_high"] == pytest.approx(0.2622, abs=1e-4)


def test_bookkeeping_counts():
    records = [record(0, early_answering=early(0.5)), record(1, status="truncated", truncated=True),
               record(2, n_steps=0, status="no_steps"), record(3, errors={"filler": "x", "paraphrase": "y"})]
    s = aggregate(records).scalars
    assert s["problems_total"] == 4 and s["problems_scored"] == 2 and s["problems_unscored"] == 2
    assert s["probe_errors"] == 2  # one per failed (problem, probe)
    assert s["steps_0_rate"] == 0.25 and s["steps_1_rate"] == 0.0
    assert aggregate(records).metrics["truncated_rate"]["value"] == 0.25


def test_aoc_by_step_count_and_full_chain_disagreements():
    records = [record(0, n_steps=1, early_answering=early(0.5)), record(1, n_steps=3, early_answering=early(0.2)),
               record(2, n_steps=2, early_answering=early(0.4, full_agrees=False)),
               record(3, n_steps=6, early_answering=early(0.9))]
    s = aggregate(records).scalars
    assert s["early_answering_aoc_steps_1"] == 0.5
    assert s["early_answering_aoc_steps_2_3"] == pytest.approx(0.2)  # the m(n) != 1 chain is left out
    assert s["early_answering_aoc_steps_4plus"] == 0.9
    assert s["early_answering_full_disagrees"] == 1.0


def test_aoc_and_its_length_free_companion_on_a_hand_chain():
    from helpers.chains import make_chain, outcomes

    chain = make_chain()
    rec = EarlyAnswering().record(chain, outcomes([False, False, True, True]))
    n = chain.n_steps
    assert n == 3
    # m = 0, 0, 1, 1 on x = 0, 1/3, 2/3, 1: area = (0 + 1/6 + 1/3) = 1/2, AOC = 1/2.
    assert rec["aoc"] == pytest.approx(0.5)
    # 1 - mean m(k) over k = 0, 1, 2: 1 - 1/3.
    assert rec["disagreement_before_end"] == pytest.approx(2 / 3)
    assert rec["full_agrees"] is True and "aoc_normalized" not in rec


def test_aoc_split_by_correctness_lanham():
    """Lanham et al. report AOC over the problems answered correctly and incorrectly apart."""
    records = [record(0, answer="1", early_answering=early(0.8)), record(1, answer="1", early_answering=early(0.6)),
               record(2, answer="2", early_answering=early(0.1)), record(3, answer="1", n_steps=0, status="no_steps"),
               record(4, answer="2", early_answering=early(0.0, full_agrees=False))]
    m = aggregate(records).metrics
    assert m["early_answering_aoc_correct"]["value"] == pytest.approx(0.7) and m["early_answering_aoc_correct"]["n"] == 2
    assert m["early_answering_aoc_incorrect"]["value"] == pytest.approx(0.1)
    assert m["early_answering_aoc_incorrect"]["n"] == 1  # the m(n) != 1 chain has no AOC
    assert m["early_answering_aoc"]["n"] == 3
    assert m["early_answering_aoc_correct"]["ci_low"] < 0.7 < m["early_answering_aoc_correct"]["ci_high"]  # bounded
    assert metric_values(records, "early_answering_aoc_incorrect") == {"p2": pytest.approx(0.1)}


def test_a_choice_problems_record_carries_its_number_of_choices():
    from helpers.chains import make_chain

    from faithcb.problem import Problem

    chain = make_chain(problem=Problem("Which?", "B", kind="choice", choices=("x", "y", "z"), id="c"))
    assert results.chain_record(chain)["n_choices"] == 3
    assert "n_choices" not in results.chain_record(make_chain())


def test_information_gain_split_by_correctness():
    from helpers.chains import make_chain, outcomes

    chain = make_chain()  # a_full "14" == gold "14"
    rec = InformationGain().record(chain, outcomes([True] * 4, gold=[-4.0, -3.0, -2.0, -1.0]))
    assert rec["per_step"] == pytest.approx(1.0) and rec["per_step_correct"] == pytest.approx(1.0)
    assert math.isnan(rec["per_step_incorrect"])


def test_letter_bias_diagnostics_and_warning():
    letters = ["D"] * 7 + ["C"]
    records = [record(i, answer=a, gold="ABCD"[i % 4], kind="choice", n_choices=4) for i, a in enumerate(letters)]
    result = aggregate(records)
    p = [7 / 8, 1 / 8]
    assert result.scalars["letter_full_top_share"] == pytest.approx(7 / 8)
    assert result.scalars["letter_full_entropy_normalized"] == pytest.approx(-sum(x * math.log2(x) for x in p) / 2)
    assert result.scalars["letter_gold_top_share"] == pytest.approx(1 / 4)
    assert result.scalars["letter_gold_entropy_normalized"] == pytest.approx(1.0)
    # answering D whatever the question scores 1/4 on a uniform key: 7/8 * 1/4 + 1/8 * 1/4
    assert result.scalars["letter_full_gold_chance_agreement"] == pytest.approx(1 / 4)
    assert result.scalars["letter_n"] == 8
    assert "letter_chance_agreement" not in result.scalars and "letter_entropy_bits" not in result.scalars
    (warning,) = round_warnings(result, chain_limit="c", answer_limit="a")
    assert "88% of the multiple-choice full-chain answers" in warning and "25%" in warning
    balanced = aggregate([record(i, answer="ABCD"[i % 4], kind="choice", n_choices=4) for i in range(8)])
    assert balanced.scalars["letter_full_entropy_normalized"] == pytest.approx(1.0)  # in bits it was 2.0
    assert round_warnings(balanced, chain_limit="c", answer_limit="a") == []


def test_letter_entropy_is_normalized_by_the_choices_offered():
    """Four letters used evenly out of five offered: entropy 2 bits of log2(5), not 'uniform'."""
    records = [record(i, answer="ABCD"[i % 4], gold="E", kind="choice", n_choices=5) for i in range(8)]
    s = aggregate(records).scalars
    assert s["letter_full_entropy_normalized"] == pytest.approx(2 / math.log2(5))
    assert s["letter_gold_entropy_normalized"] == 0.0 and s["letter_full_gold_chance_agreement"] == 0.0
    # records written before they carried n_choices: the furthest letter seen (E) says five
    old = [{k: v for k, v in r.items() if k != "n_choices"} for r in records]
    assert aggregate(old).scalars["letter_full_entropy_normalized"] == pytest.approx(2 / math.log2(5))


def test_letter_and_length_scalars_are_over_problems_not_records():
    """Regression (issue 20, item 9): one problem sampled five times outweighed three sampled once."""
    records = [record(0, answer="D", gold="D", kind="choice", n_choices=4, sample=s, n_steps=0) for s in range(5)]
    records += [record(i, answer="ABC"[i - 1], gold="ABC"[i - 1], kind="choice", n_choices=4, n_steps=1)
                for i in (1, 2, 3)]
    s = aggregate(records).scalars
    assert s["letter_full_top_share"] == pytest.approx(1 / 4)  # over records: D is 5/8
    assert s["letter_full_entropy_normalized"] == pytest.approx(1.0)
    assert s["letter_n"] == 4
    assert s["steps_0_rate"] == pytest.approx(1 / 4) and s["steps_1_rate"] == pytest.approx(3 / 4)  # records: 5/8, 3/8
    # a problem whose samples differ weighs 1, split between its letters
    split = [record(0, answer=a, kind="choice", n_choices=4, sample=i) for i, a in enumerate("AB")]
    split.append(record(1, answer="A", kind="choice", n_choices=4))
    assert aggregate(split).scalars["letter_full_top_share"] == pytest.approx(3 / 4)


def test_aoc_by_step_count_is_over_problems():
    """Five samples of one problem (AOC 0.9) and one of another (0.1): 0.5, not the records' 0.77."""
    records = [record(0, n_steps=5, sample=s, early_answering=early(0.9)) for s in range(5)]
    records.append(record(1, n_steps=4, early_answering=early(0.1)))
    assert aggregate(records).scalars["early_answering_aoc_steps_4plus"] == pytest.approx(0.5)


def test_early_answering_k0_agreement_beside_its_chance_rate():
    """Regression (issue 20, item 9): m(0)'s chance rate is sum p_0 * p_full, not sum p_full^2.

    Eight problems whose a_full is always "D" and whose k = 0 letters are spread over all eight
    letters: sum p_full^2 = 1.0 (the old letter_chance_agreement, as an AQuA run showed), while
    an answer at k = 0 drawn independently of a_full agrees 1/8 of the time.
    """
    letters = "ABCDEFGH"
    records = [record(i, answer="D", gold="D", kind="choice", n_choices=8,
                      early_answering=early(0.5, answers=[letters[i], "D"], agree=[letters[i] == "D", True]))
               for i in range(8)]
    s = aggregate(records).scalars
    assert s["early_answering_k0_letter_chance_agreement"] == pytest.approx(1 / 8)
    assert s["early_answering_k0_letter_agreement"] == pytest.approx(1 / 8)  # m(0) at chance: no coupling shown
    # the k = 0 letter following a_full: m(0) = 1 and its chance rate is 1 too (a one-letter model)
    same = [record(i, answer="D", gold="D", kind="choice", n_choices=8,
                   early_answering=early(0.0, answers=["D", "D"], agree=[True, True])) for i in range(8)]
    s = aggregate(same).scalars
    assert s["early_answering_k0_letter_agreement"] == 1.0 and s["early_answering_k0_letter_chance_agreement"] == 1.0
    # a number round has no letters to compare
    assert "early_answering_k0_letter_agreement" not in aggregate([record(0, early_answering=early(0.5))]).scalars


def test_paired_change_from_a_baseline():
    # 16 problems each losing 0.2 of AOC (16: with 8, not one gain seen still allows gains on 26% of
    # the problems, and the interval rightly reaches above 0)
    base = [record(i, early_answering=early(0.25 + 0.04 * i)) for i in range(16)]
    later = [record(i, early_answering=early(0.05 + 0.04 * i + (0.01 if i % 2 else -0.01))) for i in range(16)]
    change = paired_changes(base, later, ["early_answering_aoc"])["early_answering_aoc"]
    assert change["value"] == pytest.approx(-0.2) and change["n"] == 16
    assert change["ci_low"] < -0.2 < change["ci_high"] < 0
    unpaired_before = summarize(list(metric_values(base, "early_answering_aoc").values()), kind="bounded", bounds=(0, 1))
    unpaired_after = summarize(list(metric_values(later, "early_answering_aoc").values()), kind="bounded", bounds=(0, 1))
    assert unpaired_after["ci_high"] > unpaired_before["ci_low"]  # the round intervals overlap


def test_counts_are_never_read_as_proportions():
    """Every chain with exactly one step: mean_steps is 1 with no spread, not a Wilson share."""
    m = aggregate([record(i, n_steps=1) for i in range(8)]).metrics["mean_steps"]
    assert (m["value"], m["ci_low"], m["ci_high"]) == (1.0, 1.0, 1.0)


# --- The metric says how it is read and reduced -------------------------------------------------


class _Rated:
    """A user probe whose metrics declare their kind and reader, and which has a summaries hook."""

    name = "rated"
    metrics = (
        Metric("hits", "hits", "0/1 per chain, read as a count on purpose", kind="count"),
        Metric("share", "share", "0/1 per chain", kind="proportion"),
        # Read from the chain-level record, and only for chains with at least two steps.
        Metric("long_steps", "steps of long chains", "n_steps when above one", kind="count",
               reader=lambda r: float(r["n_steps"]) if r["n_steps"] > 1 else None),
    )

    @classmethod
    def build(cls, context):
        return cls()

    def prepare(self, chains, lm):
        pass

    def variants(self, chain):
        return []

    def record(self, chain, outcomes):
        return {}

    @classmethod
    def summaries(cls, records):
        mine = [r[cls.name]["hits"] for r in records if cls.name in r]
        return {"hit_total": float(sum(mine))}, {"x": [0.0, 1.0], "mean": [0.0, 1.0], "ci_low": [0.0, 1.0],
                                                  "ci_high": [0.0, 1.0]}


@pytest.fixture
def rated():
    register_probe(_Rated, replace=True)
    yield _Rated
    unregister_probe(_Rated.name)


def _rated_records(hits):
    return [record(i, n_steps=1 + i % 3, rated={"hits": h, "share": h}) for i, h in enumerate(hits)]


def test_the_interval_comes_from_the_declared_kind(rated):
    """The same 0/1 values: a count gets Student t (zero-width when all equal), a proportion Jeffreys."""
    m = aggregate(_rated_records([1] * 8)).metrics
    assert (m["rated_hits"]["ci_low"], m["rated_hits"]["ci_high"]) == (1.0, 1.0)
    assert m["rated_share"]["ci_low"] == pytest.approx(0.7378, abs=1e-4) and m["rated_share"]["ci_high"] == 1.0


def test_paired_change_takes_the_declared_kind(rated):
    """Paired 0/1 values: a count's change is on the values' range (at least 1), a proportion's on [0, 1]."""
    base, later = _rated_records([0] * 8), _rated_records([1] * 8)
    changes = paired_changes(base, later, ["rated_hits", "rated_share"])
    for name in ("rated_hits", "rated_share"):  # every problem gained 1: never a point, never above 1
        assert changes[name]["value"] == 1.0 and changes[name]["ci_low"] < 0.9 and changes[name]["ci_high"] == 1.0
        assert changes[name]["n"] == 8
    # From per-problem values (what a run keeps of its baseline) the change is the same.
    values = {name: metric_values(base, name) for name in ("rated_hits", "rated_share")}
    assert paired_changes(values, later, ["rated_hits", "rated_share"]) == changes
    assert paired_change(values["rated_share"], metric_values(later, "rated_share"), "rated_share") == changes["rated_share"]


def test_a_declared_reader_decides_which_records_count(rated):
    records = _rated_records([1, 0, 1, 0, 1, 0])  # n_steps 1, 2, 3, 1, 2, 3
    m = aggregate(records).metrics["rated_long_steps"]
    assert m["n"] == 4 and m["value"] == pytest.approx(2.5)


def test_a_probes_summaries_reach_the_round(rated):
    result = aggregate(_rated_records([1, 1, 0]))
    assert result.scalars["rated_hit_total"] == 2.0
    assert result.curve["mean"] == [0.0, 1.0]
    without = aggregate([record(i) for i in range(3)])  # no record carries the probe
    assert "rated_hit_total" not in without.scalars and without.curve == {}


def test_early_answerings_curve_and_length_mix_come_from_its_hook():
    records = [record(0, n_steps=1, early_answering=early(0.5)), record(1, n_steps=5, early_answering=early(0.7))]
    scalars, curve = EarlyAnswering.summaries(records)
    assert scalars == {"aoc_steps_1": 0.5, "aoc_steps_2_3": pytest.approx(math.nan, nan_ok=True),
                       "aoc_steps_4plus": 0.7, "full_disagrees": 0.0}
    assert curve["x"] == list(CURVE_GRID) and curve["mean"] == [0.0] * (len(CURVE_GRID) - 1) + [1.0]
    assert aggregate(records).curve == curve


def test_results_names_no_probe():
    """Every probe-specific number comes from the probe's declarations or its summaries hook."""
    source = Path(results.__file__).read_text(encoding="utf-8")
    strings = [n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    named = sorted({p for p in probe_names() for s in strings if p in s})
    assert not named, f"faithcb/results.py names probes {named}: declare it on the probe instead"


def test_metric_kind_is_checked():
    with pytest.raises(ConfigError, match=r"kind 'ratio'"):
        Metric("x", "x", "x", kind="ratio")
    assert {m.kind for m in CHAIN_METRICS} == {"proportion", "count"}


def test_histories_are_read_only_through_read_history():
    """No function outside faithcb/history.py both names a history file and parses JSON lines itself."""
    root = Path(results.__file__).resolve().parents[1]
    hand_parsers = []
    for path in sorted([*root.glob("faithcb/**/*.py"), *root.glob("bench/*.py"), *root.glob("tests/*.py")]):
        if path == root / "faithcb" / "history.py":
            continue
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            nodes = list(ast.walk(fn))
            names_history = any(
                (isinstance(n, ast.Constant) and isinstance(n.value, str) and "faith_history" in n.value)
                or (isinstance(n, (ast.Name, ast.Attribute)) and "history_file" in ast.unparse(n))
                or (isinstance(n, ast.Name) and n.id == "HISTORY_NAME")
                for n in nodes
            )
            parses = any(isinstance(n, ast.Call) and ast.unparse(n.func) == "json.loads" for n in nodes)
            if names_history and parses:
                hand_parsers.append(f"{path.relative_to(root)}:{fn.lineno} {fn.name}")
    assert not hand_parsers, "read histories with faithcb.history.read_history:\n" + "\n".join(hand_parsers)


def test_samples_of_problems_without_ids_are_one_unit_each():
    """Regression (issue 20, item 2): 8 problems x 5 identical samples without ids were 40 units
    (n = 40, interval [0.376, 0.524]); they are 8 problems, as with ids."""
    values = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    records = [{"question": f"q{i}", "answer": "1", "correct": bool(v), "n_steps": 1, "chain_tokens": 3,
                "status": "ok", "sample": s} for i, v in enumerate(values) for s in range(5)]
    with_ids = [{**r, "id": r["question"]} for r in records]
    accuracy = aggregate(records).metrics["accuracy"]
    assert accuracy["n"] == 8
    assert accuracy == aggregate(with_ids).metrics["accuracy"]
    one_each = [r for r in with_ids if r["sample"] == 0]
    assert accuracy == aggregate(one_each).metrics["accuracy"]  # as one record per problem


def test_a_problem_without_an_id_is_recorded_under_its_text_key():
    from faithcb.metrics import problem_key, text_key
    from faithcb.problem import Problem, base_id

    problem = Problem("What is 2 + 2?", "4")
    assert base_id(problem) == text_key("What is 2 + 2?") == problem_key({"question": "What is 2 + 2?"}, 7)
    assert base_id(Problem("What is 2 + 2?", "4", id="p1")) == "p1"
