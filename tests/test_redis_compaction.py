"""The Redis store's compressed blocks (backends/redis/history_blocks.py)
under retention, room deletion and the idempotency window."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from backends.records import HistoryWindow, Message
from backends.redis.backend import delete_namespace, open_stores
from backends.redis.messages import RedisMessageStore
from tests.compaction_corpus import INC, OTHER, ROOM, assert_window_kept, everything, message
from tests.conftest import require_service


class Stores:
    def __init__(self, url: str) -> None:
        self.url = url
        self.namespace = url.split("namespace=")[1]
        self.opened: list[Any] = []
        # redis-py types replies as unions over every protocol; these are RESP2 bytes.
        self.redis: Any = Redis(host="127.0.0.1", port=6379)

    async def store(self, retention: timedelta | None = None) -> RedisMessageStore:
        opened = await open_stores(self.url, ["messages"], retention=retention)
        self.opened.append(opened)
        store = opened.messages
        if not isinstance(store, RedisMessageStore):
            raise TypeError(type(store).__name__)
        return store

    async def keys(self, kind: str) -> list[bytes]:
        return [k async for k in self.redis.scan_iter(match=f"{self.namespace}:{kind}:*")]


@pytest.fixture
async def stores() -> AsyncIterator[Stores]:
    require_service("Redis", 6379)
    made = Stores(f"redis://127.0.0.1:6379/0?namespace=t{uuid4().hex[:12]}")
    yield made
    for opened in made.opened:
        await opened.close()
    await delete_namespace(made.url)
    await made.redis.aclose()


async def fill(store: RedisMessageStore, count: int, *, room: str = ROOM) -> None:
    # One at a time: message i gets offset i + 1 (concurrent sends on a pool
    # of connections may arrive in another order).
    for i in range(count):
        await store.append(message(i, room=room, minutes_ago=10_000 - i), incarnation=INC)


async def test_retention_deletes_whole_blocks_and_skips_the_expired_in_the_edge_one(
    stores: Stores,
) -> None:
    store = await stores.store()
    await fill(store, 1200)
    kept = await everything(store)
    stats = await store.compact(
        older_than=timedelta(hours=1), idempotency_window=timedelta(days=30), batch=1200
    )
    assert stats.messages == 1200 and stats.blocks == 5  # 256 a block
    assert await stores.redis.xlen(f"{stores.namespace}:msg-stream:{ROOM}") == 0
    assert await everything(store) == kept

    # Messages 0..600 expire (the newest of them 9,400 minutes old): blocks
    # 1-256 and 257-512 go whole, 513-768 holds both and stays.
    trimmed = await stores.store(timedelta(minutes=9_399.5))
    assert await trimmed.trim() == 512
    assert await everything(trimmed) == kept[601:]
    position = await trimmed.position(ROOM, incarnation=INC)
    assert position.first_offset == kept[601].offset
    index = await stores.redis.zrange(f"{stores.namespace}:msg-bidx:{ROOM}", 0, -1)
    assert [m.split(b":")[0] for m in index] == [b"513", b"769", b"1025"]
    # The deleted blocks' client ids went with them; the kept ones still answer.
    assert await trimmed.find_client_message(ROOM, "user1", "c8", incarnation=INC) is None
    found = await trimmed.find_client_message(ROOM, "user0", "c700", incarnation=INC)
    assert found == kept[700]
    # Trimming again finds nothing and ends (the room is scored by its next expiry).
    assert await trimmed.trim() == 0


async def test_drop_room_drops_its_blocks(stores: Stores) -> None:
    store = await stores.store()
    await fill(store, 300)
    await fill(store, 50, room=OTHER)
    other = await everything(store, OTHER)
    await store.compact(older_than=timedelta(hours=1), idempotency_window=timedelta(days=1))
    assert len(await stores.keys("msg-blocks")) == 2
    await store.drop_room(ROOM)
    for kind in ("msg-blocks", "msg-bidx", "msg-stream"):
        assert [k.decode().rsplit(":", 1)[1] for k in await stores.keys(kind)] == [OTHER], kind
    assert await everything(store) == []
    assert await everything(store, OTHER) == other
    # A new history of the room starts from offset 1, with no old block in it.
    again, created = await store.append(message(0), incarnation=INC)
    assert created and again.offset == 1
    assert [m.data for m in await everything(store)] == [again.data]


async def test_client_message_ids_stay_idempotent_for_the_window(stores: Stores) -> None:
    store = await stores.store()
    await fill(store, 20)
    first = await everything(store)
    # Sent 10,000 - i minutes ago: a window of 9,995 minutes keeps c6..c19.
    await store.compact(older_than=timedelta(hours=1), idempotency_window=timedelta(minutes=9_995))
    assert await stores.redis.xlen(f"{stores.namespace}:msg-stream:{ROOM}") == 0
    await assert_window_kept(store, first)


async def test_a_damaged_block_is_data_corrupted_naming_room_and_block(stores: Stores) -> None:
    from backends.errors import DataCorrupted

    store = await stores.store()
    await fill(store, 30)
    await store.compact(older_than=timedelta(hours=1), idempotency_window=timedelta(days=1))
    key = f"{stores.namespace}:msg-blocks:{ROOM}"
    blob = await stores.redis.hget(key, "30")
    assert blob is not None
    await stores.redis.hset(key, "30", blob[:20] + bytes(8) + blob[28:])
    with pytest.raises(DataCorrupted, match=r"room 'room-1' block 30: .*Zstd"):
        await everything(store)


async def pages(store: RedisMessageStore, window: HistoryWindow) -> list[list[Message]]:
    """Every page from the window on, following the edges as a client does."""
    out: list[list[Message]] = []
    while True:
        page = await store.page(ROOM, window, incarnation=INC)
        out.append(page.messages)
        if not page.has_more or not page.messages:
            return out
        if window.from_end:
            window = HistoryWindow(
                limit=window.limit,
                before=page.messages[0].offset,
                from_end=True,
                thread_id=window.thread_id,
            )
        else:
            window = HistoryWindow(
                limit=window.limit, after=page.messages[-1].offset, thread_id=window.thread_id
            )


async def test_pages_across_many_blocks_and_the_stream_read_the_same(stores: Stores) -> None:
    store = await stores.store()
    await fill(store, 1500)
    # 300 more, 10 minutes old, stay in the stream: compaction stops at the
    # first entry younger than `older_than`.
    for i in range(300):
        await store.append(message(1500 + i, minutes_ago=10), incarnation=INC)
    windows = [
        HistoryWindow(limit=50),
        HistoryWindow(limit=50, from_end=True),
        HistoryWindow(limit=7, from_end=True, thread_id="t"),
        HistoryWindow(limit=33, after=100, thread_id="t"),
        HistoryWindow(limit=40, before=1700, from_end=True),
    ]
    before = [await pages(store, w) for w in windows]
    stats = await store.compact(older_than=timedelta(hours=1), idempotency_window=timedelta(0))
    assert stats.messages == 1500 and stats.blocks == 6
    assert await stores.redis.xlen(f"{stores.namespace}:msg-stream:{ROOM}") == 300
    assert [await pages(store, w) for w in windows] == before
