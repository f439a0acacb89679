"""The periodic work of one process: heartbeat, expiry, retention."""

from __future__ import annotations

import asyncio
import logging
import time

from backends.errors import Unavailable

from .call_sessions import expire_calls, refresh_calls
from .presence import expire_presence, heartbeat
from .services import Services
from .typing_indicators import expire_typing

log = logging.getLogger(__name__)

_TICK = 0.2  # expiry precision for typing and presence
_TRIM_EVERY = 60.0


# A backend that is down: one line when a step starts failing, one when it
# works again (not a traceback five times a second for the whole outage).
_BACKEND_FAULTS = (Unavailable, ConnectionError, TimeoutError)


async def run_housekeeping(services: Services) -> None:
    """Run until cancelled; a failing step is logged and retried next tick."""
    heartbeat_every = services.settings.presence_ttl.total_seconds() / 3
    # A sweep of calls reads every live call: often enough that a session
    # leaves about `presence_grace` after its connection closed, no more.
    calls_every = min(max(services.settings.presence_grace.total_seconds() / 2, _TICK), 2.0)
    next_heartbeat = next_trim = next_calls = time.monotonic()
    failing: set[str] = set()
    while True:
        now = time.monotonic()
        steps = [expire_typing, expire_presence]
        if now >= next_calls:
            next_calls = now + calls_every
            steps.append(expire_calls)
        if now >= next_heartbeat:
            next_heartbeat = now + heartbeat_every
            steps += [heartbeat, refresh_calls]
        if now >= next_trim:
            next_trim = now + _TRIM_EVERY
            steps.append(_trim)
        for step in steps:
            name = step.__name__
            try:
                await step(services)
            except _BACKEND_FAULTS as exc:
                if name not in failing:
                    failing.add(name)
                    log.warning("housekeeping step %s failed: %s", name, exc)
            except Exception:
                log.exception("housekeeping step %s failed", name)
            else:
                if name in failing:
                    failing.discard(name)
                    log.info("housekeeping step %s works again", name)
        await asyncio.sleep(_TICK)


async def _trim(services: Services) -> None:
    removed = await services.backends.messages.trim()
    if removed:
        log.info("retention removed %d messages", removed)
