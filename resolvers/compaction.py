"""Background compaction of old messages in a running server: one pass a
minute, at a bounded pace (small batches, each its own short write, with a
pause between them for live traffic)."""

from __future__ import annotations

import asyncio
import logging

from backends.compaction import CompactionStats

from .services import Services

log = logging.getLogger(__name__)

COMPACT_EVERY = 60.0
"""Seconds between passes; a pass finds little once the backlog is done."""
BATCH = 256
"""Messages per write transaction in the background (the CLI uses more)."""
PAUSE = 0.02
"""Seconds of live traffic between two batches."""


async def run_compaction(services: Services) -> None:
    """Compact until cancelled, if the backend can and the setting asks."""
    compactor = services.backends.compactor
    older_than = services.settings.compress_after
    if compactor is None or not older_than:
        return
    while True:
        try:
            stats = await compactor.compact(
                older_than=older_than,
                idempotency_window=services.settings.idempotency_window,
                batch=BATCH,
                pause=PAUSE,
            )
        except Exception:
            log.exception("compaction pass failed")
        else:
            record(services, stats)
        await asyncio.sleep(COMPACT_EVERY)


def record(services: Services, stats: CompactionStats) -> None:
    if not stats.messages:
        return
    m = services.metrics
    m.compaction_messages.inc(stats.messages)
    m.compaction_blocks.inc(stats.blocks)
    m.compaction_bytes_before.inc(stats.bytes_before)
    m.compaction_bytes_after.inc(stats.bytes_after)
    m.compaction_seconds.inc(stats.seconds)
    log.info(
        "compacted %d messages into %d blocks: %d bytes -> %d",
        stats.messages,
        stats.blocks,
        stats.bytes_before,
        stats.bytes_after,
    )
