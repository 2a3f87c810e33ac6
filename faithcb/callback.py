"""``FaithfulnessCallback``: probe rounds on the live model during training.

Usage (TRL convention — the trainer first, then ``add_callback``)::

    trainer.add_callback(FaithfulnessCallback(trainer, "heldout.jsonl", FaithConfig()))

This module only decides *when* to probe and *where results go*; the measuring is
``faithcb.engine``. Mechanics that shaped it (see ../shared/docs/DESIGN.md):

- Scalars go through ``transformers.Trainer.log`` — the base method, not a TRL override: TRL's
  ``SFTTrainer.log``/``GRPOTrainer.log`` merge and *clear* their own accumulated training
  metrics, so calling them from a callback would steal those metrics from the trainer's next log.
  The base method reaches every ``report_to`` integration (W&B, TensorBoard, MLflow...) at the
  current global step.
- Keys added to ``logs`` in ``on_log`` never reach W&B (the integrations may run first), and
  ``Trainer.evaluate`` logs before ``on_evaluate``: hence explicit ``log`` calls.
- Under DDP the round's problems are split across processes and the records gathered, so every
  process ends the round with the same metrics and the same early-stopping decision; a process
  whose probe raises still reaches the gather, so nobody waits forever.
- Early-stopping state rides in the checkpoint through ``ExportableState`` and is restored in
  ``on_train_begin`` when training resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ExportableState

from faithcb.config import FaithConfig
from faithcb.data import ProbeSet
from faithcb.engine import FaithfulnessEngine, RoundResult, aggregate
from faithcb.errors import ConfigError, ProbeError, ProblemFormatError
from faithcb.prompting import PromptStyle

logger = logging.getLogger(__name__)

PREFIX = "faith/"  # metric values: one W&B/TensorBoard section
CI_PREFIX = "faith_ci/"  # their 95% intervals, kept out of the main section
BASE_PREFIX = "faith_base/"  # the PEFT base model (adapters disabled), same names
CURVE_PREFIX = "faith_curve/"  # early-answering curve on the fixed grid


class FaithfulnessCallback(TrainerCallback, ExportableState):
    """Periodic faithfulness rounds on the live model, logged to every ``report_to`` integration."""

    def __init__(
        self, trainer, problems: Any = None, config: FaithConfig | None = None, *, style: PromptStyle | None = None
    ):
        self.trainer = trainer
        self.config = config or FaithConfig()
        # The prompt layout the probes read; it should match the layout the model is trained on.
        self.style = style
        cfg = self.config
        source = problems if problems is not None else cfg.faith_problems
        if source is None:
            raise ConfigError("faith_problems: no problems given; pass problems=... or set faith_problems")
        try:
            self.problem_set = ProbeSet.load(source)
        except ProblemFormatError as exc:  # name the setting the problems came from, keep the type
            raise ProblemFormatError(f"faith_problems: {exc}") from exc
        self.problems = self.problem_set.sample(cfg.faith_num_problems, cfg.faith_seed)
        self._check_against_trainer()
        # Early-stopping and history state (exported into checkpoints, see state()).
        self.history: list[dict[str, Any]] = []
        self.best: float | None = None
        self.baseline: float | None = None
        self.bad_rounds = 0
        self.stopped_at: int | None = None
        self.probed_steps: list[int] = []
        self._schedule: set[int] = set()
        self._base_records: list[dict] | None = None

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
        if cfg.faith_evaluator == "base" and not hasattr(self.trainer.model, "disable_adapter"):
            raise ConfigError("faith_evaluator: 'base' needs a PEFT model (one with disable_adapter())")

    # ------------------------------------------------------------------ state for resume
    def state(self) -> dict:
        return {
            "args": {},
            "attributes": {
                "history": self.history,
                "best": self.best,
                "baseline": self.baseline,
                "bad_rounds": self.bad_rounds,
                "stopped_at": self.stopped_at,
                "probed_steps": self.probed_steps,
            },
        }

    def _restore(self, state) -> None:
        saved = (state.stateful_callbacks or {}).get(type(self).__name__)
        if isinstance(saved, list):
            saved = saved[0] if saved else None
        if not saved:
            return
        for key, value in saved.get("attributes", {}).items():
            setattr(self, key, value)

    def _rewind_history_file(self, step: int) -> None:
        """Drop JSONL rounds after the resumed checkpoint's step (like the Trainer's own log_history).

        They came from the run that went on past the checkpoint; the resumed run probes those
        steps again, and keeping both would put every later step twice in the history and report.
        """
        path = Path(self.trainer.args.output_dir or ".") / self.config.faith_history_file
        if not path.is_file():
            return
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = []
        for line in lines:
            try:
                later = json.loads(line).get("step", 0) > step
            except (ValueError, AttributeError, TypeError):
                later = False  # not ours to judge: keep it
            if not later:
                kept.append(line)
        if len(kept) != len(lines):
            path.write_text("".join(kept), encoding="utf-8")

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
                self._rewind_history_file(state.global_step)
        self._schedule = self._make_schedule(state.max_steps)
        if state.global_step == 0 and self.config.faith_round_at_start:
            self._probe(state, control, reason="start")
        return control

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        at_end = self.config.faith_round_at_end and step >= state.max_steps
        if step in self._schedule or at_end:
            self._probe(state, control, reason="end" if at_end else "schedule")
        return control

    def on_evaluate(self, args, state, control, **kwargs):
        if self.config.faith_on_evaluate:
            self._probe(state, control, reason="evaluate")
        return control

    def on_train_end(self, args, state, control, **kwargs):
        # Training stopped before max_steps (another callback, or ours): still close the curve.
        if self.config.faith_round_at_end and state.global_step not in self.probed_steps:
            self._probe(state, control, reason="end")
        if state.is_world_process_zero:
            self._wandb_summary_chart()
        return control

    # ------------------------------------------------------------------ one round
    def _probe(self, state, control, *, reason: str) -> None:
        step = state.global_step
        if step in self.probed_steps:
            return
        self.probed_steps.append(step)
        start = time.perf_counter()
        result, error = self._measure(base=False)
        seconds = time.perf_counter() - start
        logs: dict[str, float] = {}
        if result is None:
            logs[PREFIX + "probe_failed"] = 1.0
            self._warn(step, error)
        else:
            result.scalars["seconds"] = seconds
            logs.update(_flatten(result, PREFIX, CI_PREFIX))
            curve = zip(result.curve.get("x", []), result.curve.get("mean", []))
            logs.update({f"{CURVE_PREFIX}keep_{round(x * 100):03d}": y for x, y in curve if math.isfinite(y)})
            if result.errors:
                self._warn(step, "; ".join(result.errors))
        base = self._base_round(step)
        if base is not None:
            logs.update(_flatten(base, BASE_PREFIX, None))

        stop_reason = self._early_stopping(step, result) if result is not None else None
        if stop_reason:
            logs[PREFIX + "early_stop"] = 1.0
            control.should_training_stop = True
            control.should_save = True
            self.stopped_at = step
            logger.warning("faithcb: stopping training at step %d: %s", step, stop_reason)
        # Trainer.log ends in CallbackHandler.on_log, which clears control.should_log: left so, the
        # trainer would skip its own loss log at every step that has a round (all of them when
        # logging_steps == faith_every_n_steps). Keep the trainer's decision.
        should_log = control.should_log
        Trainer.log(self.trainer, logs)
        control.should_log = should_log
        self.trainer.control.should_log = should_log

        if state.is_world_process_zero:
            self._write_history(state, result, base, seconds, reason, stop_reason, error)
            if result is not None:
                self._wandb_table(step, result)

    def _measure(self, *, base: bool) -> tuple[RoundResult | None, str | None]:
        """Run this process's share of the round and gather everyone's records."""
        trainer, cfg = self.trainer, self.config
        accelerator = trainer.accelerator
        records: list[dict] = []
        error: str | None = None
        start = time.perf_counter()
        try:
            with self._unwrapped_model() as model, accelerator.split_between_processes(self.problems) as mine:
                context = model.disable_adapter() if base else contextlib.nullcontext()
                with context:
                    settings = cfg.probe_settings(style=self.style)
                    if base and cfg.faith_evaluator == "base":
                        settings = dataclasses.replace(settings, evaluator="live")  # the model *is* the base
                    engine = FaithfulnessEngine(
                        model,
                        _tokenizer(trainer),
                        settings,
                        show_progress=cfg.faith_show_progress and accelerator.is_main_process,
                        strict=cfg.faith_strict,
                    )
                    records = engine.records(list(mine))
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

    # ------------------------------------------------------------------ early stopping
    def _early_stopping(self, step: int, result: RoundResult) -> str | None:
        cfg = self.config
        metric = result.metrics.get(cfg.faith_stop_metric)
        if metric is None or not math.isfinite(metric["value"]):
            return None
        value = metric["value"]
        sign = 1.0 if cfg.faith_stop_mode == "max" else -1.0
        if self.baseline is None:
            self.baseline = value
        if self.best is None or sign * (value - self.best) > 0:
            self.best = value
        if not cfg.faith_early_stopping:
            return None
        reference = self.best if cfg.faith_stop_reference == "best" else self.baseline
        worse_by = sign * (reference - value)
        outside_ci = not (metric["ci_low"] <= reference <= metric["ci_high"])
        bad = worse_by > cfg.faith_stop_min_delta and (outside_ci or not cfg.faith_stop_require_ci)
        self.bad_rounds = self.bad_rounds + 1 if bad else 0
        if self.bad_rounds >= cfg.faith_stop_patience:
            return (
                f"{cfg.faith_stop_metric} = {value:.3f} is worse than the {cfg.faith_stop_reference} "
                f"{reference:.3f} by more than {cfg.faith_stop_min_delta} for {self.bad_rounds} round(s)"
            )
        return None

    # ------------------------------------------------------------------ outputs
    def _warn(self, step: int, message: str | None) -> None:
        # Errors are gathered (every rank knows every rank's), so one warning, not one per process.
        if not self.trainer.accelerator.is_main_process:
            return
        warnings.warn(f"faithcb: probe round at step {step} failed: {message}", RuntimeWarning, stacklevel=2)

    def _run_name(self) -> str:
        args = self.trainer.args
        return getattr(args, "run_name", None) or Path(args.output_dir or ".").name

    def _write_history(self, state, result, base, seconds, reason, stop_reason, error) -> None:
        cfg = self.config
        out_dir = Path(self.trainer.args.output_dir or ".")
        out_dir.mkdir(parents=True, exist_ok=True)
        common = {"step": state.global_step, "epoch": state.epoch, "run": self._run_name(), "reason": reason}
        lines = []
        if result is not None:
            lines.append({**common, "role": "model", "seconds": seconds, **result.to_dict(with_records=False)})
        else:
            lines.append({**common, "role": "model", "seconds": seconds, "error": error})
        if stop_reason:
            lines[0]["early_stop"] = stop_reason
        if base is not None:
            lines.append({**common, "role": "base", **base.to_dict(with_records=False)})
        summary = {"step": state.global_step}
        if result is not None:
            summary.update({k: v["value"] for k, v in result.metrics.items()})
        self.history.append(summary)
        with open(out_dir / cfg.faith_history_file, "a", encoding="utf-8") as f:
            for line in lines:
                f.write(json.dumps(line) + "\n")
        if cfg.faith_log_records and result is not None:
            rec_dir = out_dir / "faith_records"
            rec_dir.mkdir(exist_ok=True)
            for role, res in (("model", result), ("base", base)):
                if res is None:
                    continue
                path = rec_dir / f"step_{state.global_step:06d}{'' if role == 'model' else '_base'}.jsonl"
                with open(path, "w", encoding="utf-8") as f:
                    for record in res.records:
                        f.write(json.dumps(record) + "\n")

    def _wandb_table(self, step: int, result: RoundResult) -> None:
        run = _wandb_run()
        if run is None or not self.config.faith_log_records:
            return
        import wandb

        columns = ["step", "id", "question", "chain", "answer", "gold", "correct", "n_steps",
                   "early_answering_aoc", "filler_invariance", "paraphrase_invariance", "info_gain_total"]
        table = wandb.Table(columns=columns)
        for r in result.records:
            table.add_data(
                step, r["id"], r["question"], r["chain"], r["answer"], r["gold"], r["correct"], r["n_steps"],
                r.get("early_answering", {}).get("aoc"), r.get("filler", {}).get("invariance"),
                r.get("paraphrase", {}).get("invariance"), r.get("info_gain", {}).get("total"),
            )
        # One table per round (this round's problems only), at the trainer's step axis.
        run.log({"faith_tables/records": table, "train/global_step": step})

    def _wandb_summary_chart(self) -> None:
        run = _wandb_run()
        # Rounds where both values were measured (NaN = nothing parsed): a line needs numbers.
        names = {"accuracy": "accuracy", "early_answering_aoc": "early-answering AOC (coupling)"}
        rounds = [h for h in self.history if all(_finite(h.get(name)) for name in names)]
        if run is None or not rounds:
            return
        import wandb

        steps = [h["step"] for h in rounds]
        series = [[h[name] for h in rounds] for name in names]
        keys = list(names.values())
        chart = wandb.plot.line_series(
            xs=steps, ys=series, keys=keys, title="faithcb: accuracy vs chain coupling", xname="training step"
        )
        run.log({"faith_charts/accuracy_vs_coupling": chart})


# ---------------------------------------------------------------------- helpers
def _tokenizer(trainer):
    tok = getattr(trainer, "processing_class", None) or getattr(trainer, "tokenizer", None)
    if tok is None:
        raise ConfigError("trainer: has no tokenizer (processing_class); pass one to the Trainer")
    return getattr(tok, "tokenizer", tok)  # a processor wraps its tokenizer


def _flatten(result: RoundResult, prefix: str, ci_prefix: str | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, m in result.metrics.items():
        if not math.isfinite(m["value"]):
            continue
        out[prefix + name] = m["value"]
        if ci_prefix:
            out[f"{ci_prefix}{name}_low"] = m["ci_low"]
            out[f"{ci_prefix}{name}_high"] = m["ci_high"]
    for name, v in result.scalars.items():
        if math.isfinite(v):
            out[prefix + name] = v
    return out


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _gather(accelerator, payload):
    if accelerator.num_processes == 1:
        return [payload]
    from accelerate.utils import gather_object

    return gather_object([payload])


def _base_weights_train(model) -> bool:
    """True when any non-adapter weight is trainable (then the base reference must be re-measured)."""
    return any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n and "modules_to_save" not in n)


def _wandb_run():
    if os.environ.get("WANDB_DISABLED", "").lower() in ("true", "1"):
        return None
    try:
        import wandb
    except ImportError:
        return None
    return wandb.run
