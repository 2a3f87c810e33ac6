"""What a run's numbers depend on, recorded once per run, and which differences make two runs' numbers
incomparable.

``run_info`` gathers it: faithcb's version, the round's settings (every ``ProbeSettings`` field, and
the callback's whole ``FaithConfig`` when there is one), the resolved prompt layout, the model (name or
path, a hash of its config, its adapter, device and dtype), the problems (where they came from, how
many, a hash of the sampled ones) and the library versions. It is the first line of the history
(``faithcb.history``), the W&B run's config (``faithcb.wandb_sink``), the ``run_info`` of
``faithcb eval``'s summary, and the settings table of ``faithcb report``.

``incomparable(a, b)`` names what differs between two runs in a way that changes the numbers
themselves (a probe setting, the layout, the problems), as opposed to what is being compared (the
model) or what only changes speed (batch size, the generation path, shared-prefix scoring). No torch
here: the model is read through its attributes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

from faithcb.settings import ProbeSettings

# The distributions whose versions go into the record: faithcb and what computes its numbers.
PACKAGES = ("faithcb", "torch", "transformers", "trl", "peft", "accelerate", "datasets")
# Settings that change only how fast a round runs, not what it measures (greedy chains are
# token-identical across generation paths; shared-prefix scoring equals the plain path).
SPEED_ONLY = frozenset({"batch_size", "generation", "fast"})
RUN_INFO_VERSION = 1  # the layout of this record; a reader can tell later layouts apart


def package_versions(packages: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    """Installed versions (None for a package that is not installed), and Python's."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _plain(value: Any) -> Any:
    """A JSON-ready copy: dataclasses as dicts, tuples and sets as lists, callables by name."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if callable(value):  # a user paraphraser or splitter: its name is what can be recorded
        return f"<callable {getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__name__)}>"
    return str(value)


def _sha256(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def settings_dict(settings: ProbeSettings) -> dict[str, Any]:
    """Every ``ProbeSettings`` field, JSON-ready (the prompt style as a dict)."""
    return _plain(settings)


def problems_info(problems: Sequence, source: Any = None) -> dict[str, Any]:
    """Where the problems came from, how many were probed, and a hash of exactly those problems.

    The hash covers each problem's id, question, kind, choices and gold answer in probing order, so
    two runs on the same sample of the same set agree and any other sample or edit differs.
    """
    rows = [[getattr(p, "id", ""), p.question, p.kind, list(getattr(p, "choices", ())), p.answer] for p in problems]
    return {"source": describe_source(source, problems), "n": len(rows), "sha256": _sha256(rows)}


def describe_source(source: Any, problems: Any = None) -> str:
    """A problem source as text: the string given (a named set, a path, ``synthetic:N``), a
    ``ProbeSet``'s own source, or ``<in memory>`` for problems passed as objects."""
    if isinstance(source, str):
        return source
    found = getattr(source, "source", None) or getattr(problems, "source", None)
    return str(found) if found else "<in memory>"


def model_info(model: Any, *, name: str | None = None, adapter: str | None = None) -> dict[str, Any]:
    """The model's name or path, a hash of its architecture config, its PEFT adapter, device and dtype.

    The config hash leaves out ``_name_or_path`` and ``transformers_version``: the same weights'
    config copied elsewhere, or saved by another transformers version, hashes the same.
    """
    config = getattr(model, "config", None)
    config_dict = config.to_dict() if hasattr(config, "to_dict") else {}
    config_dict = {k: v for k, v in config_dict.items() if k not in ("_name_or_path", "transformers_version")}
    info: dict[str, Any] = {
        "name_or_path": name or getattr(config, "_name_or_path", None) or getattr(model, "name_or_path", None),
        "class": type(model).__name__,
        "config_sha256": _sha256(config_dict) if config_dict else None,
        "adapter": _adapter_info(model, adapter),
    }
    try:
        parameter = next(iter(model.parameters()))
        info["device"], info["dtype"] = str(parameter.device), str(parameter.dtype).replace("torch.", "")
    except (AttributeError, StopIteration, TypeError):
        info["device"] = info["dtype"] = None
    return info


def _adapter_info(model: Any, path: str | None) -> dict[str, Any] | None:
    peft_config = getattr(model, "peft_config", None)
    if not isinstance(peft_config, Mapping) or not peft_config:
        return {"path": path} if path else None
    active = getattr(model, "active_adapter", None)
    name = active if isinstance(active, str) else next(iter(peft_config))
    config = peft_config.get(name)
    config_dict = _plain(config.to_dict()) if hasattr(config, "to_dict") else {}
    return {
        "path": path,
        "name": name,
        "base_model": config_dict.get("base_model_name_or_path"),
        "peft_type": str(config_dict.get("peft_type", "")).replace("PeftType.", "") or None,
        "r": config_dict.get("r"),
        "config_sha256": _sha256(config_dict),
    }


def run_info(
    *, settings: ProbeSettings, problems: Sequence, source: Any = None, model: Any = None,
    model_name: str | None = None, adapter: str | None = None, layout: str | None = None,
    config: Any = None,
) -> dict[str, Any]:
    """The record of what produced a run's numbers (see the module docstring); JSON-ready."""
    info: dict[str, Any] = {
        "run_info_version": RUN_INFO_VERSION,
        "faithcb": package_versions(("faithcb",))["faithcb"],
        "settings": settings_dict(settings),
        "layout": layout or settings.style.layout,
        "problems": problems_info(problems, source),
        "model": model_info(model, name=model_name, adapter=adapter) if model is not None else
        {"name_or_path": model_name, "adapter": {"path": adapter} if adapter else None},
        "versions": package_versions(),
    }
    if config is not None:
        info["config"] = _plain(config)
    return info


def incomparable(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> list[str]:
    """What differs between two runs' ``run_info`` in a way that changes the numbers, one line each.

    Settings (but not the speed-only ones), the resolved layout and the problems (their hash, or
    their count and source when a hash is missing) count; the model does not (it is what a
    comparison compares), nor do library versions (listed by ``faithcb report``, not judged). A run
    without a record (a history written before run info existed) gives one line saying so.
    """
    if not a or not b:
        return [] if not a and not b else ["one run has no settings record (a history from before faithcb 0.1.0's run info)"]
    out = []
    sa, sb = a.get("settings", {}), b.get("settings", {})
    for key in sorted(set(sa) | set(sb)):
        if key not in SPEED_ONLY and sa.get(key) != sb.get(key):
            out.append(f"setting {key}: {_short(sa.get(key))} vs {_short(sb.get(key))}")
    if a.get("layout") != b.get("layout"):
        out.append(f"prompt layout: {a.get('layout')} vs {b.get('layout')}")
    pa, pb = a.get("problems", {}), b.get("problems", {})
    if pa.get("sha256") != pb.get("sha256"):
        out.append(f"problems: {pa.get('n')} from {pa.get('source')} vs {pb.get('n')} from {pb.get('source')} "
                   "(not the same problems)")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
