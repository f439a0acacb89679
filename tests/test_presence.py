"""Presence: ONLINE while a WebSocket is open, AWAY/BUSY when set, OFFLINE
after the last connection closes (after a grace), and no ghost when a client
or the whole server process dies.

These watch users who share no room, so their server shows presence to
everyone; who may see whose presence is tested in test_presence_privacy.py.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.typing import Subprotocol

from tests.conftest import TEST_SETTINGS
from tests.live import GraphQLClient, LiveServer, ended_with, unique, ws_connect

PRESENCE = """
query($ids: [ID!]!) { presence(userIds: $ids) { userId status statusText lastSeen } }
"""
ROOM_PRESENCE = """
query($roomId: ID!) { roomPresence(roomId: $roomId) { userId status statusText } }
"""
SET_PRESENCE = """
mutation($status: PresenceStatus!, $text: String) {
  setPresence(status: $status, statusText: $text) { userId status statusText lastSeen }
}
"""
WATCH_USERS = """
subscription($ids: [ID!]) { presence(userIds: $ids) { userId status statusText } }
"""
WATCH_ROOM = """
subscription($roomId: ID) { presence(roomId: $roomId) { userId status statusText } }
"""
CREATE_ROOM = """
mutation($id: ID!, $private: Boolean!) {
  createRoom(input: {name: "presence", id: $id, isPrivate: $private}) { id }
}
"""
JOIN_ROOM = "mutation($id: ID!) { joinRoom(roomId: $id) { id } }"
EVERYONE = {**TEST_SETTINGS, "presence_visibility": "everyone"}


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("server"), dict(EVERYONE)).start()
    yield live
    live.stop()


# Grace (300ms) plus a housekeeping tick (200ms), with room to spare: the one
# bounded wait that shows an event did NOT happen.
QUIET = 0.8


async def create_room(owner: GraphQLClient, *, private: bool = False) -> str:
    room = unique("room")
    await owner.execute(CREATE_ROOM, id=room, private=private)
    return room


async def presence_of(client: GraphQLClient, *user_ids: str) -> list[dict[str, Any]]:
    data = await client.execute(PRESENCE, ids=list(user_ids))
    entries: list[dict[str, Any]] = data["presence"]
    return entries


async def status_of(client: GraphQLClient, user_id: str) -> str | None:
    entries = await presence_of(client, user_id)
    assert len(entries) <= 1, entries
    return entries[0]["status"] if entries else None


async def wait_status(
    client: GraphQLClient, user_id: str, status: str, timeout: float = 5.0
) -> None:
    """Poll the presence query until it reports `status` (state that changes by expiry)."""
    deadline = time.monotonic() + timeout
    seen = await status_of(client, user_id)
    while seen != status:
        if time.monotonic() > deadline:
            raise AssertionError(f"{user_id} stayed {seen}, expected {status}")
        await asyncio.sleep(0.05)  # polling state that changes by expiry
        seen = await status_of(client, user_id)


def entry(user_id: str, status: str, text: str | None = None) -> dict[str, Any]:
    return {"userId": user_id, "status": status, "statusText": text}


async def test_online_while_connected_and_offline_after_last_close(server: LiveServer) -> None:
    user = unique("u")
    client = server.client(user)
    before = datetime.now().astimezone()
    async with ws_connect(server, client.token):
        assert await status_of(client, user) == "ONLINE"
        open_before = server.metric("streaming_connections_active")
        async with ws_connect(server, client.token):
            assert await status_of(client, user) == "ONLINE"
        # One of two connections closed (the server has let it go): still online.
        await server.wait_metric("streaming_connections_active", open_before)
        assert await status_of(client, user) == "ONLINE"
    await wait_status(client, user, "OFFLINE")
    [gone] = await presence_of(client, user)
    assert gone["statusText"] is None
    assert datetime.fromisoformat(gone["lastSeen"]) >= before


async def test_presence_query_omits_users_never_seen_and_keeps_order(server: LiveServer) -> None:
    a, b, never = unique("a"), unique("b"), unique("never")
    ca, cb = server.client(a), server.client(b)
    async with ws_connect(server, ca.token), ws_connect(server, cb.token):
        entries = await presence_of(ca, b, never, a)
        assert [(e["userId"], e["status"]) for e in entries] == [(b, "ONLINE"), (a, "ONLINE")]


async def test_set_presence_away_and_busy_with_status_text(server: LiveServer) -> None:
    user = unique("u")
    client = server.client(user)
    async with ws_connect(server, client.token):
        away = (await client.execute(SET_PRESENCE, status="AWAY", text="lunch"))["setPresence"]
        assert {k: away[k] for k in ("userId", "status", "statusText")} == entry(
            user, "AWAY", "lunch"
        )
        assert [
            {k: e[k] for k in ("userId", "status", "statusText")}
            for e in await presence_of(client, user)
        ] == [entry(user, "AWAY", "lunch")]

        busy = (await client.execute(SET_PRESENCE, status="BUSY", text="meeting"))["setPresence"]
        assert (busy["status"], busy["statusText"]) == ("BUSY", "meeting")
        assert await status_of(client, user) == "BUSY"

        back = (await client.execute(SET_PRESENCE, status="ONLINE"))["setPresence"]
        assert (back["status"], back["statusText"]) == ("ONLINE", None)
        assert await status_of(client, user) == "ONLINE"
    await wait_status(client, user, "OFFLINE")


async def test_status_text_too_long_is_rejected_and_changes_nothing(server: LiveServer) -> None:
    user, other = unique("u"), unique("other")
    client = server.client(user)
    async with ws_connect(server, client.token):
        await client.execute(SET_PRESENCE, status="AWAY", text="brb")
        error = await client.error(SET_PRESENCE, status="BUSY", text="x" * 257)
        assert error.code == "BAD_USER_INPUT"
        assert "statusText" in str(error)
        [now] = await presence_of(client, user)
        assert (now["status"], now["statusText"]) == ("AWAY", "brb")
        # The server keeps serving others.
        async with ws_connect(server, server.client(other).token):
            assert await status_of(client, other) == "ONLINE"


async def test_too_many_user_ids_is_rejected(server: LiveServer) -> None:
    client = server.client(unique("u"))
    ids = [unique("x") for _ in range(101)]  # max_presence_user_ids: 100
    error = await client.error(PRESENCE, ids=ids)
    assert error.code == "BAD_USER_INPUT"
    assert "at most 100 userIds" in str(error)
    async with ws_connect(server, client.token) as ws:
        op = await ws.subscribe(WATCH_USERS, ids=ids)
        err = await ended_with(op)
        assert err["extensions"]["code"] == "BAD_USER_INPUT"
        assert "at most 100 userIds" in err["message"]
    assert await presence_of(client, ids[0]) == []


async def test_user_ids_subscription_sees_online_status_and_offline(server: LiveServer) -> None:
    watcher, a, b = unique("w"), unique("a"), unique("b")
    cw, ca, cb = server.client(watcher), server.client(a), server.client(b)
    async with ws_connect(server, cw.token) as ws:
        sub = await ws.subscribe(WATCH_USERS, ids=[a, b])
        await server.wait_subscribers(1)
        async with ws_connect(server, ca.token):
            assert (await sub.next())["presence"] == entry(a, "ONLINE")
            await ca.execute(SET_PRESENCE, status="BUSY", text="focus")
            assert (await sub.next())["presence"] == entry(a, "BUSY", "focus")
            async with ws_connect(server, cb.token):
                assert (await sub.next())["presence"] == entry(b, "ONLINE")
            assert (await sub.next())["presence"] == entry(b, "OFFLINE")
        # statusText is kept while offline; the status says OFFLINE.
        assert (await sub.next())["presence"] == entry(a, "OFFLINE", "focus")
        await sub.complete()
        await server.wait_subscribers(0)


async def test_quick_reconnect_within_grace_does_not_go_offline(server: LiveServer) -> None:
    watcher, user = unique("w"), unique("u")
    cw, cu = server.client(watcher), server.client(user)
    async with ws_connect(server, cw.token) as ws:
        sub = await ws.subscribe(WATCH_USERS, ids=[user])
        await server.wait_subscribers(1)
        async with ws_connect(server, cu.token):
            assert (await sub.next())["presence"] == entry(user, "ONLINE")
        async with ws_connect(server, cu.token):  # a reload: back within the grace
            with pytest.raises(TimeoutError):
                await sub.frame(timeout=QUIET)
            assert await status_of(cu, user) == "ONLINE"
        assert (await sub.next())["presence"] == entry(user, "OFFLINE")
        await sub.complete()
        await server.wait_subscribers(0)


async def test_room_subscription_sees_members_only(server: LiveServer) -> None:
    owner, member, outsider = unique("owner"), unique("member"), unique("out")
    co, cm, cx = server.client(owner), server.client(member), server.client(outsider)
    room = await create_room(co)
    await cm.execute(JOIN_ROOM, id=room)
    async with ws_connect(server, co.token) as ws:
        sub = await ws.subscribe(WATCH_ROOM, roomId=room)
        await server.wait_subscribers(1)
        # Someone outside the room changes: the room's watchers hear nothing.
        async with ws_connect(server, cx.token):
            await cx.execute(SET_PRESENCE, status="AWAY", text="elsewhere")
        async with ws_connect(server, cm.token):
            assert (await sub.next())["presence"] == entry(member, "ONLINE")
            await cm.execute(SET_PRESENCE, status="AWAY", text="coffee")
            assert (await sub.next())["presence"] == entry(member, "AWAY", "coffee")
            await cm.execute(SET_PRESENCE, status="BUSY")
            assert (await sub.next())["presence"] == entry(member, "BUSY")
        assert (await sub.next())["presence"] == entry(member, "OFFLINE")
        sub.assert_quiet()
        await sub.complete()
        await server.wait_subscribers(0)


async def test_room_presence_query(server: LiveServer) -> None:
    owner, member, never = unique("owner"), unique("member"), unique("never")
    co, cm, cn = server.client(owner), server.client(member), server.client(never)
    room = await create_room(co)
    await cm.execute(JOIN_ROOM, id=room)
    await cn.execute(JOIN_ROOM, id=room)
    async with ws_connect(server, co.token), ws_connect(server, cm.token):
        await cm.execute(SET_PRESENCE, status="BUSY", text="call")
        got = (await co.execute(ROOM_PRESENCE, roomId=room))["roomPresence"]
        # A member never connected has no presence entry.
        assert sorted(got, key=lambda e: e["userId"]) == sorted(
            [entry(owner, "ONLINE"), entry(member, "BUSY", "call")], key=lambda e: e["userId"]
        )
    await wait_status(co, owner, "OFFLINE")
    await wait_status(co, member, "OFFLINE")
    got = (await co.execute(ROOM_PRESENCE, roomId=room))["roomPresence"]
    assert {e["userId"]: e["status"] for e in got} == {owner: "OFFLINE", member: "OFFLINE"}


async def test_killed_client_goes_offline(server: LiveServer) -> None:
    watcher, user = unique("w"), unique("u")
    cw, cu = server.client(watcher), server.client(user)
    async with ws_connect(server, cw.token) as ws:
        sub = await ws.subscribe(WATCH_USERS, ids=[user])
        await server.wait_subscribers(1)
        raw = await websockets.connect(
            server.ws_url, subprotocols=[Subprotocol("graphql-transport-ws")]
        )
        await raw.send(
            json.dumps(
                {"type": "connection_init", "payload": {"Authorization": f"Bearer {cu.token}"}}
            )
        )
        assert json.loads(await asyncio.wait_for(raw.recv(), 10))["type"] == "connection_ack"
        assert (await sub.next())["presence"] == entry(user, "ONLINE")
        raw.transport.abort()  # no close frame: the TCP connection just dies
        assert (await sub.next())["presence"] == entry(user, "OFFLINE")
        assert await status_of(cu, user) == "OFFLINE"
        await sub.complete()
        await server.wait_subscribers(0)


async def test_killed_server_leaves_no_online_ghost(
    make_server: type[LiveServer], tmp_path: Path
) -> None:
    live = make_server(tmp_path / "node", dict(TEST_SETTINGS)).start()
    user = unique("u")
    client = live.client(user)
    room = await create_room(client)
    async with ws_connect(live, client.token):
        assert await status_of(client, user) == "ONLINE"
        live.stop(signal.SIGKILL)
        live.start()  # same data dir, same port
        # Presence is in memory on sqlite: the user is unknown or OFFLINE, never ONLINE.
        assert await presence_of(client, user) == []
        assert (await client.execute(ROOM_PRESENCE, roomId=room))["roomPresence"] == []
    # The room survived; a new connection is counted as usual.
    async with ws_connect(live, client.token):
        assert await status_of(client, user) == "ONLINE"
        got = (await client.execute(ROOM_PRESENCE, roomId=room))["roomPresence"]
        assert got == [entry(user, "ONLINE")]


async def test_private_room_presence_is_not_found_for_non_members(server: LiveServer) -> None:
    owner, stranger = unique("owner"), unique("stranger")
    co, cs = server.client(owner), server.client(stranger)
    room = await create_room(co, private=True)
    error = await cs.error(ROOM_PRESENCE, roomId=room)
    assert error.code == "NOT_FOUND"
    assert room in str(error)
    async with ws_connect(server, cs.token) as ws:
        err = await ended_with(await ws.subscribe(WATCH_ROOM, roomId=room))
        assert err["extensions"]["code"] == "NOT_FOUND"
        assert room in err["message"]
        unknown = unique("nope")
        err = await ended_with(await ws.subscribe(WATCH_ROOM, roomId=unknown))
        assert err["extensions"]["code"] == "NOT_FOUND"
        # Nothing was left subscribed, and the owner is still served.
        await server.wait_subscribers(0)
        got = (await co.execute(ROOM_PRESENCE, roomId=room))["roomPresence"]
        assert got == []


@pytest.mark.parametrize(
    "variables",
    [{}, {"roomId": "r", "userIds": ["u"]}, {"roomId": None, "userIds": None}],
    ids=["neither", "both", "both-null"],
)
async def test_presence_subscription_needs_exactly_one_target(
    server: LiveServer, variables: dict[str, Any]
) -> None:
    user = unique("u")
    client = server.client(user)
    query = """
    subscription($roomId: ID, $userIds: [ID!]) {
      presence(roomId: $roomId, userIds: $userIds) { userId status }
    }
    """
    async with ws_connect(server, client.token) as ws:
        err = await ended_with(await ws.subscribe(query, **variables))
        assert err["extensions"]["code"] == "BAD_USER_INPUT"
        assert err["message"] == "pass exactly one of roomId and userIds"
        await server.wait_subscribers(0)
        # The same connection keeps working.
        sub = await ws.subscribe(WATCH_USERS, ids=[user])
        await server.wait_subscribers(1)
        await client.execute(SET_PRESENCE, status="AWAY", text="ok")
        assert (await sub.next())["presence"] == entry(user, "AWAY", "ok")
        await sub.complete()
        await server.wait_subscribers(0)
