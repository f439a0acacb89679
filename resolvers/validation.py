"""Input checks shared by the resolvers; each failure names its argument.

The bounds of every argument (ids, lengths, counts) are checked before any
resolver runs (schema/bounds.py); what is left here adds meaning: a name
must not be blank, text is stored stripped, payloads fit their byte limit."""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson

from resolvers.errors import BadUserInput, PayloadTooLarge

MAX_USER_ID_LENGTH = 256
# Ids the server speaks as start with this, which no user id may: the author of
# SYSTEM messages, and a back-end service acting as itself (an API key).
RESERVED_ID_PREFIX = "forge:"
SYSTEM_USER_ID = RESERVED_ID_PREFIX + "system"
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def user_id_problem(user_id: object) -> str | None:
    """Why ``user_id`` is not a usable user id, or ``None`` if it is.

    The one rule for user ids: a token's ``sub`` and every ``userId`` argument
    follow it, so every user who can sign in can also be addressed.
    """
    if not isinstance(user_id, str) or not user_id:
        return "must be a non-empty string"
    if len(user_id) > MAX_USER_ID_LENGTH:
        return f"is longer than {MAX_USER_ID_LENGTH} characters"
    if _CONTROL.search(user_id):
        return "contains control characters"
    if user_id.startswith(RESERVED_ID_PREFIX):
        return f"must not start with {RESERVED_ID_PREFIX!r} (ids of the server itself)"
    return None


def service_user_id(key_name: str) -> str:
    """The id an API key acts under when it acts as no user."""
    return f"{RESERVED_ID_PREFIX}key:{key_name}"


def new_id() -> str:
    return uuid.uuid4().hex


def required_text(value: str | None, argument: str, *, max_length: int) -> str:
    if value is None or not value.strip():
        raise BadUserInput(f"{argument} must not be empty", argument=argument)
    return _bounded(value.strip(), argument, max_length)


def optional_text(value: str | None, argument: str, *, max_length: int) -> str | None:
    return None if value is None else _bounded(value.strip(), argument, max_length)


def _bounded(value: str, argument: str, max_length: int) -> str:
    if len(value) > max_length:
        raise BadUserInput(f"{argument} is longer than {max_length} characters", argument=argument)
    return value


def encoded_size(argument: str, *values: Any) -> int:
    """Size in bytes of the values as JSON; BAD_USER_INPUT if they are not JSON."""
    try:
        return sum(len(orjson.dumps(v)) for v in values)
    except (orjson.JSONEncodeError, TypeError) as exc:
        raise BadUserInput(f"{argument} is not valid JSON: {exc}", argument=argument) from exc


def check_payload_size(limit: int, argument: str, *values: Any) -> None:
    size = encoded_size(argument, *values)
    if size > limit:
        raise PayloadTooLarge(
            f"{argument} is {size} bytes, more than the limit of {limit}",
            limit=limit,
            size=size,
        )
