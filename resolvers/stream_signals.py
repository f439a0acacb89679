"""What a subscription stream yields besides its payloads.

A stream (resolvers/subscriptions.py) is viewer-independent, so it cannot
decide who may read it; it tells its reader when to decide. It yields `LIVE`
once it holds its hub subscription (from then on no event is missed), and an
`AccessChange` where an access change was announced on its topic, in order
with the payloads: a reader removed from a room gets the LEAVE message that
says so, then its error.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from backends.events import AccessEvent
from backends.hub import RESYNC, Hub

T = TypeVar("T")


class _Live:
    def __repr__(self) -> str:
        return "LIVE"


LIVE: Final = _Live()


@dataclass(frozen=True, slots=True)
class AccessChange:
    """`user_id` may have lost access; None: anyone may have (the room or
    channel changed or is gone, or events were missed in an outage)."""

    user_id: str | None

    def concerns(self, user_id: str) -> bool:
        return self.user_id is None or self.user_id == user_id


Signal = _Live | AccessChange


async def hub_stream(
    hub: Hub[Any], topic: str, payload: Callable[[Any], T | None]
) -> AsyncGenerator[T | Signal, None]:
    """A hub topic as a subscription stream: `LIVE` once subscribed, then what
    `payload` makes of each event (None: not for this stream), and an
    `AccessChange` for each announced access change (for anyone after an
    outage, whose events may be lost)."""
    async with hub.subscribe(topic) as live:
        yield LIVE
        async for item in live:
            if isinstance(item, AccessEvent):
                yield AccessChange(item.user_id)
            elif item is RESYNC:
                yield AccessChange(None)
            else:
                value = payload(item)
                if value is not None:
                    yield value
