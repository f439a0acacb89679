"""Room history in a JetStream stream: one subject per room.

Stream `<ns>_history` holds subjects `<ns>.history.<escaped room id>`; each
message body is the encoded `Message` (offset and epoch included), with the
caller's timestamp in header `Forge-Ts` (microseconds) for `trim`.

Offsets: an append publishes offset = room's last offset + 1 with
`Nats-Expected-Last-Subject-Sequence` = the stream sequence of that last
message, so two nodes appending at once cannot both win: the loser gets
"wrong last sequence" and retries on the new tail. Stream order is therefore
offset order per room. A per-process lock per room keeps one process's
appends from racing each other, and the tail is cached between appends.

The room document `epoch.<room>` in the state bucket holds the epoch, the
creation time of the stream it belongs to, and the last offset given (moved
forward after every append). When the room's subject is empty (everything
trimmed or purged) offsets continue from it, so they are never reused; when
it is missing (new room, KV lost with the server's data) or names another
stream (the stream was deleted and made again), the room gets a new epoch.

Incarnations: a room's subject belongs to the room incarnation its epoch
names (`<incarnation>.<n>`, in every message and in the epoch document).
An append or position for another incarnation raises ForeignStream, reads
skip it, and `drop_room(room, incarnation=...)` purges only up to the last
message it saw of that incarnation, so appends of a newer one survive it.

client_message_id: the publish carries `Nats-Msg-Id` (JetStream drops a
duplicate within its 2-minute window, even when two nodes race), and the
key `icmid.<room>.<incarnation>.<user>.<id>` (`cmid.<room>.<user>.<id>` for
a legacy room) remembers the message's stream sequence
beyond that window; a key whose message is gone (trimmed) no longer counts.

Paging reads with direct get `next_by_subj` (one request per message of the
page); the start of a page is found by binary search over stream sequences
(offsets grow with sequence inside a subject), so a page of 50 costs about
log2(stream length) + 51 requests, with no consumer to create or clean up.

Retention: `page` and `position` hide messages whose timestamp is older than
the retention; `trim` deletes them (a full headers-only scan of the stream:
exact for any timestamps, O(stream length) per call, once a minute). The
stream's own `max_age` is the retention plus a margin: a backstop for when no
node trims, late enough that `trim` sees (and counts) what it deletes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import nats.errors
import nats.js.errors
from nats.js.api import DiscardPolicy, RawStreamMsg, StorageType, StoreCompression

from ..codecs import decode_message, encode_message, require_utc, to_micros
from ..errors import ForeignStream
from ..records import (
    LEGACY_INCARNATION,
    HistoryPage,
    HistoryWindow,
    Message,
    NewMessage,
    StreamPosition,
    incarnation_of,
    new_epoch,
    utcnow,
)
from ..topics import escape_token
from .link import Bucket, NatsLink, key_token, kv_key, replay

log = logging.getLogger(__name__)

_TS: Final = "Forge-Ts"
_CMID: Final = "Forge-Cmid"
_BACKSTOP: Final = timedelta(minutes=5)
_DUPLICATE_WINDOW: Final = 120.0


@dataclass(slots=True)
class _Tail:
    epoch: str
    offset: int
    seq: int  # stream sequence of the room's last message; 0 if none


class NatsMessageStore:
    publishes_on_append = False

    def __init__(self, link: NatsLink, state: Bucket, retention: timedelta | None = None) -> None:
        self._link = link
        self._kv = state
        self._retention = retention
        self._stream = f"{link.namespace}_history"
        self._prefix = f"{link.namespace}.history."
        self._created = ""
        self._tails: dict[str, _Tail] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # --- setup ------------------------------------------------------------

    def _compression(self) -> StoreCompression | None:
        """s2, JetStream's own compression of the stream's files, where the
        server has it (2.10 and later); None (stored as sent) before."""
        version = self._link.nc.connected_server_version
        if (version.major, version.minor) >= (2, 10):
            return StoreCompression.S2
        log.info(
            "nats-server %s has no stream compression (2.10 has): history stored uncompressed",
            version,
        )
        return None

    async def ensure_stream(self) -> None:
        """Create the stream if absent, fix its max_age and compression, note
        its creation time."""
        js = self._link.js
        compression = self._compression()
        max_age = None if self._retention is None else (self._retention + _BACKSTOP)
        seconds = None if max_age is None else max_age.total_seconds()
        try:
            info = await js.stream_info(self._stream)
        except nats.js.errors.NotFoundError:
            with contextlib.suppress(nats.js.errors.BadRequestError):
                await js.add_stream(
                    name=self._stream,
                    subjects=[f"{self._prefix}>"],
                    storage=StorageType.FILE,
                    discard=DiscardPolicy.OLD,
                    allow_direct=True,
                    max_age=seconds,
                    duplicate_window=_DUPLICATE_WINDOW,
                    compression=compression,
                )
            info = await js.stream_info(self._stream)
        else:
            current = info.config.max_age or None
            recompress = compression is not None and info.config.compression != compression
            if (current != seconds and seconds is not None) or recompress:
                if seconds is not None:
                    info.config.max_age = seconds
                if compression is not None:
                    # Blocks written from now on are compressed; old ones as they are rewritten.
                    info.config.compression = compression
                info = await js.update_stream(info.config)
        self._created = str(info.created)
        self._tails.clear()

    def _subject(self, room_id: str) -> str:
        return self._prefix + escape_token(room_id)

    @staticmethod
    def _epoch_key(room_id: str) -> str:
        return kv_key("epoch", room_id)

    def _cutoff(self) -> datetime | None:
        return None if self._retention is None else utcnow() - self._retention

    @asynccontextmanager
    async def _room_lock(self, room_id: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(room_id, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and not getattr(lock, "_waiters", None):
                self._locks.pop(room_id, None)

    # --- reading the stream ----------------------------------------------

    async def _get(
        self, *, seq: int | None = None, subject: str | None = None, next_: bool = False
    ) -> RawStreamMsg | None:
        """One direct get; None if there is no such message.

        A direct get to a stream that no longer exists is not answered (it
        times out), so a timeout checks the stream, remakes it if it was
        deleted, and asks once more.
        """
        for attempt in range(2):
            try:
                return await self._link.js.get_msg(
                    self._stream, seq=seq, subject=subject, next=next_, direct=True
                )
            except nats.js.errors.NotFoundError:
                return None
            except nats.errors.TimeoutError:
                if attempt:
                    raise
                await self.ensure_stream()
        return None

    @staticmethod
    def _decode(msg: RawStreamMsg) -> Message:
        if msg.data is None:
            raise ValueError("a history entry without a body")
        return decode_message(msg.data)

    async def _next(self, subject: str, seq: int) -> tuple[int, Message] | None:
        msg = await self._get(seq=max(seq, 1), subject=subject, next_=True)
        if msg is None or msg.seq is None:
            return None
        return msg.seq, self._decode(msg)

    async def _seek(self, subject: str, offset: int) -> int:
        """The lowest stream sequence from which the room's messages have
        offsets >= `offset` (binary search; offsets grow with sequence)."""
        last = await self._get(subject=subject)
        if last is None or last.seq is None:
            return 1
        if self._decode(last).offset < offset:
            return last.seq + 1
        lo, hi = 1, last.seq  # the answer lies in [lo, hi]
        while lo < hi:
            mid = (lo + hi) // 2
            found = await self._next(subject, mid)
            if found is None or found[1].offset >= offset:
                hi = mid
            else:
                lo = found[0] + 1
        return lo

    # --- the tail: epoch and last offset ------------------------------------

    async def _fetch_tail(self, room_id: str, incarnation: str) -> _Tail:
        """The room's tail, its history started for `incarnation` if it has
        none; ForeignStream if it belongs to another incarnation."""
        last = await self._get(subject=self._subject(room_id))
        if last is not None and last.seq is not None:
            message = self._decode(last)
            if incarnation_of(message.epoch) != incarnation:
                raise ForeignStream(room_id, incarnation_of(message.epoch))
            return _Tail(message.epoch, message.offset, last.seq)
        key = self._epoch_key(room_id)
        for _ in range(20):
            doc, revision = await self._kv.read(key)
            if doc is not None and doc["stream"] != self._created:
                await self.ensure_stream()  # maybe another node remade the stream
            if doc is not None and doc["stream"] == self._created:
                if incarnation_of(doc["epoch"]) != incarnation:
                    raise ForeignStream(room_id, incarnation_of(doc["epoch"]))
                return _Tail(doc["epoch"], doc["last_offset"], 0)
            # A new room, or its history went with the stream: a new epoch.
            epoch = new_epoch(incarnation)
            fresh = {"epoch": epoch, "stream": self._created, "last_offset": 0}
            if await self._kv.write(key, fresh, last=revision) is not None:
                return _Tail(epoch, 0, 0)
        raise self._link.unavailable(f"too much contention on the epoch of {room_id!r}")

    async def _advance(self, room_id: str, epoch: str, offset: int) -> None:
        """Move the epoch document's last offset forward (never back)."""
        key = self._epoch_key(room_id)
        for _ in range(20):
            doc, revision = await self._kv.read(key)
            if doc is None or doc["epoch"] != epoch or doc["last_offset"] >= offset:
                return
            if await self._kv.write(key, {**doc, "last_offset": offset}, last=revision):
                return

    # --- client_message_id ---------------------------------------------------

    @staticmethod
    def _cmid_prefix(room_id: str, incarnation: str) -> str:
        if incarnation == LEGACY_INCARNATION:
            return f"cmid.{key_token(room_id)}."
        return f"icmid.{key_token(room_id)}.{key_token(incarnation)}."

    def _cmid_key(self, room_id: str, incarnation: str, user_id: str, cid: str) -> str:
        return f"{self._cmid_prefix(room_id, incarnation)}{key_token(user_id)}.{key_token(cid)}"

    async def _first_with_cmid(
        self, room_id: str, incarnation: str, key: str
    ) -> tuple[Message | None, int]:
        doc, revision = await self._kv.read(key)
        if doc is None:
            return None, revision
        msg = await self._get(seq=doc["seq"])
        if msg is None or msg.subject != self._subject(room_id):
            return None, revision
        message = self._decode(msg)
        if message.id != doc["id"] or incarnation_of(message.epoch) != incarnation:
            return None, revision
        return message, revision

    async def find_client_message(
        self, room_id: str, user_id: str, client_message_id: str, *, incarnation: str
    ) -> Message | None:
        key = self._cmid_key(room_id, incarnation, user_id, client_message_id)
        async with self._link.guard():
            first, _ = await self._first_with_cmid(room_id, incarnation, key)
        return first

    # --- the role -------------------------------------------------------------

    async def append(self, message: NewMessage, *, incarnation: str) -> tuple[Message, bool]:
        if message.room_id is None:
            raise ValueError("a stored message needs a room_id")
        timestamp = require_utc(message.timestamp, "timestamp")
        room_id = message.room_id
        subject = self._subject(room_id)
        cid = message.client_message_id
        cmid_key = (
            None if cid is None else self._cmid_key(room_id, incarnation, message.user_id, cid)
        )
        async with self._link.guard(), self._room_lock(room_id):
            for _ in range(200):
                tail = self._tails.get(room_id)
                if tail is None or incarnation_of(tail.epoch) != incarnation:
                    # Not cached, or cached for another incarnation: ask the stream.
                    self._tails.pop(room_id, None)
                    tail = await self._fetch_tail(room_id, incarnation)
                generation = 0
                if cmid_key is not None:
                    first, generation = await self._first_with_cmid(room_id, incarnation, cmid_key)
                    if first is not None:
                        return first, False
                stored = message.stored(
                    timestamp=timestamp, offset=tail.offset + 1, epoch=tail.epoch
                )
                headers = {
                    "Nats-Expected-Last-Subject-Sequence": str(tail.seq),
                    _TS: str(to_micros(timestamp, "timestamp")),
                }
                if cmid_key is not None:
                    headers[_CMID] = cmid_key
                    # The generation (key revision) changes when a trimmed
                    # message's key is dropped, so an old id is not a duplicate.
                    headers["Nats-Msg-Id"] = f"{tail.epoch}.{cmid_key}.{generation}"
                raw = encode_message(stored)
                try:
                    ack = await self._link.js.publish(subject, raw, headers=headers)
                except nats.js.errors.NoStreamResponseError:
                    await self.ensure_stream()  # deleted under us: history is lost
                    continue
                except nats.js.errors.APIError as exc:
                    if exc.err_code in (10071, 10164):
                        self._tails.pop(room_id, None)  # someone else appended
                        continue
                    raise
                if ack.duplicate:
                    self._tails.pop(room_id, None)
                    original = await self._get(seq=ack.seq)
                    if original is not None and original.subject == subject:
                        return self._decode(original), False
                    continue
                self._tails[room_id] = _Tail(tail.epoch, stored.offset, ack.seq)
                await self._advance(room_id, tail.epoch, stored.offset)
                if cmid_key is not None:
                    await self._kv.write(
                        cmid_key, {"seq": ack.seq, "id": stored.id}, last=generation
                    )
                return decode_message(raw), True
            raise self._link.unavailable(f"too much contention appending to {room_id!r}")

    @staticmethod
    def _foreign(messages: list[Message], incarnation: str) -> bool:
        """Whether the messages are another incarnation's: one subject holds one."""
        return any(incarnation_of(m.epoch) != incarnation for m in messages)

    def _visible(self, message: Message, cutoff: datetime | None, thread_id: str | None) -> bool:
        if cutoff is not None and message.timestamp < cutoff:
            return False
        return thread_id is None or message.thread_id == thread_id

    async def _read_forward(
        self,
        subject: str,
        start_seq: int,
        *,
        below: int | None,
        want: int,
        cutoff: datetime | None,
        thread_id: str | None,
    ) -> list[Message]:
        picked: list[Message] = []
        seq = start_seq
        while len(picked) < want:
            found = await self._next(subject, seq)
            if found is None:
                break
            seq, message = found[0] + 1, found[1]
            if below is not None and message.offset >= below:
                break
            if self._visible(message, cutoff, thread_id):
                picked.append(message)
        return picked

    async def page(self, room_id: str, window: HistoryWindow, *, incarnation: str) -> HistoryPage:
        limit, after, before = window.limit, window.after, window.before
        from_end, thread_id = window.from_end, window.thread_id
        subject = self._subject(room_id)
        cutoff = self._cutoff()
        lowest = 1 if after is None else after + 1
        async with self._link.guard():
            if not from_end:
                start = 1 if after is None else await self._seek(subject, lowest)
                picked = await self._read_forward(
                    subject, start, below=before, want=limit + 1, cutoff=cutoff, thread_id=thread_id
                )
                if self._foreign(picked, incarnation):
                    return HistoryPage(messages=[], has_more=False)
                return HistoryPage(messages=picked[:limit], has_more=len(picked) > limit)
            # Backwards: read windows of offsets below `top`, each twice as
            # wide as the last, until limit + 1 matches or the lower bound.
            last = await self._get(subject=subject)
            if last is None or self._foreign([self._decode(last)], incarnation):
                return HistoryPage(messages=[], has_more=False)
            top = self._decode(last).offset + 1 if before is None else before
            collected: list[Message] = []
            width = limit + 1
            while len(collected) <= limit and top > lowest:
                bottom = max(lowest, top - width)
                span = await self._read_forward(
                    subject,
                    await self._seek(subject, bottom),
                    below=top,
                    want=1 << 62,
                    cutoff=cutoff,
                    thread_id=thread_id,
                )
                collected = span + collected
                top, width = bottom, width * 2
        if self._foreign(collected, incarnation):
            return HistoryPage(messages=[], has_more=False)
        return HistoryPage(messages=collected[-limit:], has_more=len(collected) > limit)

    async def position(self, room_id: str, *, incarnation: str) -> StreamPosition:
        subject = self._subject(room_id)
        cutoff = self._cutoff()
        async with self._link.guard():
            tail = await self._fetch_tail(room_id, incarnation)
            last_offset = tail.offset
            if tail.seq == 0:
                # Empty subject: the epoch document's offset is the last given.
                return StreamPosition(epoch=tail.epoch, last_offset=last_offset, first_offset=0)
            first = await self._read_forward(
                subject, 1, below=None, want=1, cutoff=cutoff, thread_id=None
            )
        first_offset = first[0].offset if first else 0
        return StreamPosition(epoch=tail.epoch, last_offset=last_offset, first_offset=first_offset)

    async def trim(self) -> int:
        cutoff = self._cutoff()
        if cutoff is None:
            return 0
        limit = to_micros(cutoff, "cutoff")
        removed = 0
        async with self._link.guard():
            messages = await replay(
                self._link.js,
                self._stream,
                f"{self._prefix}>",
                last_per_subject=False,
                headers_only=True,
            )
            for msg in messages:
                headers = msg.headers or {}
                if int(headers.get(_TS, "0")) >= limit:
                    continue
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await self._link.js.delete_msg(self._stream, msg.metadata.sequence.stream)
                    removed += 1
                if _CMID in headers:
                    # Forget the id with its message: it may be used again.
                    _, revision = await self._kv.read(headers[_CMID])
                    if revision:
                        await self._kv.remove(headers[_CMID], last=revision)
        self._tails.clear()
        return removed

    async def drop_room(self, room_id: str, *, incarnation: str | None = None) -> None:
        subject = self._subject(room_id)
        async with self._link.guard(), self._room_lock(room_id):
            self._tails.pop(room_id, None)
            if incarnation is None:
                await self._link.js.purge_stream(self._stream, subject=subject)
                await self._kv.remove(self._epoch_key(room_id), last=None)
                await self._kv.purge_prefix(f"cmid.{key_token(room_id)}.")
                await self._kv.purge_prefix(f"icmid.{key_token(room_id)}.")
                return
            last = await self._get(subject=subject)
            if last is not None and last.seq is not None:
                if incarnation_of(self._decode(last).epoch) != incarnation:
                    return
                # Up to the message seen: anything appended since is a newer
                # incarnation's (an append checks the tail), and stays.
                await self._link.js.purge_stream(self._stream, subject=subject, seq=last.seq + 1)
            key = self._epoch_key(room_id)
            doc, revision = await self._kv.read(key)
            if doc is not None and incarnation_of(doc["epoch"]) == incarnation:
                await self._kv.remove(key, last=revision)
            await self._kv.purge_prefix(self._cmid_prefix(room_id, incarnation))

    async def close(self) -> None:
        self._tails.clear()
