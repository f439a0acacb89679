"""searchMessages: parse the query, narrow it to what the viewer may read, page.

The rooms searched are decided here, at query time, never by the index:
without a room the viewer's member rooms; with `roomId` (or `in:`) those
rooms if the viewer may read them now (a public room not joined included).
A private room the viewer is not in is NOT_FOUND for `roomId`, exactly like
one that does not exist, and silently nothing for `in:`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from backends.records import Message
from backends.search_match import matched_ranges
from backends.search_query import (
    RoomScope,
    SearchKey,
    SearchOrder,
    SearchRequest,
    TextMatch,
)
from backends.search_text import message_text
from resolvers.errors import BadUserInput, FeatureDisabled, Forbidden, NotFound

from .rooms import readable_room
from .search_syntax import SearchSyntaxError, parse_query
from .services import Services, Viewer

DEFAULT_FIRST: Final = 20
MAX_CANDIDATES: Final = 1000
"""RELEVANCE ranks at most this many of the newest matches."""
SNIPPET_CHARS: Final = 160
_LEAD: Final = 40  # characters of context shown before the first match
_ELLIPSIS: Final = "…"
_UNIX_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_CURSOR: Final = re.compile(
    r"(?:n|r:(-?[0-9]{1,20}(?:\.[0-9]{1,20})?(?:e[-+]?[0-9]{1,3})?)):"
    r"([0-9]{1,19}):([0-9]{1,19}):([A-Za-z0-9_-]{1,64})",
    re.ASCII,
)
MAX_CURSOR_LENGTH: Final = 160


@dataclass(frozen=True, slots=True)
class Found:
    message: Message
    cursor: str
    snippet: str
    highlights: list[tuple[int, int]]
    score: float


@dataclass(frozen=True, slots=True)
class SearchResults:
    found: list[Found]
    has_next_page: bool
    has_previous_page: bool


def encode_cursor(key: SearchKey, order: SearchOrder) -> str:
    micros = (key.timestamp - _UNIX_EPOCH) // _MICROSECOND
    head = "n" if order is SearchOrder.NEWEST else f"r:{key.score or 0.0!r}"
    return f"{head}:{micros}:{key.offset}:{key.room_id}"


def parse_search_cursor(text: str, order: SearchOrder, *, argument: str = "after") -> SearchKey:
    """The key of a cursor of this order; BAD_USER_INPUT for anything else."""
    match = _CURSOR.fullmatch(text) if len(text) <= MAX_CURSOR_LENGTH else None
    if match is None:
        raise BadUserInput(f"{argument}: malformed search cursor", argument=argument)
    relevance = text.startswith("r:")
    if relevance != (order is SearchOrder.RELEVANCE):
        raise BadUserInput(
            f"{argument}: the cursor belongs to a search in another order", argument=argument
        )
    micros = int(match[2])
    if micros > 253402214400 * 1_000_000:  # 9999-12-31
        raise BadUserInput(f"{argument}: malformed search cursor", argument=argument)
    return SearchKey(
        timestamp=_UNIX_EPOCH + timedelta(microseconds=micros),
        room_id=match[4],
        offset=int(match[3]),
        score=float(match[1]) if relevance else None,
    )


def snippet_of(message: Message, match: TextMatch) -> tuple[str, list[tuple[int, int]]]:
    """Plain text around the first match, and the matched ranges in it
    (start, end: character offsets, end exclusive)."""
    text = message_text(message.data) or (message.event or "")
    ranges = matched_ranges(match, text)
    start = 0
    if ranges and ranges[0][0] > _LEAD:
        start = ranges[0][0] - _LEAD
        # Begin at a word, if one begins near.
        space = text.find(" ", start, ranges[0][0])
        if space >= 0 and space - start < _LEAD // 2:
            start = space + 1
    end = min(len(text), start + SNIPPET_CHARS)
    prefix = _ELLIPSIS if start > 0 else ""
    snippet = prefix + text[start:end] + (_ELLIPSIS if end < len(text) else "")
    shift = len(prefix) - start
    shown = [
        (max(s, start) + shift, min(e, end) + shift) for s, e in ranges if s < end and e > start
    ]
    return snippet, shown


async def search_messages(
    services: Services,
    viewer: Viewer,
    *,
    query: str,
    room_id: str | None,
    user_id: str | None,
    event: str | None,
    thread_id: str | None,
    since: datetime | None,
    until: datetime | None,
    first: int | None,
    after: str | None,
    order: SearchOrder,
) -> SearchResults:
    services.require("history")
    search = services.backends.search
    if search is None:
        raise FeatureDisabled(
            "search is off: no backend provides the search role here; set "
            "role_urls.search (for example sqlite:///data/search.db) and restart",
            feature="search",
            setting="role_urls.search",
        )
    limit = DEFAULT_FIRST if first is None else first
    limit_max = services.settings.max_page_size
    if not 0 <= limit <= limit_max:
        raise BadUserInput(f"first must be between 0 and {limit_max}", argument="first")
    try:
        parsed = parse_query(query)
    except SearchSyntaxError as exc:
        raise BadUserInput(f"query: {exc}", argument="query", position=exc.position) from None
    key = parse_search_cursor(after, order) if after else None
    rooms = await _scope(services, viewer, room_id, parsed.room_ids)
    user_ids = parsed.user_ids or None
    if user_id is not None:
        user_ids = {user_id} & user_ids if user_ids is not None else {user_id}
    since = _latest(since, parsed.after)
    until = _earliest(until, parsed.before)
    empty = SearchResults([], has_next_page=False, has_previous_page=key is not None)
    if limit == 0 or not rooms or user_ids == set() or (since and until and since >= until):
        return empty
    page = await search.search(
        SearchRequest(
            match=parsed.match,
            rooms=tuple(rooms),
            limit=limit,
            order=order,
            after=key,
            user_ids=frozenset(user_ids) if user_ids is not None else None,
            events=frozenset({event}) if event is not None else None,
            thread_id=thread_id,
            has_thread=parsed.has_thread,
            since=since,
            until=until,
            max_candidates=MAX_CANDIDATES,
        )
    )
    found = []
    for hit in page.hits:
        snippet, highlights = snippet_of(hit.message, parsed.match)
        found.append(
            Found(
                message=hit.message,
                cursor=encode_cursor(hit.key, order),
                snippet=snippet,
                highlights=highlights,
                score=hit.score,
            )
        )
    return SearchResults(found, has_next_page=page.has_more, has_previous_page=key is not None)


async def _scope(
    services: Services, viewer: Viewer, room_id: str | None, named: set[str]
) -> list[RoomScope]:
    if room_id is not None:
        if named and room_id not in named:
            return []
        room = await readable_room(services, viewer, room_id)
        return [RoomScope(room.id, room.incarnation)]
    if not named:
        services.require("rooms")
        joined = await services.backends.rooms.list_joined(viewer.user_id)
        return [RoomScope(r.id, r.incarnation) for r in joined]
    scope = []
    for name in sorted(named):
        try:
            room = await readable_room(services, viewer, name)
        except (NotFound, Forbidden):
            continue  # never tell a private room from a missing one
        scope.append(RoomScope(room.id, room.incarnation))
    return scope


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)
