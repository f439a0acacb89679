"""Pub/sub channels and, for private ones, the users granted access; grants
cascade with their channel. A creator's channel quota is checked under an
advisory lock on the creator, so two nodes cannot both let them past it."""

from __future__ import annotations

import asyncpg

from ..codecs import require_utc
from ..errors import Conflict, LimitReached, Missing
from ..records import Channel
from .database import PostgresDatabase, lock_for_transaction
from .user_lists import UserList

__all__ = ["PostgresChannelStore"]

_CHANNEL_COLUMNS = "id, name, created_by, is_private, description, created_at"


def _channel(row: asyncpg.Record) -> Channel:
    return Channel(
        id=row[0],
        name=row[1],
        created_by=row[2],
        is_private=row[3],
        description=row[4],
        created_at=row[5],
    )


class PostgresChannelStore:
    """Channels and grants in PostgreSQL."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db
        self._grants = UserList(db, "grants", "channel_id")

    async def create(self, channel: Channel, *, max_channels_per_user: int | None = None) -> None:
        created_at = require_utc(channel.created_at, "created_at")
        async with self._db.transaction() as conn:
            await lock_for_transaction(conn, self._db.schema, "channels of", channel.created_by)
            if await conn.fetchval("SELECT 1 FROM channels WHERE id = $1", channel.id) is not None:
                raise Conflict(f"channel {channel.id!r} already exists")
            if max_channels_per_user is not None:
                count = await conn.fetchval(
                    "SELECT COUNT(*) FROM channels WHERE created_by = $1", channel.created_by
                )
                if count >= max_channels_per_user:
                    raise LimitReached("channels", max_channels_per_user)
            inserted = await conn.fetchval(
                f"INSERT INTO channels ({_CHANNEL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT (id) DO NOTHING RETURNING 1",
                channel.id,
                channel.name,
                channel.created_by,
                channel.is_private,
                channel.description,
                created_at,
            )
            if inserted is None:  # another creator's create won the race
                raise Conflict(f"channel {channel.id!r} already exists")

    async def get(self, channel_id: str) -> Channel | None:
        row = await self._db.fetchrow(
            f"SELECT {_CHANNEL_COLUMNS} FROM channels WHERE id = $1", channel_id
        )
        return None if row is None else _channel(row)

    async def delete(self, channel_id: str) -> bool:
        return await self._db.execute("DELETE FROM channels WHERE id = $1", channel_id) > 0

    async def list_all(self) -> list[Channel]:
        rows = await self._db.fetch(
            f"SELECT {_CHANNEL_COLUMNS} FROM channels ORDER BY created_at, id"
        )
        return [_channel(r) for r in rows]

    async def grant(self, channel_id: str, user_id: str) -> None:
        try:
            await self._db.execute(
                "INSERT INTO grants (channel_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                channel_id,
                user_id,
            )
        except asyncpg.ForeignKeyViolationError as exc:
            raise Missing(f"channel {channel_id!r} does not exist") from exc

    async def revoke(self, channel_id: str, user_id: str) -> bool:
        return await self._grants.remove(channel_id, user_id)

    async def is_granted(self, channel_id: str, user_id: str) -> bool:
        return await self._grants.contains(channel_id, user_id)

    async def grants(self, channel_id: str) -> list[str]:
        rows = await self._db.fetch(
            "SELECT user_id FROM grants WHERE channel_id = $1 ORDER BY user_id", channel_id
        )
        return [r[0] for r in rows]

    async def close(self) -> None:
        return None
