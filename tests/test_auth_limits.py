"""Authentication over HTTP and WebSockets, open endpoints, metrics, the
connection limit, GraphQL limits, and the command line."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from tests.conftest import TEST_SETTINGS
from tests.live import ROOT, TIMEOUT, LiveServer, free_port, unique, ws_connect

ME = "{ me }"
CREATE = 'mutation($id: ID!) { createRoom(input: {id: $id, name: "Room"}) { id } }'
SEND = """
mutation($room: ID!, $text: String!) {
  sendMessage(input: {roomId: $room, data: {text: $text}}) { cursor }
}
"""
ROOM_MESSAGES = "subscription($room: ID!) { roomMessages(roomId: $room) { data cursor } }"
MY_ROOMS = "{ rooms(mine: true) { id } }"


def secret_of(server: LiveServer) -> str:
    return (server.data_dir / "jwt-secret").read_text().strip()


def raw_token(user_id: str, key: str, *, expires_in: timedelta) -> str:
    now = datetime.now(UTC)
    return jwt.encode(
        {"sub": user_id, "iat": now - timedelta(hours=1), "exp": now + expires_in},
        key,
        algorithm="HS256",
    )


async def post_as(server: LiveServer, headers: dict[str, str], query: str = ME) -> httpx.Response:
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        return await http.post(f"{server.url}/graphql", json={"query": query}, headers=headers)


async def open_ws(
    server: LiveServer,
    *,
    subprotocol: str = "graphql-transport-ws",
    headers: dict[str, str] | None = None,
) -> ClientConnection:
    return await websockets.connect(
        server.ws_url,
        subprotocols=[Subprotocol(subprotocol)],
        additional_headers=headers,
        open_timeout=TIMEOUT,
    )


async def refused(ws: ClientConnection, payload: dict[str, Any]) -> tuple[int, str]:
    """Send connection_init and return the close code and reason the server answers with."""
    await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
    with pytest.raises(ConnectionClosed) as closed:
        frame = await asyncio.wait_for(ws.recv(), TIMEOUT)
        raise AssertionError(f"expected a close, got {frame!r}")
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def ack(ws: ClientConnection, payload: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    return frame


async def query_over_ws(ws: ClientConnection, query: str) -> dict[str, Any]:
    """Run a query as a graphql-transport-ws operation; its data."""
    await ws.send(json.dumps({"id": "q", "type": "subscribe", "payload": {"query": query}}))
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        if frame["type"] == "ping":
            await ws.send(json.dumps({"type": "pong"}))
            continue
        assert frame["type"] == "next", frame
        data: dict[str, Any] = frame["payload"]["data"]
        complete = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert complete == {"id": "q", "type": "complete"}
        return data


async def still_serving(server: LiveServer) -> None:
    other = unique("other")
    assert (await server.client(other).execute(ME)) == {"me": other}


# --- HTTP -----------------------------------------------------------------------------


async def test_http_without_token_is_401(server: LiveServer) -> None:
    room_id = unique("room")
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Basic dXNlcjpwdw=="}):
        response = await post_as(
            server,
            headers,
            f'mutation {{ createRoom(input: {{id: "{room_id}", name: "x"}}) {{ id }} }}',
        )
        assert response.status_code == 401, headers
        assert response.json() == {
            "errors": [{"message": "missing token", "extensions": {"code": "UNAUTHENTICATED"}}]
        }
        assert response.headers["www-authenticate"].startswith("Bearer")
    # Nothing was created on the anonymous requests' behalf.
    owner = server.client(unique("owner"))
    assert (await owner.execute("query($id: ID!) { room(id: $id) { id } }", id=room_id)) == {
        "room": None
    }
    await still_serving(server)


async def test_expired_token_is_401(server: LiveServer) -> None:
    user = unique("late")
    token = raw_token(user, secret_of(server), expires_in=timedelta(minutes=-5))
    response = await post_as(server, {"Authorization": f"Bearer {token}"}, MY_ROOMS)
    assert response.status_code == 401
    assert response.json() == {
        "errors": [{"message": "token expired", "extensions": {"code": "UNAUTHENTICATED"}}]
    }
    # The same user with a fresh token is fine, and owns nothing.
    assert (await server.client(user).execute(MY_ROOMS)) == {"rooms": []}


async def test_token_signed_with_another_secret_is_401(server: LiveServer) -> None:
    forged = raw_token(
        unique("forger"), "not-the-server-secret-" * 3, expires_in=timedelta(hours=1)
    )
    for token in (forged, "not.a.jwt", forged + "x"):
        response = await post_as(server, {"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
        error = response.json()["errors"][0]
        assert error["extensions"] == {"code": "UNAUTHENTICATED"}
        assert error["message"] in {"invalid token signature", "malformed token"}
    await still_serving(server)


async def test_graphiql_page_is_open(server: LiveServer) -> None:
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        response = await http.get(f"{server.url}/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()


async def test_graphiql_assets_are_served_by_the_server(server: LiveServer) -> None:
    """DESIGN.md: GraphiQL's assets come from the server itself (works offline)."""
    import base64
    import hashlib

    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        page = (await http.get(f"{server.url}/graphql", headers={"Accept": "text/html"})).text
        external = re.findall(r'(?:src|href)="(https?://[^"]+)"', page)
        assert external == [], f"GraphiQL loads assets from the internet: {external}"
        local = re.findall(r'(?:src|href)="(/[^"]+)"', page)
        assert local, "no local assets referenced"
        # Each <script src> / <link href> tag: its URL, the content type it
        # needs, and its integrity hash (the vendored files are unpkg's bytes).
        tags = re.findall(r"<(script|link)\b([^>]*)>", page)
        assets: dict[str, tuple[str, str | None]] = {}
        for tag, attrs in tags:
            url = re.search(r'\b(?:src|href)="(/[^"]+)"', attrs)
            if url is None:
                continue
            sri = re.search(r'\bintegrity="sha384-([^"]+)"', attrs)
            kind = "javascript" if tag == "script" else "css"
            assets[url.group(1)] = (kind, sri.group(1) if sri else None)
        assert sorted(assets) == sorted(set(local))
        assert {kind for kind, _ in assets.values()} == {"javascript", "css"}
        for path, (kind, integrity) in assets.items():
            response = await http.get(f"{server.url}{path}")  # no token
            assert response.status_code == 200, path
            assert response.content, path
            assert kind in response.headers["content-type"], (path, response.headers)
            if integrity is not None:
                digest = base64.b64encode(hashlib.sha384(response.content).digest()).decode()
                assert digest == integrity, f"{path} does not match the page's integrity hash"


async def test_health_and_ready_need_no_token(server: LiveServer) -> None:
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        health = await http.get(f"{server.url}/health")
        ready = await http.get(f"{server.url}/ready")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


async def test_metrics_move(server: LiveServer) -> None:
    names = (
        "streaming_connections_active",
        "streaming_connections_total",
        "streaming_messages_broadcast_total",
        "streaming_rooms_joins_total",
        "streaming_presence_updates_total",
    )

    def snapshot() -> dict[str, float]:
        return {name: server.metric(name) for name in names}

    before = await asyncio.to_thread(snapshot)
    alice, bob = server.client(unique("alice")), server.client(unique("bob"))
    room_id = unique("room")
    await alice.execute(CREATE, id=room_id)  # a join and a JOIN message
    await bob.execute("mutation($id: ID!) { joinRoom(roomId: $id) { id } }", id=room_id)
    await alice.execute(SEND, room=room_id, text="hi")
    async with ws_connect(server, alice.token):
        during = await asyncio.to_thread(snapshot)
        await alice.execute("mutation { setPresence(status: BUSY) { status } }")
        after = await asyncio.to_thread(snapshot)

    assert during["streaming_connections_total"] == before["streaming_connections_total"] + 1
    assert during["streaming_connections_active"] == before["streaming_connections_active"] + 1
    assert during["streaming_rooms_joins_total"] == before["streaming_rooms_joins_total"] + 2
    assert (
        during["streaming_messages_broadcast_total"]
        == before["streaming_messages_broadcast_total"] + 3
    )
    assert after["streaming_presence_updates_total"] > before["streaming_presence_updates_total"]


HISTORY = "query($id: ID!) { history(roomId: $id, last: 50) { edges { cursor } } }"


async def test_history_is_timed_and_every_response_says_how_long_it_took(
    server: LiveServer,
) -> None:
    alice = server.client(unique("alice"))
    room_id = unique("room")
    await alice.execute(CREATE, id=room_id)
    count, total = "streaming_history_seconds_count", "streaming_history_seconds_sum"
    before = await asyncio.to_thread(server.metric, count)
    spent_before = await asyncio.to_thread(server.metric, total)
    answer = await alice.post(HISTORY, id=room_id)
    assert answer.status_code == 200 and "errors" not in answer.json(), answer.text
    # The whole request as the server saw it, in milliseconds.
    timing = answer.headers["server-timing"]
    assert re.fullmatch(r"app;dur=\d+\.\d{3}", timing), timing
    assert await asyncio.to_thread(server.metric, count) == before + 1
    # The whole request includes the history lookup the histogram timed
    # (both on the server's clock), so it cannot have taken less.
    history_ms = (await asyncio.to_thread(server.metric, total) - spent_before) * 1000
    assert 0 < history_ms <= float(timing.split("=")[1]), (history_ms, timing)
    # Refused history pages are timed too; bad documents still say how long.
    await alice.post(HISTORY, id=unique("missing"))
    assert await asyncio.to_thread(server.metric, count) == before + 2
    bad = await alice.post("{ history(")
    assert "errors" in bad.json() and "server-timing" in bad.headers
    assert await asyncio.to_thread(server.metric, count) == before + 2


# --- WebSockets -----------------------------------------------------------------------


async def test_ws_init_without_or_with_bad_token_is_closed_4403(server: LiveServer) -> None:
    expired = raw_token(unique("late"), secret_of(server), expires_in=timedelta(minutes=-5))
    forged = raw_token(unique("forger"), "another-secret-" * 4, expires_in=timedelta(hours=1))
    for payload, why in (
        ({}, "missing token"),
        ({"Authorization": "Bearer garbage"}, "malformed token"),
        ({"Authorization": f"Bearer {expired}"}, "token expired"),
        ({"token": forged}, "invalid token signature"),
    ):
        async with await open_ws(server) as ws:
            code, reason = await refused(ws, payload)
        assert code == 4403, payload
        assert reason == f"UNAUTHENTICATED: {why}"
    await still_serving(server)


async def test_legacy_graphql_ws_refused_with_connection_error(server: LiveServer) -> None:
    async with await open_ws(server, subprotocol="graphql-ws") as ws:
        assert ws.subprotocol == "graphql-ws"
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        frame = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert frame == {
            "type": "connection_error",
            "payload": {"message": "missing token", "extensions": {"code": "UNAUTHENTICATED"}},
        }
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code != 1000


async def test_legacy_graphql_ws_accepts_a_good_token(server: LiveServer) -> None:
    user = unique("legacy")
    owner = server.client(user)
    room_id = unique("room")
    await owner.execute(CREATE, id=room_id)

    async def next_frame(ws: ClientConnection) -> dict[str, Any]:
        while True:
            frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            if frame["type"] != "ka":
                return frame

    async with await open_ws(server, subprotocol="graphql-ws") as ws:
        assert await ack(ws, {"Authorization": f"Bearer {owner.token}"}) == {
            "type": "connection_ack",
            "payload": {"userId": user},
        }
        # Queries run over the legacy protocol too: data, then complete.
        await ws.send(json.dumps({"id": "q", "type": "start", "payload": {"query": ME}}))
        assert await next_frame(ws) == {
            "id": "q",
            "type": "data",
            "payload": {"data": {"me": user}},
        }
        assert await next_frame(ws) == {"id": "q", "type": "complete"}

        start = {"query": ROOM_MESSAGES, "variables": {"room": room_id}}
        await ws.send(json.dumps({"id": "s", "type": "start", "payload": start}))
        await server.wait_subscribers(1)
        sent = await owner.execute(SEND, room=room_id, text="legacy")
        assert await next_frame(ws) == {
            "id": "s",
            "type": "data",
            "payload": {
                "data": {
                    "roomMessages": {
                        "data": {"text": "legacy"},
                        "cursor": sent["sendMessage"]["cursor"],
                    }
                }
            },
        }
        await ws.send(json.dumps({"id": "s", "type": "stop"}))
        await server.wait_subscribers(0)


async def test_ws_token_in_graphiql_style_payload(server: LiveServer) -> None:
    user = unique("graphiql")
    async with await open_ws(server) as ws:
        answer = await ack(ws, {"Authorization": f"Bearer {server.token(user)}"})
        assert answer == {"type": "connection_ack", "payload": {"userId": user}}
        assert await query_over_ws(ws, ME) == {"me": user}


async def test_ws_token_in_upgrade_header(server: LiveServer) -> None:
    user = unique("header")
    headers = {"Authorization": f"Bearer {server.token(user)}"}
    async with await open_ws(server, headers=headers) as ws:
        answer = await ack(ws, {})
        assert answer == {"type": "connection_ack", "payload": {"userId": user}}
        assert await query_over_ws(ws, ME) == {"me": user}


async def test_connection_limit_per_user(server: LiveServer) -> None:
    user = unique("many")
    token = server.token(user)
    owner = server.client(unique("owner"))
    room_id = unique("room")
    await owner.execute(CREATE, id=room_id)
    base = await asyncio.to_thread(server.metric, "streaming_connections_active")

    async with (
        ws_connect(server, token) as first,
        ws_connect(server, token) as second,
        ws_connect(server, token) as third,
    ):
        async with await open_ws(server) as fourth:
            code, reason = await refused(fourth, {"Authorization": f"Bearer {token}"})
        assert code == 4403
        assert reason.startswith("LIMIT_EXCEEDED")
        assert "(3)" in reason
        assert await asyncio.to_thread(server.metric, "streaming_connections_active") == base + 3

        # The three others keep working.
        subs = [await ws.subscribe(ROOM_MESSAGES, room=room_id) for ws in (first, second, third)]
        await server.wait_subscribers(3)
        sent = await owner.execute(SEND, room=room_id, text="to all three")
        for sub in subs:
            got = (await sub.next())["roomMessages"]
            assert got == {
                "data": {"text": "to all three"},
                "cursor": sent["sendMessage"]["cursor"],
            }
        # Another user is not affected by this user's limit.
        async with ws_connect(server, server.token(unique("someone"))):
            pass

        await subs[2].complete()
        await server.wait_subscribers(2)
        await third.close()
        await server.wait_metric("streaming_connections_active", base + 2)
        async with ws_connect(server, token) as replacement:
            sub = await replacement.subscribe(ROOM_MESSAGES, room=room_id)
            await server.wait_subscribers(3)
            again = await owner.execute(SEND, room=room_id, text="again")
            assert (await sub.next())["roomMessages"]["cursor"] == again["sendMessage"]["cursor"]
            for old in subs[:2]:
                assert (await old.next())["roomMessages"]["data"] == {"text": "again"}
            await sub.complete()
            for old in subs[:2]:
                await old.complete()
            await server.wait_subscribers(0)


# --- GraphQL limits -------------------------------------------------------------------


async def test_depth_and_alias_limits(tmp_path: Path, make_server: type[LiveServer]) -> None:
    live = make_server(
        tmp_path / "limits", {**TEST_SETTINGS, "max_query_depth": 2, "max_aliases": 2}
    ).start()
    client = live.client(unique("deep"))
    deep = '{ history(roomId: "x") { edges { node { id } } } }'
    error = await client.error(deep)
    assert "exceeds maximum operation depth of 2" in str(error)
    assert error.errors[0].get("path") is None  # refused before running
    error = await client.error("{ a: me b: me c: me }")
    assert str(error) == "3 aliases found. Allowed: 2"
    assert (await client.execute("{ a: me b: me }")) == {
        "a": client_user(client.token),
        "b": client_user(client.token),
    }


def client_user(token: str | None) -> str:
    assert token is not None
    sub: str = jwt.decode(token, options={"verify_signature": False})["sub"]
    return sub


# --- command line ---------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGE_STREAMING_")}
    return {**env, **extra}


async def test_cli_token_is_accepted(tmp_path: Path, make_server: type[LiveServer]) -> None:
    data_dir = tmp_path / "cli"
    live = make_server(data_dir, dict(TEST_SETTINGS)).start()
    user = unique("cli")
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "server.py", "token", user, "--data-dir", str(data_dir)],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", token)
    response = await post_as(live, {"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json() == {"data": {"me": user}}


def run_server_expecting_failure(
    args: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "server.py", "--port", str(free_port()), *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("the server started instead of refusing its settings") from exc


def test_settings_file_typo_fails_fast(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("extensions:\n  streaming:\n    max_conections_per_user: 3\n")
    result = run_server_expecting_failure(
        ["--config", str(config), "--data-dir", str(tmp_path / "data")], clean_env()
    )
    assert result.returncode != 0
    assert "max_conections_per_user" in result.stderr
    assert not (tmp_path / "data" / "forge-streaming.db").exists()


def test_env_typo_fails_fast(tmp_path: Path) -> None:
    result = run_server_expecting_failure(
        ["--data-dir", str(tmp_path / "data")],
        clean_env(FORGE_STREAMING_MAX_CONECTIONS="3"),
    )
    assert result.returncode != 0
    assert "FORGE_STREAMING_MAX_CONECTIONS" in result.stderr
