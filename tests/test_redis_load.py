"""The Redis backend under a burst of load: it waits, it never looks like an outage.

A server on the shared Redis (a namespace of the test's own) with a small
connection pool takes a burst of concurrent WebSocket connects, each member
subscribing to its room and posting: no request fails with UNAVAILABLE while
Redis is up, and every member that was acknowledged and subscribed receives
every message of its room (or is told it will not: an error, a complete or a
close), never silently nothing. The load is bounded; nothing is timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

from backends.redis import delete_namespace
from tests.conftest import TEST_SETTINGS, require_service
from tests.live import TIMEOUT, GraphQLClient, GraphQLError, LiveServer, unique
from tests.services import ServiceProcess

ROOMS = 10
MEMBERS = 5
MESSAGES = 4  # per member

CREATE = 'mutation($id: ID!) { createRoom(input: {id: $id, name: "r"}) { id } }'
JOIN = "mutation($id: ID!) { joinRoom(roomId: $id) { id } }"
SEND = """
mutation($input: SendMessageInput!) { sendMessage(input: $input) { cursor } }
"""
PRESENCE = "query($ids: [ID!]!) { presence(userIds: $ids) { userId status } }"
MESSAGES_SUB = "subscription($roomId: ID!) { roomMessages(roomId: $roomId) { type data } }"


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    require_service("Redis", 6379)
    url = f"redis://127.0.0.1:6379/0?namespace=t{uuid4().hex[:12]}"
    yield url
    await delete_namespace(url)


def settings(url: str, **extra: Any) -> dict[str, Any]:
    return {
        **TEST_SETTINGS,
        "backend": "redis",
        "backend_urls": [url],
        "max_connections_per_user": 10,
        "max_messages_per_second": 1000,
        **extra,
    }


@dataclass
class Member:
    """One member's connection: what it was told, and what it received."""

    user: str
    room: str
    token: str
    ws: ClientConnection | None = None
    received: list[Any] = field(default_factory=list)
    told: list[str] = field(default_factory=list)  # error / complete / close
    answers: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    refused_inits: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def connect(self, server: LiveServer) -> None:
        """Connect and init, again after each refusal (as a client would)."""
        for _ in range(200):
            ws = await websockets.connect(
                server.ws_url,
                subprotocols=[Subprotocol("graphql-transport-ws")],
                open_timeout=TIMEOUT,
            )
            init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {self.token}"}}
            await ws.send(json.dumps(init))
            try:
                reply = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            except websockets.ConnectionClosed as closed:
                self.refused_inits.append(f"{closed.rcvd.code if closed.rcvd else None}")
                continue
            if reply["type"] == "connection_ack":
                self.ws = ws
                self.reader = asyncio.create_task(self._read(ws))
                return
            await ws.close()
            self.refused_inits.append(str(reply))
        raise AssertionError(f"{self.user} never got an ack: {self.refused_inits}")

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                frame = json.loads(raw)
                kind, op = frame.get("type"), frame.get("id")
                if kind == "ping":
                    await ws.send(json.dumps({"type": "pong"}))
                elif op == "sub" and kind == "next" and not frame["payload"].get("errors"):
                    self.received.append(frame["payload"]["data"]["roomMessages"]["data"])
                    self.arrived.set()
                elif op == "sub":
                    self.told.append(json.dumps(frame))
                    self.arrived.set()
                elif op in self.answers and not self.answers[op].done():
                    self.answers[op].set_result(frame)
        except websockets.ConnectionClosed as closed:
            self.told.append(f"closed {closed.rcvd.code if closed.rcvd else None}")
        finally:
            self.arrived.set()
            for future in self.answers.values():
                if not future.done():
                    future.set_exception(ConnectionError("closed"))

    async def subscribe(self) -> None:
        assert self.ws is not None
        payload = {"query": MESSAGES_SUB, "variables": {"roomId": self.room}}
        await self.ws.send(json.dumps({"id": "sub", "type": "subscribe", "payload": payload}))

    async def send(self, n: int) -> dict[str, Any]:
        """Send one message over the socket; the answer's first frame."""
        return await self.send_data({"from": self.user, "n": n}, f"send-{n}")

    async def send_data(self, data: dict[str, Any], op: str) -> dict[str, Any]:
        assert self.ws is not None
        # An id of its own per attempt: a retry under the id of a refused
        # attempt took that attempt's late `complete` for its own answer, and
        # counted a send that was never stored as acknowledged.
        op = f"{op}-{len(self.answers)}"
        self.answers[op] = asyncio.get_running_loop().create_future()
        payload = {"query": SEND, "variables": {"input": {"roomId": self.room, "data": data}}}
        await self.ws.send(json.dumps({"id": op, "type": "subscribe", "payload": payload}))
        return await asyncio.wait_for(self.answers[op], 30)

    def with_key(self, key: str) -> list[Any]:
        return [data for data in self.received if key in data]

    async def wait_for(self, count: int, *, key: str = "n") -> None:
        """Until `count` messages with `key` came or the member was told it ends."""
        while len(self.with_key(key)) < count and not self.told:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), 30)
            except TimeoutError:
                return  # silent: the caller says who

    def open(self) -> bool:
        return self.ws is not None and not any(t.startswith("closed") for t in self.told)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)


async def setup(client: GraphQLClient, query: str, room: str) -> None:
    """Run a setup mutation, again while the server is short of connections."""
    for _ in range(100):
        try:
            await client.execute(query, id=room)
            return
        except GraphQLError as exc:
            if "unavailable" not in str(exc) and "overloaded" not in str(exc).lower():
                raise
    raise AssertionError(f"setup never succeeded: {query}")


async def members_of_rooms(server: LiveServer) -> list[Member]:
    members: list[Member] = []
    for r in range(ROOMS):
        room = unique("room")
        users = [unique(f"u{r}x{m}") for m in range(MEMBERS)]
        await setup(server.client(users[0]), CREATE, room)
        for user in users[1:]:
            await setup(GraphQLClient(server, server.token(user)), JOIN, room)
        members.extend(Member(user, room, server.token(user)) for user in users)
    return members


async def chat(server: LiveServer) -> tuple[list[Member], list[dict[str, Any]]]:
    """Burst-connect every member, subscribe, then everyone posts at once.

    Returns the members and every send's answer frame."""
    members = await members_of_rooms(server)
    await asyncio.gather(*(m.connect(server) for m in members))
    await asyncio.gather(*(m.subscribe() for m in members))
    # Every subscription holds its hub subscription before anyone posts.
    await server.wait_subscribers(len(members), timeout=30)
    answers = await asyncio.gather(*(m.send(n) for m in members for n in range(MESSAGES)))
    return members, list(answers)


async def probed_or_told(server: LiveServer, members: list[Member]) -> None:
    """Probe each room (its first member sends) until every member saw a probe
    or was told its subscription failed; AssertionError naming the silent."""
    for attempt in range(50):
        waiting = [m for m in members if not m.told and not m.with_key("probe")]
        if not waiting:
            return
        for room in {m.room for m in waiting}:
            sender = next(m for m in members if m.room == room and m.open())
            await sender.send_data({"probe": attempt}, f"probe-{attempt}")
        # Not there within a second: probe again (one refused reached nobody).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(m.wait_for(1, key="probe") for m in waiting)), 1
            )
    silent = [(m.user, m.received) for m in members if not m.told and not m.with_key("probe")]
    raise AssertionError(f"subscribed, never told, and no probe ever reached: {silent}")


def codes(answer: dict[str, Any]) -> list[str]:
    errors = answer.get("payload")
    if answer.get("type") == "next":
        errors = answer["payload"].get("errors")
    return [e.get("extensions", {}).get("code", "?") for e in errors or []]


@pytest.fixture
def load_server(
    make_server: type[LiveServer], tmp_path: Path, redis_url: str
) -> Iterator[LiveServer]:
    # A pool far smaller than the burst: requests must wait for a connection.
    # The process's budget of operations in flight (tests/test_overload.py)
    # is opened to the whole burst, so only the pool is under test here.
    config = settings(
        redis_url,
        redis_max_connections=4,
        redis_pool_wait="10s",
        max_operations_in_flight=ROOMS * MEMBERS * MESSAGES,
    )
    server = make_server(tmp_path / "node", config).start()
    yield server


async def test_a_burst_waits_for_the_pool_and_everyone_gets_everything(
    load_server: LiveServer,
) -> None:
    members, answers = await chat(load_server)
    try:
        refused = [codes(a) for a in answers if codes(a)]
        assert refused == [], f"{len(refused)} sends refused under load: {refused[:5]}"
        inits = [m.refused_inits for m in members if m.refused_inits]
        assert inits == [], f"connection_init refused under load: {inits[:5]}"
        expected = MEMBERS * MESSAGES
        await asyncio.gather(*(m.wait_for(expected) for m in members))
        short = [
            (m.user, len(m.with_key("n")), m.told)
            for m in members
            if len(m.with_key("n")) < expected
        ]
        assert short == [], f"members short of their room's {expected} messages: {short[:5]}"
    finally:
        await asyncio.gather(*(m.close() for m in members))


async def test_members_refused_at_first_receive_everything_after_reconnecting(
    make_server: type[LiveServer], tmp_path: Path, redis_url: str
) -> None:
    # Two connections and next to no wait: the burst is refused in part
    # (OVERLOADED), at init, at subscribe or at send; whoever is acknowledged
    # and subscribed must then get every message of its room, or be told.
    config = settings(redis_url, redis_max_connections=2, redis_pool_wait="2ms")
    server = make_server(tmp_path / "node", config).start()
    members = await members_of_rooms(server)
    try:
        await asyncio.gather(*(m.connect(server) for m in members))
        await asyncio.gather(*(m.subscribe() for m in members))
        await probed_or_told(server, members)
        for n in range(MESSAGES):
            # One sender per room, retried until it is taken: the load is over.
            for sender in members[::MEMBERS]:
                while codes(await sender.send(n)):
                    pass
        per_room = MESSAGES
        await asyncio.gather(*(m.wait_for(per_room, key="n") for m in members))
        silent = [
            (m.user, m.received) for m in members if not m.told and len(m.with_key("n")) < per_room
        ]
        assert silent == [], f"members that got neither their messages nor a word: {silent}"
        # Told why: load, never a failure of the server's own.
        internal = [m.told for m in members if "INTERNAL_SERVER_ERROR" in str(m.told)]
        assert internal == [], internal[:3]
    finally:
        await asyncio.gather(*(m.close() for m in members))
    # Every connection is gone: presence must say so. A connection refused
    # after it was counted (its ONLINE could not be published) was kept by
    # the heartbeat for good: its user stayed online, and counted.
    await offline(server, members)


async def offline(server: LiveServer, members: list[Member]) -> None:
    """Wait until presence shows every member's user OFFLINE."""
    deadline = asyncio.get_running_loop().time() + 30
    online: list[str] = []
    while asyncio.get_running_loop().time() < deadline:
        online = []
        for first in members[::MEMBERS]:
            room_users = [m.user for m in members if m.room == first.room]
            try:
                found = await server.client(first.user).execute(PRESENCE, ids=room_users)
            except GraphQLError:
                online = ["(refused)"]  # still overloaded: ask again
                continue
            online += [p["userId"] for p in found["presence"] if p["status"] != "OFFLINE"]
        if not online:
            return
        await asyncio.sleep(0.1)  # presence expires on the server's clock
    raise AssertionError(f"still online after every connection closed: {online}")


async def test_an_outage_under_load_is_unavailable_not_overloaded(
    make_server: type[LiveServer], tmp_path: Path
) -> None:
    # A pool of two and a wait of a minute: were the outage taken for load,
    # the burst below would wait for the minute and then say OVERLOADED.
    redis = ServiceProcess("redis", tmp_path / "redis", persistent=False).start()
    try:
        config = settings(redis.url + "/0", redis_max_connections=2, redis_pool_wait="60s")
        server = make_server(tmp_path / "node", config).start()
        owner = unique("owner")
        room = unique("room")
        await setup(server.client(owner), CREATE, room)
        redis.stop()
        client = server.client(owner)
        refusals = await asyncio.gather(
            *(client.error(SEND, input={"roomId": room, "data": {"n": n}}) for n in range(20))
        )
        assert {e.code for e in refusals} == {"UNAVAILABLE"}
    finally:
        redis.stop()
