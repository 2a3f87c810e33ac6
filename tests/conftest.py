"""Fixtures every test file can use; the helpers themselves are in ``tests/helpers/`` (one module
per concern, see its ``__init__``).

Markers (pyproject.toml): ``slow`` (over ~3 s: SmolLM2, trainings, recipes, the demo) and ``dist``
(torchrun). Run the fast subset first: ``pytest -m "not slow and not dist"``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.models import one_thread, pretrained_model

from faithcb.testing import tiny_tokenizer


@pytest.fixture(scope="session")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def chat_tok():
    return tiny_tokenizer(chat_template=True)


@pytest.fixture(scope="module", name="one_thread")
def one_thread_fixture():
    """Tiny models gain nothing from intra-op threads; on a busy machine spinning pools are slow."""
    with one_thread():
        yield


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> Path:
    """The session's pre-trained tiny llama, saved once so subprocesses start from the same weights."""
    path = tmp_path_factory.mktemp("weights") / "pretrained.pt"
    torch.save(pretrained_model().state_dict(), path)
    return path
