"""Plain records that the backend roles store and return.

They carry no behaviour and know nothing of GraphQL: the schema layer maps
them to its types. Every datetime is timezone-aware UTC.
"""

from __future__ import annotations

import enum
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

JSONValue = Any
"""Anything orjson can encode: dict, list, str, int, float, bool or None."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_incarnation() -> str:
    """A new, unguessable incarnation id: a room made again under an old id
    gets another one, so nothing of the old room can match it."""
    return uuid.uuid4().hex


LEGACY_INCARNATION = ""
"""The incarnation of a room or history stored before rooms had one. A
legacy room keeps its legacy history (whose epochs name no incarnation)."""


def incarnation_of(epoch: str) -> str:
    """The room incarnation a history epoch (`<incarnation>.<n>`) belongs to."""
    return epoch.rpartition(".")[0]


def new_epoch(incarnation: str) -> str:
    """A new epoch of the history of the room incarnation `incarnation`."""
    return f"{incarnation}.{secrets.token_hex(4)}"


class RoomRole(enum.Enum):
    OWNER = "OWNER"
    ADMIN = "ADMIN"
    MEMBER = "MEMBER"

    @property
    def rank(self) -> int:
        return {"OWNER": 3, "ADMIN": 2, "MEMBER": 1}[self.value]


class MessageKind(enum.Enum):
    MESSAGE = "MESSAGE"
    PRESENCE = "PRESENCE"
    TYPING = "TYPING"
    SYSTEM = "SYSTEM"
    JOIN = "JOIN"
    LEAVE = "LEAVE"
    ERROR = "ERROR"


class Status(enum.Enum):
    ONLINE = "ONLINE"
    AWAY = "AWAY"
    BUSY = "BUSY"
    OFFLINE = "OFFLINE"


@dataclass(frozen=True, slots=True)
class Room:
    id: str
    name: str
    owner: str
    is_private: bool = False
    description: str | None = None
    metadata: JSONValue = None
    created_at: datetime = field(default_factory=utcnow)
    incarnation: str = field(default_factory=new_incarnation)
    """Which life of this room id this is: new on every create, carried by
    the room's history (its epoch) and checked by every read and send."""


@dataclass(frozen=True, slots=True)
class RoomMember:
    room_id: str
    user_id: str
    role: RoomRole
    joined_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class MemberQuota:
    """The quota a `RoomStore.add_member` counts against: the user's own
    rooms, or the rooms others added them to (`by_other`), which count
    apart; `limit` None is no limit; `what` names it in LimitReached."""

    by_other: bool
    limit: int | None
    what: str

    @classmethod
    def own(cls, max_rooms_per_user: int | None = None) -> MemberQuota:
        return cls(by_other=False, limit=max_rooms_per_user, what="rooms")

    @classmethod
    def added(cls, max_room_additions: int | None = None) -> MemberQuota:
        return cls(by_other=True, limit=max_room_additions, what="room additions")

    @classmethod
    def of(
        cls,
        member: RoomMember,
        added_by: str | None,
        *,
        max_rooms_per_user: int | None = None,
        max_room_additions: int | None = None,
    ) -> MemberQuota:
        """Added by another user: `added`; by themselves (or nobody named): `own`."""
        if added_by is not None and added_by != member.user_id:
            return cls.added(max_room_additions)
        return cls.own(max_rooms_per_user)


# A member joining without a limit.
NO_QUOTA = MemberQuota.own()


@dataclass(frozen=True, slots=True)
class Channel:
    id: str
    name: str
    created_by: str
    is_private: bool = False
    description: str | None = None
    created_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message before the store has given it an id and an offset."""

    kind: MessageKind
    user_id: str
    room_id: str | None = None
    channel_id: str | None = None
    event: str | None = None
    data: JSONValue = None
    metadata: JSONValue = None
    thread_id: str | None = None
    client_message_id: str | None = None
    timestamp: datetime = field(default_factory=utcnow)

    def stored(self, *, timestamp: datetime, offset: int = 0, epoch: str = "") -> Message:
        """This message as a store keeps it: a new id, and the store's
        timestamp, offset and epoch."""
        return Message(
            id=uuid.uuid4().hex,
            kind=self.kind,
            user_id=self.user_id,
            timestamp=timestamp,
            offset=offset,
            epoch=epoch,
            room_id=self.room_id,
            channel_id=self.channel_id,
            event=self.event,
            data=self.data,
            metadata=self.metadata,
            thread_id=self.thread_id,
            client_message_id=self.client_message_id,
        )


@dataclass(frozen=True, slots=True)
class Message:
    """A stored (room) or published (channel) message.

    `offset` is strictly increasing per room and assigned atomically with the
    append; `epoch` names the room's history and changes if it is ever lost.
    Channel messages are not stored: their offset is 0 and epoch empty.
    """

    id: str
    kind: MessageKind
    user_id: str
    timestamp: datetime
    offset: int = 0
    epoch: str = ""
    room_id: str | None = None
    channel_id: str | None = None
    event: str | None = None
    data: JSONValue = None
    metadata: JSONValue = None
    thread_id: str | None = None
    client_message_id: str | None = None


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """Where a room's history stands: the last offset given and the epoch.

    `first_offset` is the oldest offset still retained (0 when empty), so a
    reader can tell that a cursor points before what retention kept.
    """

    epoch: str
    last_offset: int
    first_offset: int


@dataclass(frozen=True, slots=True)
class HistoryWindow:
    """Which retained messages `MessageStore.page` returns: after < offset <
    before, at most `limit`; with `from_end` the ones nearest `before` (or
    the newest); with `thread_id` only that thread's."""

    limit: int
    after: int | None = None
    before: int | None = None
    from_end: bool = False
    thread_id: str | None = None

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"limit must be at least 1, got {self.limit}")


@dataclass(frozen=True, slots=True)
class HistoryPage:
    messages: list[Message]
    has_more: bool


@dataclass(frozen=True, slots=True)
class PresenceEntry:
    user_id: str
    status: Status
    last_seen: datetime
    status_text: str | None = None


@dataclass(frozen=True, slots=True)
class TypingEntry:
    room_id: str
    user_id: str
    expires_at: datetime
