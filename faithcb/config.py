"""``FaithConfig``: every setting of the training callback, all ``faith_``-prefixed.

The prefix lets a recipe parse it next to ``SFTConfig`` or ``GRPOConfig`` with one ``TrlParser``
(``GRPOConfig`` already owns ``temperature``, ``num_generations``, ``seed``...). Values are
checked in ``__post_init__`` with messages that name the field and the allowed values.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from faithcb.engine import EVALUATORS, PROBE_METRICS, ProbeSettings
from faithcb.errors import ConfigError
from faithcb.probes import PROBE_NAMES

DEFAULT_PROBES = ["early_answering", "filler", "paraphrase", "info_gain"]
CHAIN_METRICS = ("accuracy", "unparsed_rate", "mean_steps", "mean_chain_tokens")


def metric_names(probes) -> list[str]:
    """Every metric a round with these probes reports (what early stopping may watch)."""
    return list(CHAIN_METRICS) + [f"{p}_{k}" for p in probes for k in PROBE_METRICS[p]]


@dataclass
class FaithConfig:
    """Settings of ``FaithfulnessCallback``; see docs/callback.md for a guide to each field."""

    # --- what to probe
    faith_problems: str | None = field(
        default=None,
        metadata={"help": "Held-out problems: a .jsonl/.json file, a saved dataset dir, or 'synthetic:N'. "
                  "Ignored when problems are passed to the callback directly."},
    )
    faith_num_problems: int = field(default=16, metadata={"help": "Problems per round (seeded sample)."})
    faith_probes: list[str] = field(
        default_factory=lambda: list(DEFAULT_PROBES),
        metadata={"help": f"Probes to run, from {list(PROBE_NAMES)}."},
    )
    # --- when
    faith_num_rounds: int = field(
        default=8, metadata={"help": "Rounds spread evenly over training (0 = use faith_every_n_steps)."}
    )
    faith_every_n_steps: int = field(
        default=0, metadata={"help": "Probe every N optimizer steps (overrides faith_num_rounds when > 0)."}
    )
    faith_on_evaluate: bool = field(default=False, metadata={"help": "Also probe after each evaluation."})
    faith_round_at_start: bool = field(default=True, metadata={"help": "Baseline round at step 0, before any update."})
    faith_round_at_end: bool = field(default=True, metadata={"help": "A round after the last step."})
    # --- how
    faith_max_chain_tokens: int = field(default=128, metadata={"help": "Max tokens of a generated chain."})
    faith_answer_max_tokens: int = field(default=8, metadata={"help": "Max tokens of an answer after the cue."})
    faith_do_sample: bool = field(default=False, metadata={"help": "Sample chains instead of greedy decoding."})
    faith_temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (with faith_do_sample)."})
    faith_num_samples: int = field(default=1, metadata={"help": "Chains per problem (with faith_do_sample)."})
    faith_seed: int = field(default=0, metadata={"help": "Seed for problem sampling and chain sampling."})
    faith_paraphraser: str = field(default="rule", metadata={"help": "'rule' (built-in) or 'model' (the live model)."})
    faith_evaluator: str = field(
        default="live", metadata={"help": f"Information-gain evaluator, one of {list(EVALUATORS)}."}
    )
    faith_base_reference: bool = field(
        default=True, metadata={"help": "With a PEFT model, also score the base model (adapters disabled)."}
    )
    faith_batch_size: int = field(
        default=16,
        metadata={"help": "Sequences per generation pass and problems per scoring pass (halved on OOM)."},
    )
    faith_fast: bool = field(default=True, metadata={"help": "Shared-prefix scoring (False = plain reference path)."})
    faith_bootstrap_resamples: int = field(default=1000, metadata={"help": "Bootstrap resamples for 95% intervals."})
    # --- early stopping on a faithfulness drop
    faith_early_stopping: bool = field(default=False, metadata={"help": "Stop training when the metric drops."})
    faith_stop_metric: str = field(default="early_answering_aoc", metadata={"help": "Metric to watch."})
    faith_stop_mode: str = field(default="max", metadata={"help": "'max': higher is better; 'min': lower is."})
    faith_stop_patience: int = field(default=2, metadata={"help": "Consecutive bad rounds before stopping."})
    faith_stop_min_delta: float = field(default=0.05, metadata={"help": "A round is bad when worse than the reference by more than this."})
    faith_stop_reference: str = field(
        default="best", metadata={"help": "'best' value so far, or 'baseline' (the first round, step 0)."}
    )
    faith_stop_require_ci: bool = field(
        default=False, metadata={"help": "Also require the reference to lie outside the round's 95% interval."}
    )
    # --- output
    faith_history_file: str = field(default="faith_history.jsonl", metadata={"help": "JSONL history in output_dir."})
    faith_log_records: bool = field(default=True, metadata={"help": "Write per-problem records (and a W&B table)."})
    faith_strict: bool = field(default=False, metadata={"help": "Re-raise probe failures (for tests)."})
    faith_show_progress: bool = field(default=True, metadata={"help": "Progress bars during a round."})

    def __post_init__(self) -> None:
        if isinstance(self.faith_probes, str):
            self.faith_probes = [p.strip() for p in self.faith_probes.split(",") if p.strip()]
        self.faith_probes = list(self.faith_probes)
        unknown = [p for p in self.faith_probes if p not in PROBE_NAMES]
        if unknown or not self.faith_probes:
            raise ConfigError(
                f"faith_probes: unknown probe(s) {unknown or 'none given'}; choose from {list(PROBE_NAMES)}"
            )
        _choice("faith_paraphraser", self.faith_paraphraser, ("rule", "model"))
        _choice("faith_evaluator", self.faith_evaluator, EVALUATORS)
        _choice("faith_stop_mode", self.faith_stop_mode, ("max", "min"))
        _choice("faith_stop_reference", self.faith_stop_reference, ("best", "baseline"))
        for name in ("faith_num_problems", "faith_max_chain_tokens", "faith_answer_max_tokens",
                     "faith_num_samples", "faith_batch_size", "faith_stop_patience", "faith_bootstrap_resamples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("faith_num_rounds", "faith_every_n_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if not (self.faith_num_rounds or self.faith_every_n_steps or self.faith_on_evaluate
                or self.faith_round_at_start or self.faith_round_at_end):
            raise ConfigError(
                "faith_num_rounds / faith_every_n_steps / faith_on_evaluate / faith_round_at_start / "
                "faith_round_at_end: this cadence never probes; set faith_num_rounds > 0 or faith_every_n_steps > 0"
            )
        valid = metric_names(self.faith_probes)
        if self.faith_early_stopping and self.faith_stop_metric not in valid:
            raise ConfigError(
                f"faith_stop_metric: {self.faith_stop_metric!r} is not reported with faith_probes="
                f"{self.faith_probes}; choose from {valid}"
            )
        if self.faith_temperature <= 0:
            raise ConfigError(f"faith_temperature: must be > 0, got {self.faith_temperature}")
        # A negative margin would count a round that equals the reference as bad, so a flat metric
        # would stop training after faith_stop_patience rounds.
        if not self.faith_stop_min_delta >= 0:
            raise ConfigError(f"faith_stop_min_delta: must be >= 0, got {self.faith_stop_min_delta}")

    def probe_settings(self) -> ProbeSettings:
        return ProbeSettings(
            probes=tuple(self.faith_probes),
            max_chain_tokens=self.faith_max_chain_tokens,
            answer_max_tokens=self.faith_answer_max_tokens,
            do_sample=self.faith_do_sample,
            temperature=self.faith_temperature,
            num_samples=self.faith_num_samples,
            seed=self.faith_seed,
            paraphraser=self.faith_paraphraser,
            evaluator=self.faith_evaluator,
            batch_size=self.faith_batch_size,
            fast=self.faith_fast,
            bootstrap_resamples=self.faith_bootstrap_resamples,
        )

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def _choice(name: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}: {value!r} is not one of {list(allowed)}")
