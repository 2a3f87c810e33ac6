"""Problem loading: adapters, errors that name source/line/field, sampling, real data files."""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from faithcb import problem as problem_module
from faithcb.answers import extract_answer
from faithcb.data import ProbeSet, Problem, load
from faithcb.errors import FaithcbError, ProblemFormatError

SHARED_DATA = Path(
    os.environ.get("FAITHCB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def _write_jsonl(path: Path, records: Sequence[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


GOOD_GSM = {"question": "Sam has 3 <<1+2=3>>apples. How many?", "answer": "He has 1+2 = <<1+2=3>>3.\n#### 3"}

# ---------------------------------------------------------------------------------------------
# Errors: every message names the source, the 1-based line and the field
# ---------------------------------------------------------------------------------------------

ERROR_CASES = [
    # (id, lines, format, field_map, expected message)
    (
        "missing question",
        [GOOD_GSM, {"answer": "#### 3"}],
        "auto",
        None,
        'problems.jsonl line 2: field "question": missing',
    ),
    (
        "null question",
        [{"question": None, "answer": "3"}],
        "auto",
        None,
        'problems.jsonl line 1: field "question": missing',
    ),
    (
        "question not a string",
        [{"question": 5, "answer": "3"}],
        "auto",
        None,
        'problems.jsonl line 1: field "question": expected a string, got int',
    ),
    (
        "bad json line",
        [GOOD_GSM, GOOD_GSM, '{"question": "x", "answer": '],
        "auto",
        None,
        "problems.jsonl line 3: invalid JSON",
    ),
    (
        "blank lines keep numbering",
        ["", GOOD_GSM, "   ", {"question": "  ", "answer": "#### 3"}],
        "auto",
        None,
        'problems.jsonl line 4: field "question": empty question',
    ),
    (
        "not an object",
        [GOOD_GSM, [1, 2]],
        "auto",
        None,
        "problems.jsonl line 2: expected an object with a question and an answer, got list",
    ),
    (
        "gsm8k without ####",
        [GOOD_GSM, GOOD_GSM, {"question": "q?", "answer": "It is 72."}],
        "gsm8k",
        None,
        'problems.jsonl line 3: field "answer": no "####" final answer in GSM8K-style answer',
    ),
    (
        "gsm8k non-number final",
        [{"question": "q?", "answer": "so\n#### many"}],
        "gsm8k",
        None,
        'problems.jsonl line 1: field "answer": cannot read a number from the "####" final answer \'many\'',
    ),
    (
        "generic missing answer",
        [{"question": "q?"}],
        "auto",
        None,
        'problems.jsonl line 1: field "answer": missing',
    ),
    (
        "generic empty answer",
        [{"question": "q?", "answer": "  "}],
        "generic",
        None,
        'problems.jsonl line 1: field "answer": empty answer',
    ),
    (
        "generic unnormalizable answer",
        [{"question": "q?", "answer": "?!"}],
        "generic",
        None,
        "problems.jsonl line 1: field \"answer\": cannot normalize '?!' as a text answer",
    ),
    (
        "generic answer of wrong type",
        [{"question": "q?", "answer": [3]}],
        "generic",
        None,
        'problems.jsonl line 1: field "answer": expected a string or number, got list',
    ),
    (
        "choice letter out of range",
        [{"question": "q?", "options": ["A)1", "B)2", "C)3"], "correct": "E"}],
        "auto",
        None,
        "problems.jsonl line 1: field \"correct\": choice letter 'E' out of range A-C",
    ),
    (
        "choice index out of range",
        [{"question": "q?", "choices": ["1", "2"], "answer": 2}],
        "auto",
        None,
        'problems.jsonl line 1: field "answer": choice index 2 out of range 0-1',
    ),
    (
        "choice unreadable",
        [{"question": "q?", "choices": ["1", "2"], "answer": "maybe"}],
        "auto",
        None,
        "problems.jsonl line 1: field \"answer\": cannot read a choice letter A-B from 'maybe'",
    ),
    (
        "choice boolean",
        [{"question": "q?", "choices": ["1", "2"], "answer": True}],
        "auto",
        None,
        'problems.jsonl line 1: field "answer": expected a letter A-B or an index',
    ),
    (
        "options without letters",
        [{"question": "q?", "options": ["32400", "6000"], "correct": "A"}],
        "auto",
        None,
        "problems.jsonl line 1: field \"options\": option 1 ('32400') has no letter",
    ),
    (
        "options out of order",
        [{"question": "q?", "options": ["A)1", "C)2"], "correct": "A"}],
        "choice",
        None,
        "problems.jsonl line 1: field \"options\": option 2 has letter 'C', expected 'B'",
    ),
    (
        "options empty",
        [{"question": "q?", "options": [], "correct": "A"}],
        "choice",
        None,
        'problems.jsonl line 1: field "options": expected a non-empty list',
    ),
    (
        "choice format without options",
        [{"question": "q?", "choices": ["1", "2"], "answer": "A"}, {"question": "q?", "answer": "A"}],
        "choice",
        None,
        'problems.jsonl line 2: field "options": missing (give lettered "options" or plain "choices")',
    ),
    (
        "choices not a list",
        [{"question": "q?", "choices": "A, B", "answer": "A"}],
        "auto",
        None,
        'problems.jsonl line 1: field "choices": expected a non-empty list of option texts',
    ),
    (
        "choice missing correct",
        [{"question": "q?", "options": ["A)1", "B)2"]}],
        "auto",
        None,
        'problems.jsonl line 1: field "correct": missing',
    ),
    (
        "field_map names the user's field",
        [{"problem": "q?", "solution": "no hashes"}],
        "gsm8k",
        {"problem": "question", "solution": "answer"},
        'problems.jsonl line 1: field "answer" (from "solution"): no "####"',
    ),
    ("empty file", [], "auto", None, "problems.jsonl: no problems found"),
    ("only blank lines", ["", "  "], "auto", None, "problems.jsonl: no problems found"),
]


@pytest.mark.parametrize(
    "lines, format, field_map, message", [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
def test_errors_name_source_line_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lines, format, field_map, message
) -> None:
    monkeypatch.chdir(tmp_path)
    _write_jsonl(tmp_path / "problems.jsonl", lines)
    with pytest.raises(ProblemFormatError) as info:
        ProbeSet.from_jsonl("problems.jsonl", format=format, field_map=field_map)
    assert message in str(info.value)
    # Catchable as the builtin it refines and as the package's base class.
    assert isinstance(info.value, ValueError) and isinstance(info.value, FaithcbError)


def test_json_array_errors_name_item(tmp_path: Path) -> None:
    path = tmp_path / "set.json"
    path.write_text(json.dumps([GOOD_GSM, {"question": "q?"}], indent=2))
    with pytest.raises(ProblemFormatError, match=r'set\.json item 2: field "answer": missing'):
        ProbeSet.from_jsonl(path)


def test_broken_json_array_names_line(tmp_path: Path) -> None:
    path = tmp_path / "set.json"
    path.write_text('[\n  {"question": "q?", "answer": "1"},\n  {"question": \n]')
    with pytest.raises(ProblemFormatError, match=r"set\.json line 4: invalid JSON array"):
        ProbeSet.from_jsonl(path)


def test_from_records_errors_name_record() -> None:
    with pytest.raises(ProblemFormatError, match=r'<list> record 2: field "question": missing'):
        ProbeSet.from_records([{"question": "a?", "answer": "1"}, {"answer": "2"}])
    with pytest.raises(ProblemFormatError, match=r'mine record 1: field "answer"'):
        ProbeSet.from_records([{"question": "a?", "answer": "x"}], format="gsm8k", source="mine")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: ProbeSet([]), "<memory>: no problems found"),
        (lambda: ProbeSet([], source="x.jsonl"), "x.jsonl: no problems found"),
        (lambda: ProbeSet([{"question": "q"}]), "expected a Problem, got dict"),
        (lambda: ProbeSet.from_records([], source="s"), "s: no problems found"),
        (lambda: ProbeSet.from_records([GOOD_GSM], format="csv"), "unknown problem format 'csv'"),
        (lambda: ProbeSet.from_jsonl("/nonexistent/p.jsonl"), "/nonexistent/p.jsonl: no such file"),
        (lambda: Problem("q", "1", kind="letter"), "kind 'letter' is not one of"),
        (lambda: load(5), "cannot load problems from a int; expected a ProbeSet"),
        (lambda: load("/nonexistent/p.jsonl"), "/nonexistent/p.jsonl: no such file or directory; expected"),
        (lambda: load("synthetic:abc"), "N must be a positive integer"),
        (lambda: load("synthetic:0"), "N must be a positive integer"),
        (lambda: load("synthetic:5:maybe"), "unknown synthetic option 'maybe'"),
        (lambda: load([]), "no problems found"),
        (lambda: load("synthetic", format="xml"), "unknown problem format 'xml'"),
    ],
)
def test_constructor_and_load_errors(call, message: str) -> None:
    with pytest.raises(ProblemFormatError) as info:
        call()
    assert message in str(info.value)


# ---------------------------------------------------------------------------------------------
# Adapters
# ---------------------------------------------------------------------------------------------

ADAPTER_CASES = [
    # (id, record, format, expected (question, answer, kind, choices))
    (
        "gsm8k strips calculator annotations",
        GOOD_GSM,
        "auto",
        ("Sam has 3 apples. How many?", "3", "number", ()),
    ),
    ("gsm8k thousands", {"question": "q?", "answer": "x\n#### 1,234"}, "gsm8k", ("q?", "1234", "number", ())),
    ("gsm8k money decimal", {"question": "q?", "answer": "#### $2.50"}, "auto", ("q?", "2.5", "number", ())),
    (
        "aqua options",
        {"question": "q?", "options": ["A)32400", "B)6000", "C)600"], "rationale": "...", "correct": "C"},
        "auto",
        ("q?", "C", "choice", ("32400", "6000", "600")),
    ),
    (
        "options other letter styles",
        {"question": "q?", "options": ["(A) 1 m", "B. 2 m", "c: 3 m"], "correct": "(b)"},
        "choice",
        ("q?", "B", "choice", ("1 m", "2 m", "3 m")),
    ),
    (
        "choices with letter answer",
        {"question": "q?", "choices": ["red", "green", "blue"], "answer": "C"},
        "auto",
        ("q?", "C", "choice", ("red", "green", "blue")),
    ),
    (
        "choices with index answer",
        {"question": "q?", "choices": ["red", "green", "blue"], "answer": 0},
        "auto",
        ("q?", "A", "choice", ("red", "green", "blue")),
    ),
    (
        "choices with answer text",
        {"question": "q?", "choices": ["red", "green", "blue"], "answer": "Green"},
        "choice",
        ("q?", "B", "choice", ("red", "green", "blue")),
    ),
    (
        "generic with choices is choice",
        {"question": "q?", "choices": ["1", "2"], "answer": "B"},
        "generic",
        ("q?", "B", "choice", ("1", "2")),
    ),
    ("generic number", {"question": "q?", "answer": "72.0"}, "auto", ("q?", "72", "number", ())),
    ("generic int", {"question": "q?", "answer": 14}, "generic", ("q?", "14", "number", ())),
    ("generic float", {"question": "q?", "answer": 0.5}, "generic", ("q?", "0.5", "number", ())),
    (
        "generic number with unit",
        {"question": "q?", "answer": "14 coins"},
        "auto",
        ("q?", "14", "number", ()),
    ),
    ("generic money", {"question": "q?", "answer": "$1,500"}, "auto", ("q?", "1500", "number", ())),
    ("generic fraction", {"question": "q?", "answer": "3/4"}, "auto", ("q?", "0.75", "number", ())),
    (
        "generic text",
        {"question": " q? ", "answer": "The Eiffel Tower"},
        "auto",
        ("q?", "eiffel tower", "text", ()),
    ),
    (
        "generic text with a number",
        {"question": "q?", "answer": "World War 2"},
        "auto",
        ("q?", "world war 2", "text", ()),
    ),
]


@pytest.mark.parametrize(
    "record, format, expected", [c[1:] for c in ADAPTER_CASES], ids=[c[0] for c in ADAPTER_CASES]
)
def test_adapters(record: dict, format: str, expected: tuple) -> None:
    (p,) = ProbeSet.from_records([record], format=format, source="src")
    assert (p.question, p.answer, p.kind, p.choices) == expected
    assert p.id == "src:1"


def test_auto_picks_per_record_and_ids() -> None:
    records = [
        GOOD_GSM,
        {"question": "mc?", "options": ["A)1", "B)2"], "correct": "B", "id": "mc-1"},
        {"question": "free?", "answer": "Paris", "id": 17},
    ]
    ps = ProbeSet.from_records(records, source="mixed")
    assert [p.kind for p in ps] == ["number", "choice", "text"]
    assert [p.id for p in ps] == ["mixed:1", "mc-1", "17"]
    assert ps.source == "mixed"


def test_field_map() -> None:
    records = [{"problem": "How many?", "solution": "so 2\n#### 2", "uid": "u1"}]
    (p,) = ProbeSet.from_records(
        records, field_map={"problem": "question", "solution": "answer", "uid": "id"}
    )
    assert (p.question, p.answer, p.kind, p.id) == ("How many?", "2", "number", "u1")


def test_from_records_accepts_generator() -> None:
    ps = ProbeSet.from_records({"question": f"q{i}?", "answer": str(i)} for i in range(3))
    assert [p.answer for p in ps] == ["0", "1", "2"]


# ---------------------------------------------------------------------------------------------
# Reference chains
# ---------------------------------------------------------------------------------------------

REFERENCE_CASES = [
    # (id, record, format, expected reference_chain)
    ("gsm8k", GOOD_GSM, "auto", "He has 1+2 = 3.\nThe answer is 3."),
    ("gsm8k reasoning-free", {"question": "q?", "answer": "#### 5"}, "auto", "\nThe answer is 5."),
    (
        "aqua rationale stating its letter",
        {"question": "q?", "options": ["A)1", "B)2"], "rationale": " 1+1 = 2\nAnswer: B ", "correct": "B"},
        "auto",
        "1+1 = 2\nAnswer: B",
    ),
    (
        "rationale without the answer gets the closing sentence",
        {"question": "q?", "options": ["A)1", "B)2"], "rationale": "1+1 = 2", "correct": "B"},
        "auto",
        "1+1 = 2\nThe answer is B.",
    ),
    (
        "generic chain",
        {"question": "q?", "chain": "3 + 4 = 7. The answer is 7.", "answer": "7"},
        "generic",
        "3 + 4 = 7. The answer is 7.",
    ),
    (
        "generic solution not read as its answer",
        {"question": "q?", "solution": "It is Paris.", "answer": "Paris"},
        "auto",
        "It is Paris.\nThe answer is paris.",
    ),
    (
        "chain wins over solution",
        {"question": "q?", "chain": "so 2", "solution": "x", "answer": "2"},
        "auto",
        "so 2",
    ),
    ("no chain field", {"question": "q?", "answer": "2"}, "auto", None),
    ("chain not a string", {"question": "q?", "chain": ["2"], "answer": "2"}, "auto", None),
]


@pytest.mark.parametrize(
    "record, format, expected", [c[1:] for c in REFERENCE_CASES], ids=[c[0] for c in REFERENCE_CASES]
)
def test_reference_chain(record: dict, format: str, expected: str | None) -> None:
    (p,) = ProbeSet.from_records([record], format=format)
    assert p.reference_chain == expected


def test_reference_chain_through_field_map() -> None:
    records = [{"q": "q?", "a": "2", "explanation": "1+1 = 2"}]
    (p,) = ProbeSet.from_records(records, field_map={"q": "question", "a": "answer", "explanation": "chain"})
    assert p.reference_chain == "1+1 = 2"


def test_reference_chain_takes_no_part_in_equality_or_repr() -> None:
    (p,) = ProbeSet.from_records([GOOD_GSM], source="src")
    plain = Problem(p.question, p.answer, id="src:1")
    assert plain.reference_chain is None and p.reference_chain is not None
    assert p == plain and hash(p) == hash(plain)
    assert "reference_chain" not in repr(p)
    with pytest.raises(ProblemFormatError, match="reference_chain must be a string or None, got int"):
        Problem("q", "1", reference_chain=3)


def test_problem_lives_in_its_own_module() -> None:
    assert Problem is problem_module.Problem
    assert Problem.__module__ == "faithcb.problem"


# ---------------------------------------------------------------------------------------------
# Files and datasets
# ---------------------------------------------------------------------------------------------


def test_from_jsonl_with_blank_lines(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "p.jsonl", [GOOD_GSM, "", {"question": "b?", "answer": "#### 5"}])
    ps = ProbeSet.from_jsonl(path)
    assert [p.answer for p in ps] == ["3", "5"]
    assert [p.id for p in ps] == [f"{path}:1", f"{path}:3"]  # physical line numbers
    assert ps.source == str(path)


def test_from_json_array_and_json_lines(tmp_path: Path) -> None:
    records = [GOOD_GSM, {"question": "b?", "options": ["A)1", "B)2"], "correct": "A"}]
    array = tmp_path / "array.json"
    array.write_text(json.dumps(records, indent=2))
    lines = _write_jsonl(tmp_path / "lines.json", records)
    a, b = ProbeSet.from_jsonl(array), ProbeSet.from_jsonl(lines)
    assert [(p.question, p.answer, p.kind) for p in a] == [(p.question, p.answer, p.kind) for p in b]
    assert [p.kind for p in a] == ["number", "choice"]


def test_utf8_bom(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"question": "caf\u00e9?", "answer": "1"}).encode() + b"\n")
    assert ProbeSet.from_jsonl(path)[0].question == "caf\u00e9?"


def test_from_dataset_and_load_from_disk(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(
        [{"problem": "a?", "solution": "#### 4"}, {"problem": "b?", "solution": "x #### 7"}]
    )
    fmap = {"problem": "question", "solution": "answer"}
    ps = ProbeSet.from_dataset(ds, field_map=fmap)
    assert [p.answer for p in ps] == ["4", "7"]
    assert load(ds, field_map=fmap)[1].answer == "7"

    ds.save_to_disk(str(tmp_path / "saved"))
    loaded = load(tmp_path / "saved", field_map=fmap)
    assert [p.question for p in loaded] == ["a?", "b?"]
    assert loaded.source == str(tmp_path / "saved")
    assert loaded[0].id == f"{tmp_path / 'saved'}:1"


def test_dataset_errors(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(
        [{"question": "a?", "answer": "#### 1"}, {"question": "b?", "answer": "x"}]
    )
    with pytest.raises(ProblemFormatError, match=r'<dataset> row 2: field "answer": no "####"'):
        ProbeSet.from_dataset(ds, format="gsm8k")
    dd = datasets.DatasetDict({"train": ds})
    with pytest.raises(ProblemFormatError, match=r"splits \['train'\]; pass one split"):
        ProbeSet.from_dataset(dd)
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ProblemFormatError, match=r"a DatasetDict with splits \['train'\]"):
        load(tmp_path / "dd")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ProblemFormatError, match="not a directory written by datasets save_to_disk"):
        load(tmp_path / "empty_dir")


# ---------------------------------------------------------------------------------------------
# load()
# ---------------------------------------------------------------------------------------------


def test_load_variants(tmp_path: Path) -> None:
    ps = ProbeSet.synthetic(4, seed=1)
    assert load(ps) is ps
    assert ProbeSet.load(ps) is ps
    problems = list(ps)
    assert list(load(problems)) == problems
    assert list(load(tuple(problems))) == problems
    assert load([GOOD_GSM])[0].answer == "3"
    path = _write_jsonl(tmp_path / "p.jsonl", [GOOD_GSM])
    assert load(path)[0].answer == "3"
    assert load(str(path)).source == str(path)


@pytest.mark.parametrize(
    "spec, n, keyed",
    [
        ("synthetic", 64, False),
        ("synthetic:10", 10, False),
        ("synthetic:10:key", 10, True),
        ("synthetic:3:true", 3, True),
    ],
)
def test_load_synthetic(spec: str, n: int, keyed: bool) -> None:
    ps = load(spec)
    assert len(ps) == n and ps.source == spec
    assert all(("(key: " in p.question) == keyed for p in ps)
    assert all(p.question.endswith(f"(key: {p.answer})") for p in ps if keyed)


def test_synthetic_classmethod() -> None:
    ps = ProbeSet.synthetic(5, seed=2, key="random")
    assert len(ps) == 5 and ps[0].id == "synthetic-2-0"
    assert list(ps) == list(ProbeSet.synthetic(5, seed=2, key="random"))


# ---------------------------------------------------------------------------------------------
# ProbeSet as a sequence, and sampling
# ---------------------------------------------------------------------------------------------


def test_sequence_protocol() -> None:
    ps = ProbeSet.synthetic(6)
    assert isinstance(ps, Sequence)
    assert len(ps) == 6
    assert ps[-1] == list(ps)[5]
    assert ps[1:3] == list(ps)[1:3]
    assert ps[0] in ps
    assert ps.index(ps[2]) == 2
    assert "6 problems" in repr(ps)


def test_sample_is_seeded_ordered_and_without_replacement() -> None:
    ps = ProbeSet.synthetic(50)
    a = ps.sample(10, seed=3)
    assert a == ps.sample(10, seed=3)
    assert a != ps.sample(10, seed=4)
    assert len({p.id for p in a}) == 10
    order = [int(p.id.rsplit("-", 1)[1]) for p in a]
    assert order == sorted(order)


@pytest.mark.parametrize("n", [None, 50, 51, 1000])
def test_sample_all(n: int | None) -> None:
    ps = ProbeSet.synthetic(50)
    assert ps.sample(n, seed=9) == list(ps)


def test_sample_zero_and_negative() -> None:
    ps = ProbeSet.synthetic(5)
    assert ps.sample(0, seed=0) == []
    with pytest.raises(ValueError, match="n must be >= 0"):
        ps.sample(-1, seed=0)


def test_sample_leaves_global_rng_untouched() -> None:
    ps = ProbeSet.synthetic(30)
    random.seed(99)
    before = random.getstate()
    ps.sample(10, seed=1)
    ProbeSet.synthetic(10, seed=5)
    assert random.getstate() == before


# ---------------------------------------------------------------------------------------------
# The real data files in the shared folder (skipped where absent; the package bundles only samples)
# ---------------------------------------------------------------------------------------------


def _shared(rel: str) -> Path:
    path = SHARED_DATA / rel
    if not path.is_file():
        pytest.skip(f"{path} not present (set FAITHCB_SHARED_DATA to the shared data folder)")
    return path


def test_real_gsm8k_train() -> None:
    path = _shared("gsm8k/train.jsonl")
    ps = ProbeSet.from_jsonl(path)
    assert len(ps) > 1000
    first = ps[0]
    assert first.answer == "72" and first.kind == "number"
    assert first.question.startswith("Natalia sold clips")
    assert all(p.kind == "number" for p in ps)
    assert not any("<<" in p.question for p in ps)
    assert ps.source == str(path)


def _recipe_chain_before(record: dict, problem: Problem) -> str:
    """How recipes/common.py's ``chain_of`` built a training chain from a record before the
    reference chain existed (kept here, verbatim in effect, to pin the reference chain to it)."""
    raw = record.get("answer")
    if isinstance(raw, str) and "####" in raw:
        reasoning = re.sub(r"<<[^<>]*>>", "", raw.rsplit("####", 1)[0]).strip()
        return reasoning + f"\nThe answer is {problem.answer}."
    found = next(
        record[f] for f in ("chain", "rationale", "reasoning", "solution") if isinstance(record.get(f), str)
    )
    chain = found.strip()
    if extract_answer(chain, problem.kind) != problem.answer:
        chain = f"{chain}\nThe answer is {problem.answer}."
    return chain


@pytest.mark.parametrize("rel", ["gsm8k/train.jsonl", "aqua/dev.json"])
def test_real_reference_chains_equal_the_recipes_chains(rel: str) -> None:
    path = _shared(rel)
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    ps = ProbeSet.from_jsonl(path)
    assert len(ps) == len(records)
    for record, p in zip(records, ps, strict=True):
        assert p.reference_chain == _recipe_chain_before(record, p), p.id
    if rel.startswith("gsm8k"):
        assert ps[0].reference_chain == (
            "Natalia sold 48/2 = 24 clips in May.\n"
            "Natalia sold 48+24 = 72 clips altogether in April and May.\n"
            "The answer is 72."
        )


def test_real_aqua_dev() -> None:
    path = _shared("aqua/dev.json")
    ps = ProbeSet.from_jsonl(path)  # a .json file holding one object per line
    assert len(ps) > 100
    assert all(p.kind == "choice" and p.answer in "ABCDE" and len(p.choices) == 5 for p in ps)
    first = ps[0]
    assert first.answer == "A"
    assert first.choices == ("32400", "6000", "600", "60000", "10")


def test_real_files_through_load() -> None:
    path = _shared("gsm8k/train.jsonl")
    assert load(str(path))[0].answer == "72"


# ---------------------------------------------------------------------------------------------
# Malformed problem files: one line naming the file (and the line where there is one), through
# the Python API and `faithcb eval --problems`, never a traceback (issue 19)
# ---------------------------------------------------------------------------------------------

GOOD_LINE = json.dumps({"question": "Sam has 3 apples and gets 2. How many?", "answer": "5"})


def _lines(*lines: str) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


def _saved_dataset_dir(files: dict[str, str]):
    def build(path: Path) -> None:
        path.mkdir()
        for name, text in files.items():
            (path / name).write_text(text)

    return build


# (id, what goes at the path: bytes for a file, a callable building a directory; the expected
# message with {path} for the path given)
MALFORMED_FILES = [
    ("empty file", b"", "{path}: no problems found"),
    ("only whitespace", b" \n\t\n\n", "{path}: no problems found"),
    ("wrong JSON on line 7", _lines(*[GOOD_LINE] * 6, '{"question": "q?" "answer": "1"}', GOOD_LINE),
     "{path} line 7: invalid JSON (Expecting ',' delimiter, column 19)"),
    ("last line cut mid-write", _lines(GOOD_LINE, GOOD_LINE[:25]), "{path} line 2: invalid JSON"),
    ("JSON array cut off", b'[\n  {"question": "q?", "answer": "1"},\n  {"question": \n',
     "{path} line 4: invalid JSON array"),
    ("empty JSON array", b"[]", "{path}: no problems found"),
    ("object spread over lines", b'{\n  "question": "q?",\n  "answer": "1"\n}\n',
     "{path} line 1: invalid JSON (Expecting property name"),
    ("a line that is a list", _lines(GOOD_LINE, "[1, 2]"),
     "{path} line 2: expected an object with a question and an answer, got list"),
    ("a line that is a string", _lines('"What is 2+2?"'), "{path} line 1: expected an object"),
    ("a line that is null", _lines(GOOD_LINE, GOOD_LINE, "null"), "{path} line 3: expected an object"),
    ("missing question", _lines(GOOD_LINE, json.dumps({"answer": "4"})), '{path} line 2: field "question": missing'),
    ("missing answer", _lines(json.dumps({"question": "q?"})), '{path} line 1: field "answer": missing'),
    ("missing both fields", _lines(json.dumps({"id": "a"})), '{path} line 1: field "question": missing'),
    ("empty question", _lines(json.dumps({"question": "  ", "answer": "4"})), '{path} line 1: field "question": empty'),
    ("answer a list", _lines(json.dumps({"question": "q?", "answer": [4]})),
     '{path} line 1: field "answer": expected a string or number, got list'),
    ("GSM8K answer without a number", _lines(json.dumps({"question": "q?", "answer": "so #### many"})),
     '{path} line 1: field "answer": cannot read a number'),
    ("choice letter out of range", _lines(json.dumps({"question": "q?", "choices": ["a", "b"], "correct": "D"})),
     "{path} line 1: field \"correct\": choice letter 'D' out of range A-B"),
    ("options without letters", _lines(json.dumps({"question": "q?", "options": ["32", "64"], "correct": "A"})),
     '{path} line 1: field "options": option 1'),
    ("duplicate ids", _lines(*(json.dumps({"id": i, "question": "q?", "answer": "1"}) for i in "abcdb")),
     "{path} line 5: duplicate id 'b' (first used at line 2)"),
    ("duplicate ids in a JSON array", json.dumps([{"id": 7, "question": "q?", "answer": "1"}] * 2).encode(),
     "{path} item 2: duplicate id '7' (first used at item 1)"),
    ("a binary file", bytes(range(256)) * 4, "{path} line 2: not UTF-8 text (byte 0x80 at offset 128)"),
    ("gzip-compressed lines", b"\x1f\x8b\x08\x00" + bytes(range(200, 256)), "{path} line 1: not UTF-8 text"),
    ("Latin-1 text on line 3", _lines(GOOD_LINE, GOOD_LINE) + '{"question": "caf\xe9?", "answer": "1"}\n'.encode("latin-1"),
     "{path} line 3: not UTF-8 text (byte 0xe9"),
    ("UTF-16 text", (GOOD_LINE + "\n").encode("utf-16"), "{path} line 1: not UTF-8 text (byte 0xff at offset 0)"),
    ("an integer over the digit limit", _lines(GOOD_LINE, '{"question": "q?", "answer": ' + "9" * 5000 + "}"),
     "{path} line 2: invalid JSON (Exceeds the limit (4300 digits) for integer string conversion"),
    ("nesting deeper than the recursion limit", _lines(GOOD_LINE, '{"question": ' + "[" * 100_000),
     "{path} line 2: invalid JSON (nested too deeply)"),
    ("a JSON array nested too deeply", b"[" * 100_000, "{path}: invalid JSON array (nested too deeply)"),
    ("an empty directory", _saved_dataset_dir({}), "{path}: not a directory written by datasets save_to_disk"),
    ("a directory of other files", _saved_dataset_dir({"notes.txt": "hello"}),
     "{path}: not a directory written by datasets save_to_disk"),
    ("a saved dataset with a broken state.json", _saved_dataset_dir({"state.json": "{bad", "dataset_info.json": "{}"}),
     "{path}: not a directory written by datasets save_to_disk"),
    ("a saved dataset whose state.json lacks its keys", _saved_dataset_dir({"state.json": "{}", "dataset_info.json": "{}"}),
     "{path}: not a directory written by datasets save_to_disk ('_data_files')"),
    ("a saved dataset whose metadata is a list", _saved_dataset_dir({"state.json": "[1]", "dataset_info.json": "[]"}),
     "{path}: not a directory written by datasets save_to_disk"),
]


def _malformed(tmp_path: Path, content) -> Path:
    path = tmp_path / "problems.jsonl"
    if callable(content):
        content(path)
    else:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("content, expected", [c[1:] for c in MALFORMED_FILES], ids=[c[0] for c in MALFORMED_FILES])
def test_malformed_problem_file_is_one_line_naming_file_and_line(tmp_path: Path, content, expected: str) -> None:
    path = _malformed(tmp_path, content)
    with pytest.raises(ProblemFormatError) as info:  # any other exception fails the test with its traceback
        ProbeSet.load(str(path))
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(expected.format(path=path)), message


@pytest.mark.parametrize("content, expected", [c[1:] for c in MALFORMED_FILES], ids=[c[0] for c in MALFORMED_FILES])
def test_malformed_problem_file_through_the_cli_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content, expected: str
) -> None:
    from faithcb import cli

    path = _malformed(tmp_path, content)
    # Problems are read before any model is loaded, so the embedded model's absence does not matter.
    assert cli.main(["eval", "--problems", str(path), "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith("faithcb eval: error: " + expected.format(path=path)), err


def test_malformed_problem_file_through_the_installed_command(tmp_path: Path) -> None:
    """The console script itself (not cli.main): a binary file gives one line on stderr and status 2."""
    import shutil
    import subprocess

    command = shutil.which("faithcb")
    if command is None:
        pytest.skip("the faithcb console script is not on PATH")
    path = _malformed(tmp_path, bytes(range(256)))
    done = subprocess.run([command, "eval", "--problems", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [f"faithcb eval: error: {path} line 2: not UTF-8 text (byte 0x80 at offset 128); "
                                        "problems are JSON lines or a JSON array"]


def test_a_line_separator_inside_a_json_string_does_not_split_the_record(tmp_path: Path) -> None:
    """JSON allows a raw U+2028 inside a string; lines end at "\\n" only, so the record loads and
    later lines keep their numbers."""
    record = json.dumps({"question": "Two lines\u2028of question?", "answer": "4"}, ensure_ascii=False)
    path = tmp_path / "p.jsonl"
    path.write_text(record + "\n" + "{broken\n", encoding="utf-8")
    with pytest.raises(ProblemFormatError, match=r"p\.jsonl line 2: invalid JSON"):
        ProbeSet.from_jsonl(path)
    path.write_text(record + "\n", encoding="utf-8")
    assert ProbeSet.from_jsonl(path)[0].question == "Two lines\u2028of question?"


# ---------------------------------------------------------------------------------------------
# Named problem sets: samples bundled as package data (offline), and hf:<id>[:config][:split]
# through `datasets` (only its error path here: the tests never reach the network) (issue 23)
# ---------------------------------------------------------------------------------------------

PACKAGE = Path(__file__).resolve().parents[1] / "faithcb"


@pytest.mark.parametrize(
    "spec, canonical, n, kind",
    [("gsm8k", "gsm8k:train", 500, "number"), ("gsm8k:train", "gsm8k:train", 500, "number"),
     ("aqua", "aqua:dev", 254, "choice"), ("aqua:dev", "aqua:dev", 254, "choice")],
)
def test_named_sets_load_offline_from_the_package(spec: str, canonical: str, n: int, kind: str) -> None:
    ps = load(spec)
    assert ps.source == canonical and len(ps) == n
    assert all(p.kind == kind for p in ps)
    # Ids are the source's line numbers under the canonical name, whichever way the set was named.
    assert [p.id for p in ps[:2]] == [f"{canonical}:1", f"{canonical}:2"]
    assert all(p.reference_chain for p in ps)  # the recipes train on these
    assert list(ProbeSet.load(spec)) == list(ps)


def test_named_sets_are_the_first_problems_of_the_sources_in_order() -> None:
    gsm8k, aqua = load("gsm8k"), load("aqua")
    assert gsm8k[0].question.startswith("Natalia sold clips") and gsm8k[0].answer == "72"
    assert aqua[0].answer == "A" and aqua[0].choices == ("32400", "6000", "600", "60000", "10")


@pytest.mark.parametrize("rel, bundled, count", [("gsm8k/train.jsonl", "gsm8k", 500), ("aqua/dev.json", "aqua", None)])
def test_named_sets_equal_the_shared_files(rel: str, bundled: str, count: int | None) -> None:
    full = ProbeSet.from_jsonl(_shared(rel))
    sample = load(bundled)

    def content(p: Problem) -> tuple:  # all but the id's prefix (the source's name): the same line
        return p.question, p.answer, p.kind, p.choices, p.reference_chain, p.id.rsplit(":", 1)[1]

    assert [content(p) for p in sample] == [content(p) for p in full[: count or len(full)]]


def test_named_set_sample_is_seeded_like_any_set() -> None:
    assert load("gsm8k").sample(16, 0) == load("gsm8k:train").sample(16, 0)
    assert len({p.id for p in load("aqua").sample(16, 0)}) == 16


@pytest.mark.parametrize(
    "spec, message",
    [
        ("gsm8k:test", "gsm8k:test: split 'test' is not bundled (bundled: gsm8k:train); the full dataset loads "
                       "from the Hugging Face Hub when it is reachable: hf:openai/gsm8k:main:SPLIT with SPLIT one of train, test"),
        ("aqua:train", "aqua:train: split 'train' is not bundled (bundled: aqua:dev); the full dataset loads from the "
                       "Hugging Face Hub when it is reachable: hf:deepmind/aqua_rat:raw:SPLIT with SPLIT one of train, "
                       "validation, test"),
        ("gsm8", "gsm8: no such file or directory; did you mean the bundled set 'gsm8k'?; expected "),
        ("hf:", "'hf:': expected hf:<dataset id>[:config][:split], e.g. hf:openai/gsm8k:main:test"),
        ("hf:a/b:c:d:e", "'hf:a/b:c:d:e': expected hf:<dataset id>[:config][:split]"),
    ],
)
def test_named_set_errors(spec: str, message: str) -> None:
    with pytest.raises(ProblemFormatError) as info:
        load(spec)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_a_path_that_exists_wins_over_a_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_jsonl(tmp_path / "gsm8k", [{"question": "Mine?", "answer": "7"}])
    monkeypatch.chdir(tmp_path)
    mine = load("gsm8k")
    assert mine.source == "gsm8k" and [p.answer for p in mine] == ["7"]
    assert len(load("aqua")) == 254  # no such path here: the named set


def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Offline mode for this process: the environment and the flags `datasets` and
    `huggingface_hub` read from it once, at import; an empty cache, so nothing is found locally."""
    import datasets
    import huggingface_hub.constants

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))


def test_hub_set_offline_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _offline(monkeypatch, tmp_path)
    spec = "hf:faithcb-tests/no-such-dataset:main:test"
    with pytest.raises(ProblemFormatError) as info:
        load(spec)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{spec}: cannot load 'faithcb-tests/no-such-dataset' from the Hugging Face Hub ("), message
    assert message.endswith(
        "offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) and it is not in the local cache; "
        "bundled sets that work offline: gsm8k, aqua"
    ), message


@pytest.mark.parametrize(
    "spec, call, source",
    [
        ("hf:org/set:cfg:test", ("org/set", "cfg", "test"), "hf:org/set:cfg:test"),
        ("hf:org/set::test", ("org/set", None, "test"), "hf:org/set::test"),
        ("hf:org/set", ("org/set", None, None), "hf:org/set::only"),
    ],
)
def test_hub_spec_reaches_load_dataset(monkeypatch: pytest.MonkeyPatch, spec: str, call: tuple, source: str) -> None:
    """The spec's id, config and split are what `datasets.load_dataset` is asked for (stubbed: no
    network); a dataset with one split needs none named."""
    import datasets

    asked = []
    rows = datasets.Dataset.from_list([{"question": "Q1?", "answer": "5"}, {"question": "Q2?", "answer": "6"}])

    def fake_load_dataset(path, name=None, split=None):
        asked.append((path, name, split))
        return rows if split else datasets.DatasetDict({"only": rows})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ps = load(spec)
    assert asked == [call]
    assert ps.source == source and [p.id for p in ps] == [f"{source}:1", f"{source}:2"]


def test_hub_set_with_several_splits_asks_for_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    rows = datasets.Dataset.from_list([{"question": "Q?", "answer": "5"}])
    monkeypatch.setattr(datasets, "load_dataset", lambda path, name=None, split=None: datasets.DatasetDict(
        {"train": rows, "test": rows}))
    with pytest.raises(ProblemFormatError, match=r"^hf:org/set:cfg: the dataset has splits \['train', 'test'\]; "
                                                 r"name one, e.g. hf:org/set:cfg:train$"):
        load("hf:org/set:cfg")


def test_bundled_files_are_package_data_with_licences() -> None:
    """pyproject's package-data globs take every bundled file into a built wheel (a non-editable
    install reads them through importlib.resources), and each set ships its licence and attribution."""
    from faithcb.data import NAMED_SETS

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    globs = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["faithcb"]
    shipped = {p for pattern in globs for p in PACKAGE.glob(pattern) if p.is_file()}
    folder = PACKAGE / "problem_sets"
    on_disk = {p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert on_disk and on_disk <= shipped, sorted(str(p) for p in on_disk - shipped)
    readme = (folder / "README.md").read_text()
    for named in NAMED_SETS:
        assert (folder / named.name / named.filename).is_file()
        assert (folder / named.name / "LICENSE").is_file()
        assert f"`{named.name}/{named.filename}`" in readme
    assert "MIT License" in (folder / "gsm8k" / "LICENSE").read_text()
    assert "Apache License" in (folder / "aqua" / "LICENSE").read_text()
    assert "TERMS AND CONDITIONS" in (folder / "aqua" / "LICENSE-2.0.txt").read_text()


def test_named_sets_through_faith_problems_and_the_eval_help(capsys: pytest.CaptureFixture[str]) -> None:
    from dataclasses import fields

    from faithcb import cli
    from faithcb.config import FaithConfig
    from faithcb.preflight import load_problems

    problems = load_problems(FaithConfig(faith_problems="aqua").faith_problems, num_problems=4, seed=0)
    assert len(problems) == 4 and all(p.id.startswith("aqua:dev:") for p in problems)
    (help_text,) = [f.metadata["help"] for f in fields(FaithConfig) if f.name == "faith_problems"]
    with pytest.raises(SystemExit):
        cli.main(["eval", "--help"])
    eval_help = " ".join(capsys.readouterr().out.split())
    for text in (help_text, eval_help):
        assert "gsm8k" in text and "aqua" in text and "hf:<dataset id>[:config][:split]" in text
