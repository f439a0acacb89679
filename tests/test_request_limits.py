"""Bytes and documents bounded at the edge, on every path (issue 9, item 4).

A request over `max_request_bytes` is refused before it is parsed: HTTP 413
PAYLOAD_TOO_LARGE (by Content-Length, or counted for a chunked body),
WebSocket close 1009. A document within it but over the token limit is
refused by the parser on every path: HTTP, both WebSocket protocols (where
shared-execution planning reads it first), SSE in both modes (and the
`Last-Event-ID` resume that reads it first). A burst of such refusals leaves
the server's memory where it was. An invalid UTF-8 text frame closes the
socket with 1007 and no traceback.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from tests.conftest import TEST_SETTINGS
from tests.live import TIMEOUT, LiveServer, one_test, serve_module, unique
from tests.sse_client import TOKEN_HEADER, event_stream, request

LIMIT = 16 * 1024
MAX_TOKENS = 300
LIMITED = {**TEST_SETTINGS, "max_request_bytes": LIMIT, "max_tokens": MAX_TOKENS}
TOKENS_REFUSED = f"Syntax Error: Document contains more than {MAX_TOKENS} tokens. Parsing aborted."
# A few hundred bytes, too many tokens: a valid subscription but for its size,
# the shape shared-execution planning used to parse, validate and keep.
TYPING = 'subscription { typing(roomId: "r") { ' + "userId " * 400 + "} }"
RSS_SLACK = 50 * 1024 * 1024


def oversized(n: int = 0) -> str:
    """A document just over the byte limit (a comment: few tokens)."""
    return f"# {n}" + "x" * LIMIT + "\n{ me }"


def many_tokens(n: int = 0) -> str:
    """A different over-the-token-limit document for each n."""
    return f'subscription {{ typing(roomId: "r{n}") {{ {"userId " * 400} }} }}'


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from serve_module(tmp_path_factory.mktemp("limited"), dict(LIMITED))


@pytest.fixture
def server(limited: LiveServer) -> Iterator[LiveServer]:
    yield from one_test(limited)


def auth(live: LiveServer, user: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {live.token(user or unique('u'))}"}


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    assert response.headers["connection"] == "close"
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    assert str(LIMIT) in error["message"]


async def still_serving(live: LiveServer) -> None:
    user = unique("after")
    assert await live.client(user).execute("{ me }") == {"me": user}


# --- HTTP ---------------------------------------------------------------------------------


async def test_http_body_over_the_limit_is_413_before_reading(server: LiveServer) -> None:
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        response = await http.post(
            f"{server.url}/graphql", json={"query": oversized()}, headers=auth(server)
        )
        assert_too_large(response)

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted
            yield b'{"query": "'
            for _ in range(40):
                yield b"#" * 1024

        response = await http.post(
            f"{server.url}/graphql",
            content=chunks(),
            headers={**auth(server), "content-type": "application/json"},
        )
        assert_too_large(response)
        response = await http.get(
            f"{server.url}/graphql", params={"query": oversized()}, headers=auth(server)
        )
        assert_too_large(response)
    # Just under the limit is read and answered.
    body = {"query": "{ me }" + " " * (LIMIT - 100)}
    response = await server.client(unique("u")).post(body["query"])
    assert response.status_code == 200, response.text
    await still_serving(server)


async def test_http_json_body_that_is_no_object_is_400(server: LiveServer) -> None:
    """Strawberry reads keys of the decoded body: a scalar must be refused
    before it (it was a 500 and a traceback), whatever the answer's type."""
    url = f"{server.url}/graphql"
    json_body = {**auth(server), "content-type": "application/json"}
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        for accept in ("application/json", "text/event-stream"):
            for body in (b"1", b'"{ me }"', b"null", b" \n true"):
                response = await http.post(
                    url, content=body, headers={**json_body, "accept": accept}
                )
                assert response.status_code == 400, (accept, body, response.text)
                assert response.text == "The request body must be a JSON object.", body
        # Not JSON at all: Strawberry's own answer, as before.
        response = await http.post(url, content=b"{ me }", headers=json_body)
        assert (response.status_code, response.text) == (
            400,
            "Unable to parse request body as JSON",
        )
    await still_serving(server)


async def test_http_document_over_the_token_limit_is_refused(server: LiveServer) -> None:
    error = await server.client(unique("u")).error("{ " + "me " * 400 + "}")
    assert error.code == "GRAPHQL_VALIDATION_FAILED"
    assert str(error) == TOKENS_REFUSED


# --- WebSockets ---------------------------------------------------------------------------


async def ws_closed(ws: Any) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    received = closed.value.rcvd
    assert received is not None, "closed without a close frame"
    return received.code, received.reason


async def acked(ws: Any, live: LiveServer) -> None:
    token = live.token(unique("ws"))
    await ws.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
    frame = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    assert frame["type"] == "connection_ack", frame


def connect(live: LiveServer, protocol: str) -> Any:
    return websockets.connect(
        live.ws_url, subprotocols=[Subprotocol(protocol)], open_timeout=TIMEOUT
    )


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_ws_message_over_the_limit_closes_1009(server: LiveServer, protocol: str) -> None:
    async with connect(server, protocol) as ws:
        await acked(ws, server)
        start = "subscribe" if protocol == "graphql-transport-ws" else "start"
        frame = {"id": "1", "type": start, "payload": {"query": oversized()}}
        await ws.send(json.dumps(frame))
        assert (await ws_closed(ws))[0] == 1009
    await still_serving(server)


async def test_ws_document_over_the_token_limit_is_refused(server: LiveServer) -> None:
    # graphql-transport-ws: an error for the operation; the socket goes on.
    async with connect(server, "graphql-transport-ws") as ws:
        await acked(ws, server)
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": TYPING}}))
        frame = await legacy_frame(ws)
        assert frame["type"] == "error" and frame["id"] == "1", frame
        assert [e["message"] for e in frame["payload"]] == [TOKENS_REFUSED]
        await ws.send(json.dumps({"id": "2", "type": "subscribe", "payload": {"query": "{ me }"}}))
        frame = await legacy_frame(ws)
        assert frame["type"] == "next" and frame["payload"]["data"]["me"], frame
    # Legacy graphql-ws: an error for the operation; the socket goes on.
    async with connect(server, "graphql-ws") as ws:
        await acked(ws, server)
        await ws.send(json.dumps({"id": "1", "type": "start", "payload": {"query": TYPING}}))
        frame = await legacy_frame(ws)
        assert frame["type"] == "error" and frame["id"] == "1", frame
        assert frame["payload"]["message"] == TOKENS_REFUSED
        await ws.send(json.dumps({"id": "2", "type": "start", "payload": {"query": "{ me }"}}))
        frame = await legacy_frame(ws)
        assert frame["type"] == "data" and frame["payload"]["data"]["me"], frame


async def legacy_frame(ws: Any) -> dict[str, Any]:
    """The next frame that is not a keep-alive."""
    while True:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        if frame["type"] not in ("ka", "ping"):
            return frame


@pytest.mark.parametrize("after_init", [False, True])
async def test_invalid_utf8_text_frame_closes_1007_without_traceback(
    server: LiveServer, after_init: bool
) -> None:
    async with connect(server, "graphql-transport-ws") as ws:
        if after_init:
            await acked(ws, server)
        await ws.send(b'{"type": "\xff\xfe"}', text=True)
        assert (await ws_closed(ws))[0] == 1007
    await still_serving(server)


# --- Server-Sent Events ---------------------------------------------------------------------


async def test_sse_body_over_the_limit_is_413(server: LiveServer) -> None:
    token = server.token(unique("sse"))
    async with event_stream(server, token, json={"query": oversized()}) as events:
        await events.response.aread()
        assert_too_large(events.response)
    reserved = await request(server, "PUT", token)
    assert reserved.status_code == 201
    response = await request(
        server,
        "POST",
        token,
        json={"query": oversized(), "extensions": {"operationId": "1"}},
        headers={TOKEN_HEADER: reserved.text},
    )
    assert_too_large(response)


@pytest.mark.parametrize("last_event_id", [None, "0:1"])
async def test_sse_document_over_the_token_limit_is_refused(
    server: LiveServer, last_event_id: str | None
) -> None:
    token = server.token(unique("sse"))
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    async with event_stream(server, token, json={"query": TYPING}, headers=headers) as events:
        payload = await events.expect("next")
        assert payload["errors"][0]["message"] == TOKENS_REFUSED
        assert (await events.next()).event == "complete"


async def test_sse_single_connection_document_over_the_token_limit_is_400(
    server: LiveServer,
) -> None:
    token = server.token(unique("sse"))
    reserved = await request(server, "PUT", token)
    response = await request(
        server,
        "POST",
        token,
        json={"query": TYPING, "extensions": {"operationId": "1"}},
        headers={TOKEN_HEADER: reserved.text},
    )
    assert response.status_code == 400, response.text
    error = response.json()["errors"][0]
    assert error["message"] == TOKENS_REFUSED
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


# --- a burst leaves nothing behind ------------------------------------------------------------


def rss(live: LiveServer) -> int:
    if live.process is None:
        raise AssertionError("the server is not running")
    for line in Path(f"/proc/{live.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def ws_refusals(live: LiveServer, documents: list[str]) -> list[tuple[str, Any]]:
    """Subscribe with each document on one connection; what each got back
    (an error frame's message, or the close code when the socket closed)."""
    answers: list[tuple[str, Any]] = []
    for document in documents:
        async with connect(live, "graphql-transport-ws") as ws:
            await acked(ws, live)
            frame = {"id": "1", "type": "subscribe", "payload": {"query": document}}
            await ws.send(json.dumps(frame))
            try:
                got = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
                answers.append((got["type"], got["payload"][0]["message"]))
            except ConnectionClosed as closed:
                answers.append(("closed", closed.rcvd.code if closed.rcvd else None))
    return answers


async def test_a_burst_of_refused_documents_leaves_memory_settled(
    tmp_path: Path, make_server: type[LiveServer]
) -> None:
    live = make_server(tmp_path / "burst", {**LIMITED, "max_connections_per_user": 100}).start()
    await still_serving(live)
    await ws_refusals(live, [many_tokens(), oversized()])  # every path warmed up once
    before = rss(live)
    headers = auth(live)
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:

        async def post(document: str) -> httpx.Response:
            return await http.post(f"{live.url}/graphql", json={"query": document}, headers=headers)

        big = await asyncio.gather(*(post(oversized(n)) for n in range(150)))
        tokens = await asyncio.gather(*(post(many_tokens(n)) for n in range(150)))
    assert {r.status_code for r in big} == {413}
    assert {r.json()["errors"][0]["message"] for r in tokens} == {TOKENS_REFUSED}
    for batch in range(5):
        answers = await asyncio.gather(
            ws_refusals(live, [oversized(n) for n in range(batch * 10, batch * 10 + 10)]),
            ws_refusals(live, [many_tokens(n) for n in range(batch * 10, batch * 10 + 10)]),
        )
        assert {a for a in answers[0]} == {("closed", 1009)}
        assert {a for a in answers[1]} == {("error", TOKENS_REFUSED)}
    await still_serving(live)
    grown = rss(live) - before
    assert grown < RSS_SLACK, f"the server kept {grown / 2**20:.0f} MiB more"
    assert "Traceback" not in live.log()
