"""Content negotiation: which media type we send, from the request's Accept.

RFC 9110 §12.5.1. Each media range has a weight (`q`, 1 when absent); the
most specific range that matches a type gives its weight (`type/subtype`
over `type/*` over `*/*`); weight 0 means "not acceptable". Among the types
a client accepts with the same weight, the one whose range it lists first
wins (urql lists `application/graphql-response+json` before
`application/json`), then the order of our offers (`*/*` gets
`application/json`, as the GraphQL-over-HTTP spec asks). No Accept header,
or a blank one, accepts anything (RFC 9110), except on /graphql, where the
GraphQL-over-HTTP spec has it mean `application/json` (`for_graphql`): a
subscription sent without one is not streamed, `*/*` is.

A malformed element (not `type/subtype`, a weight that is not a qvalue) is
ignored, as if the client had not sent it: a header of nothing else accepts
nothing. Media type parameters other than `q` (`charset=utf-8`) are ignored
when matching: none of our types takes one.

Written here rather than taken from a library: python-mimeparse, the
maintained one, has no "not acceptable" answer of its own and breaks ties by
the server's order of offers alone, not by the client's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
APPLICATION_JSON = "application/json"
EVENT_STREAM = "text/event-stream"
# The single-result media types, in the order `*/*` picks them.
JSON_TYPES = (APPLICATION_JSON, GRAPHQL_RESPONSE_JSON)

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
# One comma-separated element; commas inside quoted parameter values stay.
_ELEMENT = re.compile(rf'(?:[^,"]|{_QUOTED})+')
_RANGE = re.compile(
    rf"\s*({_TOKEN})/({_TOKEN})\s*((?:;\s*{_TOKEN}\s*=\s*(?:{_TOKEN}|{_QUOTED})\s*)*)\s*"
)
_PARAMETER = re.compile(rf"\s*;\s*({_TOKEN})\s*=\s*({_TOKEN}|{_QUOTED})")
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")


@dataclass(frozen=True)
class MediaRange:
    type: str  # lower case, "*" for any
    subtype: str
    weight: float
    position: int  # where the client listed it

    def specificity(self, media_type: str) -> int | None:
        """How closely this range names `media_type` (2 exactly, 1 by its
        type, 0 as `*/*`); None if it does not match it."""
        type_, _, subtype = media_type.partition("/")
        if self.type == "*":
            return 0
        if self.type != type_:
            return None
        if self.subtype == "*":
            return 1
        return 2 if self.subtype == subtype else None


def _media_range(element: str, position: int) -> MediaRange | None:
    match = _RANGE.fullmatch(element)
    if match is None:
        return None
    type_, subtype = match.group(1).lower(), match.group(2).lower()
    if type_ == "*" and subtype != "*":
        return None
    weight = 1.0
    for name, value in _PARAMETER.findall(match.group(3)):
        if name.lower() == "q":
            if not _QVALUE.fullmatch(value):
                return None
            weight = float(value)
    return MediaRange(type_, subtype, weight, position)


class Accept:
    """A parsed Accept header."""

    def __init__(self, ranges: Sequence[MediaRange]) -> None:
        self.ranges = tuple(ranges)

    @classmethod
    def parse(cls, header: str | None) -> Accept:
        if header is None or not header.strip():
            return cls([MediaRange("*", "*", 1.0, 0)])
        ranges = []
        for position, element in enumerate(_ELEMENT.findall(header)):
            media_range = _media_range(element, position)
            if media_range is not None:
                ranges.append(media_range)
        return cls(ranges)

    @classmethod
    def for_graphql(cls, header: str | None) -> Accept:
        """The Accept header of a GraphQL request: `application/json` when
        it has none (GraphQL over HTTP, "Legacy watershed")."""
        if header is None or not header.strip():
            return cls([MediaRange("application", "json", 1.0, 0)])
        return cls.parse(header)

    def _match(self, media_type: str) -> MediaRange | None:
        """The most specific range matching `media_type` (the first listed
        of equally specific ones)."""
        best: tuple[int, MediaRange] | None = None
        for media_range in self.ranges:
            specificity = media_range.specificity(media_type)
            if specificity is not None and (best is None or specificity > best[0]):
                best = (specificity, media_range)
        return None if best is None else best[1]

    def weight(self, media_type: str) -> float:
        """The client's weight for `media_type`: 0 when not acceptable."""
        match = self._match(media_type)
        return 0.0 if match is None else match.weight

    def accepts(self, media_type: str) -> bool:
        return self.weight(media_type) > 0

    def best(self, offers: Sequence[str]) -> str | None:
        """The offer the client prefers; None if it accepts none of them."""
        chosen: tuple[float, int, int, str] | None = None
        for index, offer in enumerate(offers):
            match = self._match(offer)
            if match is None or match.weight <= 0:
                continue
            # Higher weight, then listed earlier by the client, then ours.
            rank = (match.weight, -match.position, -index, offer)
            if chosen is None or rank[:3] > chosen[:3]:
                chosen = rank
        return None if chosen is None else chosen[3]

    def prefers_event_stream(self) -> bool:
        """Whether a single result should go out as an event stream: the
        client prefers `text/event-stream` to every JSON type it accepts."""
        return self.best((*JSON_TYPES, EVENT_STREAM)) == EVENT_STREAM
