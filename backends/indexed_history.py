"""History on one backend, its search index on another.

When the search role's URL is not the message store's (say Redis history
with a SQLite or PostgreSQL index), nothing can index in the append's own
transaction: the node that stores a message indexes it right after, and a
room dropped or trimmed is dropped or trimmed in the index too. The factory
wraps the message store in `IndexedMessageStore` then; the resolvers see
one MessageStore either way.
"""

from __future__ import annotations

import logging

from .errors import Unavailable
from .protocols import MessageSearch, MessageStore
from .records import HistoryPage, HistoryWindow, Message, NewMessage, StreamPosition

log = logging.getLogger(__name__)

__all__ = ["IndexedMessageStore"]


class IndexedMessageStore:
    """A MessageStore that keeps a separate MessageSearch up to date."""

    def __init__(self, messages: MessageStore, search: MessageSearch) -> None:
        self._messages = messages
        self._search = search
        self.publishes_on_append = messages.publishes_on_append

    async def append(self, message: NewMessage, *, incarnation: str) -> tuple[Message, bool]:
        stored, created = await self._messages.append(message, incarnation=incarnation)
        if created:
            try:
                await self._search.index([stored])
            except Unavailable as exc:
                # Stored and about to be delivered: failing the send now would
                # only make the client retry into the same stored message.
                log.warning("message %s not indexed for search: %s", stored.id, exc)
        return stored, created

    async def find_client_message(
        self, room_id: str, user_id: str, client_message_id: str, *, incarnation: str
    ) -> Message | None:
        return await self._messages.find_client_message(
            room_id, user_id, client_message_id, incarnation=incarnation
        )

    async def page(self, room_id: str, window: HistoryWindow, *, incarnation: str) -> HistoryPage:
        return await self._messages.page(room_id, window, incarnation=incarnation)

    async def position(self, room_id: str, *, incarnation: str) -> StreamPosition:
        return await self._messages.position(room_id, incarnation=incarnation)

    async def trim(self) -> int:
        removed = await self._messages.trim()
        await self._search.trim()
        return removed

    async def drop_room(self, room_id: str, *, incarnation: str | None = None) -> None:
        await self._messages.drop_room(room_id, incarnation=incarnation)
        await self._search.drop_room(room_id, incarnation=incarnation)

    async def close(self) -> None:
        await self._messages.close()
