"""Every collective a probe round makes under DDP, FSDP or DeepSpeed ZeRO-3, in one place.

A round is collective: each process probes its share of the problems (``share``), the records are
gathered so every process ends the round with the same metrics (``gather``), rank 0's budget
decision is broadcast (``decide_on_rank0``), and every rank makes as many forward passes
(``forwards_in_lockstep``), since with sharded weights a pass is itself collective. On one process
each of these is a plain pass-through.

The lockstep reaches into DeepSpeed's private ZeRO-3 hook (see ``pause_zero3_start_hook``). Where
that hook is not where this code expects it, a round under ZeRO-3 would hang, so the reach fails
closed: ``check_zero3_hook`` raises a ``ConfigError`` naming the DeepSpeed version before step 0.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch

from faithcb.errors import ConfigError


def share(problems: list, rank: int, world: int) -> tuple[list, list]:
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


def gather(accelerator, payload: Any) -> list[Any]:
    """Every rank's ``payload``, in rank order, on every rank."""
    if accelerator.num_processes == 1:
        return [payload]
    from accelerate.utils import gather_object

    return gather_object([payload])


def decide_on_rank0(accelerator, decision: bool) -> bool:
    """Rank 0's ``decision`` on every rank (ranks measure slightly different times)."""
    if accelerator.num_processes == 1:
        return decision
    from accelerate.utils import broadcast_object_list

    box = [decision]
    broadcast_object_list(box, from_process=0)
    return bool(box[0])


# ---------------------------------------------------------------------- DeepSpeed ZeRO-3's hook
def _zero3_offload(accelerator):
    """DeepSpeed's ZeRO-3 parameter offload object when ZeRO-3 runs, else None."""
    engine = getattr(getattr(accelerator, "deepspeed_engine_wrapped", None), "engine", None)
    stage = getattr(engine, "zero_optimization_stage", None)
    if engine is None or stage is None or stage() != 3:
        return None
    optimizer = getattr(engine, "optimizer", None)  # the ZeRO-3 optimizer, or the bare offload
    return getattr(optimizer, "parameter_offload", optimizer)


def _deepspeed_version() -> str:
    try:
        import deepspeed
    except ImportError:  # pragma: no cover - ZeRO-3 runs only with deepspeed installed
        return "not installed"
    return getattr(deepspeed, "__version__", "unknown")


def check_zero3_hook(accelerator) -> None:
    """Raise ``ConfigError`` when ZeRO-3 runs and its start-of-forward hook is not where expected.

    Tested with DeepSpeed 0.17-0.19 (``DeepSpeedZeRoOffload.fwd_pre_hook``, a torch
    ``RemovableHandle``). Without the pause, probing under ZeRO-3 hangs (see
    ``forwards_in_lockstep``), so a rename is a setup error, not a silent no-op.
    """
    offload = _zero3_offload(accelerator)
    if offload is None:
        return
    start = getattr(offload, "fwd_pre_hook", None)
    hooks = start.hooks_dict_ref() if start is not None and hasattr(start, "hooks_dict_ref") else None
    if hooks is None or getattr(start, "id", None) not in hooks:
        raise ConfigError(
            f"DeepSpeed {_deepspeed_version()}: ZeRO-3's start-of-forward hook "
            f"(parameter_offload.fwd_pre_hook) is not where faithcb expects it (tested with DeepSpeed "
            f"0.17-0.19); probe rounds under ZeRO-3 would hang. Use a tested DeepSpeed version"
        )


def pause_zero3_start_hook(accelerator) -> Callable[[], None]:
    """Remove ZeRO-3's start-of-forward hook; return a function that puts it back in place."""
    if _zero3_offload(accelerator) is None:
        return lambda: None
    check_zero3_hook(accelerator)
    start = _zero3_offload(accelerator).fwd_pre_hook
    hooks = start.hooks_dict_ref()
    order = list(hooks)
    hook = hooks.pop(start.id)

    def restore():
        hooks[start.id] = hook
        for key in [k for k in order if k in hooks] + [k for k in hooks if k not in order]:
            hooks.move_to_end(key)  # the original order: DeepSpeed's hook runs first again

    return restore


# ---------------------------------------------------------------------- forward passes in lockstep
@contextlib.contextmanager
def forwards_in_lockstep(model, accelerator) -> Iterator[None]:
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
    import torch.distributed as dist

    restore_zero3_hook = pause_zero3_start_hook(accelerator)
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
            restore_zero3_hook()
            if had_generate:
                model.generate = original_generate
            else:
                del model.generate


@contextlib.contextmanager
def unwrapped_model(trainer) -> Iterator[Any]:
    """The bare model, with ZeRO-3 weights gathered and gradient checkpointing paused (TRL's helper).

    TRL's helper puts things back (gradient checkpointing on, ZeRO-3's hooks) after its ``yield``
    without a ``finally``: a round that raised would leave them off for the rest of training. So
    the round's exception (a ``KeyboardInterrupt`` too) is held until TRL's helper has finished,
    then raised again.
    """
    from trl.models import unwrap_model_for_generation

    wrapped = getattr(trainer, "model_wrapped", None) or trainer.model
    failure: BaseException | None = None
    with unwrap_model_for_generation(
        wrapped, trainer.accelerator,
        gradient_checkpointing_kwargs=getattr(trainer.args, "gradient_checkpointing_kwargs", None),
    ) as model:
        try:
            yield model
        except BaseException as exc:  # noqa: BLE001 - re-raised below, once TRL has cleaned up
            failure = exc
    if failure is not None:
        raise failure
