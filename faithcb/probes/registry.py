"""The one registry of probes, and through it of every metric a round can report.

A probe class declares ``name``, ``metrics`` (``faithcb.metrics.Metric`` data) and a
``build(context)`` classmethod; ``register_probe`` adds it. Built-in probes are registered by
``faithcb.probes``; a user probe registered the same way (see docs/metrics.md, "Your own probe")
is aggregated, validated as a stop metric, shown by the CLI, the report and the W&B table
exactly like the built-in ones.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from faithcb.errors import ConfigError
from faithcb.metrics import CHAIN_METRICS, Metric

_PROBES: dict[str, type] = {}


@dataclass(frozen=True)
class ProbeContext:
    """What a probe may need at construction: the model's tokenizer and the round's settings."""

    encode: Callable[[str], list[int]]
    paraphraser: Any = None  # a callable str -> str, or None for the built-in rule paraphraser
    paraphrase_mode: str = "rest"  # "rest" or "continue" (faithcb.probes.paraphrase.MODES)
    max_chain_tokens: int = 128


def register_probe(cls: type, *, replace: bool = False) -> type:
    """Make ``cls`` available under ``cls.name`` (usable as a decorator). Returns ``cls``."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"register_probe: {cls!r} needs a `name` that is a Python identifier")
    metrics = getattr(cls, "metrics", None)
    if not metrics or not all(isinstance(m, Metric) for m in metrics):
        raise ConfigError(f"register_probe: probe {name!r} must declare `metrics`, a tuple of faithcb.metrics.Metric")
    for method in ("build", "prepare", "variants", "record"):
        if not callable(getattr(cls, method, None)):
            raise ConfigError(
                f"register_probe: probe {name!r} has no `{method}` method; see the Probe protocol (faithcb.probes.base)"
            )
    if getattr(cls, "summaries", None) is not None and not callable(cls.summaries):
        raise ConfigError(f"register_probe: probe {name!r} has a `summaries` that is not callable")
    if name in _PROBES and _PROBES[name] is not cls and not replace:
        raise ConfigError(f"register_probe: a probe named {name!r} is already registered (pass replace=True)")
    _PROBES[name] = cls
    return cls


def unregister_probe(name: str) -> None:
    """Remove a registered probe (tests; built-ins can be re-registered by re-importing)."""
    _PROBES.pop(name, None)


def probe_names() -> tuple[str, ...]:
    """Names of every registered probe, in registration order."""
    return tuple(_PROBES)


def probe_class(name: str) -> type:
    """The class registered as ``name``; a ``ConfigError`` with a did-you-mean otherwise."""
    try:
        return _PROBES[name]
    except KeyError:
        raise ConfigError(f"unknown probe {name!r}{did_you_mean(name, _PROBES)}; choose from {list(_PROBES)}") from None


def check_probe_names(names: Iterable[str], *, field: str = "probes") -> tuple[str, ...]:
    """``names`` as a tuple, each one registered; ``ConfigError`` naming ``field`` otherwise."""
    names = tuple(names)
    if not names:
        raise ConfigError(f"{field}: none given; choose from {list(_PROBES)}")
    for name in names:
        if name not in _PROBES:
            raise ConfigError(
                f"{field}: unknown probe {name!r}{did_you_mean(name, _PROBES)}; choose from {list(_PROBES)}"
            )
    return names


def probe_metrics(name: str) -> tuple[Metric, ...]:
    """The metrics probe ``name`` reports, with their qualified names."""
    return tuple(m.of(name) for m in probe_class(name).metrics)


Summaries = Callable[[Sequence[dict], int], tuple[dict[str, float], dict[str, list[float]]]]


def probe_summaries(name: str) -> Summaries | None:
    """Probe ``name``'s round-level summaries hook (see ``faithcb.probes.base.Probe``), or None."""
    return getattr(probe_class(name), "summaries", None)


def round_metrics(probes: Sequence[str] | None = None) -> list[Metric]:
    """Every metric a round with ``probes`` reports (all registered probes when None), in order."""
    names = probe_names() if probes is None else probes
    return list(CHAIN_METRICS) + [m for p in names for m in probe_metrics(p)]


def find_metric(name: str, probes: Sequence[str] | None = None) -> Metric:
    """The metric called ``name`` among ``round_metrics(probes)``; ``ConfigError`` with a did-you-mean."""
    known = {m.name: m for m in round_metrics(probes)}
    if name not in known:
        raise ConfigError(f"unknown metric {name!r}{did_you_mean(name, known)}; choose from {list(known)}")
    return known[name]


def in_registry_order(names: Iterable[str]) -> list[str]:
    """``names`` in the registry's order, then any name the registry does not know, sorted.

    The one ordering of metrics for every table (CLI, report, HTML): a metric logged by a probe
    this process has not registered still shows, last.
    """
    names = set(names)
    known = [m.name for m in round_metrics() if m.name in names]
    return known + sorted(names - set(known))


def metric_or_none(name: str) -> Metric | None:
    """The registered metric called ``name``, or None (for readers of histories with unknown names)."""
    return {m.name: m for m in round_metrics()}.get(name)


def build_probes(names: Sequence[str], context: ProbeContext) -> list[Any]:
    """Probe objects for ``names``, in order."""
    return [probe_class(name).build(context) for name in check_probe_names(names)]


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest of ``choices``, or ''."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


_DIRECTION_WORDS = {"higher": "**higher** = more coupled", "lower": "**lower** = more coupled", "neutral": "neutral"}


def metrics_markdown(probes: Sequence[str] | None = None) -> str:
    """The metric table of docs/metrics.md, generated from the registry (a test keeps them equal)."""
    lines = ["| name in logs (`faith/…`) | probe | kind | direction | meaning |", "|---|---|---|---|---|"]
    for m in round_metrics(probes):
        lines.append(f"| `{m.name}` | {m.probe or '—'} | {m.kind} | {_DIRECTION_WORDS[m.direction]} | {m.meaning} |")
    return "\n".join(lines) + "\n"
