"""A table of (owner, user) rows: a room's bans, a channel's grants. Each
store keeps its own rule for adding one (a ban also ends the membership, a
grant needs the channel); taking one out and asking for one are the same."""

from __future__ import annotations

from .database import PostgresDatabase

__all__ = ["UserList"]


class UserList:
    """The users listed for an owner in `table`, keyed by `owner_column` and `user_id`."""

    def __init__(self, db: PostgresDatabase, table: str, owner_column: str) -> None:
        # Table and column names come from this package, never from a client.
        where = f"WHERE {owner_column} = $1 AND user_id = $2"
        self._db = db
        self._delete = f"DELETE FROM {table} {where}"
        self._select = f"SELECT 1 FROM {table} {where}"

    async def remove(self, owner_id: str, user_id: str) -> bool:
        """True if the user was listed."""
        return await self._db.execute(self._delete, owner_id, user_id) > 0

    async def contains(self, owner_id: str, user_id: str) -> bool:
        return await self._db.fetchrow(self._select, owner_id, user_id) is not None
