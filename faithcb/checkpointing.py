"""Saving a checkpoint at the round that stopped training, with ``save_strategy="best"``.

With ``save_strategy="best"`` the Trainer replaces ``control.should_save`` with "is this
evaluation a new best" after ``on_evaluate``, so a callback's request to save is lost. The only
way to save the stopping round then is the Trainer's private ``_save_checkpoint(model, trial)``
(TRL's trainers override it with the same signature). That reach fails closed:
``check_save_checkpoint`` raises ``ConfigError`` before step 0 when the method is gone or takes other
arguments, instead of a crash (or a silently missing checkpoint) at the stop.
"""

from __future__ import annotations

import inspect

from faithcb.errors import ConfigError

_EXPECTED = ("model", "trial")  # Trainer._save_checkpoint(self, model, trial), transformers 4.x-5.x


def saves_only_best(args) -> bool:
    return str(getattr(args, "save_strategy", "no")) in ("best", "SaveStrategy.BEST")


def check_save_checkpoint(trainer, *, early_stopping: bool) -> None:
    """Raise ``ConfigError`` when early stopping may need ``_save_checkpoint`` and it is not as expected."""
    if not (early_stopping and saves_only_best(trainer.args)):
        return
    method = getattr(trainer, "_save_checkpoint", None)
    try:
        params = tuple(inspect.signature(method).parameters) if callable(method) else None
    except (TypeError, ValueError):
        params = None
    if params != _EXPECTED:
        import transformers

        found = "missing" if params is None else f"takes {params}"
        raise ConfigError(
            f"save_strategy='best': faithcb saves the round that stopped training through "
            f"{type(trainer).__name__}._save_checkpoint(model, trial), which is {found} in transformers "
            f"{transformers.__version__}; use save_strategy='steps', or faith_early_stopping=False"
        )


def save_checkpoint(trainer) -> None:
    """Save a checkpoint now (every rank calls it: saving is collective)."""
    trainer._save_checkpoint(trainer.model_wrapped, trial=None)
