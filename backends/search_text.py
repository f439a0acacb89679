"""What a message's searchable text is, and how it splits into tokens.

Every search backend must agree with these rules, so that one query finds
the same messages on each: SQLite's FTS5 `unicode61 remove_diacritics 2`
tokenizer, PostgreSQL's `simple` configuration with `unaccent`, and the
memory backend, which uses `tokens` itself.

- The text of a message is its `data` when that is a string, or the string
  values inside it (objects and arrays, depth first, in order) joined by a
  newline; plus its `event`, searched but not part of the snippet.
- A token is a maximal run of letters (L*), digits (N*) and private-use
  characters (Co); everything else separates tokens.
- Tokens compare case- and accent-insensitively: decomposed (NFD), combining
  marks (Mn) dropped, then case-folded (`Café` and `cafe` are one token).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from typing import Any, Final

__all__ = ["MAX_INDEXED_CHARS", "fold", "message_text", "spans", "tokens"]

MAX_INDEXED_CHARS: Final = 100_000
"""Only the first this many characters of a message's text are indexed (a
message is bounded by max_message_size anyway; this bounds the work)."""

_WORD_CATEGORIES: Final = frozenset({"L", "N"})


def _is_word_char(char: str) -> bool:
    category = unicodedata.category(char)
    return category[0] in _WORD_CATEGORIES or category == "Co"


def fold(token: str) -> str:
    """The form tokens compare in: no accents, case-folded."""
    decomposed = unicodedata.normalize("NFD", token)
    stripped = "".join(c for c in decomposed if unicodedata.category(c) != "Mn")
    return unicodedata.normalize("NFC", stripped).casefold()


def spans(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, folded token) of each token of `text`, in order."""
    start = -1
    for i, char in enumerate(text):
        # Combining marks belong to the token they follow (an e followed by U+0301).
        if _is_word_char(char) or (start >= 0 and unicodedata.category(char) == "Mn"):
            if start < 0:
                start = i
        elif start >= 0:
            yield start, i, fold(text[start:i])
            start = -1
    if start >= 0:
        yield start, len(text), fold(text[start:])


def tokens(text: str) -> list[str]:
    """The folded tokens of `text`, in order."""
    return [token for _, _, token in spans(text)]


def message_text(data: Any) -> str:
    """The searchable text of a message's `data` (see the module doc)."""
    if isinstance(data, str):
        return data[:MAX_INDEXED_CHARS]
    parts: list[str] = []
    size = 0
    # A loop, not recursion: nesting depth is the sender's choice.
    pending: list[Any] = [data]
    while pending and size < MAX_INDEXED_CHARS:
        item = pending.pop()
        if isinstance(item, str):
            parts.append(item)
            size += len(item) + 1
        elif isinstance(item, dict):
            pending.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            pending.extend(reversed(item))
    return "\n".join(parts)[:MAX_INDEXED_CHARS]
