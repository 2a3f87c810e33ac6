#!/usr/bin/env python
"""Attention in one packed branch pass: dense SDPA under faithcb's tree mask against attention over
only the keys each request needs, on this machine, for one layer's shapes.

A packed branch row (``faithcb/packed.py``) attends from every query to every key of its cache:
its problem's whole prefix and the whole row. A query needs far fewer: the prefix up to its
request's cut and its own request's earlier tokens. Whether skipping the rest pays depends on the
kernels a machine has; this measures three ways on the same inputs, outputs compared:

- ``dense``: ``scaled_dot_product_attention`` with the boolean tree mask (what faithcb runs);
- ``per_request``: one SDPA call per request over the keys it needs (gathered), no wasted keys;
- ``per_chunk``: one SDPA call per run of whole requests of ``--chunk`` queries or more, over the
  prefix up to the run's furthest cut and the run's own tokens (fewer calls, a few wasted keys);
- ``flex``: ``flex_attention`` (compiled) with a block mask built from the tree mask, which skips
  the key blocks no query of a query block sees (``--flex``; it needs a C++ compiler on CPU).

The mask is built by faithcb's own packing code (``_request_entries``, ``_pack``, ``_KeyTable``)
from made-up problems shaped like the probing bench's: a prompt, a chain cut at ``--steps`` step
ends, and per cut an early-answering request (cue, a_full and gold sharing their first token), a
filler request (the chain's rest replaced by as many filler tokens, cue, a_full) and an
information-gain request (cue, gold). Token values are random: attention cost does not depend on
them.

    python bench/bench_attention.py                   # synthetic-bench shapes
    python bench/bench_attention.py --preset real     # real-length (GSM8K, 512-token chains) shapes
    python bench/bench_attention.py --flex            # add flex_attention's block-sparse kernel
    python bench/bench_attention.py --device cuda --flex   # the same on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from faithcb.packed import _branch_tokens, _entry_tensors, _KeyTable, _pack, _request_entries  # noqa: E402
from faithcb.scoring import ScoreRequest  # noqa: E402

# Layer shapes of SmolLM2-135M (the embedded model): 9 query heads over 3 key/value heads of 64.
HEADS, KV_HEADS, HEAD_DIM = 9, 3, 64

# prompt tokens, chain tokens, step ends, problems per pass, bin width: read off bench_probes.py's
# passes (synthetic: prefixes of 161-191 tokens, 6-12 rows of ~200-240; real: 108-409, 10-14 rows).
PRESETS = {
    "synthetic": dict(prompt=60, chain=128, steps=7, problems=3, bin_tokens=256),
    "real": dict(prompt=90, chain=320, steps=10, problems=3, bin_tokens=256),
}
CUE, ANSWER = 4, 5  # tokens of the answer cue and of each checked answer


def problem_requests(prompt: int, chain: int, steps: int, group: int, gen: torch.Generator) -> list[ScoreRequest]:
    """One made-up problem's requests: per step end, early answering, filler and information gain."""
    prefix = torch.randint(0, 1000, (prompt + chain,), generator=gen).tolist()
    rand = lambda n: tuple(torch.randint(0, 1000, (n,), generator=gen).tolist())  # noqa: E731
    a_full, cue = rand(ANSWER), rand(CUE)
    gold = (a_full[0], *rand(ANSWER - 1))
    requests = []
    for k in range(1, steps + 1):
        cut = prompt + chain * k // steps
        requests.append(ScoreRequest(prefix, cut, (), cue, (a_full, gold), group=group))
        if cut < len(prefix):
            requests.append(ScoreRequest(prefix, cut, rand(len(prefix) - cut), cue, (a_full,), group=group))
        requests.append(ScoreRequest(prefix, cut, (), cue, (gold,), group=group))
    return requests


def packed_pass(prompt: int, chain: int, steps: int, problems: int, bin_tokens: int, seed: int = 0):
    """The branch pass's tree mask (rows, 1, queries, keys) and each row's request ids per query
    (-1: padding), for ``problems`` made-up problems packed as faithcb packs them."""
    gen = torch.Generator().manual_seed(seed)
    rows: list[list[tuple]] = []
    for g in range(problems):
        reqs = problem_requests(prompt, chain, steps, g, gen)
        sizes = [_branch_tokens(r) for r in reqs]
        for idx in _pack(sizes, max(bin_tokens, max(sizes))):
            row: list[tuple] = []
            for r in idx:
                row += _request_entries(reqs[r], r, [*reqs[r].insert, *reqs[r].cue])[0]
            rows.append(row)
    _ids, req, branch, pos, cut, _keep = _entry_tensors(rows, pad_id=0)
    keys = _KeyTable(torch.ones((len(rows), prompt + chain), dtype=torch.bool))
    return keys.extend(req, branch, pos, cut, torch.bool), req


def per_request_plan(mask: torch.Tensor, req: torch.Tensor) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """(row, query columns, key columns) per request: the keys any of its queries sees."""
    plan = []
    for b in range(req.shape[0]):
        for r in sorted(set(req[b].tolist()) - {-1}):
            queries = (req[b] == r).nonzero().flatten()
            plan.append((b, queries, mask[b, 0, queries].any(0).nonzero().flatten()))
    return plan


def per_chunk_plan(mask: torch.Tensor, req: torch.Tensor, chunk: int) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """(row, query columns, key columns) per run of whole requests of at least ``chunk`` queries
    (a row's last run may be shorter): the prefix up to the run's furthest cut, then the run's own
    tokens. Fewer, larger calls than one per request, a few keys no query sees."""
    prefix = mask.shape[-1] - mask.shape[2]
    plan = []
    for b in range(req.shape[0]):
        ids = req[b].tolist()
        starts = [c for c, r in enumerate(ids) if r >= 0 and (c == 0 or ids[c - 1] != r)]
        ends = [c for c, r in enumerate(ids) if r >= 0 and (c + 1 == len(ids) or ids[c + 1] != r)]
        first = None
        for n, (start, end) in enumerate(zip(starts, ends)):
            first = start if first is None else first
            if end + 1 - first >= chunk or n == len(starts) - 1:
                queries = torch.arange(first, end + 1)
                seen = mask[b, 0, queries, :prefix].any(0).nonzero()
                reach = int(seen.max()) + 1 if len(seen) else 1
                plan.append((b, queries, torch.cat([torch.arange(reach), torch.arange(prefix + first, prefix + end + 1)])))
                first = None
    return plan


def attend_planned(q, k, v, mask, plan) -> torch.Tensor:
    """Attention of each planned (row, queries) over its planned keys only, under the tree mask."""
    out = torch.zeros_like(q)
    for b, queries, keys in plan:
        out[b, :, queries] = F.scaled_dot_product_attention(
            q[b:b + 1, :, queries], k[b:b + 1, :, keys], v[b:b + 1, :, keys],
            attn_mask=mask[b:b + 1, :, queries][..., keys], enable_gqa=True,
        )[0]
    return out


def flex_attend(q, k, v, mask, block: int) -> Callable[[], torch.Tensor]:
    """``flex_attention``, compiled, under a block mask built from ``mask`` (raises where unavailable)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    dense = mask[:, 0]
    block_mask = create_block_mask(lambda b, h, qi, ki: dense[b, qi, ki], mask.shape[0], None,
                                   mask.shape[2], mask.shape[3], device=str(q.device), BLOCK_SIZE=block)
    compiled = torch.compile(flex_attention)
    return lambda: compiled(q, k, v, block_mask=block_mask, enable_gqa=True)


def best_ms(fn: Callable[[], torch.Tensor], repeats: int) -> float:
    fn()  # first-call allocations (and compilation)
    best = float("inf")
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run(preset: dict, *, repeats: int, flex: bool, block: int, chunk: int = 64, device: str = "cpu", seed: int = 0,
        log=print) -> dict:
    mask, req = packed_pass(**preset, seed=seed)
    rows, _, width, keys = mask.shape
    real = req >= 0
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(rows, HEADS, width, HEAD_DIM, generator=gen)
    k, v = (torch.randn(rows, KV_HEADS, keys, HEAD_DIM, generator=gen) for _ in range(2))
    plans = {name: [(b, queries.to(device), keys_.to(device)) for b, queries, keys_ in plan]
             for name, plan in (("per_request", per_request_plan(mask, req)), ("per_chunk", per_chunk_plan(mask, req, chunk)))}
    q, k, v, mask, real = (t.to(device) for t in (q, k, v, mask, real))
    needed = float(mask[:, 0][real].sum()) / float(real.sum() * keys)
    log(f"pass: {rows} rows x {width} queries over {keys} keys ({keys - width} prefix); "
        f"real queries {int(real.sum())} of {rows * width}; keys a real query needs: {100 * needed:.1f}% of its row's")
    ways: dict[str, Callable[[], torch.Tensor]] = {
        "dense": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True),
        "per_request": lambda: attend_planned(q, k, v, mask, plans["per_request"]),
        "per_chunk": lambda: attend_planned(q, k, v, mask, plans["per_chunk"]),
    }
    if flex:
        try:
            ways["flex"] = flex_attend(q, k, v, mask, block)
        except Exception as err:  # no compiler, an older torch: reported, the others still run
            log(f"flex: unavailable ({type(err).__name__}: {err})")
    reference = ways["dense"]()
    result = {"rows": rows, "queries": width, "keys": keys, "needed_fraction": needed, "ways": {}}
    for name, fn in ways.items():
        try:
            diff = float((fn() - reference).abs().amax(dim=(1, 3))[real].max())  # real queries only
        except Exception as err:
            log(f"{name}: failed ({type(err).__name__}: {err})")
            continue
        ms = best_ms(fn, repeats)
        result["ways"][name] = {"ms": ms, "max_abs_diff": diff}
        log(f"{name:12s} {ms:8.1f} ms per layer   x dense {ms / result['ways']['dense']['ms']:.2f}   "
            f"max |output - dense| {diff:.1e}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="synthetic")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--flex", action="store_true", help="also time flex_attention (compiled) with a block mask")
    parser.add_argument("--block", type=int, default=32, help="flex_attention's block size")
    parser.add_argument("--chunk", type=int, default=64, help="queries per call of the per_chunk way (at least)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="write the result here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; preset {args.preset}: {PRESETS[args.preset]}")
    result = run(PRESETS[args.preset], repeats=args.repeats, flex=args.flex, block=args.block,
                 chunk=args.chunk, device=args.device)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    wrong = [name for name, way in result["ways"].items() if way["max_abs_diff"] > 1e-4]
    if wrong:
        print(f"outputs differ from dense attention: {wrong}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
