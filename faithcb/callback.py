"""``FaithfulnessCallback``: probe rounds on the live model during training.

Usage (TRL convention — the trainer first, then ``add_callback``)::

    trainer.add_callback(FaithfulnessCallback(trainer, "heldout.jsonl", FaithConfig()))

This module only decides *when* to probe and *where results go*; the measuring is
``faithcb.engine``, early stopping ``faithcb.stopping``, the JSONL history ``faithcb.history`` and
the W&B extras ``faithcb.wandb_sink``. Mechanics that shaped it:

- Scalars go through ``transformers.Trainer.log`` — the base method, not a TRL override: TRL's
  ``SFTTrainer.log``/``GRPOTrainer.log`` merge and *clear* their own accumulated training
  metrics, so calling them from a callback would steal those metrics from the trainer's next log.
  The base method reaches every ``report_to`` integration (W&B, TensorBoard, MLflow...) at the
  current global step.
- Keys added to ``logs`` in ``on_log`` never reach W&B (the integrations may run first), and
  ``Trainer.evaluate`` logs before ``on_evaluate``: hence explicit ``log`` calls.
- Under DDP/FSDP/ZeRO-3 the round's problems are split across processes and the records
  gathered, so every process ends the round with the same metrics and the same early-stopping
  decision; a process whose probe raises still reaches the gather, so nobody waits forever.
  Every rank handles as many problems (short shares padded with discarded repeats) and makes
  as many forward passes (``_forwards_in_lockstep``): with sharded weights a pass is collective.
- Early-stopping state rides in the checkpoint through ``ExportableState`` and is restored in
  ``on_train_begin`` when training resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ExportableState

from faithcb.budget import OverheadBudget
from faithcb.config import FaithConfig
from faithcb.data import ProbeSet
from faithcb.engine import FaithfulnessEngine, RoundResult, aggregate
from faithcb.errors import ConfigError, ProbeError, ProblemFormatError
from faithcb.generation import check_generation
from faithcb.history import HistoryWriter, round_lines
from faithcb.preflight import check_evaluator, check_setup, resolve_tokenizer
from faithcb.probes import probe_metrics
from faithcb.prompting import Prompter, PromptStyle
from faithcb.results import COUNT_METRICS, metric_values, round_warnings
from faithcb.stats import paired_difference
from faithcb.stopping import EarlyStopper
from faithcb.tensorboard_layout import write_for_trainer
from faithcb.wandb_sink import WandbReporter

logger = logging.getLogger(__name__)

PREFIX = "faith/"  # metric values: one W&B/TensorBoard section
CI_PREFIX = "faith_ci/"  # their 95% intervals, kept out of the main section
N_PREFIX = "faith_n/"  # how many problems each value is over
DELTA_PREFIX = "faith_delta/"  # change from the baseline round, paired over the same problems
DELTA_CI_PREFIX = "faith_delta_ci/"  # its paired 95% interval
MISSING_PREFIX = "faith_missing/"  # 1 for a headline metric the round could not measure (NaN)
BASE_PREFIX = "faith_base/"  # the PEFT base model (adapters disabled), same names
CURVE_PREFIX = "faith_curve/"  # early-answering curve on the fixed grid


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
        self.config = config or FaithConfig()
        cfg = self.config
        source = problems if problems is not None else cfg.faith_problems
        if source is None:
            raise ConfigError("faith_problems: no problems given; pass problems=... or set faith_problems")
        try:
            self.problem_set = ProbeSet.load(source)
        except ProblemFormatError as exc:  # name the setting the problems came from, keep the type
            raise ProblemFormatError(f"faith_problems: {exc}") from exc
        self.problems = self.problem_set.sample(cfg.faith_num_problems, cfg.faith_seed)
        # Validated once; every round reads the same immutable settings.
        self.settings = cfg.probe_settings(style=style)
        self._check_against_trainer()
        check_evaluator(cfg.faith_evaluator, trainer.model, field="faith_evaluator")
        self.tokenizer = resolve_tokenizer(trainer)
        self.prompter = Prompter.for_tokenizer(self.tokenizer, self.settings.style)
        check_setup(
            trainer.model, self.tokenizer, self.prompter,
            cfg.faith_evaluator, self.problems[0] if self.problems else None, field_prefix="faith_",
        )
        check_generation(trainer.model, self.settings.generation)
        self.stopper = EarlyStopper.from_config(cfg)
        self.budget = OverheadBudget(cfg.faith_max_overhead)
        self.history_writer = HistoryWriter(
            trainer.args.output_dir or ".", cfg.faith_history_file, log_records=cfg.faith_log_records
        )
        self.wandb = WandbReporter(cfg.faith_probes, log_records=cfg.faith_log_records)
        self._headline_metrics = [m.name for p in cfg.faith_probes for m in probe_metrics(p) if m.headline]
        # Round state (exported into checkpoints, see state()).
        self.history: list[dict[str, Any]] = []
        self.stopped_at: int | None = None
        self.best_step: int | None = None  # the round with early stopping's best value so far
        self.probed_steps: list[int] = []
        self._schedule: set[int] = set()
        self._base_records: list[dict] | None = None
        self._warned_health = False
        self._baseline_values: dict[str, dict[str, float]] | None = None
        # The step-0 round: given (measured by another run) or, once measured, this run's own.
        self.start_round: RoundResult | None = self._check_start_round(start_round)

    # Early stopping's counters, readable where they always were.
    best = property(lambda self: self.stopper.best)
    baseline = property(lambda self: self.stopper.baseline)
    bad_rounds = property(lambda self: self.stopper.bad_rounds)

    # ------------------------------------------------------------------ validation
    def _check_against_trainer(self) -> None:
        cfg, args = self.config, self.trainer.args
        if getattr(args, "restore_callback_states_from_checkpoint", False):
            raise ConfigError(
                "restore_callback_states_from_checkpoint: must stay False with FaithfulnessCallback; it "
                "restores its own state on resume (Trainer would rebuild it without its trainer)"
            )
        if cfg.faith_on_evaluate and str(getattr(args, "eval_strategy", "no")) in ("no", "IntervalStrategy.NO"):
            raise ConfigError("faith_on_evaluate: the trainer never evaluates (eval_strategy='no')")
        if cfg.faith_every_n_steps and args.max_steps > 0 and cfg.faith_every_n_steps > args.max_steps:
            raise ConfigError(
                f"faith_every_n_steps: {cfg.faith_every_n_steps} exceeds max_steps={args.max_steps}, "
                "so it never fires; lower it or use faith_num_rounds"
            )

    def _check_start_round(self, start_round: RoundResult | None) -> RoundResult | None:
        if start_round is None:
            return None
        if not self.config.faith_round_at_start:
            raise ConfigError("start_round: given, but faith_round_at_start=False never uses it")
        given = sorted({r["id"] for r in start_round.records})
        if given != sorted({p.id for p in self.problems}):
            raise ConfigError(
                f"start_round: it probed other problems ({len(given)}) than this callback's "
                f"({len(self.problems)}); a shared step-0 round must be of the same problems"
            )
        return start_round

    # ------------------------------------------------------------------ state for resume
    def state(self) -> dict:
        return {
            "args": {},
            "attributes": {
                "history": self.history,
                **self.stopper.state(),
                "baseline_values": self._baseline_values,
                "stopped_at": self.stopped_at,
                "probed_steps": self.probed_steps,
                "best_step": self.best_step,
                "budget": self.budget.state(time.perf_counter()),
            },
        }

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
        self._baseline_values = attributes.get("baseline_values")
        self.budget.load_state(attributes.get("budget") or {})

    # ------------------------------------------------------------------ schedule
    def _make_schedule(self, max_steps: int) -> set[int]:
        cfg = self.config
        if cfg.faith_every_n_steps:
            return set(range(cfg.faith_every_n_steps, max_steps + 1, cfg.faith_every_n_steps))
        if cfg.faith_num_rounds and max_steps > 0:
            n = cfg.faith_num_rounds
            return {max(1, round(i * max_steps / n)) for i in range(1, n + 1)}
        return set()

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step > 0:
            self._restore(state)  # resuming: continue the counters, do not re-probe the baseline
            if state.is_world_process_zero:
                self.history_writer.rewind(state.global_step)
        self.budget.start(time.perf_counter())
        self._schedule = self._make_schedule(state.max_steps)
        if state.is_world_process_zero:  # once per run: the layout; dashboards: TB's layout, W&B's metric axes
            logger.info("faithcb: prompt layout %r: %s", self.prompter.layout, self.prompter.reason)
            write_for_trainer(self.trainer, self.config.faith_probes)
            self.wandb.define_metrics()
        if state.global_step == 0 and self.config.faith_round_at_start:
            self._probe(state, control, reason="start")
        return control

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        at_end = self.config.faith_round_at_end and step >= state.max_steps
        if at_end:
            self._probe(state, control, reason="end")  # the closing round always runs
        elif step in self._schedule:
            if self._budget_allows():
                self._probe(state, control, reason="schedule")
            else:
                self.budget.skipped += 1
        return control

    def _budget_allows(self) -> bool:
        """Whether the next scheduled round fits ``faith_max_overhead``; the same answer on every rank.

        Ranks measure slightly different times; rank 0 decides and the others follow, so every
        process probes at the same steps (a round is collective under DDP).
        """
        allowed = self.budget.allows(time.perf_counter())
        accelerator = self.trainer.accelerator
        if accelerator.num_processes == 1 or self.budget.max_fraction <= 0:
            return allowed
        from accelerate.utils import broadcast_object_list

        decision = [allowed]
        broadcast_object_list(decision, from_process=0)
        return bool(decision[0])

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.config.faith_on_evaluate:
            self._probe(state, control, reason="evaluate")
            if metrics is not None:
                self._add_eval_metrics(args, state, metrics)
        return control

    def _add_eval_metrics(self, args, state, metrics: dict) -> None:
        """The round's values as ``eval_faith/<name>`` in the evaluation's metrics.

        The Trainer picks its best checkpoint from this very dict after ``on_evaluate``, so
        ``metric_for_best_model="faith/early_answering_aoc"`` (with ``greater_is_better``) makes
        ``load_best_model_at_end`` keep the most faithful checkpoint. (The Trainer has already
        logged the dict, so nothing is logged twice.) A round that measured nothing gives NaN,
        which is never best, rather than a missing key, which would stop training.
        """
        summary = self.history[-1] if self.history and self.history[-1].get("step") == state.global_step else {}
        for name, value in summary.items():
            if name != "step":
                metrics[f"eval_{PREFIX}{name}"] = value
        wanted = args.metric_for_best_model or ""
        wanted = wanted if wanted.startswith("eval_") else f"eval_{wanted}"
        if wanted.startswith(f"eval_{PREFIX}"):
            metrics.setdefault(wanted, math.nan)

    def on_train_end(self, args, state, control, **kwargs):
        # Training stopped before max_steps (another callback, or ours): still close the curve.
        if self.config.faith_round_at_end and state.global_step not in self.probed_steps:
            self._probe(state, control, reason="end")
        if state.is_world_process_zero:
            self.wandb.log_summary_chart(self.history)
        return control

    # ------------------------------------------------------------------ one round
    def _probe(self, state, control, *, reason: str) -> None:
        step = state.global_step
        if step in self.probed_steps:
            return
        self.probed_steps.append(step)
        # Training's next draws (dropout, data order) must not depend on whether a round ran.
        # ProbeLM.session restores the RNGs around the model's work; this also covers the rest of
        # the round (a library imported on first use drew from ``random``: rich seeds an id).
        with _rng_kept():
            self._round(state, control, reason=reason)

    def _round(self, state, control, *, reason: str) -> None:
        step = state.global_step
        round_start = start = time.perf_counter()
        if step == 0 and self.start_round is not None:
            # Measured already on this very starting model: log it, do not measure it again.
            result, error = dataclasses.replace(self.start_round, scalars=dict(self.start_round.scalars)), None
        else:
            result, error = self._measure(base=False)
            if step == 0 and result is not None:
                self.start_round = result
        seconds = time.perf_counter() - start
        logs: dict[str, float] = {}
        changes: dict[str, dict[str, float]] = {}
        if result is None:
            logs[PREFIX + "probe_failed"] = 1.0
            self._warn(step, error)
        else:
            result.scalars["seconds"] = seconds
            changes = self._paired_changes(result)
            logs.update(_round_logs(result, changes, self._headline_metrics))
            if result.errors:
                self._warn(step, "; ".join(result.errors))
            self._warn_health_once(result)
        base = self._base_round(step)
        if base is not None:
            logs.update(_flatten(base, BASE_PREFIX, None))
        now = time.perf_counter()
        self.budget.add_round(now - round_start)
        overhead = self.budget.fraction(now)
        if step > 0 and math.isfinite(overhead):  # the step-0 round has no training to compare with
            logs[PREFIX + "overhead_fraction"] = overhead
        logs[PREFIX + "rounds_skipped"] = float(self.budget.skipped)

        stop_reason = self._early_stopping(result, changes, step) if result is not None else None
        if stop_reason:
            logs[PREFIX + "early_stop"] = 1.0
            control.should_training_stop = True
            # save_strategy="best": the Trainer replaces should_save with "is this evaluation a
            # new best" after on_evaluate, so the request would be lost; _round saves instead.
            control.should_save = not _saves_only_best(self.trainer.args)
            self.stopped_at = step
            logger.warning("faithcb: stopping training at step %d: %s", step, stop_reason)
        # Trainer.log ends in CallbackHandler.on_log, which clears control.should_log: left so, the
        # trainer would skip its own loss log at every step that has a round (all of them when
        # logging_steps == faith_every_n_steps). Keep the trainer's decision.
        should_log = control.should_log
        Trainer.log(self.trainer, logs)
        control.should_log = should_log
        self.trainer.control.should_log = should_log

        summary = {"step": step}
        if result is not None:
            summary.update({k: v["value"] for k, v in result.metrics.items()})
        self.history.append(summary)
        if state.is_world_process_zero:
            lines = round_lines(
                step=step, epoch=state.epoch, run=self._run_name(), reason=reason, seconds=seconds,
                result=result, base=base, error=error, early_stop=stop_reason,
            )
            if stop_reason:  # where to go back to: the round early stopping found best
                for line in lines:
                    if line.get("role") == "model":
                        line["best_step"] = self.best_step
            records = {} if result is None else {"model": result.records}
            if result is not None and base is not None:
                records["base"] = base.records
            self.history_writer.write_round(lines, records)
            if result is not None:
                self.wandb.log_round_table(step, result.records)
                self.wandb.log_round_curve(step, result.curve)
        if stop_reason and _saves_only_best(self.trainer.args):
            # Every rank takes this branch (the decision is gathered), as saving is collective.
            # Last in the round, so the checkpoint's callback state includes this round.
            self.trainer._save_checkpoint(self.trainer.model_wrapped, trial=None)

    def _measure(self, *, base: bool) -> tuple[RoundResult | None, str | None]:
        """Run this process's share of the round and gather everyone's records."""
        trainer, cfg = self.trainer, self.config
        accelerator = trainer.accelerator
        records: list[dict] = []
        error: str | None = None
        start = time.perf_counter()
        settings = self.settings
        if base and settings.evaluator != "live":
            settings = dataclasses.replace(settings, evaluator="live")  # the model already *is* the base
        mine, padding = _share(self.problems, accelerator.process_index, accelerator.num_processes)
        try:
            with self._unwrapped_model() as model, _forwards_in_lockstep(model, accelerator):
                context = model.disable_adapter() if base else contextlib.nullcontext()
                with context:
                    engine = FaithfulnessEngine(
                        model,
                        self.tokenizer,
                        settings,
                        show_progress=cfg.faith_show_progress and accelerator.is_main_process,
                        strict=cfg.faith_strict,
                    )
                    records = engine.records(mine)
                    if padding:  # dummy work: every rank handles as many problems; discarded
                        engine.records(padding)
        except ConfigError:
            raise  # a setup error is never a failed round
        except Exception as exc:  # reported, not fatal: training must go on
            if cfg.faith_strict and accelerator.num_processes == 1:
                raise
            error = f"{type(exc).__name__}: {exc}"
        gathered = _gather(accelerator, (records, error))
        errors = [e for _, e in gathered if e]
        if errors:
            if cfg.faith_strict:
                raise ProbeError("; ".join(errors))
            return None, "; ".join(errors)
        all_records = [r for recs, _ in gathered for r in recs]
        return aggregate(all_records, seconds=time.perf_counter() - start,
                         resamples=cfg.faith_bootstrap_resamples), None

    @contextlib.contextmanager
    def _unwrapped_model(self):
        """The bare model, with ZeRO-3 weights gathered and gradient checkpointing paused (TRL's helper)."""
        from trl.models import unwrap_model_for_generation

        trainer = self.trainer
        wrapped = getattr(trainer, "model_wrapped", None) or trainer.model
        with unwrap_model_for_generation(
            wrapped, trainer.accelerator,
            gradient_checkpointing_kwargs=getattr(trainer.args, "gradient_checkpointing_kwargs", None),
        ) as model:
            yield model

    def _base_round(self, step: int) -> RoundResult | None:
        """The PEFT base model's round; computed once while the base weights are frozen."""
        model = self.trainer.model
        if not (self.config.faith_base_reference and hasattr(model, "disable_adapter")):
            return None
        if self._base_records is None or _base_weights_train(model):
            result, error = self._measure(base=True)
            if result is None:
                self._warn(step, f"base reference (adapters disabled): {error}")
                return None
            self._base_records = result.records
            return result
        return aggregate(self._base_records, resamples=self.config.faith_bootstrap_resamples)

    def _paired_changes(self, result: RoundResult) -> dict[str, dict[str, float]]:
        """Every metric's change from the baseline (first) round, paired over the same problems.

        The first round's per-problem values are kept (and exported with the state), not its
        records, so a resumed run still compares with the same baseline.
        """
        names = list(result.metrics)
        if self._baseline_values is None:
            self._baseline_values = {name: metric_values(result.records, name) for name in names}
            return {}
        now_values = {name: metric_values(result.records, name) for name in names}
        return {
            name: paired_difference(
                self._baseline_values.get(name, {}), now_values[name],
                kind="continuous" if name in COUNT_METRICS else "auto",
            )
            for name in names
        }

    def _early_stopping(self, result: RoundResult, changes: dict[str, dict[str, float]], step: int) -> str | None:
        metric = result.metrics.get(self.stopper.metric, {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan})
        best_before = self.stopper.best
        verdict = self.stopper.update(
            metric["value"], (metric["ci_low"], metric["ci_high"]), change=changes.get(self.stopper.metric)
        )
        if self.stopper.best is not None and (best_before is None or self.stopper.best != best_before):
            self.best_step = step
        return verdict

    # ------------------------------------------------------------------ outputs
    def _warn(self, step: int, message: str | None) -> None:
        # Errors are gathered (every rank knows every rank's), so one warning, not one per process.
        if not self.trainer.accelerator.is_main_process:
            return
        warnings.warn(f"faithcb: probe round at step {step} failed: {message}", RuntimeWarning, stacklevel=2)

    def _warn_health_once(self, result: RoundResult) -> None:
        """Too many chains cut by the limit: say so once per run, naming the setting to raise."""
        if self._warned_health or not self.trainer.accelerator.is_main_process:
            return
        s = self.settings
        messages = round_warnings(
            result, chain_limit=f"faith_max_chain_tokens={s.max_chain_tokens}",
            answer_limit=f"faith_answer_max_tokens={s.answer_max_tokens}",
        )
        if messages:
            self._warned_health = True
            warnings.warn("faithcb: " + "; ".join(messages), RuntimeWarning, stacklevel=2)

    def _run_name(self) -> str:
        args = self.trainer.args
        return getattr(args, "run_name", None) or Path(args.output_dir or ".").name


# ---------------------------------------------------------------------- helpers
def _round_logs(result: RoundResult, changes: dict[str, dict[str, float]], headline: list[str]) -> dict[str, float]:
    """Everything a measured round logs: values, intervals, n, paired changes, flags, the curve."""
    logs = _flatten(result, PREFIX, CI_PREFIX)
    logs.update({N_PREFIX + name: float(m["n"]) for name, m in result.metrics.items()})
    # A NaN value is left out of faith/ (charts cannot draw it); say so instead of going quiet.
    for name in headline:
        if not math.isfinite(result.metrics.get(name, {}).get("value", math.nan)):
            logs[MISSING_PREFIX + name] = 1.0
    for name, change in changes.items():
        if math.isfinite(change["value"]):
            logs[DELTA_PREFIX + name] = change["value"]
        if math.isfinite(change["ci_low"]) and math.isfinite(change["ci_high"]):
            logs[f"{DELTA_CI_PREFIX}{name}_low"] = change["ci_low"]
            logs[f"{DELTA_CI_PREFIX}{name}_high"] = change["ci_high"]
    curve = zip(result.curve.get("x", []), result.curve.get("mean", []))
    logs.update({f"{CURVE_PREFIX}keep_{round(x * 100):03d}": y for x, y in curve if math.isfinite(y)})
    return logs


def _flatten(result: RoundResult, prefix: str, ci_prefix: str | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, m in result.metrics.items():
        if not math.isfinite(m["value"]):
            continue
        out[prefix + name] = m["value"]
        # An interval needs two problems (n < 2 gives NaN bounds): log the bounds that exist.
        if ci_prefix and math.isfinite(m["ci_low"]) and math.isfinite(m["ci_high"]):
            out[f"{ci_prefix}{name}_low"] = m["ci_low"]
            out[f"{ci_prefix}{name}_high"] = m["ci_high"]
    for name, v in result.scalars.items():
        if math.isfinite(v):
            out[prefix + name] = v
    return out


@contextlib.contextmanager
def _rng_kept():
    """Restore the Python, NumPy, torch CPU and CUDA RNG states on exit."""
    import random

    import torch

    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy comes with torch's usual installs
        np = None
    python, cpu = random.getstate(), torch.get_rng_state()
    numpy = np.random.get_state() if np is not None else None
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(python)
        if numpy is not None:
            np.random.set_state(numpy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def _saves_only_best(args) -> bool:
    return str(getattr(args, "save_strategy", "no")) in ("best", "SaveStrategy.BEST")


def _share(problems: list, rank: int, world: int) -> tuple[list, list]:
    """This rank's contiguous share of the round's problems, and the padding it runs and discards.

    The split is ``accelerate``'s (the first ``len % world`` ranks take one more), so the gathered
    records come back in problem order. A shorter share is padded with repeats of a problem, so
    every rank handles the same number of problems and about the same work.
    """
    if world == 1 or not problems:
        return list(problems), []
    size, extra = divmod(len(problems), world)
    start = rank * size + min(rank, extra)
    mine = list(problems[start : start + size + (rank < extra)])
    longest = size + (extra > 0)
    filler = mine[0] if mine else problems[0]
    return mine, [filler] * (longest - len(mine))


@contextlib.contextmanager
def _forwards_in_lockstep(model, accelerator):
    """Make every rank run the same number of forward passes during a round.

    Ranks probe different problems, so their chains (hence generation steps and scored
    variants) differ in length and number. Under FSDP or DeepSpeed ZeRO-3 without gathered
    weights every forward pass is collective (its layers' weights are all-gathered), so unequal
    counts hang the job. Padding the problems alone cannot fix that; this does, the way
    ``generate(synced_gpus=True)`` does for one call: before each forward pass (at the input
    embedding, which every pass calls once) the ranks all-reduce how many of them still run real
    work; a rank that has finished runs one-token dummy passes until that count is 0, so every
    rank makes (most real passes on any rank) + 1 passes, matched one to one. ``generate``'s own
    per-call sync is switched off meanwhile: its extra collectives would not pair up with ours.

    DeepSpeed ZeRO-3's start-of-forward hook is paused too. TRL's unwrap removes only the per-layer
    hooks; the one on the outermost module (the PEFT model under LoRA) stays, and until its
    trace is complete it broadcasts at each pass through that module. ``generate`` on a PEFT
    model enters below it, scoring and dummy passes through it, so a rank that still generates
    and one that already scores met our all-reduce with a broadcast in the same pass: a hang.
    With the weights gathered for the round and the layer hooks gone, the hook has nothing to do.
    """
    if accelerator.num_processes == 1:
        yield
        return
    import torch
    import torch.distributed as dist

    def pause_deepspeed_start_hook():
        """Remove ZeRO-3's start-of-forward hook; return a function that puts it back in place."""
        engine = getattr(getattr(accelerator, "deepspeed_engine_wrapped", None), "engine", None)
        optimizer = getattr(engine, "optimizer", None)  # the ZeRO-3 optimizer, or the bare offload
        offload = getattr(optimizer, "parameter_offload", optimizer)
        start = getattr(offload, "fwd_pre_hook", None)
        hooks = start.hooks_dict_ref() if start is not None else None
        if hooks is None or start.id not in hooks:
            return lambda: None
        order = list(hooks)
        hook = hooks.pop(start.id)

        def restore():
            hooks[start.id] = hook
            for key in [k for k in order if k in hooks] + [k for k in hooks if k not in order]:
                hooks.move_to_end(key)  # the original order: DeepSpeed's hook runs first again

        return restore

    restore_deepspeed_hook = pause_deepspeed_start_hook()

    embedding = model.get_input_embeddings()
    flag = torch.zeros(1, device=accelerator.device)
    state = {"real": True, "busy": 1}

    def exchange(_module, _args):
        flag.fill_(1.0 if state["real"] else 0.0)
        dist.all_reduce(flag)
        state["busy"] = int(flag.item())

    handle = embedding.register_forward_pre_hook(exchange)
    had_generate = "generate" in vars(model)
    original_generate = model.generate
    model.generate = functools.partial(original_generate, synced_gpus=False)
    try:
        yield
    finally:
        state["real"] = False
        was_training = model.training
        dummy = torch.zeros((1, 1), dtype=torch.long, device=embedding.weight.device)
        try:
            model.eval()  # no dropout: a dummy pass draws nothing from the RNG
            with torch.no_grad():
                while True:
                    model(input_ids=dummy, use_cache=False)
                    if state["busy"] == 0:
                        break
        finally:
            model.train(was_training)
            handle.remove()
            restore_deepspeed_hook()
            if had_generate:
                model.generate = original_generate
            else:
                del model.generate


def _gather(accelerator, payload):
    if accelerator.num_processes == 1:
        return [payload]
    from accelerate.utils import gather_object

    return gather_object([payload])


def _base_weights_train(model) -> bool:
    """True when any non-adapter weight is trainable (then the base reference must be re-measured)."""
    return any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n and "modules_to_save" not in n)
