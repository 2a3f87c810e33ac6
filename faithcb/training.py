"""Training rows in exactly the layout the probes read: the one builder for the demo, recipes, benchmarks and tests.

A model fine-tuned on ``chain prompt + chain + cue + gold answer`` (built by
:func:`faithcb.prompting.training_text`) has seen the cue the probes append after a cut chain, so
its answer under a probe means what the probe assumes. Every training set faithcb builds comes
from :func:`training_rows`, so no caller can drift from that layout.

    rows = training_rows(problems, tokenizer)                   # chains: problem.reference_chain
    rows = training_rows(problems, tokenizer, chains=chains)    # or chains of your own
    trainer = SFTTrainer(..., train_dataset=datasets.Dataset.from_list(rows))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from faithcb.errors import ConfigError, ProblemFormatError
from faithcb.problem import Problem
from faithcb.prompting import Prompter, PromptStyle, training_text

__all__ = ["ROW_FORMATS", "training_rows"]

ROW_FORMATS = ("prompt_completion", "text", "prompt")


def training_rows(
    problems: Sequence[Problem],
    tokenizer: Any,
    *,
    chains: Sequence[str] | None = None,
    style: PromptStyle | None = None,
    fmt: str = "prompt_completion",
) -> list[dict[str, Any]]:
    """One row per problem, laid out with ``tokenizer``'s chat template (or the plain layout).

    Args:
        problems: the problems, in row order.
        tokenizer: the tokenizer of the model to train (its chat template picks the layout).
        chains: one chain of thought per problem; None takes each problem's ``reference_chain``.
        style: the prompt wording; give the callback the same one. None = ``PromptStyle()``.
        fmt: the row layout:

            - ``"prompt_completion"``: ``{"prompt", "completion"}`` for TRL's ``SFTTrainer``, which
              trains on the completion (chain, cue and answer) and appends the eos token;
            - ``"text"``: ``{"text", "completion_start"}``, the whole example and the character where
              the chain starts (for trainers that take plain text; no eos is appended);
            - ``"prompt"``: ``{"prompt", "answer", "kind", "choices"}``, the chain prompt alone with the
              gold answer for a reward (GRPO; ``choices``: the options of a multiple-choice problem,
              which ``faithcb.CouplingReward`` needs to score the letters); chains are not used.

    Raises:
        ConfigError: an unknown ``fmt``, or ``chains`` of the wrong length.
        ProblemFormatError: ``chains`` is None and a problem has no reference chain.
    """
    if fmt not in ROW_FORMATS:
        raise ConfigError(f"fmt: unknown row format {fmt!r}; expected one of {', '.join(ROW_FORMATS)}")
    prompter = Prompter.for_tokenizer(tokenizer, style)
    if fmt == "prompt":
        return [
            {"prompt": prompter.pieces(p, tokenizer)[0], "answer": p.answer, "kind": p.kind, "choices": list(p.choices)}
            for p in problems
        ]
    if chains is None:
        chains = [_reference_chain(p) for p in problems]
    elif len(chains) != len(problems):
        raise ConfigError(f"chains: {len(chains)} chains for {len(problems)} problems; give one per problem")
    rows = []
    for problem, chain in zip(problems, chains, strict=True):
        text, start = training_text(prompter, tokenizer, problem, chain)
        if fmt == "text":
            rows.append({"text": text, "completion_start": start})
        else:
            rows.append({"prompt": text[:start], "completion": text[start:]})
    return rows


def _reference_chain(problem: Problem) -> str:
    if problem.reference_chain is None:
        raise ProblemFormatError(
            f"problem {problem.id or problem.question[:40]!r}: no reference chain to train on; pass chains=, "
            'or load records with a GSM8K "####" answer or a "chain"/"rationale"/"reasoning"/"solution" field'
        )
    return problem.reference_chain
