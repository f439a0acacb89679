"""A dropped backend connection recovers by itself.

The servers drop our connections (Redis `CLIENT KILL`, a NATS restart, a
NATS protocol error); afterwards, without restarting our server, mutations
succeed, subscriptions get new messages and /ready is 200. Each fault is
logged as one line, without a traceback. Tests run on private servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
import redis.asyncio as redis_asyncio
from broadcaster import Event

from backends import topics
from backends.errors import Unavailable
from backends.hub import RESYNC_CHANNEL
from backends.nats import backend as nats_backend
from backends.opened import Opened
from backends.records import HistoryWindow, MessageKind, NewMessage
from backends.redis import backend as redis_backend
from tests.conftest import TEST_SETTINGS, require_service
from tests.live import TIMEOUT, GraphQLClient, LiveServer, Operation, unique, ws_connect
from tests.services import ServiceProcess
from tests.test_messages import ROOM_MESSAGES, new_room, send

LONG_ID = "x" * 5000


@pytest.fixture
def redis_service(tmp_path: Path) -> Iterator[ServiceProcess]:
    svc = ServiceProcess("redis", tmp_path / "redis", persistent=False).start()
    yield svc
    svc.stop()


@pytest.fixture
def nats_service(tmp_path: Path) -> Iterator[ServiceProcess]:
    svc = ServiceProcess("nats", tmp_path / "nats").start()
    yield svc
    svc.stop()


def _node(make_server: type[LiveServer], tmp_path: Path, service: ServiceProcess) -> LiveServer:
    url = service.url + ("/0" if service.kind == "redis" else "")
    settings = {**TEST_SETTINGS, "backend": service.kind, "backend_urls": [url]}
    return make_server(tmp_path / "node", settings).start()


async def _ready(server: LiveServer, timeout: float = TIMEOUT) -> None:
    """Wait until /ready answers 200 (the node found its backend again)."""
    deadline = time.monotonic() + timeout
    status = 0
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                status = (await http.get(f"{server.url}/ready")).status_code
                if status == 200:
                    return
            await asyncio.sleep(0.05)  # polling the server's own view of its backend
    raise AssertionError(f"/ready stayed {status}")


async def _next_text(op: Operation) -> str:
    frame = await op.next()
    text: str = frame["roomMessages"]["data"]["text"]
    return text


def _one_line_faults(server: LiveServer) -> None:
    log = server.log()
    assert "Traceback" not in log, log[-4000:]


# --- Redis -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _following(node: LiveServer) -> AsyncIterator[tuple[GraphQLClient, str, Operation]]:
    """A user following a new room of theirs over a WebSocket, one message
    already seen, as every recovery test starts."""
    alice = node.client(unique("alice"))
    room_id = await new_room(alice)
    async with ws_connect(node, alice.token) as ws:
        op = await ws.subscribe(ROOM_MESSAGES, room=room_id)
        await node.wait_subscribers(1)
        await send(alice, room_id, "before")
        assert await _next_text(op) == "before"
        yield alice, room_id, op


async def _kill(service: ServiceProcess, kind: str) -> int:
    client = redis_asyncio.Redis(port=service.port)
    try:
        killed = await client.client_kill_filter(_type=kind)
    finally:
        await client.aclose()
    return int(killed)


async def test_redis_connections_killed_by_the_server_recover(
    redis_service: ServiceProcess, make_server: type[LiveServer], tmp_path: Path
) -> None:
    node = _node(make_server, tmp_path, redis_service)
    async with _following(node) as (alice, room_id, op):
        assert await _kill(redis_service, "pubsub") >= 1
        await send(alice, room_id, "after pubsub kill")
        assert await _next_text(op) == "after pubsub kill"

        assert await _kill(redis_service, "normal") >= 1
        # The very next mutation succeeds: no request pays for the dead connections.
        await send(alice, room_id, "after normal kill")
        assert await _next_text(op) == "after normal kill"

        await _kill(redis_service, "pubsub")
        await _kill(redis_service, "normal")
        await _ready(node)
        await send(alice, room_id, "after both")
        assert await _next_text(op) == "after both"
        op.assert_quiet()
    _one_line_faults(node)


# --- NATS -------------------------------------------------------------------------------


async def test_nats_restart_recovers(
    nats_service: ServiceProcess, make_server: type[LiveServer], tmp_path: Path
) -> None:
    node = _node(make_server, tmp_path, nats_service)
    async with _following(node) as (alice, room_id, op):
        nats_service.stop()
        nats_service.start()
        await _ready(node, timeout=20)
        await send(alice, room_id, "after restart")
        assert await _next_text(op) == "after restart"
        op.assert_quiet()
    assert "Traceback" not in node.log(), node.log()[-4000:]


@contextlib.asynccontextmanager
async def _opened(url: str) -> AsyncIterator[Opened]:
    backend = redis_backend if url.startswith("redis") else nats_backend
    roles = ["broker", "messages", "rooms", "channels", "presence", "typing", "limits"]
    opened = await backend.open_stores(url, roles, retention=None)
    try:
        yield opened
    finally:
        if opened.broker is not None:
            await opened.broker.disconnect()
        for role in roles:
            store: Any = getattr(opened, role)
            if role != "broker":
                await store.close()
        await opened.close()
        await backend.delete_namespace(url)


async def _next_event(opened: Opened) -> Event:
    assert opened.broker is not None
    event: Event = await asyncio.wait_for(opened.broker.next_published(), TIMEOUT)
    return event


@pytest.mark.parametrize("kind", ["nats", "redis"])
async def test_backends_take_over_long_ids_without_losing_the_link(kind: str) -> None:
    """Even without the edge check, a 5000-character id reaches no NATS
    subject or Redis channel unbounded: the calls answer, the link never drops
    (no resync), and the fan-out keeps flowing."""
    namespace = f"t{uuid4().hex[:12]}"
    if kind == "nats":
        require_service("NATS", 4222)
        url = f"nats://127.0.0.1:4222?namespace={namespace}"
    else:
        require_service("Redis", 6379)
        url = f"redis://127.0.0.1:6379/0?namespace={namespace}"
    async with _opened(url) as opened:
        assert opened.broker is not None and opened.rooms is not None
        assert opened.messages is not None and opened.presence is not None
        assert opened.typing is not None and opened.limits is not None
        assert opened.channels is not None
        await opened.broker.connect()
        watched = topics.room_messages("watched")
        await opened.broker.subscribe(watched)

        assert await opened.rooms.get(LONG_ID) is None
        assert await opened.rooms.members(LONG_ID) == []
        assert not await opened.rooms.is_banned(LONG_ID, LONG_ID)
        assert await opened.rooms.list_joined(LONG_ID) == []
        assert await opened.channels.get(LONG_ID) is None
        assert not await opened.channels.is_granted(LONG_ID, LONG_ID)
        messages = opened.messages
        position = await messages.position(LONG_ID, incarnation=LONG_ID)
        assert position.last_offset == 0
        assert (
            await messages.page(LONG_ID, HistoryWindow(limit=5), incarnation=LONG_ID)
        ).messages == []
        await messages.append(
            NewMessage(kind=MessageKind.MESSAGE, user_id=LONG_ID, room_id=LONG_ID, data=1),
            incarnation=LONG_ID,
        )
        page = await messages.page(LONG_ID, HistoryWindow(limit=5), incarnation=LONG_ID)
        assert len(page.messages) == 1
        assert [p.user_id for p in await opened.presence.get([LONG_ID])] in ([], [LONG_ID])
        assert await opened.typing.users(LONG_ID) == []
        assert await opened.limits.acquire(LONG_ID, limit=5, per_seconds=1.0)
        await opened.broker.publish(topics.room_messages(LONG_ID), "to nobody")
        await opened.ping()

        await opened.broker.publish(watched, "still flowing")
        assert await _next_event(opened) == Event(watched, "still flowing")


async def test_nats_connection_closed_by_a_protocol_error_is_opened_again(
    nats_service: ServiceProcess,
) -> None:
    """nats-py gives a connection up for good when the server answers -ERR;
    the link opens a new one, resubscribes and tells subscribers to resync."""
    async with _opened(f"{nats_service.url}?namespace=t{uuid4().hex[:8]}") as opened:
        assert opened.broker is not None and opened.rooms is not None
        await opened.broker.connect()
        watched = topics.room_messages("watched")
        await opened.broker.subscribe(watched)
        # A raw channel, past topics' bounds: the server closes the connection.
        await opened.broker.publish("y" * 5000, "too long a subject")

        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                assert await opened.rooms.get("anything") is None
                await opened.ping()
                break
            except Unavailable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)  # the link reconnects in the background
        assert await _next_event(opened) == Event(RESYNC_CHANNEL, "")
        await opened.broker.publish(watched, "after")
        assert await _next_event(opened) == Event(watched, "after")
