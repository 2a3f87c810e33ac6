"""The packed cross-problem scorer: ``ProbeLM.score``'s fast path, on token ids only.

Scoring decides greedy agreement exactly (docs/metrics.md, "How agreement is decided"): a continuation
``t_1..t_m`` is what greedy decoding would produce under a context iff every ``t_j`` is the argmax
at its position when teacher-forced. This module shares the work between the variants of a
problem and batches problems together: each problem's prefix (prompt + full chain) runs once
with the KV cache; its variants' ``insert + cue``, each followed by its continuations, are then
packed into a few sequences on top of that cache, and (where the exact check fails) their answers
are decoded from it.
A tree-shaped 4-D attention mask lets every packed token see exactly what it would see in its
standalone sequence (the prefix up to its variant's cut, its own earlier tokens) and explicit
position ids give it the same positions, so each distinct token is read about once and a round
of 16 problems takes a few dozen forward passes.

The scorer never sees text: where a decoded answer ends (an end-of-sequence id, or a newline
after its first token) is the caller's ``faithcb.scoring.EndRule``, on id sets computed once. Session handling,
batching under out-of-memory and the plain reference path stay in ``faithcb.lm.ProbeLM``.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from faithcb.kv_room import decode_room, reserve
from faithcb.scoring import ContinuationScore, EndRule, ScoreRequest, ScoreResult, TokenCounter, needs_decode

__all__ = [
    "PackedScorer",
    "attention_implementation",
    "cache_keyword",
    "group_problems",
    "mask_dtype",
    "packing_supported",
]


# ---------------------------------------------------------------------- what the model supports
# The attention kernels that take the packed path's custom 4-D mask, and the mask dtype each needs:
# SDPA takes a boolean mask (True = attend) whatever the compute dtype; eager attention adds the
# mask to its scores, so it needs an additive float mask. Every other kernel (flash-attention,
# flex, paged, hub kernels) would ignore or reject the mask and score the wrong context.
_PACKED_MASK_DTYPES: dict[str, torch.dtype] = {"sdpa": torch.bool, "eager": torch.float32}

# Where transformers keeps the kernel's name on a config: the ``_attn_implementation`` property
# (4.4x through 5.x), over the ``_attn_implementation_internal`` attribute that stores it.
_ATTENTION_ATTRIBUTES = ("_attn_implementation", "_attn_implementation_internal")


# A packed entry's paths (its ``branch`` bit set): continuation c is bit c, the decoded answer DECODED,
# and a request's insert + cue lies on every path.
EVERY_PATH = -1
DECODED = 1 << 62


def attention_implementation(config) -> str | None:
    """The attention kernel a model with this config runs ("sdpa", "eager", ...), or None.

    None when the config does not say (no config, an attribute renamed by a later transformers, a
    value that is not a name): callers must then assume the worst, not a default.
    """
    for name in _ATTENTION_ATTRIBUTES:
        try:
            value = getattr(config, name, None)
        except Exception:  # a property that cannot answer on a half-built config
            value = None
        if isinstance(value, str):
            return value
    return None


def packing_supported(config) -> bool:
    """Whether a model with this config can take the packed path.

    The packed path needs a custom 4-D mask, which sdpa and eager attention take; other kernels
    (flash-attention, flex) would ignore or reject it, and a kernel this cannot name (a config
    without the attribute, as after a rename in transformers) is treated as one of those: the
    plain path is slower, never wrong. Sliding-window layers crop their cache to the window, and a
    packed cache (prefix + every variant) outgrows it. Those models use the plain path.
    """
    return attention_implementation(config) in _PACKED_MASK_DTYPES and not _sliding_window(config)


def mask_dtype(config) -> torch.dtype:
    """The packed mask's dtype for this model's attention kernel (``ValueError`` for one that cannot pack)."""
    kernel = attention_implementation(config)
    if kernel not in _PACKED_MASK_DTYPES:
        raise ValueError(
            f"the packed path needs sdpa or eager attention; this model's is {kernel!r} (see packing_supported)"
        )
    return _PACKED_MASK_DTYPES[kernel]


def cache_keyword(model) -> str:
    """The keyword under which ``model``'s forward takes (and its output returns) the KV cache.

    transformers 5.x renamed ``past_key_values`` to ``cache``; the old name still works there but
    raises a FutureWarning on every call (its ``deprecate_kwarg`` decorator) and a logged warning
    when read off the output. Older versions (>= 4.56) only know ``past_key_values``. The class's
    forward is inspected (``inspect.signature`` follows the decorators' ``__wrapped__``), through a
    PEFT wrapper to the model it wraps: their own forward passes the cache on in ``**kwargs``.
    """
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    forward = getattr(type(base), "forward", None)
    try:
        params = inspect.signature(forward).parameters if forward is not None else {}
    except (TypeError, ValueError):  # pragma: no cover - builtins or C-implemented forwards
        params = {}
    return "cache" if "cache" in params else "past_key_values"


def _sliding_window(config) -> bool:
    """Whether any attention layer of the model uses a sliding window."""
    if not getattr(config, "sliding_window", None) or getattr(config, "use_sliding_window", True) is False:
        return False
    types = getattr(config, "layer_types", None)
    return True if types is None else any("sliding" in t for t in types)


# ---------------------------------------------------------------------- grouping requests
def group_problems(
    requests: Sequence[ScoreRequest],
) -> tuple[list[list[int]], list[list[ScoreRequest]], list[int]]:
    """Split ``requests`` by their ``group`` key, in order of first appearance.

    Returns the request indices of each problem that has a prefix to share, those problems'
    requests as the packed passes take them, and the indices of the requests left to the plain
    path (their problem has nothing to share: every context starts at the insert). Raises
    ``ValueError`` when requests of one group disagree on the prefix they would share.
    """
    groups: dict[Hashable, list[int]] = {}
    for i, req in enumerate(requests):
        groups.setdefault(req.group, []).append(i)
    shared = [idx for idx in groups.values() if max(requests[i].cut for i in idx) > 0]
    alone = [i for idx in groups.values() if max(requests[i].cut for i in idx) == 0 for i in idx]
    for idx in shared:
        _check_shared_prefix([requests[i] for i in idx])
    problems = [[_feed_last_prefix_token(requests[i]) for i in idx] for idx in shared]
    return shared, problems, alone


def _check_shared_prefix(reqs: Sequence[ScoreRequest]) -> None:
    # The prefix cache is built from the longest cut's prefix and read by every request of the
    # group, so a request whose prefix differs before its own cut would be scored on another
    # problem's text. Requests built from one list object (the engine's chain.prefix) skip the
    # comparison.
    longest = max(reqs, key=lambda r: r.cut)
    for req in reqs:
        if req.prefix is not longest.prefix and list(req.prefix[: req.cut]) != list(longest.prefix[: req.cut]):
            raise ValueError(
                f"ScoreRequest group {req.group!r}: requests of one group must share their prefix up to their cuts"
            )


# transformers' switch for SDPA's own grouped-query attention (``enable_gqa``) under a mask.
FORCE_GQA = "TRANSFORMERS_SDPA_FORCE_GQA"


@contextmanager
def grouped_query_sdpa(device: torch.device) -> Iterator[None]:
    """On CPU, let SDPA attend to a grouped-query model's key/value heads directly under a mask
    (``ProbeLM.session`` holds it for every probing pass).

    With a mask, transformers expands every layer's cached keys and values to every query head
    (``repeat_kv``) before calling SDPA, except on a single-query pass. The packed passes all carry
    a 4-D mask, so each one copied the whole cache 3x per layer (SmolLM2-135M: 9 heads, 3 key/value
    heads): for a few queries per row over ~800 cached positions the copy is most of a layer's
    attention time (33 ms against 5 ms with ``enable_gqa``, results identical; over a whole probing
    round on CPU the gain was within noise, docs/performance.md).
    torch's CPU kernel takes ``enable_gqa`` with a mask; CUDA would fall back to its slow math
    kernel, so this stays CPU-only. A value the user set is left alone; ours is removed on exit.
    """
    if device.type != "cpu" or FORCE_GQA in os.environ:
        yield
        return
    os.environ[FORCE_GQA] = "1"
    try:
        yield
    finally:
        os.environ.pop(FORCE_GQA, None)


# ---------------------------------------------------------------------- the scorer
class PackedScorer:
    """Packed scoring of several problems' requests per forward pass.

    ``answer_end`` says where a decoded answer ends: the rule of ``ProbeLM.answer``
    (``EndRule.for_answers``). Every forward pass is recorded in ``counter``.
    """

    def __init__(
        self,
        model,
        *,
        pad_id: int,
        answer_end: EndRule,
        max_batch_size: int,
        max_batch_tokens: int,
        bin_tokens: int,
        counter: TokenCounter,
    ):
        self.model = model
        self.device = next(model.parameters()).device
        self.pad_id = pad_id
        self.answer_end = answer_end
        self.max_batch_size = max(1, int(max_batch_size))
        # Packed tokens per forward pass (several problems), bounding the activation and
        # vocabulary-logit memory of one pass; a single problem may exceed it.
        self.max_batch_tokens = max(1, int(max_batch_tokens))
        self.bin_tokens = max(1, int(bin_tokens))
        self.counter = counter
        config = getattr(model, "config", None)
        self.mask_dtype = mask_dtype(config)
        self.cache_keyword = cache_keyword(model)

    def batches(self, problems: Sequence[Sequence[ScoreRequest]]) -> list[list[int]]:
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

    # Each problem's prefix (prompt + chain) runs once; then its variants' inserts + cues, each
    # followed by its continuations, are packed into a few sequences ("bins", one batch row each)
    # on top of a copy of that prefix's cache; then the answers that must be decoded. A 4-D mask
    # (``_KeyTable``) gives each packed token exactly the keys its standalone sequence would have
    # (prefix[:cut], its own earlier tokens) and explicit position ids give it the same
    # positions. Several problems share every forward pass.
    def score(self, problems: Sequence[Sequence[ScoreRequest]]) -> list[list[ScoreResult]]:
        """Score one batch of problems (each problem's requests share one prefix)."""
        dev = self.device
        # Stage 0: the prefixes, right-padded (real tokens keep positions 0..n-1); no logits.
        needed = [max(r.cut for r in reqs) for reqs in problems]
        width = max(needed)
        ids = torch.full((len(problems), width), self.pad_id, dtype=torch.long)
        real = torch.zeros((len(problems), width), dtype=torch.bool)
        for g, reqs in enumerate(problems):
            longest = max(reqs, key=lambda r: r.cut)
            ids[g, : needed[g]] = torch.tensor(list(longest.prefix[: needed[g]]), dtype=torch.long)
            real[g, : needed[g]] = True
        self._count(real, "prefix")
        cache = self._forward(ids.to(dev), real.long().to(dev), torch.arange(width).expand_as(ids).to(dev), None,
                              torch.zeros_like(real).to(dev))[0]
        # One batch row per bin from here on; a bin starts from its problem's prefix cache.
        bins = self._bins(problems)
        home = {(g, r): b for b, (g, idx) in enumerate(bins) for r in idx}
        row_problem = torch.tensor([g for g, _ in bins], dtype=torch.long, device=dev)
        keys = _KeyTable(real.to(dev)[row_problem])

        # Stage 1, one pass: every request's insert + cue (logits kept at its last token) and, packed
        # right behind them, each of its continuations but the last token (logits kept at every
        # token; that last one is only predicted). Continuations are known in advance, so they need
        # no pass of their own: the mask keeps each one to its request's insert + cue and itself.
        mids = [[[*r.insert, *r.cue] for r in reqs] for reqs in problems]
        rows: list[list[tuple]] = []
        placed = {}  # (problem, request) -> (its first entry's index in its row, where its continuations are)
        for g, idx in bins:
            row: list[tuple] = []
            for r in idx:
                entries, where = _request_entries(problems[g][r], r, mids[g][r])
                placed[(g, r)] = (len(row), where)
                row += entries
            rows.append(row)
        # Each bin's copy of its problem's prefix cache, with room for the pass: it writes in place.
        reserve(cache, _width(rows), row_problem if len(bins) != len(problems) else None)
        cache, next_tokens = self._forward_packed(cache, keys, rows, "branch")
        kept_at = {cell: k for k, cell in enumerate(_kept(rows))}

        results: list[list[ScoreResult]] = []
        todo: list[tuple[int, int]] = []
        known: list[list[int]] = []  # per request to decode: its greedy tokens the scores already show
        for g, reqs in enumerate(problems):
            out = []
            for r, req in enumerate(reqs):
                b, (start, where) = home[(g, r)], placed[(g, r)]
                head = next_tokens[kept_at[(b, start + len(mids[g][r]) - 1)]]
                steps = [
                    [head, *(next_tokens[kept_at[(b, start + where[(c, j)])]] for j in range(len(cont) - 1))]
                    for c, cont in enumerate(req.continuations)
                ]
                scores = [_continuation_score(s, cont) for s, cont in zip(steps, req.continuations)]
                res = ScoreResult(tuple(scores), tuple(float(head.logprobs[t]) for t in req.choice_ids))
                if needs_decode(req, res):
                    todo.append((g, r))
                    known.append(_greedy_until_mismatch(steps[0], req.continuations[0])[: req.decode_tokens])
                out.append(res)
            results.append(out)
        if todo:
            # Decoding continues from the head greedy shares with the checked answer: those tokens
            # are in the cache already (continuation 0's), so the decoded answers see them there.
            shared = [(home[key], placed[key][0] + placed[key][1][(0, j)]) for key, k in zip(todo, known)
                      for j in range(len(k) - 1)]
            keys.share(shared, _width(rows), DECODED)
            decoded = self._decode_from_cache(problems, todo, known, home, cache, keys, mids)
            for (g, r), toks in zip(todo, decoded):
                results[g][r] = dataclasses.replace(results[g][r], decoded=tuple(toks))
        return results

    def _bins(self, problems: Sequence[Sequence[ScoreRequest]]) -> list[tuple[int, list[int]]]:
        """Every problem's requests split into packed sequences ("bins"), as (problem, request
        indices); one batch row each.

        All rows of a pass are padded to the longest, so the bins of the whole batch share one
        width: the one, up to ``bin_tokens``, that packs every problem's requests into the fewest
        padded positions (rows x width). A packed sequence pays attention between all its tokens,
        masked or not, and over its whole prefix, so widths stay near ``bin_tokens``; a request
        longer than that sets the width alone.
        """
        sizes = [[_branch_tokens(r) for r in reqs] for reqs in problems]
        longest = max(max(s) for s in sizes)
        widths = range(max(longest, self.bin_tokens // 2), max(longest, self.bin_tokens) + 1)
        best = min(
            ((sum(len(_pack(s, w)) for s in sizes) * w, w) for w in widths),
            key=lambda cost_width: cost_width[0],
        )
        return [(g, idx) for g, s in enumerate(sizes) for idx in _pack(s, best[1])]

    def _decode_from_cache(self, problems, todo, known, home, cache, keys, mids) -> list[list[int]]:
        """Greedy answers for requests ``todo`` (problem, request), continuing their cached
        contexts: packed decoding steps for all of them at once, never re-reading a context.

        ``known[i]``: request i's first greedy tokens, read off its scored continuation (the answer
        it was checked against, up to the first token greedy decoding would not write, then the
        token it would). That head is in the cache already (the continuation's own entries, which
        ``score`` lets the decoded answer see): the first step feeds only greedy's own token and,
        behind it, a guess of the rest, checked in the same pass (below), so an answer that
        differs from a_full by one replaced or skipped token needs no second pass.
        """
        # A checked continuation may run past the answer's end: decoding starts from its answer.
        outs = [self.answer_end.cut(k, keep=True) for k in known]
        limit = [problems[g][r].decode_tokens for g, r in todo]
        finished = lambda i: len(outs[i]) >= limit[i] or self.answer_end.ended(outs[i])  # noqa: E731
        # The guess: the rest of the answer it was checked against (a_full), after greedy's own token
        # (below). A guessed token is kept where greedy writes it (the argmax one position before it),
        # and hidden from every later query where it does not.
        guesses = [
            [] if finished(i) else self.answer_end.cut(
                [*outs[i], *_guess(problems[g][r].continuations[0], known[i])], keep=True
            )[len(outs[i]): limit[i]]
            for i, (g, r) in enumerate(todo)
        ]
        # tokens of outs[i] already in the cache: the head it shares with the checked answer
        # (an answer that ended within it is not decoded further)
        fed = [len(k) - 1 for k in known]
        # Decode on the rows that hold these requests only: every pass reads (and grows) the
        # whole cache of every row it runs, and usually a few requests of a few rows need decoding.
        home, index = self._keep_rows(home, todo, keys)
        # Room for every step, in the copy that keeps the used rows: the steps write in place.
        room = decode_room(limit, [home[key] for key in todo], guessed=sum(len(g) for g in guesses))
        reserve(cache, room, index)
        while True:
            active = [i for i in range(len(todo)) if not finished(i)]
            if not active:
                break
            # Once the first pass has decoded most answers, the later ones run on fewer rows.
            home, index = self._keep_rows(home, [todo[i] for i in active], keys)
            if index is not None:
                cache.reorder_cache(index)
            rows: list[list[tuple]] = [[] for _ in range(keys.req.shape[0])]
            guessed_at = {}  # request -> (row, entry index of its first guessed token)
            for i in active:
                g, r = todo[i]
                req = problems[g][r]
                start = req.cut + len(mids[g][r])  # the answer's first position
                row = rows[home[(g, r)]]
                # only the last fed token's next one is read, and each guessed token's
                row.extend((outs[i][m], r, DECODED, start + m, req.cut, m == len(outs[i]) - 1)
                           for m in range(fed[i], len(outs[i])))
                guessed_at[i] = (home[(g, r)], len(row))
                row.extend((t, r, DECODED, start + len(outs[i]) + j, req.cut, True) for j, t in enumerate(guesses[i]))
                fed[i] = len(outs[i])
            cache, nxt = self._forward_packed(cache, keys, rows, "decode")
            picks = iter(nxt)
            hidden: list[tuple[int, int]] = []
            for i in sorted(active, key=lambda i: home[todo[i]]):  # packing order: by row, then as added
                guess, guesses[i] = guesses[i], []
                argmax = [next(picks).argmax for _ in range(1 + len(guess))]
                outs[i].append(argmax[0])
                kept = 0  # guessed tokens greedy wrote too: in the cache at their own positions
                while kept < len(guess) and outs[i][-1] == guess[kept] and not finished(i):
                    kept += 1
                    outs[i].append(argmax[kept])
                fed[i] += kept
                row, first = guessed_at[i]
                hidden += [(row, first + j) for j in range(kept, len(guess))]
            keys.hide(hidden, _width(rows))
        return outs

    def _keep_rows(self, home: dict, todo: Sequence[tuple[int, int]], keys: _KeyTable):
        """Select in ``keys`` the rows that hold requests ``todo``; return where each of them lives
        now and the selected rows' indices (None when every row is kept; the cache is the caller's)."""
        used = sorted({home[key] for key in todo})
        if len(used) == keys.req.shape[0]:
            return home, None
        index = torch.tensor(used, dtype=torch.long, device=self.device)
        keys.select(index)
        row_of = {b: i for i, b in enumerate(used)}
        return {key: row_of[home[key]] for key in todo}, index

    def _count(self, real: torch.Tensor, stage: str) -> None:
        self.counter.add(int(real.numel()), int(real.sum()), stage)

    def _forward_packed(self, cache, keys: _KeyTable, rows: Sequence[Sequence[tuple]], stage: str):
        """One packed forward pass: ``rows[b]`` lists the (token, request, branch, position, cut,
        keep) entries of batch row b. Returns the grown cache and the next-token scores at the kept
        entries, in row order."""
        dev = self.device
        ids, req, branch, pos, cut, keep = (t.to(dev) for t in _entry_tensors(rows, self.pad_id))
        self._count(req >= 0, stage)
        mask = keys.extend(req, branch, pos, cut, self.mask_dtype)
        return self._forward(ids, mask, pos, cache, keep)

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
            out = self.model(
                input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **{self.cache_keyword: cache}
            )
        finally:
            if handle is not None:
                handle.remove()
        logits = out.logits[0] if gathered else out.logits[keep]  # (kept positions, vocab)
        grown = out.cache if self.cache_keyword == "cache" else out.past_key_values
        return grown, _NextToken.from_logits(logits)


class _KeyTable:
    """Which cached key each packed query may attend to (the fast path's tree-shaped mask).

    One row per bin. Every key in the cache is tagged with the request it belongs to (-1 for
    the shared prefix and for padding), the set of paths it lies on (``branch``, a bit set: see
    ``_request_entries``) and its position. A query of request r at position p sees the prefix keys
    before r's cut and r's own keys up to p whose path set holds every path of the query's:
    exactly the keys of its standalone sequence.
    """

    def __init__(self, prefix_real: torch.Tensor):
        rows, width = prefix_real.shape
        dev = prefix_real.device
        self.prefix = prefix_real
        self.req = torch.full((rows, width), -1, dtype=torch.long, device=dev)
        self.branch = torch.zeros((rows, width), dtype=torch.long, device=dev)
        self.pos = torch.arange(width, device=dev).expand(rows, width)

    def select(self, rows: torch.Tensor) -> None:
        """Keep only these batch rows (as the cache did)."""
        self.prefix, self.req, self.branch, self.pos = (t[rows] for t in (self.prefix, self.req, self.branch, self.pos))

    def share(self, entries: Sequence[tuple[int, int]], width: int, paths: int) -> None:
        """Put entries (row, index) of the last pass (``width`` columns) on ``paths`` too."""
        if entries:
            self.branch[self._cells(entries, width)] |= paths

    def hide(self, entries: Sequence[tuple[int, int]], width: int) -> None:
        """Hide entries (row, index) of the last pass (``width`` columns) from every later query."""
        if entries:
            self.req[self._cells(entries, width)] = -1  # no request's key, not the prefix

    def _cells(self, entries: Sequence[tuple[int, int]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, columns) of entries (row, index) of the last pass, ``width`` columns at the end."""
        rows, cols = (torch.tensor(x, dtype=torch.long, device=self.req.device) for x in zip(*entries))
        return rows, cols + self.req.shape[1] - width

    def extend(self, req, branch, pos, cut, dtype: torch.dtype) -> torch.Tensor:
        """Add the queries of the next pass as keys; return its (rows, 1, queries, keys) mask."""
        self.prefix = torch.cat([self.prefix, torch.zeros_like(req, dtype=torch.bool)], dim=1)
        self.req = torch.cat([self.req, req], dim=1)
        self.branch = torch.cat([self.branch, branch], dim=1)
        self.pos = torch.cat([self.pos, pos], dim=1)
        q = lambda t: t[:, :, None]  # noqa: E731 - broadcasting helpers
        k = lambda t: t[:, None, :]  # noqa: E731
        allowed = k(self.prefix) & (k(self.pos) < q(cut))
        on_path = (k(self.branch) & q(branch)) == q(branch)
        allowed |= (k(self.req) == q(req)) & (q(req) >= 0) & on_path & (k(self.pos) <= q(pos))
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


def _entry_tensors(rows: Sequence[Sequence[tuple]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """A packed pass's entries as (rows, width) tensors: token ids, request (-1: padding), paths,
    position, cut and keep (see ``_forward_packed``), right-padded with ``pad_id``."""
    shape = (len(rows), _width(rows))
    ids = torch.full(shape, pad_id, dtype=torch.long)
    req = torch.full(shape, -1, dtype=torch.long)
    branch = torch.zeros(shape, dtype=torch.long)
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
    return ids, req, branch, pos, cut, keep


def _width(rows: Sequence[Sequence[tuple]]) -> int:
    """The positions a packed pass over ``rows`` adds to every row's cache (``_forward_packed``'s width)."""
    return max(1, max(len(row) for row in rows))


def _kept(rows: Sequence[Sequence[tuple]]) -> Iterator[tuple[int, int]]:
    """(row, index in the row) of every kept entry, in the order their logits come back."""
    for b, row in enumerate(rows):
        for e, entry in enumerate(row):
            if entry[5]:
                yield b, e


def _pack(sizes: Sequence[int], width: int) -> list[list[int]]:
    """Indices of ``sizes`` in as few bins of ``width`` as first-fit decreasing finds (every size <= width)."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        slot = next((b for b, free in enumerate(room) if free >= sizes[i]), None)
        if slot is None:
            bins.append([])
            room.append(width)
            slot = len(bins) - 1
        bins[slot].append(i)
        room[slot] -= sizes[i]
    return bins


def _guess(checked: Sequence[int], known: Sequence[int]) -> list[int]:
    """What greedy decoding will likely write after ``known`` (the checked answer's head, then greedy's
    own token): the checked answer's rest, after greedy's token where that token occurs later in it
    (greedy skipped some: "17." checked, " 1" then "." written: guess the end), else after the token
    it replaced ("14." checked, " 1" then "5" written: guess "." and the end)."""
    mismatch = len(known) - 1
    own = known[-1]
    later = next((j for j in range(mismatch + 1, len(checked)) if checked[j] == own), mismatch)
    return list(checked[later + 1:])


def _request_entries(req: ScoreRequest, r: int, mid: Sequence[int]) -> tuple[list[tuple], dict[tuple[int, int], int]]:
    """Request ``r``'s packed entries (token, request, paths, position, cut, keep), and where each
    continuation's tokens are among them: {(c, j): entry}.

    Its insert + cue come first (on every path, kept at the last token), then its continuations but
    their last tokens (all kept) as a trie: continuations that start alike (the gold answer and
    a_full, when the model is right) share their common head's entries, each on the paths of every
    continuation through it. A key lies on a query's path iff its set holds the query's.
    """
    if len(req.continuations) >= 62:
        raise ValueError(f"at most 61 continuations per request, got {len(req.continuations)}")
    entries: list[list] = [[tok, r, EVERY_PATH, req.cut + j, req.cut, j == len(mid) - 1] for j, tok in enumerate(mid)]
    where: dict[tuple[int, int], int] = {}
    node: dict[tuple[int, ...], int] = {}
    for c, cont in enumerate(req.continuations):
        for j in range(len(cont) - 1):
            e = node.setdefault(tuple(cont[: j + 1]), len(entries))
            if e == len(entries):
                entries.append([cont[j], r, 0, req.cut + len(mid) + j, req.cut, True])
            entries[e][2] |= 1 << c
            where[(c, j)] = e
    return [tuple(e) for e in entries], where


def _greedy_until_mismatch(steps: Sequence[_Next], cont: Sequence[int]) -> list[int]:
    """Greedy decoding's first tokens as teacher forcing ``cont`` shows them: ``cont`` up to the
    first position whose argmax differs (the contexts are the same until there), then that argmax."""
    greedy: list[int] = []
    for step, t in zip(steps, cont):
        greedy.append(step.argmax)
        if step.argmax != t:
            break
    return greedy


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
