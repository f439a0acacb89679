"""SQLite message rowids are never given twice (backends/sqlite_rowids.py):
a compacted message keeps its rowid in its block, its search key row and
its FTS row, so a message appended after the rows with the highest rowids
were compacted away must not get one of them."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from backends.codecs import to_micros
from backends.records import utcnow
from backends.sqlite import SqliteDatabase, SqliteMessageStore
from backends.sqlite_search import SqliteMessageSearch
from tests.compaction_corpus import INC, OTHER, ROOM, everything, fill, message
from tests.test_sqlite_compaction import count, deploy_search, with_deploy

ROOMS = (ROOM, OTHER)


async def compact_everything(store: SqliteMessageStore, db: SqliteDatabase) -> int:
    """Compact every message of the file; the highest rowid they had."""
    top = await count(db, "SELECT MAX(rowid) FROM messages")
    await store.compact(older_than=timedelta(0), idempotency_window=timedelta(0))
    assert await count(db, "SELECT COUNT(*) FROM messages") == 0
    return top


async def append_new(store: SqliteMessageStore, first: int, n: int = 30) -> None:
    """n messages per room (with "deploy" in some), group-committed together."""
    await asyncio.gather(
        *(
            store.append(message(first + i, room=room), incarnation=INC)
            for i in range(n)
            for room in ROOMS
        )
    )


async def assert_new_rowids_above(db: SqliteDatabase, top: int) -> None:
    # The new messages are stamped now, the others days ago.
    hour_ago = to_micros(utcnow() - timedelta(hours=1), "since")
    lowest = await count(db, f"SELECT MIN(rowid) FROM messages WHERE ts > {hour_ago}")
    assert lowest > top, f"a new message got rowid {lowest}, a compacted one's (<= {top})"


async def assert_search_finds_all(db: SqliteDatabase, store: SqliteMessageStore) -> None:
    search = await SqliteMessageSearch.open(db, None, with_messages=True)
    ids = await db.fetch("SELECT rowid FROM searchable_messages GROUP BY rowid HAVING COUNT(*) > 1")
    assert ids == [], "two messages share a rowid"
    for room in ROOMS:
        page = await search.search(deploy_search((room,), limit=500))
        expected = with_deploy(await everything(store, room))
        assert len(expected) >= 3
        # Old (compacted) and new messages, each with its own body.
        assert [h.message for h in page.hits] == expected


async def stop(store: SqliteMessageStore, db: SqliteDatabase) -> None:
    await store.close()
    await db.close()


async def after_restart(path: Path, top: int, first: int) -> None:
    """Start again on the file with search on it (its backfill runs), then
    send more: old and new are found, new rowids are above `top`."""
    db = await SqliteDatabase.open(path)
    store = SqliteMessageStore(db, indexed=True)
    try:
        await assert_search_finds_all(db, store)
        await append_new(store, first)
        await assert_new_rowids_above(db, top)
        await assert_search_finds_all(db, store)
    finally:
        await stop(store, db)


async def test_messages_after_a_whole_file_is_compacted_get_new_rowids(tmp_path: Path) -> None:
    path = tmp_path / "forge.db"
    db = await SqliteDatabase.open(path)
    store = SqliteMessageStore(db, indexed=True)
    await fill(store, 300)
    await fill(store, 40, room=OTHER)
    top = await compact_everything(store, db)
    await append_new(store, 1000)
    await assert_new_rowids_above(db, top)
    await assert_search_finds_all(db, store)
    # Compact the new ones too, then restart: the file remembers the top.
    top = await compact_everything(store, db)
    await stop(store, db)
    await after_restart(path, top, 2000)


async def test_one_room_compacted_then_deleted_keeps_its_rowids_retired(tmp_path: Path) -> None:
    db = await SqliteDatabase.open(tmp_path / "forge.db")
    store = SqliteMessageStore(db, indexed=True)
    try:
        await fill(store, 40, room=OTHER)
        await fill(store, 300)  # the highest rowids are this room's
        top = await count(db, "SELECT MAX(rowid) FROM messages")
        await store.drop_room(ROOM)
        await append_new(store, 1000)
        await assert_new_rowids_above(db, top)
        await assert_search_finds_all(db, store)
    finally:
        await stop(store, db)


@pytest.mark.parametrize("made_before", [False, True], ids=["kept", "made-before"])
async def test_compacted_while_search_was_elsewhere_then_indexed_after_a_restart(
    tmp_path: Path, made_before: bool
) -> None:
    """Only the blocks keep the rowids (no key rows, no FTS rows): the
    search role's backfill must not meet new messages under them. A file
    compacted by a server without the kept top rowid (`made_before`,
    simulated by dropping it) learns it from its blocks at the restart."""
    path = tmp_path / "forge.db"
    db = await SqliteDatabase.open(path)
    await db.appending_unindexed()
    store = SqliteMessageStore(db, indexed=False)
    await fill(store, 300)
    await fill(store, 40, room=OTHER)
    top = await compact_everything(store, db)
    if made_before:
        async with db.transaction() as conn:
            await conn.execute("DROP TRIGGER IF EXISTS messages_keep_rowid")
            await conn.execute("DROP TABLE IF EXISTS message_rowid_floor")
    else:
        await append_new(store, 1000)
        await assert_new_rowids_above(db, top)
    await stop(store, db)
    await after_restart(path, top, 2000)
