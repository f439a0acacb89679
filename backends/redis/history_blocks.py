"""Old entries of a room's stream packed into compressed blocks (format:
backends/blocks.py; no dictionary here: blocks of 256 chat messages come out
the same size with one, see blocks.py).

Keys of a room, besides those in `messages`:

    msg-blocks:<room>  HASH  "<last offset>" -> block bytes; "c<last offset>" ->
                             JSON [[client-id field, offset], ...] of the
                             block's messages still in their idempotency window
    msg-bidx:<room>    ZSET  "<first>:<last>:<min ts>:<last ts>:<count>" scored
                             by the block's last offset

and `compacted` in the meta hash: the watermark. Offsets up to it are in
blocks, those after it in the stream. One script (`COMPACT`) writes a batch's
blocks, trims those entries off the stream and moves the watermark, after
checking that the stream is still what was read (same epoch, watermark and
entries); so a compaction killed at any point leaves either the entries or
the blocks, never both or neither. Readers take the watermark, read blocks
below it and the stream above it, and read again if it moved meanwhile.

A block entry is [offset, message JSON, timestamp µs, thread id or None].
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import orjson

from ..blocks import BlockUnreadable, Body, pack, split, unpack
from ..compaction import CompactionStats
from ..decoded_blocks import DecodedBlocks
from ..errors import DataCorrupted
from .common import Commands, Scripts

__all__ = ["COMPACT", "BlockRef", "RoomBlocks"]

E_OFFSET, E_BODY, E_TS, E_THREAD = 0, 1, 2, 3
_REFS_AT_ONCE: Final = 4

# KEYS: meta, stream, cid, time, blocks, block index, rooms index
# ARGV: epoch read, watermark read, first, last, count, room id, how many
#       client ids to forget, then (field, offset) of each, then per block:
#       last offset, index member, bytes, client ids JSON ('' for none),
#       last timestamp
COMPACT: Final = """
local epoch = redis.call('HGET', KEYS[1], 'epoch') or ''
local upto = redis.call('HGET', KEYS[1], 'compacted') or '0'
if epoch ~= ARGV[1] or upto ~= ARGV[2] then return 0 end
local first, last, count = ARGV[3], ARGV[4], tonumber(ARGV[5])
local present = redis.call('XRANGE', KEYS[2], first .. '-0', last .. '-0')
if #present ~= count then return 0 end
local i = 8
for _ = 1, tonumber(ARGV[7]) do
  if redis.call('HGET', KEYS[3], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[3], ARGV[i])
  end
  i = i + 2
end
local oldest = nil
while i <= #ARGV do
  redis.call('HSET', KEYS[5], ARGV[i], ARGV[i + 2])
  if ARGV[i + 3] ~= '' then redis.call('HSET', KEYS[5], 'c' .. ARGV[i], ARGV[i + 3]) end
  redis.call('ZADD', KEYS[6], ARGV[i], ARGV[i + 1])
  local ts = tonumber(ARGV[i + 4])
  if not oldest or ts < oldest then oldest = ts end
  i = i + 5
end
for _, entry in ipairs(present) do
  redis.call('ZREM', KEYS[4], string.match(entry[1], '^(%d+)'))
end
redis.call('XTRIM', KEYS[2], 'MINID', string.format('%d', tonumber(last) + 1) .. '-0')
redis.call('HSET', KEYS[1], 'compacted', last)
redis.call('ZADD', KEYS[7], 'LT', string.format('%d', oldest), ARGV[6])
return 1
"""

# Part of the trim script (KEYS[5] blocks, KEYS[6] block index, ARGV[1] the
# cutoff): deletes the blocks all of whose messages have expired and their
# client ids, and leaves in `block_due` when the next block expires. An edge
# block (some expired) stays whole until all have: reads skip the expired.
TRIM_BLOCKS: Final = """
local block_due = nil
local blocks_removed = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[6], 0, -1)) do
  local _, block_last, _, last_ts, count = string.match(
    member, '^(%d+):(%d+):(%d+):(%d+):(%d+)$')
  if tonumber(last_ts) < tonumber(ARGV[1]) then
    local cids = redis.call('HGET', KEYS[5], 'c' .. block_last)
    if cids then
      for _, pair in ipairs(cjson.decode(cids)) do
        if redis.call('HGET', KEYS[2], pair[1]) == pair[2] then
          redis.call('HDEL', KEYS[2], pair[1])
        end
      end
    end
    redis.call('HDEL', KEYS[5], block_last, 'c' .. block_last)
    redis.call('ZREM', KEYS[6], member)
    blocks_removed = blocks_removed + tonumber(count)
  elseif not block_due or tonumber(last_ts) < block_due then
    block_due = tonumber(last_ts)
  end
end
"""


@dataclass(frozen=True, slots=True)
class BlockRef:
    first: int
    last: int
    min_ts: int
    last_ts: int
    count: int

    @classmethod
    def parse(cls, member: bytes) -> BlockRef:
        first, last, min_ts, last_ts, count = (int(p) for p in member.split(b":"))
        return cls(first, last, min_ts, last_ts, count)

    def member(self) -> str:
        return f"{self.first}:{self.last}:{self.min_ts}:{self.last_ts}:{self.count}"


class RoomBlocks:
    """Reads and writes the blocks of rooms (see the module docstring)."""

    def __init__(
        self, scripts: Scripts, commands: Commands, keys_of: Any, decoded: DecodedBlocks
    ) -> None:
        self._scripts = scripts
        self._redis = commands
        # room id -> [meta, stream, cid, time, blocks, block index]
        self._keys_of = keys_of
        self._decoded = decoded
        scripts.register("msg-compact", COMPACT)

    async def watermark(self, room_id: str) -> int:
        found = await self._redis.hget(self._keys_of(room_id)[0], "compacted")
        return 0 if found is None else int(found)

    async def _refs(
        self, room_id: str, low: int, high: int, descending: bool
    ) -> AsyncIterator[BlockRef]:
        """The blocks holding offsets in low..high, in reading order, a few
        index entries at a time (a page needs one or two blocks of many)."""
        index = self._keys_of(room_id)[5]
        client = self._redis.client
        if descending:
            # The block holding `high` is the first whose last offset >= high;
            # those before it all start below high.
            edge = await client.zrangebyscore(index, high, "+inf", start=0, num=1)
            for member in cast("list[bytes]", edge):
                ref = BlockRef.parse(member)
                if ref.first <= high:
                    yield ref
        # From the last block seen on, by score (not by rank: retention may
        # delete blocks meanwhile).
        bound = f"({high}" if descending else str(low)
        while True:
            if descending:
                found = await client.zrevrangebyscore(index, bound, low, start=0, num=_REFS_AT_ONCE)
            else:
                found = await client.zrangebyscore(index, bound, "+inf", start=0, num=_REFS_AT_ONCE)
            members = cast("list[bytes]", found)
            for member in members:
                ref = BlockRef.parse(member)
                if ref.first > high:
                    return
                if ref.last >= low:
                    yield ref
                bound = f"({ref.last}"
            if len(members) < _REFS_AT_ONCE:
                return

    async def entries(self, room_id: str, ref: BlockRef) -> list[Body]:
        blob = await self._redis.hget(self._keys_of(room_id)[4], str(ref.last))
        if blob is None:
            raise DataCorrupted(room_id, ref.last, "block missing")
        try:
            return self._decoded.entries((room_id, ref.last), blob, _unpack)
        except BlockUnreadable as exc:
            raise DataCorrupted(room_id, ref.last, str(exc)) from None

    async def scan(
        self, room_id: str, low: int, high: int, *, descending: bool
    ) -> AsyncIterator[Body]:
        """The block entries with low <= offset <= high, in reading order."""
        async for ref in self._refs(room_id, low, high, descending):
            entries = await self.entries(room_id, ref)
            for entry in reversed(entries) if descending else entries:
                if low <= entry[E_OFFSET] <= high:
                    yield entry

    async def bodies(
        self,
        room_id: str,
        low: int,
        high: int,
        *,
        descending: bool,
        want: int,
        cutoff: int | None,
        thread_id: str | None,
    ) -> list[bytes]:
        """Up to `want` message JSON texts from the blocks, filtered like the stream's."""
        picked: list[bytes] = []
        if want <= 0 or high < low:
            return picked
        async for entry in self.scan(room_id, low, high, descending=descending):
            if (cutoff is None or entry[E_TS] >= cutoff) and (
                thread_id is None or entry[E_THREAD] == thread_id
            ):
                picked.append(entry[E_BODY].encode())
                if len(picked) >= want:
                    break
        return picked

    async def body_at(self, room_id: str, offset: int) -> bytes | None:
        async for entry in self.scan(room_id, offset, offset, descending=False):
            return cast("str", entry[E_BODY]).encode()
        return None

    async def compact_room(
        self,
        room_id: str,
        rooms_index: str,
        *,
        before_ts: int,
        client_ids_since: int,
        max_messages: int,
    ) -> tuple[CompactionStats, bool]:
        """Move up to `max_messages` of the room's oldest stream entries
        stamped before `before_ts` into blocks; True if more may be left."""
        keys = self._keys_of(room_id)
        meta = await self._redis.client.hmget(keys[0], ["epoch", "compacted"])
        epoch, upto = cast("list[bytes | None]", meta)
        if epoch is None:
            return CompactionStats(), False
        watermark = 0 if upto is None else int(upto)
        entries = await self._redis.xrange(keys[1], str(watermark + 1), "+", count=max_messages)
        bodies: list[Body] = []
        cids: list[tuple[bytes, int, int]] = []
        for entry_id, fields in entries:
            ts = int(fields[b"t"])
            if ts >= before_ts:
                break
            offset = int(entry_id.split(b"-")[0])
            thread = fields.get(b"h")
            bodies.append([offset, fields[b"m"].decode(), ts, thread and thread.decode()])
            if b"c" in fields:
                cids.append((fields[b"c"], offset, ts))
        if not bodies:
            return CompactionStats(), False
        groups = split(bodies)
        blobs = await asyncio.to_thread(lambda: [pack(g) for g in groups])
        forget = [(c, o) for c, o, ts in cids if ts < client_ids_since]
        args: list[Any] = [
            epoch,
            watermark,
            bodies[0][E_OFFSET],
            bodies[-1][E_OFFSET],
            len(bodies),
            room_id,
            len(forget),
        ]
        for field, offset in forget:
            args += [field, offset]
        kept = {o: c for c, o, ts in cids if ts >= client_ids_since}
        for group, blob in zip(groups, blobs, strict=True):
            ref = _ref(group)
            group_cids = [[kept[e[0]].decode(), str(e[0])] for e in group if e[0] in kept]
            args += [
                ref.last,
                ref.member(),
                blob,
                orjson.dumps(group_cids) if group_cids else "",
                ref.last_ts,
            ]
        done = await self._scripts.run("msg-compact", [*keys, rooms_index], args)
        if not done:
            return CompactionStats(), True  # changed meanwhile: read again
        stats = CompactionStats(
            messages=len(bodies),
            blocks=len(groups),
            bytes_before=sum(_entry_bytes(fields) for _, fields in entries[: len(bodies)]),
            bytes_after=sum(len(b) for b in blobs),
        )
        return stats, len(bodies) == max_messages


def _unpack(blob: bytes) -> list[Body]:
    return unpack(blob, None)  # no dictionaries in Redis (module docstring)


def _ref(group: Sequence[Body]) -> BlockRef:
    return BlockRef(
        first=group[0][E_OFFSET],
        last=group[-1][E_OFFSET],
        min_ts=min(e[E_TS] for e in group),
        last_ts=max(e[E_TS] for e in group),
        count=len(group),
    )


def _entry_bytes(fields: dict[bytes, bytes]) -> int:
    return sum(len(k) + len(v) for k, v in fields.items())
