"""Property-based tests of WebSocket frames, on both protocols.

Arbitrary JSON values, arbitrary text and bytes, and valid frames with a
field changed, removed or added, before `connection_init` and after the
ack: the server answers with its protocol's errors or close codes
(README, "WebSockets"), never a traceback or an internal error, and stays
healthy for the next client.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from tests.fuzzing import (
    FUZZ,
    FUZZ_SETTINGS,
    any_text,
    assert_healthy,
    assert_no_internal_error,
    dumps,
    json_values,
)
from tests.live import TIMEOUT, LiveServer
from tests.services import ServiceProcess
from transport.ws.handlers import UNAVAILABLE_REASON

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
USER = "frame-fuzzer"
# What each protocol may close with when a client breaks it (README's table;
# 1000 after the client's own `connection_terminate`, 1007 and 1009 from the
# WebSocket layer for text that is not UTF-8 and for oversized frames).
CLOSE_CODES = {
    TRANSPORT_WS: {4400, 4401, 4403, 4409, 4429, 1007, 1009},
    LEGACY_WS: {1000, 4400, 4401, 4403, 4429, 1007, 1009},
}
QUERIES = [
    "{ me }",
    'subscription { presence(userIds: ["x"]) { userId } }',
    "mutation { setPresence(status: AWAY) { status } }",
    "subscription($r: ID!) { roomMessages(roomId: $r) { id } }",
    "{ nope }",
    "query A { me } query B { me }",
]


@pytest.fixture(scope="module")
def frame_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = {**FUZZ_SETTINGS, "max_connections_per_user": 1000}
    live = LiveServer(tmp_path_factory.mktemp("fuzz-frames"), settings).start()
    yield live
    live.stop()


# --- frames ------------------------------------------------------------------------------


def valid_frames(protocol: str, token: str) -> st.SearchStrategy[dict[str, Any]]:
    init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
    operation = st.fixed_dictionaries(
        {"query": st.sampled_from(QUERIES)},
        optional={
            "variables": st.just({"r": "room"}) | json_values,
            "operationName": st.sampled_from(["A", "B"]) | any_text,
            "extensions": json_values,
        },
    )
    op_id = st.sampled_from(["1", "2"]) | any_text
    if protocol == TRANSPORT_WS:
        return st.one_of(
            st.just(init),
            st.sampled_from([{"type": "ping"}, {"type": "pong"}]),
            st.fixed_dictionaries(
                {"type": st.just("subscribe"), "id": op_id, "payload": operation}
            ),
            st.fixed_dictionaries({"type": st.just("complete"), "id": op_id}),
        )
    return st.one_of(
        st.just(init),
        st.just({"type": "connection_terminate"}),
        st.fixed_dictionaries({"type": st.just("start"), "id": op_id, "payload": operation}),
        st.fixed_dictionaries({"type": st.just("stop"), "id": op_id}),
    )


@st.composite
def mutated(draw: st.DrawFn, frames: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A valid frame with one field (top level or in its payload) changed,
    removed or added."""
    frame = draw(frames)
    target = frame
    if isinstance(frame.get("payload"), dict) and draw(st.booleans()):
        target = frame["payload"] = dict(frame["payload"])
    key = draw(st.sampled_from(sorted(target)) | any_text) if target else draw(any_text)
    how = draw(st.sampled_from(["change", "remove"]))
    if how == "remove":
        target.pop(key, None)
    else:
        target[key] = draw(json_values)
    return frame


def frames(protocol: str, token: str) -> st.SearchStrategy[str | bytes]:
    """Frames a client may send: anything but text that is not UTF-8."""
    return st.one_of(
        json_values.map(dumps),
        any_text.filter(lambda text: not _surrogates(text)),
        st.binary(max_size=64),
        valid_frames(protocol, token).map(dumps),
        mutated(valid_frames(protocol, token)).map(dumps),
    )


def _surrogates(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


# --- the session ----------------------------------------------------------------------


@contextmanager
def open_socket(
    live: LiveServer, protocol: str, token: str, acked: bool
) -> Iterator[ClientConnection]:
    """A socket on `protocol`, past its `connection_ack` if `acked`."""
    with connect(
        live.ws_url, subprotocols=[Subprotocol(protocol)], open_timeout=TIMEOUT, max_size=None
    ) as ws:
        assert ws.subprotocol == protocol
        if acked:
            init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
            ws.send(dumps(init))
            answers(ws, protocol, "connection_ack", "")
        yield ws


def answers(ws: ClientConnection, protocol: str, until: str, sync_id: str) -> list[dict[str, Any]]:
    """The server's frames up to the sync answer (`until`), each checked."""
    seen = []
    while True:
        raw = ws.recv(timeout=TIMEOUT)
        assert isinstance(raw, str), f"a binary frame from the server: {raw!r}"
        frame = json.loads(raw)
        assert isinstance(frame, dict), frame
        seen.append(frame)
        kind = frame.get("type")
        payload = frame.get("payload")
        if kind == "ping":
            ws.send(dumps({"type": "pong"}))
        elif kind in ("error", "connection_error"):
            assert_no_internal_error(payload if isinstance(payload, list) else [payload])
        elif kind in ("next", "data") and isinstance(payload, dict):
            assert_no_internal_error(payload.get("errors"))
        if kind == until and (until != "data" or frame.get("id") == sync_id):
            return seen


def sync(ws: ClientConnection, protocol: str, token: str, acked: bool) -> None:
    """A round trip after the fuzzed frames: they were all handled by then."""
    sync_id = f"sync-{uuid4().hex}"
    if protocol == TRANSPORT_WS:
        ws.send(dumps({"type": "ping"}))
        answers(ws, protocol, "pong", sync_id)
    elif acked:
        ws.send(dumps({"id": sync_id, "type": "start", "payload": {"query": "{ me }"}}))
        answers(ws, protocol, "data", sync_id)
    else:
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
        ws.send(dumps(init))
        answers(ws, protocol, "connection_ack", sync_id)


def fuzz_session(live: LiveServer, protocol: str, acked: bool, sent: list[str | bytes]) -> None:
    token = live.token(USER)
    try:
        with open_socket(live, protocol, token, acked) as ws:
            for frame in sent:
                ws.send(frame)
            sync(ws, protocol, token, acked)
    except ConnectionClosed as closed:
        rcvd = closed.rcvd
        assert rcvd is not None, "the server dropped the socket without a close frame"
        assert rcvd.code in CLOSE_CODES[protocol], f"closed {rcvd.code} {rcvd.reason!r}"
        assert len(rcvd.reason.encode()) <= 123
    live.wait_idle()
    assert_healthy(live)


def on_every_socket(test: Callable[..., None]) -> Callable[..., None]:
    """Fuzz `test(frame_server, protocol, acked, data)` on both protocols,
    before connection_init and after the ack."""
    fuzzed: Callable[..., None] = given(data=st.data())(FUZZ(test))
    for mark in (
        pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS]),
        pytest.mark.parametrize("acked", [False, True], ids=["before-init", "after-ack"]),
    ):
        fuzzed = mark(fuzzed)
    return fuzzed


@on_every_socket
def test_any_frames(
    frame_server: LiveServer, protocol: str, acked: bool, data: st.DataObject
) -> None:
    token = frame_server.token(USER)
    sent = data.draw(st.lists(frames(protocol, token), min_size=1, max_size=3), label="frames")
    fuzz_session(frame_server, protocol, acked, sent)


@on_every_socket
def test_text_frames_that_are_not_utf8(
    frame_server: LiveServer, protocol: str, acked: bool, data: st.DataObject
) -> None:
    raw = data.draw(
        st.binary(min_size=1, max_size=64).filter(_not_utf8)
        | any_text.filter(_surrogates).map(lambda text: text.encode("utf-8", "surrogatepass")),
        label="bytes",
    )
    token = frame_server.token(USER)
    with open_socket(frame_server, protocol, token, acked) as ws:
        ws.send(raw, text=True)
        with pytest.raises(ConnectionClosed) as closed:
            sync(ws, protocol, token, acked)
    rcvd = closed.value.rcvd
    assert rcvd is not None, "the server dropped the socket without a close frame"
    assert rcvd.code in (1007, 4400), f"closed {rcvd.code} {rcvd.reason!r}"
    frame_server.wait_idle()
    assert_healthy(frame_server)


def _not_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


# --- what the fuzzer found ---------------------------------------------------------------

UNKNOWN_OPERATION = {"query": "{ me }", "operationName": "Nope"}


def test_unknown_operation_name_is_bad_user_input(frame_server: LiveServer) -> None:
    """An `operationName` the document lacks was an internal error with a
    traceback on both WebSocket protocols and over SSE."""
    token = frame_server.token(USER)
    with open_socket(frame_server, TRANSPORT_WS, token, acked=True) as ws:
        ws.send(dumps({"id": "1", "type": "subscribe", "payload": UNKNOWN_OPERATION}))
        error = answers(ws, TRANSPORT_WS, "error", "")[-1]
    assert error["payload"][0]["extensions"]["code"] == "BAD_USER_INPUT", error
    assert error["payload"][0]["message"] == 'Unknown operation named "Nope".'

    with open_socket(frame_server, LEGACY_WS, token, acked=True) as ws:
        ws.send(dumps({"id": "1", "type": "start", "payload": UNKNOWN_OPERATION}))
        error = answers(ws, LEGACY_WS, "error", "")[-1]
    assert error["payload"]["extensions"]["code"] == "BAD_USER_INPUT", error

    response = httpx.post(
        f"{frame_server.url}/graphql",
        json=UNKNOWN_OPERATION,
        headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
        timeout=TIMEOUT,
    )
    data = [line for line in response.text.splitlines() if line.startswith("data: {")]
    result = json.loads(data[0].removeprefix("data: "))
    assert result["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", result


@pytest.mark.parametrize("kind", ["redis", "nats"])
def test_connection_init_while_the_backend_is_down(
    kind: str, make_server: type[LiveServer], tmp_path: Path
) -> None:
    """An outage is said in the close reason and logged as one line, without
    a traceback (`make_server` checks the log when it stops the server)."""
    service = ServiceProcess(kind, tmp_path / kind, persistent=False).start()
    try:
        settings = {**FUZZ_SETTINGS, "backend": kind, "backend_urls": [service.url]}
        live = make_server(tmp_path / "server", settings).start()
        token = live.token(USER)
    finally:
        service.stop()
    for protocol in (TRANSPORT_WS, LEGACY_WS):
        with pytest.raises(ConnectionClosed) as closed, open_socket(live, protocol, token, True):
            pass
        rcvd = closed.value.rcvd
        assert rcvd is not None
        assert (rcvd.code, rcvd.reason) == (4500, UNAVAILABLE_REASON)
    assert_healthy(live)
    live.stop()
    assert "message handling failed: " in live.log()
