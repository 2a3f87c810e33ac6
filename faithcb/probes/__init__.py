"""The perturbation probes and information gain, one module each; ``build_probes`` makes them by name."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from faithcb.probes.base import Chain, Outcome, Probe, Variant, area_over_curve, curve_on_grid
from faithcb.probes.early_answering import EarlyAnswering
from faithcb.probes.filler import FillerSubstitution
from faithcb.probes.info_gain import InformationGain
from faithcb.probes.mistakes import AddingMistakes
from faithcb.probes.paraphrase import ModelParaphraser, Paraphrasing, RuleParaphraser

PROBE_NAMES = ("early_answering", "filler", "paraphrase", "info_gain", "mistakes")


def build_probes(
    names: Sequence[str], *, encode: Callable[[str], list[int]], paraphraser=None, max_chain_tokens: int = 128
) -> list[Probe]:
    """Probe objects for ``names`` (validated by the caller against ``PROBE_NAMES``)."""
    factories = {
        "early_answering": lambda: EarlyAnswering(),
        "filler": lambda: FillerSubstitution(encode),
        "paraphrase": lambda: Paraphrasing(encode, None if paraphraser == "rule" else paraphraser),
        "info_gain": lambda: InformationGain(),
        "mistakes": lambda: AddingMistakes(max_new_tokens=max_chain_tokens),
    }
    return [factories[name]() for name in names]


__all__ = [
    "PROBE_NAMES",
    "AddingMistakes",
    "Chain",
    "EarlyAnswering",
    "FillerSubstitution",
    "InformationGain",
    "ModelParaphraser",
    "Outcome",
    "Paraphrasing",
    "Probe",
    "RuleParaphraser",
    "Variant",
    "area_over_curve",
    "curve_on_grid",
    "build_probes",
]
