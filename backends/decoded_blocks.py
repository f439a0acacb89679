"""Decoded blocks kept for the reads that come back to them.

A client paging through old history, replays and `position` read the same
block again and again; decoding it (zstd, then JSON) is most of a cold
page's CPU. One `DecodedBlocks` per store (so per process) keeps the
recently used ones, the least recently used leaving beyond `max_bytes`.

A block is keyed by its name in the store *and a digest of its bytes*, so
nothing ever needs invalidating: a block rewritten, damaged, or deleted and
made again under the same name (a room deleted and created again) has other
bytes, so another key; the stale entry just ages out. The caller still
fetches the bytes each time (one round trip it makes anyway); what it saves
is the decoding.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Final

from .blocks import Body

__all__ = ["DECODED_BLOCK_BYTES", "DecodedBlocks"]

DECODED_BLOCK_BYTES: Final = 32 * 1024 * 1024
"""Default bound of one store's cache: about 100,000 chat messages."""

# What a decoded entry costs beyond its text: the list, the ints, the str
# headers (measured with sys.getsizeof on chat messages: 180-230 bytes).
_ENTRY_OVERHEAD: Final = 200


class DecodedBlocks:
    """Decoded blocks by (name, digest of bytes), least recently used out first."""

    def __init__(self, max_bytes: int = DECODED_BLOCK_BYTES) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._blocks: OrderedDict[tuple[Hashable, bytes], tuple[list[Body], int]] = OrderedDict()
        self.decoded = 0
        """Blocks decoded so far (misses): the tests and the bench read it."""

    def entries(
        self, name: Hashable, blob: bytes, decode: Callable[[bytes], list[Body]]
    ) -> list[Body]:
        """The block's entries, decoded by `decode` unless these very bytes
        were. The list is shared: callers must not change it. Whatever
        `decode` raises is raised, and nothing is kept."""
        key = (name, hashlib.blake2b(blob, digest_size=16).digest())
        found = self._blocks.get(key)
        if found is not None:
            self._blocks.move_to_end(key)
            return found[0]
        entries = decode(blob)
        self.decoded += 1
        size = sum(_size(entry) for entry in entries)
        if size > self._max_bytes:
            return entries
        self._blocks[key] = (entries, size)
        self._bytes += size
        while self._bytes > self._max_bytes:
            _, (_, dropped) = self._blocks.popitem(last=False)
            self._bytes -= dropped
        return entries

    def clear(self) -> None:
        self._blocks.clear()
        self._bytes = 0

    @property
    def size(self) -> int:
        """Estimated bytes held."""
        return self._bytes


def _size(entry: Body) -> int:
    return _ENTRY_OVERHEAD + sum(len(v) for v in entry if isinstance(v, str))
