"""Loading problems: the adapters for GSM8K "####", lettered multiple choice and generic records.

Every malformed input raises :class:`~faithcb.errors.ProblemFormatError` with a message that
names the source, the 1-based line (JSONL) or record number, and the field, e.g.
``problems.jsonl line 3: field "answer": no "####" final answer in GSM8K-style answer``.

Each problem keeps its record's worked solution as ``Problem.reference_chain`` when there is one:
GSM8K's reasoning lines (calculator annotations removed) with the "#### 72" line turned into
"The answer is 72.", or the first string field among "chain", "rationale" (AQuA), "reasoning" and
"solution", followed by "The answer is X." when ``extract_answer`` does not already read X from it.

:class:`~faithcb.problem.Problem` lives in :mod:`faithcb.problem` and is re-exported here.
"""

from __future__ import annotations

import difflib
import json
import os
import random
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, overload

from faithcb.answers import extract_answer, normalize_answer, normalize_choice, normalize_text, numbers_in
from faithcb.errors import ConfigError, ProblemFormatError
from faithcb.problem import Problem
from faithcb.tasks.arithmetic import make_problems

__all__ = ["FORMATS", "NAMED_SETS", "NamedSet", "Problem", "ProbeSet", "is_named", "load", "named_sets_help"]

FORMATS = ("auto", "gsm8k", "choice", "generic")

_CALCULATOR = re.compile(r"<<[^<>]*>>")
# Fields that hold a record's worked solution (AQuA: "rationale"); the first string one is used.
_CHAIN_FIELDS = ("chain", "rationale", "reasoning", "solution")
# "A)32400", "(B) 6000", "C. 600", "D: 60000"
_LETTERED = re.compile(r"^\s*\(?\s*([A-Za-z])\s*[).:]\s*(.*)$", re.DOTALL)
_SYNTHETIC = re.compile(r"^synthetic(?::(?P<n>[^:]*))?(?::(?P<key>[^:]*))?$")
_SYNTHETIC_KEYS = {"key": "true", "true": "true", "random": "random", "none": "none"}
_DEFAULT_SYNTHETIC_N = 64


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


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise ProblemFormatError(f"unknown problem format {format!r}; expected one of {', '.join(FORMATS)}")


def _parse_records(
    rows: Iterable[tuple[int, Any]],
    *,
    format: str,
    field_map: Mapping[str, str] | None,
    source: str,
    unit: str,
) -> list[Problem]:
    _check_format(format)
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


def _decode(path: Path | str, data: bytes) -> str:
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


def _read_json_rows(path: Path) -> tuple[list[tuple[int, Any]], str]:
    """Records with their 1-based line (JSON lines) or item number (JSON array), and that unit."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ProblemFormatError(f"{path}: cannot read problems: {e.strerror or e}") from None
    return _json_rows(path, _decode(path, data))


def _json_rows(path: Path | str, content: str) -> tuple[list[tuple[int, Any]], str]:
    """:func:`_read_json_rows` on text already read; ``path`` only names the source in errors."""
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


class ProbeSet(Sequence[Problem]):
    """An immutable, non-empty sequence of problems plus where they came from."""

    def __init__(self, problems: Iterable[Problem], source: str = "<memory>") -> None:
        self._problems: tuple[Problem, ...] = tuple(problems)
        self.source = source
        if not self._problems:
            raise ProblemFormatError(f"{source}: no problems found")
        for i, p in enumerate(self._problems):
            if not isinstance(p, Problem):
                raise ProblemFormatError(
                    f"{source} record {i + 1}: expected a Problem, got {type(p).__name__}"
                )

    @overload
    def __getitem__(self, index: int) -> Problem: ...
    @overload
    def __getitem__(self, index: slice) -> list[Problem]: ...
    def __getitem__(self, index: int | slice) -> Problem | list[Problem]:
        if isinstance(index, slice):
            return list(self._problems[index])
        return self._problems[index]

    def __len__(self) -> int:
        return len(self._problems)

    def __iter__(self) -> Iterator[Problem]:
        return iter(self._problems)

    def __repr__(self) -> str:
        return f"ProbeSet({len(self)} problems from {self.source!r})"

    def sample(self, n: int | None, seed: int) -> list[Problem]:
        """``n`` problems drawn without replacement, in their original order.

        Uses a private ``random.Random(seed)``: the global RNG that training depends on is left
        untouched. ``n`` None or at least ``len(self)`` gives every problem.
        """
        if n is None or n >= len(self):
            return list(self._problems)
        if n < 0:
            raise ConfigError(f"n must be >= 0 or None, got {n}")
        picked = sorted(random.Random(seed).sample(range(len(self)), n))
        return [self._problems[i] for i in picked]

    # -- constructors --------------------------------------------------------------------------

    @classmethod
    def from_records(
        cls,
        records: Iterable[Mapping[str, Any]],
        *,
        format: str = "auto",
        field_map: Mapping[str, str] | None = None,
        source: str = "<list>",
    ) -> ProbeSet:
        """Problems from dicts. ``format``: "auto" (per record), "gsm8k", "choice" or "generic".

        ``field_map`` renames the records' fields to ours, e.g. ``{"problem": "question"}``.
        """
        rows = enumerate(records, start=1)
        return cls(
            _parse_records(rows, format=format, field_map=field_map, source=source, unit="record"), source
        )

    @classmethod
    def from_jsonl(
        cls, path: str | os.PathLike[str], *, format: str = "auto", field_map: Mapping[str, str] | None = None
    ) -> ProbeSet:
        """Problems from a JSON-lines file or a JSON array file (.jsonl or .json)."""
        p = Path(path)
        source = str(path)
        if not p.is_file():
            raise ProblemFormatError(f"{source}: no such file")
        rows, unit = _read_json_rows(p)
        return cls(_parse_records(rows, format=format, field_map=field_map, source=source, unit=unit), source)

    @classmethod
    def from_dataset(
        cls,
        ds: Any,
        *,
        format: str = "auto",
        field_map: Mapping[str, str] | None = None,
        source: str | None = None,
    ) -> ProbeSet:
        """Problems from a ``datasets.Dataset`` (one split), one row per problem."""
        if not hasattr(ds, "column_names") or isinstance(ds.column_names, Mapping):
            splits = list(ds.keys()) if isinstance(ds, Mapping) else []
            hint = f" with splits {splits}; pass one split, e.g. ds[{splits[0]!r}]" if splits else ""
            raise ProblemFormatError(f"expected a datasets.Dataset, got {type(ds).__name__}{hint}")
        if source is None:
            name = getattr(getattr(ds, "info", None), "dataset_name", None)
            source = f"<dataset {name}>" if name else "<dataset>"
        rows = enumerate(ds, start=1)
        return cls(
            _parse_records(rows, format=format, field_map=field_map, source=source, unit="row"), source
        )

    @classmethod
    def synthetic(cls, n: int, seed: int = 0, **kwargs: Any) -> ProbeSet:
        """``n`` built-in arithmetic problems (see :func:`faithcb.tasks.arithmetic.make_problems`)."""
        return cls(make_problems(n, seed, **kwargs), source=f"synthetic:{n}")

    @classmethod
    def load(cls, spec: Any, *, format: str = "auto", field_map: Mapping[str, str] | None = None) -> ProbeSet:
        """A ProbeSet from whatever the user has; see :func:`load`."""
        return load(spec, format=format, field_map=field_map)


# ---------------------------------------------------------------------- named sets
@dataclass(frozen=True)
class NamedSet:
    """A problem set bundled in the package (``faithcb/problem_sets/<name>/<filename>``), loaded by name.

    The files are the sources' own records under their own licences (LICENSE beside each file,
    attribution in ``faithcb/problem_sets/README.md``), so a fresh install has real problems offline.
    """

    name: str
    split: str
    filename: str
    summary: str  # what a user picks it for, shown in --help
    hub: str  # the full dataset on the Hugging Face Hub, as an "hf:" spec without its split
    hub_splits: tuple[str, ...]

    @property
    def spec(self) -> str:
        """The canonical name, ``<name>:<split>``: the set's source and the prefix of its problem ids."""
        return f"{self.name}:{self.split}"


# The first set of each name is its default split.
NAMED_SETS: tuple[NamedSet, ...] = (
    NamedSet("gsm8k", "train", "train.jsonl", "the first 500 problems of GSM8K train, numeric answers, MIT licence",
             "hf:openai/gsm8k:main", ("train", "test")),
    NamedSet("aqua", "dev", "dev.json", "all 254 problems of AQuA-RAT dev, multiple choice A-E, Apache-2.0",
             "hf:deepmind/aqua_rat:raw", ("train", "validation", "test")),
)
_NAMED = re.compile(r"^(?P<name>[a-z0-9_]+)(?::(?P<split>[^:]*))?$")
_HUB = re.compile(r"^hf:(?P<id>[^:]+)(?::(?P<config>[^:]*))?(?::(?P<split>[^:]*))?$")
HUB_SPEC = "hf:<dataset id>[:config][:split]"


def named_sets_help() -> str:
    """One phrase per bundled set and the hub form, for ``--help`` texts and error messages."""
    sets = "; ".join(f"{s.name}: {s.summary}" for s in NAMED_SETS if s is _default_split(s.name))
    return f"a bundled set that works offline ({sets}), {HUB_SPEC} (Hugging Face Hub, needs the network)"


def _default_split(name: str) -> NamedSet | None:
    return next((s for s in NAMED_SETS if s.name == name), None)


def is_named(spec: str) -> bool:
    """True when ``spec`` names a bundled set (``gsm8k``, ``aqua:dev``, also with a split that is not
    bundled, which then fails to load with its own message) or a hub dataset (``hf:...``)."""
    m = _NAMED.match(spec)
    return spec.startswith("hf:") or (m is not None and _default_split(m.group("name")) is not None)


def _load_named(spec: str, *, format: str, field_map: Mapping[str, str] | None) -> ProbeSet:
    m = _NAMED.match(spec)
    assert m is not None  # is_named said so
    name, split = m.group("name"), m.group("split")
    found = _default_split(name) if split is None else next(
        (s for s in NAMED_SETS if s.name == name and s.split == split), None
    )
    if found is None:
        bundled = ", ".join(s.spec for s in NAMED_SETS if s.name == name)
        default = _default_split(name)
        assert default is not None
        raise ProblemFormatError(
            f"{spec}: split {split!r} is not bundled (bundled: {bundled}); the full dataset loads from the "
            f"Hugging Face Hub when it is reachable: {default.hub}:SPLIT with SPLIT one of {', '.join(default.hub_splits)}"
        )
    # Read through importlib.resources: the set is package data, wherever faithcb is installed.
    resource = resources.files("faithcb") / "problem_sets" / found.name / found.filename
    try:
        data = resource.read_bytes()
    except OSError as e:
        raise ProblemFormatError(
            f"{found.spec}: the bundled file problem_sets/{found.name}/{found.filename} is missing from this "
            f"installation of faithcb ({e.strerror or e}); reinstall faithcb"
        ) from None
    rows, unit = _json_rows(found.spec, _decode(found.spec, data))
    # The canonical spec as source, so ids read "gsm8k:train:1" whichever way the set was named.
    return ProbeSet(
        _parse_records(rows, format=format, field_map=field_map, source=found.spec, unit=unit), found.spec
    )


def _load_hub(spec: str, *, format: str, field_map: Mapping[str, str] | None) -> ProbeSet:
    m = _HUB.match(spec)
    if m is None:
        raise ProblemFormatError(f"{spec!r}: expected {HUB_SPEC}, e.g. hf:openai/gsm8k:main:test")
    dataset_id, config, split = m.group("id"), m.group("config") or None, m.group("split") or None
    # Imported lazily: `datasets` is slow to import and only this path and saved datasets need it.
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, config, split=split)
    except Exception as e:  # noqa: BLE001
        # Offline, unreachable, no such dataset, config or split: `datasets` raises each as a
        # different type (ConnectionError, DatasetNotFoundError, ValueError, ...); all mean "cannot load".
        detail = " ".join(str(e).split())[:300] or type(e).__name__
        why = (
            "offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) and it is not in the local cache"
            if datasets.config.HF_HUB_OFFLINE
            else "check the network and the id, config and split"
        )
        offline = ", ".join(dict.fromkeys(s.name for s in NAMED_SETS))
        raise ProblemFormatError(
            f"{spec}: cannot load {dataset_id!r} from the Hugging Face Hub ({type(e).__name__}: {detail}); "
            f"{why}; bundled sets that work offline: {offline}"
        ) from None
    if isinstance(ds, Mapping):  # no split named: a DatasetDict
        splits = list(ds.keys())
        if len(splits) != 1:
            raise ProblemFormatError(
                f"{spec}: the dataset has splits {splits}; name one, e.g. hf:{dataset_id}:{config or ''}:{splits[0]}"
            )
        split = splits[0]
        ds = ds[split]
    source = f"hf:{dataset_id}:{config or ''}:{split}"
    return ProbeSet.from_dataset(ds, format=format, field_map=field_map, source=source)


_ACCEPTED = (
    "a ProbeSet, a list of dicts or Problems, a datasets.Dataset, a path to a .jsonl/.json file, "
    'a directory written by datasets.Dataset.save_to_disk, "synthetic" / "synthetic:N" / "synthetic:N:key", '
    f"a bundled set ({', '.join(s.spec for s in NAMED_SETS)}; the split may be left out), or {HUB_SPEC}"
)


def _load_synthetic(spec: str, m: re.Match[str]) -> ProbeSet:
    n_text, key_text = m.group("n"), m.group("key")
    try:
        n = int(n_text) if n_text else _DEFAULT_SYNTHETIC_N
    except ValueError:
        raise ProblemFormatError(f'{spec!r}: N must be a positive integer in "synthetic:N"') from None
    if n < 1:
        raise ProblemFormatError(f'{spec!r}: N must be a positive integer in "synthetic:N"')
    key = "none"
    if key_text is not None:
        if key_text not in _SYNTHETIC_KEYS:
            raise ProblemFormatError(
                f"{spec!r}: unknown synthetic option {key_text!r}; expected one of {', '.join(_SYNTHETIC_KEYS)}"
            )
        key = _SYNTHETIC_KEYS[key_text]
    problems = ProbeSet.synthetic(n, key=key)
    return ProbeSet(problems, source=spec)


def load(spec: Any, *, format: str = "auto", field_map: Mapping[str, str] | None = None) -> ProbeSet:
    """Problems from ``spec``: a ProbeSet (returned as is), a list of dicts or Problems, a
    ``datasets.Dataset``, a .jsonl/.json path, a ``save_to_disk`` directory, "synthetic[:N[:key]]"
    (N defaults to 64; "key" appends the true answer as a key to each question), a bundled set by
    name ("gsm8k", "aqua", or with its split: "gsm8k:train", "aqua:dev"; see :data:`NAMED_SETS`), or
    "hf:<dataset id>[:config][:split]" from the Hugging Face Hub. A path that exists wins over a name.
    """
    _check_format(format)
    if isinstance(spec, ProbeSet):
        return spec
    if isinstance(spec, (list, tuple)):
        if spec and all(isinstance(p, Problem) for p in spec):
            return ProbeSet(spec, source="<list>")
        return ProbeSet.from_records(spec, format=format, field_map=field_map)
    if hasattr(spec, "column_names"):
        return ProbeSet.from_dataset(spec, format=format, field_map=field_map)
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        # A name is a name only where no such path exists: "./gsm8k" is always the path.
        if isinstance(text, str) and not Path(text).exists():
            m = _SYNTHETIC.match(text)
            if m is not None:
                return _load_synthetic(text, m)
            if text.startswith("hf:"):
                return _load_hub(text, format=format, field_map=field_map)
            if is_named(text):
                return _load_named(text, format=format, field_map=field_map)
        path = Path(text)
        if path.is_dir():
            return _load_saved_dataset(path, format=format, field_map=field_map)
        if path.is_file():
            return ProbeSet.from_jsonl(path, format=format, field_map=field_map)
        close = difflib.get_close_matches(text, sorted({s.name for s in NAMED_SETS}), n=1)
        hint = f"; did you mean the bundled set {close[0]!r}?" if close else ""
        raise ProblemFormatError(f"{text}: no such file or directory{hint}; expected {_ACCEPTED}")
    raise ProblemFormatError(f"cannot load problems from a {type(spec).__name__}; expected {_ACCEPTED}")


def _load_saved_dataset(path: Path, *, format: str, field_map: Mapping[str, str] | None) -> ProbeSet:
    # Imported lazily: `datasets` is slow to import and only this path needs it.
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001
        # `datasets` reports a directory it cannot read with whatever its parsing hit (KeyError,
        # AttributeError, ArrowInvalid, ...): any of them means "not a saved dataset".
        detail = " ".join(str(e).split()) or type(e).__name__
        raise ProblemFormatError(f"{path}: not a directory written by datasets save_to_disk ({detail})") from None
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds.keys())
        raise ProblemFormatError(
            f"{path}: a DatasetDict with splits {splits}; load one split, e.g. "
            f"ProbeSet.from_dataset(datasets.load_from_disk({str(path)!r})[{splits[0]!r}])"
        )
    return ProbeSet.from_dataset(ds, format=format, field_map=field_map, source=str(path))
