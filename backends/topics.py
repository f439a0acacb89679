"""Topic names for the fan-out hub.

Topics are dot-separated tokens so that they are valid NATS subjects and
Redis channels alike. Ids are escaped: anything outside [A-Za-z0-9_-] in a
token becomes %XX per UTF-8 byte, so no id can inject a separator or wildcard.
"""

from __future__ import annotations

import string
import zlib

_SAFE = frozenset(string.ascii_letters + string.digits + "_-")


def escape_token(value: str) -> str:
    if value and all(c in _SAFE for c in value):
        return value
    if not value:
        return "%"
    return "".join(c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode()) for c in value)


def room_messages(room_id: str) -> str:
    return f"room.{escape_token(room_id)}.messages"


def room_typing(room_id: str) -> str:
    return f"room.{escape_token(room_id)}.typing"


def room_presence(room_id: str) -> str:
    return f"room.{escape_token(room_id)}.presence"


# Users' presence changes travel on this many topics, each user's on one
# chosen by a hash of its id: a watcher of any number of users needs at most
# this many subscriptions, and a node at most this many upstream ones.
PRESENCE_SHARDS = 16


def user_presence(user_id: str) -> str:
    """The topic carrying `user_id`'s presence changes, shared with the other
    users of its shard (readers filter by user)."""
    return f"users.presence.{zlib.crc32(user_id.encode()) % PRESENCE_SHARDS}"


def channel_messages(channel_id: str) -> str:
    return f"channel.{escape_token(channel_id)}.messages"
