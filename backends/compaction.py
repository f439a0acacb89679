"""The compaction role of a history backend: pack old messages into
compressed blocks (SQLite and PostgreSQL: backends/sqlite_blocks.py; Redis:
backends/redis/history_blocks.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol, runtime_checkable

__all__ = ["COMPACT_BATCH", "CompactionStats", "Compactor"]

COMPACT_BATCH = 1024
"""Messages per compaction transaction by default: the writer is held for
one insert of a few blocks and one delete, a few milliseconds."""


@dataclass
class CompactionStats:
    """What a compaction did: `bytes_before` the messages' stored text,
    `bytes_after` the blocks and dictionaries written for them."""

    messages: int = 0
    blocks: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    seconds: float = 0.0

    def add(self, other: CompactionStats) -> None:
        self.messages += other.messages
        self.blocks += other.blocks
        self.bytes_before += other.bytes_before
        self.bytes_after += other.bytes_after
        self.seconds += other.seconds


@runtime_checkable
class Compactor(Protocol):
    async def compact(
        self,
        *,
        older_than: timedelta,
        idempotency_window: timedelta,
        batch: int = ...,
        pause: float = 0.0,
        progress: Callable[[CompactionStats], None] | None = None,
    ) -> CompactionStats:
        """Pack the messages stamped more than `older_than` ago into blocks,
        `batch` messages per transaction, sleeping `pause` seconds between
        batches; each transaction either moves a batch whole or not at all.
        A clientMessageId stays idempotent for `idempotency_window` after
        its send. `progress` gets the running totals after each batch."""
        ...
