"""Rate limits on user-triggered events: typing starts, presence changes and
room changes, each refused with RATE_LIMITED over its budget, with nothing
half-done left behind."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_SETTINGS
from tests.live import GraphQLClient, LiveServer, unique, ws_connect

CREATE = 'mutation($id: ID!) { createRoom(input: {id: $id, name: "r"}) { id } }'
JOIN = "mutation($id: ID!) { joinRoom(roomId: $id) { id } }"
UPDATE = "mutation($id: ID!, $n: String!) { updateRoom(id: $id, input: {name: $n}) { name } }"
ROOM = "query($id: ID!) { room(id: $id) { name } }"
START = "mutation($roomId: ID!) { startTyping(roomId: $roomId) }"
STOP = "mutation($roomId: ID!) { stopTyping(roomId: $roomId) }"
TYPING_USERS = "query($roomId: ID!) { typingUsers(roomId: $roomId) }"
WATCH = "subscription($roomId: ID!) { typing(roomId: $roomId) { userId isTyping } }"
SET_PRESENCE = "mutation($s: PresenceStatus!) { setPresence(status: $s) { status } }"
PRESENCE = "query($ids: [ID!]!) { presence(userIds: $ids) { status } }"

TYPING_PER_SECOND = 3
LIMITS = {
    **TEST_SETTINGS,
    "typing_timeout": "30s",  # nothing expires on its own during a test
    "max_typing_per_second": TYPING_PER_SECOND,
    "max_presence_changes_per_minute": 3,
    "max_room_changes_per_minute": 4,
}


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("server"), dict(LIMITS)).start()
    yield live
    live.stop()


async def outcome(client: GraphQLClient, query: str, **variables: Any) -> str:
    """'ok', or the error code the server answered."""
    response: httpx.Response = await client.post(query, **variables)
    errors = response.json().get("errors")
    return "ok" if not errors else str(errors[0]["extensions"]["code"])


async def test_typing_starts_are_rate_limited_refreshes_never(server: LiveServer) -> None:
    bob_id = unique("bob")
    alice, bob, carol = (
        server.client(unique("alice")),
        server.client(bob_id),
        server.client(unique("carol")),
    )
    room = unique("room")
    await alice.execute(CREATE, id=room)
    await bob.execute(JOIN, id=room)
    await carol.execute(JOIN, id=room)
    async with ws_connect(server, alice.token) as ws:
        sub = await ws.subscribe(WATCH, roomId=room)
        await server.wait_subscribers(1)
        began = time.monotonic()
        answers = []
        for _ in range(30):  # start, stop, start, stop, ... as fast as it goes
            answers.append(await outcome(bob, START, roomId=room))
            answers.append(await outcome(bob, STOP, roomId=room))
        elapsed = time.monotonic() - began
        assert set(answers[1::2]) == {"ok"}  # a stop is never refused
        assert "RATE_LIMITED" in answers[0::2]
        assert set(answers[0::2]) == {"ok", "RATE_LIMITED"}
        # A refused start left nothing behind.
        assert await bob.execute(TYPING_USERS, roomId=room) == {"typingUsers": []}

        # Carol's start comes after every event of bob's burst.
        await carol.execute(START, roomId=room)
        bobs = []
        while (frame := await sub.next())["typing"]["userId"] == bob_id:
            bobs.append(frame["typing"]["isTyping"])
        allowed = TYPING_PER_SECOND * (math.ceil(elapsed) + 1)
        starts = answers[0::2].count("ok")
        assert bobs == [True, False] * starts
        assert starts <= allowed < 30

    # Refreshing an indicator that is on costs nothing and is never refused.
    dave = server.client(unique("dave"))
    await dave.execute(JOIN, id=room)
    assert await outcome(dave, START, roomId=room) == "ok"
    for _ in range(20):
        assert await outcome(dave, START, roomId=room) == "ok"


async def test_presence_changes_are_rate_limited(server: LiveServer) -> None:
    user = unique("u")
    client = server.client(user)
    async with ws_connect(server, client.token):
        for status in ("AWAY", "BUSY", "ONLINE"):
            assert await outcome(client, SET_PRESENCE, s=status) == "ok"
        error = await client.error(SET_PRESENCE, s="AWAY")
        assert error.code == "RATE_LIMITED"
        assert "presence changes per minute" in str(error)
        # The refused change changed nothing.
        assert await client.execute(PRESENCE, ids=[user]) == {"presence": [{"status": "ONLINE"}]}


async def test_room_changes_are_rate_limited(server: LiveServer) -> None:
    owner = server.client(unique("owner"))
    room = unique("room")
    await owner.execute(CREATE, id=room)
    for n in range(3):
        await owner.execute(UPDATE, id=room, n=f"name {n}")
    error = await owner.error(UPDATE, id=room, n="one too many")
    assert error.code == "RATE_LIMITED"
    assert await owner.execute(ROOM, id=room) == {"room": {"name": "name 2"}}
    # Joins count for the joiner, not for the room: others are not affected.
    guest = server.client(unique("guest"))
    assert await outcome(guest, JOIN, id=room) == "ok"
