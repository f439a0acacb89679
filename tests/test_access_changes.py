"""Live subscriptions end exactly when their access does: mutation x
subscription x transport x backend.

Each test opens, on node B, every room subscription (`roomMessages` shared,
with `after:` and unshared; `typing` and `presence(roomId:)` shared and
unshared) over every transport (graphql-transport-ws, legacy graphql-ws, SSE
distinct connections and single connection) for a user who is about to lose
access and for one who keeps it; then runs the mutation on node A. Every
subscription of the first must end with the error the resolver gives (after
the room's announcement of the change, if it carries one); every one of the
second keeps receiving. On sqlite A and B are one process; on Redis and NATS
they are two, sharing the running server under a namespace of their own, so
the access change reaches B through the backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

from tests.conftest import TEST_SETTINGS, require_service
from tests.live import TIMEOUT, GraphQLClient, LiveServer, unique
from tests.sse_client import TOKEN_HEADER, EventReader, event_stream, request

SECRET = "access-changes-test-secret-" + "x" * 40
PORTS = {"redis": 6379, "nats": 4222}

CREATE_ROOM = """
mutation($id: ID!, $private: Boolean!) {
  createRoom(input: {id: $id, name: "access", isPrivate: $private}) { id }
}
"""
ADD = "mutation($room: ID!, $user: ID!) { addMember(roomId: $room, userId: $user) { userId } }"
JOIN = "mutation($room: ID!) { joinRoom(roomId: $room) { id } }"
SEND = """
mutation($room: ID!, $data: JSON) { sendMessage(input: {roomId: $room, data: $data}) { cursor } }
"""
UPDATE_PRIVATE = """
mutation($room: ID!, $private: Boolean!) {
  updateRoom(id: $room, input: {isPrivate: $private}) { isPrivate }
}
"""
REMOVE = "mutation($room: ID!, $user: ID!) { removeMember(roomId: $room, userId: $user) }"
BAN = "mutation($room: ID!, $user: ID!) { banMember(roomId: $room, userId: $user) }"
LEAVE = "mutation($room: ID!) { leaveRoom(roomId: $room) }"
DELETE_ROOM = "mutation($room: ID!) { deleteRoom(id: $room) }"
SET_ROLE = """
mutation($room: ID!, $user: ID!, $role: RoomRole!) {
  setMemberRole(roomId: $room, userId: $user, role: $role) { role }
}
"""
START_TYPING = "mutation($room: ID!) { startTyping(roomId: $room) }"
SET_PRESENCE = "mutation { setPresence(status: BUSY) { status } }"
ROOM = "query($room: ID!) { room(id: $room) { isPrivate } }"
CREATE_CHANNEL = """
mutation($id: ID!) { createChannel(input: {id: $id, name: "c", isPrivate: true}) { id } }
"""
GRANT = "mutation($c: ID!, $u: ID!) { grantChannel(channelId: $c, userId: $u) }"
REVOKE = "mutation($c: ID!, $u: ID!) { revokeChannel(channelId: $c, userId: $u) }"
DELETE_CHANNEL = "mutation($c: ID!) { deleteChannel(id: $c) }"
PUBLISH = "mutation($c: ID!, $data: JSON) { publish(input: {channelId: $c, data: $data}) { id } }"

# Shared executions run identical subscriptions once; a root field in an
# inline fragment keeps a subscription out of them, so both paths are covered.
ROOM_SUBSCRIPTIONS = {
    "messages": "subscription($room: ID!) { roomMessages(roomId: $room) { event data } }",
    "messages-after": """
      subscription($room: ID!, $after: String) {
        roomMessages(roomId: $room, after: $after) { event data }
      }""",
    "messages-alone": """
      subscription($room: ID!) {
        ... on Subscription { roomMessages(roomId: $room) { event data } }
      }
    """,
    "typing": "subscription($room: ID!) { typing(roomId: $room) { userId isTyping } }",
    "typing-alone": """
      subscription($room: ID!) { ... on Subscription { typing(roomId: $room) { userId isTyping } } }
    """,
    "presence": "subscription($room: ID!) { presence(roomId: $room) { userId status } }",
    "presence-alone": """
      subscription($room: ID!) { ... on Subscription { presence(roomId: $room) { userId status } } }
    """,
}
CHANNEL_SUBSCRIPTIONS = {
    "channel": "subscription($c: ID!) { channelMessages(channelId: $c) { data } }",
    "channel-alone": """
      subscription($c: ID!) { ... on Subscription { channelMessages(channelId: $c) { data } } }
    """,
}
TRANSPORTS = ["graphql-transport-ws", "graphql-ws", "sse-distinct", "sse-single"]


# --- servers ---------------------------------------------------------------------------


@dataclass
class Cluster:
    """Node A takes the mutations, node B holds the subscriptions."""

    a: LiveServer
    b: LiveServer


@pytest.fixture(scope="module", params=["sqlite", "redis", "nats"])
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    kind: str = request.param
    settings: dict[str, Any] = {
        **TEST_SETTINGS,
        # Every test opens ten connections per user (one per SSE stream).
        "max_connections_per_user": 50,
        "max_messages_per_second": 200,
        "jwt_secret": SECRET,
        # Non-members read public rooms here, presence included; with the
        # default (rooms) a room's presence is its members' only, which
        # test_presence_privacy.py covers.
        "presence_visibility": "everyone",
    }
    if kind == "sqlite":
        one = LiveServer(tmp_path_factory.mktemp("single"), settings).start()
        yield Cluster(one, one)
        one.stop()
        return
    require_service(kind, PORTS[kind])
    namespace = f"acc{uuid.uuid4().hex[:12]}"
    url = f"{kind}://127.0.0.1:{PORTS[kind]}" + ("/0" if kind == "redis" else "")
    shared = {**settings, "backend": kind, "backend_urls": [f"{url}?namespace={namespace}"]}
    nodes = [
        LiveServer(tmp_path_factory.mktemp(f"node-{n}"), {**shared, "node_id": f"node-{n}"})
        for n in ("a", "b")
    ]
    for node in nodes:
        node.start()
    try:
        yield Cluster(*nodes)
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
def nodes(cluster: Cluster) -> Iterator[Cluster]:
    yield cluster
    cluster.b.wait_idle()


# --- one subscription, whatever its transport -------------------------------------------


@dataclass
class Sub:
    """The results of one subscription: ("data", data), ("error", errors) or
    ("complete", None), in the order they came."""

    name: str
    frames: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)

    async def frame(self) -> tuple[str, Any]:
        try:
            return await asyncio.wait_for(self.frames.get(), TIMEOUT)
        except TimeoutError:
            raise AssertionError(f"{self.name}: nothing within {TIMEOUT}s") from None

    def put_result(self, payload: dict[str, Any]) -> None:
        if payload.get("errors"):
            self.frames.put_nowait(("error", payload["errors"]))
        else:
            self.frames.put_nowait(("data", payload["data"]))

    async def receives(self, wanted: Any, key: str = "data") -> None:
        """Data frames until one whose value has `wanted` under `key`."""
        while True:
            kind, body = await self.frame()
            assert kind == "data", (self.name, kind, body)
            [value] = body.values()
            if value[key] == wanted:
                return

    async def ends_with(self, code: str) -> None:
        """The error, then complete (after what was on its way: the room's
        announcement of the change, or a typing indicator expiring)."""
        while True:
            kind, body = await self.frame()
            if kind == "data":
                continue
            assert kind == "error", (self.name, kind, body)
            assert body[0]["extensions"]["code"] == code, (self.name, body)
            assert await self.frame() == ("complete", None), self.name
            return


class Transport:
    """Opens subscriptions for one user over one transport."""

    def __init__(self, server: LiveServer, user: str, stack: AsyncExitStack) -> None:
        self.server = server
        self.user = user
        self.token = server.token(user)
        self.stack = stack

    async def open(self) -> None:
        pass

    async def subscribe(self, name: str, query: str, variables: dict[str, Any]) -> Sub:
        raise NotImplementedError


class WebSocketTransport(Transport):
    protocol = "graphql-transport-ws"

    async def open(self) -> None:
        self.ws: ClientConnection = await self.stack.enter_async_context(
            websockets.connect(
                self.server.ws_url,
                subprotocols=[Subprotocol(self.protocol)],
                open_timeout=TIMEOUT,
            )
        )
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {self.token}"}}
        await self.ws.send(json.dumps(init))
        ack = json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT))
        assert ack["type"] == "connection_ack", ack
        self.subs: dict[str, Sub] = {}
        reader = asyncio.create_task(self._read())
        self.stack.callback(reader.cancel)

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            await self._dispatch()

    async def _dispatch(self) -> None:
        async for raw in self.ws:
            frame = json.loads(raw)
            kind = frame.get("type")
            if kind == "ping":
                await self.ws.send(json.dumps({"type": "pong"}))
            elif kind in ("next", "data"):
                self.subs[frame["id"]].put_result(frame["payload"])
            elif kind == "error":
                errors = frame["payload"]
                sub = self.subs[frame["id"]]
                sub.frames.put_nowait(("error", errors if isinstance(errors, list) else [errors]))
            elif kind == "complete":
                self.subs[frame["id"]].frames.put_nowait(("complete", None))

    async def subscribe(self, name: str, query: str, variables: dict[str, Any]) -> Sub:
        sub = self.subs[name] = Sub(name)
        kind = "subscribe" if self.protocol == "graphql-transport-ws" else "start"
        payload = {"query": query, "variables": variables}
        await self.ws.send(json.dumps({"id": name, "type": kind, "payload": payload}))
        return sub


class LegacyWebSocketTransport(WebSocketTransport):
    protocol = "graphql-ws"


class DistinctStreamsTransport(Transport):
    """SSE distinct connections mode: one event stream per subscription."""

    async def subscribe(self, name: str, query: str, variables: dict[str, Any]) -> Sub:
        sub = Sub(name)
        body = {"query": query, "variables": variables}
        events = await self.stack.enter_async_context(
            event_stream(self.server, self.token, json=body)
        )
        task = asyncio.create_task(self._pump(events, sub))
        self.stack.callback(task.cancel)
        return sub

    async def _pump(self, events: EventReader, sub: Sub) -> None:
        while True:
            try:
                event = await events.next(timeout=3600)
            except AssertionError:  # the stream ended: after its complete
                return
            if event.event == "next":
                sub.put_result(event.json())
            elif event.event == "complete":
                sub.frames.put_nowait(("complete", None))


class SingleStreamTransport(Transport):
    """SSE single connection mode: a reserved stream, operations by POST."""

    async def open(self) -> None:
        reserved = await request(self.server, "PUT", self.token)
        assert reserved.status_code == 201, reserved.text
        self.stream_token = reserved.text
        events = await self.stack.enter_async_context(
            event_stream(
                self.server, self.token, method="GET", headers={TOKEN_HEADER: self.stream_token}
            )
        )
        self.subs: dict[str, Sub] = {}
        task = asyncio.create_task(self._pump(events))
        self.stack.callback(task.cancel)

    async def _pump(self, events: EventReader) -> None:
        while True:
            try:
                event = await events.next(timeout=3600)
            except AssertionError:  # the stream ended: the test is leaving
                return
            body = event.json()
            if event.event == "next":
                self.subs[body["id"]].put_result(body["payload"])
            elif event.event == "complete":
                self.subs[body["id"]].frames.put_nowait(("complete", None))

    async def subscribe(self, name: str, query: str, variables: dict[str, Any]) -> Sub:
        sub = self.subs[name] = Sub(name)
        response = await request(
            self.server,
            "POST",
            self.token,
            json={"query": query, "variables": variables, "extensions": {"operationId": name}},
            headers={TOKEN_HEADER: self.stream_token},
        )
        assert response.status_code == 202, response.text
        return sub


TRANSPORT_CLASSES: dict[str, type[Transport]] = {
    "graphql-transport-ws": WebSocketTransport,
    "graphql-ws": LegacyWebSocketTransport,
    "sse-distinct": DistinctStreamsTransport,
    "sse-single": SingleStreamTransport,
}


@asynccontextmanager
async def subscribed(
    server: LiveServer, user: str, subscriptions: dict[str, str], variables: dict[str, Any]
) -> AsyncIterator[dict[str, Sub]]:
    """`user`'s subscriptions over every transport, keyed `transport/name`."""
    async with AsyncExitStack() as stack:
        subs: dict[str, Sub] = {}
        for transport_name in TRANSPORTS:
            transport = TRANSPORT_CLASSES[transport_name](server, user, stack)
            await transport.open()
            for name, query in subscriptions.items():
                key = f"{transport_name}/{name}"
                subs[key] = await transport.subscribe(key, query, variables)
        yield subs


async def all_of(*waits: Any) -> None:
    """Wait for all; fail naming every one that failed."""
    results = await asyncio.gather(*waits, return_exceptions=True)
    failed = [repr(r) for r in results if isinstance(r, BaseException)]
    assert not failed, "\n".join(failed)


# --- rooms -----------------------------------------------------------------------------


@dataclass
class RoomScene:
    owner: GraphQLClient
    owner_id: str
    room: str
    keeps_id: str
    loses_id: str


async def room_scene(nodes: Cluster, *, private: bool, loser_joins: bool = True) -> RoomScene:
    owner_id, keeps_id, loses_id = unique("owner"), unique("keeps"), unique("loses")
    owner = nodes.a.client(owner_id)
    room = unique("room")
    await owner.execute(CREATE_ROOM, id=room, private=private)
    await owner.execute(ADD, room=room, user=keeps_id)
    if loser_joins:
        await owner.execute(ADD, room=room, user=loses_id)
    return RoomScene(owner, owner_id, room, keeps_id, loses_id)


@asynccontextmanager
async def watching(
    nodes: Cluster, scene: RoomScene, *, others: int = 0
) -> AsyncIterator[tuple[dict[str, Sub], ...]]:
    """Both users' room subscriptions on node B, live (with `others` already)."""
    sent = await scene.owner.execute(SEND, room=scene.room, data={"before": True})
    variables = {"room": scene.room, "after": sent["sendMessage"]["cursor"]}
    async with (
        subscribed(nodes.b, scene.keeps_id, ROOM_SUBSCRIPTIONS, variables) as keeps,
        subscribed(nodes.b, scene.loses_id, ROOM_SUBSCRIPTIONS, variables) as loses,
    ):
        await nodes.b.wait_subscribers(others + len(keeps) + len(loses))
        yield keeps, loses


async def keep_receiving(nodes: Cluster, scene: RoomScene, subs: dict[str, Sub]) -> None:
    """A message, a typing and a presence change by the owner reach every one."""
    mark = {"after": unique("mark")}
    await scene.owner.execute(SEND, room=scene.room, data=mark)
    await scene.owner.execute(START_TYPING, room=scene.room)
    await scene.owner.execute(SET_PRESENCE)
    waits = []
    for key, sub in subs.items():
        if "/messages" in key:
            waits.append(sub.receives(mark))
        else:
            # {userId, isTyping} or {userId, status}: the owner's change.
            waits.append(sub.receives(scene.owner_id, key="userId"))
    await all_of(*waits)


async def cut_off(
    nodes: Cluster, scene: RoomScene, keeps: dict[str, Sub], loses: dict[str, Sub], code: str
) -> None:
    """Every subscription of the user who lost access ends with `code`, on
    node B too; the other user's keep receiving."""
    await all_of(*(sub.ends_with(code) for sub in loses.values()))
    await nodes.b.wait_subscribers(len(keeps))
    await keep_receiving(nodes, scene, keeps)


async def test_making_a_room_private_cuts_off_non_members(nodes: Cluster) -> None:
    scene = await room_scene(nodes, private=False, loser_joins=False)
    async with watching(nodes, scene) as (keeps, loses):
        await keep_receiving(nodes, scene, {**keeps, **loses})  # public: both read
        await scene.owner.execute(UPDATE_PRIVATE, room=scene.room, private=True)
        await cut_off(nodes, scene, keeps, loses, "NOT_FOUND")
    # What the subscriptions were told is what a query says.
    assert await nodes.b.client(scene.loses_id).execute(ROOM, room=scene.room) == {"room": None}


async def test_removing_a_member_of_a_private_room(nodes: Cluster) -> None:
    scene = await room_scene(nodes, private=True)
    async with watching(nodes, scene) as (keeps, loses):
        await scene.owner.execute(REMOVE, room=scene.room, user=scene.loses_id)
        await cut_off(nodes, scene, keeps, loses, "NOT_FOUND")


async def test_banning_a_reader_of_a_public_room(nodes: Cluster) -> None:
    scene = await room_scene(nodes, private=False, loser_joins=False)
    async with watching(nodes, scene) as (keeps, loses):
        await scene.owner.execute(BAN, room=scene.room, user=scene.loses_id)
        await cut_off(nodes, scene, keeps, loses, "FORBIDDEN")


async def test_leaving_a_private_room(nodes: Cluster) -> None:
    scene = await room_scene(nodes, private=True)
    async with watching(nodes, scene) as (keeps, loses):
        await nodes.a.client(scene.loses_id).execute(LEAVE, room=scene.room)
        await cut_off(nodes, scene, keeps, loses, "NOT_FOUND")


async def test_deleting_a_room_ends_all_its_subscriptions_and_no_others(nodes: Cluster) -> None:
    scene = await room_scene(nodes, private=False)
    other = await room_scene(nodes, private=False)
    async with (
        watching(nodes, other) as (other_keeps, other_loses),
        watching(nodes, scene, others=2 * len(ROOM_SUBSCRIPTIONS) * len(TRANSPORTS)) as (
            keeps,
            loses,
        ),
    ):
        await scene.owner.execute(DELETE_ROOM, room=scene.room)
        await all_of(*(sub.ends_with("NOT_FOUND") for sub in [*keeps.values(), *loses.values()]))
        await nodes.b.wait_subscribers(len(other_keeps) + len(other_loses))
        await keep_receiving(nodes, other, {**other_keeps, **other_loses})


async def test_changes_that_narrow_nothing_end_nothing(nodes: Cluster) -> None:
    """A role change, and removing a member from a public room (which anyone
    may still read), are announced, re-checked, and refuse no one."""
    scene = await room_scene(nodes, private=False)
    async with watching(nodes, scene) as (keeps, loses):
        await scene.owner.execute(SET_ROLE, room=scene.room, user=scene.loses_id, role="ADMIN")
        await scene.owner.execute(SET_ROLE, room=scene.room, user=scene.loses_id, role="MEMBER")
        await scene.owner.execute(REMOVE, room=scene.room, user=scene.loses_id)
        await keep_receiving(nodes, scene, {**keeps, **loses})
        await nodes.b.wait_subscribers(len(keeps) + len(loses))


async def test_only_the_owner_makes_a_private_room_public(nodes: Cluster) -> None:
    scene = await room_scene(nodes, private=True)
    await scene.owner.execute(SET_ROLE, room=scene.room, user=scene.keeps_id, role="ADMIN")
    admin = nodes.a.client(scene.keeps_id)
    refused = await admin.error(UPDATE_PRIVATE, room=scene.room, private=False)
    assert refused.code == "FORBIDDEN"
    assert str(refused) == "only the owner may make a private room public"
    # Nothing changed: still private, still invisible to others.
    outsider = nodes.b.client(unique("outsider"))
    assert await outsider.execute(ROOM, room=scene.room) == {"room": None}
    assert await admin.execute(ROOM, room=scene.room) == {"room": {"isPrivate": True}}
    # The admin may still make it private (a no-op) and the owner public.
    assert await admin.execute(UPDATE_PRIVATE, room=scene.room, private=True) == {
        "updateRoom": {"isPrivate": True}
    }
    assert await scene.owner.execute(UPDATE_PRIVATE, room=scene.room, private=False) == {
        "updateRoom": {"isPrivate": False}
    }
    assert await outsider.execute(ROOM, room=scene.room) == {"room": {"isPrivate": False}}


# --- channels --------------------------------------------------------------------------


@asynccontextmanager
async def channel_scene(
    nodes: Cluster,
) -> AsyncIterator[tuple[GraphQLClient, str, str, dict[str, Sub], dict[str, Sub]]]:
    owner_id, keeps_id, loses_id = unique("owner"), unique("keeps"), unique("loses")
    owner = nodes.a.client(owner_id)
    channel = unique("channel")
    await owner.execute(CREATE_CHANNEL, id=channel)
    for user in (keeps_id, loses_id):
        await owner.execute(GRANT, c=channel, u=user)
    variables = {"c": channel}
    async with (
        subscribed(nodes.b, keeps_id, CHANNEL_SUBSCRIPTIONS, variables) as keeps,
        subscribed(nodes.b, loses_id, CHANNEL_SUBSCRIPTIONS, variables) as loses,
    ):
        await nodes.b.wait_subscribers(len(keeps) + len(loses))
        yield owner, channel, loses_id, keeps, loses


async def test_revoking_a_channel(nodes: Cluster) -> None:
    async with channel_scene(nodes) as (owner, channel, loses_id, keeps, loses):
        await owner.execute(REVOKE, c=channel, u=loses_id)
        await all_of(*(sub.ends_with("NOT_FOUND") for sub in loses.values()))
        await nodes.b.wait_subscribers(len(keeps))
        mark = {"after": unique("mark")}
        await owner.execute(PUBLISH, c=channel, data=mark)
        await all_of(*(sub.receives(mark) for sub in keeps.values()))


async def test_deleting_a_channel(nodes: Cluster) -> None:
    async with channel_scene(nodes) as (owner, channel, _, keeps, loses):
        await owner.execute(DELETE_CHANNEL, c=channel)
        everyone = [*keeps.values(), *loses.values()]
        await all_of(*(sub.ends_with("NOT_FOUND") for sub in everyone))
        await nodes.b.wait_subscribers(0)
