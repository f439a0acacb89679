"""The SQLite store's compressed blocks (backends/sqlite_blocks.py) under
retention, room deletion, the idempotency window, and the file's size."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from backends import blocks
from backends.sqlite import SqliteDatabase, SqliteMessageStore
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
async def db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    opened = await SqliteDatabase.open(tmp_path / "forge.db")
    yield opened
    await opened.close()


async def count(db: SqliteDatabase, sql: str) -> int:
    return int((await db.fetch(sql))[0][0])


async def test_retention_rewrites_the_edge_block_and_retires_its_dictionary(
    db: SqliteDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small blocks and a small dictionary, which pays for them by about 17 %
    # on this corpus (a 16 KiB one only by 0-0.5 %, the message ids being random).
    monkeypatch.setattr(blocks, "BLOCK_MESSAGES", 8)
    monkeypatch.setattr(blocks, "_DICT_BYTES", 4096)
    await retention_cuts_inside_a_block(
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
    again, created = await store.append(message(8), incarnation=INC)
    assert (again, created) == (first[8], False)
    found = await store.find_client_message(ROOM, "user1", "c8", incarnation=INC)
    assert found == first[8]
    # Past the window: a send with an old key is a new message.
    late, created = await store.append(message(2), incarnation=INC)
    assert created and late.offset == 21


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
