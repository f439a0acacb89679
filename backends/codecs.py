"""How records are encoded wherever a backend stores them.

Every backend, memory included, stores messages, rooms and channels through
these functions, so a serialization bug cannot hide behind an in-process
shortcut. Datetimes are stored as UTC; a naive one is refused on the way in.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson

from .records import LEGACY_INCARNATION, Channel, Message, MessageKind, Room


def require_utc(value: datetime, what: str) -> datetime:
    """The UTC form of an aware datetime; ValueError for a naive one."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")
    return value.astimezone(UTC)


_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(value: datetime, what: str) -> int:
    """Microseconds since the Unix epoch of an aware datetime; ValueError
    for a naive one."""
    return (require_utc(value, what) - _UNIX_EPOCH) // _MICROSECOND


def from_micros(value: int | str | bytes) -> datetime:
    return _UNIX_EPOCH + timedelta(microseconds=int(value))


def to_iso_utc(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def from_iso_utc(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def message_to_dict(m: Message) -> dict[str, Any]:
    return {
        "id": m.id,
        "kind": m.kind.value,
        "user_id": m.user_id,
        "timestamp": m.timestamp.isoformat(),
        "offset": m.offset,
        "epoch": m.epoch,
        "room_id": m.room_id,
        "channel_id": m.channel_id,
        "event": m.event,
        "data": m.data,
        "metadata": m.metadata,
        "thread_id": m.thread_id,
        "client_message_id": m.client_message_id,
    }


def message_from_dict(d: dict[str, Any]) -> Message:
    return Message(
        id=d["id"],
        kind=MessageKind(d["kind"]),
        user_id=d["user_id"],
        timestamp=datetime.fromisoformat(d["timestamp"]),
        offset=d["offset"],
        epoch=d["epoch"],
        room_id=d["room_id"],
        channel_id=d["channel_id"],
        event=d["event"],
        data=d["data"],
        metadata=d["metadata"],
        thread_id=d["thread_id"],
        client_message_id=d["client_message_id"],
    )


class SqlRow(Protocol):
    """A row as sqlite3 (`Row`) and asyncpg (`Record`) return one."""

    def __getitem__(self, index: int, /) -> Any: ...


def message_from_row(row: SqlRow, timestamp: datetime) -> Message:
    """A message from a SQL row of the SQL backends' message columns (id,
    kind, user, timestamp, offset, epoch, room, channel, event, data,
    metadata, thread, client id); `timestamp` is row[3] as the backend reads it."""
    return Message(
        id=row[0],
        kind=MessageKind(row[1]),
        user_id=row[2],
        timestamp=timestamp,
        offset=row[4],
        epoch=row[5],
        room_id=row[6],
        channel_id=row[7],
        event=row[8],
        data=orjson.loads(row[9]),
        metadata=orjson.loads(row[10]),
        thread_id=row[11],
        client_message_id=row[12],
    )


def encode_message(m: Message) -> bytes:
    return orjson.dumps(message_to_dict(m))


def decode_message(raw: bytes | str) -> Message:
    return message_from_dict(orjson.loads(raw))


def room_to_dict(room: Room) -> dict[str, Any]:
    return {
        "id": room.id,
        "name": room.name,
        "owner": room.owner,
        "is_private": room.is_private,
        "description": room.description,
        "metadata": room.metadata,
        "created_at": require_utc(room.created_at, "created_at").isoformat(),
        "incarnation": room.incarnation,
    }


def room_from_dict(d: dict[str, Any]) -> Room:
    return Room(
        id=d["id"],
        name=d["name"],
        owner=d["owner"],
        is_private=d["is_private"],
        description=d["description"],
        metadata=d["metadata"],
        created_at=datetime.fromisoformat(d["created_at"]),
        incarnation=d.get("incarnation", LEGACY_INCARNATION),
    )


def encode_room(room: Room) -> bytes:
    return orjson.dumps(room_to_dict(room))


def decode_room(raw: bytes) -> Room:
    return room_from_dict(orjson.loads(raw))


def channel_to_dict(channel: Channel) -> dict[str, Any]:
    return {
        "id": channel.id,
        "name": channel.name,
        "created_by": channel.created_by,
        "is_private": channel.is_private,
        "description": channel.description,
        "created_at": require_utc(channel.created_at, "created_at").isoformat(),
    }


def channel_from_dict(d: dict[str, Any]) -> Channel:
    return Channel(
        id=d["id"],
        name=d["name"],
        created_by=d["created_by"],
        is_private=d["is_private"],
        description=d["description"],
        created_at=datetime.fromisoformat(d["created_at"]),
    )


def encode_channel(channel: Channel) -> bytes:
    return orjson.dumps(channel_to_dict(channel))


def decode_channel(raw: bytes) -> Channel:
    return channel_from_dict(orjson.loads(raw))
