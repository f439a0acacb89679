"""Shared execution of identical subscriptions (transport/shared.py), on raw
frames over the wire: the same bytes as unshared execution, each frame with
its subscriber's id, groups split by document, variables and operation name,
subscribers leaving and joining mid-stream, permission per subscriber, the
viewer independence of the shared payload types, and the slow-consumer policy.

Each runs on both ways a shared frame goes out (transport/connection.py):
written straight to the socket (transport/adapters/uvicorn.py), and through
ASGI by the connection's writer task, which is what a connection with
permessage-deflate gets (the test client offers it, so turning compression
on in the server takes that path).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import warnings
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import graphql
import httpx
import pytest
import websockets
from strawberry.types.base import StrawberryObjectDefinition
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from resolvers.subscriptions import FIELDS
from schema import build_schema
from tests.conftest import TEST_SETTINGS
from tests.live import TIMEOUT, GraphQLClient, LiveServer, unique
from tests.sse_client import TOKEN_HEADER, event_stream
from tests.sse_client import request as sse_request

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
PROTOCOLS = [TRANSPORT_WS, LEGACY_WS]

CREATE_ROOM = """
mutation($id: ID!, $private: Boolean!) {
  createRoom(input: {id: $id, name: "shared", isPrivate: $private}) { id }
}
"""
JOIN = "mutation($room: ID!) { joinRoom(roomId: $room) { id } }"
ADD = "mutation($room: ID!, $user: ID!) { addMember(roomId: $room, userId: $user) { userId } }"
REMOVE = "mutation($room: ID!, $user: ID!) { removeMember(roomId: $room, userId: $user) }"
BAN = "mutation($room: ID!, $user: ID!) { banMember(roomId: $room, userId: $user) }"
SEND = """
mutation($room: ID!, $data: JSON, $metadata: JSON, $thread: ID) {
  sendMessage(input: {roomId: $room, data: $data, metadata: $metadata, threadId: $thread}) {
    id cursor
  }
}
"""
# Every field of Message. With `after: null` it is shared; with a cursor it
# replays (nothing, when the cursor is the room's last) and runs unshared.
ALL_FIELDS = """
subscription($room: ID!, $after: String) {
  roomMessages(roomId: $room, after: $after) {
    id type event roomId channelId userId data metadata timestamp threadId cursor
  }
}
"""
DATA = "subscription($room: ID!) { roomMessages(roomId: $room) { data } }"
DATA_USER = "subscription($room: ID!) { roomMessages(roomId: $room) { data userId } }"
IN_THREAD = (
    "subscription($room: ID!, $thread: ID) { roomMessages(roomId: $room, threadId: $thread) "
    "{ data threadId } }"
)
TWO_OPERATIONS = """
subscription Plain($room: ID!) { roomMessages(roomId: $room) { data } }
subscription WithUser($room: ID!) { roomMessages(roomId: $room) { data userId } }
"""

# Data that a JSON encoder could write in more than one way.
VARIED: list[tuple[Any, Any]] = [
    ({"text": "héllo ☃ 😀 日本語", "quote": '"\\/</script>\u2028\n\t'}, {"k": "v"}),
    ({"nested": {"a": [1, {"b": None}, [[]]], "z": {"y": {"x": True}}}}, None),
    ({"floats": [0.1, 1e16, 1.5e-7, -0.0, 123456.789, 2.5], "ints": [0, -1, 2**53]}, [0.1]),
    ({"emptyObject": {}, "emptyArray": [], "null": None, "false": False}, {}),
    (None, None),
    ("just a string", 1e16),
    ([1, "two", 3.0, None], {"order": {"b": 1, "a": 2}}),
]


WRITE_PATHS = {"direct": {}, "queued": {"websocket_compression": True}}


@pytest.fixture(scope="module", params=list(WRITE_PATHS))
def module_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    settings = {**TEST_SETTINGS, **WRITE_PATHS[request.param]}
    live = LiveServer(tmp_path_factory.mktemp("server"), settings).start()
    yield live
    live.stop()


# --- raw frames ------------------------------------------------------------------------


class Raw:
    """A WebSocket client on raw text frames, sorted by operation id.

    Server pings are answered and legacy keep-alives skipped; every other
    frame is kept as the exact text the server sent.
    """

    def __init__(self, ws: ClientConnection, protocol: str) -> None:
        self.ws = ws
        self.protocol = protocol
        self.queues: defaultdict[str | None, asyncio.Queue[str]] = defaultdict(asyncio.Queue)
        self.reader: asyncio.Task[None] | None = None

    def start_reading(self) -> None:
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            assert isinstance(raw, str), raw
            frame = json.loads(raw)
            if frame.get("type") == "ping":
                await self.ws.send(json.dumps({"type": "pong"}))
            elif frame.get("type") != "ka":
                await self.queues[frame.get("id")].put(raw)

    async def send(self, frame: object) -> None:
        await self.ws.send(json.dumps(frame))

    async def start(
        self, op_id: str, query: str, operation_name: str | None = None, **variables: Any
    ) -> None:
        payload: dict[str, Any] = {"query": query, "variables": variables}
        if operation_name is not None:
            payload["operationName"] = operation_name
        kind = "subscribe" if self.protocol == TRANSPORT_WS else "start"
        await self.send({"id": op_id, "type": kind, "payload": payload})

    async def stop(self, op_id: str) -> None:
        kind = "complete" if self.protocol == TRANSPORT_WS else "stop"
        await self.send({"id": op_id, "type": kind})
        if self.protocol == LEGACY_WS:  # the legacy server confirms a stop
            assert await self.frame(op_id) == {"type": "complete", "id": op_id}

    async def text(self, op_id: str, timeout: float = TIMEOUT) -> str:
        return await asyncio.wait_for(self.queues[op_id].get(), timeout)

    async def frame(self, op_id: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(await self.text(op_id, timeout))
        return frame

    async def data(self, op_id: str) -> dict[str, Any]:
        """The data of the operation's next result, which must have no errors."""
        frame = await self.frame(op_id)
        kind = "next" if self.protocol == TRANSPORT_WS else "data"
        assert frame["type"] == kind and "errors" not in frame["payload"], frame
        data: dict[str, Any] = frame["payload"]["data"]
        return data

    async def texts(self, op_id: str, count: int) -> list[str]:
        return [await self.text(op_id) for _ in range(count)]

    def assert_quiet(self, op_id: str) -> None:
        queue = self.queues[op_id]
        assert queue.empty(), f"unexpected frame {queue.get_nowait()}"

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)
        await self.ws.close()


@asynccontextmanager
async def connect(live: LiveServer, user: str, protocol: str = TRANSPORT_WS) -> AsyncIterator[Raw]:
    """An acknowledged connection of `user`, reading in the background."""
    async with websockets.connect(
        live.ws_url, subprotocols=[Subprotocol(protocol)], open_timeout=TIMEOUT
    ) as ws:
        raw = Raw(ws, protocol)
        await raw.send({"type": "connection_init", "payload": auth(live, user)})
        ack = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert ack["type"] == "connection_ack", ack
        raw.start_reading()
        try:
            yield raw
        finally:
            await raw.close()


def auth(live: LiveServer, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {live.token(user)}"}


def without_id(text: str, op_id: str) -> str:
    """The frame with its operation id replaced by a fixed one."""
    marker = '"id":' + json.dumps(op_id)
    assert text.count(marker) == 1, (op_id, text)
    return text.replace(marker, '"id":"*"')


async def new_room(owner: GraphQLClient, *, private: bool = False) -> str:
    room = unique("room")
    await owner.execute(CREATE_ROOM, id=room, private=private)
    return room


async def send(
    client: GraphQLClient, room: str, data: Any, metadata: Any = None, thread: str | None = None
) -> dict[str, Any]:
    sent: dict[str, Any] = (
        await client.execute(SEND, room=room, data=data, metadata=metadata, thread=thread)
    )["sendMessage"]
    return sent


def data_frames(protocol: str, op_id: str, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    kind = "next" if protocol == TRANSPORT_WS else "data"
    return [{"id": op_id, "type": kind, "payload": {"data": r}} for r in results]


async def frames(raw: Raw, op_id: str, count: int) -> list[dict[str, Any]]:
    return [json.loads(text) for text in await raw.texts(op_id, count)]


async def each_gets(raw: Raw, protocol: str, op_ids: list[str], n: int) -> None:
    """Each of the subscriptions `op_ids` gets the message {"n": n} next."""
    for op_id in op_ids:
        results = [{"roomMessages": {"data": {"n": n}}}]
        assert await raw.frame(op_id) == data_frames(protocol, op_id, results)[0]


# --- same bytes as unshared ------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_shared_frames_are_the_bytes_unshared_execution_sends(
    server: LiveServer, protocol: str
) -> None:
    owner_id = unique("owner")
    owner = server.client(owner_id)
    room = await new_room(owner)
    last = await send(owner, room, {"before": "subscribing"})
    users = [unique("a"), unique("b"), unique("c")]
    async with (
        connect(server, users[0], protocol) as a,
        connect(server, users[1], protocol) as b,
        connect(server, users[2], protocol) as c,
    ):
        # A and B share one execution; C replays from the room's last cursor
        # (nothing to replay), which runs unshared, then goes live.
        await a.start("a-1", ALL_FIELDS, room=room, after=None)
        await b.start("op B", ALL_FIELDS, room=room, after=None)
        await c.start("c", ALL_FIELDS, room=room, after=last["cursor"])
        await server.wait_subscribers(3)
        sent = [await send(owner, room, data, metadata) for data, metadata in VARIED]

        got_a = await a.texts("a-1", len(VARIED))
        got_b = await b.texts("op B", len(VARIED))
        got_c = await c.texts("c", len(VARIED))
        ids = [json.loads(text)["payload"]["data"]["roomMessages"]["id"] for text in got_c]
        assert ids == [m["id"] for m in sent]
        datas = [json.loads(text)["payload"]["data"]["roomMessages"]["data"] for text in got_c]
        assert datas == [data for data, _ in VARIED]
        shared = [without_id(text, "a-1") for text in got_a]
        assert shared == [without_id(text, "op B") for text in got_b]
        assert shared == [without_id(text, "c") for text in got_c]

        for raw, op_id in ((a, "a-1"), (b, "op B"), (c, "c")):
            await raw.stop(op_id)
        await server.wait_subscribers(0)
        for raw, op_id in ((a, "a-1"), (b, "op B"), (c, "c")):
            raw.assert_quiet(op_id)


# --- ids -------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_each_subscriber_on_a_connection_gets_its_own_id(
    server: LiveServer, protocol: str
) -> None:
    owner = server.client(unique("owner"))
    room = await new_room(owner)
    op_ids = ["1", "x", 'ünï "quoted" id', "x2"]
    async with connect(server, unique("u"), protocol) as raw:
        for op_id in op_ids:
            await raw.start(op_id, DATA, room=room)
        await server.wait_subscribers(len(op_ids))
        await send(owner, room, {"n": 1})
        await each_gets(raw, protocol, op_ids, 1)

        # Completing "x" stops that one only.
        await raw.stop("x")
        await server.wait_subscribers(len(op_ids) - 1)
        await send(owner, room, {"n": 2})
        await send(owner, room, {"n": 3})
        rest = [op_id for op_id in op_ids if op_id != "x"]
        for op_id in rest:
            results = [{"roomMessages": {"data": {"n": n}}} for n in (2, 3)]
            assert await frames(raw, op_id, 2) == data_frames(protocol, op_id, results)
        raw.assert_quiet("x")

        # The id is free again: a new subscription under it sees new events only.
        await raw.start("x", DATA, room=room)
        await server.wait_subscribers(len(op_ids))
        await send(owner, room, {"n": 4})
        await each_gets(raw, protocol, op_ids, 4)
        for op_id in op_ids:
            await raw.stop(op_id)
        await server.wait_subscribers(0)
        for op_id in op_ids:
            raw.assert_quiet(op_id)


# --- groups ----------------------------------------------------------------------------


async def test_subscriptions_that_differ_get_their_own_results(server: LiveServer) -> None:
    owner_id = unique("owner")
    owner = server.client(owner_id)
    room, other_room = await new_room(owner), await new_room(owner)
    async with connect(server, unique("u")) as raw:
        await raw.start("same-1", DATA, room=room)
        await raw.start("same-2", DATA, room=room)
        await raw.start("more-fields", DATA_USER, room=room)
        await raw.start("other-room", DATA, room=other_room)
        await raw.start("thread", IN_THREAD, room=room, thread="t1")
        await raw.start("no-thread", IN_THREAD, room=room, thread=None)
        await raw.start("plain", TWO_OPERATIONS, "Plain", room=room)
        await raw.start("with-user", TWO_OPERATIONS, "WithUser", room=room)
        await server.wait_subscribers(8)
        await send(owner, room, {"n": 1})
        await send(owner, room, {"n": 2}, thread="t1")
        await send(owner, other_room, {"n": 3})
        # Last to each room, and in the thread: everything before it is all there was.
        await send(owner, room, {"n": 4}, thread="t1")
        await send(owner, other_room, {"n": 5})

        def data(*ns: int) -> list[dict[str, Any]]:
            return [{"roomMessages": {"data": {"n": n}}} for n in ns]

        def with_user(*ns: int) -> list[dict[str, Any]]:
            return [{"roomMessages": {"data": {"n": n}, "userId": owner_id}} for n in ns]

        def threaded(*pairs: tuple[int, str | None]) -> list[dict[str, Any]]:
            return [{"roomMessages": {"data": {"n": n}, "threadId": t}} for n, t in pairs]

        expected = {
            "same-1": data(1, 2, 4),
            "same-2": data(1, 2, 4),
            "more-fields": with_user(1, 2, 4),
            "other-room": data(3, 5),
            "thread": threaded((2, "t1"), (4, "t1")),
            "no-thread": threaded((1, None), (2, "t1"), (4, "t1")),
            "plain": data(1, 2, 4),
            "with-user": with_user(1, 2, 4),
        }
        got = {op_id: await raw.texts(op_id, len(results)) for op_id, results in expected.items()}
        for op_id, results in expected.items():
            assert [json.loads(t) for t in got[op_id]] == data_frames(TRANSPORT_WS, op_id, results)
        # Identical subscriptions: identical frames but for the id.
        assert [without_id(t, "same-1") for t in got["same-1"]] == [
            without_id(t, "same-2") for t in got["same-2"]
        ]
        for op_id in expected:
            await raw.stop(op_id)
        await server.wait_subscribers(0)
        for op_id in expected:
            raw.assert_quiet(op_id)


# --- leave and join mid-stream ---------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_subscribers_leave_and_join_mid_stream(server: LiveServer, protocol: str) -> None:
    owner = server.client(unique("owner"))
    room = await new_room(owner)

    def data(*ns: int) -> list[dict[str, Any]]:
        return [{"roomMessages": {"data": {"n": n}}} for n in ns]

    async with (
        connect(server, unique("one"), protocol) as one,
        connect(server, unique("two"), protocol) as two,
        connect(server, unique("three"), protocol) as three,
    ):
        for raw in (one, two, three):
            await raw.start("s", DATA, room=room)
        await server.wait_subscribers(3)
        for n in (1, 2):
            await send(owner, room, {"n": n})
        for raw in (one, two, three):
            assert await frames(raw, "s", 2) == data_frames(protocol, "s", data(1, 2))

        await three.stop("s")
        await server.wait_subscribers(2)
        await send(owner, room, {"n": 3})
        for raw in (one, two):
            assert await frames(raw, "s", 1) == data_frames(protocol, "s", data(3))

        async with connect(server, unique("four"), protocol) as four:
            await four.start("late", DATA, room=room)
            await server.wait_subscribers(3)
            for n in (4, 5):
                await send(owner, room, {"n": n})
            for raw in (one, two):
                assert await frames(raw, "s", 2) == data_frames(protocol, "s", data(4, 5))
            # The newcomer gets what followed its joining, from the first on.
            assert await frames(four, "late", 2) == data_frames(protocol, "late", data(4, 5))

            # One drops its connection without a word in the middle of the stream.
            assert two.ws.transport is not None
            two.ws.transport.abort()
            await server.wait_subscribers(2)
            await send(owner, room, {"n": 6})
            assert await frames(one, "s", 1) == data_frames(protocol, "s", data(6))
            assert await frames(four, "late", 1) == data_frames(protocol, "late", data(6))
            await four.stop("late")
        await one.stop("s")
        await server.wait_subscribers(0)
        three.assert_quiet("s")
        one.assert_quiet("s")

        # Everyone left: the group is gone, and a new subscriber starts it again.
        await three.start("again", DATA, room=room)
        await server.wait_subscribers(1)
        await send(owner, room, {"n": 7})
        assert await frames(three, "again", 1) == data_frames(protocol, "again", data(7))
        await three.stop("again")
        await server.wait_subscribers(0)


# --- permission per subscriber ---------------------------------------------------------


def error_frames(texts: list[str], protocol: str, op_id: str) -> tuple[dict[str, Any], str]:
    """The error document of a subscription that ended with one error, and
    its frame's text without the id; the frame after it must be the complete."""
    error_frame, complete = (json.loads(t) for t in texts)
    assert complete == {"id": op_id, "type": "complete"}
    kind = "next" if protocol == TRANSPORT_WS else "data"
    assert error_frame["type"] == kind, error_frame
    assert error_frame["payload"]["data"] is None, error_frame
    [error] = error_frame["payload"]["errors"]
    document: dict[str, Any] = error
    return document, without_id(texts[0], op_id)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_permission_is_checked_for_each_subscriber(server: LiveServer, protocol: str) -> None:
    owner_id, kept_id, removed_id, replaying_id, outsider_id = (
        unique(p) for p in ("owner", "kept", "removed", "replaying", "outsider")
    )
    owner = server.client(owner_id)
    room = await new_room(owner, private=True)
    for user in (kept_id, removed_id, replaying_id):
        await owner.execute(ADD, room=room, user=user)
    last = await send(owner, room, {"n": 0})
    not_found = f"room {room!r} not found"

    async with (
        connect(server, kept_id, protocol) as kept,
        connect(server, removed_id, protocol) as removed,
        connect(server, replaying_id, protocol) as replaying,
        connect(server, outsider_id, protocol) as outsider,
    ):
        await kept.start("k", ALL_FIELDS, room=room, after=None)
        await server.wait_subscribers(1)
        # A non-member with the identical document: refused as unshared
        # execution refuses it (a private room is invisible: NOT_FOUND).
        await outsider.start("shared", ALL_FIELDS, room=room, after=None)
        await outsider.start("alone", ALL_FIELDS, room=room, after=last["cursor"])
        refused, refused_text = error_frames(await outsider.texts("shared", 2), protocol, "shared")
        assert refused["message"] == not_found
        assert refused["extensions"]["code"] == "NOT_FOUND"
        _, alone_text = error_frames(await outsider.texts("alone", 2), protocol, "alone")
        assert refused_text == alone_text

        await removed.start("r", ALL_FIELDS, room=room, after=None)
        await replaying.start("u", ALL_FIELDS, room=room, after=last["cursor"])
        await server.wait_subscribers(3)
        await send(owner, room, {"n": 1})
        for raw, op_id in ((kept, "k"), (removed, "r"), (replaying, "u")):
            assert (await raw.data(op_id))["roomMessages"]["data"] == {"n": 1}

        # Removed from the private room: that subscriber ends (the LEAVE
        # message, then the resolver's error, then complete), the others go on.
        await owner.execute(REMOVE, room=room, user=removed_id)
        await owner.execute(REMOVE, room=room, user=replaying_id)
        leave_r = await removed.data("r")
        assert leave_r["roomMessages"]["event"] == "member.removed"
        ended, ended_text = error_frames(await removed.texts("r", 2), protocol, "r")
        assert ended["message"] == not_found
        assert ended["extensions"]["code"] == "NOT_FOUND"
        # Byte for byte the end that unshared execution gives a removed member.
        assert (await replaying.data("u"))["roomMessages"]["event"] == "member.removed"
        assert (await replaying.data("u"))["roomMessages"]["event"] == "member.removed"
        _, unshared_text = error_frames(await replaying.texts("u", 2), protocol, "u")
        assert ended_text == unshared_text
        await server.wait_subscribers(1)

        await send(owner, room, {"n": 2})
        events = [(await kept.data("k"))["roomMessages"] for _ in range(3)]
        assert [(m["event"], m["userId"]) for m in events[:2]] == [
            ("member.removed", removed_id),
            ("member.removed", replaying_id),
        ]
        assert events[2]["data"] == {"n": 2}
        await kept.stop("k")
        await server.wait_subscribers(0)
        for raw, op_id in (
            (kept, "k"),
            (removed, "r"),
            (replaying, "u"),
            (outsider, "shared"),
            (outsider, "alone"),
        ):
            raw.assert_quiet(op_id)


async def test_banned_users_are_refused_and_cut_off_one_by_one(server: LiveServer) -> None:
    owner_id, reader_id, banned_id, later_id = (
        unique(p) for p in ("owner", "reader", "banned", "later")
    )
    owner = server.client(owner_id)
    room = await new_room(owner)
    await server.client(later_id).execute(JOIN, room=room)
    await owner.execute(BAN, room=room, user=banned_id)
    forbidden = f"you are banned from room {room!r}"
    async with (
        connect(server, reader_id) as reader,
        connect(server, banned_id) as banned,
        connect(server, later_id) as later,
    ):
        await reader.start("r", DATA, room=room)
        await server.wait_subscribers(1)
        await banned.start("b", DATA, room=room)
        refused, _ = error_frames(await banned.texts("b", 2), TRANSPORT_WS, "b")
        assert refused["message"] == forbidden
        assert refused["extensions"]["code"] == "FORBIDDEN"

        await later.start("l", DATA, room=room)
        await server.wait_subscribers(2)
        await send(owner, room, {"n": 1})
        assert await reader.data("r") == {"roomMessages": {"data": {"n": 1}}}
        assert await later.data("l") == {"roomMessages": {"data": {"n": 1}}}
        await owner.execute(BAN, room=room, user=later_id)
        banned_member = {"roomMessages": {"data": {"by": owner_id}}}
        assert await later.data("l") == banned_member
        cut, _ = error_frames(await later.texts("l", 2), TRANSPORT_WS, "l")
        assert cut["message"] == f"you are banned from room {room!r}"
        assert cut["extensions"]["code"] == "FORBIDDEN"
        await server.wait_subscribers(1)
        await send(owner, room, {"n": 2})
        assert await reader.data("r") == banned_member
        assert await reader.data("r") == {"roomMessages": {"data": {"n": 2}}}
        await reader.stop("r")
        await server.wait_subscribers(0)
        for raw, op_id in ((reader, "r"), (banned, "b"), (later, "l")):
            raw.assert_quiet(op_id)


# --- viewer independence ---------------------------------------------------------------

PLAIN_DATA_TYPES = {
    "Message",
    "TypingEvent",
    "Presence",
    "Cluster",
    "NodeStatus",
    "Call",
    "CallEvent",
    "CallParticipant",
    "Signal",
}


def reachable_object_types(
    schema: graphql.GraphQLSchema, root: graphql.GraphQLObjectType | None, fields: list[str]
) -> set[str]:
    """Names of the object (and abstract) types a selection on these fields
    of the root type can reach."""
    assert root is not None
    seen: set[str] = set()
    pending = [root.fields[name].type for name in fields]
    while pending:
        named = graphql.get_named_type(pending.pop())
        if not isinstance(named, graphql.GraphQLObjectType | graphql.GraphQLAbstractType):
            continue
        if named.name in seen:
            continue
        seen.add(named.name)
        if isinstance(named, graphql.GraphQLAbstractType):
            pending.extend(schema.get_possible_types(named))
        else:
            pending.extend(f.type for f in named.fields.values())
    return seen


def viewer_dependent_fields(schema: Any, type_names: set[str]) -> list[str]:
    """Fields computed by a resolver (which may read the viewer) or taking
    arguments, on the named types."""
    found = []
    for name in sorted(type_names):
        definition = schema.get_type_by_name(name)
        assert isinstance(definition, StrawberryObjectDefinition), name
        for field in definition.fields:
            if field.base_resolver is not None or field.arguments:
                found.append(f"{name}.{field.name}")
    return found


def test_shared_payload_types_are_viewer_independent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        schema = build_schema()
    core: graphql.GraphQLSchema = schema.graphql_core
    assert core.subscription_type is not None
    # Every subscription field may share an execution (with some arguments).
    assert set(FIELDS) == set(core.subscription_type.fields)
    reachable = reachable_object_types(core, core.subscription_type, sorted(FIELDS))
    assert reachable == PLAIN_DATA_TYPES
    assert viewer_dependent_fields(schema, reachable) == []
    # The guard catches a viewer-dependent type: Room (reached from
    # Query.room) has resolvers that read the viewer and the context.
    assert reachable_object_types(core, core.query_type, ["room"]) == {"Room", "RoomMember"}
    assert viewer_dependent_fields(schema, {"Room", "RoomMember"}) == [
        f"Room.{name}"
        for name in (
            "id",
            "name",
            "description",
            "owner",
            "is_private",
            "metadata",
            "created_at",
            "member_count",
            "members",
            "my_role",
        )
    ]


# --- SSE ---------------------------------------------------------------------------------


async def test_sse_subscriptions_share_the_execution_and_its_bytes(server: LiveServer) -> None:
    """Distinct SSE streams and operations on a single connection stream join
    the execution a WebSocket subscriber runs; each `next` carries the payload
    an unshared subscription gets, with the cursor as its id."""
    owner = server.client(unique("owner"))
    room = await new_room(owner)
    last = await send(owner, room, {"before": "subscribing"})
    live = {"query": ALL_FIELDS, "variables": {"room": room, "after": None}}
    replay = {"query": ALL_FIELDS, "variables": {"room": room, "after": last["cursor"]}}
    single_token = server.token(unique("single"))
    reservation = await sse_request(server, "PUT", single_token)
    assert reservation.status_code == 201, reservation.text
    on_single = {TOKEN_HEADER: reservation.text}
    async with (
        connect(server, unique("ws")) as ws,
        event_stream(server, server.token(unique("a")), json=live) as distinct,
        event_stream(server, server.token(unique("c")), json=replay) as unshared,
        event_stream(server, single_token, method="GET", headers=on_single) as single,
    ):
        await ws.start("w", ALL_FIELDS, room=room, after=None)
        for op_id in ("s-1", "s-2"):
            body = {**live, "extensions": {"operationId": op_id}}
            answer = await sse_request(server, "POST", single_token, json=body, headers=on_single)
            assert answer.status_code == 202, answer.text
        await server.wait_subscribers(5)
        # The four identical subscriptions run once; the replay runs alone.
        assert await asyncio.to_thread(server.metric, "streaming_shared_executions") == 1
        sent = [await send(owner, room, data, metadata) for data, metadata in VARIED]

        expected = [await unshared.next() for _ in VARIED]
        assert [e.id for e in expected] == [m["cursor"] for m in sent]
        assert [(e.event, e.id, e.data) for e in expected] == [
            (e.event, e.id, e.data) for e in [await distinct.next() for _ in VARIED]
        ]
        on_stream = [await single.next() for _ in range(2 * len(VARIED))]
        for op_id in ("s-1", "s-2"):
            mine = [e for e in on_stream if json.loads(e.data)["id"] == op_id]
            prefix = '{"id":' + json.dumps(op_id) + ',"payload":'
            assert [(e.event, e.id, e.data) for e in mine] == [
                ("next", e.id, prefix + e.data + "}") for e in expected
            ]
        assert await ws.texts("w", len(VARIED)) == [
            '{"id":"w","type":"next","payload":' + e.data + "}" for e in expected
        ]
        await ws.stop("w")
    await server.wait_subscribers(0)
    await server.wait_metric("streaming_shared_executions", 0)


# --- slow consumers --------------------------------------------------------------------

QUEUE = 5
SLOW = {
    **TEST_SETTINGS,
    "subscriber_queue_size": QUEUE,
    "max_messages_per_second": 1000,
    "max_message_size": 60_000,
    "write_timeout": "1s",
    # Neither the heartbeat nor uvicorn's keepalive ends a stalled client here.
    "ping_interval": "20s",
}
# Timers short enough for a server to drop a stalled client within seconds.
SLOW_TIMERS = {**SLOW, "ping_interval": "2s", "pong_timeout": "1s", "write_timeout": "1s"}
BIG_SEND = """
mutation($room: ID!, $n: Int!, $blob: String!) {
  sendMessage(input: {roomId: $room, data: {n: $n, blob: $blob}}) { id }
}
"""
# 160 results of 50 kB: far more than the socket buffers between server and
# client hold, so a client that does not read blocks the server's writes.
# Random, so that permessage-deflate cannot shrink it much.
BURST = 160
BLOB = base64.b64encode(random.Random(5).randbytes(37_500)).decode()
SLOW_CONSUMER = 4008
PONG_TIMEOUT = 4499


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@asynccontextmanager
async def reader_of_a_new_room(
    live: LiveServer, protocol: str
) -> AsyncIterator[tuple[GraphQLClient, str, Raw]]:
    """A fresh owner's new room, and a connection subscribed to it as "r"
    that reads everything, live: (owner, room, reader)."""
    owner = live.client(unique("owner"))
    room = await new_room(owner)
    async with connect(live, unique("reader"), protocol) as reader:
        await reader.start("r", DATA, room=room)
        await live.wait_subscribers(1)
        yield owner, room, reader


@asynccontextmanager
async def stalled_subscriber(
    live: LiveServer, protocol: str, room: str
) -> AsyncIterator[ClientConnection]:
    """A shared subscriber that reads nothing once subscribed.

    max_queue=1: once one frame waits unread the client stops reading the
    socket at all, pings included, like a frozen browser tab.
    """
    async with websockets.connect(
        live.ws_url,
        subprotocols=[Subprotocol(protocol)],
        max_queue=1,
        ping_interval=None,
        close_timeout=1,
    ) as ws:
        stalled = Raw(ws, protocol)
        await stalled.send({"type": "connection_init", "payload": auth(live, unique("stalled"))})
        ack = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert ack["type"] == "connection_ack", ack
        await stalled.start("s", DATA, room=room)
        yield ws


async def burst(live: LiveServer, owner: GraphQLClient, room: str, reader: Raw) -> None:
    """Send BURST big messages; the reader gets every one, in order."""

    async def receive() -> list[int]:
        return [(await reader.data("r"))["roomMessages"]["data"]["n"] for _ in range(BURST)]

    receiving = asyncio.create_task(receive())
    async with httpx.AsyncClient(timeout=TIMEOUT, headers=owner.headers) as http:
        for n in range(BURST):
            variables = {"room": room, "n": n, "blob": BLOB}
            answer = await http.post(
                f"{live.url}/graphql", json={"query": BIG_SEND, "variables": variables}
            )
            assert "errors" not in answer.json(), answer.text
    assert await asyncio.wait_for(receiving, TIMEOUT) == list(range(BURST))


async def read_until_closed(ws: ClientConnection) -> tuple[list[int], int | None]:
    """The `n` of every result the client still gets, and the close code
    (None: the connection ended without a close frame)."""
    got: list[int] = []
    with pytest.raises(ConnectionClosed) as close:
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            if frame["type"] in ("next", "data"):
                got.append(frame["payload"]["data"]["roomMessages"]["data"]["n"])
    rcvd = close.value.rcvd
    if rcvd is not None and rcvd.code == SLOW_CONSUMER:
        assert rcvd.reason.startswith("SLOW_CONSUMER: "), rcvd.reason
    return got, None if rcvd is None else rcvd.code


# Both ways a stalled subscriber's frames can pile up (in the transport's
# buffer when written directly, in the connection's queue for ASGI) are cut
# off by one bound: the connection's unsent bytes (a big bound of the other
# kind, the hub's queue of results, shows it is not what did it). The close
# that ends it is a write too: a peer that reads nothing for `write_timeout`
# after it is aborted instead, so the stall here must stay well inside that.
SLOW_PATHS = {
    "direct": {
        "max_send_buffer": 64 * 1024,
        "subscriber_queue_size": 100_000,
        "write_timeout": "60s",
    },
    "queued": {
        "websocket_compression": True,
        "max_send_buffer": 64 * 1024,
        "subscriber_queue_size": 100_000,
        "write_timeout": "60s",
    },
}


@pytest.mark.parametrize("path", list(SLOW_PATHS))
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stalled_shared_subscriber_neither_delays_others_nor_grows_memory(
    make_server: type[LiveServer], tmp_path: Path, protocol: str, path: str
) -> None:
    live = make_server(tmp_path / "slow", {**SLOW, **SLOW_PATHS[path]}).start()
    assert live.process is not None
    async with reader_of_a_new_room(live, protocol) as (owner, room, reader):
        async with stalled_subscriber(live, protocol, room) as stalled:
            await live.wait_subscribers(2)
            before = rss_kib(live.process.pid)
            await burst(live, owner, room, reader)
            grown = rss_kib(live.process.pid) - before
            # Holding the results the stalled client missed would take 8 MB.
            assert grown < 32 * 1024, f"the server grew by {grown} KiB"
            # It reads again: what its socket buffers held, in order, and no
            # more: its queue overflowed and it was cut off; then the close.
            got, code = await read_until_closed(stalled)
            assert got == list(range(len(got)))
            assert len(got) < BURST - QUEUE, len(got)
            assert code == SLOW_CONSUMER
        await live.wait_subscribers(1)
        await live.wait_metric("streaming_connections_active", 1)
        await owner.execute(BIG_SEND, room=room, n=BURST, blob="after")
        assert await reader.data("r") == {"roomMessages": {"data": {"n": BURST, "blob": "after"}}}
        await reader.stop("r")
        await live.wait_subscribers(0)


@pytest.mark.parametrize("path", list(SLOW_PATHS))
async def test_stalled_shared_subscriber_is_dropped_while_it_stalls(
    make_server: type[LiveServer], tmp_path: Path, path: str
) -> None:
    protocol = TRANSPORT_WS  # the legacy protocol shares forward() and the adapter
    # The short timers win over the path's long write_timeout: here the
    # close must not wait for the client.
    config = {**SLOW_TIMERS, **SLOW_PATHS[path], "write_timeout": SLOW_TIMERS["write_timeout"]}
    live = make_server(tmp_path / "slow", config).start()
    async with reader_of_a_new_room(live, protocol) as (owner, room, reader):
        async with stalled_subscriber(live, protocol, room) as stalled:
            await live.wait_subscribers(2)
            await burst(live, owner, room, reader)
            # Dropped by the server while the client still reads nothing.
            await live.wait_subscribers(1, timeout=8)
            # The close frame gets write_timeout (1 s) before the abort, and the
            # connection's one timer fires at its next deadline after that.
            await live.wait_metric("streaming_connections_active", 1, timeout=6)
            got, code = await read_until_closed(stalled)
            assert got == list(range(len(got)))
            assert len(got) < BURST - QUEUE, len(got)
            # A close frame cannot pass a full socket buffer: a drop may end
            # the connection without one.
            assert code in (SLOW_CONSUMER, PONG_TIMEOUT, None), code
        await reader.stop("r")
        await live.wait_subscribers(0)


# --- many subscriptions, many messages ---------------------------------------------------

SMALL_SEND = (
    "mutation($room: ID!, $n: Int!) { sendMessage(input: {roomId: $room, data: {n: $n}}) { id } }"
)


async def test_one_client_subscribing_100_times_to_one_room(server: LiveServer) -> None:
    owner = server.client(unique("owner"))
    room = await new_room(owner)
    async with connect(server, unique("greedy")) as ws:
        ids = [f"s{i}" for i in range(100)]
        for op_id in ids:
            await ws.start(op_id, DATA, room=room)
        await server.wait_subscribers(100)
        # One more is refused (max_subscriptions_per_connection), clearly.
        await ws.start("one-too-many", DATA, room=room)
        refused = await ws.frame("one-too-many")
        assert refused["type"] == "error", refused
        assert refused["payload"][0]["message"] == "too many operations on this connection (100)"
        assert refused["payload"][0]["extensions"]["code"] == "LIMIT_EXCEEDED"
        for n in range(3):
            await owner.execute(SMALL_SEND, room=room, n=n)
        for op_id in ids:
            got = [(await ws.data(op_id))["roomMessages"]["data"]["n"] for _ in range(3)]
            assert got == [0, 1, 2], op_id
        for op_id in ids:
            await ws.stop(op_id)
        await server.wait_subscribers(0)


BURST_OF = 10_000


async def test_a_burst_of_10000_messages_keeps_memory_bounded(
    make_server: type[LiveServer], tmp_path: Path
) -> None:
    settings = {**SLOW_TIMERS, "max_messages_per_second": 100_000, "subscriber_queue_size": 256}
    live = make_server(tmp_path / "burst", settings).start()
    assert live.process is not None
    async with reader_of_a_new_room(live, TRANSPORT_WS) as (owner, room, reader):
        async with stalled_subscriber(live, TRANSPORT_WS, room):
            await live.wait_subscribers(2)
            before = rss_kib(live.process.pid)

            async def receive() -> list[int]:
                return [
                    (await reader.data("r"))["roomMessages"]["data"]["n"] for _ in range(BURST_OF)
                ]

            receiving = asyncio.create_task(receive())
            async with httpx.AsyncClient(timeout=TIMEOUT, headers=owner.headers) as http:

                async def publisher(first: int) -> None:
                    for n in range(first, BURST_OF, 8):
                        answer = await http.post(
                            f"{live.url}/graphql",
                            json={"query": SMALL_SEND, "variables": {"room": room, "n": n}},
                        )
                        assert "errors" not in answer.json(), answer.text

                await asyncio.gather(*(publisher(i) for i in range(8)))
            got = await asyncio.wait_for(receiving, 60)
            # Every message, each once; eight publishers interleave, so the
            # order is the store's, not n's.
            assert sorted(got) == list(range(BURST_OF))
            # The stalled subscriber was cut off; nothing piled up for it.
            await live.wait_subscribers(1)
            assert rss_kib(live.process.pid) - before < 64 * 1024
        await reader.stop("r")
        await live.wait_subscribers(0)
