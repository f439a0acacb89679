"""Input checks shared by the resolvers; each failure names its argument."""

from __future__ import annotations

import math
import re
import uuid
from typing import Any

import orjson

from serving.errors import BadUserInput, PayloadTooLarge

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def new_id() -> str:
    return uuid.uuid4().hex


def check_id(value: str, argument: str) -> str:
    if not _ID.fullmatch(value):
        raise BadUserInput(
            f"{argument}: ids are 1 to 64 characters of letters, digits, '_' and '-'",
            argument=argument,
        )
    return value


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
        encoded = [orjson.dumps(v) for v in values]
    except (orjson.JSONEncodeError, TypeError) as exc:
        raise BadUserInput(f"{argument} is not valid JSON: {exc}", argument=argument) from exc
    # orjson writes an infinite float (a literal 1e400 in the document) as
    # null: refuse it rather than store another value. Only a payload with a
    # null can hold one, so the walk is rare.
    if any(b"null" in e for e in encoded) and not all(_finite(v) for v in values):
        raise BadUserInput(
            f"{argument} is not valid JSON: a number out of range (such as 1e400)",
            argument=argument,
        )
    return sum(len(e) for e in encoded)


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(_finite(item) for item in value)
    if isinstance(value, dict):
        return all(_finite(item) for item in value.values())
    return True


def check_payload_size(limit: int, argument: str, *values: Any) -> None:
    size = encoded_size(argument, *values)
    if size > limit:
        raise PayloadTooLarge(
            f"{argument} is {size} bytes, more than the limit of {limit}",
            limit=limit,
            size=size,
        )
