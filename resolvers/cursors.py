"""Cursors: `<epoch>:<offset>` of a room's history, opaque to clients.

Parsed strictly, because every backend gets the offset as a number: an
epoch of letters, digits, '_', '-' and '.' (`<room incarnation>.<n>`,
backends/records.py), and an offset of ASCII digits below
2^63 (what SQLite's INTEGER and Redis stream ids hold). Anything else is
BAD_USER_INPUT, never a backend error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from resolvers.errors import BadUserInput

MAX_CURSOR_LENGTH = 100
MAX_OFFSET = 2**63 - 1

# `re.ASCII` keeps \d from matching other scripts' digits (`int` accepts those).
_CURSOR = re.compile(r"([A-Za-z0-9_.-]{1,64}):([0-9]{1,19})", re.ASCII)


@dataclass(frozen=True, slots=True)
class Cursor:
    epoch: str
    offset: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.offset}"


def parse_cursor(text: str, *, argument: str) -> Cursor:
    match = _CURSOR.fullmatch(text) if len(text) <= MAX_CURSOR_LENGTH else None
    offset = int(match[2]) if match else -1
    if match is None or offset > MAX_OFFSET:
        raise BadUserInput(
            f"{argument}: malformed cursor {text[:MAX_CURSOR_LENGTH]!r}", argument=argument
        )
    return Cursor(match[1], offset)
