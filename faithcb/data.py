"""Loading problems: files, Hugging Face datasets, the bundled named sets and ``synthetic:N``, as a ``ProbeSet``.

Records are turned into problems by :mod:`faithcb.problem_records` (the GSM8K "####", lettered
multiple-choice and generic formats); every malformed input raises
:class:`~faithcb.errors.ProblemFormatError` naming the source, the 1-based line or record, and the field.

:class:`~faithcb.problem.Problem` lives in :mod:`faithcb.problem` and is re-exported here.
"""

from __future__ import annotations

import difflib
import os
import random
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, overload

from faithcb.errors import ConfigError, ProblemFormatError
from faithcb.problem import Problem
from faithcb.problem_records import (
    FORMATS,
    check_format,
    decode_text,
    json_rows,
    parse_records,
    read_json_rows,
)
from faithcb.tasks.arithmetic import make_problems

__all__ = ["FORMATS", "NAMED_SETS", "NamedSet", "Problem", "ProbeSet", "is_named", "load", "named_sets_help"]

_SYNTHETIC = re.compile(r"^synthetic(?::(?P<n>[^:]*))?(?::(?P<key>[^:]*))?$")
_SYNTHETIC_KEYS = {"key": "true", "true": "true", "random": "random", "none": "none"}
_DEFAULT_SYNTHETIC_N = 64


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
            parse_records(rows, format=format, field_map=field_map, source=source, unit="record"), source
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
        rows, unit = read_json_rows(p)
        return cls(parse_records(rows, format=format, field_map=field_map, source=source, unit=unit), source)

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
            parse_records(rows, format=format, field_map=field_map, source=source, unit="row"), source
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
    rows, unit = json_rows(found.spec, decode_text(found.spec, data))
    # The canonical spec as source, so ids read "gsm8k:train:1" whichever way the set was named.
    return ProbeSet(
        parse_records(rows, format=format, field_map=field_map, source=found.spec, unit=unit), found.spec
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
    check_format(format)
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
