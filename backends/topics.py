"""Topic names for the fan-out hub.

Topics are dot-separated tokens so that they are valid NATS subjects and
Redis channels alike. Ids are escaped: anything outside [A-Za-z0-9_-] in a
token becomes %XX per UTF-8 byte, so no id can inject a separator or wildcard.
"""

from __future__ import annotations

import string

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


def user_presence(user_id: str) -> str:
    return f"user.{escape_token(user_id)}.presence"


def channel_messages(channel_id: str) -> str:
    return f"channel.{escape_token(channel_id)}.messages"
