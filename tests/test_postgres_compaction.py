"""The PostgreSQL store's compressed blocks (backends/postgres/blocks.py)
under retention, room deletion, the idempotency window, search, two
compactions at once, and the size of the history tables. Each test has a
schema of its own in the session's private cluster."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from uuid import uuid4

import pytest

from backends import blocks
from backends.errors import DataCorrupted
from backends.postgres import delete_namespace
from backends.postgres.backend import open_database
from backends.postgres.database import PostgresDatabase
from backends.postgres.messages import PostgresMessageStore
from backends.postgres.search import PostgresMessageSearch
from backends.records import HistoryPage, HistoryWindow
from backends.search_query import (
    Phrase,
    RoomScope,
    SearchOrder,
    SearchRequest,
    Term,
    TextMatch,
)
from tests.compaction_corpus import (
    INC,
    OTHER,
    ROOM,
    everything,
    fill,
    message,
    retention_cuts_inside_a_block,
)


@pytest.fixture
async def db(postgres_cluster: str) -> AsyncIterator[PostgresDatabase]:
    url = f"{postgres_cluster}?schema=c{uuid4().hex[:12]}"
    opened = await open_database(url)
    yield opened
    await opened.close()
    await delete_namespace(url)


async def count(db: PostgresDatabase, sql: str) -> int:
    row = await db.fetchrow(sql)
    assert row is not None
    return int(row[0] or 0)


async def stored_offsets(db: PostgresDatabase, room: str = ROOM) -> list[int]:
    """The room's offsets in rows and in (decoded) blocks, duplicates kept."""
    rows = await db.fetch("SELECT seq FROM messages WHERE room_id = $1", room)
    dicts = {r[0]: bytes(r[1]) for r in await db.fetch("SELECT id, body FROM block_dicts")}
    found = [int(r[0]) for r in rows]
    for body, dict_id in await db.fetch(
        "SELECT body, dict_id FROM message_blocks WHERE room_id = $1", room
    ):
        found += [e[0] for e in blocks.unpack(bytes(body), dicts.get(dict_id))]
    return sorted(found)


async def compact_all(store: PostgresMessageStore, window: timedelta = timedelta(days=30)) -> int:
    stats = await store.compact(older_than=timedelta(hours=1), idempotency_window=window)
    return stats.messages


async def test_every_page_is_the_same_after_compaction(db: PostgresDatabase) -> None:
    store = PostgresMessageStore(db, indexed=True)
    await fill(store, 700, concurrently=False)
    # Newer than the cut: stays in rows, read after the blocks.
    for i in range(700, 710):
        await store.append(message(i), incarnation=INC)
    windows = [
        HistoryWindow(limit=50),
        HistoryWindow(limit=7, from_end=True),
        HistoryWindow(limit=30, after=100, before=650),
        HistoryWindow(limit=20, thread_id="t"),
        HistoryWindow(limit=20, thread_id="t", from_end=True, before=705),
        HistoryWindow(limit=300, after=690),
    ]

    async def read_all() -> list[HistoryPage]:
        return [await store.page(ROOM, w, incarnation=INC) for w in windows]

    before = await read_all()
    whole = await everything(store)
    position = await store.position(ROOM, incarnation=INC)
    assert await compact_all(store) == 700
    assert await count(db, "SELECT COUNT(*) FROM messages") == 10
    assert await count(db, "SELECT MAX(compacted_upto) FROM streams") == 700
    assert await read_all() == before
    assert await everything(store) == whole
    assert await store.position(ROOM, incarnation=INC) == position


async def test_retention_rewrites_the_edge_block_and_retires_its_dictionary(
    db: PostgresDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    await retention_cuts_inside_a_block(
        monkeypatch,
        PostgresMessageStore(db, indexed=True),
        PostgresMessageStore(db, timedelta(minutes=9_399.5), indexed=True),
        lambda sql: count(db, sql),
        concurrently=False,
    )


async def test_drop_room_drops_its_blocks(db: PostgresDatabase) -> None:
    store = PostgresMessageStore(db, indexed=True)
    await fill(store, 300, concurrently=False)
    await fill(store, 50, room=OTHER, concurrently=False)
    other = await everything(store, OTHER)
    await compact_all(store, timedelta(days=1))
    await store.drop_room(ROOM)
    for table in ("message_blocks", "block_dicts", "compacted_client_ids", "compacted_messages"):
        rooms = [r[0] for r in await db.fetch(f"SELECT DISTINCT room_id FROM {table}")]
        assert rooms in ([OTHER], []), table
    assert await everything(store) == []
    assert await everything(store, OTHER) == other


async def test_client_message_ids_stay_idempotent_for_the_window(db: PostgresDatabase) -> None:
    store = PostgresMessageStore(db, indexed=True)
    await fill(store, 20, concurrently=False)
    first = await everything(store)
    # Sent 10,000 - i minutes ago: a window of 9,995 minutes keeps c6..c19.
    await compact_all(store, timedelta(minutes=9_995))
    assert await count(db, "SELECT COUNT(*) FROM messages") == 0
    assert await count(db, "SELECT COUNT(*) FROM compacted_client_ids") == 14
    again, created = await store.append(message(8), incarnation=INC)
    assert (again, created) == (first[8], False)
    found = await store.find_client_message(ROOM, "user1", "c8", incarnation=INC)
    assert found == first[8]
    assert await store.find_client_message(ROOM, "user1", "c8", incarnation="other") is None
    # Past the window: a send with an old key is a new message.
    late, created = await store.append(message(2), incarnation=INC)
    assert created and late.offset == 21


async def test_search_finds_the_same_after_compaction(db: PostgresDatabase) -> None:
    store = PostgresMessageStore(db, indexed=True)
    search = await PostgresMessageSearch.open(db, None, with_messages=True)
    await fill(store, 400, concurrently=False)
    matches: list[tuple[Term | Phrase, ...]] = [
        (Term("deploy"),),
        (Term("coffee"), Term("ship")),
        (Phrase(("review", "coffee")),),
        (Term("mer", prefix=True),),
    ]
    requests = [
        SearchRequest(
            match=TextMatch(required=m),
            rooms=(RoomScope(ROOM, INC),),
            limit=25,
            order=order,
            thread_id=thread,
            user_ids=users,
        )
        for m in matches
        for order in (SearchOrder.NEWEST, SearchOrder.RELEVANCE)
        for thread, users in ((None, None), ("t", None), (None, frozenset({"user3"})))
    ]
    before = [await search.search(r) for r in requests]
    assert sum(len(p.hits) for p in before) > 100
    assert await compact_all(store) == 400
    assert await count(db, "SELECT COUNT(*) FROM messages") == 0
    assert [await search.search(r) for r in requests] == before


async def test_two_compactions_at_once_write_each_block_once(db: PostgresDatabase) -> None:
    store = PostgresMessageStore(db, indexed=True)
    await fill(store, 600, concurrently=False)
    whole = await everything(store)
    other = PostgresMessageStore(db, indexed=True)  # as another node would
    done = await asyncio.gather(
        *(
            s.compact(older_than=timedelta(hours=1), idempotency_window=timedelta(days=1), batch=50)
            for s in (store, other, store)
        )
    )
    assert sum(d.messages for d in done) == 600
    assert await stored_offsets(db) == list(range(1, 601))
    assert await everything(store) == whole


async def test_a_block_that_does_not_decode_is_data_corrupted(db: PostgresDatabase) -> None:
    store = PostgresMessageStore(db, indexed=True)
    await fill(store, 30, concurrently=False)
    await fill(store, 30, room=OTHER, concurrently=False)
    other = await everything(store, OTHER)
    await compact_all(store)
    block = await count(db, f"SELECT id FROM message_blocks WHERE room_id = '{ROOM}'")
    await db.execute(
        "UPDATE message_blocks SET body = overlay(body placing '\\x0000000000000000'::bytea"
        " from 21) WHERE id = $1",
        block,
    )
    reader = PostgresMessageStore(db)  # nothing cached
    with pytest.raises(DataCorrupted, match=f"room '{ROOM}' block {block}: Zstd"):
        await reader.page(ROOM, HistoryWindow(limit=10), incarnation=INC)
    assert await everything(reader, OTHER) == other


async def test_compaction_makes_the_history_tables_smaller(db: PostgresDatabase) -> None:
    store = PostgresMessageStore(db, indexed=False)
    await fill(store, 3000, concurrently=False)
    size = (
        "SELECT pg_total_relation_size('messages') + pg_total_relation_size('message_blocks')"
        " + pg_total_relation_size('compacted_client_ids')"
    )
    await db.execute("VACUUM FULL messages")
    before = await count(db, size)
    await compact_all(store, timedelta(0))
    # VACUUM FULL gives the freed pages back (a plain VACUUM keeps them for reuse).
    await db.execute("VACUUM FULL messages")
    assert await count(db, size) * 3 < before
