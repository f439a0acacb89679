"""A streaming session ends with its token, and holds a bounded number of
operations: WebSockets (both protocols) and event streams (both modes)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from core.settings import load_settings
from tests.conftest import TEST_SETTINGS
from tests.live import TIMEOUT, LiveServer, unique, ws_connect
from tests.sse_client import TOKEN_HEADER, event_stream, request
from transport.auth import TokenAuthority

CREATE = 'mutation($id: ID!) { createRoom(input: {id: $id, name: "Room"}) { id } }'
JOIN = "mutation($id: ID!) { joinRoom(roomId: $id) { id } }"
SEND = "mutation($r: ID!, $n: Int!) { sendMessage(input: {roomId: $r, data: {n: $n}}) { cursor } }"
ROOM_MESSAGES = "subscription($roomId: ID!) { roomMessages(roomId: $roomId) { data } }"
# The token's lifetime: the session ends at `exp` plus the 5 s clock leeway.
SHORT = timedelta(seconds=1)
EXPIRY_WAIT = 15.0


def short_token(server: LiveServer, user_id: str) -> str:
    settings = load_settings(server.data_dir / "config.yaml", data_dir=server.data_dir)
    return TokenAuthority.from_settings(settings).mint(user_id, SHORT)


async def transport_ws_session(server: LiveServer, token: str, room: str) -> dict[str, Any]:
    """Subscribe, see a message, then wait for the close."""
    async with ws_connect(server, token) as client:
        op = await client.subscribe(ROOM_MESSAGES, roomId=room)
        try:
            await asyncio.wait_for(client.ws.wait_closed(), EXPIRY_WAIT)
        finally:
            frames = []
            while not op.frames.empty():
                frames.append(op.frames.get_nowait())
        return {"code": client.ws.close_code, "reason": client.ws.close_reason, "frames": frames}


@asynccontextmanager
async def legacy_ws_acked(server: LiveServer, token: str | None) -> AsyncIterator[ClientConnection]:
    """A graphql-ws (legacy) connection, initialised with `token` and acknowledged."""
    async with websockets.connect(
        server.ws_url, subprotocols=[Subprotocol("graphql-ws")], open_timeout=TIMEOUT
    ) as ws:
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
        await ws.send(json.dumps(init))
        assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["type"] == "connection_ack"
        yield ws


async def legacy_ws_session(server: LiveServer, token: str, room: str) -> dict[str, Any]:
    async with legacy_ws_acked(server, token) as ws:
        start = {"query": ROOM_MESSAGES, "variables": {"roomId": room}}
        await ws.send(json.dumps({"id": "1", "type": "start", "payload": start}))
        frames = []
        async with asyncio.timeout(EXPIRY_WAIT):
            try:
                while True:
                    frame = json.loads(await ws.recv())
                    if frame["type"] != "ka":
                        frames.append(frame)
            except ConnectionClosed:
                pass
        return {"code": ws.close_code, "reason": ws.close_reason, "frames": frames}


async def sse_distinct_session(server: LiveServer, token: str, room: str) -> list[Any]:
    body = {"query": ROOM_MESSAGES, "variables": {"roomId": room}}
    async with event_stream(server, token, json=body) as events:
        assert events.response.status_code == 200
        return await all_events(events)


async def sse_single_session(server: LiveServer, token: str, room: str) -> list[Any]:
    reservation = await request(server, "PUT", token)
    assert reservation.status_code == 201
    stream_token = reservation.text
    async with event_stream(
        server, token, method="GET", headers={TOKEN_HEADER: stream_token}
    ) as events:
        body = {
            "query": ROOM_MESSAGES,
            "variables": {"roomId": room},
            "extensions": {"operationId": "op-1"},
        }
        started = await request(
            server, "POST", token, json=body, headers={TOKEN_HEADER: stream_token}
        )
        assert started.status_code == 202, started.text
        return await all_events(events)


async def all_events(events: Any) -> list[Any]:
    """Every event until the server ends the stream."""
    seen: list[tuple[str, Any]] = []
    async with asyncio.timeout(EXPIRY_WAIT):
        while True:
            try:
                event = await events.next(EXPIRY_WAIT)
            except AssertionError:  # ended
                return seen
            seen.append((event.event, event.json()))


EXPIRED = {"message": "token expired", "extensions": {"code": "UNAUTHENTICATED"}}


async def test_every_streaming_session_ends_with_its_token(server: LiveServer) -> None:
    alice = server.client(unique("alice"))
    room = unique("room")
    await alice.execute(CREATE, id=room)
    users = [unique(name) for name in ("ws", "legacy", "sse", "single")]
    for user in users:
        await server.client(user).execute(JOIN, id=room)
    tokens = [short_token(server, user) for user in users]
    active_before = await asyncio.to_thread(server.metric, "streaming_connections_active")

    sessions = asyncio.gather(
        transport_ws_session(server, tokens[0], room),
        legacy_ws_session(server, tokens[1], room),
        sse_distinct_session(server, tokens[2], room),
        sse_single_session(server, tokens[3], room),
    )
    # Every session had its rights until then: each gets the message.
    await server.wait_subscribers(4)
    await alice.execute(SEND, r=room, n=1)
    transport_ws, legacy_ws, distinct, single = await asyncio.wait_for(sessions, 2 * EXPIRY_WAIT)

    assert transport_ws["code"] == 4403
    assert transport_ws["reason"] == "UNAUTHENTICATED: token expired"
    assert [f["type"] for f in transport_ws["frames"]] == ["next"]

    assert legacy_ws["code"] == 4403
    assert legacy_ws["reason"] == "UNAUTHENTICATED: token expired"
    assert [f["type"] for f in legacy_ws["frames"]] == ["data", "connection_error"]
    assert legacy_ws["frames"][-1]["payload"] == EXPIRED

    message = {"data": {"roomMessages": {"data": {"n": 1}}}}
    # The last event says why; no `complete`, so graphql-sse clients retry
    # (with a fresh token from their `headers` function).
    assert distinct == [("next", message), ("next", {"errors": [EXPIRED]})]
    assert single == [
        ("next", {"id": "op-1", "payload": message}),
        ("next", {"id": "op-1", "payload": {"errors": [EXPIRED]}}),
    ]
    # Everything the sessions held is released.
    await server.wait_subscribers(0)
    await server.wait_metric("streaming_connections_active", active_before)


# A long-lived token's connection is not touched by another's expiry: each
# connection has its own timer (tests/test_connection.py, on a clock the
# test moves, instead of waiting out a real token here).


# --- operations per connection ------------------------------------------------------

LIMITED = {**TEST_SETTINGS, "max_subscriptions_per_connection": 2}
LIMIT_ERROR = {
    "message": "too many operations on this connection (2)",
    "extensions": {"code": "LIMIT_EXCEEDED"},
}


@pytest.fixture
def limited(make_server: type[LiveServer], tmp_path: Any) -> LiveServer:
    return make_server(tmp_path / "limited", dict(LIMITED)).start()


async def test_operations_per_websocket_are_bounded(limited: LiveServer) -> None:
    alice = limited.client(unique("alice"))
    room = unique("room")
    await alice.execute(CREATE, id=room)
    async with ws_connect(limited, alice.token) as client:
        first = await client.subscribe(ROOM_MESSAGES, roomId=room)
        await client.subscribe(ROOM_MESSAGES, roomId=room)
        await limited.wait_subscribers(2)
        third = await client.subscribe(ROOM_MESSAGES, roomId=room)
        refused = await third.frame()
        assert refused == {"id": third.id, "type": "error", "payload": [LIMIT_ERROR]}
        # The others go on; ending one makes room again.
        await alice.execute(SEND, r=room, n=1)
        assert await first.next() == {"roomMessages": {"data": {"n": 1}}}
        await first.complete()
        await limited.wait_subscribers(1)
        fourth = await client.subscribe(ROOM_MESSAGES, roomId=room)
        await limited.wait_subscribers(2)
        await alice.execute(SEND, r=room, n=2)
        assert await fourth.next() == {"roomMessages": {"data": {"n": 2}}}


async def test_operations_per_legacy_websocket_are_bounded(limited: LiveServer) -> None:
    alice = limited.client(unique("alice"))
    room = unique("room")
    await alice.execute(CREATE, id=room)
    async with legacy_ws_acked(limited, alice.token) as ws:
        start = {"query": ROOM_MESSAGES, "variables": {"roomId": room}}
        for op_id in ("1", "2", "3"):
            await ws.send(json.dumps({"id": op_id, "type": "start", "payload": start}))
        frame = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        while frame["type"] == "ka":
            frame = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert frame == {"type": "error", "id": "3", "payload": LIMIT_ERROR}
        await limited.wait_subscribers(2)


async def test_operations_per_event_stream_are_bounded(limited: LiveServer) -> None:
    alice = limited.client(unique("alice"))
    room = unique("room")
    await alice.execute(CREATE, id=room)
    reservation = await request(limited, "PUT", alice.token)
    stream_token = reservation.text
    async with event_stream(
        limited, alice.token, method="GET", headers={TOKEN_HEADER: stream_token}
    ):
        answers = []
        for n in range(3):
            body = {
                "query": ROOM_MESSAGES,
                "variables": {"roomId": room},
                "extensions": {"operationId": f"op-{n}"},
            }
            answers.append(
                await request(
                    limited, "POST", alice.token, json=body, headers={TOKEN_HEADER: stream_token}
                )
            )
        assert [a.status_code for a in answers] == [202, 202, 429]
        assert answers[2].json()["errors"][0]["extensions"]["code"] == "LIMIT_EXCEEDED"
        await limited.wait_subscribers(2)
