"""Cursors: `<epoch>:<offset>` of a room's history, opaque to clients."""

from __future__ import annotations

from dataclasses import dataclass

from serving.errors import BadUserInput


@dataclass(frozen=True, slots=True)
class Cursor:
    epoch: str
    offset: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.offset}"


def parse_cursor(text: str, *, argument: str) -> Cursor:
    epoch, sep, offset = text.rpartition(":")
    if not sep or not epoch or not offset.isdigit() or len(text) > 100:
        raise BadUserInput(f"{argument}: malformed cursor {text[:100]!r}", argument=argument)
    return Cursor(epoch, int(offset))
