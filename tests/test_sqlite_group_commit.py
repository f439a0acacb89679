"""SQLite group commit: appends that arrive together share one transaction,
each answered after its commit, each failing on its own."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backends.errors import ForeignStream
from backends.records import HistoryWindow, MessageKind, NewMessage
from backends.sqlite import SqliteDatabase, SqliteMessageStore

INC = "inc1"


def msg(text: str, *, room_id: str, client_message_id: str | None = None) -> NewMessage:
    return NewMessage(
        kind=MessageKind.MESSAGE,
        user_id="alice",
        room_id=room_id,
        data={"text": text},
        client_message_id=client_message_id,
        timestamp=datetime.now(UTC),
    )


@pytest.fixture
async def opened(tmp_path: Path) -> AsyncIterator[tuple[SqliteDatabase, SqliteMessageStore, Path]]:
    path = tmp_path / "forge.db"
    db = await SqliteDatabase.open(path)
    store = SqliteMessageStore(db)
    try:
        yield db, store, path
    finally:
        await store.close()
        await db.close()


def committed_rows(path: Path) -> dict[str, tuple[str, int]]:
    """What another connection sees: only committed rows (id -> room, offset)."""
    with sqlite3.connect(path) as other:
        rows = other.execute("SELECT id, room_id, seq FROM messages").fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


async def test_concurrent_appends_share_transactions_and_are_durable_when_answered(
    opened: tuple[SqliteDatabase, SqliteMessageStore, Path],
) -> None:
    db, store, path = opened
    rooms = [f"room-{i}" for i in range(20)]
    before = db.commits
    durable_on_answer: list[bool] = []

    async def send(i: int) -> None:
        room_id = rooms[i % len(rooms)]
        stored, created = await store.append(msg(f"m{i}", room_id=room_id), incarnation=INC)
        assert created
        # Read by another connection the moment the answer arrives: committed.
        seen = await asyncio.to_thread(committed_rows, path)
        durable_on_answer.append(seen.get(stored.id) == (room_id, stored.offset))

    await asyncio.gather(*(send(i) for i in range(400)))

    transactions = db.commits - before
    assert durable_on_answer == [True] * 400
    assert transactions < 400 // 4, f"{transactions} transactions for 400 appends"
    # Per room, offsets 1..20 in the order the appends were made.
    for room_id in rooms:
        page = await store.page(room_id, HistoryWindow(limit=100), incarnation=INC)
        assert [m.offset for m in page.messages] == list(range(1, 21))
        order = [int(m.data["text"][1:]) for m in page.messages]
        assert order == sorted(order)


async def test_one_bad_append_does_not_fail_its_batch(
    opened: tuple[SqliteDatabase, SqliteMessageStore, Path],
) -> None:
    db, store, path = opened
    await store.append(msg("first", room_id="theirs"), incarnation="other")
    # A message the database itself refuses (an SQL error inside the batch's transaction).
    with sqlite3.connect(path) as other:
        other.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON messages WHEN NEW.data LIKE '%poison%'"
            " BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
        )
    appends = [
        msg("a", room_id="ours"),
        msg("poison", room_id="ours"),
        msg("b", room_id="theirs"),  # another incarnation's history
        NewMessage(kind=MessageKind.MESSAGE, user_id="alice", room_id="ours", data={1, 2}),
        msg("c", room_id="ours", client_message_id="k"),
        msg("c again", room_id="ours", client_message_id="k"),
        msg("d", room_id="ours"),
    ]
    before = db.commits
    results = await asyncio.gather(
        *(store.append(m, incarnation=INC) for m in appends), return_exceptions=True
    )
    assert db.commits > before
    ok = [r for r in results if isinstance(r, tuple)]
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert isinstance(results[2], ForeignStream)
    assert isinstance(results[3], TypeError)
    assert [(m.data["text"], created) for m, created in ok] == [
        ("a", True),
        ("c", True),
        ("c", False),
        ("d", True),
    ]
    page = await store.page("ours", HistoryWindow(limit=10), incarnation=INC)
    assert [(m.offset, m.data["text"]) for m in page.messages] == [(1, "a"), (2, "c"), (3, "d")]
    assert set(committed_rows(path)) >= {m.id for m, _ in ok}


async def test_a_closed_store_refuses_appends(
    opened: tuple[SqliteDatabase, SqliteMessageStore, Path],
) -> None:
    _, store, _ = opened
    pending = asyncio.ensure_future(store.append(msg("last", room_id="r"), incarnation=INC))
    await asyncio.sleep(0)  # queued before the close
    await store.close()
    stored, created = await pending
    assert created and stored.offset == 1
    with pytest.raises(RuntimeError, match="closed"):
        await store.append(msg("late", room_id="r"), incarnation=INC)


async def test_a_read_over_its_loop_budget_is_answered_all_the_same(tmp_path: Path) -> None:
    db = await SqliteDatabase.open(tmp_path / "forge.db", loop_read_steps=1)
    store = SqliteMessageStore(db)
    try:
        await asyncio.gather(
            *(store.append(msg(f"m{i}", room_id="r"), incarnation=INC) for i in range(300))
        )
        page = await store.page("r", HistoryWindow(limit=200, from_end=True), incarnation=INC)
        assert [m.offset for m in page.messages] == list(range(101, 301))
        assert page.has_more
    finally:
        await store.close()
        await db.close()
