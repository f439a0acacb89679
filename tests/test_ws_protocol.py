"""WebSocket protocol conformance on raw frames, case by case, for
graphql-transport-ws and the legacy graphql-ws (subscriptions-transport-ws).

Every case checks the exact frame or close code, that a close reason fits the
123 bytes a close frame allows, that the server logged no traceback, and that
it keeps serving other clients. Timers (server pings, pong and init timeouts)
run on a server of their own with short settings.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from tests.conftest import LIBRARY_PATHS, TEST_SETTINGS
from tests.live import TIMEOUT, LiveServer, one_test, serve_module, unique, ws_connect

# Protocol conformance: also with the library fast paths off (tests/conftest.py).
pytestmark = pytest.mark.both_paths

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
ME = "{ me }"
CREATE_ROOM = 'mutation($id: ID!) { createRoom(input: {id: $id, name: "ws"}) { id name } }'
MY_ROOMS = "{ rooms(mine: true) { id } }"
WATCH_USERS = "subscription($ids: [ID!]) { presence(userIds: $ids) { userId status statusText } }"
# Short timers for the tests that wait for them.
FAST = {
    "ping_interval": "200ms",
    "pong_timeout": "300ms",
    "init_timeout": "500ms",
    "legacy_keepalive_interval": "200ms",
}
MAX_REASON = 123  # bytes


# --- servers and log checks ------------------------------------------------------------


@pytest.fixture(scope="module")
def fast_server(
    tmp_path_factory: pytest.TempPathFactory, library_paths: str
) -> Iterator[LiveServer]:
    settings = {**TEST_SETTINGS, **FAST, **LIBRARY_PATHS[library_paths]}
    yield from serve_module(tmp_path_factory.mktemp("fast"), settings)


@pytest.fixture
def fast(fast_server: LiveServer) -> Iterator[LiveServer]:
    yield from one_test(fast_server, unlogged=("Traceback", "Exception"))


@pytest.fixture(autouse=True)
def clean_log(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests on the shared `server`: its log gains no traceback during the test."""
    if "server" not in request.fixturenames:
        yield
        return
    live: LiveServer = request.getfixturevalue("server")
    mark = len(live.log())
    yield
    assert_clean_log(live, mark)


def assert_clean_log(live: LiveServer, mark: int) -> None:
    # A health round trip first: anything logged before it is in the file.
    live.metric("streaming_subscriptions_active")
    written = live.log()[mark:]
    for word in ("Traceback", "Exception"):
        assert word not in written, written


async def still_serving(live: LiveServer) -> None:
    """Another client still gets answers over HTTP and over a new WebSocket."""
    other = unique("other")
    assert await live.client(other).execute(ME) == {"me": other}
    async with ws_connect(live, live.token(other)) as ws:
        op = await ws.subscribe(ME)
        assert await op.next() == {"me": other}


# --- raw frames --------------------------------------------------------------------------


@asynccontextmanager
async def connect(
    live: LiveServer, subprotocol: str, headers: dict[str, str] | None = None
) -> AsyncIterator[ClientConnection]:
    async with websockets.connect(
        live.ws_url,
        subprotocols=[Subprotocol(subprotocol)],
        additional_headers=headers,
        open_timeout=TIMEOUT,
    ) as ws:
        assert ws.subprotocol == subprotocol
        yield ws


async def send(ws: ClientConnection, frame: object) -> None:
    await ws.send(json.dumps(frame))


async def recv(ws: ClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The next frame that is not a keep-alive (`ka`) or a server ping (answered)."""
    while True:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if frame.get("type") == "ping":
            await send(ws, {"type": "pong"})
        elif frame.get("type") != "ka":
            return frame


async def closed(ws: ClientConnection, timeout: float = TIMEOUT) -> tuple[int, str]:
    """Wait for the server to close; its code and reason. Frames before it fail."""
    with pytest.raises(ConnectionClosed) as close:
        frame = await recv(ws, timeout)
        raise AssertionError(f"expected a close, got {frame!r}")
    rcvd = close.value.rcvd
    assert rcvd is not None, "closed without a close frame"
    assert len(rcvd.reason.encode()) <= MAX_REASON
    return rcvd.code, rcvd.reason


async def init(ws: ClientConnection, token: str | None, payload: Any = ...) -> dict[str, Any]:
    if payload is ...:
        payload = {"Authorization": f"Bearer {token}"}
    await send(ws, {"type": "connection_init", "payload": payload})
    return await recv(ws)


async def acked(ws: ClientConnection, live: LiveServer, user: str | None = None) -> str:
    user = user or unique("u")
    answer = await init(ws, live.token(user))
    assert answer == {"type": "connection_ack", "payload": {"userId": user}}
    return user


def start_frame(protocol: str, op_id: str, query: str, **variables: Any) -> dict[str, Any]:
    kind = "subscribe" if protocol == TRANSPORT_WS else "start"
    return {"id": op_id, "type": kind, "payload": {"query": query, "variables": variables}}


def stop_frame(protocol: str, op_id: str) -> dict[str, Any]:
    return {"id": op_id, "type": "complete" if protocol == TRANSPORT_WS else "stop"}


# --- graphql-transport-ws: malformed frames close 4400 ------------------------------------

LONG = "x" * 500

MALFORMED_BEFORE_INIT: list[tuple[str, str | bytes]] = [
    ("not JSON", "hello {"),
    ("JSON array", "[]"),
    ("JSON string", '"connection_init"'),
    ("JSON number", "42"),
    ("JSON null", "null"),
    ("binary frame", b'{"type": "connection_init"}'),
    ("no type", "{}"),
    ("type not a string", '{"type": 5}'),
    ("unknown type", '{"type": "hello"}'),
    ("unknown long type", json.dumps({"type": LONG})),
    ("server-only type", '{"type": "connection_ack"}'),
    ("init payload a string", '{"type": "connection_init", "payload": "token"}'),
    ("init payload an array", '{"type": "connection_init", "payload": []}'),
    ("ping payload a number", '{"type": "ping", "payload": 1}'),
]


@pytest.mark.parametrize(
    "frame", [f for _, f in MALFORMED_BEFORE_INIT], ids=[n for n, _ in MALFORMED_BEFORE_INIT]
)
async def test_transport_ws_malformed_frame_closes_4400(
    server: LiveServer, frame: str | bytes
) -> None:
    async with connect(server, TRANSPORT_WS) as ws:
        await ws.send(frame)
        code, reason = await closed(ws)
    assert code == 4400, reason
    assert reason
    await still_serving(server)


def _subscribe(**fields: Any) -> dict[str, Any]:
    return {"type": "subscribe", **fields}


MALFORMED_AFTER_ACK: list[tuple[str, dict[str, Any]]] = [
    ("subscribe without id", _subscribe(payload={"query": ME})),
    ("subscribe with a number id", _subscribe(id=7, payload={"query": ME})),
    ("subscribe with an array id", _subscribe(id=["a"], payload={"query": ME})),
    ("subscribe with an empty id", _subscribe(id="", payload={"query": ME})),
    ("subscribe without payload", _subscribe(id="1")),
    ("subscribe with a null payload", _subscribe(id="1", payload=None)),
    ("subscribe with a string payload", _subscribe(id="1", payload=ME)),
    ("subscribe without query", _subscribe(id="1", payload={"variables": {}})),
    ("subscribe with a number query", _subscribe(id="1", payload={"query": 1})),
    ("subscribe with array variables", _subscribe(id="1", payload={"query": ME, "variables": []})),
    (
        "subscribe with a number operationName",
        _subscribe(id="1", payload={"query": ME, "operationName": 1}),
    ),
    ("complete without id", {"type": "complete"}),
    ("complete with an object id", {"type": "complete", "id": {"a": 1}}),
    ("syntax error with a long token", _subscribe(id="1", payload={"query": LONG})),
]


@pytest.mark.parametrize(
    "frame", [f for _, f in MALFORMED_AFTER_ACK], ids=[n for n, _ in MALFORMED_AFTER_ACK]
)
async def test_transport_ws_malformed_operation_closes_4400(
    server: LiveServer, frame: dict[str, Any]
) -> None:
    async with connect(server, TRANSPORT_WS) as ws:
        await acked(ws, server)
        await send(ws, frame)
        code, reason = await closed(ws)
    assert code == 4400, reason
    assert reason
    await still_serving(server)


async def test_transport_ws_null_init_payload_is_accepted(server: LiveServer) -> None:
    user = unique("nullinit")
    headers = {"Authorization": f"Bearer {server.token(user)}"}
    async with connect(server, TRANSPORT_WS, headers) as ws:
        assert await init(ws, None, None) == {"type": "connection_ack", "payload": {"userId": user}}
        # A second init, even one without payload, is one too many.
        await send(ws, {"type": "connection_init"})
        assert await closed(ws) == (4429, "Too many initialisation requests")


async def test_transport_ws_init_twice_closes_4429(server: LiveServer) -> None:
    async with connect(server, TRANSPORT_WS) as ws:
        user = await acked(ws, server)
        await send(ws, {"type": "connection_init", "payload": {}})
        assert await closed(ws) == (4429, "Too many initialisation requests")
    assert await server.client(user).execute(ME) == {"me": user}


async def test_transport_ws_subscribe_before_ack_closes_4401(server: LiveServer) -> None:
    async with connect(server, TRANSPORT_WS) as ws:
        await send(ws, start_frame(TRANSPORT_WS, "1", ME))
        assert await closed(ws) == (4401, "Unauthorized")
    await still_serving(server)


async def test_transport_ws_duplicate_id_closes_4409_with_a_short_reason(
    server: LiveServer,
) -> None:
    op_id = "d" * 500
    async with connect(server, TRANSPORT_WS) as ws:
        await acked(ws, server)
        await send(ws, start_frame(TRANSPORT_WS, op_id, WATCH_USERS, ids=[unique("x")]))
        await server.wait_subscribers(1)
        await send(ws, start_frame(TRANSPORT_WS, op_id, ME))
        code, reason = await closed(ws)
    assert code == 4409
    assert reason.startswith("Subscriber for ddd") and reason.endswith("already exists")
    await server.wait_subscribers(0)
    await still_serving(server)


async def test_transport_ws_bad_token_closes_4403_with_the_reason(server: LiveServer) -> None:
    async with connect(server, TRANSPORT_WS) as ws:
        await send(ws, {"type": "connection_init", "payload": {"Authorization": "Bearer " + LONG}})
        assert await closed(ws) == (4403, "UNAUTHENTICATED: malformed token")
    await still_serving(server)


# --- legacy graphql-ws: its own answers, and the socket stays open ------------------------


def _error(message: str) -> dict[str, Any]:
    return {"message": message, "extensions": {"code": "BAD_USER_INPUT"}}


LEGACY_UNREADABLE: list[tuple[str, str | bytes, str]] = [
    ("not JSON", "hello {", "WebSocket message must be valid JSON"),
    ("binary frame", b'{"type": "start"}', "WebSocket message type must be text"),
    ("JSON array", "[1]", "Message must be a JSON object, got array"),
    ("JSON string", '"start"', "Message must be a JSON object, got string"),
    ("JSON number", "1.5", "Message must be a JSON object, got number"),
    ("JSON null", "null", "Message must be a JSON object, got null"),
]


@pytest.mark.parametrize(
    ("frame", "message"),
    [(f, m) for _, f, m in LEGACY_UNREADABLE],
    ids=[n for n, _, _ in LEGACY_UNREADABLE],
)
async def test_legacy_unreadable_frame_gets_connection_error(
    server: LiveServer, frame: str | bytes, message: str
) -> None:
    async with connect(server, LEGACY_WS) as ws:
        user = await acked(ws, server)
        await ws.send(frame)
        assert await recv(ws) == {"type": "connection_error", "payload": _error(message)}
        await assert_legacy_serves(ws, user)
    await still_serving(server)


LEGACY_BAD_MESSAGE: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("no type", {}, {}),
    ("unknown type", {"type": "subscribe", "id": "a"}, {"id": "a"}),
    ("number type", {"type": 3, "id": "b"}, {"id": "b"}),
    ("start without id", {"type": "start", "payload": {"query": ME}}, {}),
    ("start with a number id", {"type": "start", "id": 4, "payload": {"query": ME}}, {}),
    ("start without payload", {"type": "start", "id": "c"}, {"id": "c"}),
    ("start with a string payload", {"type": "start", "id": "d", "payload": ME}, {"id": "d"}),
    ("start without query", {"type": "start", "id": "e", "payload": {}}, {"id": "e"}),
    (
        "start with array variables",
        {"type": "start", "id": "f", "payload": {"query": ME, "variables": [1]}},
        {"id": "f"},
    ),
    ("stop without id", {"type": "stop"}, {}),
]


@pytest.mark.parametrize(
    ("frame", "ident"),
    [(f, i) for _, f, i in LEGACY_BAD_MESSAGE],
    ids=[n for n, _, _ in LEGACY_BAD_MESSAGE],
)
async def test_legacy_bad_message_gets_error(
    server: LiveServer, frame: dict[str, Any], ident: dict[str, Any]
) -> None:
    async with connect(server, LEGACY_WS) as ws:
        user = await acked(ws, server)
        await send(ws, frame)
        answer = await recv(ws)
        assert answer == {"type": "error", **ident, "payload": answer["payload"]}
        assert answer["payload"]["extensions"] == {"code": "BAD_USER_INPUT"}
        assert answer["payload"]["message"]
        await assert_legacy_serves(ws, user)
    await still_serving(server)


async def assert_legacy_serves(ws: ClientConnection, user: str) -> None:
    """The socket still runs operations after a bad frame."""
    op_id = unique("q")
    await send(ws, start_frame(LEGACY_WS, op_id, ME))
    assert await recv(ws) == {"type": "data", "id": op_id, "payload": {"data": {"me": user}}}
    assert await recv(ws) == {"type": "complete", "id": op_id}


async def refused_then_closed(
    ws: ClientConnection, answer: dict[str, Any], code: int, reason: str
) -> None:
    """A legacy refusal: `answer` is connection_error with `reason`, then the close."""
    assert answer == {"type": "connection_error", "payload": _error(reason)}
    assert await closed(ws) == (code, reason)


@pytest.mark.parametrize("payload", ["token", [], 5], ids=["string", "array", "number"])
async def test_legacy_init_payload_not_an_object_is_refused(
    server: LiveServer, payload: object
) -> None:
    async with connect(server, LEGACY_WS) as ws:
        answer = await init(ws, None, payload)
        await refused_then_closed(ws, answer, 4400, "Invalid connection init payload")
    await still_serving(server)


async def test_legacy_null_init_payload_is_accepted(server: LiveServer) -> None:
    user = unique("nullinit")
    headers = {"Authorization": f"Bearer {server.token(user)}"}
    async with connect(server, LEGACY_WS, headers) as ws:
        answer = await init(ws, None, None)
        assert answer == {"type": "connection_ack", "payload": {"userId": user}}
        await assert_legacy_serves(ws, user)


async def test_legacy_init_twice_is_refused_4429(server: LiveServer) -> None:
    async with connect(server, LEGACY_WS) as ws:
        await acked(ws, server)
        answer = await init(ws, None, {})
        await refused_then_closed(ws, answer, 4429, "Too many initialisation requests")
    await still_serving(server)


async def test_legacy_start_before_init_closes_4401(server: LiveServer) -> None:
    async with connect(server, LEGACY_WS) as ws:
        await send(ws, start_frame(LEGACY_WS, "1", ME))
        assert await closed(ws) == (4401, "Unauthorized")
    await still_serving(server)


async def test_legacy_bad_token_is_connection_error_then_4403(server: LiveServer) -> None:
    async with connect(server, LEGACY_WS) as ws:
        assert await init(ws, None, {"Authorization": "Bearer nope"}) == {
            "type": "connection_error",
            "payload": {"message": "malformed token", "extensions": {"code": "UNAUTHENTICATED"}},
        }
        assert await closed(ws) == (4403, "UNAUTHENTICATED: malformed token")
    await still_serving(server)


async def test_legacy_runs_queries_and_mutations(server: LiveServer) -> None:
    room = unique("room")
    async with connect(server, LEGACY_WS) as ws:
        user = await acked(ws, server)
        await send(ws, start_frame(LEGACY_WS, "m", CREATE_ROOM, id=room))
        assert await recv(ws) == {
            "type": "data",
            "id": "m",
            "payload": {"data": {"createRoom": {"id": room, "name": "ws"}}},
        }
        assert await recv(ws) == {"type": "complete", "id": "m"}
        await send(ws, start_frame(LEGACY_WS, "q", MY_ROOMS))
        assert await recv(ws) == {
            "type": "data",
            "id": "q",
            "payload": {"data": {"rooms": [{"id": room}]}},
        }
        assert await recv(ws) == {"type": "complete", "id": "q"}
        # Validation errors stay `error` frames, as before.
        await send(ws, start_frame(LEGACY_WS, "v", "{ nope }"))
        answer = await recv(ws)
        assert (answer["type"], answer["id"]) == ("error", "v")
        assert answer["payload"]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert await server.client(user).execute(MY_ROOMS) == {"rooms": [{"id": room}]}


# --- both protocols: releasing subscriptions ---------------------------------------------


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_complete_releases_the_subscription(server: LiveServer, protocol: str) -> None:
    async with connect(server, protocol) as ws:
        await acked(ws, server)
        for _ in range(2):  # the id is free again once completed
            await send(ws, start_frame(protocol, "s", WATCH_USERS, ids=[unique("x")]))
            await server.wait_subscribers(1)
            await send(ws, stop_frame(protocol, "s"))
            if protocol == LEGACY_WS:
                assert await recv(ws) == {"type": "complete", "id": "s"}
            await server.wait_subscribers(0)


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_abrupt_disconnect_releases_subscriptions_and_presence(
    server: LiveServer, protocol: str
) -> None:
    watcher, user = unique("w"), unique("u")
    # Sharing a room, each may see the other's presence.
    room = unique("room")
    await server.client(watcher).execute(
        'mutation($id: ID!) { createRoom(input: {id: $id, name: "r"}) { id } }', id=room
    )
    await server.client(user).execute(
        "mutation($id: ID!) { joinRoom(roomId: $id) { id } }", id=room
    )
    async with ws_connect(server, server.token(watcher)) as watch:
        sub = await watch.subscribe(WATCH_USERS, ids=[user])
        await server.wait_subscribers(1)
        ws = await websockets.connect(
            server.ws_url, subprotocols=[Subprotocol(protocol)], open_timeout=TIMEOUT
        )
        await acked(ws, server, user)
        assert (await sub.next())["presence"]["status"] == "ONLINE"
        for op_id in ("a", "b"):
            await send(ws, start_frame(protocol, op_id, WATCH_USERS, ids=[watcher]))
        await server.wait_subscribers(3)
        ws.transport.abort()  # no close frame: the TCP connection just drops
        await server.wait_subscribers(1)
        offline = {"userId": user, "status": "OFFLINE", "statusText": None}
        assert (await sub.next())["presence"] == offline
        await sub.complete()
        await server.wait_subscribers(0)


# --- timers: init timeout, server pings, pong timeout ------------------------------------


async def test_transport_ws_init_timeout_closes_4408(fast: LiveServer) -> None:
    async with connect(fast, TRANSPORT_WS) as ws:
        assert await closed(ws) == (4408, "Connection initialisation timeout")
    await still_serving(fast)


async def test_legacy_init_timeout_is_connection_error_then_4408(fast: LiveServer) -> None:
    async with connect(fast, LEGACY_WS) as ws:
        answer = await recv(ws)
        await refused_then_closed(ws, answer, 4408, "Connection initialisation timeout")
    await still_serving(fast)


async def test_transport_ws_client_answering_pings_stays_connected(fast: LiveServer) -> None:
    async with connect(fast, TRANSPORT_WS) as ws:
        user = await acked(ws, fast)

        async def answer_pings(count: int) -> None:
            for _ in range(count):
                frame = json.loads(await ws.recv())
                assert frame == {"type": "ping"}
                await send(ws, {"type": "pong"})

        # Five intervals: well past the pong timeout had any pong gone missing.
        await asyncio.wait_for(answer_pings(5), TIMEOUT)
        await send(ws, start_frame(TRANSPORT_WS, "q", ME))
        assert await recv(ws) == {"id": "q", "type": "next", "payload": {"data": {"me": user}}}
        assert await recv(ws) == {"id": "q", "type": "complete"}


async def test_transport_ws_client_not_answering_pings_is_closed(fast: LiveServer) -> None:
    async with connect(fast, TRANSPORT_WS) as ws:
        await acked(ws, fast)
        await send(ws, start_frame(TRANSPORT_WS, "s", WATCH_USERS, ids=[unique("x")]))
        await fast.wait_subscribers(1)
        # The client library answers WebSocket pings; the protocol's ping goes unanswered.
        assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)) == {"type": "ping"}
        with pytest.raises(ConnectionClosed) as close:
            frame = await asyncio.wait_for(ws.recv(), TIMEOUT)
            raise AssertionError(f"expected a close, got {frame!r}")
        assert close.value.rcvd is not None
        assert (close.value.rcvd.code, close.value.rcvd.reason) == (4499, "Pong timeout")
    await fast.wait_subscribers(0)
    await still_serving(fast)


async def test_legacy_keep_alives_keep_coming(fast: LiveServer) -> None:
    async with connect(fast, LEGACY_WS) as ws:
        user = await acked(ws, fast)

        async def keep_alives(count: int) -> None:
            for _ in range(count):
                assert json.loads(await ws.recv()) == {"type": "ka"}

        await asyncio.wait_for(keep_alives(5), TIMEOUT)
        await assert_legacy_serves(ws, user)


class RawWebSocket:
    """A client on a bare TCP socket that never answers WebSocket pings."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, live: LiveServer, subprotocol: str) -> RawWebSocket:
        reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /graphql HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Protocol: {subprotocol}\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def send_text(self, frame: object) -> None:
        data = json.dumps(frame).encode()
        mask = os.urandom(4)
        size = len(data)
        if size < 126:
            header = bytes([0x81, 0x80 | size])
        else:
            header = bytes([0x81, 0x80 | 126]) + struct.pack("!H", size)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.writer.write(header + mask + masked)
        await self.writer.drain()

    async def read_frame(self) -> tuple[int, bytes]:
        first, second = await self.reader.readexactly(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await self.reader.readexactly(size)

    async def close_frame(self, answer_json_pings: bool) -> tuple[int, str]:
        """Read until the server's close frame; WebSocket pings stay unanswered."""
        while True:
            opcode, data = await self.read_frame()
            if opcode == 0x8:
                (code,) = struct.unpack("!H", data[:2])
                return code, data[2:].decode()
            if opcode == 0x1 and answer_json_pings and json.loads(data)["type"] == "ping":
                await self.send_text({"type": "pong"})

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_client_not_answering_websocket_pings_is_closed(
    fast: LiveServer, protocol: str
) -> None:
    raw = await RawWebSocket.open(fast, protocol)
    try:
        user = unique("silent")
        await raw.send_text(
            {"type": "connection_init", "payload": {"Authorization": f"Bearer {fast.token(user)}"}}
        )
        opcode, data = await asyncio.wait_for(raw.read_frame(), TIMEOUT)
        assert (opcode, json.loads(data)) == (
            0x1,
            {"type": "connection_ack", "payload": {"userId": user}},
        )
        # JSON pings are answered (graphql-transport-ws), WebSocket pings are not.
        close = await asyncio.wait_for(raw.close_frame(answer_json_pings=True), TIMEOUT)
        assert close == (1011, "keepalive ping timeout")
    finally:
        await raw.close()
    await still_serving(fast)


# --- a client that never reads --------------------------------------------------------------

ROOM_TEXTS = "subscription($id: ID!) { roomMessages(roomId: $id) { data } }"
SEND_TEXT = (
    "mutation($id: ID!, $n: Int!) { sendMessage(input: {roomId: $id, data: {n: $n}}) { id } }"
)


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
@pytest.mark.fast_paths_only(
    "a peer that stopped reading is cut off by aborting the server's transport, which"
    " only the uvicorn adapter reaches; through plain ASGI the close waits on the peer"
)
async def test_client_that_never_reads_is_dropped_others_unaffected(
    fast: LiveServer, protocol: str
) -> None:
    owner = fast.client(unique("owner"))
    room = unique("room")
    await owner.execute(CREATE_ROOM, id=room)
    async with ws_connect(fast, owner.token) as reader:
        watching = await reader.subscribe(ROOM_TEXTS, id=room)
        # max_queue=1: once one frame waits unread the client stops reading the
        # socket at all, pings included, like a frozen browser tab.
        async with websockets.connect(
            fast.ws_url, subprotocols=[Subprotocol(protocol)], max_queue=1, ping_interval=None
        ) as stalled:
            await acked(stalled, fast)
            await send(stalled, start_frame(protocol, "s", ROOM_TEXTS, id=room))
            await fast.wait_subscribers(2)
            for n in range(15):
                await owner.execute(SEND_TEXT, id=room, n=n)
            got = [m["data"]["n"] for m in await watching.take(15, "roomMessages")]
            assert got == list(range(15))
            # The server drops the stalled client by itself (it never answers a
            # ping), freeing its subscription; the reader keeps its own.
            await fast.wait_subscribers(1)
            await fast.wait_metric("streaming_connections_active", 1)
        await owner.execute(SEND_TEXT, id=room, n=40)
        assert (await watching.next())["roomMessages"]["data"] == {"n": 40}


# --- the library paths ----------------------------------------------------------------


async def test_the_server_takes_the_library_paths_it_is_told(
    server: LiveServer, library_paths: str
) -> None:
    # With fast_paths off the server says, once, that it keeps to the public
    # API; the suite above then ran on that path.
    said = server.log().count("strawberry: fast paths off (setting fast_paths): public API only")
    assert said == (1 if library_paths == "public" else 0)
