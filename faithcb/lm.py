"""ProbeLM: the only code in faithcb that touches a model.

It does two things — batched generation and teacher-forced scoring of continuations — inside
``ProbeLM.session()``, which puts the model in the state probing needs (eval mode, no gradients,
cache on) and restores everything it touched in ``finally``: train/eval mode, ``config.use_cache``
and the Python, NumPy, torch CPU and CUDA RNG states. The tokenizer is never mutated: batches are
padded here from token ids (left padding + attention mask + explicit position ids), so the
tokenizer's ``padding_side`` and ``pad_token`` stay as the user set them.

Scoring decides greedy agreement exactly (METRICS.md, "Answer agreement"): a continuation
``t_1..t_m`` is what greedy decoding would produce under a context iff every ``t_j`` is the argmax
at its position when teacher-forced. The fast path shares work between variants of one problem:
the problem's prefix (prompt + full chain) runs once with the KV cache, then every variant's
``insert + cue`` runs as one batch attending to its own cut of that cache (a 2-D attention mask
hides the rest of the chain; position ids continue from the cut), and finally the continuations
run on top of that. Each distinct token is read about once. ``fast=False`` runs every variant as
a full, independent sequence — the reference the fast path is tested against.
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
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.fast = fast
        self.max_batch_size = max(1, int(max_batch_size))
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
        if not self.fast:
            return self._score_plain(requests)
        results: list[ScoreResult | None] = [None] * len(requests)
        groups: dict[int, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(id(req.prefix), []).append(i)
        for indices in groups.values():
            group = [requests[i] for i in indices]
            for i, res in zip(indices, self._score_shared_prefix(group)):
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

    # Fast path: prefix once, then all variants' insert+cue, then their continuations.
    def _score_shared_prefix(self, group: Sequence[ScoreRequest]) -> list[ScoreResult]:
        # Stage 1 reads the first answer token off the last insert/cue position, so a request with
        # neither re-feeds its last prefix token there instead (same context, same positions).
        group = [
            dataclasses.replace(r, cut=r.cut - 1, insert=(r.prefix[r.cut - 1],), cue=())
            if not r.insert and not r.cue and r.cut > 0
            else r
            for r in group
        ]
        prefix = list(group[0].prefix)
        needed = max(req.cut for req in group)
        if needed == 0:  # nothing to share (every context starts at the insert)
            return self._score_plain(group)
        prefix_ids = torch.tensor([prefix[:needed]], dtype=torch.long, device=self.device)
        prefix_mask = torch.ones_like(prefix_ids)
        self.counter.add(prefix_mask)
        # Only the cache is needed here: skip the vocabulary projection for all but one position.
        cache = self.model(
            input_ids=prefix_ids, attention_mask=prefix_mask, use_cache=True, logits_to_keep=1
        ).past_key_values
        kv = [(layer.keys, layer.values) for layer in cache.layers]

        results: list[ScoreResult | None] = [None] * len(group)
        for idx in self._length_chunks(group):
            chunk = [group[i] for i in idx]
            scored = self._with_oom_halving(chunk, lambda part: self._score_branches(part, kv, needed))
            for i, res in zip(idx, scored):
                results[i] = res
        return results  # type: ignore[return-value]

    def _length_chunks(self, group: Sequence[ScoreRequest]) -> list[list[int]]:
        """Request indices in batches of similar insert+cue length.

        Rows are right-padded to their batch's longest row, so a long filler row would pad every
        short truncation row beside it: a batch is closed once padding would exceed a quarter of
        its real tokens (or it holds ``max_batch_size`` rows).
        """
        width = [len(r.insert) + len(r.cue) for r in group]
        chunks: list[list[int]] = []
        for i in sorted(range(len(group)), key=width.__getitem__):
            current = chunks[-1] if chunks else None
            if current is not None and len(current) < self.max_batch_size:
                real = sum(width[j] for j in current) + width[i]
                if width[i] * (len(current) + 1) <= 1.25 * real:
                    current.append(i)
                    continue
            chunks.append([i])
        return chunks

    def _expand_cache(self, kv, rows: torch.Tensor):
        from transformers import DynamicCache

        data = [(k[rows] if k.shape[0] > 1 else k.expand(len(rows), -1, -1, -1).contiguous(),
                 v[rows] if v.shape[0] > 1 else v.expand(len(rows), -1, -1, -1).contiguous()) for k, v in kv]
        return DynamicCache(ddp_cache_data=data, config=self._config())

    def _score_branches(self, chunk: Sequence[ScoreRequest], kv, prefix_len: int) -> list[ScoreResult]:
        dev = self.device
        # Stage 1: insert + cue for each request, right-padded, attending to prefix[:cut].
        mids = [[*req.insert, *req.cue] for req in chunk]
        width = max(len(m) for m in mids)
        ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), prefix_len + width), dtype=torch.long)
        pos = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, (req, mid) in enumerate(zip(chunk, mids)):
            ids[r, : len(mid)] = torch.tensor(mid, dtype=torch.long)
            mask[r, : req.cut] = 1
            mask[r, prefix_len : prefix_len + len(mid)] = 1
            pos[r] = torch.arange(req.cut, req.cut + width)
        ids, mask, pos = ids.to(dev), mask.to(dev), pos.to(dev)
        cache = self._expand_cache(kv, torch.zeros(len(chunk), dtype=torch.long, device=dev))
        self.counter.add(mask[:, prefix_len:])
        # Only each row's last real position is read: project just those onto the vocabulary
        # (stage1[:, slot[r]] is row r's next-token distribution after its insert + cue).
        keep = sorted({len(m) - 1 for m in mids})
        slot = {p: i for i, p in enumerate(keep)}
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True,
            logits_to_keep=torch.tensor(keep, device=dev),
        )
        stage1 = torch.log_softmax(out.logits.float(), -1)
        stage1_kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]

        # Stage 2: every continuation on top of its request's cached prefix + insert + cue.
        branches = [(r, c, list(cont)) for r, req in enumerate(chunk) for c, cont in enumerate(req.continuations)]
        tails = [b for b in branches if len(b[2]) > 1]
        stage2 = None
        if tails:
            twidth = max(len(t[2]) - 1 for t in tails)
            rows = torch.tensor([t[0] for t in tails], dtype=torch.long, device=dev)
            tids = torch.full((len(tails), twidth), self.pad_id, dtype=torch.long)
            tmask = torch.cat(
                [mask[rows], torch.zeros((len(tails), twidth), dtype=torch.long, device=dev)], dim=1
            ).cpu()
            tpos = torch.zeros((len(tails), twidth), dtype=torch.long)
            for b, (r, _c, cont) in enumerate(tails):
                body = cont[:-1]  # the last token is only predicted, never fed
                tids[b, : len(body)] = torch.tensor(body, dtype=torch.long)
                tmask[b, prefix_len + width : prefix_len + width + len(body)] = 1
                start = chunk[r].cut + len(mids[r])
                tpos[b] = torch.arange(start, start + twidth)
            tcache = self._expand_cache(stage1_kv, rows)
            self.counter.add(tmask[:, prefix_len + width :])
            out2 = self.model(
                input_ids=tids.to(dev), attention_mask=tmask.to(dev), position_ids=tpos.to(dev),
                past_key_values=tcache, use_cache=True,
            )
            stage2 = torch.log_softmax(out2.logits.float(), -1)
        tail_row = {(t[0], t[1]): b for b, t in enumerate(tails)}

        results = []
        for r, req in enumerate(chunk):
            last = slot[len(mids[r]) - 1]  # stage-1 logits predicting the first answer token
            choice = tuple(float(stage1[r, last, t]) for t in req.choice_ids)
            scores = []
            for c, cont in enumerate(req.continuations):
                if not cont:
                    scores.append(ContinuationScore(0.0, True))
                    continue
                rows_lp = [stage1[r, last]]
                if len(cont) > 1:
                    assert stage2 is not None
                    b = tail_row[(r, c)]
                    rows_lp.extend(stage2[b, j] for j in range(len(cont) - 1))
                lp = sum(float(row[t]) for row, t in zip(rows_lp, cont))
                greedy = all(int(row.argmax()) == t for row, t in zip(rows_lp, cont))
                scores.append(ContinuationScore(lp, greedy))
            results.append(ScoreResult(tuple(scores), choice))

        todo = [r for r, req in enumerate(chunk) if _needs_decode(req, results[r])]
        if todo:
            decoded = self._decode_from_cache(chunk, todo, stage1, slot, stage1_kv, mask, mids)
            for r, ids in zip(todo, decoded):
                results[r] = dataclasses.replace(results[r], decoded=tuple(ids))
        return results

    def _decode_from_cache(self, chunk, todo, stage1, slot, stage1_kv, mask, mids) -> list[list[int]]:
        """Greedy answers for rows ``todo``, continuing from their cached context (no re-reading)."""
        dev = self.device
        rows = torch.tensor(todo, dtype=torch.long, device=dev)
        cache = self._expand_cache(stage1_kv, rows)
        attn = mask[rows]
        ends = [len(mids[r]) for r in todo]  # tokens after the cut, per row
        token = torch.stack([stage1[r, slot[ends[i] - 1]].argmax() for i, r in enumerate(todo)])
        outs: list[list[int]] = [[int(t)] for t in token]
        done = [int(t) in self.eos_ids for t in token]
        limit = max(chunk[r].decode_tokens for r in todo)
        for step in range(1, limit):
            if all(done):
                break
            attn = torch.cat([attn, torch.ones((len(todo), 1), dtype=attn.dtype, device=dev)], dim=1)
            pos = torch.tensor([[chunk[r].cut + ends[i] + step - 1] for i, r in enumerate(todo)], device=dev)
            self.counter.add(attn[:, -1:])
            out = self.model(input_ids=token[:, None], attention_mask=attn, position_ids=pos,
                             past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            token = out.logits[:, -1].argmax(-1)
            for i, t in enumerate(token.tolist()):
                if done[i] or len(outs[i]) >= chunk[todo[i]].decode_tokens:
                    done[i] = True
                    continue
                outs[i].append(t)
                done[i] = t in self.eos_ids or "\n" in self.tokenizer.decode([t])
        return outs

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


def _numpy_state():
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy ships with torch's usual installs
        return None
    return np.random.get_state()


def _needs_decode(request: ScoreRequest, result: ScoreResult) -> bool:
    return bool(request.decode_tokens and result.continuations and not result.continuations[0].greedy)
