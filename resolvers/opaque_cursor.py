"""Opaque page cursors: a JSON list, base64url without padding.

The client only hands a cursor back, but it is still client input: a value
that does not decode, or decodes to something `valid` refuses, is
BAD_USER_INPUT on the `after` argument, never a server error.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

import orjson

from .errors import BadUserInput


def encode_cursor(value: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


def decode_cursor(after: str, valid: Callable[[list[Any]], bool], field: str) -> list[Any]:
    """The list `after` encodes, if `valid` accepts it; `field` names the
    query the cursor belongs to, for the error."""
    try:
        value = orjson.loads(base64.urlsafe_b64decode(after + "=" * (-len(after) % 4)))
        if isinstance(value, list) and valid(value):
            return value
    except (binascii.Error, ValueError):
        pass
    raise BadUserInput(f"after is not a cursor of Query.{field}", argument="after")
