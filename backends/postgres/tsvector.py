"""Messages as `tsvector`s and parsed queries as `tsquery`s, by the shared rules.

The tokens are made in Python by `backends.search_text` (the rules FTS5 and
the memory backend follow) and written as tsvector and tsquery literals:
quoted lexemes that PostgreSQL takes verbatim. Its own parser and a text
search configuration are never used: their tokens depend on the server's
locale and differ from FTS5's (`foo-bar`, `1.5`, e-mail addresses), so
`cafe` finding `Café` here is the same folding that finds it in SQLite.
That also means no stemming and no stop words.

PostgreSQL's limits are kept by cutting, the same way on both sides: a
lexeme is at most MAX_LEXEME_CHARS characters (a query's longer token is
cut alike, so it still matches); positions stop at MAX_POSITION (a phrase
after that many tokens of one message may match loosely) and a lexeme keeps
its first MAX_POSITIONS_PER_LEXEME positions.
"""

from __future__ import annotations

import re
from typing import Any, Final

from ..search_query import AnyOf, Phrase, Term, TextMatch
from ..search_text import message_text, tokens

__all__ = ["tokens_of", "tsquery_of", "tsvector_of"]

MAX_LEXEME_CHARS: Final = 500  # 2,000 bytes of UTF-8 at most; PostgreSQL's limit is 2,047
MAX_POSITION: Final = 16383
MAX_POSITIONS_PER_LEXEME: Final = 256


_ASCII_TOKEN: Final = re.compile(r"[a-z0-9]+")


def tokens_of(text: str) -> list[str]:
    """`search_text.tokens`, with a fast path for ASCII text (the usual
    case): there a token is a run of ASCII letters and digits and folding is
    lower-casing, so a regular expression gives the same tokens several
    times faster than the per-character Unicode rules."""
    if text.isascii():
        return _ASCII_TOKEN.findall(text.lower())
    return tokens(text)


def _lexeme(token: str) -> str:
    cut = token[:MAX_LEXEME_CHARS]
    return "'" + cut.replace("\\", "\\\\").replace("'", "''") + "'"


def tsvector_of(data: Any, event: str | None) -> str:
    """The tsvector literal of a message: the tokens of its text and event."""
    text = message_text(data)
    if event:
        text = f"{text}\n{event}"
    positions: dict[str, list[int]] = {}
    for i, token in enumerate(tokens_of(text), start=1):
        found = positions.setdefault(_lexeme(token), [])
        if len(found) < MAX_POSITIONS_PER_LEXEME:
            found.append(min(i, MAX_POSITION))
    return " ".join(
        f"{lexeme}:{','.join(map(str, sorted(set(at))))}" for lexeme, at in positions.items()
    )


def _term(term: Term | Phrase) -> str:
    if isinstance(term, Phrase):
        return "(" + " <-> ".join(_lexeme(t) for t in term.tokens) + ")"
    return _lexeme(term.token) + (":*" if term.prefix else "")


def _clause(clause: Term | Phrase | AnyOf) -> str:
    if isinstance(clause, AnyOf):
        return "(" + " | ".join(_term(option) for option in clause.options) + ")"
    return _term(clause)


def tsquery_of(match: TextMatch) -> str:
    """The tsquery literal of a parsed query (see `backends.search_query`)."""
    parts = [_clause(c) for c in match.required]
    parts += ["!" + _term(c) for c in match.excluded]
    return " & ".join(parts)
