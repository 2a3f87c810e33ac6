"""The one RNG guard: whatever a probe round draws, training's next draws are the same as without it.

Used around a whole round (a library imported on first use may draw from ``random``) and by the
model session (``ProbeLM.session``: sampled chains draw from torch). Python's, NumPy's, torch's CPU
and every initialized CUDA device's generator are saved and put back, also when the body raises
(a ``KeyboardInterrupt`` included).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def rng_kept() -> Iterator[None]:
    """Restore the Python, NumPy, torch CPU and CUDA RNG states on exit."""
    python, cpu = random.getstate(), torch.get_rng_state()
    numpy = _numpy_random()
    numpy_state = numpy.get_state() if numpy is not None else None
    # Reading CUDA's states would initialize CUDA on a CPU-only run: only when it already is.
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(python)
        if numpy is not None:
            numpy.set_state(numpy_state)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def _numpy_random():
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy comes with torch's usual installs
        return None
    return np.random
