"""The periodic work of one process: heartbeat, expiry, retention."""

from __future__ import annotations

import asyncio
import logging
import time

from backends.errors import Unavailable

from .presence import expire_presence, heartbeat
from .services import Services
from .typing_indicators import expire_typing

log = logging.getLogger(__name__)

_TICK = 0.2  # expiry precision for typing and presence
_TRIM_EVERY = 60.0


async def run_housekeeping(services: Services) -> None:
    """Run until cancelled; a failing step is logged and retried next tick."""
    heartbeat_every = services.settings.presence_ttl.total_seconds() / 3
    next_heartbeat = next_trim = time.monotonic()
    while True:
        now = time.monotonic()
        steps = [expire_typing, expire_presence]
        if now >= next_heartbeat:
            next_heartbeat = now + heartbeat_every
            steps.append(heartbeat)
        if now >= next_trim:
            next_trim = now + _TRIM_EVERY
            steps.append(_trim)
        for step in steps:
            try:
                await step(services)
            except Unavailable as exc:
                # An outage is no bug (and /ready reports it): one line, no traceback.
                log.warning("housekeeping step %s failed: %s", step.__name__, exc)
            except Exception:
                log.exception("housekeeping step failed")
        await asyncio.sleep(_TICK)


async def _trim(services: Services) -> None:
    removed = await services.backends.messages.trim()
    if removed:
        log.info("retention removed %d messages", removed)
