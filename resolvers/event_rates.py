"""Rate limits on what users make the server tell others.

Every user-triggered event is fanned out to every subscriber of its topic, so
each kind has a per-user budget, counted cluster-wide by the RateLimiter
backend and refused with RATE_LIMITED: typing starts, presence changes and
room changes (joins, leaves, updates, member changes) and call signals,
each with its own setting. Messages and channel publishes share `max_messages_per_second`
(resolvers/posting.py).

A budget is spent only where an event would go out: refreshing a typing
indicator that is on, or stopping one, costs nothing (a stop follows a start
that was counted, so it is bounded by the starts).
"""

from __future__ import annotations

from typing import Literal

from resolvers.errors import RateLimited

from .services import Services, Viewer

__all__ = ["spend_event_budget"]

Kind = Literal["typing", "presence", "rooms", "signals"]


async def spend_event_budget(services: Services, viewer: Viewer, kind: Kind) -> None:
    """Count one event of `kind` for the viewer; RATE_LIMITED (and not counted)
    over the budget."""
    settings = services.settings
    limit, seconds, what = {
        "typing": (settings.max_typing_per_second, 1.0, "typing starts per second"),
        "presence": (settings.max_presence_changes_per_minute, 60.0, "presence changes per minute"),
        "rooms": (settings.max_room_changes_per_minute, 60.0, "room changes per minute"),
        "signals": (settings.max_signals_per_second, 1.0, "call signals per second"),
    }[kind]
    if not await services.backends.rates.acquire(
        f"{kind}:{viewer.user_id}", limit=limit, per_seconds=seconds
    ):
        raise RateLimited(f"more than {limit} {what}", limit=limit)
