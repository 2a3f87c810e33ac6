"""``FaithConfig``: every setting of the training callback, all ``faith_``-prefixed.

The prefix lets a recipe parse it next to ``SFTConfig`` or ``GRPOConfig`` with one ``TrlParser``
(``GRPOConfig`` already owns ``temperature``, ``num_generations``, ``seed``...). Values are
checked in ``__post_init__`` with messages that name the field and the allowed values; the round's
part becomes an immutable ``ProbeSettings`` (``probe_settings()``), which holds the one definition
of its checks: their errors are relabelled with the ``faith_`` name. No torch is imported here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields

from faithcb.data import named_sets_help
from faithcb.errors import ConfigError
from faithcb.probes import DEFAULT_PROBES, find_metric, probe_names, round_metrics
from faithcb.probes.registry import did_you_mean
from faithcb.prompting import LAYOUTS, PromptStyle
from faithcb.settings import EVALUATORS, GENERATION_PATHS, PARAPHRASE_MODES, ProbeSettings
from faithcb.stopping import REFERENCES

STOP_MODES = ("auto", "max", "min")


def metric_names(probes) -> list[str]:
    """Every metric a round with these probes reports (what early stopping may watch)."""
    return [m.name for m in round_metrics(probes)]


@dataclass
class FaithConfig:
    """Settings of ``FaithfulnessCallback``; see docs/callback.md for a guide to each field."""

    # --- what to probe
    faith_problems: str | None = field(
        default=None,
        metadata={"help": f"Held-out problems: {named_sets_help()}, a .jsonl/.json file, a saved dataset dir, "
                  "or 'synthetic:N'. Ignored when problems are passed to the callback directly."},
    )
    faith_num_problems: int = field(default=16, metadata={"help": "Problems per round (seeded sample)."})
    faith_probes: list[str] = field(
        default_factory=lambda: list(DEFAULT_PROBES),
        metadata={"help": f"Probes to run, from {list(probe_names())} (and any probe you register)."},
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
    faith_max_overhead: float = field(
        default=0.0,
        metadata={"help": "Probing time budget as a fraction of training time (e.g. 0.05); scheduled rounds that "
                  "would exceed it are skipped (0 = no budget). The step-0 and final rounds always run."},
    )
    faith_round_at_end: bool = field(default=True, metadata={"help": "A round after the last step."})
    # --- how the model is asked (docs/layouts.md); `faithcb show` prints what these produce
    faith_layout: str = field(
        default="auto",
        metadata={"help": f"Prompt layout, one of {list(LAYOUTS)}: 'two_turn' (Lanham et al.: the cue is a second user "
                  "turn), 'think' (one assistant turn; the cue closes the reasoning block), 'plain' (no chat "
                  "template); 'auto' picks 'think' for templates with a reasoning block, else 'two_turn' or 'plain'."},
    )
    faith_instruction: str = field(
        default=PromptStyle.instruction, metadata={"help": "Appended to every question."}
    )
    faith_cue_question: str = field(
        default=PromptStyle.cue_question, metadata={"help": "The question that asks for the final answer ('two_turn', 'plain')."}
    )
    faith_number_answer_prefix: str = field(
        default=PromptStyle.number_answer_prefix, metadata={"help": "Answer prefix for numeric problems."}
    )
    faith_choice_answer_prefix: str = field(
        default=PromptStyle.choice_answer_prefix,
        metadata={"help": "Answer prefix for multiple choice; must end where the letter starts."},
    )
    faith_text_answer_prefix: str = field(
        default=PromptStyle.text_answer_prefix, metadata={"help": "Answer prefix for free-text problems."}
    )
    # --- how
    faith_max_cuts: int = field(
        default=16,
        metadata={"help": "Most cut points per problem (at least 4), k = 0, 1, n - 1 and n included (evenly spaced "
                  "step boundaries in between); "
                  "bounds a round's work on long chains. Every probe uses the same cuts."},
    )
    faith_generation: str = field(
        default="generate",
        metadata={"help": f"How chains are generated, one of {list(GENERATION_PATHS)}: plain 'generate', 'static' "
                  "(static KV cache, compiled decode step) or 'continuous' (transformers' continuous batching)."},
    )
    faith_max_chain_tokens: int = field(
        default=512,
        metadata={"help": "Max tokens of a generated chain; a chain that hits it is 'truncated' and not probed."},
    )
    faith_answer_max_tokens: int = field(
        default=16,
        metadata={"help": "Max tokens of an answer after the cue; an answer whose first number runs into it is unparsed."},
    )
    faith_do_sample: bool = field(default=False, metadata={"help": "Sample chains instead of greedy decoding."})
    faith_temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (with faith_do_sample)."})
    faith_num_samples: int = field(default=1, metadata={"help": "Chains per problem (with faith_do_sample)."})
    faith_seed: int = field(default=0, metadata={"help": "Seed for problem sampling and chain sampling."})
    faith_paraphraser: str = field(default="rule", metadata={"help": "'rule' (built-in) or 'model' (the live model)."})
    faith_paraphrase_mode: str = field(
        default="rest",
        metadata={"help": f"Paraphrase probe, one of {list(PARAPHRASE_MODES)}: 'rest' rewords the steps after each cut "
                  "point; 'continue' (Lanham et al.'s) rewords the steps before it and lets the model continue the "
                  "chain (one generation per cut point)."},
    )
    faith_evaluator: str = field(
        default="auto",
        metadata={"help": f"Information-gain evaluator, one of {list(EVALUATORS)}: 'auto' scores with the PEFT base "
                  "model (adapters disabled) when the model has adapters, else with the live model."},
    )
    faith_base_reference: bool = field(
        default=True, metadata={"help": "With a PEFT model, also score the base model (adapters disabled)."}
    )
    faith_batch_size: int = field(
        default=16,
        metadata={"help": "Sequences per generation pass and problems per scoring pass (halved on OOM)."},
    )
    faith_fast: bool = field(default=True, metadata={"help": "Shared-prefix scoring (False = plain reference path)."})
    faith_choice_permutations: bool = field(
        default=False,
        metadata={"help": "Also evaluate each multiple-choice problem under every cyclic rotation of its choices and "
                  "report the share whose chosen option changes with the order (choice_unstable_rate); multiplies "
                  "the cost of multiple-choice problems by their number of choices."},
    )
    # --- early stopping on a faithfulness drop
    faith_early_stopping: bool = field(default=False, metadata={"help": "Stop training when the metric drops."})
    # Not AOC: AOC's range moves with the chain length (ceiling 1 - 1/(2n)), and fine-tuning often
    # shortens chains, so a run would stop for shorter chains, not for less coupling. Its
    # length-free companion moves only when the answer needs less of the chain.
    faith_stop_metric: str = field(
        default="early_answering_disagreement_before_end",
        metadata={"help": "Metric to watch (default: early answering's length-free companion of AOC)."},
    )
    faith_stop_mode: str = field(
        default="auto",
        metadata={"help": "'auto': from the metric's direction; 'max': higher is better; 'min': lower is."},
    )
    # Defaults from docs/validation.md (four planted-shortcut settings, 12 shortcut and 12 control
    # runs): the paired change with its interval required at patience 2 is the only rule measured
    # that fired in no control run (patience 1: 1/12 controls, a GRPO one; 'best' without the
    # interval, the earlier default: 5/12). Zero false positives came first; the price is
    # sensitivity (1/12 shortcut runs with two rounds after step 0; patience 1 caught 5/12).
    faith_stop_patience: int = field(default=2, metadata={"help": "Consecutive bad rounds before stopping."})
    faith_stop_min_delta: float = field(default=0.05, metadata={"help": "A round is bad when worse than the reference by more than this."})
    faith_stop_reference: str = field(
        default="paired",
        metadata={"help": "'best' value so far, 'baseline' (the first round, step 0), or 'paired' (the round's "
                  "paired change from the baseline round over the same problems)."},
    )
    faith_stop_require_ci: bool = field(
        default=True,
        metadata={"help": "Also require the reference to lie outside the round's 95% interval ('paired': the "
                  "paired interval of the change to exclude zero)."},
    )
    faith_stop_on_nan: bool = field(
        default=False, metadata={"help": "Count a round whose watched metric could not be measured (NaN) as bad."}
    )
    # --- output
    faith_history_file: str = field(default="faith_history.jsonl", metadata={"help": "JSONL history in output_dir."})
    faith_log_records: bool = field(default=True, metadata={"help": "Write per-problem records (and a W&B table)."})
    faith_strict: bool = field(default=False, metadata={"help": "Re-raise probe failures (for tests)."})
    faith_show_progress: bool = field(default=True, metadata={"help": "Progress bars during a round."})

    def __post_init__(self) -> None:
        if isinstance(self.faith_probes, str):
            self.faith_probes = [p.strip() for p in self.faith_probes.split(",") if p.strip()]
        # The round's settings are checked by ProbeSettings (and PromptStyle), nowhere else.
        self.faith_probes = list(self.probe_settings().probes)
        _choice("faith_stop_mode", self.faith_stop_mode, STOP_MODES)
        _choice("faith_stop_reference", self.faith_stop_reference, REFERENCES)
        for name in ("faith_num_problems", "faith_stop_patience"):
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
        self._check_stop_metric()
        # A negative margin would count a round that equals the reference as bad, so a flat metric
        # would stop training after faith_stop_patience rounds.
        if not self.faith_max_overhead >= 0:
            raise ConfigError(f"faith_max_overhead: must be >= 0 (0 = no budget), got {self.faith_max_overhead}")
        if not self.faith_stop_min_delta >= 0:
            raise ConfigError(f"faith_stop_min_delta: must be >= 0, got {self.faith_stop_min_delta}")

    def _check_stop_metric(self) -> None:
        """The stop metric must be reported, and an explicit mode must agree with its direction.

        A metric's direction (which way is more coupled) is declared once, by the probe that
        computes it; a mode that contradicts it would stop training when coupling *rises*.
        """
        valid = metric_names(self.faith_probes)
        if self.faith_stop_metric not in valid:
            if self.faith_early_stopping:
                raise ConfigError(
                    f"faith_stop_metric: {self.faith_stop_metric!r} is not reported with faith_probes="
                    f"{self.faith_probes}{did_you_mean(self.faith_stop_metric, valid)}; choose from {valid}"
                )
            return  # not watched: a round without this metric is fine
        metric = find_metric(self.faith_stop_metric, self.faith_probes)
        # 'auto' takes the metric's own mode ('max' for a neutral one, see stop_mode).
        if self.faith_stop_mode != "auto" and metric.stop_mode not in (None, self.faith_stop_mode):
            raise ConfigError(
                f"faith_stop_mode: {self.faith_stop_mode!r} contradicts {metric.name!r}, where "
                f"{metric.direction} = more coupled (its mode is {metric.stop_mode!r}); leave faith_stop_mode='auto'"
            )

    @property
    def stop_mode(self) -> str:
        """The early-stopping mode in force: the explicit one, or the stop metric's own.

        A neutral metric (accuracy, bookkeeping) has no coupling direction; 'auto' then means
        'max', stop when it falls.
        """
        if self.faith_stop_mode != "auto":
            return self.faith_stop_mode
        known = {m.name: m for m in round_metrics(self.faith_probes)}
        metric = known.get(self.faith_stop_metric)
        return (metric.stop_mode if metric else None) or "max"

    def prompt_style(self) -> PromptStyle:
        """The layout and wording the ``faith_*`` fields set."""
        with _faith_names():
            return PromptStyle(
                layout=self.faith_layout,
                instruction=self.faith_instruction,
                cue_question=self.faith_cue_question,
                number_answer_prefix=self.faith_number_answer_prefix,
                choice_answer_prefix=self.faith_choice_answer_prefix,
                text_answer_prefix=self.faith_text_answer_prefix,
            )

    def probe_settings(self, *, style: PromptStyle | None = None) -> ProbeSettings:
        """The round's settings (immutable); ``style`` (Python only) overrides the faith_* wording and layout."""
        style = style if style is not None else self.prompt_style()
        with _faith_names():
            return ProbeSettings(
                probes=tuple(self.faith_probes),
                max_chain_tokens=self.faith_max_chain_tokens,
                answer_max_tokens=self.faith_answer_max_tokens,
                do_sample=self.faith_do_sample,
                temperature=self.faith_temperature,
                num_samples=self.faith_num_samples,
                seed=self.faith_seed,
                paraphraser=self.faith_paraphraser,
                paraphrase_mode=self.faith_paraphrase_mode,
                evaluator=self.faith_evaluator,
                batch_size=self.faith_batch_size,
                fast=self.faith_fast,
                choice_permutations=self.faith_choice_permutations,
                generation=self.faith_generation,
                max_cuts=self.faith_max_cuts,
                style=style,
            )

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@contextmanager
def _faith_names() -> Iterator[None]:
    """Relabel a ``ProbeSettings``/``PromptStyle`` error with the ``faith_`` field that set the value.

    Their messages start with the field's name (``max_chain_tokens: must be >= 1``); here the
    user wrote ``faith_max_chain_tokens``, so that is the name the error gives.
    """
    try:
        yield
    except ConfigError as error:
        name, sep, rest = str(error).partition(":")
        if sep and f"faith_{name}" in _FIELDS:
            raise type(error)(f"faith_{name}:{rest}") from None
        raise


def _choice(name: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}: {value!r} is not one of {list(allowed)}")


_FIELDS = frozenset(FaithConfig.field_names())
