"""Setup checks that must fail before step 0, as ``ConfigError``, never inside a round.

A round catches runtime failures so training goes on; a setup mistake caught there would become
one warning per round and no metrics. So the callback and the engine run these checks when they
are built: the tokenizer exists and is fast (the step splitter needs character offsets), one
prompt renders through the layout (and its chain prompt is the model's own generation prompt), and the information-gain evaluator fits the model.
"""

from __future__ import annotations

from faithcb.data import Problem
from faithcb.errors import ConfigError
from faithcb.prompting import Prompter, check_against_native


def resolve_tokenizer(trainer):
    """The trainer's tokenizer (a processor's inner tokenizer); ``ConfigError`` when it has none."""
    tok = getattr(trainer, "processing_class", None) or getattr(trainer, "tokenizer", None)
    if tok is None:
        raise ConfigError("trainer: has no tokenizer (processing_class); pass one to the Trainer")
    return getattr(tok, "tokenizer", tok)  # a processor wraps its tokenizer


def check_tokenizer(tokenizer) -> None:
    """faithcb maps steps to tokens through character offsets, which only fast tokenizers give."""
    if tokenizer is None:
        raise ConfigError("tokenizer: none given; pass the model's tokenizer")
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"tokenizer: {type(tokenizer).__name__} is a slow tokenizer (no offset mapping); load it with "
            "AutoTokenizer.from_pretrained(..., use_fast=True)"
        )


def check_layout(prompter: Prompter, tokenizer, problem: Problem) -> None:
    """Render one problem through the prompt layout; a template that cannot is a setup error."""
    try:
        prompt, cue = prompter.pieces(problem, tokenizer)
    except ConfigError:
        raise
    except Exception as exc:  # a template that raises on our messages is unusable as well
        raise ConfigError(f"chat template: cannot render the probe layout: {type(exc).__name__}: {exc}") from exc
    if not cue.strip():
        raise ConfigError("prompt layout: the answer cue renders empty")
    if not prompt:
        raise ConfigError("prompt layout: the chain prompt renders empty")
    check_against_native(prompter, tokenizer, problem, forced=prompter.style.layout != "auto")


def check_evaluator(evaluator: str, model, *, field: str = "evaluator") -> None:
    """Information gain under the base model needs PEFT adapters to switch off."""
    if evaluator == "base" and not hasattr(model, "disable_adapter"):
        raise ConfigError(f"{field}: 'base' needs a PEFT model (one with disable_adapter())")


def resolve_evaluator(evaluator: str, model) -> str:
    """``"live"`` or ``"base"``: ``"auto"`` is the base model when ``model`` has PEFT adapters."""
    if evaluator == "auto":
        return "base" if hasattr(model, "disable_adapter") else "live"
    return evaluator


def check_setup(model, tokenizer, prompter: Prompter, evaluator: str, problem: Problem | None, *,
                field_prefix: str = "") -> None:
    """Every check above, in the order a user would fix them."""
    check_evaluator(evaluator, model, field=f"{field_prefix}evaluator")
    check_tokenizer(tokenizer)
    check_layout(prompter, tokenizer, problem or _PROBE_PROBLEM)


# A problem to render when none is at hand (the engine is built before it sees any).
_PROBE_PROBLEM = Problem(id="faithcb-preflight", question="What is 1 + 1?", answer="2")
