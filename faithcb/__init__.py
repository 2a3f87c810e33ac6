"""faithcb: chain-of-thought faithfulness probes as a training callback.

    from faithcb import FaithfulnessCallback, FaithConfig
    trainer.add_callback(FaithfulnessCallback(trainer, "heldout.jsonl", FaithConfig()))

Names are imported lazily, so ``import faithcb`` stays cheap (no torch/transformers at import).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "FaithfulnessCallback": "faithcb.callback",
    "FaithConfig": "faithcb.config",
    "CouplingReward": "faithcb.reward",
    "FaithfulnessEngine": "faithcb.engine",
    "ProbeSettings": "faithcb.settings",
    "RoundResult": "faithcb.results",
    "aggregate": "faithcb.results",
    "Metric": "faithcb.metrics",
    "Probe": "faithcb.probes",
    "register_probe": "faithcb.probes",
    "EarlyStopper": "faithcb.stopping",
    "read_history": "faithcb.history",
    "Problem": "faithcb.problem",
    "ProbeSet": "faithcb.data",
    "PromptStyle": "faithcb.prompting",
    "training_rows": "faithcb.training",
    "load_model": "faithcb.models",
    "load_embedded_model": "faithcb.models",
    "write_report": "faithcb.report",
    "FaithcbError": "faithcb.errors",
    "ConfigError": "faithcb.errors",
    "ProblemFormatError": "faithcb.errors",
    "ModelLoadError": "faithcb.errors",
    "ProbeError": "faithcb.errors",
    "HistoryFormatError": "faithcb.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'faithcb' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
