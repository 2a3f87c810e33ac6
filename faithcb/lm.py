"""ProbeLM: the only code in faithcb that touches a model — the ``ScoringLM`` on a real one.

It generates (chains, answers) and scores continuations teacher-forced, inside
``ProbeLM.session()``, which puts the model in the state probing needs (eval mode, no gradients,
cache on) and restores everything it touched in ``finally``: train/eval mode, ``config.use_cache``
and the Python, NumPy, torch CPU and CUDA RNG states. The tokenizer is never mutated: batches are
padded here from token ids (left padding + attention mask + explicit position ids), so the
tokenizer's ``padding_side`` and ``pad_token`` stay as the user set them. A batch that runs out
of memory is split in halves rather than failing.

``score`` takes the packed cross-problem path of ``faithcb.packed`` where the model supports it;
``fast=False`` runs every variant as a full, independent sequence here instead — the reference
the packed path is tested against. The request and result types live in ``faithcb.scoring``
(re-exported here).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import weakref
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import torch

from faithcb.answers import is_lead_text
from faithcb.packed import PackedScorer, group_problems, grouped_query_sdpa, packing_supported
from faithcb.rng import rng_kept
from faithcb.scoring import (
    ContinuationScore,
    EndRule,
    ScoreRequest,
    ScoreResult,
    ScoringLM,
    TokenCounter,
    needs_decode,
)

__all__ = ["ContinuationScore", "ProbeLM", "ScoreRequest", "ScoreResult", "ScoringLM", "TokenCounter"]

_OOM_ERRORS: tuple[type[BaseException], ...] = (torch.OutOfMemoryError,)


class ProbeLM:
    """Generation and scoring on a live model, with every side effect undone afterwards.

    Implements ``faithcb.scoring.ScoringLM``. Public knobs, read at every call (so they may be
    changed between calls): ``fast`` (packed scoring where supported), ``max_batch_size`` (rows
    per forward pass), ``max_batch_tokens`` and ``bin_tokens`` (the packed path's tokens per pass
    and per packed sequence), ``eos_ids`` (the ids that end generation: the tokenizer's and the
    generation config's end tokens). ``newline_ids`` (the ids whose text contains a newline,
    which end an answer once it has started) and ``lead_ids`` (the ids that only precede an
    answer: blank lines, markup) are fixed at construction. ``counter`` (a
    ``TokenCounter``, the one passed in or a fresh one) records every forward pass: the
    benchmarks' hook; it may be replaced to start a new count.
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        fast: bool = True,
        max_batch_size: int = 16,
        answer_max_tokens: int = 8,
        max_batch_tokens: int = 4096,
        bin_tokens: int = 256,
        counter: TokenCounter | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.fast = fast
        self.max_batch_size = max(1, int(max_batch_size))
        # Fast path: packed tokens per forward pass (several problems), bounding the activation
        # and vocabulary-logit memory of one pass; a single problem may exceed it.
        self.max_batch_tokens = max(1, int(max_batch_tokens))
        self.bin_tokens = max(1, int(bin_tokens))
        self.answer_max_tokens = answer_max_tokens
        self.counter = counter if counter is not None else TokenCounter()
        eos = tokenizer.eos_token_id
        self.eos_ids: set[int] = set(eos if isinstance(eos, list) else [eos]) - {None}
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        if gen_eos is not None:
            self.eos_ids |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        pad = tokenizer.pad_token_id
        # A model without a pad token still works: padded positions are masked, any id will do.
        self.pad_id = pad if pad is not None else (min(self.eos_ids) if self.eos_ids else 0)
        # Answers end at a newline once they have started: which ids contain one, and which only
        # precede an answer (blank lines, markup), is read off the tokenizer once here, so no loop
        # decodes tokens to find out.
        self.newline_ids: frozenset[int] = newline_ids(tokenizer)
        self.lead_ids: frozenset[int] = lead_ids(tokenizer)

    # ------------------------------------------------------------------ state handling
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _config(self):
        return getattr(self.model, "config", None)

    @contextlib.contextmanager
    def session(self) -> Iterator[ProbeLM]:
        """Eval mode, no grad, cache on, SDPA's grouped-query attention on CPU
        (``faithcb.packed.grouped_query_sdpa``); restore mode, cache flag and every RNG afterwards."""
        config = self._config()
        training, use_cache = self.model.training, getattr(config, "use_cache", None)
        try:
            with rng_kept(), torch.no_grad(), grouped_query_sdpa(self.device):
                self.model.eval()
                if config is not None:
                    config.use_cache = True
                yield self
        finally:
            self.model.train(training)
            if config is not None and use_cache is not None:
                config.use_cache = use_cache

    # ------------------------------------------------------------------ tokens
    def encode(self, text: str, *, special: bool = False) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def _left_pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        return left_pad(seqs, self.pad_id, self.device)

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop_at_newline: bool = False,
        keep_stop: bool = False,
        stop_ids: Collection[int] = (),
    ) -> list[list[int]]:
        """Continue each prompt; returns the new tokens up to the first end token.

        ``stop_ids`` end generation like the end tokens (the think layout's ``</think>``: the chain
        ends where the reasoning closes, so the decode loop stops there too). ``keep_stop`` keeps
        that end token (or newline) in the result: an answer's token sequence must include its
        terminator for the teacher-forced greedy check to be exact ("14" then end is a different
        greedy output than "140").
        """
        results: list[list[int]] = []
        if seed is not None and do_sample:
            torch.manual_seed(seed)  # restored by session()
        stops = self.eos_ids | set(stop_ids)
        for start in range(0, len(prompts), self.max_batch_size):
            chunk = prompts[start : start + self.max_batch_size]
            results.extend(
                self._with_oom_halving(
                    chunk,
                    lambda part: self._generate_batch(
                        part, max_new_tokens, do_sample, temperature, top_p, stop_at_newline, keep_stop, stops
                    ),
                )
            )
        return results

    def _generate_batch(
        self, prompts, max_new_tokens, do_sample, temperature, top_p, stop_at_newline, keep_stop, stops
    ):
        ids, mask = self._left_pad(prompts)
        out = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            pad_token_id=self.pad_id,
            eos_token_id=sorted(stops) or None,
            use_cache=True,
            **sampling_kwargs(do_sample, temperature, top_p),
        )
        self._count(mask, "generate")
        new = out[:, ids.shape[1] :].tolist()
        rule = (
            EndRule(frozenset(stops), self.newline_ids, self.lead_ids) if stop_at_newline else EndRule(frozenset(stops))
        )
        cut = [rule.cut(seq, keep=keep_stop) for seq in new]
        self.counter.generated += sum(len(seq) for seq in cut)
        return cut

    @property
    def answer_end(self) -> EndRule:
        """Where ``answer`` (and a decoded answer while scoring) ends: ``EndRule.for_answers``."""
        return EndRule.for_answers(self)

    def _count(self, mask: torch.Tensor, stage: str) -> None:
        self.counter.add(int(mask.numel()), int(mask.sum()), stage)

    def answer(self, contexts: Sequence[Sequence[int]]) -> list[list[int]]:
        """Greedy answer tokens after each context: a few tokens, ending with their terminator."""
        return self.generate(
            contexts, max_new_tokens=self.answer_max_tokens, stop_at_newline=True, keep_stop=True
        )

    # ------------------------------------------------------------------ scoring
    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Teacher-forced log-probabilities and exact greedy agreement for every request.

        Requests of one problem share a ``group`` key (see ``ScoreRequest``): the packed path
        reads their common prefix once.
        """
        if not self.fast or not self.packs:
            return self._score_plain(requests)
        results: list[ScoreResult | None] = [None] * len(requests)
        # Nothing to share when every context starts at the insert: those go the plain way.
        shared, problems, alone = group_problems(requests)
        packed = PackedScorer(
            self.model,
            pad_id=self.pad_id,
            answer_end=self.answer_end,
            max_batch_size=self.max_batch_size,
            max_batch_tokens=self.max_batch_tokens,
            bin_tokens=self.bin_tokens,
            counter=self.counter,
        )
        for batch in packed.batches(problems):
            scored = self._with_oom_halving([problems[b] for b in batch], packed.score)
            for b, problem_results in zip(batch, scored):
                for i, res in zip(shared[b], problem_results):
                    results[i] = res
        for i, res in zip(alone, self._score_plain([requests[i] for i in alone]) if alone else []):
            results[i] = res
        return results  # type: ignore[return-value]

    @property
    def packs(self) -> bool:
        """Whether ``score`` can take the packed path on this model (``faithcb.packed``)."""
        return packing_supported(self._config())

    # Plain path: every (request, continuation) is one independent left-padded sequence.
    def _score_plain(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        rows: list[tuple[int, int, list[int], int]] = []  # (request, continuation, tokens, ctx_len)
        for r, req in enumerate(requests):
            ctx = req.context()
            conts = req.continuations or ((),)
            for c, cont in enumerate(conts):
                rows.append((r, c, ctx + list(cont), len(ctx)))
        scored: dict[tuple[int, int], tuple[ContinuationScore, tuple[float, ...]]] = {}

        def run(chunk):
            ids, mask = self._left_pad([row[2] for row in chunk])
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            self._count(mask, "plain")
            logprobs = torch.log_softmax(
                self.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float(), -1
            )
            width = ids.shape[1]
            out = []
            for b, (r, c, toks, ctx_len) in enumerate(chunk):
                offset = width - len(toks)
                # logits at position p predict token p + 1
                first = offset + ctx_len - 1
                out.append(((r, c), self._read(logprobs[b], first, toks[ctx_len:], requests[r].choice_ids)))
            return out

        for start in range(0, len(rows), self.max_batch_size):
            for key, value in self._with_oom_halving(rows[start : start + self.max_batch_size], run):
                scored[key] = value
        results = [
            ScoreResult(
                continuations=tuple(scored[(r, c)][0] for c in range(len(req.continuations))),
                choice_logprobs=scored[(r, 0)][1],
            )
            for r, req in enumerate(requests)
        ]
        # The reference way to read a mismatching answer: decode it from the full context.
        todo = [r for r, req in enumerate(requests) if needs_decode(req, results[r])]
        for r, ids in zip(todo, self.generate(
            [requests[r].context() for r in todo], max_new_tokens=max([requests[r].decode_tokens for r in todo], default=1),
            stop_at_newline=True, keep_stop=True,
        ) if todo else []):
            results[r] = dataclasses.replace(results[r], decoded=tuple(ids[: requests[r].decode_tokens]))
        return results

    @staticmethod
    def _read(logprobs: torch.Tensor, first: int, cont: Sequence[int], choice_ids: Sequence[int]):
        """Score ``cont`` whose first token is predicted at row ``first`` of ``logprobs``."""
        choice = tuple(float(logprobs[first, t]) for t in choice_ids)
        if not cont:
            return ContinuationScore(0.0, True), choice
        positions = torch.arange(first, first + len(cont), device=logprobs.device)
        targets = torch.tensor(list(cont), device=logprobs.device)
        rows = logprobs[positions]
        lp = float(rows.gather(-1, targets[:, None]).sum())
        greedy = bool((rows.argmax(-1) == targets).all())
        return ContinuationScore(lp, greedy), choice

    # ------------------------------------------------------------------ memory
    def _with_oom_halving(self, items: list, fn) -> list:
        """Run ``fn(items)``; on out-of-memory split the batch in halves instead of failing."""
        try:
            return fn(items)
        except _OOM_ERRORS:
            if len(items) <= 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = math.ceil(len(items) / 2)
            return self._with_oom_halving(items[:half], fn) + self._with_oom_halving(items[half:], fn)


def sampling_kwargs(do_sample: bool, temperature: float, top_p: float) -> dict[str, Any]:
    """``generate`` keywords for greedy or sampled decoding (every generation path uses these)."""
    if do_sample:
        return {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
    # Clear sampling knobs a checkpoint's generation_config may carry, so greedy is greedy.
    return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, attention_mask)``: the sequences right-aligned in one batch, ``pad_id`` before them."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    return ids.to(device), mask.to(device)


# Per tokenizer, keyed on its size too (added tokens change it): the callback builds a ProbeLM per
# round on the same tokenizer, and one scan decodes every id of the vocabulary (~0.3 s at 49k).
_VOCAB_SCANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _scan_vocabulary(tokenizer) -> tuple[frozenset[int], frozenset[int]]:
    """``(newline ids, lead ids)`` of ``tokenizer``, from one decode of every id (cached)."""
    vocab = tokenizer.get_vocab()
    size = max(vocab.values(), default=-1) + 1
    try:
        cached = _VOCAB_SCANS.get(tokenizer)
    except TypeError:  # an unhashable tokenizer: scan every time
        cached = None
    if cached is not None and cached[0] == size:
        return cached[1]
    newlines, leads = set(), set()
    for t in range(size):
        text = tokenizer.decode([t])
        if "\n" in text:
            newlines.add(t)
        if is_lead_text(text.split("\n", 1)[0]):
            leads.add(t)
    found = (frozenset(newlines), frozenset(leads))
    with contextlib.suppress(TypeError):
        _VOCAB_SCANS[tokenizer] = (size, found)
    return found


def newline_ids(tokenizer) -> frozenset[int]:
    """The ids whose text contains a newline: exactly the ids ``t`` with
    ``"\\n" in tokenizer.decode([t])`` (ids past the vocabulary decode to nothing)."""
    return _scan_vocabulary(tokenizer)[0]


def lead_ids(tokenizer) -> frozenset[int]:
    """The ids whose text, up to a newline in it, is only what may precede an answer: whitespace,
    markup, a colon (``faithcb.answers.is_lead_text``). An answer does not end on a newline before
    a token outside them (``EndRule``)."""
    return _scan_vocabulary(tokenizer)[1]
