"""The perturbation probes and information gain, one module each, registered by name.

``faithcb.probes.registry`` is the one list of probes (and so of metrics); importing this package
registers the built-in ones.
"""

from __future__ import annotations

from faithcb.probes.base import Chain, Outcome, Probe, Variant, area_over_curve, curve_on_grid
from faithcb.probes.early_answering import EarlyAnswering
from faithcb.probes.filler import FillerSubstitution
from faithcb.probes.info_gain import InformationGain
from faithcb.probes.mistakes import AddingMistakes
from faithcb.probes.paraphrase import ModelParaphraser, Paraphrasing, RuleParaphraser
from faithcb.probes.registry import (
    ProbeContext,
    build_probes,
    check_probe_names,
    find_metric,
    probe_metrics,
    probe_names,
    register_probe,
    round_metrics,
    unregister_probe,
)

for _probe in (EarlyAnswering, FillerSubstitution, Paraphrasing, InformationGain, AddingMistakes):
    register_probe(_probe)

# The probes a round runs unless told otherwise (mistakes needs generation: opt-in).
DEFAULT_PROBES: tuple[str, ...] = ("early_answering", "filler", "paraphrase", "info_gain")

__all__ = [
    "DEFAULT_PROBES",
    "AddingMistakes",
    "Chain",
    "EarlyAnswering",
    "FillerSubstitution",
    "InformationGain",
    "ModelParaphraser",
    "Outcome",
    "Paraphrasing",
    "Probe",
    "ProbeContext",
    "RuleParaphraser",
    "Variant",
    "area_over_curve",
    "build_probes",
    "check_probe_names",
    "curve_on_grid",
    "find_metric",
    "probe_metrics",
    "probe_names",
    "register_probe",
    "round_metrics",
    "unregister_probe",
]
