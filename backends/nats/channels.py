"""Channels with their grants, one KV document per channel."""

from __future__ import annotations

from typing import Any

from ..codecs import channel_from_dict, channel_to_dict
from ..errors import Conflict, Missing
from ..markers import KEEP
from ..records import Channel
from .link import DELETE, Bucket, NatsLink, kv_key
from .quotas import release_quota, reserve_quota


class NatsChannelStore:
    """Channels with their grants, one KV document per channel."""

    def __init__(self, link: NatsLink, state: Bucket) -> None:
        self._link = link
        self._kv = state

    async def create(self, channel: Channel, *, max_channels_per_user: int | None = None) -> None:
        raw = channel_to_dict(channel)
        key = kv_key("chan", channel.id)

        async def still_created(other: str) -> bool:
            doc, _ = await self._kv.read(kv_key("chan", other))
            return doc is not None and doc["channel"]["created_by"] == channel.created_by

        async with self._link.guard():
            current, revision = await self._kv.read(key)
            if current is not None:
                raise Conflict(f"channel {channel.id!r} already exists")
            by_key = kv_key("chanby", channel.created_by)
            await reserve_quota(
                self._kv, by_key, channel.id, max_channels_per_user, "channels", still_created
            )
            if await self._kv.write(key, {"channel": raw, "grants": []}, last=revision) is None:
                await release_quota(self._kv, by_key, channel.id)
                raise Conflict(f"channel {channel.id!r} already exists")

    async def get(self, channel_id: str) -> Channel | None:
        async with self._link.guard():
            doc, _ = await self._kv.read(kv_key("chan", channel_id))
        return None if doc is None else channel_from_dict(doc["channel"])

    async def delete(self, channel_id: str) -> bool:
        async def change(doc: Any) -> tuple[Any, Any]:
            return (KEEP, None) if doc is None else (DELETE, doc)

        async with self._link.guard():
            doc = await self._kv.mutate(kv_key("chan", channel_id), change)
            if doc is None:
                return False
            await release_quota(
                self._kv, kv_key("chanby", doc["channel"]["created_by"]), channel_id
            )
            return True

    async def list_all(self) -> list[Channel]:
        async with self._link.guard():
            docs = await self._kv.scan("chan.")
        channels = [channel_from_dict(doc["channel"]) for _, doc, _ in docs]
        return sorted(channels, key=lambda c: (c.created_at, c.id))

    async def grant(self, channel_id: str, user_id: str) -> None:
        async def change(doc: Any) -> tuple[Any, None]:
            if doc is None:
                raise Missing(f"channel {channel_id!r} does not exist")
            if user_id in doc["grants"]:
                return KEEP, None
            return {**doc, "grants": sorted({*doc["grants"], user_id})}, None

        async with self._link.guard():
            await self._kv.mutate(kv_key("chan", channel_id), change)

    async def revoke(self, channel_id: str, user_id: str) -> bool:
        async with self._link.guard():
            return await self._kv.drop_from_list(kv_key("chan", channel_id), "grants", user_id)

    async def is_granted(self, channel_id: str, user_id: str) -> bool:
        return user_id in await self.grants(channel_id)

    async def grants(self, channel_id: str) -> list[str]:
        async with self._link.guard():
            doc, _ = await self._kv.read(kv_key("chan", channel_id))
        return [] if doc is None else list(doc["grants"])

    async def close(self) -> None:
        return None
