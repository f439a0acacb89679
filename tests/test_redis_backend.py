"""The Redis backend beyond the contract suites: fan-out defects, outages, atomicity.

Tests on the shared Redis (127.0.0.1:6379) use a namespace of their own and
delete its keys afterwards; tests that stop Redis or need a password start
their own redis-server on a free port.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from backends import topics
from backends.errors import LimitReached, Unavailable
from backends.events import Event, MessageEvent, decode_hub_event, encode_hub_event
from backends.hub import RESYNC, Hub
from backends.opened import Opened
from backends.records import LEGACY_INCARNATION, HistoryWindow, MessageKind, NewMessage, Room
from backends.redis import messages as redis_messages
from backends.redis.backend import (
    check_version,
    delete_namespace,
    open_stores,
    redact,
    split_url,
)
from tests.conftest import require_service
from tests.hub_checks import TIMEOUT, concurrent_first_subscribers_all_receive, receive
from tests.live import free_port
from tests.services import ServiceProcess

INC = "incarnation-1"  # of the rooms whose history these tests write


def shared_url() -> str:
    return f"redis://127.0.0.1:6379/0?namespace=t{uuid4().hex[:12]}"


@pytest.fixture
async def url() -> AsyncIterator[str]:
    require_service("Redis", 6379)
    made = shared_url()
    yield made
    await delete_namespace(made)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[ServiceProcess]:
    """A Redis of the test's own, without persistence: a restart loses its data."""
    server = ServiceProcess("redis", tmp_path, persistent=False).start()
    yield server
    server.stop()


@asynccontextmanager
async def text_hub(url: str, *roles: str) -> AsyncIterator[tuple[Hub[str], Opened]]:
    opened = await open_stores(url, ["broker", *roles], retention=None)
    assert opened.broker is not None
    hub: Hub[str] = Hub(opened.broker, encode=lambda s: s, decode=lambda s: s, retry_delay=0.01)
    try:
        await hub.start()
        try:
            yield hub, opened
        finally:
            await hub.stop()
    finally:
        await opened.close()


# --- broadcaster's defects, as regression tests -----------------------------


async def test_first_subscription_receives_the_first_publish(url: str) -> None:
    # broadcaster's RedisBackend + redis-py 8 lost this message.
    async with text_hub(url) as (hub, _), hub.subscribe("t") as sub:
        await hub.publish("t", "one")
        assert await receive(sub) == "one"


async def test_concurrent_first_subscribers_all_receive(url: str) -> None:
    async with text_hub(url) as (hub, _):
        await concurrent_first_subscribers_all_receive(hub)


async def test_resubscribing_after_unsubscribe_receives(url: str) -> None:
    async with text_hub(url) as (hub, _):
        for i in range(3):
            async with hub.subscribe("again") as sub:
                await hub.publish("again", f"m{i}")
                assert await receive(sub) == f"m{i}"


async def test_two_nodes_see_each_others_publishes_in_the_same_order(url: str) -> None:
    async with (
        text_hub(url) as (a, _),
        text_hub(url) as (b, _),
        a.subscribe("room") as on_a,
        b.subscribe("room") as on_b,
    ):
        await asyncio.gather(
            *(a.publish("room", f"a{i}") for i in range(50)),
            *(b.publish("room", f"b{i}") for i in range(50)),
        )
        seen_a = [await receive(on_a) for _ in range(100)]
        seen_b = [await receive(on_b) for _ in range(100)]
    assert seen_a == seen_b
    assert sorted(seen_a) == sorted([f"a{i}" for i in range(50)] + [f"b{i}" for i in range(50)])


async def test_namespaces_do_not_hear_each_other(url: str) -> None:
    other = shared_url()
    async with (
        text_hub(url) as (mine, _),
        text_hub(other) as (theirs, _),
        mine.subscribe("t") as sub,
    ):
        await theirs.publish("t", "not for you")
        await mine.publish("t", "for you")
        assert await receive(sub) == "for you"


async def test_listener_survives_a_redis_restart(own_redis: ServiceProcess) -> None:
    url = f"redis://127.0.0.1:{own_redis.port}/0"
    async with text_hub(url) as (hub, _), hub.subscribe("t") as sub:
        await hub.publish("t", "before")
        assert await receive(sub) == "before"

        own_redis.stop()
        started = time.monotonic()
        with pytest.raises(Unavailable):
            await hub.publish("t", "during")
        assert time.monotonic() - started < 3.0

        own_redis.start()
        # The broker reconnects and resubscribes by itself; subscribers are
        # told to catch up from history, then receive live events again.
        assert await receive(sub, timeout=10) is RESYNC
        await hub.publish("t", "after")
        assert await receive(sub) == "after"


# --- the append script ------------------------------------------------------


def new_message(text: str, room_id: str = "room-1", **extra: Any) -> NewMessage:
    return NewMessage(
        kind=MessageKind.MESSAGE,
        user_id="alice",
        room_id=room_id,
        event="chat",
        data={"text": text},
        **extra,
    )


async def test_appends_from_two_nodes_are_atomic_ordered_and_published(url: str) -> None:
    node_a = await open_stores(url, ["broker", "messages"], retention=None)
    node_b = await open_stores(url, ["broker", "messages"], retention=None)
    assert node_a.broker is not None and node_a.messages and node_b.messages
    assert node_a.messages.publishes_on_append
    hub: Hub[Event] = Hub(node_a.broker, encode=encode_hub_event, decode=decode_hub_event)
    await hub.start()
    try:
        async with hub.subscribe(topics.room_messages("room-1")) as live:
            stores = [node_a.messages, node_b.messages]
            results = await asyncio.gather(
                *(stores[i % 2].append(new_message(f"m{i}"), incarnation=INC) for i in range(50))
            )
            stored = sorted((m for m, created in results), key=lambda m: m.offset)
            assert all(created for _, created in results)
            assert [m.offset for m in stored] == list(range(1, 51))
            assert len({m.epoch for m in stored}) == 1

            events = [await receive(live) for _ in range(50)]
            assert all(isinstance(e, MessageEvent) for e in events)
            published = [e.message for e in events if isinstance(e, MessageEvent)]
            assert published == stored
            page = await node_b.messages.page("room-1", HistoryWindow(limit=100), incarnation=INC)
            assert page.messages == stored
    finally:
        await hub.stop()
        await node_a.close()
        await node_b.close()


async def test_published_event_decodes_to_the_stored_message(url: str) -> None:
    # The event text is built from an orjson prefix plus Lua's offset and
    # epoch: {} must stay {}, floats exact, unicode intact.
    async with text_hub(url, "messages") as (hub, opened):
        assert opened.messages is not None
        data = {"empty": {}, "list": [], "f": 0.1, "big": 2**60, "s": 'é"\\\n✓', "n": None}
        async with hub.subscribe(topics.room_messages("r")) as raw:
            message, _ = await opened.messages.append(
                NewMessage(
                    kind=MessageKind.SYSTEM,
                    user_id="u|1",
                    room_id="r",
                    data=data,
                    metadata=[1.5, {"k": []}],
                    thread_id="",
                    client_message_id="c",
                    timestamp=datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
                ),
                incarnation=INC,
            )
            text = await receive(raw)
        event = decode_hub_event(text)
        assert event == MessageEvent(message)
        assert message.data == data and message.thread_id == ""
        page = await opened.messages.page(
            "r", HistoryWindow(limit=5, thread_id=""), incarnation=INC
        )
        assert page.messages == [message]


async def test_a_store_without_the_broker_does_not_publish(url: str) -> None:
    async with text_hub(url) as (hub, _), hub.subscribe(topics.room_messages("r")) as sub:
        opened = await open_stores(url, ["messages"], retention=None)
        try:
            assert opened.messages is not None
            assert not opened.messages.publishes_on_append
            await opened.messages.append(new_message("quiet", room_id="r"), incarnation=INC)
        finally:
            await opened.close()
        await hub.publish(topics.room_messages("r"), "marker")
        assert await receive(sub) == "marker"


async def test_lost_keys_start_a_new_epoch(url: str) -> None:
    opened = await open_stores(url, ["messages"], retention=None)
    raw = Redis.from_url(split_url(url)[0])
    namespace = split_url(url)[1]
    try:
        store = opened.messages
        assert store is not None
        first = [(await store.append(new_message(f"m{i}"), incarnation=INC))[0] for i in range(3)]
        # Everything lost (a restart without persistence, a FLUSHDB).
        await raw.delete(f"{namespace}:msg-meta:room-1", f"{namespace}:msg-stream:room-1")
        position = await store.position("room-1", incarnation=INC)
        assert position.epoch != first[0].epoch
        assert (position.last_offset, position.first_offset) == (0, 0)
        again, _ = await store.append(new_message("again"), incarnation=INC)
        assert (again.offset, again.epoch) == (1, position.epoch)
        # Only the stream lost (evicted): the old offsets must not continue.
        await raw.delete(f"{namespace}:msg-stream:room-1")
        later, _ = await store.append(new_message("later"), incarnation=INC)
        assert later.offset == 1 and later.epoch not in (first[0].epoch, position.epoch)
        assert (await store.page("room-1", HistoryWindow(limit=10), incarnation=INC)).messages == [
            later
        ]
    finally:
        await raw.aclose()
        await opened.close()


@pytest.mark.parametrize("budget", [5000, 100])
async def test_thread_page_skips_long_stretches(
    url: str, budget: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small budget makes the scan continue over several script calls.
    monkeypatch.setattr(redis_messages, "_SCAN_BUDGET", budget)
    opened = await open_stores(url, ["messages"], retention=None)
    try:
        store = opened.messages
        assert store is not None
        for i in range(1, 601):
            await store.append(
                new_message(f"m{i}", thread_id="t" if i % 200 == 0 else None), incarnation=INC
            )
        page = await store.page("room-1", HistoryWindow(limit=50, thread_id="t"), incarnation=INC)
        assert [m.offset for m in page.messages] == [200, 400, 600] and not page.has_more
        back = await store.page(
            "room-1", HistoryWindow(limit=2, thread_id="t", from_end=True), incarnation=INC
        )
        assert [m.offset for m in back.messages] == [400, 600] and back.has_more
    finally:
        await opened.close()


# --- limits and sweeps across nodes ------------------------------------------


@asynccontextmanager
async def two_nodes(url: str, role: str) -> AsyncIterator[tuple[Any, Any]]:
    a = await open_stores(url, [role], retention=None)
    b = await open_stores(url, [role], retention=None)
    try:
        yield getattr(a, role), getattr(b, role)
    finally:
        await a.close()
        await b.close()


async def test_room_quota_holds_across_nodes(url: str) -> None:
    async with two_nodes(url, "rooms") as (a, b):

        async def create(i: int) -> bool:
            store = a if i % 2 else b
            try:
                await store.create(Room(id=f"r{i}", name="r", owner="alice"), max_rooms_per_user=3)
            except LimitReached:
                return False
            return True

        results = await asyncio.gather(*(create(i) for i in range(20)))
        assert sum(results) == 3
        assert len(await a.list_joined("alice")) == 3


async def test_rate_limit_counts_across_nodes(url: str) -> None:
    async with two_nodes(url, "limits") as (a, b):
        results = await asyncio.gather(
            *((a if i % 2 else b).acquire("k", limit=5, per_seconds=60) for i in range(20))
        )
        assert sum(results) == 5


async def test_connection_limit_and_offline_sweep_across_nodes(url: str) -> None:
    async with two_nodes(url, "presence") as (a, b):
        await a.connect("alice", "c1", ttl=30, max_connections=2)
        await b.connect("alice", "c2", ttl=0.1, max_connections=2)
        with pytest.raises(LimitReached):
            await a.connect("alice", "c3", ttl=30, max_connections=2)
        await a.disconnect("alice", "c1", grace=0)
        # Node a stops heart-beating; c2 (node b, "killed") just expires.
        reports: list[str] = []
        deadline = time.monotonic() + TIMEOUT
        while not reports and time.monotonic() < deadline:
            swept = await asyncio.gather(*(node.sweep() for node in (a, b, a, b)))
            reports = [user for found in swept for user in found]
        assert reports == ["alice"]
        assert await a.sweep() == [] and await b.sweep() == []


async def test_typing_expiry_is_swept_once_across_nodes(url: str) -> None:
    async with two_nodes(url, "typing") as (a, b):
        entry, _ = await a.start("r1", "bob", ttl=0.05)
        swept: list[Any] = []
        deadline = time.monotonic() + TIMEOUT
        while not swept and time.monotonic() < deadline:
            found = await asyncio.gather(a.sweep(), b.sweep(), a.sweep(), b.sweep())
            swept = [e for batch in found for e in batch]
        assert swept == [entry]


# --- bad input and faults ---------------------------------------------------


async def test_unreachable_url_fails_fast_naming_the_url_without_password() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(Unavailable) as info:
        await open_stores(f"redis://bob:s3cret@127.0.0.1:{port}/0", ["rooms"], retention=None)
    assert time.monotonic() - started < 4.0
    assert f"redis://bob:***@127.0.0.1:{port}/0" in str(info.value)
    assert "s3cret" not in str(info.value)


async def test_wrong_or_missing_password_is_a_clear_error(tmp_path: Path) -> None:
    server = ServiceProcess("redis", tmp_path, ("--requirepass", "right"), persistent=False).start()
    try:
        for auth in (":wrong@", ""):
            with pytest.raises(Unavailable) as info:
                await open_stores(
                    f"redis://{auth}127.0.0.1:{server.port}/0", ["rooms"], retention=None
                )
            assert "authentication failed" in str(info.value)
            assert ":wrong@" not in str(info.value)
        opened = await open_stores(
            f"redis://:right@127.0.0.1:{server.port}/0", ["rooms"], retention=None
        )
        await opened.ping()
        await opened.close()
    finally:
        server.stop()


def test_version_check_names_the_version_needed() -> None:
    for old in ("6.0.16", "5.0.14", "6.1.9"):
        with pytest.raises(Unavailable, match=r"needs Redis 6\.2\.0 or newer"):
            check_version(old)
    for fine in ("6.2.0", "7.0.15", "7.2.4-rc1", "8.0.0"):
        check_version(fine)


def test_urls_are_redacted_and_namespaces_validated() -> None:
    assert redact("redis://u:p@h:1/0?x=1") == "redis://u:***@h:1/0?x=1"
    assert redact("rediss://:p@[::1]:6380") == "rediss://:***@[::1]:6380"
    assert redact("redis://h:1/0") == "redis://h:1/0"
    assert split_url("redis://h/0?namespace=app1&ssl_cert_reqs=none") == (
        "redis://h/0?ssl_cert_reqs=none",
        "app1",
    )
    assert split_url("redis://h/0")[1] == "forge"
    for bad in ("a:b", "a*", "", "x" * 65):
        with pytest.raises(ValueError):
            split_url(f"redis://h/0?namespace={bad}")


async def test_operations_during_an_outage_raise_unavailable(own_redis: ServiceProcess) -> None:
    opened = await open_stores(
        f"redis://127.0.0.1:{own_redis.port}/0", ["messages", "rooms"], retention=None
    )
    try:
        assert opened.messages is not None and opened.rooms is not None
        await opened.messages.append(new_message("stored"), incarnation=INC)
        own_redis.stop()
        started = time.monotonic()
        with pytest.raises(Unavailable):
            await opened.messages.append(new_message("not stored"), incarnation=INC)
        with pytest.raises(Unavailable):
            await opened.rooms.get("r")
        with pytest.raises(Unavailable):
            await opened.ping()
        assert time.monotonic() - started < 3.0
        own_redis.start()
        # Without persistence the restart lost the room: a new epoch at 1.
        message, _ = await opened.messages.append(new_message("after"), incarnation=INC)
        assert message.offset == 1
    finally:
        await opened.close()


async def test_rooms_and_history_from_before_incarnations_still_load(url: str) -> None:
    """A room hash without `inc` and a history whose epoch names no
    incarnation: both are LEGACY_INCARNATION's, so the room keeps its history."""
    namespace = url.rsplit("namespace=", 1)[1]
    client = Redis.from_url(url.split("?", 1)[0])
    try:
        await client.hset(
            f"{namespace}:room:old",
            mapping={
                "name": "Old",
                "owner": "alice",
                "private": "0",
                "description": "null",
                "metadata": "null",
                "created": "0",
            },
        )
        await client.hset(f"{namespace}:msg-meta:old", mapping={"epoch": "0a1b2c3d", "last": 0})
    finally:
        await client.aclose()
    opened = await open_stores(url, ["rooms", "messages"], retention=None)
    try:
        rooms, messages = opened.rooms, opened.messages
        assert rooms is not None and messages is not None
        room = await rooms.get("old")
        assert room is not None and room.incarnation == LEGACY_INCARNATION
        message, _ = await messages.append(
            new_message("kept", room_id="old"), incarnation=room.incarnation
        )
        assert message.epoch == "0a1b2c3d"
        page = await messages.page("old", HistoryWindow(limit=5), incarnation=room.incarnation)
        assert page.messages == [message]
        # A room made again under the id is another incarnation: none of it shows.
        assert await rooms.delete("old", incarnation=LEGACY_INCARNATION)
        assert (
            await messages.page("old", HistoryWindow(limit=5), incarnation="new-life")
        ).messages == []
    finally:
        await opened.close()
