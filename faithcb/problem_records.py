"""Problem records to ``Problem``s: the formats (GSM8K "####", lettered multiple choice, generic) and
the JSON / JSONL reader that keeps line numbers for its errors.

Every malformed record raises :class:`~faithcb.errors.ProblemFormatError` with a message that
names the source, the 1-based line (JSONL) or record number, and the field, e.g.
``problems.jsonl line 3: field "answer": no "####" final answer in GSM8K-style answer``.
:mod:`faithcb.data` finds the sources (files, datasets, named sets) and builds ``ProbeSet``s.

Each problem keeps its record's worked solution as ``Problem.reference_chain`` when there is one:
GSM8K's reasoning lines (calculator annotations removed) with the "#### 72" line turned into
"The answer is 72.", or the first string field among "chain", "rationale" (AQuA), "reasoning" and
"solution", followed by "The answer is X." when ``extract_answer`` does not already read X from it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from faithcb.answers import extract_answer, normalize_answer, normalize_choice, normalize_text, numbers_in
from faithcb.errors import ProblemFormatError
from faithcb.problem import Problem

FORMATS = ("auto", "gsm8k", "choice", "generic")

_CALCULATOR = re.compile(r"<<[^<>]*>>")
# Fields that hold a record's worked solution (AQuA: "rationale"); the first string one is used.
_CHAIN_FIELDS = ("chain", "rationale", "reasoning", "solution")
# "A)32400", "(B) 6000", "C. 600", "D: 60000"
_LETTERED = re.compile(r"^\s*\(?\s*([A-Za-z])\s*[).:]\s*(.*)$", re.DOTALL)


class _RecordError(Exception):
    """Raised inside one record's parsing; the caller adds where it happened."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _strip_calculator(text: str) -> str:
    return _CALCULATOR.sub("", text)


def _get(record: Mapping[str, Any], field: str) -> Any:
    if field not in record or record[field] is None:
        raise _RecordError(field, "missing")
    return record[field]


def _question(record: Mapping[str, Any], *, calculator: bool = False) -> str:
    q = _get(record, "question")
    if not isinstance(q, str):
        raise _RecordError("question", f"expected a string, got {type(q).__name__}")
    if calculator:
        q = _strip_calculator(q)
    q = q.strip()
    if not q:
        raise _RecordError("question", "empty question")
    return q


_Parsed = tuple[str, str, str, tuple[str, ...], str | None]  # question, answer, kind, choices, chain


def _closing(answer: str) -> str:
    # The closing sentence of the synthetic chains, so every reference chain states its answer in
    # the form the probes' answer reader finds.
    return f"\nThe answer is {answer}."


def _reference_chain(record: Mapping[str, Any], answer: str, kind: str) -> str | None:
    """The record's worked solution (first string field of :data:`_CHAIN_FIELDS`), or None."""
    found = next((record[f] for f in _CHAIN_FIELDS if isinstance(record.get(f), str)), None)
    if found is None:
        return None
    chain = found.strip()
    if extract_answer(chain, kind) != answer:
        chain += _closing(answer)
    return chain


def _parse_gsm8k(record: Mapping[str, Any]) -> _Parsed:
    question = _question(record, calculator=True)
    raw = _get(record, "answer")
    if not isinstance(raw, str) or "####" not in raw:
        raise _RecordError("answer", 'no "####" final answer in GSM8K-style answer')
    final = _strip_calculator(raw.rsplit("####", 1)[1]).strip()
    answer = normalize_answer(final, "number")
    if answer is None:
        raise _RecordError("answer", f'cannot read a number from the "####" final answer {final!r}')
    # The reasoning lines with the "#### 72" line turned into a sentence (always added: GSM8K's
    # last reasoning line often states an intermediate number, not the answer).
    reasoning = _strip_calculator(raw.rsplit("####", 1)[0]).strip()
    return question, answer, "number", (), reasoning + _closing(answer)


def _parse_options(options: Any) -> tuple[str, ...]:
    if not isinstance(options, (list, tuple)) or not options:
        raise _RecordError("options", 'expected a non-empty list of lettered options like "A)32400"')
    texts = []
    for i, option in enumerate(options):
        expected = chr(ord("A") + i)
        m = _LETTERED.match(str(option))
        if m is None:
            raise _RecordError(
                "options", f'option {i + 1} ({str(option)[:40]!r}) has no letter; expected "{expected})..."'
            )
        if m.group(1).upper() != expected:
            raise _RecordError("options", f"option {i + 1} has letter {m.group(1)!r}, expected {expected!r}")
        texts.append(m.group(2).strip())
    return tuple(texts)


def _parse_choices(choices: Any) -> tuple[str, ...]:
    if not isinstance(choices, (list, tuple)) or not choices:
        raise _RecordError("choices", "expected a non-empty list of option texts")
    if len(choices) > 26:
        raise _RecordError("choices", f"{len(choices)} choices; at most 26 (A-Z) are supported")
    return tuple(str(c).strip() for c in choices)


def _choice_letter(value: Any, field: str, choices: tuple[str, ...]) -> str:
    n = len(choices)
    last = chr(ord("A") + n - 1)
    if isinstance(value, bool):
        raise _RecordError(field, f"expected a letter A-{last} or an index, got {value!r}")
    if isinstance(value, int):
        if not 0 <= value < n:
            raise _RecordError(field, f"choice index {value} out of range 0-{n - 1}")
        return chr(ord("A") + value)
    text = str(value)
    letter = normalize_choice(text, n_choices=26)
    if letter is not None:
        if ord(letter) - ord("A") >= n:
            raise _RecordError(field, f"choice letter {letter!r} out of range A-{last}")
        return letter
    # Some sets give the correct option's text instead of its letter.
    wanted = normalize_text(text)
    for i, choice in enumerate(choices):
        if wanted is not None and normalize_text(choice) == wanted:
            return chr(ord("A") + i)
    raise _RecordError(field, f"cannot read a choice letter A-{last} from {text!r}")


def _parse_choice(record: Mapping[str, Any]) -> _Parsed:
    question = _question(record)
    if record.get("options") is not None:
        choices = _parse_options(record["options"])
    elif record.get("choices") is not None:
        choices = _parse_choices(record["choices"])
    else:
        raise _RecordError("options", 'missing (give lettered "options" or plain "choices")')
    if record.get("correct") is not None:
        field = "correct"
    elif record.get("answer") is not None:
        field = "answer"
    else:
        raise _RecordError("correct", 'missing (give the correct option letter in "correct" or "answer")')
    letter = _choice_letter(record[field], field, choices)
    return question, letter, "choice", choices, _reference_chain(record, letter, "choice")


def _looks_numeric(answer: str) -> bool:
    # One number and at most one word of unit around it ("14", "$1,500", "14 coins"), so that
    # "World War 2" stays a text answer.
    if len(numbers_in(answer)) != 1:
        return False
    residue = re.sub(r"[-\u2212]?\$?[\d.,/]+%?", " ", answer)
    return len(re.findall(r"[^\W\d_]+", residue)) <= 1


def _parse_generic(record: Mapping[str, Any]) -> _Parsed:
    if record.get("choices") is not None or record.get("options") is not None:
        return _parse_choice(record)
    question = _question(record)
    raw = _get(record, "answer")
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise _RecordError("answer", f"expected a string or number, got {type(raw).__name__}")
    text = str(raw).strip()
    if not text:
        raise _RecordError("answer", "empty answer")
    kind = "number" if _looks_numeric(text) else "text"
    answer = normalize_answer(text, kind)
    if answer is None:
        raise _RecordError("answer", f"cannot normalize {text!r} as a {kind} answer")
    return question, answer, kind, (), _reference_chain(record, answer, kind)


def _detect(record: Mapping[str, Any]) -> str:
    answer = record.get("answer")
    if isinstance(answer, str) and "####" in answer:
        return "gsm8k"
    if record.get("options") is not None or record.get("choices") is not None:
        return "choice"
    return "generic"


_PARSERS = {"gsm8k": _parse_gsm8k, "choice": _parse_choice, "generic": _parse_generic}


def check_format(format: str) -> None:
    if format not in FORMATS:
        raise ProblemFormatError(f"unknown problem format {format!r}; expected one of {', '.join(FORMATS)}")


def parse_records(
    rows: Iterable[tuple[int, Any]],
    *,
    format: str,
    field_map: Mapping[str, str] | None,
    source: str,
    unit: str,
) -> list[Problem]:
    check_format(format)
    fmap = dict(field_map or {})
    reverse = {ours: theirs for theirs, ours in fmap.items()}
    problems = []
    first_seen: dict[str, int] = {}  # id -> the record number that first used it
    for number, record in rows:
        where = f"{source} {unit} {number}"
        if not isinstance(record, Mapping):
            raise ProblemFormatError(
                f"{where}: expected an object with a question and an answer, got {type(record).__name__}"
            )
        mapped = {fmap.get(k, k): v for k, v in record.items()}
        try:
            fmt = _detect(mapped) if format == "auto" else format
            question, answer, kind, choices, chain = _PARSERS[fmt](mapped)
        except _RecordError as e:
            field = e.field
            if field is None:
                raise ProblemFormatError(f"{where}: {e.message}") from None
            named = f'"{field}"' if field not in reverse else f'"{field}" (from "{reverse[field]}")'
            raise ProblemFormatError(f"{where}: field {named}: {e.message}") from None
        pid = str(mapped["id"]) if mapped.get("id") is not None else f"{source}:{number}"
        # Records, histories and paired comparisons are keyed by id: two problems sharing one
        # would silently pair the wrong answers.
        if pid in first_seen:
            raise ProblemFormatError(f"{where}: duplicate id {pid!r} (first used at {unit} {first_seen[pid]})")
        first_seen[pid] = number
        problems.append(
            Problem(
                question=question, answer=answer, kind=kind, choices=choices, id=pid, reference_chain=chain
            )
        )
    return problems


def _json(text: str) -> Any:
    """``json.loads`` with every way it fails on bad input as a ValueError: JSONDecodeError, an
    integer over Python's digit limit (a plain ValueError), or nesting deeper than the recursion
    limit (RecursionError, which is not a ValueError)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _json_failure(e: ValueError) -> str:
    if isinstance(e, json.JSONDecodeError):
        return f"{e.msg}, column {e.colno}"
    return str(e).split(";")[0]  # the digit limit's advice to call sys.set_int_max_str_digits is not for users


def decode_text(path: Path | str, data: bytes) -> str:
    """The file's text (UTF-8, a BOM allowed); a binary or otherwise encoded file names the line
    of its first undecodable byte instead of raising UnicodeDecodeError."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ProblemFormatError(
            f"{path} line {line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
            "problems are JSON lines or a JSON array"
        ) from None


def read_json_rows(path: Path) -> tuple[list[tuple[int, Any]], str]:
    """Records with their 1-based line (JSON lines) or item number (JSON array), and that unit."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ProblemFormatError(f"{path}: cannot read problems: {e.strerror or e}") from None
    return json_rows(path, decode_text(path, data))


def json_rows(path: Path | str, content: str) -> tuple[list[tuple[int, Any]], str]:
    """:func:`read_json_rows` on text already read; ``path`` only names the source in errors."""
    if content.lstrip().startswith("["):
        try:
            array = _json(content)
        except json.JSONDecodeError as e:
            raise ProblemFormatError(f"{path} line {e.lineno}: invalid JSON array ({_json_failure(e)})") from None
        except ValueError as e:
            raise ProblemFormatError(f"{path}: invalid JSON array ({_json_failure(e)})") from None
        return list(enumerate(array, start=1)), "item"
    # JSON lines, whatever the suffix: some ".json" sets (AQuA's dev.json) hold one object a line.
    # Lines end at "\n" only (as in JSON Lines): str.splitlines would also split at U+2028 and other
    # separators JSON allows inside a string, rejecting a valid record and miscounting lines.
    rows = []
    for line_no, line in enumerate(content.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append((line_no, _json(line)))
        except ValueError as e:
            raise ProblemFormatError(f"{path} line {line_no}: invalid JSON ({_json_failure(e)})") from None
    return rows, "line"
