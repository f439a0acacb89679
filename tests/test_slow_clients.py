"""Slow and idle HTTP clients are cut off; a cap on connections (issue 9, item 7).

On raw sockets: a client that sends half its headers, or nothing, gets 408
and is closed after `header_timeout`; one that sends half a body gets 408
after `body_timeout`; a kept-alive connection left idle is closed after
`idle_timeout`. WebSockets and SSE streams are not: they have their own
liveness. Past `max_connections` open connections (WebSockets included), a
new one is answered 503 and closed at once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_SETTINGS
from tests.live import TIMEOUT, LiveServer, one_test, serve_module, unique, ws_connect
from tests.sse_client import event_stream

SHORT = {"header_timeout": "400ms", "body_timeout": "400ms", "idle_timeout": "400ms"}


@pytest.fixture(scope="module")
def short(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from serve_module(tmp_path_factory.mktemp("short"), {**TEST_SETTINGS, **SHORT})


@pytest.fixture
def server(short: LiveServer) -> Iterator[LiveServer]:
    yield from one_test(short)


@asynccontextmanager
async def raw(live: LiveServer) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes (a timeout fails the test)."""
    return await asyncio.wait_for(reader.read(), TIMEOUT)


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def test_partial_headers_are_cut_off(server: LiveServer) -> None:
    async with raw(server) as (reader, writer):
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # no blank line: never complete
        answer = await until_closed(reader)
    assert status(answer) == 408
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["errors"][0]["extensions"]["code"]


async def test_a_connection_that_sends_nothing_is_cut_off(server: LiveServer) -> None:
    async with raw(server) as (reader, _):
        answer = await until_closed(reader)
    assert status(answer) == 408


async def test_partial_body_is_cut_off(server: LiveServer) -> None:
    token = server.token(unique("slow"))
    async with raw(server) as (reader, writer):
        writer.write(
            b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n"
            b"Content-Length: 100\r\n\r\n"
            b'{"query": '
        )
        answer = await until_closed(reader)
    assert status(answer) == 408
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["errors"][0]["message"] == "The request body did not arrive in time"


async def test_idle_keep_alive_connection_is_closed(server: LiveServer) -> None:
    async with raw(server) as (reader, writer):
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert status(head) == 200
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await asyncio.wait_for(reader.readexactly(length), TIMEOUT)
        # A second request on the same connection is still served...
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)) == 200
        await asyncio.wait_for(reader.readexactly(length), TIMEOUT)
        # ...then, left idle, it is closed without a word.
        assert await until_closed(reader) == b""


async def test_websockets_and_event_streams_are_not_cut_off(server: LiveServer) -> None:
    user = unique("live")
    owner = server.client(user)
    room = (await owner.execute('mutation { createRoom(input: {name: "r"}) { id } }'))[
        "createRoom"
    ]["id"]
    subscribe = f'subscription {{ roomMessages(roomId: "{room}") {{ data }} }}'
    async with (
        ws_connect(server, server.token(user)) as ws,
        event_stream(server, server.token(user), json={"query": subscribe}) as events,
    ):
        op = await ws.subscribe(subscribe)
        await server.wait_subscribers(2)
        # Twice the timeouts go by, as raw connections being cut off show.
        for _ in range(2):
            async with raw(server) as (reader, _):
                assert status(await until_closed(reader)) == 408
        send = "mutation($r: ID!) { sendMessage(input: {roomId: $r, data: {t: 1}}) { id } }"
        await owner.execute(send, r=room)
        assert (await op.next())["roomMessages"] == {"data": {"t": 1}}
        assert (await events.expect("next"))["data"]["roomMessages"] == {"data": {"t": 1}}
        await op.complete()


async def test_connections_over_the_cap_are_refused(
    tmp_path: Path, make_server: type[LiveServer]
) -> None:
    live = make_server(
        tmp_path / "cap", {**TEST_SETTINGS, "max_connections": 4, "header_timeout": "30s"}
    ).start()
    user = unique("cap")
    async with ws_connect(live, live.token(user)), ws_connect(live, live.token(user)):
        async with raw(live) as (_, first), raw(live) as _:
            # Four open (two WebSockets, two raw sockets): the fifth is refused.
            async with raw(live) as (reader, _):
                answer = await until_closed(reader)
            assert status(answer) == 503
            assert b"UNAVAILABLE" in answer
            first.close()
        # Room again once those went: the server counts them out as they close.
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while True:
            try:
                async with httpx.AsyncClient(timeout=TIMEOUT) as http:
                    if (await http.get(f"{live.url}/health")).status_code == 200:
                        break
            except httpx.HTTPError:
                pass
            assert asyncio.get_running_loop().time() < deadline, "never accepted again"
            await asyncio.sleep(0.05)  # polling the server's count of connections
    assert "Traceback" not in live.log()
