"""A parsed search query, and the records a search returns.

The resolvers parse what a client typed (`resolvers/search_syntax.py`) into
a `TextMatch` plus filters, check what the viewer may read, and hand the
backend a `SearchRequest`. Every token in here is already folded
(`backends.search_text.fold`) and non-empty, and the counts are bounded
by the parser, so a backend may turn it into its own query language
(an FTS5 MATCH expression, a tsquery) without further checks: quote every
token, never paste one in raw.

Meaning of a `TextMatch` over a message's tokens (`search_text`):

- every clause of `required` matches (AND);
- a clause is `Term` (the token; with `prefix`, any token starting with it),
  `Phrase` (the tokens consecutively, in order) or `AnyOf` (at least one of
  its options);
- no clause of `excluded` matches.

`required` is never empty: a query of exclusions or modifiers only is
refused by the parser.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from .records import Message

_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

__all__ = [
    "AnyOf",
    "Clause",
    "Phrase",
    "RoomScope",
    "SearchHit",
    "SearchKey",
    "SearchOrder",
    "SearchPage",
    "SearchRequest",
    "Term",
    "TextMatch",
    "hit_of",
]


@dataclass(frozen=True, slots=True)
class Term:
    token: str
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Phrase:
    tokens: tuple[str, ...]
    """Two or more tokens (a one-token phrase is parsed as a `Term`)."""


@dataclass(frozen=True, slots=True)
class AnyOf:
    options: tuple[Term | Phrase, ...]
    """Two or more."""


Clause = Term | Phrase | AnyOf


@dataclass(frozen=True, slots=True)
class TextMatch:
    required: tuple[Clause, ...]
    excluded: tuple[Term | Phrase, ...] = ()

    def positive_terms(self) -> list[Term | Phrase]:
        """What may be highlighted: the required clauses and their options."""
        found: list[Term | Phrase] = []
        for clause in self.required:
            found.extend(clause.options if isinstance(clause, AnyOf) else (clause,))
        return found


@dataclass(frozen=True, slots=True)
class RoomScope:
    """A room the viewer may read, and the incarnation whose messages count."""

    room_id: str
    incarnation: str


class SearchOrder(enum.Enum):
    NEWEST = "NEWEST"
    """Newest first: by timestamp descending, then room id, then offset descending."""
    RELEVANCE = "RELEVANCE"
    """By score descending among the newest `max_candidates` matches, then as NEWEST."""


@dataclass(frozen=True, slots=True)
class SearchKey:
    """Where a hit sorts; a page continues strictly after the key given.

    NEWEST sorts by (timestamp desc, room_id asc, offset desc); RELEVANCE by
    (score desc, then the same). `score` is None in NEWEST keys.
    """

    timestamp: datetime
    room_id: str
    offset: int
    score: float | None = None

    def sort_key(self, order: SearchOrder) -> tuple[float, int, str, int]:
        """A tuple that sorts ascending in `order`'s order."""
        micros = (self.timestamp - _UNIX_EPOCH) // _MICROSECOND
        score = -(self.score or 0.0) if order is SearchOrder.RELEVANCE else 0.0
        return (score, -micros, self.room_id, -self.offset)


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """One page of a search. Filters combine with AND; None means any."""

    match: TextMatch
    rooms: tuple[RoomScope, ...]
    """Only messages of these rooms (of the incarnation named); never empty."""
    limit: int
    """At least 1; the backend returns at most this many hits."""
    order: SearchOrder = SearchOrder.NEWEST
    after: SearchKey | None = None
    user_ids: frozenset[str] | None = None
    events: frozenset[str] | None = None
    thread_id: str | None = None
    has_thread: bool = False
    since: datetime | None = None
    """Inclusive: timestamp >= since."""
    until: datetime | None = None
    """Exclusive: timestamp < until."""
    max_candidates: int = 1000
    """RELEVANCE scores at most this many of the newest matches."""


@dataclass(frozen=True, slots=True)
class SearchHit:
    message: Message
    key: SearchKey
    score: float
    """Higher is more relevant; comparable within one search only."""


@dataclass(frozen=True, slots=True)
class SearchPage:
    hits: list[SearchHit] = field(default_factory=list)
    has_more: bool = False


def hit_of(message: Message, room_id: str, score: float, order: SearchOrder) -> SearchHit:
    """The hit of a message found with `score`; its key orders it as `order` does."""
    key_score = score if order is SearchOrder.RELEVANCE else None
    key = SearchKey(message.timestamp, room_id, message.offset, key_score)
    return SearchHit(message=message, key=key, score=score)
