"""The storage roles, one Protocol each.

Methods that name a room or channel that does not exist raise
`errors.Missing`, so nothing is ever attached to a missing parent.

Every implementation (memory, sqlite, and later redis and nats) passes the
same contract suite in tests/contract/. Records are in `backends.records`.
"""

from __future__ import annotations

from typing import Protocol

from .records import (
    Channel,
    HistoryPage,
    Member,
    Message,
    NewMessage,
    PresenceEntry,
    Role,
    Room,
    Status,
    StreamPosition,
    TypingEntry,
)


class MessageStore(Protocol):
    """Room history. Offsets start at 1 and strictly increase per room."""

    publishes_on_append: bool
    """True if `append` also publishes the new message's MessageEvent to
    `topics.room_messages(room)`, atomically with storing it."""

    async def append(self, message: NewMessage) -> tuple[Message, bool]:
        """Store a room message, giving it an id and the room's next offset.

        Returns the message and True; or, when the same user already sent a
        message with this `client_message_id` to this room, that first
        message and False (nothing new is stored).
        """
        ...

    async def page(
        self,
        room_id: str,
        *,
        limit: int,
        after: int | None = None,
        before: int | None = None,
        from_end: bool = False,
        thread_id: str | None = None,
    ) -> HistoryPage:
        """Retained messages with after < offset < before, oldest first.

        With `from_end` the `limit` messages nearest `before` (or the newest)
        are taken, still returned oldest first. `has_more` tells whether more
        matching messages lie beyond the page in the direction of travel.
        """
        ...

    async def position(self, room_id: str) -> StreamPosition:
        """The room's epoch, last offset given, and oldest offset retained."""
        ...

    async def trim(self) -> int:
        """Delete messages older than the retention; return how many."""
        ...

    async def drop_room(self, room_id: str) -> None:
        """Forget the room's history; a room created again gets a new epoch."""
        ...

    async def close(self) -> None: ...


class RoomStore(Protocol):
    """Rooms, their members with roles, and bans."""

    async def create(self, room: Room, *, max_rooms_per_user: int | None = None) -> Member:
        """Create the room with its owner as OWNER member, atomically.

        Raises Conflict if the id is taken, LimitReached if the owner is
        already a member of `max_rooms_per_user` rooms.
        """
        ...

    async def get(self, room_id: str) -> Room | None: ...

    async def update(self, room: Room) -> None:
        """Replace the room's fields (not its id, owner or created_at)."""
        ...

    async def delete(self, room_id: str) -> bool:
        """Remove the room with its members and bans; False if it did not exist."""
        ...

    async def list_visible(self, user_id: str) -> list[Room]:
        """Public rooms and the private rooms the user belongs to, oldest first."""
        ...

    async def list_joined(self, user_id: str) -> list[Room]:
        """The rooms the user is a member of, oldest first."""
        ...

    async def add_member(
        self, member: Member, *, max_rooms_per_user: int | None = None
    ) -> tuple[Member, bool]:
        """Add a member; an existing member is returned unchanged with False.

        Raises LimitReached if the user is already in `max_rooms_per_user` rooms.
        """
        ...

    async def remove_member(self, room_id: str, user_id: str) -> bool: ...

    async def get_member(self, room_id: str, user_id: str) -> Member | None: ...

    async def members(self, room_id: str) -> list[Member]:
        """Members in the order they joined."""
        ...

    async def member_count(self, room_id: str) -> int: ...

    async def set_role(self, room_id: str, user_id: str, role: Role) -> Member | None: ...

    async def transfer_ownership(self, room_id: str, new_owner: str) -> Member:
        """Make the member `new_owner` the room's owner, atomically: the room's
        `owner` changes, the new owner gets OWNER and the old one ADMIN.

        Raises Missing if the room does not exist or `new_owner` is not a member.
        """
        ...

    async def ban(self, room_id: str, user_id: str) -> None:
        """Ban the user and remove their membership; idempotent."""
        ...

    async def unban(self, room_id: str, user_id: str) -> bool: ...

    async def is_banned(self, room_id: str, user_id: str) -> bool: ...

    async def close(self) -> None: ...


class ChannelStore(Protocol):
    """Pub/sub channels and, for private ones, the users granted access."""

    async def create(self, channel: Channel, *, max_channels_per_user: int | None = None) -> None:
        """Raises Conflict if the id is taken, LimitReached if the creator
        already created `max_channels_per_user` channels."""
        ...

    async def get(self, channel_id: str) -> Channel | None: ...

    async def delete(self, channel_id: str) -> bool: ...

    async def list_all(self) -> list[Channel]:
        """Every channel, oldest first."""
        ...

    async def grant(self, channel_id: str, user_id: str) -> None: ...

    async def revoke(self, channel_id: str, user_id: str) -> bool: ...

    async def is_granted(self, channel_id: str, user_id: str) -> bool: ...

    async def grants(self, channel_id: str) -> list[str]: ...

    async def close(self) -> None: ...


class PresenceStore(Protocol):
    """Who is connected, by connection entries that expire unless refreshed.

    A user is online while any of their connection entries is live; the
    status they chose (ONLINE by default, AWAY, BUSY, or OFFLINE to appear
    offline) applies only then. A closed connection lingers for a grace
    period so that a reload does not flap the user offline and online.
    """

    async def connect(
        self, user_id: str, conn_id: str, *, ttl: float, max_connections: int | None = None
    ) -> bool:
        """Register a live connection; True if the user was offline before.

        Connections in their grace period do not count towards
        `max_connections`; going over it raises LimitReached.
        """
        ...

    async def heartbeat(self, user_id: str, conn_id: str, *, ttl: float) -> bool:
        """Extend a live connection's expiry to now + ttl.

        False if the connection is unknown, closing or already expired (the
        process stalled past its TTL): the caller must `connect` it again.
        """
        ...

    async def disconnect(self, user_id: str, conn_id: str, *, grace: float) -> None:
        """Mark the connection closed; it expires after `grace` seconds."""
        ...

    async def set_status(
        self, user_id: str, status: Status, status_text: str | None
    ) -> PresenceEntry:
        """Store the chosen status; return the effective entry."""
        ...

    async def get(self, user_ids: list[str]) -> list[PresenceEntry]:
        """Effective presence of the users ever seen, in the order asked."""
        ...

    async def sweep(self) -> list[str]:
        """Prune expired connections; return users who went offline by it."""
        ...

    async def close(self) -> None: ...


class TypingStore(Protocol):
    """Who is typing in a room; entries expire after a few seconds."""

    async def start(self, room_id: str, user_id: str, *, ttl: float) -> tuple[TypingEntry, bool]:
        """Mark or refresh; True if the user was not typing before."""
        ...

    async def stop(self, room_id: str, user_id: str) -> bool:
        """True if the user was typing."""
        ...

    async def users(self, room_id: str) -> list[str]:
        """Users typing now, pruned of expired entries."""
        ...

    async def sweep(self) -> list[TypingEntry]:
        """Remove expired entries and return them, each once."""
        ...

    async def close(self) -> None: ...


class RateLimiter(Protocol):
    """Counts actions per key in a sliding window."""

    async def acquire(self, key: str, *, limit: int, per_seconds: float) -> bool:
        """Count one action; False (and not counted) if `limit` were exceeded."""
        ...

    async def close(self) -> None: ...
