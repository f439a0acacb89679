"""MessageStore contract: offsets, idempotency, paging, retention, epochs."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from backends.errors import ForeignStream, LimitReached, Missing
from backends.protocols import MessageStore
from backends.records import (
    LEGACY_INCARNATION,
    HistoryWindow,
    Message,
    MessageKind,
    NewMessage,
    Room,
    StreamPosition,
    incarnation_of,
)
from backends.sqlite import SqliteDatabase, SqliteMessageStore, SqliteRoomStore

from .conftest import MessageStoreMaker, Reopen, eventually, new_message

ROOM = "room-1"
INC = "inc1"  # the incarnation of the rooms these tests write to
OLD = datetime(2020, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def msg(text: str = "hi", *, room_id: str = ROOM, **fields: Any) -> NewMessage:
    return new_message({"text": text}, room_id=room_id, **fields)


async def fill(store: MessageStore, n: int, *, room_id: str = ROOM) -> list[Message]:
    out = []
    for i in range(1, n + 1):
        message, created = await store.append(msg(f"m{i}", room_id=room_id), incarnation=INC)
        assert created
        out.append(message)
    return out


def offsets(messages: list[Message]) -> list[int]:
    return [m.offset for m in messages]


async def test_append_assigns_id_offset_epoch_and_round_trips_fields(
    message_store: MessageStore,
) -> None:
    new = NewMessage(
        kind=MessageKind.SYSTEM,
        user_id="alice",
        room_id=ROOM,
        event="history.note",
        data={"text": "héllo ✓", "n": [1, 2.5, None, True], "nested": {"a": {}}},
        metadata={"k": "v"},
        thread_id="t1",
        client_message_id="c1",
        timestamp=datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
    )
    message, created = await message_store.append(new, incarnation=INC)
    assert created
    assert len(message.id) == 32
    int(message.id, 16)
    assert message.offset == 1
    assert message.epoch
    assert message.kind is MessageKind.SYSTEM
    assert message.timestamp == new.timestamp
    assert message.timestamp.tzinfo is not None
    assert message.timestamp.utcoffset() == timedelta(0)
    assert (message.user_id, message.room_id, message.event) == ("alice", ROOM, "history.note")
    assert message.data == new.data
    assert message.metadata == {"k": "v"}
    assert (message.thread_id, message.client_message_id) == ("t1", "c1")
    assert message.channel_id is None

    page = await message_store.page(ROOM, HistoryWindow(limit=10), incarnation=INC)
    assert page.messages == [message]
    assert page.messages[0].timestamp.utcoffset() == timedelta(0)


async def test_append_keeps_scalar_and_null_payloads(message_store: MessageStore) -> None:
    values = [None, "text", 0, [1, "two"]]
    for value in values:
        await message_store.append(
            NewMessage(kind=MessageKind.MESSAGE, user_id="u", room_id=ROOM, data=value),
            incarnation=INC,
        )
    page = await message_store.page(ROOM, HistoryWindow(limit=10), incarnation=INC)
    assert [m.data for m in page.messages] == values
    assert [m.metadata for m in page.messages] == [None] * 4


async def test_append_needs_a_room(message_store: MessageStore) -> None:
    with pytest.raises(ValueError):
        await message_store.append(
            NewMessage(kind=MessageKind.MESSAGE, user_id="u", channel_id="c"), incarnation=INC
        )


async def test_offsets_are_per_room_and_ids_unique(message_store: MessageStore) -> None:
    a = await fill(message_store, 3)
    b = await fill(message_store, 2, room_id="room-2")
    assert offsets(a) == [1, 2, 3]
    assert offsets(b) == [1, 2]
    assert len({m.id for m in a + b}) == 5
    assert a[0].epoch != b[0].epoch


async def test_concurrent_appends_get_distinct_increasing_offsets(
    message_store: MessageStore,
) -> None:
    results = await asyncio.gather(
        *(message_store.append(msg(f"m{i}"), incarnation=INC) for i in range(50))
    )
    got = sorted(m.offset for m, created in results if created)
    assert got == list(range(1, 51))
    page = await message_store.page(ROOM, HistoryWindow(limit=100), incarnation=INC)
    assert offsets(page.messages) == list(range(1, 51))
    assert {m.data["text"] for m in page.messages} == {f"m{i}" for i in range(50)}
    assert len({m.epoch for m in page.messages}) == 1
    assert (await message_store.position(ROOM, incarnation=INC)).last_offset == 50


async def test_client_message_id_is_idempotent_per_room_and_user(
    message_store: MessageStore,
) -> None:
    first, created = await message_store.append(msg("one", client_message_id="c1"), incarnation=INC)
    assert created
    again, created = await message_store.append(msg("two", client_message_id="c1"), incarnation=INC)
    assert not created
    assert again == first
    assert again.data == {"text": "one"}

    other_user, created = await message_store.append(
        msg("bob", user_id="bob", client_message_id="c1"), incarnation=INC
    )
    assert created and other_user.offset == 2
    other_room, created = await message_store.append(
        msg("r2", room_id="room-2", client_message_id="c1"), incarnation=INC
    )
    assert created and other_room.offset == 1
    no_id, created = await message_store.append(msg("plain"), incarnation=INC)
    assert created and no_id.offset == 3

    page = await message_store.page(ROOM, HistoryWindow(limit=10), incarnation=INC)
    assert [m.data["text"] for m in page.messages] == ["one", "bob", "plain"]
    assert (await message_store.position(ROOM, incarnation=INC)).last_offset == 3


async def test_concurrent_duplicates_store_one_message(message_store: MessageStore) -> None:
    results = await asyncio.gather(
        *(
            message_store.append(msg(f"try{i}", client_message_id="same"), incarnation=INC)
            for i in range(20)
        )
    )
    created = [m for m, new in results if new]
    assert len(created) == 1
    assert {m.id for m, _ in results} == {created[0].id}
    assert {m.offset for m, _ in results} == {1}
    page = await message_store.page(ROOM, HistoryWindow(limit=50), incarnation=INC)
    assert len(page.messages) == 1
    assert (await message_store.position(ROOM, incarnation=INC)).last_offset == 1


async def test_page_forwards(message_store: MessageStore) -> None:
    await fill(message_store, 10)
    first = await message_store.page(ROOM, HistoryWindow(limit=4), incarnation=INC)
    assert offsets(first.messages) == [1, 2, 3, 4]
    assert first.has_more
    second = await message_store.page(ROOM, HistoryWindow(limit=4, after=4), incarnation=INC)
    assert offsets(second.messages) == [5, 6, 7, 8]
    assert second.has_more
    last = await message_store.page(ROOM, HistoryWindow(limit=4, after=8), incarnation=INC)
    assert offsets(last.messages) == [9, 10]
    assert not last.has_more
    exact = await message_store.page(ROOM, HistoryWindow(limit=2, after=8), incarnation=INC)
    assert offsets(exact.messages) == [9, 10]
    assert not exact.has_more
    assert (
        await message_store.page(ROOM, HistoryWindow(limit=4, after=10), incarnation=INC)
    ).messages == []


async def test_page_backwards(message_store: MessageStore) -> None:
    await fill(message_store, 10)
    newest = await message_store.page(ROOM, HistoryWindow(limit=4, from_end=True), incarnation=INC)
    assert offsets(newest.messages) == [7, 8, 9, 10]
    assert newest.has_more
    older = await message_store.page(
        ROOM, HistoryWindow(limit=4, before=7, from_end=True), incarnation=INC
    )
    assert offsets(older.messages) == [3, 4, 5, 6]
    assert older.has_more
    oldest = await message_store.page(
        ROOM, HistoryWindow(limit=4, before=3, from_end=True), incarnation=INC
    )
    assert offsets(oldest.messages) == [1, 2]
    assert not oldest.has_more
    exact = await message_store.page(ROOM, HistoryWindow(limit=10, from_end=True), incarnation=INC)
    assert offsets(exact.messages) == list(range(1, 11))
    assert not exact.has_more


async def test_page_between_bounds(message_store: MessageStore) -> None:
    await fill(message_store, 10)
    both = await message_store.page(
        ROOM, HistoryWindow(limit=10, after=2, before=6), incarnation=INC
    )
    assert offsets(both.messages) == [3, 4, 5]
    assert not both.has_more
    forward = await message_store.page(
        ROOM, HistoryWindow(limit=2, after=2, before=6), incarnation=INC
    )
    assert offsets(forward.messages) == [3, 4]
    assert forward.has_more
    forward_end = await message_store.page(
        ROOM, HistoryWindow(limit=3, after=2, before=6), incarnation=INC
    )
    assert offsets(forward_end.messages) == [3, 4, 5]
    assert not forward_end.has_more
    backward = await message_store.page(
        ROOM, HistoryWindow(limit=2, after=2, before=6, from_end=True), incarnation=INC
    )
    assert offsets(backward.messages) == [4, 5]
    assert backward.has_more
    backward_end = await message_store.page(
        ROOM, HistoryWindow(limit=3, after=2, before=6, from_end=True), incarnation=INC
    )
    assert offsets(backward_end.messages) == [3, 4, 5]
    assert not backward_end.has_more
    empty = await message_store.page(
        ROOM, HistoryWindow(limit=5, after=4, before=5), incarnation=INC
    )
    assert empty.messages == [] and not empty.has_more


async def test_page_of_unknown_room_is_empty(message_store: MessageStore) -> None:
    for from_end in (False, True):
        page = await message_store.page(
            "nowhere", HistoryWindow(limit=5, from_end=from_end), incarnation=INC
        )
        assert page.messages == [] and not page.has_more


async def test_page_rejects_a_limit_below_one(message_store: MessageStore) -> None:
    with pytest.raises(ValueError):
        await message_store.page(ROOM, HistoryWindow(limit=0), incarnation=INC)


async def test_page_filters_by_thread(message_store: MessageStore) -> None:
    for i in range(1, 11):
        await message_store.append(
            msg(f"m{i}", thread_id="t" if i % 3 == 0 else None), incarnation=INC
        )
    thread = await message_store.page(ROOM, HistoryWindow(limit=10, thread_id="t"), incarnation=INC)
    assert offsets(thread.messages) == [3, 6, 9]
    assert all(m.thread_id == "t" for m in thread.messages)
    assert not thread.has_more
    head = await message_store.page(ROOM, HistoryWindow(limit=2, thread_id="t"), incarnation=INC)
    assert offsets(head.messages) == [3, 6] and head.has_more
    tail = await message_store.page(
        ROOM, HistoryWindow(limit=2, thread_id="t", from_end=True), incarnation=INC
    )
    assert offsets(tail.messages) == [6, 9] and tail.has_more
    rest = await message_store.page(
        ROOM, HistoryWindow(limit=2, thread_id="t", before=6, from_end=True), incarnation=INC
    )
    assert offsets(rest.messages) == [3] and not rest.has_more
    after = await message_store.page(
        ROOM, HistoryWindow(limit=1, thread_id="t", after=6), incarnation=INC
    )
    assert offsets(after.messages) == [9] and not after.has_more
    assert (
        await message_store.page(ROOM, HistoryWindow(limit=5, thread_id="nope"), incarnation=INC)
    ).messages == []
    everything = await message_store.page(ROOM, HistoryWindow(limit=20), incarnation=INC)
    assert offsets(everything.messages) == list(range(1, 11))


async def test_position_of_a_new_room_is_stable(message_store: MessageStore) -> None:
    position = await message_store.position(ROOM, incarnation=INC)
    assert position.epoch
    assert (position.last_offset, position.first_offset) == (0, 0)
    assert await message_store.position(ROOM, incarnation=INC) == position
    message, _ = await message_store.append(msg(), incarnation=INC)
    assert message.epoch == position.epoch
    after = await message_store.position(ROOM, incarnation=INC)
    assert (after.epoch, after.last_offset, after.first_offset) == (position.epoch, 1, 1)
    assert (await message_store.position("room-2", incarnation=INC)).epoch != position.epoch


async def test_drop_room_starts_a_new_epoch_at_offset_one(message_store: MessageStore) -> None:
    old = await fill(message_store, 3)
    other = await fill(message_store, 2, room_id="room-2")
    await message_store.drop_room(ROOM)
    assert (await message_store.page(ROOM, HistoryWindow(limit=10), incarnation=INC)).messages == []
    dropped = await message_store.position(ROOM, incarnation=INC)
    assert dropped.epoch != old[0].epoch
    assert (dropped.last_offset, dropped.first_offset) == (0, 0)
    again, created = await message_store.append(msg("again"), incarnation=INC)
    assert created
    assert (again.offset, again.epoch) == (1, dropped.epoch)
    # The other room is untouched.
    kept = await message_store.page("room-2", HistoryWindow(limit=10), incarnation=INC)
    assert kept.messages == other
    # A dropped client_message_id may be used again.
    reused, created = await message_store.append(msg(client_message_id="c1"), incarnation=INC)
    assert created and reused.offset == 2
    await message_store.drop_room("never-existed")


async def test_drop_room_then_append_gets_new_epoch(message_store: MessageStore) -> None:
    first, _ = await message_store.append(msg(), incarnation=INC)
    await message_store.drop_room(ROOM)
    second, _ = await message_store.append(msg(), incarnation=INC)
    assert second.offset == 1
    assert second.epoch != first.epoch


async def test_retention_hides_old_messages_and_trim_deletes_them(
    make_message_store: MessageStoreMaker,
) -> None:
    store = await make_message_store(retention=timedelta(seconds=0.2))
    now = datetime.now(UTC)
    for i in range(1, 4):
        await store.append(msg(f"old{i}", timestamp=now - timedelta(hours=1)), incarnation=INC)
    await store.append(
        msg("old-thread", timestamp=now - timedelta(hours=1), thread_id="t"), incarnation=INC
    )
    fresh = [
        (
            await store.append(
                msg(f"new{i}", timestamp=now + timedelta(hours=1), thread_id="t"), incarnation=INC
            )
        )[0]
        for i in range(1, 3)
    ]
    await store.append(
        msg("other room", room_id="room-2", timestamp=now - timedelta(hours=1)), incarnation=INC
    )

    page = await store.page(ROOM, HistoryWindow(limit=10), incarnation=INC)
    assert page.messages == fresh
    assert not page.has_more
    back = await store.page(ROOM, HistoryWindow(limit=1, from_end=True), incarnation=INC)
    assert offsets(back.messages) == [6] and back.has_more
    oldest = await store.page(
        ROOM, HistoryWindow(limit=1, before=6, from_end=True), incarnation=INC
    )
    assert offsets(oldest.messages) == [5] and not oldest.has_more
    assert offsets(
        (await store.page(ROOM, HistoryWindow(limit=10, thread_id="t"), incarnation=INC)).messages
    ) == [
        5,
        6,
    ]
    position = await store.position(ROOM, incarnation=INC)
    assert (position.last_offset, position.first_offset) == (6, 5)
    assert (await store.position("room-2", incarnation=INC)).first_offset == 0

    assert await store.trim() == 5
    assert await store.trim() == 0
    assert (await store.page(ROOM, HistoryWindow(limit=10), incarnation=INC)).messages == fresh
    after_trim = await store.position(ROOM, incarnation=INC)
    assert after_trim == position
    # Offsets are never reused after a trim.
    next_message, _ = await store.append(msg("next"), incarnation=INC)
    assert (next_message.offset, next_message.epoch) == (7, position.epoch)
    other, _ = await store.append(msg("r2", room_id="room-2"), incarnation=INC)
    assert other.offset == 2
    assert (await store.position("room-2", incarnation=INC)).first_offset == 2


async def test_retention_applies_as_time_passes(make_message_store: MessageStoreMaker) -> None:
    store = await make_message_store(retention=timedelta(seconds=0.2))
    message, _ = await store.append(msg("soon old"), incarnation=INC)
    assert (await store.page(ROOM, HistoryWindow(limit=5), incarnation=INC)).messages == [message]

    async def expired() -> bool:
        return not (await store.page(ROOM, HistoryWindow(limit=5), incarnation=INC)).messages

    await eventually(expired)
    assert (await store.position(ROOM, incarnation=INC)).first_offset == 0
    assert await store.trim() == 1


async def test_no_retention_keeps_everything(message_store: MessageStore) -> None:
    await message_store.append(msg(timestamp=OLD), incarnation=INC)
    assert await message_store.trim() == 0
    page = await message_store.page(ROOM, HistoryWindow(limit=5), incarnation=INC)
    assert offsets(page.messages) == [1]
    assert page.messages[0].timestamp == OLD
    assert (await message_store.position(ROOM, incarnation=INC)).first_offset == 1


async def test_trimmed_client_message_id_is_forgotten(
    make_message_store: MessageStoreMaker,
) -> None:
    store = await make_message_store(retention=timedelta(seconds=0.2))
    old, _ = await store.append(msg(client_message_id="c1", timestamp=OLD), incarnation=INC)
    # Still stored (only hidden) until trimmed: the duplicate is recognised.
    again, created = await store.append(msg(client_message_id="c1"), incarnation=INC)
    assert not created and again == old
    assert await store.trim() == 1
    new, created = await store.append(msg(client_message_id="c1"), incarnation=INC)
    assert created and new.offset == 2


async def test_naive_timestamp_is_rejected(message_store: MessageStore) -> None:
    with pytest.raises(ValueError):
        await message_store.append(msg(timestamp=datetime(2024, 1, 1)), incarnation=INC)
    assert (await message_store.position(ROOM, incarnation=INC)).last_offset == 0


async def test_other_time_zones_are_stored_as_utc(message_store: MessageStore) -> None:
    plus_two = datetime(2024, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    message, _ = await message_store.append(msg(timestamp=plus_two), incarnation=INC)
    assert message.timestamp == plus_two
    assert message.timestamp.utcoffset() == timedelta(0)


async def test_history_survives_a_restart(reopen: Reopen) -> None:
    stores = await reopen()
    written = await fill(stores.messages, 5)
    await stores.messages.append(msg(client_message_id="c1"), incarnation=INC)
    await fill(stores.messages, 1, room_id="room-2")
    position = await stores.messages.position(ROOM, incarnation=INC)
    await stores.close()

    stores = await reopen()
    assert await stores.messages.position(ROOM, incarnation=INC) == position
    page = await stores.messages.page(ROOM, HistoryWindow(limit=5), incarnation=INC)
    assert page.messages == written and page.has_more
    duplicate, created = await stores.messages.append(
        msg("dup", client_message_id="c1"), incarnation=INC
    )
    assert not created and duplicate.offset == 6
    following, created = await stores.messages.append(msg("after restart"), incarnation=INC)
    assert created
    assert (following.offset, following.epoch) == (7, position.epoch)
    await stores.messages.drop_room(ROOM)
    dropped_epoch = (await stores.messages.position(ROOM, incarnation=INC)).epoch
    await stores.close()

    stores = await reopen()
    assert await stores.messages.position(ROOM, incarnation=INC) == StreamPosition(
        dropped_epoch, 0, 0
    )
    assert (await stores.messages.position("room-2", incarnation=INC)).last_offset == 1


async def test_sqlite_database_opens_pings_and_closes_once(tmp_path: Path) -> None:
    db = await SqliteDatabase.open(tmp_path / "a" / "b" / "forge.db")
    assert (tmp_path / "a" / "b" / "forge.db").exists()
    await db.ping()
    await db.close()
    await db.close()
    with pytest.raises(ValueError):
        await db.ping()


# --- incarnations ------------------------------------------------------------------

NEW = "inc2"  # a later incarnation of ROOM: made again under the same id


async def test_epochs_name_the_incarnation(message_store: MessageStore) -> None:
    message, _ = await message_store.append(msg(), incarnation=INC)
    assert incarnation_of(message.epoch) == INC
    assert incarnation_of((await message_store.position(ROOM, incarnation=INC)).epoch) == INC


async def test_another_incarnation_sees_nothing_and_cannot_write(
    message_store: MessageStore,
) -> None:
    old = await fill(message_store, 3)
    await message_store.append(msg("cid", client_message_id="c1"), incarnation=INC)
    for from_end in (False, True):
        page = await message_store.page(
            ROOM, HistoryWindow(limit=10, from_end=from_end), incarnation=NEW
        )
        assert page.messages == [] and not page.has_more
    assert (
        await message_store.page(ROOM, HistoryWindow(limit=10, after=1), incarnation=NEW)
    ).messages == []
    assert await message_store.find_client_message(ROOM, "alice", "c1", incarnation=NEW) is None
    with pytest.raises(ForeignStream) as refused:
        await message_store.append(msg("new room"), incarnation=NEW)
    assert refused.value.found == INC
    assert isinstance(refused.value, Missing)  # NOT_FOUND to a client
    with pytest.raises(ForeignStream) as refused:
        await message_store.position(ROOM, incarnation=NEW)
    assert refused.value.found == INC
    # Nothing changed for the incarnation the history belongs to.
    page = await message_store.page(ROOM, HistoryWindow(limit=10), incarnation=INC)
    assert page.messages[:3] == old and len(page.messages) == 4
    assert (await message_store.position(ROOM, incarnation=INC)).last_offset == 4


async def test_a_dead_incarnation_is_dropped_and_the_new_one_starts_afresh(
    message_store: MessageStore,
) -> None:
    old = await fill(message_store, 3)
    first, _ = await message_store.append(msg("old", client_message_id="c1"), incarnation=INC)
    # Dropping another incarnation's history leaves this one alone.
    await message_store.drop_room(ROOM, incarnation=NEW)
    assert (
        len((await message_store.page(ROOM, HistoryWindow(limit=10), incarnation=INC)).messages)
        == 4
    )

    with pytest.raises(ForeignStream) as refused:
        await message_store.append(msg("new"), incarnation=NEW)
    await message_store.drop_room(ROOM, incarnation=refused.value.found)
    again, created = await message_store.append(msg("new", client_message_id="c1"), incarnation=NEW)
    assert created and again.id != first.id
    assert again.offset == 1 and incarnation_of(again.epoch) == NEW
    assert again.epoch != old[0].epoch
    page = await message_store.page(ROOM, HistoryWindow(limit=10), incarnation=NEW)
    assert page.messages == [again]
    assert (await message_store.page(ROOM, HistoryWindow(limit=10), incarnation=INC)).messages == []
    found = await message_store.find_client_message(ROOM, "alice", "c1", incarnation=NEW)
    assert found == again
    assert await message_store.find_client_message(ROOM, "alice", "c1", incarnation=INC) is None
    position = await message_store.position(ROOM, incarnation=NEW)
    assert (position.epoch, position.last_offset) == (again.epoch, 1)


async def test_position_starts_a_history_of_the_incarnation(message_store: MessageStore) -> None:
    position = await message_store.position(ROOM, incarnation=NEW)
    assert incarnation_of(position.epoch) == NEW
    with pytest.raises(ForeignStream):
        await message_store.append(msg(), incarnation=INC)
    message, _ = await message_store.append(msg(), incarnation=NEW)
    assert message.epoch == position.epoch


async def test_find_client_message(message_store: MessageStore) -> None:
    first, _ = await message_store.append(msg("one", client_message_id="c1"), incarnation=INC)
    await message_store.append(msg("two"), incarnation=INC)
    assert await message_store.find_client_message(ROOM, "alice", "c1", incarnation=INC) == first
    assert await message_store.find_client_message(ROOM, "bob", "c1", incarnation=INC) is None
    assert await message_store.find_client_message(ROOM, "alice", "c2", incarnation=INC) is None
    assert await message_store.find_client_message("room-2", "alice", "c1", incarnation=INC) is None


async def test_a_drop_never_takes_what_a_newer_incarnation_appended(
    message_store: MessageStore,
) -> None:
    """Appends of a new incarnation race the drop of the old one's history:
    each either finds the old history (and drops it, as the resolvers do)
    or appends; whatever was appended for the new incarnation stays."""
    await fill(message_store, 5)

    async def append_new(i: int) -> Message:
        for _ in range(20):
            try:
                message, _ = await message_store.append(msg(f"new{i}"), incarnation=NEW)
            except ForeignStream as exc:
                await message_store.drop_room(ROOM, incarnation=exc.found)
            else:
                return message
        raise AssertionError("the old history was never out of the way")

    async def drop_old() -> None:
        await message_store.drop_room(ROOM, incarnation=INC)

    results = await asyncio.gather(*(append_new(i) for i in range(10)), drop_old(), drop_old())
    appended = [r for r in results if isinstance(r, Message)]
    page = await message_store.page(ROOM, HistoryWindow(limit=50), incarnation=NEW)
    assert sorted(m.id for m in page.messages) == sorted(m.id for m in appended)
    assert offsets(page.messages) == list(range(1, 11))


async def test_legacy_history_belongs_to_legacy_rooms(message_store: MessageStore) -> None:
    """History written before incarnations has epochs without one: it is
    the history of LEGACY_INCARNATION, the incarnation of rooms stored then."""
    message, _ = await message_store.append(msg(), incarnation=LEGACY_INCARNATION)
    assert incarnation_of(message.epoch) == LEGACY_INCARNATION
    assert incarnation_of("0a1b2c3d") == LEGACY_INCARNATION
    page = await message_store.page(ROOM, HistoryWindow(limit=5), incarnation=LEGACY_INCARNATION)
    assert page.messages == [message]
    assert (await message_store.page(ROOM, HistoryWindow(limit=5), incarnation=INC)).messages == []


async def test_a_sqlite_file_from_before_incarnations_keeps_its_rooms_and_history(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:
        old.executescript(
            """
            CREATE TABLE streams (room_id TEXT PRIMARY KEY, epoch TEXT NOT NULL,
                                  last_offset INTEGER NOT NULL);
            CREATE TABLE messages (room_id TEXT NOT NULL, seq INTEGER NOT NULL,
                id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, user_id TEXT NOT NULL,
                ts INTEGER NOT NULL, channel_id TEXT, event TEXT, data TEXT NOT NULL,
                metadata TEXT NOT NULL, thread_id TEXT, client_message_id TEXT,
                PRIMARY KEY (room_id, seq));
            CREATE TABLE rooms (id TEXT PRIMARY KEY, name TEXT NOT NULL, owner TEXT NOT NULL,
                is_private INTEGER NOT NULL, description TEXT, metadata TEXT NOT NULL,
                created_at INTEGER NOT NULL);
            CREATE TABLE members (room_id TEXT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
                user_id TEXT NOT NULL, role TEXT NOT NULL, joined_at INTEGER NOT NULL,
                PRIMARY KEY (room_id, user_id));
            INSERT INTO rooms VALUES ('old', 'Old', 'alice', 0, NULL, 'null', 0);
            INSERT INTO members VALUES ('old', 'alice', 'OWNER', 0);
            INSERT INTO streams VALUES ('old', '0a1b2c3d', 1);
            INSERT INTO messages VALUES ('old', 1, 'm1', 'MESSAGE', 'alice', 0, NULL, NULL,
                                         '{"text":"kept"}', 'null', NULL, NULL);
            """
        )
    old.close()
    db = await SqliteDatabase.open(path)
    try:
        rooms, messages = SqliteRoomStore(db), SqliteMessageStore(db)
        room = await rooms.get("old")
        assert room is not None and room.incarnation == LEGACY_INCARNATION
        page = await messages.page("old", HistoryWindow(limit=5), incarnation=room.incarnation)
        assert [(m.id, m.data, m.epoch) for m in page.messages] == [
            ("m1", {"text": "kept"}, "0a1b2c3d")
        ]
        following, _ = await messages.append(msg(room_id="old"), incarnation=room.incarnation)
        assert (following.offset, following.epoch) == (2, "0a1b2c3d")
        # Memberships from then are the user's own: they count as before.
        with pytest.raises(LimitReached):
            await rooms.create(Room(id="new", name="New", owner="alice"), max_rooms_per_user=1)
    finally:
        await db.close()
