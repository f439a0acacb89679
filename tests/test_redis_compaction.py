"""The Redis store's compressed blocks (backends/redis/history_blocks.py)
under retention, room deletion and the idempotency window."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from redis.asyncio import Redis

from backends.decoded_blocks import DecodedBlocks
from backends.records import HistoryWindow, Message, Room
from backends.redis.backend import delete_namespace, open_stores
from backends.redis.messages import RedisMessageStore
from backends.reindex import reindex
from backends.search_query import RoomScope, SearchRequest
from backends.sqlite_backend import open_stores as open_sqlite
from resolvers.search_syntax import parse_query
from tests.compaction_corpus import INC, OTHER, ROOM, assert_window_kept, everything, message
from tests.conftest import require_service
from tests.live import LiveServer, unique, ws_connect
from tests.test_compaction import (
    CREATE,
    HISTORY,
    JOIN,
    SETTINGS,
    Http,
    _namespace,
    compact,
    forget,
    on_backend,
    whole_history,
)
from tests.test_compaction import fill as fill_over_http


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


async def test_a_damaged_block_over_the_wire_is_data_corrupted_and_other_rooms_read(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    live = LiveServer(tmp_path / "data", on_backend(request, "redis", SETTINGS)).start()
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            alice = Http(live.client(unique("alice")), http)
            bob = Http(live.client(unique("bob")), http)
            damaged, fine = unique("room"), unique("room")
            for room in (damaged, fine):
                await alice.execute(CREATE, id=room)
                await bob.execute(JOIN, id=room)
                await fill_over_http(alice, bob, room, 30)
            compact(live)
            # Read once from the blocks: the server keeps them decoded.
            fine_before = await whole_history(alice, fine)
            assert len(await whole_history(alice, damaged)) == 32  # and the two JOINs
            key = f"{_namespace(live)}:msg-blocks:{damaged}"
            stores: Any = Redis(host="127.0.0.1", port=6379)  # RESP2 bytes
            try:
                (field,) = [f for f in await stores.hkeys(key) if not f.startswith(b"c")]
                blob = await stores.hget(key, field)
                await stores.hset(key, field, blob[:20] + bytes(8) + blob[28:])
            finally:
                await stores.aclose()
            mark = f"room {damaged!r} block {int(field)}"

            body = (await alice.post(HISTORY, room=damaged, first=10)).json()
            assert body["data"] is None or body["data"]["history"] is None
            assert [e["extensions"]["code"] for e in body["errors"]] == ["DATA_CORRUPTED"]
            assert "room" not in body["errors"][0]["message"]  # the detail is the log's
            logged = [line for line in live.log().splitlines() if mark in line]
            assert len(logged) == 1 and "Zstd" in logged[0], logged

            async with ws_connect(live, alice.token) as ws:
                op = await ws.subscribe(HISTORY, room=damaged, last=10)
                frame = await op.frame()
            assert frame["type"] == "next", frame
            errors = frame["payload"]["errors"]
            assert [e["extensions"]["code"] for e in errors] == ["DATA_CORRUPTED"]
            assert len([line for line in live.log().splitlines() if mark in line]) == 2

            assert await whole_history(alice, fine) == fine_before
        live.assert_no_traceback()
    finally:
        live.stop()
        await forget(live)


async def test_decoded_blocks_are_reused_and_never_served_stale(stores: Stores) -> None:
    store = await stores.store()
    await fill(store, 600)
    await store.compact(older_than=timedelta(hours=1), idempotency_window=timedelta(0))
    decoded = store.decoded_blocks
    first = await everything(store)  # pages of 200 across blocks of 256
    assert decoded.decoded == 3
    assert await everything(store) == first
    assert decoded.decoded == 3  # all from the cache
    # The room deleted and made again: blocks of the same names (offsets),
    # other bytes, read as they are now.
    await store.drop_room(ROOM)
    for i in range(600):
        await store.append(message(5000 + i, minutes_ago=10_000 - i), incarnation=INC)
    await store.compact(older_than=timedelta(hours=1), idempotency_window=timedelta(0))
    again = await everything(store)
    assert [m.offset for m in again] == [m.offset for m in first]
    assert [m.data["text"].split()[-1] for m in again] == [str(5000 + i) for i in range(600)]
    assert decoded.decoded == 6
    assert again == await everything(await stores.store())  # a cold store reads the same


def test_decoded_blocks_stay_within_their_bytes() -> None:
    cache = DecodedBlocks(max_bytes=10_000)
    block = [[i, "x" * 100, i, None] for i in range(30)]  # 30 times 300 estimated bytes
    calls: list[bytes] = []

    def decode(blob: bytes) -> list[Any]:
        calls.append(blob)
        return block

    for name in ("a", "b", "c"):
        assert cache.entries(name, name.encode(), decode) is block
    assert 0 < cache.size <= 10_000
    cache.entries("c", b"c", decode)  # the one that fits: kept
    assert calls == [b"a", b"b", b"c"]
    cache.entries("b", b"b", decode)  # gone when "c" came
    cache.entries("b", b"b2", decode)  # the same name with other bytes: another block
    assert calls == [b"a", b"b", b"c", b"b", b"b2"]
    assert cache.decoded == 5


async def test_reindex_reads_the_messages_compacted_before_it(
    stores: Stores, tmp_path: Path
) -> None:
    # History on Redis, search in a SQLite file that was down for these
    # sends: nothing indexed them, and compaction packed them into blocks.
    opened = await open_stores(stores.url, ["messages", "rooms"], retention=None)
    stores.opened.append(opened)
    assert opened.messages is not None and opened.rooms is not None
    await opened.rooms.create(Room(id=ROOM, name="Room", owner="user0", incarnation=INC))
    for i in range(300):
        await opened.messages.append(message(i, minutes_ago=10_000 - i), incarnation=INC)
    await opened.messages.append(message(300), incarnation=INC)  # stays in the stream
    compactor = opened.messages
    assert isinstance(compactor, RedisMessageStore)
    stats = await compactor.compact(older_than=timedelta(hours=1), idempotency_window=timedelta(0))
    assert stats.messages == 300
    index = await open_sqlite(f"sqlite:///{tmp_path / 'search.db'}", ["search"], retention=None)
    try:
        assert index.search is not None
        counts = await reindex(opened.rooms, opened.messages, index.search)
        assert (counts.rooms, counts.messages) == (1, 301)
        request = SearchRequest(
            match=parse_query("deploy").match, rooms=(RoomScope(ROOM, INC),), limit=400
        )
        page = await index.search.search(request)
        history = await everything(compactor)
        expected = [m for m in reversed(history) if "deploy" in m.data["text"].split()]
        assert [h.message for h in page.hits] == expected
    finally:
        await index.close()
