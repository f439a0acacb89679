"""Topic names for the fan-out hub.

Topics are dot-separated tokens so that they are valid NATS subjects and
Redis channels alike. Ids are escaped: anything outside [A-Za-z0-9_-] in a
token becomes %XX per UTF-8 byte, so no id can inject a separator or wildcard.

Tokens are bounded by construction, whatever id a caller passes: one whose
escaped form would be longer than `MAX_TOKEN_LENGTH` becomes `%%` and the
SHA-256 of the id instead. Escaping never yields `%%` (a `%` is always
followed by two hex digits, or stands alone for the empty id), so hashed
tokens cannot collide with escaped ones, and every id that was short enough
before keeps its token (data stored under it stays readable). Three tokens
and a prefix stay under the NATS protocol's 4096-byte line limit, so no id
can make the NATS server drop the connection.
"""

from __future__ import annotations

import hashlib
import string
import zlib
from typing import Final

_SAFE = frozenset(string.ascii_letters + string.digits + "_-")
MAX_TOKEN_LENGTH: Final = 1024
HASHED_PREFIX: Final = "%%"


def escape_token(value: str) -> str:
    if value and len(value) <= MAX_TOKEN_LENGTH and all(c in _SAFE for c in value):
        return value
    if not value:
        return "%"
    # surrogatepass: a lone surrogate is the caller's mistake, not a crash here.
    raw = value.encode("utf-8", "surrogatepass")
    if len(value) <= MAX_TOKEN_LENGTH:
        escaped = "".join(
            c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
            for c in value
        )
        if len(escaped) <= MAX_TOKEN_LENGTH:
            return escaped
    return HASHED_PREFIX + hashlib.sha256(raw).hexdigest()


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


# Requests of one node to all (listing connections, disconnecting a user),
# and each node's replies, on a topic of the asking node's own.
CLUSTER_REQUESTS = "cluster.requests"


def cluster_replies(node_id: str) -> str:
    return f"cluster.replies.{escape_token(node_id)}"


def room_calls(room_id: str) -> str:
    """Calls started, joined, left and ended in the room (callEvents)."""
    return f"room.{escape_token(room_id)}.calls"


def call_session(session_id: str) -> str:
    """The signals addressed to one call session, on whichever node it is."""
    return f"calls.session.{escape_token(session_id)}"
