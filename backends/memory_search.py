"""The search role in memory: the same semantics as the indexes, by scanning.

For tests and small deployments. Opened on the same `memory://` URL as the
MemoryMessageStore, the store indexes every append itself (synchronously, so
atomically with it) and forgets dropped rooms and trimmed messages here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .codecs import decode_message, encode_message
from .records import Message, incarnation_of, utcnow
from .search_match import matches, score
from .search_query import SearchHit, SearchKey, SearchOrder, SearchPage, SearchRequest
from .search_text import message_text, tokens

__all__ = ["MemoryMessageSearch"]


@dataclass(slots=True)
class _Indexed:
    raw: bytes
    timestamp: datetime
    incarnation: str
    user_id: str
    event: str | None
    thread_id: str | None
    tokens: list[str]


@dataclass(slots=True)
class _Room:
    entries: dict[int, _Indexed] = field(default_factory=dict)


class MemoryMessageSearch:
    """Indexed room messages in dicts, scanned per search."""

    def __init__(self, retention: timedelta | None = None, *, on_append: bool = False) -> None:
        self._retention = retention
        self._rooms: dict[str, _Room] = {}
        self.indexes_on_append = on_append

    def _cutoff(self) -> datetime | None:
        return None if self._retention is None else utcnow() - self._retention

    def add(self, message: Message) -> None:
        """Index one stored room message (synchronous: the store's append calls it)."""
        if message.room_id is None:
            raise ValueError("only room messages are searched")
        room = self._rooms.setdefault(message.room_id, _Room())
        if message.offset in room.entries:
            return
        words = tokens(message_text(message.data))
        if message.event:
            words += tokens(message.event)
        room.entries[message.offset] = _Indexed(
            raw=encode_message(message),
            timestamp=message.timestamp,
            incarnation=incarnation_of(message.epoch),
            user_id=message.user_id,
            event=message.event,
            thread_id=message.thread_id,
            tokens=words,
        )

    def forget_room(self, room_id: str, incarnation: str | None) -> None:
        room = self._rooms.get(room_id)
        if room is None:
            return
        if incarnation is None:
            del self._rooms[room_id]
            return
        room.entries = {o: e for o, e in room.entries.items() if e.incarnation != incarnation}

    def forget_before(self, cutoff: datetime) -> int:
        removed = 0
        for room in self._rooms.values():
            kept = {o: e for o, e in room.entries.items() if e.timestamp >= cutoff}
            removed += len(room.entries) - len(kept)
            room.entries = kept
        return removed

    async def index(self, messages: Sequence[Message]) -> None:
        for message in messages:
            self.add(message)

    async def search(self, request: SearchRequest) -> SearchPage:
        cutoff = self._cutoff()
        found: list[tuple[SearchKey, _Indexed]] = []
        for scope in request.rooms:
            room = self._rooms.get(scope.room_id)
            if room is None:
                continue
            for offset, entry in room.entries.items():
                if entry.incarnation != scope.incarnation or not _wanted(entry, request, cutoff):
                    continue
                if matches(request.match, entry.tokens):
                    found.append((SearchKey(entry.timestamp, scope.room_id, offset), entry))
        newest = SearchOrder.NEWEST
        found.sort(key=lambda item: item[0].sort_key(newest))
        if request.order is SearchOrder.RELEVANCE:
            found = [
                (
                    SearchKey(k.timestamp, k.room_id, k.offset, score(request.match, e.tokens)),
                    e,
                )
                for k, e in found[: request.max_candidates]
            ]
            found.sort(key=lambda item: item[0].sort_key(SearchOrder.RELEVANCE))
        if request.after is not None:
            bound = request.after.sort_key(request.order)
            found = [item for item in found if item[0].sort_key(request.order) > bound]
        hits = [
            SearchHit(
                message=decode_message(entry.raw),
                key=key,
                score=key.score if key.score is not None else score(request.match, entry.tokens),
            )
            for key, entry in found[: request.limit]
        ]
        return SearchPage(hits=hits, has_more=len(found) > request.limit)

    async def drop_room(self, room_id: str, *, incarnation: str | None = None) -> None:
        self.forget_room(room_id, incarnation)

    async def trim(self) -> int:
        cutoff = self._cutoff()
        return 0 if cutoff is None else self.forget_before(cutoff)

    async def close(self) -> None:
        return None


def _wanted(entry: _Indexed, request: SearchRequest, cutoff: datetime | None) -> bool:
    if cutoff is not None and entry.timestamp < cutoff:
        return False
    if request.user_ids is not None and entry.user_id not in request.user_ids:
        return False
    if request.events is not None and entry.event not in request.events:
        return False
    if request.thread_id is not None and entry.thread_id != request.thread_id:
        return False
    if request.has_thread and entry.thread_id is None:
        return False
    if request.since is not None and entry.timestamp < request.since:
        return False
    return request.until is None or entry.timestamp < request.until
