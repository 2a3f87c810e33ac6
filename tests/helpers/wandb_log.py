"""Reading an offline W&B run back from its ``.wandb`` log (wandb 0.31 has no Python reader).

A ``.wandb`` file is a LevelDB-style log: a 7-byte header (":W&B", magic 0xBEE1, version 0), then
32 KiB blocks of chunks, each ``<crc32 uint32><length uint16><type uint8><payload>``, the crc being
zlib's crc32 over the type byte and payload; a record is one FULL chunk or FIRST, MIDDLE..., LAST.
Each record is a serialized ``wandb_internal.Record`` protobuf (the old
``wandb.sdk.internal.datastore`` reader went with the Go core), hence these few lines.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def wandb_records(path: Path) -> Iterator:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), f"{path} is not a W&B log"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < 7:  # a block's tail too short for a chunk header is zero padding
            pos += room
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:  # preallocated, unwritten space
            pos += room
            continue
        payload = data[pos + 7 : pos + 7 + length]
        assert zlib.crc32(bytes([kind]) + payload) == crc, f"corrupt chunk at byte {pos} of {path}"
        pos += 7 + length
        pending = payload if kind in (_FULL, _FIRST) else pending + payload
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def wandb_history(path: Path) -> list[dict]:
    """Every history row of the run (as ``run.log`` received it), nested keys as nested dicts."""
    rows = []
    for record in wandb_records(path):
        if record.WhichOneof("record_type") != "history":
            continue
        row: dict = {}
        for item in record.history.item:
            value = json.loads(item.value_json)
            if item.key:
                row[item.key] = value
            else:
                *parents, leaf = item.nested_key
                node = row
                for key in parents:
                    node = node.setdefault(key, {})
                node[leaf] = value
        rows.append(row)
    return rows


def wandb_metric_definitions(path: Path) -> dict[str, object]:
    """The run's ``define_metric`` records, by name or glob."""
    return {
        (r.metric.name or r.metric.glob_name): r.metric
        for r in wandb_records(path)
        if r.WhichOneof("record_type") == "metric"
    }




def wandb_config(path: Path) -> dict[tuple[str, ...], object]:
    """Every config update the run recorded, by its (nested) key; a later update wins."""
    updates = {}
    for record in wandb_records(path):
        if record.WhichOneof("record_type") == "config":
            for item in record.config.update:
                updates[tuple(item.nested_key) or (item.key,)] = json.loads(item.value_json)
    return updates
