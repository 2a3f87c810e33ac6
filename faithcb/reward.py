"""``CouplingReward``: a TRL reward function that probes each GRPO step's own rollouts.

A ``GRPOTrainer`` calls its reward functions with the step's ``prompts``, ``completions`` and
``completion_ids`` (and the dataset's other columns, ``trainer_state`` and ``log_metric``).
This one scores every (or a sample of) rollout on the live policy, teacher-forced
(``faithcb.rollouts``), logs ``faith_rollout/<metric>`` through ``log_metric`` at every step and
returns one reward per completion: its coupling score (on correct rollouts only, by default),
None where it has nothing to score.

With weight 0 (``GRPOConfig(reward_weights=[1.0, 0.0])``) it is a monitor: the weighted sum GRPO
trains on is unchanged, and probing restores whatever it touches (mode, cache flag, every RNG),
so training is bit-identical to a run without it. With a positive weight it rewards coupling;
read it beside the callback's held-out rounds (``faith/``), which it never trains on: a coupling
reward can be gamed (docs/grpo.md).

The reward is built before the trainer, so it must be bound to it: ``FaithfulnessCallback`` binds
every ``CouplingReward`` of its trainer, or call ``reward.bind(trainer)``. Binding checks the
tokenizer, the layout and the data set's columns (``ConfigError``); an unbound reward raises
``ConfigError`` at its first call, before the first optimizer step.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from faithcb import logkeys
from faithcb.answers import normalize_answer
from faithcb.distributed import forwards_in_lockstep, unwrapped_model
from faithcb.errors import ConfigError
from faithcb.preflight import resolve_tokenizer
from faithcb.problem import Problem
from faithcb.rollouts import Rollout, RolloutProbe, rollout_summary
from faithcb.settings import ProbeSettings

logger = logging.getLogger(__name__)

__all__ = ["REWARD_ON", "CouplingReward", "bind_coupling_rewards"]

REWARD_ON = ("correct", "all")


class CouplingReward:
    """Rewards (or, with weight 0, monitors) how much each rollout's answer depends on its chain.

    Args:
        reward_on: ``"correct"`` (default): the coupling score on rollouts whose answer (a_full)
            equals the gold answer, 0 on the others, so coupling is never paid for a wrong
            answer; ``"all"``: the score on every scored rollout.
        sample: rollouts probed per step and process (0: all). The others get None (no coupling
            term). A cost control for monitoring; in reward mode keep it 0.
        max_cuts: cut points per rollout (k = 0, 1, n - 1 and n always; at least 4).
        settings: the probes' layout, wording and batch size; None takes the callback's when a
            ``FaithfulnessCallback`` binds it, else ``ProbeSettings()``. Only early answering runs.
        seed: seeds which rollouts are sampled (a private generator: the training RNG is not drawn).

    ``last_records`` holds the last call's per-rollout records (the sampled rollouts, in order): the
    chain, its steps, a_full, the early-answering entry and ``coupling``.

    The data set gives each rollout its gold answer in an ``answer`` column (needed for
    ``reward_on="correct"`` and the gold-referenced metrics), its kind in ``kind`` (default
    ``"number"``) and, for multiple choice, the options in ``choices``: the columns
    ``faithcb.training_rows(..., fmt="prompt")`` writes.

    Example::

        reward = CouplingReward()
        trainer = GRPOTrainer(model=model, reward_funcs=[correctness, reward], train_dataset=rows,
                              args=GRPOConfig(..., reward_weights=[1.0, 0.0]))  # 0.0: monitor only
        trainer.add_callback(FaithfulnessCallback(trainer, heldout))  # binds the reward
        trainer.train()
    """

    __name__ = "faith_coupling"  # TRL names the reward's logs after it: rewards/faith_coupling/mean

    def __init__(
        self, *, reward_on: str = "correct", sample: int = 0, max_cuts: int = 6,
        settings: ProbeSettings | None = None, seed: int = 0,
    ):
        if reward_on not in REWARD_ON:
            raise ConfigError(f"reward_on: {reward_on!r} is not one of {list(REWARD_ON)}")
        if not (isinstance(sample, int) and sample >= 0):
            raise ConfigError(f"sample: rollouts per step must be an int >= 0 (0 = all), got {sample!r}")
        if not (isinstance(max_cuts, int) and max_cuts >= 4):
            raise ConfigError(f"max_cuts: must be an int >= 4 (k = 0, 1, n - 1 and n), got {max_cuts!r}")
        self.reward_on = reward_on
        self.sample = sample
        self.max_cuts = max_cuts
        self.seed = seed
        self._settings = settings
        self.trainer = None
        self.settings: ProbeSettings | None = None
        self.weight: float | None = None
        self._probe: RolloutProbe | None = None
        self.last_records: list[dict[str, Any]] = []  # the last call's per-rollout records (sampled ones)

    # ------------------------------------------------------------------ binding
    @property
    def bound(self) -> bool:
        return self.trainer is not None

    @property
    def monitor(self) -> bool:
        """Weight 0: the reward only measures."""
        return self.weight == 0.0

    def bind(self, trainer, *, settings: ProbeSettings | None = None) -> CouplingReward:
        """Give the reward its trainer's policy and tokenizer; check what it needs, before step 0.

        ``settings`` (the callback's) is used when the reward was built without its own.
        """
        funcs = list(getattr(trainer, "reward_funcs", None) or [])
        index = next((i for i, f in enumerate(funcs) if f is self), None)
        if index is None:
            raise ConfigError(
                "CouplingReward.bind: this reward is not one of the trainer's reward_funcs; pass it to "
                "GRPOTrainer(reward_funcs=[..., reward]) and bind it to that trainer"
            )
        base = self._settings or settings or ProbeSettings()
        self.settings = dataclasses.replace(base, probes=("early_answering",), max_cuts=self.max_cuts)
        weights = getattr(trainer, "reward_weights", None)
        self.weight = float(weights[index]) if weights is not None else 1.0
        if self.weight != 0.0 and self.sample:
            logger.warning(
                "CouplingReward: sample=%d with reward weight %g: the rollouts not sampled get no coupling "
                "term; sample=0 rewards every rollout", self.sample, self.weight,
            )
        self._check_columns(getattr(trainer, "train_dataset", None))
        tokenizer = resolve_tokenizer(trainer)
        # Built once now so that a slow tokenizer or a layout the chat template cannot render is a
        # ConfigError here; rebuilt at a call only if the trainer has replaced its model object.
        self._probe = RolloutProbe(trainer.model, tokenizer, self.settings)
        self.trainer = trainer
        return self

    def _check_columns(self, dataset) -> None:
        columns = getattr(dataset, "column_names", None)
        if columns is None:  # an iterable data set: checked at the first call instead
            return
        if self.reward_on == "correct" and "answer" not in columns:
            raise ConfigError(
                "CouplingReward(reward_on='correct') needs each rollout's gold answer: the training data set has "
                f"no 'answer' column (columns: {columns}); add one, or use reward_on='all'"
            )
        if "kind" in columns and "choices" not in columns and "choice" in set(dataset["kind"]):
            raise ConfigError(
                "CouplingReward: multiple-choice rows need their options in a 'choices' column (the letters "
                "after the cue are scored); faithcb.training_rows(..., fmt='prompt') writes it"
            )

    # ------------------------------------------------------------------ one step
    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Sequence[Sequence[int]] | None = None,
        *, trainer_state=None, log_metric=None, **columns: Any,
    ) -> list[float | None]:
        if not self.bound:
            raise ConfigError(
                "CouplingReward is not bound to its trainer: attach a FaithfulnessCallback to the trainer, or "
                "call reward.bind(trainer) before trainer.train()"
            )
        start = time.perf_counter()
        step = getattr(trainer_state, "global_step", 0)
        picked = self._pick(len(prompts), step)
        rewards: list[float | None] = [None] * len(prompts)
        try:
            records = self._score(lambda: [self._rollout(i, prompts, completions, completion_ids, columns) for i in picked])
        except ConfigError:
            raise
        except Exception as exc:  # reported, not fatal: the step trains on its other rewards
            logger.warning("faithcb: the rollout probe failed at step %s: %s: %s", step, type(exc).__name__, exc)
            if log_metric is not None:
                log_metric(logkeys.ROLLOUT + "probe_failed", 1.0)
            return rewards
        self.last_records = records
        for i, record in zip(picked, records):
            rewards[i] = self._reward(record)
        if log_metric is not None:
            summary = rollout_summary(records, time.perf_counter() - start, gold="answer" in columns)
            summary["probe_failed"] = 0.0
            for name, value in summary.items():
                if not math.isnan(value):  # TRL averages what the processes logged
                    log_metric(logkeys.ROLLOUT + name, value)
        return rewards

    def _pick(self, n: int, step: int) -> list[int]:
        if not self.sample or n <= self.sample:
            return list(range(n))
        rank = self.trainer.accelerator.process_index
        # A private generator (seeded by step and rank): the training RNG streams stay untouched.
        return sorted(random.Random(f"{self.seed}:{step}:{rank}").sample(range(n), self.sample))

    def _rollout(self, i: int, prompts, completions, completion_ids, columns: dict[str, list]) -> Rollout:
        tokenizer = self._probe.lm.tokenizer
        prompt, completion = prompts[i], completions[i]
        if isinstance(prompt, str):  # tokenized as TRL tokenizes plain prompts
            prompt_text = prompt
            prompt_ids = tokenizer(text=prompt)["input_ids"]
        else:  # a conversation: rendered as TRL renders it for generation
            args = self.trainer.args
            kwargs = dict(getattr(args, "chat_template_kwargs", None) or {})
            prompt_text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False, **kwargs)
            prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                                       return_dict=True, **kwargs)["input_ids"]
        text = completion if isinstance(completion, str) else "".join(m.get("content") or "" for m in completion)
        ids = completion_ids[i] if completion_ids is not None else None
        limit = getattr(self.trainer.args, "max_completion_length", None)
        # A completion ended when it holds an end token or stopped short of the trainer's limit.
        ended = ids is None or bool(ids and ids[-1] in self._probe.lm.eos_ids) or (limit is not None and len(ids) < limit)
        return Rollout(_problem(prompt_text, i, columns), list(prompt_ids), text, ended=ended)

    def _score(self, rollouts: Callable[[], list[Rollout]]) -> list[dict[str, Any]]:
        """Score the rollouts ``rollouts()`` builds; built inside the lockstep, so that a rank that fails
        while building them still runs its share of forward passes and the other ranks go on."""
        trainer = self.trainer
        # Under ZeRO-3 the weights are gathered, gradient checkpointing is paused, and every rank runs as
        # many forward passes as the busiest (ranks score different rollouts): the rounds' machinery.
        with unwrapped_model(trainer) as model, forwards_in_lockstep(model, trainer.accelerator):
            if self._probe.lm.model is not model:
                self._probe = RolloutProbe(model, self._probe.lm.tokenizer, self.settings)
            return self._probe.records(rollouts())

    def _reward(self, record: dict[str, Any]) -> float | None:
        score = record.get("coupling", math.nan)
        if math.isnan(score):
            return None
        if self.reward_on == "correct" and record.get("correct") is not True:
            return 0.0
        return score


def bind_coupling_rewards(trainer, settings: ProbeSettings) -> None:
    """Bind the trainer's unbound ``CouplingReward``s, with ``settings`` (the callback's) unless they have their own."""
    for func in getattr(trainer, "reward_funcs", None) or []:
        if isinstance(func, CouplingReward) and not func.bound:
            func.bind(trainer, settings=settings)


def _problem(prompt_text: str, i: int, columns: dict[str, list]) -> Problem:
    """The rollout's problem: its gold answer and kind from the data set's columns.

    The question is the prompt's text: rollouts of one prompt are one problem (one unit of the
    metrics' intervals), as samples of one problem are in rounds.
    """
    def column(name: str):  # row i's value, None where the data set has no such column
        values = columns.get(name)
        return values[i] if values else None

    kind = column("kind") or "number"
    choices = tuple(column("choices") or ())
    if kind == "choice" and not choices:
        raise ConfigError("CouplingReward: a multiple-choice row has no 'choices' column (its options)")
    gold = column("answer")
    answer = normalize_answer(str(gold), kind, len(choices) or 5) if gold is not None else None
    return Problem(prompt_text, answer or "", kind, choices)
