"""faithcb.kv_room: a cache layer with room reserved holds exactly what transformers' DynamicLayer
holds, and the packed scorer's passes and decode steps write into the room instead of copying the
cache (the scores themselves are compared with the plain path in tests/test_lm.py on every family)."""

from __future__ import annotations

import random

import pytest
import torch
from transformers.cache_utils import Cache, DynamicLayer

from faithcb import kv_room
from faithcb.kv_room import RoomyLayer, reserve
from faithcb.lm import ProbeLM
from faithcb.scoring import ScoreRequest
from faithcb.testing import FAMILIES, tiny_model


def _states(generator, rows: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.randn(rows, 2, length, 4, generator=generator), torch.randn(rows, 2, length, 4, generator=generator))


def test_a_layer_with_room_holds_what_a_dynamic_layer_holds():
    g = torch.Generator().manual_seed(0)
    plain, cache = DynamicLayer(), Cache(layers=[DynamicLayer()])
    first = _states(g, 3, 5)
    plain.update(*first)
    cache.layers[0].update(*first)
    rows = torch.tensor([2, 0])
    plain.reorder_cache(rows)
    reserve(cache, room=4, rows=rows)  # keep rows 2 and 0, with room for 4 more positions
    roomy = cache.layers[0]
    assert isinstance(roomy, RoomyLayer) and roomy._keys.shape[-2] == 5 + 4
    buffer = roomy._keys
    for width in (1, 3, 2):  # 1 + 3 fit the room; the last 2 do not: it grows, as DynamicLayer does
        new = _states(g, 2, width)
        want = plain.update(*new)
        got = roomy.update(*new)
        assert all(torch.equal(w, o) for w, o in zip(want, got))
        assert roomy.get_seq_length() == plain.get_seq_length()
        if width != 2:
            assert roomy._keys is buffer  # written in place
    assert roomy._keys is not buffer
    plain.reorder_cache(torch.tensor([1]))
    roomy.reorder_cache(torch.tensor([1]))
    assert torch.equal(plain.keys, roomy.keys) and torch.equal(plain.values, roomy.values)
    # Reserving again keeps the content and adds room, in one copy.
    reserve(cache, room=7)
    assert torch.equal(cache.layers[0].keys, plain.keys) and cache.layers[0]._keys.shape[-2] == plain.keys.shape[-2] + 7


def test_rows_are_kept_alike_row_by_row_and_in_one_selection():
    keys, _ = _states(torch.Generator().manual_seed(2), 4, 3)
    rows = torch.tensor([3, 1])
    one, other = (RoomyLayer._buffer(keys, 2, rows, row_by_row=flag) for flag in (True, False))  # CPU / accelerator way
    assert one.shape == other.shape == (2, 2, 5, 4)
    assert torch.equal(one[:, :, :3], keys[rows]) and torch.equal(other[:, :, :3], keys[rows])


def test_other_layers_keep_their_own_growth_and_only_select_rows():
    class Other(DynamicLayer):  # not a plain DynamicLayer (a sliding window, a quantized layer...)
        pass

    g = torch.Generator().manual_seed(1)
    cache = Cache(layers=[Other()])
    cache.layers[0].update(*_states(g, 3, 2))
    want = cache.layers[0].keys[torch.tensor([1])]
    reserve(cache, room=5, rows=torch.tensor([1]))
    assert type(cache.layers[0]) is Other and torch.equal(cache.layers[0].keys, want)


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_passes_and_decode_steps_write_in_place(tok, family, monkeypatch, one_thread):
    """Every buffer the scorer's passes write into is one ``reserve`` made: no pass, and no decode
    step, outgrew its room (which would copy the cache, as before)."""
    rng = random.Random(0)
    lm = ProbeLM(tiny_model(tok, family, seed=3), tok, answer_max_tokens=6)
    made = {"reserved": 0, "buffers": 0}
    real_reserve, real_buffer = kv_room.reserve, RoomyLayer._buffer

    def counting_reserve(cache, room, rows=None):
        made["reserved"] += len(cache.layers)
        return real_reserve(cache, room, rows)

    def counting_buffer(states, room, rows):
        made["buffers"] += 1
        return real_buffer(states, room, rows)

    monkeypatch.setattr("faithcb.packed.reserve", counting_reserve)
    monkeypatch.setattr(RoomyLayer, "_buffer", staticmethod(counting_buffer))
    requests = []
    for problem in range(3):
        prefix = [rng.randrange(7, 100) for _ in range(20)]
        for cut in (5, 9, 14, 20):
            # (0, 0, 0): never what a model writes greedily here, so every answer is decoded.
            requests.append(ScoreRequest(tuple(prefix), cut, (rng.randrange(7, 100),), (40, 41), ((0, 0, 0),), (),
                                         6, group=problem))
    with lm.session():
        results = lm.score(requests)
    assert all(r.decoded is not None for r in results)
    assert lm.counter.stages.get("decode", 0) > 0 and max(len(r.decoded) for r in results) >= 3  # several steps ran
    # Two buffers (keys, values) per layer per reserve: none made by an update that ran out of room.
    assert made["reserved"] >= 2 * lm.model.config.num_hidden_layers  # the passes' reserve and the decoding's
    assert made["buffers"] == 2 * made["reserved"]


def test_decode_room_bounds_what_the_steps_add():
    # One row, two requests of up to 4 tokens: at most 4 + 4 positions in all.
    assert kv_room.decode_room([4, 4], [0, 0]) == 8
    # Many requests over several rows: the first step's widest row, then one token per request
    # of the fullest row per later step, well under the sum of every limit.
    limits, rows = [8] * 100, [i % 10 for i in range(100)]
    assert kv_room.decode_room(limits, rows) == 10 * 8 + 7 * 10 < sum(limits)
