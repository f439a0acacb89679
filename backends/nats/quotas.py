"""Per-user quota documents in the NATS state bucket.

Quotas are per-user documents (`joined.`, `added.`, `chanby.`) reserved
*before* the room or channel document is written and released after: a crash
between the two leaves a stale reservation, which a quota check at the limit
verifies against the room or channel and drops once it is older than a few
seconds.
"""

from __future__ import annotations

import time
from typing import Any, Final

from ..errors import LimitReached
from ..markers import KEEP
from .link import DELETE, Bucket

STALE_RESERVATION: Final = 10.0
"""Seconds after which a quota reservation without its record is dropped."""


async def reserve_quota(
    bucket: Bucket,
    key: str,
    item: str,
    limit: int | None,
    what: str,
    still_valid: Any,
) -> None:
    """Add `item` to the quota document `key`, or raise LimitReached."""

    async def change(doc: Any) -> tuple[Any, None]:
        held: dict[str, float] = dict(doc or {})
        if item in held:
            return KEEP, None
        if limit is not None and len(held) >= limit:
            now = time.time()
            for other, since in list(held.items()):
                if now - since > STALE_RESERVATION and not await still_valid(other):
                    del held[other]
            if len(held) >= limit:
                raise LimitReached(what, limit)
        held[item] = time.time()
        return held, None

    await bucket.mutate(key, change)


async def release_quota(bucket: Bucket, key: str, item: str) -> None:
    async def change(doc: Any) -> tuple[Any, None]:
        if not doc or item not in doc:
            return KEEP, None
        held = dict(doc)
        del held[item]
        return (held if held else DELETE), None

    await bucket.mutate(key, change)
