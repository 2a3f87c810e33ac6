"""``FaithfulnessCallback``: probe rounds on the live model during training.

Usage (TRL convention — the trainer first, then ``add_callback``)::

    trainer.add_callback(FaithfulnessCallback(trainer, "heldout.jsonl", FaithConfig()))

This module decides *when* to probe and *where results go*: the schedule and the overhead
budget, the state that rides in checkpoints, the logs, the JSONL history, W&B's extras, early
stopping's verdict and the checkpoint it saves. The round itself is ``faithcb.rounds`` (measure,
base round, paired changes, warnings), collectives are ``faithcb.distributed``, the key scheme
``faithcb.logkeys``. Mechanics that shaped it:

- Scalars go through ``transformers.Trainer.log`` — the base method, not a TRL override: TRL's
  ``SFTTrainer.log``/``GRPOTrainer.log`` merge and *clear* their own accumulated training
  metrics, so calling them from a callback would steal those metrics from the trainer's next log.
  The base method reaches every ``report_to`` integration (W&B, TensorBoard, MLflow...) at the
  current global step.
- Keys added to ``logs`` in ``on_log`` never reach W&B (the integrations may run first), and
  ``Trainer.evaluate`` logs before ``on_evaluate``: hence explicit ``log`` calls.
- Every process ends a round with the same gathered metrics, so every process takes the same
  early-stopping decision and probes at the same steps (rank 0's budget decision is broadcast).
- Early-stopping state rides in the checkpoint through ``ExportableState`` and is restored in
  ``on_train_begin`` when training resumes.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ExportableState

from faithcb import logkeys
from faithcb.budget import OverheadBudget
from faithcb.checkpointing import check_save_checkpoint, save_checkpoint, saves_only_best
from faithcb.config import FaithConfig
from faithcb.distributed import check_zero3_hook, decide_on_rank0
from faithcb.generation import check_generation
from faithcb.history import HistoryWriter, round_lines
from faithcb.model_card import add_to_model_card
from faithcb.preflight import (
    check_evaluator,
    check_setup,
    check_start_round,
    check_trainer_args,
    load_problems,
    resolve_tokenizer,
)
from faithcb.probes import probe_metrics
from faithcb.prompting import Prompter, PromptStyle
from faithcb.results import RoundResult
from faithcb.reward import bind_coupling_rewards
from faithcb.rng import rng_kept
from faithcb.rounds import Round, RoundRunner
from faithcb.runinfo import run_info
from faithcb.stopping import EarlyStopper
from faithcb.tensorboard_layout import write_for_trainer
from faithcb.wandb_sink import WandbReporter

logger = logging.getLogger(__name__)


class FaithfulnessCallback(TrainerCallback, ExportableState):
    """Periodic faithfulness rounds on the live model, logged to every ``report_to`` integration.

    Args:
        trainer: the ``Trainer`` / ``SFTTrainer`` / ``GRPOTrainer`` to probe (its model, tokenizer,
            accelerator and ``output_dir`` are used; the callback must still be added with
            ``trainer.add_callback``).
        problems: held-out problems: a path, ``"synthetic:N"``, a ``ProbeSet`` or a list of
            ``Problem``; default ``config.faith_problems``.
        config: the ``faith_*`` settings (``FaithConfig()`` by default).
        style: the prompt wording (``PromptStyle``); it should match the layout the model is
            trained on (``faithcb.prompting.training_text`` builds training rows in it).
        start_round: a step-0 round measured already on the same starting model, problems and
            settings — another arm of a sweep from one base model, e.g. ``other.start_round`` of
            a finished run's callback: logged as this run's step-0 round instead of measuring it
            again. Its problems must be this callback's.

    Setup mistakes (no or slow tokenizer, a chat template that cannot render the layout, a base
    evaluator without PEFT, a cadence that never fires) raise ``ConfigError`` here, before step 0.

    Example::

        trainer = SFTTrainer(model=model, args=SFTConfig(output_dir="out"), train_dataset=train)
        trainer.add_callback(FaithfulnessCallback(trainer, "heldout.jsonl", FaithConfig(faith_num_rounds=8)))
        trainer.train()
    """

    runner_class = RoundRunner  # the seam for tests: a subclass may script what rounds measure

    def __init__(
        self,
        trainer,
        problems: Any = None,
        config: FaithConfig | None = None,
        *,
        style: PromptStyle | None = None,
        start_round: RoundResult | None = None,
    ):
        self.trainer = trainer
        self.config = cfg = config or FaithConfig()
        self.problems = load_problems(
            problems if problems is not None else cfg.faith_problems,
            num_problems=cfg.faith_num_problems, seed=cfg.faith_seed,
        )
        self.settings = cfg.probe_settings(style=style)  # validated once; every round reads it
        check_trainer_args(cfg, trainer.args)
        check_save_checkpoint(trainer, early_stopping=cfg.faith_early_stopping)
        check_evaluator(cfg.faith_evaluator, trainer.model, field="faith_evaluator")
        self.tokenizer = resolve_tokenizer(trainer)
        self.prompter = Prompter.for_tokenizer(self.tokenizer, self.settings.style)
        check_setup(
            trainer.model, self.tokenizer, self.prompter,
            cfg.faith_evaluator, self.problems[0] if self.problems else None, field_prefix="faith_",
        )
        check_generation(trainer.model, self.settings.generation)
        bind_coupling_rewards(trainer, self.settings)
        self.runner = self.runner_class(
            trainer, self.problems, self.settings, self.tokenizer, cfg,
            start_round=check_start_round(start_round, self.problems, round_at_start=cfg.faith_round_at_start),
        )
        self.stopper = EarlyStopper.from_config(cfg)
        self.budget = OverheadBudget(cfg.faith_max_overhead)
        self.history_writer = HistoryWriter(
            trainer.args.output_dir or ".", cfg.faith_history_file, log_records=cfg.faith_log_records
        )
        self.wandb = WandbReporter(cfg.faith_probes, log_records=cfg.faith_log_records)
        self.run_info = run_info(
            settings=self.settings, problems=self.problems, source=problems if problems is not None else cfg.faith_problems,
            model=trainer.model, layout=self.prompter.layout, config=cfg,
        )
        add_to_model_card(trainer, self.history_writer.path)  # the card the trainer writes gets a Faithfulness section
        self._headline_metrics = [m.name for p in cfg.faith_probes for m in probe_metrics(p) if m.headline]
        # Round state (exported into checkpoints, see state()).
        self.history: list[dict[str, Any]] = []
        self.stopped_at: int | None = None
        self.best_step: int | None = None  # the round with early stopping's best value so far
        self.probed_steps: list[int] = []
        self._schedule: set[int] = set()

    # Early stopping's counters and the step-0 round, readable where they always were.
    best = property(lambda self: self.stopper.best)
    baseline = property(lambda self: self.stopper.baseline)
    bad_rounds = property(lambda self: self.stopper.bad_rounds)
    start_round = property(lambda self: self.runner.start_round)

    # ------------------------------------------------------------------ state for resume
    def state(self) -> dict:
        attributes = {
            "history": self.history, **self.stopper.state(), "baseline_values": self.runner.baseline_values,
            "stopped_at": self.stopped_at, "probed_steps": self.probed_steps, "best_step": self.best_step,
            "budget": self.budget.state(time.perf_counter()),
        }
        return {"args": {}, "attributes": attributes}

    def _restore(self, state) -> None:
        saved = (state.stateful_callbacks or {}).get(type(self).__name__)
        if isinstance(saved, list):
            saved = saved[0] if saved else None
        if not saved:
            return
        attributes = saved.get("attributes", {})
        self.stopper.load_state(attributes)
        self.history = attributes.get("history", [])
        self.stopped_at = attributes.get("stopped_at")
        self.probed_steps = attributes.get("probed_steps", [])
        self.best_step = attributes.get("best_step")
        self.runner.baseline_values = attributes.get("baseline_values")
        self.budget.load_state(attributes.get("budget") or {})

    # ------------------------------------------------------------------ when
    def _make_schedule(self, max_steps: int) -> set[int]:
        cfg = self.config
        if cfg.faith_every_n_steps:
            return set(range(cfg.faith_every_n_steps, max_steps + 1, cfg.faith_every_n_steps))
        if cfg.faith_num_rounds and max_steps > 0:
            n = cfg.faith_num_rounds
            return {max(1, round(i * max_steps / n)) for i in range(1, n + 1)}
        return set()

    def on_train_begin(self, args, state, control, **kwargs):
        check_zero3_hook(self.trainer.accelerator)  # the DeepSpeed engine exists from here on
        if state.global_step > 0:
            self._restore(state)  # resuming: continue the counters, do not re-probe the baseline
            if state.is_world_process_zero:
                self.history_writer.rewind(state.global_step)
        self.budget.start(time.perf_counter())
        self._schedule = self._make_schedule(state.max_steps)
        if state.is_world_process_zero:  # once per run: the layout; dashboards: TB's layout, W&B's metric axes
            logger.info("faithcb: prompt layout %r: %s", self.prompter.layout, self.prompter.reason)
            write_for_trainer(self.trainer, self.config.faith_probes,
                              choice=any(p.kind == "choice" for p in self.problems))  # letter charts need letters
            self.wandb.define_metrics()
            self.wandb.log_run_info(self.run_info)
            if state.global_step == 0:  # a new run (a resumed one continues its history)
                self.history_writer.write_header(self.run_info)
        if state.global_step == 0 and self.config.faith_round_at_start:
            self._probe(state, control, reason="start")
        return control

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if self.config.faith_round_at_end and step >= state.max_steps:
            self._probe(state, control, reason="end")  # the closing round always runs
        elif step in self._schedule:
            if self._budget_allows():
                self._probe(state, control, reason="schedule")
            else:
                self.budget.skipped += 1
        return control

    def _budget_allows(self) -> bool:
        """Whether the scheduled round fits ``faith_max_overhead``: rank 0 decides, every rank follows
        (a round is collective). Without a budget every rank allows it, and nothing is exchanged."""
        allowed = self.budget.allows(time.perf_counter())
        return allowed if self.budget.max_fraction <= 0 else decide_on_rank0(self.trainer.accelerator, allowed)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.config.faith_on_evaluate:
            self._probe(state, control, reason="evaluate")
            if metrics is not None:
                logkeys.add_eval_metrics(metrics, self.history, state.global_step, args.metric_for_best_model)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        # Training stopped before max_steps (another callback, or ours): still close the curve.
        if self.config.faith_round_at_end and state.global_step not in self.probed_steps:
            self._probe(state, control, reason="end")
        if state.is_world_process_zero:
            self.wandb.log_summary_chart(self.history)
        return control

    # ------------------------------------------------------------------ where
    def _probe(self, state, control, *, reason: str) -> None:
        if state.global_step in self.probed_steps:
            return
        self.probed_steps.append(state.global_step)
        start = time.perf_counter()
        # Training's next draws (dropout, data order) must not depend on whether a round ran: the
        # RNGs are restored around the whole round, its reporting included (a library imported
        # on first use draws from ``random``: rich seeds an id).
        with rng_kept():
            done = self.runner.run(state.global_step)
            self.budget.add_round(time.perf_counter() - start)
            self._report(done, state, control, reason=reason)

    def _report(self, done: Round, state, control, *, reason: str) -> None:
        step, result = done.step, done.result
        logs = {logkeys.PROBE_FAILED: 1.0} if result is None else logkeys.round_logs(
            result, done.changes, self._headline_metrics)
        if done.base is not None:
            logs.update(logkeys.metric_logs(done.base, logkeys.BASE, None))
        overhead = self.budget.fraction(time.perf_counter())
        if step > 0 and math.isfinite(overhead):  # the step-0 round has no training to compare with
            logs[logkeys.OVERHEAD] = overhead
        logs[logkeys.ROUNDS_SKIPPED] = float(self.budget.skipped)
        stop_reason = self._early_stopping(done) if result is not None else None
        if stop_reason:
            logs[logkeys.EARLY_STOP] = 1.0
            control.should_training_stop = True
            # save_strategy="best": the Trainer replaces should_save with "is this evaluation a
            # new best" after on_evaluate, so the request would be lost; we save below instead.
            control.should_save = not saves_only_best(self.trainer.args)
            self.stopped_at = step
            logger.warning("faithcb: stopping training at step %d: %s", step, stop_reason)
        # Trainer.log ends in CallbackHandler.on_log, which clears control.should_log: left so, the
        # trainer would skip its own loss log at every step that has a round (all of them when
        # logging_steps == faith_every_n_steps). Keep the trainer's decision.
        should_log = control.should_log
        Trainer.log(self.trainer, logs)
        control.should_log = self.trainer.control.should_log = should_log

        self.history.append({"step": step, **({k: v["value"] for k, v in result.metrics.items()} if result else {})})
        if state.is_world_process_zero:
            self._write_history(done, state, reason, stop_reason)
        if stop_reason and saves_only_best(self.trainer.args):
            # Every rank takes this branch (the decision is gathered), as saving is collective.
            # Last in the round, so the checkpoint's callback state includes this round.
            save_checkpoint(self.trainer)

    def _early_stopping(self, done: Round) -> str | None:
        nan = {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan}
        metric = done.result.metrics.get(self.stopper.metric, nan)
        best_before = self.stopper.best
        verdict = self.stopper.update(
            metric["value"], (metric["ci_low"], metric["ci_high"]), change=done.changes.get(self.stopper.metric)
        )
        if self.stopper.best is not None and (best_before is None or self.stopper.best != best_before):
            self.best_step = done.step
        return verdict

    def _write_history(self, done: Round, state, reason: str, stop_reason: str | None) -> None:
        result, base = done.result, done.base
        lines = round_lines(
            step=done.step, epoch=state.epoch, run=self._run_name(), reason=reason, seconds=done.seconds,
            result=result, base=base, error=done.error, early_stop=stop_reason, best_step=self.best_step,
            changes=done.changes,
        )
        records = {} if result is None else {"model": result.records}
        if result is not None and base is not None:
            records["base"] = base.records
        self.history_writer.write_round(lines, records)
        if result is not None:
            self.wandb.log_round_table(done.step, result.records)
            self.wandb.log_round_curve(done.step, result.curve)

    def _run_name(self) -> str:
        args = self.trainer.args
        return getattr(args, "run_name", None) or Path(args.output_dir or ".").name
