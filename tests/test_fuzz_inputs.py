"""Property-based tests of client input: ids, cursors and JSON payloads,
against a live server per backend.

Whatever a client sends as an id, a cursor (`history(after/before)`,
`roomMessages(after:)`, SSE `Last-Event-ID`) or as a message's
`data`/`metadata`, the answer is a clear error or a success, never a 5xx,
an INTERNAL_SERVER_ERROR or a logged traceback, and the server stays
healthy. An accepted payload reads back as it was sent.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from tests.fuzzing import (
    BACKENDS,
    FUZZ,
    assert_healthy,
    assert_no_internal_error,
    backend_settings,
    checked,
    dumps,
    finite,
    graphql,
    ids,
    odd_digits,
    post_raw,
    raw_json,
    raw_numbers,
)
from tests.fuzzing import any_text as text
from tests.live import TIMEOUT, LiveServer, unique

OWNER = "fuzz-owner"
MESSAGES = 5

CREATE_ROOM = 'mutation($id: ID!) { createRoom(input: {id: $id, name: "fuzz"}) { id } }'
CREATE_CHANNEL = 'mutation($id: ID!) { createChannel(input: {id: $id, name: "fuzz"}) { id } }'
SEND = (
    "mutation($id: ID!, $n: Int!) { sendMessage(input: {roomId: $id, data: {n: $n}}) { cursor } }"
)
HISTORY = """
query($room: ID!, $after: String, $before: String, $first: Int, $last: Int) {
  history(roomId: $room, after: $after, before: $before, first: $first, last: $last) {
    edges { cursor } pageInfo { hasNextPage hasPreviousPage }
  }
}
"""
ROOM_MESSAGES = """
subscription($room: ID!, $after: String) { roomMessages(roomId: $room, after: $after) { cursor } }
"""

# Every operation that takes an id, with the variables the id goes into.
# `$room` and `$channel` are the fuzz room and channel where one is needed
# besides the fuzzed id.
ID_QUERIES = [
    "query($id: ID!) { room(id: $id) { id } }",
    "query($id: ID!) { history(roomId: $id) { edges { cursor } } }",
    "query($id: ID!, $room: ID!) { history(roomId: $room, threadId: $id) { edges { cursor } } }",
    "query($id: ID!) { channel(id: $id) { id } }",
    "query($id: ID!) { presence(userIds: [$id]) { userId } }",
    "query($id: ID!) { roomPresence(roomId: $id) { userId } }",
    "query($id: ID!) { typingUsers(roomId: $id) }",
    'mutation($id: ID!) { createRoom(input: {id: $id, name: "f"}) { id } }',
    'mutation($id: ID!) { updateRoom(id: $id, input: {name: "g"}) { id } }',
    "mutation($id: ID!) { deleteRoom(id: $id) }",
    "mutation($id: ID!) { joinRoom(roomId: $id) { id } }",
    "mutation($id: ID!) { leaveRoom(roomId: $id) }",
    "mutation($id: ID!, $room: ID!) { addMember(roomId: $room, userId: $id) { userId } }",
    'mutation($id: ID!) { addMember(roomId: $id, userId: "u") { userId } }',
    "mutation($id: ID!, $room: ID!) { removeMember(roomId: $room, userId: $id) }",
    "mutation($id: ID!, $room: ID!) "
    "{ setMemberRole(roomId: $room, userId: $id, role: ADMIN) { userId } }",
    "mutation($id: ID!, $room: ID!) { banMember(roomId: $room, userId: $id) }",
    "mutation($id: ID!, $room: ID!) { unbanMember(roomId: $room, userId: $id) }",
    "mutation($id: ID!) { sendMessage(input: {roomId: $id, data: 1}) { id } }",
    "mutation($id: ID!, $room: ID!) { sendMessage(input: {roomId: $room, threadId: $id}) { id } }",
    'mutation($id: ID!) { createChannel(input: {id: $id, name: "f"}) { id } }',
    "mutation($id: ID!) { deleteChannel(id: $id) }",
    "mutation($id: ID!, $channel: ID!) { grantChannel(channelId: $channel, userId: $id) }",
    "mutation($id: ID!, $channel: ID!) { revokeChannel(channelId: $channel, userId: $id) }",
    'mutation($id: ID!) { grantChannel(channelId: $id, userId: "u") }',
    "mutation($id: ID!) { publish(input: {channelId: $id, data: 1}) { id } }",
    "mutation($id: ID!) { startTyping(roomId: $id) }",
    "mutation($id: ID!) { stopTyping(roomId: $id) }",
]
ID_SUBSCRIPTIONS = [
    "subscription($id: ID!) { roomMessages(roomId: $id) { id } }",
    "subscription($id: ID!, $room: ID!) { roomMessages(roomId: $room, threadId: $id) { id } }",
    "subscription($id: ID!) { typing(roomId: $id) { userId } }",
    "subscription($id: ID!) { presence(roomId: $id) { userId } }",
    "subscription($id: ID!) { presence(userIds: [$id]) { userId } }",
    "subscription($id: ID!) { channelMessages(channelId: $id) { id } }",
    "subscription($id: ID!, $channel: ID!) "
    "{ channelMessages(channelId: $channel, filter: {userIds: [$id]}) { id } }",
]


@dataclass
class Fuzzed:
    """A server with a room of a few messages and a channel, both owned by
    OWNER, for the fuzzer to aim at."""

    live: LiveServer
    token: str
    room: str
    channel: str
    epoch: str
    cursors: list[str]


@pytest.fixture(scope="module", params=BACKENDS)
def fuzz_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    settings = backend_settings(request.param)
    live = LiveServer(tmp_path_factory.mktemp(f"fuzz-{request.param}"), settings).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def fuzzed(fuzz_server: LiveServer) -> Fuzzed:
    live = fuzz_server
    token = live.token(OWNER)
    room, channel = unique("room"), unique("channel")
    graphql(live, token, CREATE_ROOM, id=room)
    graphql(live, token, CREATE_CHANNEL, id=channel)
    cursors = [
        graphql(live, token, SEND, id=room, n=n)["data"]["sendMessage"]["cursor"]
        for n in range(MESSAGES)
    ]
    return Fuzzed(live, token, room, channel, cursors[0].rpartition(":")[0], cursors)


# --- cursors -----------------------------------------------------------------------------


@st.composite
def cursors(draw: st.DrawFn, epoch: str) -> str:
    """Cursors near the real ones (`<epoch>:<offset>`) and far from them."""
    offset = draw(
        st.one_of(
            st.integers(min_value=-(2**70), max_value=2**70).map(str),
            st.sampled_from([2**63 - 1, 2**63, 2**64, 2**64 + 1, 10**30, 10**400]).map(str),
            odd_digits,
            st.lists(odd_digits | st.sampled_from("0123456789"), min_size=1, max_size=5).map(
                "".join
            ),
            text,
        )
    )
    prefix = draw(st.sampled_from([epoch, epoch, f"{epoch}:{epoch}", "", "0", "x" * 200]) | text)
    return draw(st.sampled_from([f"{prefix}:{offset}", offset, f"{prefix}{offset}"]) | text)


@given(data=st.data())
@FUZZ
def test_history_cursors(fuzzed: Fuzzed, data: st.DataObject) -> None:
    cursor = data.draw(cursors(fuzzed.epoch), label="cursor")
    argument = data.draw(st.sampled_from(["after", "before"]), label="argument")
    page = data.draw(st.sampled_from([{}, {"first": 2}, {"last": 2}]), label="page")
    graphql(fuzzed.live, fuzzed.token, HISTORY, room=fuzzed.room, **{argument: cursor}, **page)
    assert_healthy(fuzzed.live)


@given(data=st.data())
@FUZZ
def test_room_messages_cursors_over_websocket(fuzzed: Fuzzed, data: st.DataObject) -> None:
    cursor = data.draw(cursors(fuzzed.epoch), label="cursor")
    with ws_session(fuzzed.live, fuzzed.token) as ws:
        settle(ws, fuzzed.live, ROOM_MESSAGES, {"room": fuzzed.room, "after": cursor})
    # The store reads the same cursor synchronously here: what the stream's
    # catch-up does after its subscription is counted.
    graphql(fuzzed.live, fuzzed.token, HISTORY, room=fuzzed.room, after=cursor)
    assert_healthy(fuzzed.live)


@given(data=st.data())
@FUZZ
def test_last_event_id(fuzzed: Fuzzed, data: st.DataObject) -> None:
    cursor = data.draw(cursors(fuzzed.epoch), label="cursor")
    # What a header can carry: no control characters but tab, no space around.
    raw = cursor.encode("utf-8", "surrogatepass")
    header = bytes(b for b in raw if b == 9 or 32 <= b != 127).strip(b" \t")
    body = {"query": ROOM_MESSAGES, "variables": {"room": fuzzed.room}}
    first = sse_first_event(fuzzed.live, fuzzed.token, body, {b"Last-Event-ID": header})
    if first is not None:
        event, payload = first
        assert event in ("next", "complete"), first
        if isinstance(payload, dict):
            assert_no_internal_error(payload.get("errors"))
    assert_healthy(fuzzed.live)


# --- ids ---------------------------------------------------------------------------------


def draw_id_operation(
    fuzzed: Fuzzed, data: st.DataObject, operations: list[str], label: str
) -> tuple[str, dict[str, Any]]:
    """One of `operations` with a fuzzed `$id`, and the variables it declares."""
    query = data.draw(st.sampled_from(operations), label=label)
    variables = {"id": data.draw(ids, label="id"), "room": fuzzed.room, "channel": fuzzed.channel}
    return query, {name: v for name, v in variables.items() if f"${name}" in query}


@given(data=st.data())
@FUZZ
def test_ids_over_http(fuzzed: Fuzzed, data: st.DataObject) -> None:
    query, used = draw_id_operation(fuzzed, data, ID_QUERIES, "operation")
    graphql(fuzzed.live, fuzzed.token, query, **used)
    assert_healthy(fuzzed.live)


@given(data=st.data())
@FUZZ
def test_ids_in_subscriptions(fuzzed: Fuzzed, data: st.DataObject) -> None:
    query, used = draw_id_operation(fuzzed, data, ID_SUBSCRIPTIONS, "subscription")
    with ws_session(fuzzed.live, fuzzed.token) as ws:
        settle(ws, fuzzed.live, query, used)
    assert_healthy(fuzzed.live)


# --- JSON payloads -----------------------------------------------------------------------

SEND_RAW = "mutation($input: SendMessageInput!) { sendMessage(input: $input) { data metadata } }"
PUBLISH_RAW = "mutation($input: PublishInput!) { publish(input: $input) { data metadata } }"


@given(data=st.data())
@FUZZ
def test_json_payloads(fuzzed: Fuzzed, data: st.DataObject) -> None:
    """`data` and `metadata` as raw JSON text (1e400, -0, huge integers,
    deep nesting): refused clearly, or stored exactly as sent."""
    payload = data.draw(raw_json, label="data")
    metadata = data.draw(st.none().map(lambda _: "null") | raw_json, label="metadata")
    mutation = data.draw(st.sampled_from(["sendMessage", "publish"]), label="mutation")
    if mutation == "sendMessage":
        query, target = SEND_RAW, f'"roomId": {dumps(fuzzed.room)}'
    else:
        query, target = PUBLISH_RAW, f'"channelId": {dumps(fuzzed.channel)}'
    body = (
        f'{{"query": {dumps(query)}, "variables": {{"input": '
        f'{{{target}, "data": {payload}, "metadata": {metadata}}}}}}}'
    )
    answer = checked(post_raw(fuzzed.live, fuzzed.token, body))
    stored = (answer.get("data") or {}).get(mutation)
    if stored is not None:
        sent = {"data": _loads(payload), "metadata": _loads(metadata)}
        if all(finite(value) for value in sent.values()):
            assert stored == sent, "the server stored something else than was sent"
        else:
            # A number JSON cannot carry (1e400) must be refused, not changed.
            raise AssertionError(f"accepted a non-finite number and stored {stored}")
    assert_healthy(fuzzed.live)


@given(data=st.data())
@FUZZ
def test_number_literals_in_the_document(fuzzed: Fuzzed, data: st.DataObject) -> None:
    """Numbers written into the document itself (`data: 1e400`) are parsed
    by the JSON scalar, not by a JSON decoder: refused, or stored as sent."""
    number = data.draw(raw_numbers, label="number")
    shape = data.draw(st.sampled_from(["{0}", "[{0}]", "{{n: {0}}}"]), label="shape")
    literal = shape.format(number)
    query = (
        f"mutation($room: ID!) {{ sendMessage(input: {{roomId: $room, data: {literal}}}) "
        "{ data } }"
    )
    answer = graphql(fuzzed.live, fuzzed.token, query, room=fuzzed.room)
    stored = (answer.get("data") or {}).get("sendMessage")
    if stored is not None:
        sent = json.loads(shape.format(number).replace("n:", '"n":'))
        assert finite(sent), f"accepted {literal} and stored {stored['data']}"
        assert stored["data"] == sent, f"sent {literal}, stored {stored['data']}"
    assert_healthy(fuzzed.live)


def _loads(raw: str) -> Any:
    try:
        return json.loads(raw)
    except RecursionError:
        return None


# --- clients -----------------------------------------------------------------------------


@contextmanager
def ws_session(live: LiveServer, token: str) -> Iterator[ClientConnection]:
    """A graphql-transport-ws session past its `connection_ack`."""
    with connect(
        live.ws_url,
        subprotocols=[Subprotocol("graphql-transport-ws")],
        open_timeout=TIMEOUT,
        max_size=None,
    ) as ws:
        init = {"Authorization": f"Bearer {token}"}
        ws.send(dumps({"type": "connection_init", "payload": init}))
        ack = json.loads(ws.recv(timeout=TIMEOUT))
        assert ack["type"] == "connection_ack", ack
        yield ws
    live.wait_idle()


def settle(ws: ClientConnection, live: LiveServer, query: str, variables: dict[str, Any]) -> None:
    """Subscribe, then wait for the subscription's first answer or for the
    server to hold it live (a valid subscription may stay quiet); check what
    came, then complete it."""
    ws.send(
        dumps(
            {"id": "fuzz", "type": "subscribe", "payload": {"query": query, "variables": variables}}
        )
    )
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            raw = ws.recv(timeout=0.02)  # polling both the socket and the server's count
        except TimeoutError:
            if live.metric("streaming_subscriptions_active") >= 1:
                break
            continue
        except ConnectionClosed as closed:
            raise AssertionError(f"the server closed the socket: {closed}") from None
        frame = json.loads(raw)
        if frame.get("type") == "ping":
            ws.send(dumps({"type": "pong"}))
        elif frame.get("id") == "fuzz":
            if frame["type"] == "error":
                assert_no_internal_error(frame["payload"])
                return
            if frame["type"] == "next":
                assert_no_internal_error(frame["payload"].get("errors"))
                break
            if frame["type"] == "complete":
                return
    else:
        raise AssertionError("the subscription neither answered nor went live")
    ws.send(dumps({"id": "fuzz", "type": "complete"}))


def sse_first_event(
    live: LiveServer, token: str, body: dict[str, Any], headers: dict[bytes, bytes]
) -> tuple[str, Any] | None:
    """The first event of a distinct-connections SSE stream, or None when
    the server holds the subscription live without sending anything.

    On a plain socket (with h11 for the HTTP framing): closing it ends the
    stream at once, wherever the reading stands.
    """
    content = dumps(body).encode()
    http = h11.Connection(our_role=h11.CLIENT)
    request = h11.Request(
        method="POST",
        target="/graphql",
        headers=[
            (b"Host", f"127.0.0.1:{live.port}".encode()),
            (b"Authorization", f"Bearer {token}".encode()),
            (b"Accept", b"text/event-stream"),
            (b"Content-Type", b"application/json"),
            (b"Content-Length", str(len(content)).encode()),
            *headers.items(),
        ],
    )
    with socket.create_connection(("127.0.0.1", live.port), timeout=TIMEOUT) as sock:
        sock.sendall(http.send(request) + http.send(h11.Data(data=content)))
        sock.sendall(http.send(h11.EndOfMessage()))
        try:
            return _first_event(sock, http, live)
        finally:
            sock.close()
            live.wait_idle()


def _first_event(
    sock: socket.socket, http: h11.Connection, live: LiveServer
) -> tuple[str, Any] | None:
    stream = b""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        event = http.next_event()
        if event is h11.NEED_DATA:
            sock.settimeout(0.02)  # polling both the socket and the server's count
            try:
                http.receive_data(sock.recv(65536))
            except TimeoutError:
                if live.metric("streaming_subscriptions_active") >= 1:
                    return None
            continue
        if isinstance(event, h11.Response):
            assert event.status_code < 500, event
            if event.status_code != 200:
                return ("http", {"status": event.status_code})
        elif isinstance(event, h11.Data):
            stream += bytes(event.data)
            *blocks, stream = stream.split(b"\n\n")
            for block in blocks:
                fields = dict(
                    line.split(b":", 1) for line in block.splitlines() if not line.startswith(b":")
                )
                if b"event" in fields:
                    return fields[b"event"].strip().decode(), json.loads(fields[b"data"])
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            raise AssertionError(f"the stream ended without an event: {stream!r}")
    raise AssertionError("the stream neither answered nor went live")
