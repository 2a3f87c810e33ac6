"""ProbeLM: the only code in faithcb that touches a model.

It does two things — batched generation and teacher-forced scoring of continuations — inside
``ProbeLM.session()``, which puts the model in the state probing needs (eval mode, no gradients,
cache on) and restores everything it touched in ``finally``: train/eval mode, ``config.use_cache``
and the Python, NumPy, torch CPU and CUDA RNG states. The tokenizer is never mutated: batches are
padded here from token ids (left padding + attention mask + explicit position ids), so the
tokenizer's ``padding_side`` and ``pad_token`` stay as the user set them.

Scoring decides greedy agreement exactly (METRICS.md, "Answer agreement"): a continuation
``t_1..t_m`` is what greedy decoding would produce under a context iff every ``t_j`` is the argmax
at its position when teacher-forced. The fast path shares work between the variants of a problem
and batches problems together: each problem's prefix (prompt + full chain) runs once with the KV
cache; its variants' ``insert + cue`` are then packed into a few sequences on top of that cache,
then their continuations, then (where the exact check fails) their decoded answers. A tree-shaped
4-D attention mask lets every packed token see exactly what it would see in its standalone
sequence (the prefix up to its variant's cut, its own earlier tokens) and explicit position ids
give it the same positions, so each distinct token is read about once and a round of 16 problems
takes a few dozen forward passes. ``fast=False`` runs every variant as a full, independent
sequence — the reference the fast path is tested against.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

_OOM_ERRORS: tuple[type[BaseException], ...] = (torch.OutOfMemoryError,)


@dataclass(frozen=True)
class ScoreRequest:
    """Score ``continuations`` after ``prefix[:cut] + insert + cue``.

    Requests of one problem pass the *same* ``prefix`` list object (prompt + full chain), which
    is how the fast path knows it can share the prefix's KV cache between them.
    """

    prefix: Sequence[int]
    cut: int
    insert: Sequence[int]
    cue: Sequence[int]
    continuations: tuple[Sequence[int], ...]
    # For multiple choice: token ids of the choice letters; their log-probabilities at the first
    # answer position are returned (the answer is the best-scoring letter).
    choice_ids: tuple[int, ...] = ()
    # When the first continuation is *not* the greedy output, decode up to this many tokens
    # greedily (ending with the terminator) so the caller can compare normalized answers.
    decode_tokens: int = 0

    def context(self) -> list[int]:
        return [*self.prefix[: self.cut], *self.insert, *self.cue]


@dataclass(frozen=True)
class ContinuationScore:
    logprob: float  # sum of log p(t_j | context, t_<j) over the continuation's tokens
    greedy: bool  # every t_j is the argmax at its position


@dataclass(frozen=True)
class ScoreResult:
    continuations: tuple[ContinuationScore, ...]
    choice_logprobs: tuple[float, ...] = ()
    decoded: tuple[int, ...] | None = None  # greedy answer tokens, when asked for and needed


@dataclass
class TokenCounter:
    """Forward-pass token accounting, for the benchmark (distinct vs processed tokens)."""

    processed: int = 0  # every position fed to a forward pass, padding included
    real: int = 0  # non-padding positions
    forward_calls: int = 0

    def add(self, mask: torch.Tensor) -> None:
        self.processed += int(mask.numel())
        self.real += int(mask.sum())
        self.forward_calls += 1


@dataclass
class _SavedState:
    training: bool
    use_cache: bool | None
    python_rng: object
    numpy_rng: object | None
    torch_rng: torch.Tensor
    cuda_rng: list[torch.Tensor] = field(default_factory=list)


class ProbeLM:
    """Generation and scoring on a live model, with every side effect undone afterwards."""

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
        self.counter = TokenCounter()
        eos = tokenizer.eos_token_id
        self.eos_ids: set[int] = set(eos if isinstance(eos, list) else [eos]) - {None}
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        if gen_eos is not None:
            self.eos_ids |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        pad = tokenizer.pad_token_id
        # A model without a pad token still works: padded positions are masked, any id will do.
        self.pad_id = pad if pad is not None else (min(self.eos_ids) if self.eos_ids else 0)

    # ------------------------------------------------------------------ state handling
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _config(self):
        return getattr(self.model, "config", None)

    @contextlib.contextmanager
    def session(self) -> Iterator[ProbeLM]:
        """Eval mode, no grad, cache on; restore mode, cache flag and every RNG afterwards."""
        config = self._config()
        saved = _SavedState(
            training=self.model.training,
            use_cache=getattr(config, "use_cache", None),
            python_rng=random.getstate(),
            numpy_rng=_numpy_state(),
            torch_rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        )
        try:
            self.model.eval()
            if config is not None:
                config.use_cache = True
            with torch.no_grad():
                yield self
        finally:
            self.model.train(saved.training)
            if config is not None and saved.use_cache is not None:
                config.use_cache = saved.use_cache
            random.setstate(saved.python_rng)
            if saved.numpy_rng is not None:
                import numpy as np

                np.random.set_state(saved.numpy_rng)
            torch.set_rng_state(saved.torch_rng)
            if saved.cuda_rng:
                torch.cuda.set_rng_state_all(saved.cuda_rng)

    # ------------------------------------------------------------------ tokens
    def encode(self, text: str, *, special: bool = False) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def _left_pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            if seq:
                ids[row, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
                mask[row, width - len(seq) :] = 1
        return ids.to(self.device), mask.to(self.device)

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
    ) -> list[list[int]]:
        """Continue each prompt; returns the new tokens up to the first end token.

        ``keep_stop`` keeps that end token (or newline) in the result: an answer's token sequence
        must include its terminator for the teacher-forced greedy check to be exact ("14" then
        end is a different greedy output than "140").
        """
        results: list[list[int]] = []
        if seed is not None and do_sample:
            torch.manual_seed(seed)  # restored by session()
        for start in range(0, len(prompts), self.max_batch_size):
            chunk = prompts[start : start + self.max_batch_size]
            results.extend(
                self._with_oom_halving(
                    chunk,
                    lambda part: self._generate_batch(
                        part, max_new_tokens, do_sample, temperature, top_p, stop_at_newline, keep_stop
                    ),
                )
            )
        return results

    def _generate_batch(self, prompts, max_new_tokens, do_sample, temperature, top_p, stop_at_newline, keep_stop):
        ids, mask = self._left_pad(prompts)
        kwargs = {"do_sample": do_sample}
        if do_sample:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
        else:
            # Clear sampling knobs a checkpoint's generation_config may carry, so greedy is greedy.
            kwargs.update(temperature=None, top_p=None, top_k=None)
        out = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            pad_token_id=self.pad_id,
            eos_token_id=sorted(self.eos_ids) or None,
            use_cache=True,
            **kwargs,
        )
        self.counter.add(mask)
        new = out[:, ids.shape[1] :].tolist()
        return [self._cut_at_end(seq, stop_at_newline, keep_stop) for seq in new]

    def _cut_at_end(self, seq: list[int], stop_at_newline: bool, keep_stop: bool) -> list[int]:
        for i, tok in enumerate(seq):
            if tok in self.eos_ids or (stop_at_newline and i > 0 and "\n" in self.tokenizer.decode([tok])):
                return seq[: i + 1] if keep_stop else seq[:i]
        return seq

    def answer(self, contexts: Sequence[Sequence[int]]) -> list[list[int]]:
        """Greedy answer tokens after each context: a few tokens, ending with their terminator."""
        return self.generate(
            contexts, max_new_tokens=self.answer_max_tokens, stop_at_newline=True, keep_stop=True
        )

    # ------------------------------------------------------------------ scoring
    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Teacher-forced log-probabilities and exact greedy agreement for every request."""
        if not self.fast or not self._packing_supported():
            return self._score_plain(requests)
        results: list[ScoreResult | None] = [None] * len(requests)
        groups: dict[int, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(id(req.prefix), []).append(i)
        shared = [idx for idx in groups.values() if max(requests[i].cut for i in idx) > 0]
        # Nothing to share when every context starts at the insert: those go the plain way.
        alone = [i for idx in groups.values() if max(requests[i].cut for i in idx) == 0 for i in idx]
        problems = [[_feed_last_prefix_token(requests[i]) for i in idx] for idx in shared]
        for batch in self._problem_batches(problems):
            scored = self._with_oom_halving([problems[b] for b in batch], self._score_packed)
            for b, problem_results in zip(batch, scored):
                for i, res in zip(shared[b], problem_results):
                    results[i] = res
        for i, res in zip(alone, self._score_plain([requests[i] for i in alone]) if alone else []):
            results[i] = res
        return results  # type: ignore[return-value]

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
            self.counter.add(mask)
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
        todo = [r for r, req in enumerate(requests) if _needs_decode(req, results[r])]
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

    # Fast path. Each problem's prefix (prompt + chain) runs once; then its variants' inserts +
    # cues are packed into a few sequences ("bins", one batch row each) on top of a copy of that
    # prefix's cache, then their continuations, then the answers that must be decoded. A 4-D mask
    # (``_KeyTable``) gives each packed token exactly the keys its standalone sequence would have
    # (prefix[:cut], its own earlier tokens) and explicit position ids give it the same
    # positions. Several problems share every forward pass.
    def _score_packed(self, problems: Sequence[Sequence[ScoreRequest]]) -> list[list[ScoreResult]]:
        """Score several problems' requests (each problem's requests share one prefix)."""
        dev = self.device
        # Stage 0: the prefixes, right-padded (real tokens keep positions 0..n-1); no logits.
        needed = [max(r.cut for r in reqs) for reqs in problems]
        width = max(needed)
        ids = torch.full((len(problems), width), self.pad_id, dtype=torch.long)
        real = torch.zeros((len(problems), width), dtype=torch.bool)
        for g, reqs in enumerate(problems):
            ids[g, : needed[g]] = torch.tensor(list(reqs[0].prefix[: needed[g]]), dtype=torch.long)
            real[g, : needed[g]] = True
        self.counter.add(real)
        cache = self._forward(ids.to(dev), real.long().to(dev), torch.arange(width).expand_as(ids).to(dev), None,
                              torch.zeros_like(real).to(dev))[0]
        # One batch row per bin from here on; a bin starts from its problem's prefix cache.
        bins = [(g, idx) for g, reqs in enumerate(problems) for idx in self._bins(reqs)]
        home = {(g, r): b for b, (g, idx) in enumerate(bins) for r in idx}
        row_problem = torch.tensor([g for g, _ in bins], dtype=torch.long, device=dev)
        if len(bins) != len(problems):
            cache.reorder_cache(row_problem)
        keys = _KeyTable(real.to(dev)[row_problem])

        # Stage 1: every request's insert + cue; keep the logits at its last token.
        mids = [[[*r.insert, *r.cue] for r in reqs] for reqs in problems]
        rows = [
            [(tok, r, -1, problems[g][r].cut + j, problems[g][r].cut, j == len(mids[g][r]) - 1)
             for r in idx for j, tok in enumerate(mids[g][r])]
            for g, idx in bins
        ]
        cache, first = self._forward_packed(cache, keys, rows)
        first_at = {(b, r): k for k, (b, (_t, r, *_rest)) in enumerate(_kept(rows))}

        # Stage 2: each continuation's tokens but the last (that one is only predicted).
        rows = [
            [(tok, r, c, problems[g][r].cut + len(mids[g][r]) + j, problems[g][r].cut, True)
             for r in idx for c, cont in enumerate(problems[g][r].continuations) for j, tok in enumerate(cont[:-1])]
            for g, idx in bins
        ]
        later = None
        if any(rows):
            cache, later = self._forward_packed(cache, keys, rows)
        later_at = {(b, r, c, pos): k for k, (b, (_t, r, c, pos, *_rest)) in enumerate(_kept(rows))}

        results: list[list[ScoreResult]] = []
        todo: list[tuple[int, int]] = []
        for g, reqs in enumerate(problems):
            out = []
            for r, req in enumerate(reqs):
                b = home[(g, r)]
                head = first[first_at[(b, r)]]
                start = req.cut + len(mids[g][r])
                scores = [
                    _continuation_score([head, *(later[later_at[(b, r, c, start + j)]] for j in range(len(cont) - 1))], cont)
                    for c, cont in enumerate(req.continuations)
                ]
                res = ScoreResult(tuple(scores), tuple(float(head.logprobs[t]) for t in req.choice_ids))
                if _needs_decode(req, res):
                    todo.append((g, r))
                out.append(res)
            results.append(out)
        if todo:
            decoded = self._decode_from_cache(problems, todo, home, cache, keys, first, first_at, mids)
            for (g, r), toks in zip(todo, decoded):
                results[g][r] = dataclasses.replace(results[g][r], decoded=tuple(toks))
        return results

    def _bins(self, reqs: Sequence[ScoreRequest]) -> list[list[int]]:
        """One problem's requests split into packed sequences of about ``bin_tokens`` tokens.

        A packed sequence pays attention between all its tokens, masked or not, so shorter ones
        waste less; but every bin costs a copy of the prefix cache, and all rows of a pass are
        padded to the longest. Dealing the requests longest first, back and forth over the bins,
        gives every bin a similar share of long (filler) and short (truncation) requests, so
        both their insert + cue and their continuation widths come out even.
        """
        size = [_branch_tokens(r) for r in reqs]
        capacity = max(self.bin_tokens, max(size))  # the longest request sets the row width anyway
        count = max(1, min(len(reqs), round(sum(size) / capacity)))
        bins: list[list[int]] = [[] for _ in range(count)]
        for turn, r in enumerate(sorted(range(len(reqs)), key=lambda r: -size[r])):
            lap, slot = divmod(turn, count)
            bins[slot if lap % 2 == 0 else count - 1 - slot].append(r)
        return bins

    def _decode_from_cache(self, problems, todo, home, cache, keys, first, first_at, mids) -> list[list[int]]:
        """Greedy answers for requests ``todo`` (problem, request), continuing their cached
        contexts: one packed decoding step per token for all of them, never re-reading a context."""
        outs = [[first[first_at[(home[key], key[1])]].argmax] for key in todo]
        # Decode on the rows that hold these requests only: every pass reads (and grows) the
        # whole cache of every row it runs, and usually a few requests of a few rows need decoding.
        used = sorted({home[key] for key in todo})
        if len(used) < keys.req.shape[0]:
            index = torch.tensor(used, dtype=torch.long, device=self.device)
            cache.reorder_cache(index)
            keys.select(index)
            row_of = {b: i for i, b in enumerate(used)}
            home = {key: row_of[home[key]] for key in todo}
        for step in range(1, max(problems[g][r].decode_tokens for g, r in todo)):
            active = [
                i for i, (g, r) in enumerate(todo)
                if len(outs[i]) < problems[g][r].decode_tokens and not self._ends_answer(outs[i])
            ]
            if not active:
                break
            rows: list[list[tuple]] = [[] for _ in range(keys.req.shape[0])]
            for i in active:
                g, r = todo[i]
                req = problems[g][r]
                rows[home[(g, r)]].append((outs[i][-1], r, -2, req.cut + len(mids[g][r]) + step - 1, req.cut, True))
            cache, nxt = self._forward_packed(cache, keys, rows)
            order = sorted(active, key=lambda i: home[todo[i]])  # packing order: by row, then as added
            for i, pick in zip(order, nxt):
                outs[i].append(pick.argmax)
        return outs

    def _ends_answer(self, answer: list[int]) -> bool:
        # Like ``answer``: an end token ends it anywhere, a newline only after the first token.
        last = answer[-1]
        return last in self.eos_ids or (len(answer) > 1 and "\n" in self.tokenizer.decode([last]))

    def _forward_packed(self, cache, keys: _KeyTable, rows: Sequence[Sequence[tuple]]):
        """One packed forward pass: ``rows[b]`` lists the (token, request, branch, position, cut,
        keep) entries of batch row b. Returns the grown cache and the next-token scores at the kept
        entries, in row order."""
        dev = self.device
        length = max(1, max(len(row) for row in rows))
        shape = (len(rows), length)
        ids = torch.full(shape, self.pad_id, dtype=torch.long)
        req = torch.full(shape, -1, dtype=torch.long)
        branch = torch.full(shape, -3, dtype=torch.long)
        pos = torch.zeros(shape, dtype=torch.long)
        cut = torch.zeros(shape, dtype=torch.long)
        keep = torch.zeros(shape, dtype=torch.bool)
        for g, row in enumerate(rows):
            if row:
                cols = list(zip(*row))
                n = len(row)
                ids[g, :n], req[g, :n], branch[g, :n] = (torch.tensor(x, dtype=torch.long) for x in cols[:3])
                pos[g, :n], cut[g, :n] = (torch.tensor(x, dtype=torch.long) for x in cols[3:5])
                keep[g, :n] = torch.tensor(cols[5], dtype=torch.bool)
        req, branch, pos, cut, keep = (t.to(dev) for t in (req, branch, pos, cut, keep))
        self.counter.add(req >= 0)
        mask = keys.extend(req, branch, pos, cut, self._mask_dtype())
        return self._forward(ids.to(dev), mask, pos, cache, keep)

    def _forward(self, ids, mask, pos, cache, keep):
        """Run the model, projecting onto the vocabulary only the hidden states at ``keep``."""
        head = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        gathered = []

        def only_kept(_module, args):
            if not args:  # called with keyword arguments: leave it alone, gather afterwards
                return None
            gathered.append(True)
            return (args[0][keep][None], *args[1:])

        handle = head.register_forward_pre_hook(only_kept) if head is not None else None
        try:
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True)
        finally:
            if handle is not None:
                handle.remove()
        logits = out.logits[0] if gathered else out.logits[keep]  # (kept positions, vocab)
        return out.past_key_values, _NextToken.from_logits(logits)

    def _mask_dtype(self) -> torch.dtype:
        # SDPA takes a boolean mask (True = attend) whatever the compute dtype; eager attention
        # adds the mask to its scores, so it needs an additive float mask.
        if getattr(self._config(), "_attn_implementation", "sdpa") == "sdpa":
            return torch.bool
        return torch.float32

    def _packing_supported(self) -> bool:
        """The packed path needs a custom 4-D mask, which sdpa and eager attention take; other
        kernels (flash-attention, flex) would ignore or reject it. Sliding-window layers crop
        their cache to the window, and a packed cache (prefix + every variant) outgrows it. Those
        models use the plain path."""
        config = self._config()
        return getattr(config, "_attn_implementation", "sdpa") in ("sdpa", "eager") and not _sliding_window(config)

    def _problem_batches(self, problems: list[list[ScoreRequest]]) -> list[list[int]]:
        """Problem indices in batches: at most ``max_batch_size`` problems and ``max_batch_tokens``
        packed tokens, of similar packed length (a batch is closed once right-padding would exceed
        a quarter of its real tokens)."""
        size = [_packed_tokens(reqs) for reqs in problems]
        batches: list[list[int]] = []
        for i in sorted(range(len(problems)), key=size.__getitem__):
            current = batches[-1] if batches else None
            if current is not None and len(current) < self.max_batch_size:
                total = sum(size[j] for j in current) + size[i]
                if size[i] * (len(current) + 1) <= 1.25 * total and total <= self.max_batch_tokens:
                    current.append(i)
                    continue
            batches.append([i])
        return batches

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


class _KeyTable:
    """Which cached key each packed query may attend to (the fast path's tree-shaped mask).

    One row per problem. Every key in the cache is tagged with the request it belongs to (-1 for
    the shared prefix and for padding), its branch (-1: the request's insert + cue, c >= 0: its
    continuation c, -2: its decoded answer) and its position. A query of request r, branch b at
    position p sees the prefix keys before r's cut and r's own keys of branch -1 or b up to p:
    exactly the keys of its standalone sequence.
    """

    def __init__(self, prefix_real: torch.Tensor):
        rows, width = prefix_real.shape
        dev = prefix_real.device
        self.prefix = prefix_real
        self.req = torch.full((rows, width), -1, dtype=torch.long, device=dev)
        self.branch = torch.full((rows, width), -3, dtype=torch.long, device=dev)
        self.pos = torch.arange(width, device=dev).expand(rows, width)

    def select(self, rows: torch.Tensor) -> None:
        """Keep only these batch rows (as the cache did)."""
        self.prefix, self.req, self.branch, self.pos = (t[rows] for t in (self.prefix, self.req, self.branch, self.pos))

    def extend(self, req, branch, pos, cut, dtype: torch.dtype) -> torch.Tensor:
        """Add the queries of the next pass as keys; return its (rows, 1, queries, keys) mask."""
        self.prefix = torch.cat([self.prefix, torch.zeros_like(req, dtype=torch.bool)], dim=1)
        self.req = torch.cat([self.req, req], dim=1)
        self.branch = torch.cat([self.branch, branch], dim=1)
        self.pos = torch.cat([self.pos, pos], dim=1)
        q = lambda t: t[:, :, None]  # noqa: E731 - broadcasting helpers
        k = lambda t: t[:, None, :]  # noqa: E731
        allowed = k(self.prefix) & (k(self.pos) < q(cut))
        same_branch = (k(self.branch) == -1) | (k(self.branch) == q(branch))
        allowed |= (k(self.req) == q(req)) & (q(req) >= 0) & same_branch & (k(self.pos) <= q(pos))
        # Padding queries look at the first prefix token only: an all-masked softmax row would
        # be NaN, and NaN values would leak through later passes' zero attention weights.
        allowed[:, :, 0] |= req < 0
        if dtype == torch.bool:
            return allowed[:, None]
        mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


@dataclass(frozen=True)
class _Next:
    """The next-token distribution at one kept position."""

    logprobs: torch.Tensor  # (vocab,)
    argmax: int


class _NextToken(Sequence):
    """Next-token log-probabilities at the kept positions of one pass, in packing order."""

    def __init__(self, logprobs: torch.Tensor):
        self.logprobs = logprobs
        self.best = logprobs.argmax(-1).tolist() if len(logprobs) else []

    @classmethod
    def from_logits(cls, logits: torch.Tensor) -> _NextToken:
        return cls(torch.log_softmax(logits.float(), -1))

    def __len__(self) -> int:
        return len(self.best)

    def __getitem__(self, k):
        return _Next(self.logprobs[k], self.best[k])


def _kept(rows: Sequence[Sequence[tuple]]):
    """(problem, entry) for every kept entry, in the order their logits come back."""
    for g, row in enumerate(rows):
        for entry in row:
            if entry[5]:
                yield g, entry


def _continuation_score(steps: Sequence[_Next], cont: Sequence[int]) -> ContinuationScore:
    if not cont:
        return ContinuationScore(0.0, True)
    logprob = sum(float(step.logprobs[t]) for step, t in zip(steps, cont))
    return ContinuationScore(logprob, all(step.argmax == t for step, t in zip(steps, cont)))


def _feed_last_prefix_token(req: ScoreRequest) -> ScoreRequest:
    """A request with neither insert nor cue re-feeds its last prefix token as its insert (same
    context, same positions): the packed pass reads the first answer token off that token."""
    if req.insert or req.cue or req.cut == 0:
        return req
    return dataclasses.replace(req, cut=req.cut - 1, insert=(req.prefix[req.cut - 1],))


def _branch_tokens(req: ScoreRequest) -> int:
    """Tokens one request adds after its cut: insert + cue, and every continuation but its last."""
    return len(req.insert) + len(req.cue) + sum(max(0, len(c) - 1) for c in req.continuations)


def _packed_tokens(reqs: Sequence[ScoreRequest]) -> int:
    """Tokens one problem puts through the packed passes (prefix, inserts + cues, continuations)."""
    return max(r.cut for r in reqs) + sum(_branch_tokens(r) for r in reqs)


def _sliding_window(config) -> bool:
    """Whether any attention layer of the model uses a sliding window."""
    if not getattr(config, "sliding_window", None) or getattr(config, "use_sliding_window", True) is False:
        return False
    types = getattr(config, "layer_types", None)
    return True if types is None else any("sliding" in t for t in types)


def _numpy_state():
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy ships with torch's usual installs
        return None
    return np.random.get_state()


def _needs_decode(request: ScoreRequest, result: ScoreResult) -> bool:
    return bool(request.decode_tokens and result.continuations and not result.continuations[0].greedy)
