"""Chain generation paths: plain ``generate``, a static cache with a compiled decode step, or
transformers' continuous batching (``ProbeSettings.generation``).

One job: turn a round's chain prompts (token ids) into the model's new tokens, up to and
including the end token, exactly as ``ProbeLM.generate(..., keep_stop=True)`` returns them. Greedy
chains are token-identical across the three paths on CPU in float32 (tests/test_generation.py);
the paths differ only in how the decode loop runs:

- ``generate``: ``ProbeLM.generate``, HF ``generate`` with a dynamic cache (the default).
- ``static``: HF ``generate`` with ``cache_implementation="static"``. The cache length is fixed
  (the longest prompt width seen plus ``max_new_tokens``, rounded up to ``STATIC_CACHE_BUCKET``,
  never shrinking) and, when compiling, every batch is padded to ``batch_size`` rows, so the
  compiled decode step sees one shape and compiles once (the first round pays it: 80 s for a tiny
  model on this 2-core CPU with inductor). Compilation is transformers' own
  (``model.get_compiled_call``: only the decode steps run compiled; prefill and every training
  forward run the eager module, so training and gradient checkpointing are untouched), on
  CUDA/XPU by default; ``compile=True`` forces it on CPU, a ``transformers.CompileConfig`` forces
  it with that config, ``compile=False`` turns it off. The static cache lives only inside each
  ``generate`` call, and on CUDA the allocator's unused blocks are returned after the round, so
  no cache stays resident during training (the compiled callable stays on the model, warm for the
  next round).
- ``continuous``: ``model.generate_batch`` (transformers >= 5 continuous batching, paged
  attention): all of the round's prompts are scheduled together, no left padding. Its paged
  cache is sized here from the prompts (transformers' own sizing probes free memory and took
  17 s on CPU for a 3-prompt job) and destroyed when the call returns.

``check_generation(model, path)`` raises ``ConfigError`` when the installed transformers or the
model cannot take ``path``: call it where the settings are validated, before any round.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any

import torch

from faithcb.errors import ConfigError
from faithcb.lm import left_pad, sampling_kwargs
from faithcb.scoring import EndRule
from faithcb.settings import GENERATION_PATHS

__all__ = ["STATIC_CACHE_BUCKET", "ChainGenerator", "check_generation"]

# Static cache lengths are rounded up to a multiple of this, so rounds whose longest prompt
# differs by a few tokens share one compiled decode step.
STATIC_CACHE_BUCKET = 64


def check_generation(model, path: str) -> None:
    """Raise ``ConfigError`` unless ``model`` (and the installed transformers) can generate by ``path``."""
    if path not in GENERATION_PATHS:
        raise ConfigError(f"generation: {path!r} is not one of {list(GENERATION_PATHS)}")
    if path == "continuous" and not callable(getattr(model, "generate_batch", None)):
        import transformers

        raise ConfigError(
            f"generation='continuous' needs transformers' continuous batching (model.generate_batch), which "
            f"transformers {transformers.__version__} does not provide for {type(model).__name__}; "
            "use generation='generate' or 'static'"
        )


class ChainGenerator:
    """Generates chains by one path on the ``ProbeLM`` (or ``ScoringLM``) ``lm``.

    ``__call__(prompts, ...)`` takes every prompt of a round and returns, per prompt, its new tokens
    cut after the first end token (kept: it tells a finished chain from one cut by the limit).
    ``stop_ids`` end a chain like the end tokens, on every path (the think layout's ``</think>``:
    decoding past the end of the reasoning would only write what the cue replaces).
    ``batch_size`` prompts go through one ``generate`` call (``generate``/``static``); the
    continuous path schedules them all at once. ``on_batch(n)`` is called after each ``n``
    prompts (the engine's progress bar).
    """

    def __init__(
        self, lm, path: str = "generate", *, batch_size: int = 16, compile: Any = None, stop_ids: Collection[int] = ()
    ):
        if path != "generate":
            check_generation(lm.model, path)
        self.lm = lm
        self.path = path
        self.stop_ids = frozenset(stop_ids)
        self._stops = sorted(set(lm.eos_ids) | self.stop_ids) or None  # every id that ends a chain
        self.batch_size = max(1, int(batch_size))
        self.compile = compile
        self._cache_len = 0  # static path: the fixed cache length so far (only grows)

    def __call__(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
        on_batch=None,
    ) -> list[list[int]]:
        done = on_batch or (lambda n: None)
        if self.path == "continuous":
            out = self._continuous(prompts, max_new_tokens, do_sample, temperature, top_p, seed)
            done(len(prompts))
            self._release()
            return out
        out: list[list[int]] = []
        for b in range(0, len(prompts), self.batch_size):
            chunk = prompts[b : b + self.batch_size]
            sample_seed = seed + b if do_sample else None  # as the engine always seeded each batch
            if self.path == "generate":
                out += self.lm.generate(
                    chunk, max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                    top_p=top_p, seed=sample_seed, keep_stop=True, stop_ids=self.stop_ids,
                )
            else:
                out += self._static(chunk, max_new_tokens, do_sample, temperature, top_p, sample_seed)
            done(len(chunk))
        if self.path == "static":
            self._release()
        return out

    # ------------------------------------------------------------------ static cache
    def _static(self, prompts, max_new_tokens, do_sample, temperature, top_p, seed) -> list[list[int]]:
        lm, model = self.lm, self.lm.model
        from transformers import CompileConfig

        # One batch shape for the compiled step: when it compiles, short batches are padded with
        # copies of their first prompt (dropped after); the cache length is bucketed, never shrinks.
        compiles = bool(self.compile) if self.compile is not None else lm.device.type in ("cuda", "xpu")
        rows = list(prompts) + ([prompts[0]] * (self.batch_size - len(prompts)) if compiles else [])
        width = max(len(p) for p in rows)
        needed = math.ceil((width + max_new_tokens) / STATIC_CACHE_BUCKET) * STATIC_CACHE_BUCKET
        self._cache_len = max(self._cache_len, needed)
        ids, mask = left_pad(rows, lm.pad_id, lm.device)
        kwargs: dict[str, Any] = sampling_kwargs(do_sample, temperature, top_p)
        if self.compile is False:
            kwargs["disable_compile"] = True
        elif self.compile:
            config = self.compile if isinstance(self.compile, CompileConfig) else CompileConfig()
            config._compile_all_devices = True  # transformers' switch for compiling off CUDA/XPU
            kwargs["compile_config"] = config
        if seed is not None:
            torch.manual_seed(seed)  # restored by lm.session()
        out = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, pad_token_id=lm.pad_id,
            eos_token_id=self._stops, use_cache=True, cache_implementation="static",
            max_cache_len=self._cache_len, **kwargs,
        )
        _count(lm, int(mask[: len(prompts)].numel()), int(mask[: len(prompts)].sum()), "generate")
        new = out[: len(prompts), ids.shape[1] :].tolist()
        return self._finish(new)

    # ------------------------------------------------------------------ continuous batching
    def _continuous(self, prompts, max_new_tokens, do_sample, temperature, top_p, seed) -> list[list[int]]:
        lm, model = self.lm, self.lm.model
        if not prompts:
            return []
        from transformers import ContinuousBatchingConfig, GenerationConfig

        sampling = {k: v for k, v in sampling_kwargs(do_sample, temperature, top_p).items() if v is not None}
        gen_config = GenerationConfig(
            max_new_tokens=max_new_tokens, eos_token_id=self._stops, pad_token_id=lm.pad_id,
            **sampling,
        )
        longest = max(len(p) for p in prompts) + max_new_tokens
        page = 64
        pages_per_request = math.ceil(longest / page)
        cb_config = ContinuousBatchingConfig(
            page_size=page,
            # every request fits at once: nothing is evicted, no request waits for another's pages
            num_blocks=pages_per_request * len(prompts) + 1,
            max_batch_tokens=max(longest, 256) * min(len(prompts), self.batch_size),
            max_requests_per_batch=self.batch_size,
            # flash attention would change the numerics (and is absent on CPU): keep the model's own
            auto_switch_to_flash=False,
            seed=seed if do_sample else None,
        )
        results = model.generate_batch(
            [list(p) for p in prompts], generation_config=gen_config, continuous_batching_config=cb_config,
            warmup=False,
        )
        # generate_batch logs errors and returns what it has: a missing or failed request is an error here.
        ordered = list(results.values())
        failed = [r for r in ordered if r.error is not None]
        if len(ordered) != len(prompts) or failed:
            raise RuntimeError(
                f"continuous batching returned {len(ordered)} of {len(prompts)} chains"
                + (f"; first error: {failed[0].error}" if failed else "")
            )
        real = sum(len(p) for p in prompts)
        _count(lm, real, real, "generate")
        return self._finish([list(r.generated_tokens) for r in ordered])

    # ------------------------------------------------------------------ shared
    def _finish(self, new: list[list[int]]) -> list[list[int]]:
        """Cut each sequence after its first end token (kept), as ``ProbeLM.generate(keep_stop=True)``."""
        rule = EndRule(frozenset(self._stops or ()))
        out = [rule.cut(seq, keep=True) for seq in new]
        counter = getattr(self.lm, "counter", None)
        if counter is not None:
            counter.generated += sum(len(s) for s in out)
        return out

    def _release(self) -> None:
        """Return the round's cache memory: training must not find it resident."""
        if self.lm.device.type == "cuda":
            torch.cuda.empty_cache()


def _count(lm, processed: int, real: int, stage: str) -> None:
    counter = getattr(lm, "counter", None)
    if counter is not None:
        counter.add(processed, real, stage)
