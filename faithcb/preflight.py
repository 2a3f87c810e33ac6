"""Setup checks that must fail before step 0, as ``ConfigError``, never inside a round.

A round catches runtime failures so training goes on; a setup mistake caught there would become
one warning per round and no metrics. So the callback and the engine run these checks when they
are built: the tokenizer exists and is fast (the step splitter needs character offsets), one
prompt renders through the layout (and its chain prompt is the model's own generation prompt), and the information-gain evaluator fits the model.
"""

from __future__ import annotations

from faithcb.data import Problem
from faithcb.errors import ConfigError
from faithcb.problem import base_id
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


def load_problems(source, *, num_problems: int, seed: int) -> list[Problem]:
    """The callback's problems: ``faith_problems`` loaded and sampled once (every round probes them)."""
    from faithcb.data import ProbeSet
    from faithcb.errors import ProblemFormatError

    if source is None:
        raise ConfigError("faith_problems: no problems given; pass problems=... or set faith_problems")
    try:
        problem_set = ProbeSet.load(source)
    except ProblemFormatError as exc:  # name the setting the problems came from, keep the type
        raise ProblemFormatError(f"faith_problems: {exc}") from exc
    return problem_set.sample(num_problems, seed)


def check_trainer_args(config, args) -> None:
    """The ``faith_*`` settings against the trainer's ``TrainingArguments``."""
    if getattr(args, "restore_callback_states_from_checkpoint", False):
        raise ConfigError(
            "restore_callback_states_from_checkpoint: must stay False with FaithfulnessCallback; it "
            "restores its own state on resume (Trainer would rebuild it without its trainer)"
        )
    if config.faith_on_evaluate and str(getattr(args, "eval_strategy", "no")) in ("no", "IntervalStrategy.NO"):
        raise ConfigError("faith_on_evaluate: the trainer never evaluates (eval_strategy='no')")
    every = config.faith_every_n_steps
    if every and args.max_steps > 0 and every > args.max_steps:
        raise ConfigError(
            f"faith_every_n_steps: {every} exceeds max_steps={args.max_steps}, "
            "so it never fires; lower it or use faith_num_rounds"
        )


def check_start_round(start_round, problems, *, round_at_start: bool):
    """A shared step-0 round (``start_round``) must be of these problems, and be used."""
    if start_round is None:
        return None
    if not round_at_start:
        raise ConfigError("start_round: given, but faith_round_at_start=False never uses it")
    given = sorted({r["id"] for r in start_round.records})
    if given != sorted({base_id(p) for p in problems}):
        raise ConfigError(
            f"start_round: it probed other problems ({len(given)}) than this callback's "
            f"({len(problems)}); a shared step-0 round must be of the same problems"
        )
    return start_round
