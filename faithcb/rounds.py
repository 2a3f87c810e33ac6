"""``RoundRunner``: one probe round on a trainer's live model, built once per run.

The callback decides *when* a round runs and *where* its numbers go; this module measures it:
this process's share of the problems through a ``FaithfulnessEngine`` on the unwrapped model
(every rank in lockstep, records gathered: ``faithcb.distributed``), the PEFT base model's round,
the paired changes from the run's first round, and the warnings a round's numbers call for. A
failed round is reported (``Round.error``), never fatal; a setup error (``ConfigError``) is raised.

Tests inject their own runner through ``FaithfulnessCallback.runner_class``; ``measure`` is the
one method that touches the model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from faithcb.config import FaithConfig
from faithcb.distributed import forwards_in_lockstep, gather, share, unwrapped_model
from faithcb.engine import FaithfulnessEngine
from faithcb.errors import ConfigError, ProbeError
from faithcb.problem import Problem
from faithcb.results import RoundResult, aggregate, metric_values, paired_change, round_warnings
from faithcb.settings import ProbeSettings

logger = logging.getLogger(__name__)


@dataclass
class Round:
    """What one round measured: the live model's result (or the error instead), the base model's, changes."""

    step: int
    result: RoundResult | None
    error: str | None = None
    base: RoundResult | None = None
    changes: dict[str, dict[str, float]] = field(default_factory=dict)  # from the baseline round, paired
    seconds: float = 0.0  # the live model's round (0 for a shared step-0 round)


class RoundRunner:
    """Measures rounds on ``trainer``'s live model.

    Args:
        trainer: the (TRL) ``Trainer``: its model, accelerator and args are read at every round.
        problems: the problems every round probes (the same each round).
        settings: the round's validated settings.
        tokenizer: the model's fast tokenizer.
        config: the ``faith_*`` settings read here (strictness, progress bars, base reference).
        start_round: a step-0 round measured already on the same starting model and problems.
    """

    def __init__(
        self,
        trainer,
        problems: list[Problem],
        settings: ProbeSettings,
        tokenizer,
        config: FaithConfig,
        *,
        start_round: RoundResult | None = None,
    ):
        self.trainer = trainer
        self.problems = problems
        self.settings = settings
        self.tokenizer = tokenizer
        self.config = config
        # The step-0 round: given (measured by another run) or, once measured, this run's own.
        self.start_round = start_round
        # The first round's per-problem values, the reference of every paired change (exported).
        self.baseline_values: dict[str, dict[str, float]] | None = None
        self._base_records: list[dict] | None = None
        self._warned_health = False

    @property
    def _is_main(self) -> bool:
        return self.trainer.accelerator.is_main_process

    # ------------------------------------------------------------------ a whole round
    def run(self, step: int) -> Round:
        start = time.perf_counter()
        if step == 0 and self.start_round is not None:
            # Measured already on this very starting model: log it, do not measure it again.
            result, error = dataclasses.replace(self.start_round, scalars=dict(self.start_round.scalars)), None
        else:
            result, error = self.measure(base=False)
            if step == 0 and result is not None:
                self.start_round = result
        seconds = time.perf_counter() - start
        changes: dict[str, dict[str, float]] = {}
        if result is None:
            self._warn_failed(step, error)
        else:
            result.scalars["seconds"] = seconds
            changes = self._paired_changes(result)
            if result.errors:
                self._warn_failed(step, "; ".join(result.errors))
            self._warn_health_once(result)
        return Round(step, result, error, base=self._base_round(step), changes=changes, seconds=seconds)

    def measure(self, *, base: bool) -> tuple[RoundResult | None, str | None]:
        """Run this process's share of the round and gather everyone's records.

        Returns the round's result, or None and the error (every rank's, joined) when a probe
        raised on some rank: every rank still reaches the gather, so nobody waits forever.
        """
        trainer, cfg = self.trainer, self.config
        accelerator = trainer.accelerator
        records: list[dict] = []
        error: str | None = None
        start = time.perf_counter()
        settings = self.settings
        if base and settings.evaluator != "live":
            settings = dataclasses.replace(settings, evaluator="live")  # the model already *is* the base
        mine, padding = share(self.problems, accelerator.process_index, accelerator.num_processes)
        try:
            with unwrapped_model(trainer) as model, forwards_in_lockstep(model, accelerator):
                with model.disable_adapter() if base else contextlib.nullcontext():
                    engine = FaithfulnessEngine(
                        model, self.tokenizer, settings,
                        show_progress=cfg.faith_show_progress and accelerator.is_main_process,
                        strict=cfg.faith_strict,
                    )
                    records = engine.records(mine)
                    if padding:  # dummy work: every rank handles as many problems; discarded
                        engine.records(padding)
        except ConfigError:
            raise  # a setup error is never a failed round
        except Exception as exc:  # reported, not fatal: training must go on (CUDA OOM included)
            if cfg.faith_strict and accelerator.num_processes == 1:
                raise
            error = f"{type(exc).__name__}: {exc}"
        gathered = gather(accelerator, (records, error))
        errors = [e for _, e in gathered if e]
        if errors:
            if cfg.faith_strict:
                raise ProbeError("; ".join(errors))
            return None, "; ".join(errors)
        all_records = [r for recs, _ in gathered for r in recs]
        return aggregate(all_records, seconds=time.perf_counter() - start), None

    # ------------------------------------------------------------------ the base model, the baseline
    def _base_round(self, step: int) -> RoundResult | None:
        """The PEFT base model's round; measured once while the base weights are frozen."""
        model = self.trainer.model
        if not (self.config.faith_base_reference and hasattr(model, "disable_adapter")):
            return None
        if self._base_records is None or _base_weights_train(model):
            result, error = self.measure(base=True)
            if result is None:
                self._warn_failed(step, f"base reference (adapters disabled): {error}")
                return None
            self._base_records = result.records
            return result
        return aggregate(self._base_records)

    def _paired_changes(self, result: RoundResult) -> dict[str, dict[str, float]]:
        """Every metric's change from the baseline (first) round, paired over the same problems.

        The first round's per-problem values are kept (and exported with the callback's state),
        not its records, so a resumed run still compares with the same baseline.
        """
        now = {name: metric_values(result.records, name) for name in result.metrics}
        if self.baseline_values is None:
            self.baseline_values = now
            return {}
        return {name: paired_change(self.baseline_values.get(name, {}), values, name) for name, values in now.items()}

    # ------------------------------------------------------------------ warnings
    def _warn_failed(self, step: int, message: str | None) -> None:
        # Errors are gathered (every rank knows every rank's), so one warning, not one per process.
        if self._is_main:
            warnings.warn(f"faithcb: probe round at step {step} failed: {message}", RuntimeWarning, stacklevel=3)

    def _warn_health_once(self, result: RoundResult) -> None:
        """Too many chains cut by the limit: say so once per run, naming the setting to raise."""
        if self._warned_health or not self._is_main:
            return
        s = self.settings
        messages = round_warnings(
            result, chain_limit=f"faith_max_chain_tokens={s.max_chain_tokens}",
            answer_limit=f"faith_answer_max_tokens={s.answer_max_tokens}",
        )
        if messages:
            self._warned_health = True
            warnings.warn("faithcb: " + "; ".join(messages), RuntimeWarning, stacklevel=3)


def _base_weights_train(model: Any) -> bool:
    """True when any non-adapter weight is trainable (then the base reference must be re-measured)."""
    return any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n and "modules_to_save" not in n)
