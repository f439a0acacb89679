"""Sending room messages, paging history, and the gapless live stream.

`room_stream` subscribes first, then replays history after the cursor, then
goes live; live events at or below the last offset yielded are duplicates
and dropped, and a jump in offsets is filled from history, so the reader
sees every message once, in offset order, whatever order the fan-out used.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backends import topics
from backends.events import AccessEvent, MessageEvent
from backends.hub import RESYNC
from backends.records import (
    HistoryPage,
    HistoryWindow,
    Message,
    MessageKind,
    NewMessage,
    StreamPosition,
    utcnow,
)
from resolvers.errors import BadUserInput, NotFound

from .cursors import Cursor, parse_cursor
from .incarnations import with_own_history
from .posting import check_outgoing, post
from .rooms import membership, readable_room
from .services import Services, Viewer
from .stream_signals import LIVE, AccessChange, Signal
from .typing_indicators import end_typing
from .validation import optional_text

_REPLAY_PAGE = 200


@dataclass(frozen=True, slots=True)
class MessagePage:
    """A Relay page: the messages with their cursors, and which way more lie."""

    messages: list[Message]
    has_next_page: bool
    has_previous_page: bool
    resume: Message | None = None
    """With filters, where a page that ran out of its scan budget stopped:
    its cursor continues the paging (pageInfo's end cursor going forward,
    start cursor going backward) though it matched no filter."""
    backwards: bool = False


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    """history's filters besides the thread; None means any."""

    user_ids: frozenset[str] | None = None
    events: frozenset[str] | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.user_ids, self.events, self.since, self.until))

    def keeps(self, message: Message) -> bool:
        return (
            (self.user_ids is None or message.user_id in self.user_ids)
            and (self.events is None or message.event in self.events)
            and (self.since is None or message.timestamp >= self.since)
            and (self.until is None or message.timestamp < self.until)
        )


def cursor_of(message: Message) -> str:
    if message.room_id is None:
        return message.id
    return str(Cursor(message.epoch, message.offset))


async def send_message(
    services: Services,
    viewer: Viewer,
    *,
    room_id: str,
    data: Any,
    event: str | None,
    metadata: Any,
    thread_id: str | None,
    client_message_id: str | None,
) -> Message:
    room, _ = await membership(services, viewer, room_id)
    settings = services.settings
    client_id = optional_text(client_message_id, "clientMessageId", max_length=128)
    if client_id is not None:
        # A retry of a message already stored costs no slot of the rate:
        # it answers with the first message and stores nothing.
        first = await services.backends.messages.find_client_message(
            room_id, viewer.user_id, client_id, incarnation=room.incarnation
        )
        if first is not None:
            return first
    event = await check_outgoing(services, viewer, event, data, metadata)
    message, _ = await post(
        services,
        NewMessage(
            kind=MessageKind.MESSAGE,
            user_id=viewer.user_id,
            room_id=room_id,
            event=event,
            data=data,
            metadata=metadata,
            thread_id=thread_id,
            client_message_id=client_id,
        ),
        incarnation=room.incarnation,
    )
    if settings.enable_typing_indicators:
        # The membership check above covers it; a room deleted since must not
        # turn this stored message into a reported failure.
        await end_typing(services, room_id, viewer.user_id)
    return message


async def history(
    services: Services,
    viewer: Viewer,
    room_id: str,
    *,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
    thread_id: str | None,
    where: HistoryFilter | None = None,
) -> MessagePage:
    services.require("history")
    room = await readable_room(services, viewer, room_id, act="history")
    limit_max = services.settings.max_page_size
    if first is not None and last is not None:
        raise BadUserInput("pass first or last, not both", argument="first")
    for name, value in (("first", first), ("last", last)):
        if value is not None and not 0 <= value <= limit_max:
            raise BadUserInput(f"{name} must be between 0 and {limit_max}", argument=name)
    store = services.backends.messages
    # The room's position checks cursors and sets the page flags they
    # bound; a page without cursors (the first or the last messages) needs
    # neither, and saves the store a call.
    position: StreamPosition | None = None
    after_offset = before_offset = None
    if after or before:
        position = await with_own_history(
            services,
            room_id,
            room.incarnation,
            lambda: store.position(room_id, incarnation=room.incarnation),
        )
        if after:
            after_offset = _offset(parse_cursor(after, argument="after"), position.epoch)
        if before:
            before_offset = _offset(parse_cursor(before, argument="before"), position.epoch)
    # Without first/after, the page is the newest messages (before the cursor).
    backwards = last is not None or (first is None and after is None)
    requested = last if backwards else first
    limit = 50 if requested is None else requested
    if limit == 0:
        return MessagePage([], has_next_page=False, has_previous_page=False)
    resume = None
    if where:
        page, resume = await _filtered_page(
            services,
            room_id,
            room.incarnation,
            limit=limit,
            after=after_offset,
            before=before_offset,
            backwards=backwards,
            thread_id=thread_id,
            where=where,
        )
    else:
        page = await store.page(
            room_id,
            HistoryWindow(
                limit=limit,
                after=after_offset,
                before=before_offset,
                from_end=backwards,
                thread_id=thread_id,
            ),
            incarnation=room.incarnation,
        )
    if backwards:
        return MessagePage(
            page.messages,
            has_next_page=position is not None
            and before_offset is not None
            and before_offset <= position.last_offset,
            has_previous_page=page.has_more,
            resume=resume,
            backwards=True,
        )
    return MessagePage(
        page.messages,
        has_next_page=page.has_more,
        has_previous_page=position is not None
        and after_offset is not None
        and position.first_offset != 0
        and after_offset >= position.first_offset,
        resume=resume,
    )


_SCAN_PAGE = 200
_SCAN_PAGES = 25
"""A filtered history page reads at most _SCAN_PAGE * _SCAN_PAGES messages."""


async def _filtered_page(
    services: Services,
    room_id: str,
    incarnation: str,
    *,
    limit: int,
    after: int | None,
    before: int | None,
    backwards: bool,
    thread_id: str | None,
    where: HistoryFilter,
) -> tuple[HistoryPage, Message | None]:
    """The page of messages the filter keeps, scanning at most a bounded
    number; and, if the scan stopped short, the last message it read."""
    store = services.backends.messages
    picked: list[Message] = []
    last: Message | None = None
    for _ in range(_SCAN_PAGES):
        page = await store.page(
            room_id,
            HistoryWindow(
                limit=_SCAN_PAGE,
                after=after,
                before=before,
                from_end=backwards,
                thread_id=thread_id,
            ),
            incarnation=incarnation,
        )
        scanned = list(reversed(page.messages)) if backwards else page.messages
        for message in scanned:
            last = message
            if where.keeps(message):
                if len(picked) == limit:
                    return _in_order(picked, backwards, has_more=True), None
                picked.append(message)
        if not page.has_more or last is None:
            return _in_order(picked, backwards, has_more=False), None
        if backwards:
            before = last.offset
        else:
            after = last.offset
    return _in_order(picked, backwards, has_more=True), last


def _in_order(picked: list[Message], backwards: bool, *, has_more: bool) -> HistoryPage:
    return HistoryPage(list(reversed(picked)) if backwards else picked, has_more=has_more)


def _offset(cursor: Cursor, epoch: str) -> int:
    if cursor.epoch != epoch:
        raise BadUserInput(
            "the cursor belongs to an earlier history of this room, which was lost: "
            "start again without a cursor",
            reason="HISTORY_EPOCH_CHANGED",
        )
    return cursor.offset


async def authorize_room_stream(
    services: Services, viewer: Viewer, room_id: str, *, after: str | None
) -> None:
    """Raise the error the viewer gets for reading the room live, if any."""
    await readable_room(services, viewer, room_id, act="roomMessages")
    if after is not None:
        services.require("history")


async def room_stream(
    services: Services, room_id: str, *, after: str | None, thread_id: str | None
) -> AsyncGenerator[Message | Signal, None]:
    """The room's messages after the cursor, then live; for any reader."""
    cursor = parse_cursor(after, argument="after") if after else None
    reader = _Reader(services, room_id, thread_id)
    async with services.backends.hub.subscribe(topics.room_messages(room_id)) as live:
        yield LIVE
        position = await reader.position()
        reader.epoch = position.epoch
        if cursor is None:
            reader.last = position.last_offset
        else:
            gap = _gap_notice(room_id, cursor, position.epoch, position.first_offset)
            if gap is not None:
                yield gap
                reader.last = max(position.first_offset - 1, 0)
            else:
                reader.last = cursor.offset
            async for message in reader.catch_up(before=None):
                yield message
        async for item in live:
            if item is RESYNC:
                # Access changes may have been missed with the messages.
                yield AccessChange(None)
                async for message in reader.catch_up(before=None):
                    yield message
            elif isinstance(item, MessageEvent):
                async for message in reader.receive(item.message):
                    yield message
            elif isinstance(item, AccessEvent):
                yield AccessChange(item.user_id)


def _gap_notice(room_id: str, cursor: Cursor, epoch: str, first_offset: int) -> Message | None:
    """A SYSTEM message if history after the cursor is no longer whole."""
    if cursor.epoch == epoch and (first_offset == 0 or cursor.offset + 1 >= first_offset):
        return None
    reason = "epoch" if cursor.epoch != epoch else "retention"
    return Message(
        id=f"gap-{epoch}-{cursor}",
        kind=MessageKind.SYSTEM,
        user_id="system",
        timestamp=utcnow(),
        offset=max(first_offset - 1, 0),
        epoch=epoch,
        room_id=room_id,
        event="history.gap",
        data={
            "reason": reason,
            "requested": str(cursor),
            "resumeFrom": str(Cursor(epoch, max(first_offset - 1, 0))),
        },
    )


class _Reader:
    """Tracks the last offset yielded and fills gaps from history, of the
    room incarnation it found when it started."""

    def __init__(self, services: Services, room_id: str, thread_id: str | None) -> None:
        self._services = services
        self._store = services.backends.messages
        self._room_id = room_id
        self._thread_id = thread_id
        self._incarnation = ""
        self.epoch = ""
        self.last = 0

    async def position(self) -> StreamPosition:
        """The position of the room's current incarnation, which this reader
        reads from now on (live events of others differ in epoch)."""
        room = await self._services.backends.rooms.get(self._room_id)
        if room is None:
            raise NotFound(f"room {self._room_id!r} not found", roomId=self._room_id)
        self._incarnation = incarnation = room.incarnation
        return await with_own_history(
            self._services,
            self._room_id,
            incarnation,
            lambda: self._store.position(self._room_id, incarnation=incarnation),
        )

    async def receive(self, message: Message) -> AsyncIterator[Message]:
        if message.epoch != self.epoch or message.offset <= self.last:
            return
        if message.offset > self.last + 1:
            async for missed in self.catch_up(before=message.offset):
                yield missed
        self.last = message.offset
        if self._wanted(message):
            yield message

    async def catch_up(self, *, before: int | None) -> AsyncIterator[Message]:
        while True:
            page: HistoryPage = await self._store.page(
                self._room_id,
                HistoryWindow(limit=_REPLAY_PAGE, after=self.last, before=before),
                incarnation=self._incarnation,
            )
            for message in page.messages:
                self.last = message.offset
                if self._wanted(message):
                    yield message
            if not page.has_more:
                return

    def _wanted(self, message: Message) -> bool:
        return self._thread_id is None or message.thread_id == self._thread_id
