"""Room history on Redis Streams: one stream per room, appended by one Lua script.

Keys of a room (see `common` for the layout):

    msg-meta:<room>    HASH    epoch ("<room incarnation>.<n>"), last (the last
                               offset given), compacted (offsets up to it are
                               in blocks: history_blocks.py)
    msg-stream:<room>  STREAM  entry id "<offset>-0"; fields m (message JSON),
                               t (timestamp, µs), h (thread id, if any),
                               c (client-id field, if any)
    msg-cid:<room>     HASH    JSON [user_id, client_message_id] -> offset
    msg-time:<room>    ZSET    offset scored by timestamp (µs): what retention expires
    msg-rooms:         ZSET    room id scored by when something in it next
                               expires (oldest entry, or a block's newest):
                               which rooms `trim` and compaction visit
    msg-blocks:<room>, msg-bidx:<room>   old entries, compressed (history_blocks.py)

The append script assigns the offset, checks idempotency, adds the entry and
publishes the MessageEvent in one step, so every node sees offsets in the
order they were given and a message is live only if it was stored.

A room's stream belongs to the room incarnation its epoch names: the
scripts that write refuse ({-1, incarnation found}) a stream of another
incarnation, reads skip it, and a drop can be limited to one incarnation.

The message JSON is built in Python (orjson) up to its offset; Lua only
concatenates the offset and epoch. Re-encoding in Lua (cjson) would turn {}
into [] and round floats.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta

import orjson
from redis.asyncio import Redis

from ..codecs import decode_message, message_to_dict, require_utc, to_micros
from ..compaction import COMPACT_BATCH, CompactionStats
from ..decoded_blocks import DecodedBlocks
from ..errors import ForeignStream, Unavailable
from ..records import (
    HistoryPage,
    HistoryWindow,
    Message,
    NewMessage,
    StreamPosition,
    incarnation_of,
    new_epoch,
    utcnow,
)
from ..topics import room_messages
from .common import Commands, Keys, Scripts, translated
from .history_blocks import TRIM_BLOCKS, RoomBlocks

_INCARNATION_OF = """
local function incarnation_of(epoch) return string.match(epoch, '^(.*)%.') or '' end
"""

# Starts a new history (epoch ARGV[1]) when the room has none, or when its
# stream was lost while the meta hash survived (a partial loss: keys evicted
# or deleted). An emptied stream is not lost: XDEL/XTRIM leave the (empty)
# key in place. A history of another incarnation than ARGV[1]'s is refused.
_ENSURE_EPOCH = (
    _INCARNATION_OF
    + """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '0')
if epoch and last > 0 and redis.call('EXISTS', KEYS[2]) == 0 then
  epoch = false
end
if epoch and incarnation_of(epoch) ~= incarnation_of(ARGV[1]) then
  return {-1, incarnation_of(epoch)}
end
if not epoch then
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
  epoch = ARGV[1]
  last = 0
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'last', 0, 'compacted', 0)
end
"""
)

# KEYS: meta, stream, cid, time, blocks, block index, rooms index
# ARGV: new epoch, message prefix, timestamp µs, has thread, thread id,
#       cid field ('' for none), channel ('' to not publish), room id
_APPEND = (
    _ENSURE_EPOCH
    + """
local cid = ARGV[6]
if cid ~= '' then
  local first = redis.call('HGET', KEYS[3], cid)
  if first then
    local found = redis.call('XRANGE', KEYS[2], first .. '-0', first .. '-0')
    if #found > 0 then
      local fields = found[1][2]
      for i = 1, #fields, 2 do
        if fields[i] == 'm' then return {0, fields[i + 1]} end
      end
    elseif tonumber(first) <= tonumber(redis.call('HGET', KEYS[1], 'compacted') or '0') then
      return {2, first}
    end
  end
end
last = last + 1
local offset = string.format('%d', last)
local body = ARGV[2] .. offset .. ',"epoch":"' .. epoch .. '"}'
local entry = {'m', body, 't', ARGV[3]}
if ARGV[4] == '1' then
  entry[#entry + 1] = 'h'
  entry[#entry + 1] = ARGV[5]
end
if cid ~= '' then
  entry[#entry + 1] = 'c'
  entry[#entry + 1] = cid
  redis.call('HSET', KEYS[3], cid, offset)
end
redis.call('XADD', KEYS[2], offset .. '-0', unpack(entry))
redis.call('HSET', KEYS[1], 'last', offset)
redis.call('ZADD', KEYS[4], ARGV[3], offset)
redis.call('ZADD', KEYS[7], 'LT', ARGV[3], ARGV[8])
if ARGV[7] ~= '' then
  redis.call('PUBLISH', ARGV[7], '{"t":"message","message":' .. body .. '}')
end
return {1, body}
"""
)

# KEYS: meta, stream, cid, time, blocks, block index;  ARGV: new epoch
_POSITION = (
    _ENSURE_EPOCH
    + """
return {1, epoch, string.format('%d', last)}
"""
)

# KEYS: meta, stream, cid, time, blocks, block index, rooms index;
# ARGV: only this incarnation
#       (1/0), the incarnation, room id
_DROP = (
    _INCARNATION_OF
    + """
if ARGV[1] == '1' then
  local epoch = redis.call('HGET', KEYS[1], 'epoch')
  if epoch and incarnation_of(epoch) ~= ARGV[2] then return 0 end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
redis.call('ZREM', KEYS[7], ARGV[3])
return 1
"""
)

# KEYS: stream, cid, time, rooms index, blocks, block index;
# ARGV: cutoff µs, batch size, room id
# Deletes a batch of the room's messages older than the cutoff (by their
# timestamps, so out-of-order timestamps are handled exactly), forgets their
# client ids, deletes the expired blocks, and re-scores the room in the index
# by when something in it next expires.
_TRIM = (
    TRIM_BLOCKS
    + """
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[1],
                           'LIMIT', 0, tonumber(ARGV[2]))
local removed = 0
for _, offset in ipairs(expired) do
  local id = offset .. '-0'
  local found = redis.call('XRANGE', KEYS[1], id, id)
  if #found > 0 then
    local fields = found[1][2]
    for i = 1, #fields, 2 do
      if fields[i] == 'c' and redis.call('HGET', KEYS[2], fields[i + 1]) == offset then
        redis.call('HDEL', KEYS[2], fields[i + 1])
      end
    end
    removed = removed + redis.call('XDEL', KEYS[1], id)
  end
  redis.call('ZREM', KEYS[3], offset)
end
local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
local due = block_due
if #oldest > 0 and (not due or tonumber(oldest[2]) < due) then due = tonumber(oldest[2]) end
if not due then
  redis.call('ZREM', KEYS[4], ARGV[3])
else
  redis.call('ZADD', KEYS[4], string.format('%d', due), ARGV[3])
end
return {#expired, removed + blocks_removed}
"""
)

# KEYS: stream;  ARGV: low id, high id ('+' for none), reverse (1/0), how many,
#       cutoff µs ('' for none), has thread (1/0), thread id, budget
# Returns {done, the bound to continue from, matching message bodies}.
_SCAN = """
local low, high = ARGV[1], ARGV[2]
local reverse = ARGV[3] == '1'
local want = tonumber(ARGV[4])
local cutoff = nil
if ARGV[5] ~= '' then cutoff = tonumber(ARGV[5]) end
local thread = nil
if ARGV[6] == '1' then thread = ARGV[7] end
local budget = tonumber(ARGV[8])
local picked, examined = {}, 0
while examined < budget do
  local entries
  if reverse then
    entries = redis.call('XREVRANGE', KEYS[1], high, low, 'COUNT', 256)
  else
    entries = redis.call('XRANGE', KEYS[1], low, high, 'COUNT', 256)
  end
  for _, entry in ipairs(entries) do
    examined = examined + 1
    local fields, body, ts, th = entry[2], nil, nil, nil
    for i = 1, #fields, 2 do
      local name = fields[i]
      if name == 'm' then body = fields[i + 1]
      elseif name == 't' then ts = fields[i + 1]
      elseif name == 'h' then th = fields[i + 1] end
    end
    if (not cutoff or tonumber(ts) >= cutoff) and (not thread or th == thread) then
      picked[#picked + 1] = body
      if #picked >= want then return {1, '', picked} end
    end
  end
  if #entries < 256 then return {1, '', picked} end
  local edge = tonumber(string.match(entries[#entries][1], '^(%d+)'))
  if reverse then
    if edge <= 1 then return {1, '', picked} end
    high = string.format('%d', edge - 1)
  else
    low = string.format('%d', edge + 1)
  end
end
if reverse then return {0, high, picked} end
return {0, low, picked}
"""

# KEYS: cid;  ARGV: field, offset: forgets the field if it still names that offset.
_FORGET_CID = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"""

_TRIM_BATCH = 500
# Reads retry while compaction moves the watermark under them; past this
# many moves in one read, something is wrong.
_READ_ATTEMPTS = 20
_SCAN_BUDGET = 5_000
_SCAN_MAX_BATCH = 1000


def _message_prefix(message: Message) -> bytes:
    """The message's JSON up to (and including) `"offset":`; Lua adds the rest.

    `decode_hub_event` reads keys by name, so offset and epoch may come last.
    """
    body = message_to_dict(message)
    del body["offset"], body["epoch"]
    encoded = orjson.dumps(body)
    return encoded[:-1] + b',"offset":'


class RedisMessageStore:
    """Room history in Redis Streams (see the module docstring for the keys)."""

    def __init__(
        self,
        client_scripts: Scripts,
        client: Redis,
        keys: Keys,
        *,
        retention: timedelta | None,
        publishes: bool,
    ) -> None:
        self._scripts = client_scripts
        self._redis = Commands(client)
        self._keys = keys
        self._retention = retention
        self.publishes_on_append = publishes
        client_scripts.register("msg-append", _APPEND)
        client_scripts.register("msg-position", _POSITION)
        client_scripts.register("msg-trim", _TRIM)
        client_scripts.register("msg-scan", _SCAN)
        client_scripts.register("msg-drop", _DROP)
        client_scripts.register("msg-forget-cid", _FORGET_CID)
        # Repeated cold pages, replays and `position` decode a block once
        # (keyed by its bytes: a block deleted or damaged is never served).
        self.decoded_blocks = DecodedBlocks()
        self._blocks = RoomBlocks(client_scripts, self._redis, self._room_keys, self.decoded_blocks)

    def _room_keys(self, room_id: str) -> list[str]:
        k = self._keys
        return [
            k.key("msg-meta", room_id),
            k.key("msg-stream", room_id),
            k.key("msg-cid", room_id),
            k.key("msg-time", room_id),
            k.key("msg-blocks", room_id),
            k.key("msg-bidx", room_id),
        ]

    def _cutoff(self) -> int | None:
        return None if self._retention is None else to_micros(utcnow() - self._retention, "cutoff")

    @translated
    async def append(self, message: NewMessage, *, incarnation: str) -> tuple[Message, bool]:
        if message.room_id is None:
            raise ValueError("a stored message needs a room_id")
        timestamp = require_utc(message.timestamp, "timestamp")
        room_id = message.room_id
        cid = message.client_message_id
        draft = message.stored(timestamp=timestamp)
        cid_field = b"" if cid is None else orjson.dumps([message.user_id, cid])
        channel = self._keys.channel(room_messages(room_id)) if self.publishes_on_append else ""
        created, body = await self._scripts.run(
            "msg-append",
            [*self._room_keys(room_id), self._keys.key("msg-rooms")],
            [
                new_epoch(incarnation),
                _message_prefix(draft),
                to_micros(timestamp, "timestamp"),
                "0" if message.thread_id is None else "1",
                message.thread_id or "",
                cid_field,
                channel,
                room_id,
            ],
        )
        if created == -1:
            raise ForeignStream(room_id, body.decode())
        if created == 2:
            # The first send was compacted: its body is in a block.
            first = await self._blocks.body_at(room_id, int(body))
            if first is None:
                # Expired meanwhile: forget the client id and send anew.
                cid_key = self._keys.key("msg-cid", room_id)
                await self._scripts.run("msg-forget-cid", [cid_key], [cid_field, body])
                return await self.append(message, incarnation=incarnation)
            return decode_message(first), False
        return decode_message(body), bool(created)

    @translated
    async def find_client_message(
        self, room_id: str, user_id: str, client_message_id: str, *, incarnation: str
    ) -> Message | None:
        cid_field = orjson.dumps([user_id, client_message_id]).decode()
        offset = await self._redis.hget(self._keys.key("msg-cid", room_id), cid_field)
        if offset is None:
            return None
        stream = self._keys.key("msg-stream", room_id)
        entry_id = f"{int(offset)}-0"
        entries = await self._redis.xrange(stream, entry_id, entry_id, count=1, reverse=False)
        raw = entries[0][1][b"m"] if entries else await self._blocks.body_at(room_id, int(offset))
        if raw is None:
            return None
        message = decode_message(raw)
        return message if incarnation_of(message.epoch) == incarnation else None

    @translated
    async def page(self, room_id: str, window: HistoryWindow, *, incarnation: str) -> HistoryPage:
        """Stream entries after < id < before, filtered by retention and thread.

        Without a filter, one XRANGE (or XREVRANGE) of limit+1 entries
        answers. With one, a read-only script scans in Redis and returns only
        the matching bodies, examining at most `_SCAN_BUDGET` entries per call
        so one call never blocks Redis for long (about 2 µs per entry, 10 ms
        per call): a sparse thread in a long history costs a scan of that
        history, but only the matches cross the network. A per-thread index would make that
        O(page) at the cost of one more key per thread, kept on append, trim
        and drop; not worth it until threads are long and sparse.
        """
        limit, after, before = window.limit, window.after, window.before
        from_end, thread_id = window.from_end, window.thread_id
        low = 1 if after is None else max(after + 1, 1)
        high = None if before is None else before - 1
        if high is not None and high < low:
            return HistoryPage(messages=[], has_more=False)
        cutoff = self._cutoff()
        want = limit + 1
        for _ in range(_READ_ATTEMPTS):
            # Offsets up to the watermark are in blocks, the rest in the stream.
            upto = await self._blocks.watermark(room_id)
            cold_high = upto if high is None else min(high, upto)
            hot_low = max(low, upto + 1)
            picked: list[bytes] = []
            if not from_end:
                picked = await self._blocks.bodies(
                    room_id,
                    low,
                    cold_high,
                    descending=False,
                    want=want,
                    cutoff=cutoff,
                    thread_id=thread_id,
                )
            if len(picked) < want and (high is None or hot_low <= high):
                picked += await self._stream_bodies(
                    room_id, hot_low, high, from_end, want - len(picked), cutoff, thread_id
                )
            if from_end and len(picked) < want:
                picked += await self._blocks.bodies(
                    room_id,
                    low,
                    cold_high,
                    descending=True,
                    want=want - len(picked),
                    cutoff=cutoff,
                    thread_id=thread_id,
                )
            if await self._blocks.watermark(room_id) == upto:
                break
        else:
            raise Unavailable(f"history of room {room_id!r} kept moving while read")
        has_more = len(picked) > limit
        messages = [decode_message(raw) for raw in picked[:limit]]
        if any(incarnation_of(m.epoch) != incarnation for m in messages):
            # The stream is another incarnation's: one stream holds one.
            return HistoryPage(messages=[], has_more=False)
        if from_end:
            messages.reverse()
        return HistoryPage(messages=messages, has_more=has_more)

    async def _stream_bodies(
        self,
        room_id: str,
        low: int,
        high: int | None,
        from_end: bool,
        want: int,
        cutoff: int | None,
        thread_id: str | None,
    ) -> list[bytes]:
        stream = self._keys.key("msg-stream", room_id)
        picked: list[bytes] | None = None
        if thread_id is None:
            end = "+" if high is None else str(high)
            entries = await self._redis.xrange(stream, str(low), end, count=want, reverse=from_end)
            # Mostly nothing in a page has expired, and then this is the page;
            # else the scan below skips what has.
            if cutoff is None or all(int(fields[b"t"]) >= cutoff for _, fields in entries):
                picked = [fields[b"m"] for _, fields in entries]
        if picked is None:
            picked = []
            while len(picked) < want:
                done, bound, found = await self._scripts.run(
                    "msg-scan",
                    [stream],
                    [
                        low,
                        "+" if high is None else high,
                        "1" if from_end else "0",
                        want - len(picked),
                        "" if cutoff is None else cutoff,
                        "0" if thread_id is None else "1",
                        thread_id or "",
                        _SCAN_BUDGET,
                    ],
                )
                picked.extend(found)
                if done:
                    break
                if from_end:
                    high = int(bound)
                else:
                    low = int(bound)
        return picked

    @translated
    async def position(self, room_id: str, *, incarnation: str) -> StreamPosition:
        found = await self._scripts.run(
            "msg-position", self._room_keys(room_id), [new_epoch(incarnation)]
        )
        if found[0] == -1:
            raise ForeignStream(room_id, found[1].decode())
        _, epoch, last = found
        first = await self._first_retained(room_id)
        return StreamPosition(epoch=epoch.decode(), last_offset=int(last), first_offset=first)

    async def _first_retained(self, room_id: str) -> int:
        for _ in range(_READ_ATTEMPTS):
            upto = await self._blocks.watermark(room_id)
            first = await self._first_in_blocks(room_id, upto)
            if first is None:
                first = await self._first_in_stream(room_id, upto)
            if await self._blocks.watermark(room_id) == upto:
                return first
        raise Unavailable(f"history of room {room_id!r} kept moving while read")

    async def _first_in_blocks(self, room_id: str, upto: int) -> int | None:
        if upto == 0:
            return None
        cutoff = self._cutoff()
        async for entry in self._blocks.scan(room_id, 1, upto, descending=False):
            if cutoff is None or entry[2] >= cutoff:
                return int(entry[0])
        return None

    async def _first_in_stream(self, room_id: str, upto: int) -> int:
        stream = self._keys.key("msg-stream", room_id)
        cutoff = self._cutoff()
        start = str(upto + 1)
        # The oldest entry is usually retained (housekeeping trims the rest):
        # look at one, then at more and more while they have expired.
        batch = 1
        while True:
            entries = await self._redis.xrange(stream, start, "+", count=batch)
            for entry_id, fields in entries:
                if cutoff is None or int(fields[b"t"]) >= cutoff:
                    return int(entry_id.split(b"-")[0])
            if len(entries) < batch:
                return 0
            # Expired entries not yet trimmed lie ahead: skip past them.
            start = str(int(entries[-1][0].split(b"-")[0]) + 1)
            batch = min(batch * 2, _SCAN_MAX_BATCH)

    @translated
    async def trim(self) -> int:
        cutoff = self._cutoff()
        if cutoff is None:
            return 0
        index = self._keys.key("msg-rooms")
        removed = 0
        while True:
            rooms = await self._redis.zrangebyscore(index, "-inf", f"({cutoff}", count=100)
            if not rooms:
                return removed
            for raw_room in rooms:
                room_id = raw_room.decode()
                _, stream, cid, times, blocks, block_index = self._room_keys(room_id)
                while True:
                    seen, gone = await self._scripts.run(
                        "msg-trim",
                        [stream, cid, times, index, blocks, block_index],
                        [cutoff, _TRIM_BATCH, room_id],
                    )
                    removed += int(gone)
                    if int(seen) < _TRIM_BATCH:
                        break

    @translated
    async def drop_room(self, room_id: str, *, incarnation: str | None = None) -> None:
        await self._scripts.run(
            "msg-drop",
            [*self._room_keys(room_id), self._keys.key("msg-rooms")],
            ["0" if incarnation is None else "1", incarnation or "", room_id],
        )

    async def compact(
        self,
        *,
        older_than: timedelta,
        idempotency_window: timedelta,
        batch: int = COMPACT_BATCH,
        pause: float = 0.0,
        progress: Callable[[CompactionStats], None] | None = None,
    ) -> CompactionStats:
        """Move stream entries older than `older_than` into blocks (see
        `history_blocks`), room by room, one script per batch."""
        now = utcnow()
        before_ts = to_micros(now - older_than, "cutoff")
        client_ids_since = to_micros(now - idempotency_window, "cutoff")
        index = self._keys.key("msg-rooms")
        total = CompactionStats()
        # Rooms whose oldest stored message is older than the cutoff.
        rooms = await self._redis.zrangebyscore(index, "-inf", f"({before_ts}", count=-1)
        for raw_room in rooms:
            room_id = raw_room.decode()
            more = True
            while more:
                started = time.perf_counter()
                stats, more = await self._translated_compact(
                    room_id, index, before_ts, client_ids_since, batch
                )
                stats.seconds = time.perf_counter() - started
                total.add(stats)
                if stats.messages and progress is not None:
                    progress(total)
                if more and pause:
                    await asyncio.sleep(pause)
        return total

    @translated
    async def _translated_compact(
        self, room_id: str, index: str, before_ts: int, client_ids_since: int, batch: int
    ) -> tuple[CompactionStats, bool]:
        return await self._blocks.compact_room(
            room_id,
            index,
            before_ts=before_ts,
            client_ids_since=client_ids_since,
            max_messages=batch,
        )

    async def close(self) -> None:
        return None
