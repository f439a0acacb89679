"""Blocks of old messages: many messages of one room, zstd-compressed together.

A block holds the bodies (`data` and `metadata` JSON text, exactly as the
store keeps them) of consecutive messages of one room, keyed by offset. It is
compressed with zstd, optionally with a dictionary; the block records the
dictionary's id (0: none), so a new dictionary never breaks an old block.

Dictionaries are trained only from what they compress: one per room and per
compaction run, trained on the messages of that run and used only by the
blocks of that run (see `pack_run`). A dictionary therefore holds fragments
of its own blocks' messages and of nothing else; when one of those blocks is
deleted (retention, room deleted), the store recompresses the run's other
blocks without it and deletes it. It is kept only where it pays: the run's
blocks plus the dictionary must be smaller than the blocks without it.

A block that does not decode (bytes damaged, dictionary missing) raises
`BlockUnreadable`, never returns something else.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
import zstandard

__all__ = [
    "BLOCK_BYTES",
    "BLOCK_MESSAGES",
    "BlockUnreadable",
    "Body",
    "PackedRun",
    "pack",
    "pack_run",
    "split",
    "unpack",
]

BLOCK_MESSAGES: Final = 256
"""At most this many messages in one block: a page of 50 reads one or two."""
BLOCK_BYTES: Final = 128 * 1024
"""And at most about this many uncompressed bytes."""

_LEVEL: Final = 9
# zstd needs enough samples to train; below this a run goes without dictionary.
_MIN_TRAINING_MESSAGES: Final = 1000
# A dictionary only pays for small blocks: measured on chat messages, blocks
# of 256 came out the same size with one as without (53,100 bytes for 1,024
# messages either way) and training took 1.5 s of CPU; so blocks larger than
# this on average are not worth training for.
_DICT_MAX_BLOCK: Final = 32
_DICT_BYTES: Final = 16 * 1024
_FORMAT: Final = 1

Body = list[Any]
"""One message as the store keeps it, its offset first."""


class BlockUnreadable(Exception):
    """The block's bytes or its dictionary are damaged or missing."""


def pack(bodies: Sequence[Body], dictionary: zstandard.ZstdCompressionDict | None = None) -> bytes:
    """The bodies column by column (alike values side by side compress
    better: 13 % smaller on chat messages than row by row), a column of
    integers as differences from the value before (offsets, rowids, times)."""
    columns: list[list[Any]] = [list(c) for c in zip(*bodies, strict=True)] if bodies else []
    deltas = []
    for i, column in enumerate(columns):
        if all(type(v) is int for v in column):
            columns[i] = [column[0], *(b - a for a, b in itertools.pairwise(column))]
            deltas.append(i)
    raw = orjson.dumps([_FORMAT, len(bodies), deltas, columns])
    compressor = zstandard.ZstdCompressor(level=_LEVEL, dict_data=dictionary, write_checksum=True)
    return compressor.compress(raw)


def unpack(blob: bytes, dictionary: bytes | None) -> list[Body]:
    """The bodies in the block, in offset order; BlockUnreadable if it does not decode."""
    try:
        data = zstandard.ZstdCompressionDict(dictionary) if dictionary is not None else None
        raw = zstandard.ZstdDecompressor(dict_data=data).decompress(blob)
        version, count, deltas, columns = orjson.loads(raw)
        if version != _FORMAT:
            raise BlockUnreadable(f"unknown block format {version!r}")
        for i in deltas:
            columns[i] = list(itertools.accumulate(columns[i]))
        bodies = [list(row) for row in zip(*columns, strict=True)]
    except BlockUnreadable:
        raise
    except (zstandard.ZstdError, orjson.JSONDecodeError, TypeError, ValueError, IndexError) as exc:
        raise BlockUnreadable(f"{type(exc).__name__}: {exc}") from None
    if len(bodies) != count or not all(b and type(b[0]) is int for b in bodies):
        raise BlockUnreadable("not the messages it says it holds")
    return bodies


def split(bodies: Sequence[Body]) -> list[list[Body]]:
    """Consecutive groups of at most BLOCK_MESSAGES and about BLOCK_BYTES."""
    groups: list[list[Body]] = []
    current: list[Body] = []
    size = 0
    for body in bodies:
        cost = sum(len(v) if isinstance(v, str) else 8 for v in body)
        if current and (len(current) >= BLOCK_MESSAGES or size + cost > BLOCK_BYTES):
            groups.append(current)
            current, size = [], 0
        current.append(body)
        size += cost
    if current:
        groups.append(current)
    return groups


@dataclass(frozen=True, slots=True)
class PackedRun:
    dictionary: bytes | None
    """The dictionary the blocks use, None if none pays."""
    blocks: list[tuple[list[Body], bytes]]
    """Each block's bodies and its compressed bytes."""


def pack_run(bodies: Sequence[Body]) -> PackedRun:
    """Blocks of these bodies, with a dictionary trained on them if it pays."""
    groups = split(bodies)
    plain = [(g, pack(g)) for g in groups]
    if len(bodies) < _MIN_TRAINING_MESSAGES or len(bodies) > _DICT_MAX_BLOCK * len(groups):
        return PackedRun(None, plain)
    samples: list[bytes | bytearray | memoryview[int]] = [_sample(b) for b in bodies]
    try:
        trained = zstandard.train_dictionary(_DICT_BYTES, samples, level=_LEVEL)
    except zstandard.ZstdError:
        return PackedRun(None, plain)
    with_dict = [(g, pack(g, trained)) for g in groups]
    dictionary = trained.as_bytes()
    if len(dictionary) + sum(len(b) for _, b in with_dict) >= sum(len(b) for _, b in plain):
        return PackedRun(None, plain)
    return PackedRun(dictionary, with_dict)


def _sample(body: Body) -> bytes:
    return orjson.dumps(body)
