"""The SQLite store's compressed blocks (backends/sqlite_blocks.py) under
retention, room deletion, the idempotency window, and the file's size."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from backends.errors import DataCorrupted
from backends.records import Message
from backends.search_query import RoomScope, SearchRequest
from backends.sqlite import SqliteDatabase, SqliteMessageStore
from backends.sqlite_search import SqliteMessageSearch
from resolvers.search_syntax import parse_query
from tests.compaction_corpus import (
    INC,
    OTHER,
    ROOM,
    assert_window_kept,
    everything,
    fill,
    message,
    retention_cuts_inside_a_block,
)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    opened = await SqliteDatabase.open(tmp_path / "forge.db")
    yield opened
    await opened.close()


async def count(db: SqliteDatabase, sql: str) -> int:
    return int((await db.fetch(sql))[0][0])


async def test_retention_rewrites_the_edge_block_and_retires_its_dictionary(
    db: SqliteDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    await retention_cuts_inside_a_block(
        monkeypatch,
        SqliteMessageStore(db, indexed=True),
        SqliteMessageStore(db, timedelta(minutes=9_399.5), indexed=True),
        lambda sql: count(db, sql),
    )


async def test_drop_room_drops_its_blocks(db: SqliteDatabase) -> None:
    store = SqliteMessageStore(db, indexed=True)
    await fill(store, 300)
    await fill(store, 50, room=OTHER)
    other = await everything(store, OTHER)
    await store.compact(older_than=timedelta(hours=1), idempotency_window=timedelta(days=1))
    await store.drop_room(ROOM)
    for table in ("message_blocks", "compacted_client_ids", "compacted_messages"):
        rooms = await db.fetch(f"SELECT DISTINCT room_id FROM {table}")
        assert rooms in ([(OTHER,)], []), table
    assert await everything(store) == []
    assert await everything(store, OTHER) == other


async def test_client_message_ids_stay_idempotent_for_the_window(db: SqliteDatabase) -> None:
    store = SqliteMessageStore(db, indexed=True)
    await fill(store, 20)
    first = await everything(store)
    # Sent 10,000 - i minutes ago: a window of 9,995 minutes keeps c6..c19.
    await store.compact(older_than=timedelta(hours=1), idempotency_window=timedelta(minutes=9_995))
    assert await count(db, "SELECT COUNT(*) FROM messages") == 0
    await assert_window_kept(store, first)


async def test_compaction_gives_the_space_back(db: SqliteDatabase) -> None:
    store = SqliteMessageStore(db, indexed=False)
    await fill(store, 3000)
    used = (
        "SELECT (SELECT page_count FROM pragma_page_count)"
        " - (SELECT freelist_count FROM pragma_freelist_count)"
    )
    pages_before = await count(db, "SELECT page_count FROM pragma_page_count")
    used_before = await count(db, used)
    await store.compact(older_than=timedelta(hours=1), idempotency_window=timedelta(0))
    assert await count(db, used) * 3 < used_before
    # auto_vacuum = INCREMENTAL: the freed pages left the file.
    assert await count(db, "SELECT page_count FROM pragma_page_count") * 2 < pages_before
    assert await count(db, "SELECT freelist_count FROM pragma_freelist_count") < 50


def deploy_search(rooms: tuple[str, ...] = (ROOM,), limit: int = 100) -> SearchRequest:
    return SearchRequest(
        match=parse_query("deploy").match,
        rooms=tuple(RoomScope(r, INC) for r in rooms),
        limit=limit,
    )


def with_deploy(messages: list[Message]) -> list[Message]:
    """The messages with the word, newest first (as the search answers)."""
    return [m for m in reversed(messages) if "deploy" in m.data["text"].split()]


async def test_messages_compacted_while_search_was_elsewhere_are_indexed_when_it_returns(
    db: SqliteDatabase,
) -> None:
    # History on this file, search on another: appends are not indexed here,
    # and compaction writes no search key rows.
    await db.appending_unindexed()
    store = SqliteMessageStore(db, indexed=False)
    await fill(store, 300)
    await fill(store, 40, room=OTHER)
    stats = await store.compact(older_than=timedelta(hours=1), idempotency_window=timedelta(0))
    assert stats.messages == 340
    await store.append(message(1000, minutes_ago=0), incarnation=INC)  # stays a row
    assert await count(db, "SELECT COUNT(*) FROM compacted_messages") == 0
    # The search role comes back to this file: its start-up backfill
    # indexes the compacted messages from their blocks, and the rows.
    search = await SqliteMessageSearch.open(db, None, with_messages=True)
    assert await count(db, "SELECT COUNT(*) FROM compacted_messages") == 340
    for room in (ROOM, OTHER):
        page = await search.search(deploy_search((room,), limit=200))
        assert [h.message for h in page.hits] == with_deploy(await everything(store, room))
    # Again: nothing left to do.
    assert await search.backfill() == 0


async def test_a_hit_whose_block_retention_deletes_meanwhile_is_left_out(
    db: SqliteDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteMessageStore(db, indexed=True)
    search = SqliteMessageSearch(db, None, with_messages=True)
    await fill(store, 300)
    kept = await everything(store)
    await store.compact(older_than=timedelta(hours=1), idempotency_window=timedelta(0))
    assert await count(db, "SELECT COUNT(*) FROM message_blocks") == 2  # 0..255, 256..299
    # Retention deletes the first block (messages 0..255, the newest of them
    # 9,745 minutes old) between the search's match query and its block reads.
    trimmed = SqliteMessageStore(db, timedelta(minutes=9_744.5), indexed=True)
    fetch = db.fetch
    raced: list[list[Any]] = []

    async def fetch_then_trim(sql: str, params: Sequence[Any] = ()) -> list[Any]:
        rows = await fetch(sql, params)
        if "MATCH" in sql and not raced:
            raced.append(rows)
            assert await trimmed.trim() == 256
        return rows

    monkeypatch.setattr(db, "fetch", fetch_then_trim)
    page = await search.search(deploy_search())
    # The match query did see messages of the deleted block.
    assert any(row[4] <= kept[255].offset for row in raced[0])
    assert [h.message for h in page.hits] == with_deploy(kept[256:])
    assert not page.has_more


async def test_a_block_missing_under_its_key_rows_is_still_damage(db: SqliteDatabase) -> None:
    store = SqliteMessageStore(db, indexed=True)
    search = SqliteMessageSearch(db, None, with_messages=True)
    await fill(store, 300)
    await store.compact(older_than=timedelta(hours=1), idempotency_window=timedelta(0))
    async with db.transaction() as conn:
        await conn.execute("DELETE FROM message_blocks WHERE first_seq = 1")
    with pytest.raises(DataCorrupted, match="room-1"):
        await search.search(deploy_search())


async def test_a_damaged_block_is_left_unindexed_and_the_backfill_goes_on(
    db: SqliteDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    await db.appending_unindexed()
    store = SqliteMessageStore(db, indexed=False)
    await fill(store, 30)
    await fill(store, 30, room=OTHER)
    await store.compact(older_than=timedelta(hours=1), idempotency_window=timedelta(0))
    async with db.transaction() as conn:
        await conn.execute("UPDATE message_blocks SET body = x'00' WHERE room_id = ?", (ROOM,))
    search = await SqliteMessageSearch.open(db, None, with_messages=True)
    logged = [r.getMessage() for r in caplog.records if "not indexed for search" in r.getMessage()]
    assert len(logged) == 1 and f"room {ROOM!r}" in logged[0], logged
    page = await search.search(deploy_search((OTHER,)))
    assert [h.message for h in page.hits] == with_deploy(await everything(store, OTHER))
    assert (await search.search(deploy_search((ROOM,)))).hits == []
