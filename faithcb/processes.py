"""``faithcb eval`` over the processes of a launcher: ``torchrun`` or ``accelerate launch``.

A launcher starts one process per device (on one machine or several) and tells each its place
through the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``). ``launched`` reads that;
``eval_processes`` joins the process group only when launched so (gloo on CPU, nccl on CUDA,
through accelerate's ``PartialState``, the state ``faithcb.distributed.gather`` works with) and
leaves it at the end; ``records_over_processes`` runs this process's contiguous share of the
problems (``faithcb.distributed.share``) and gathers every share's records, in problem order, on
every process. Not launched, each is a pass-through: one process, no process group.

Unlike a round during training, the shares need no padding and no forward passes in lockstep:
each process holds the whole model, so no forward pass is a collective; the gather is the only one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from faithcb.distributed import gather, share
from faithcb.errors import ConfigError, ProbeError


@dataclass(frozen=True)
class Launch:
    """Where the launcher put this process: its rank among ``world`` processes, its device index on its machine."""

    rank: int
    world: int
    local_rank: int


@dataclass(frozen=True)
class Processes:
    """The processes of a job, as ``faithcb.distributed`` reads them (an accelerator's names)."""

    num_processes: int = 1
    process_index: int = 0
    device: torch.device | None = None  # where this process's model goes; None: where it was loaded

    @property
    def is_main_process(self) -> bool:
        return self.process_index == 0


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"environment variable {name}={text!r} is not an integer (set by torchrun / accelerate launch)") from None


def launched() -> Launch | None:
    """This process's place when a launcher started several (``WORLD_SIZE`` > 1), else None."""
    world = _env_int("WORLD_SIZE")
    if world is None or world <= 1:
        return None
    rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK")
    if rank is None or local_rank is None:
        raise ConfigError(
            f"WORLD_SIZE={world} but RANK or LOCAL_RANK is not set: start the processes with torchrun or "
            "accelerate launch, which set all three")
    if not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} is outside 0..{world - 1} (WORLD_SIZE={world})")
    return Launch(rank=rank, world=world, local_rank=local_rank)


@contextlib.contextmanager
def eval_processes() -> Iterator[Processes]:
    """This job's processes; under a launcher, inside the process group (joined here, left at the end)."""
    place = launched()
    if place is None:
        yield Processes()
        return
    from accelerate import PartialState

    cuda = torch.cuda.is_available()
    # cpu=True makes accelerate take the CPU path (gloo); without it, on a machine without CUDA,
    # it would see no distributed setup at all and gather nothing.
    state = PartialState(cpu=not cuda, backend="nccl" if cuda else "gloo")
    if state.num_processes != place.world or state.process_index != place.rank:
        raise ConfigError(
            f"the process group ({state.num_processes} processes, this one {state.process_index}) does not match "
            f"the launcher's WORLD_SIZE={place.world} RANK={place.rank}")
    try:
        yield Processes(state.num_processes, state.process_index, state.device)
    finally:
        state.destroy_process_group()


def records_over_processes(
    processes: Processes, problems: Sequence[Any], records_of: Callable[[list[Any]], list[dict]]
) -> list[dict]:
    """Every problem's records: this process's share through ``records_of``, everyone's gathered.

    ``records_of`` does the whole of a process's work (loading the model included), so that a
    failure anywhere on one process still reaches the gather: every process learns of it and
    stops instead of waiting for the failed one forever. The failed process raises its own
    exception again; the others raise ``ProbeError`` naming it.
    """
    mine, _padding = share(list(problems), processes.process_index, processes.num_processes)  # no padding: see the module
    records: list[dict] = []
    failure: Exception | None = None
    try:
        records = records_of(mine)
    except Exception as exc:  # noqa: BLE001 - raised again below, after the gather
        failure = exc
    if processes.num_processes == 1:
        if failure is not None:
            raise failure
        return records
    message = None if failure is None else f"process {processes.process_index}: {type(failure).__name__}: {failure}"
    gathered = gather(processes, (records, message))
    if failure is not None:
        raise failure
    errors = [error for _, error in gathered if error]
    if errors:
        raise ProbeError("; ".join(errors))
    return [record for share_records, _ in gathered for record in share_records]
