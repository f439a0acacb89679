"""The value a compare-and-set change returns to write nothing: one `KEEP`
that every backend's document store recognises, so no layer translates it."""

from __future__ import annotations

from typing import Final


class Marker:
    """A named sentinel (compared by identity, printed by name)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


KEEP: Final = Marker("KEEP")
"""What a change returns to write nothing."""
