"""``ProbeSettings``: what one round measures and how — validated once, immutable after.

``FaithConfig`` (the callback's ``faith_*`` fields) and the CLI build it; the engine only reads
it. Its checks are the only ones of these settings: ``FaithConfig`` validates through it and
names the ``faith_`` field in the error. A change (for example the base-model round's evaluator) is a new object through
``dataclasses.replace``, which validates again. No torch here, so configs parse without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from faithcb.errors import ConfigError
from faithcb.probes import DEFAULT_PROBES, check_probe_names
from faithcb.probes.paraphrase import MODES as PARAPHRASE_MODES
from faithcb.prompting import PromptStyle

# Information gain's evaluator: the PEFT base model (adapters off) when there is one ("auto"), the
# live model, or the base model (PEFT only).
EVALUATORS = ("auto", "live", "base")
PARAPHRASERS = ("rule", "model")
# How chains are generated: plain ``generate`` (dynamic cache), a static cache with a compiled
# decode step, or transformers' continuous batching. Greedy chains are token-identical across paths.
GENERATION_PATHS = ("generate", "static", "continuous")


@dataclass(frozen=True)
class ProbeSettings:
    """What a round measures and how. Every field has the default the callback uses."""

    probes: tuple[str, ...] = DEFAULT_PROBES
    max_chain_tokens: int = 512  # real chains: a cut chain is not probed (see docs/metrics.md)
    answer_max_tokens: int = 16  # room for long numbers at one token per digit, plus the terminator
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 1.0
    num_samples: int = 1
    seed: int = 0
    paraphraser: str | Callable[[str], str] = "rule"  # "rule" | "model" | a callable
    # "rest": reword the steps after k; "continue" (Lanham's): reword the first k, the model continues.
    paraphrase_mode: str = "rest"
    evaluator: str = "auto"
    batch_size: int = 16
    generation: str = "generate"
    # Cut points per problem, k = 0, 1, n - 1 and n always among them (evenly spaced step boundaries
    # in between; ``faithcb.probes.base.cut_points``); bounds a round's work on long chains. Every
    # probe uses the same cuts.
    max_cuts: int = 16
    fast: bool = True
    # Multiple choice: also evaluate every cyclic rotation of each problem's choices (n times the
    # cost); answers that follow the order, not the option, are counted (``choice_unstable_rate``).
    choice_permutations: bool = False
    style: PromptStyle = field(default_factory=PromptStyle)
    splitter: Callable[[str], list[str]] | None = None

    def __post_init__(self) -> None:
        # Lists are accepted (and frozen into tuples) so ProbeSettings(probes=[...]) just works.
        object.__setattr__(self, "probes", check_probe_names(self.probes))
        if self.evaluator not in EVALUATORS:
            raise ConfigError(f"evaluator: {self.evaluator!r} is not one of {list(EVALUATORS)}")
        if self.generation not in GENERATION_PATHS:
            raise ConfigError(f"generation: {self.generation!r} is not one of {list(GENERATION_PATHS)}")
        if isinstance(self.paraphraser, str) and self.paraphraser not in PARAPHRASERS:
            raise ConfigError(f"paraphraser: {self.paraphraser!r} is not one of {list(PARAPHRASERS)} (or a callable)")
        if self.paraphrase_mode not in PARAPHRASE_MODES:
            raise ConfigError(f"paraphrase_mode: {self.paraphrase_mode!r} is not one of {list(PARAPHRASE_MODES)}")
        if int(self.max_cuts) < 4:
            raise ConfigError(f"max_cuts: must be >= 4 (k = 0, 1, n - 1 and n), got {self.max_cuts}")
        for name in ("max_chain_tokens", "answer_max_tokens", "num_samples", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature: must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p: must be in (0, 1], got {self.top_p}")
