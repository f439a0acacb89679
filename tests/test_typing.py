"""Typing indicators: started, refreshed without flooding, stopped, ended by a
message, expired after `typing_timeout` (600ms in the test settings)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from tests.live import GraphQLClient, LiveServer, Operation, room_with, unique, ws_connect

TYPING_TIMEOUT = timedelta(milliseconds=600)

START = "mutation($roomId: ID!) { startTyping(roomId: $roomId) }"
STOP = "mutation($roomId: ID!) { stopTyping(roomId: $roomId) }"
TYPING_USERS = "query($roomId: ID!) { typingUsers(roomId: $roomId) }"
SEND = """
mutation($roomId: ID!) { sendMessage(input: {roomId: $roomId, data: {text: "done"}}) { id } }
"""
WATCH = """
subscription($roomId: ID!) { typing(roomId: $roomId) { roomId userId isTyping expiresAt } }
"""


async def typing_users(client: GraphQLClient, room: str) -> list[str]:
    users: list[str] = (await client.execute(TYPING_USERS, roomId=room))["typingUsers"]
    return users


async def event(sub: Operation) -> dict[str, Any]:
    got: dict[str, Any] = (await sub.next())["typing"]
    return got


@asynccontextmanager
async def alice_watches_bob(
    server: LiveServer,
) -> AsyncIterator[tuple[GraphQLClient, GraphQLClient, str, str, Operation]]:
    """Alice and bob share a new room; alice follows its typing over a
    WebSocket. Yields alice, bob, bob's id, the room and her subscription,
    which ends with the block."""
    bob_id = unique("bob")
    alice, bob = server.client(unique("alice")), server.client(bob_id)
    room = await room_with(alice, bob)
    async with ws_connect(server, alice.token) as ws:
        sub = await ws.subscribe(WATCH, roomId=room)
        await server.wait_subscribers(1)
        yield alice, bob, bob_id, room, sub
        await sub.complete()
        await server.wait_subscribers(0)


def stopped(room: str, user: str) -> dict[str, Any]:
    return {"roomId": room, "userId": user, "isTyping": False, "expiresAt": None}


async def start_then_stop(bob: GraphQLClient, bob_id: str, room: str, sub: Operation) -> None:
    """Bob starts typing, then stops: the two events `sub` sees."""
    await bob.execute(START, roomId=room)
    started = await event(sub)
    assert (started["userId"], started["isTyping"]) == (bob_id, True)
    await bob.execute(STOP, roomId=room)
    assert await event(sub) == stopped(room, bob_id)


async def test_start_typing_emits_true_with_expiry(server: LiveServer) -> None:
    async with alice_watches_bob(server) as (alice, bob, bob_id, room, sub):
        before = datetime.now().astimezone()
        assert (await bob.execute(START, roomId=room)) == {"startTyping": True}
        after = datetime.now().astimezone()
        got = await event(sub)
        assert {k: got[k] for k in ("roomId", "userId", "isTyping")} == {
            "roomId": room,
            "userId": bob_id,
            "isTyping": True,
        }
        expires = datetime.fromisoformat(got["expiresAt"])
        assert before + TYPING_TIMEOUT <= expires + timedelta(milliseconds=5)
        assert expires <= after + TYPING_TIMEOUT + timedelta(milliseconds=5)
        assert await typing_users(alice, room) == [bob_id]
        await bob.execute(STOP, roomId=room)
        assert await event(sub) == stopped(room, bob_id)


async def test_repeated_start_refreshes_without_a_second_event(server: LiveServer) -> None:
    async with alice_watches_bob(server) as (_alice, bob, bob_id, room, sub):
        await bob.execute(START, roomId=room)
        first = await event(sub)
        assert first["isTyping"] is True
        for _ in range(3):  # keystrokes, well within the timeout
            assert (await bob.execute(START, roomId=room)) == {"startTyping": True}
        await bob.execute(STOP, roomId=room)
        # The very next event is the stop: the repeats sent nothing.
        assert await event(sub) == stopped(room, bob_id)
        # stopTyping when not typing is a no-op: no second false event.
        assert (await bob.execute(STOP, roomId=room)) == {"stopTyping": True}
        await start_then_stop(bob, bob_id, room, sub)


async def test_sending_a_message_ends_typing(server: LiveServer) -> None:
    async with alice_watches_bob(server) as (alice, bob, bob_id, room, sub):
        await bob.execute(START, roomId=room)
        assert (await event(sub))["isTyping"] is True
        await bob.execute(SEND, roomId=room)
        assert await event(sub) == stopped(room, bob_id)
        assert await typing_users(alice, room) == []


async def test_typing_expires_after_the_timeout(server: LiveServer) -> None:
    async with alice_watches_bob(server) as (alice, bob, bob_id, room, sub):
        started = time.monotonic()
        await bob.execute(START, roomId=room)
        assert (await event(sub))["isTyping"] is True
        assert await typing_users(alice, room) == [bob_id]
        # Nobody calls stopTyping: the expiry sends the false event by itself.
        assert await event(sub) == stopped(room, bob_id)
        assert time.monotonic() - started >= TYPING_TIMEOUT.total_seconds() - 0.05
        assert await typing_users(alice, room) == []


async def test_typing_users_lists_everyone_typing(server: LiveServer) -> None:
    ids = [unique("alice"), unique("bob"), unique("carol")]
    alice, bob, carol = (server.client(i) for i in ids)
    room = await room_with(alice, bob, carol)
    other_room = await room_with(alice)
    assert await typing_users(alice, room) == []
    for client in (alice, bob, carol):
        await client.execute(START, roomId=room)
    assert sorted(await typing_users(bob, room)) == sorted(ids)
    assert await typing_users(alice, other_room) == []
    await bob.execute(STOP, roomId=room)
    assert sorted(await typing_users(alice, room)) == sorted([ids[0], ids[2]])
    for client in (alice, carol):
        await client.execute(STOP, roomId=room)
    assert await typing_users(alice, room) == []


async def test_non_member_cannot_type(server: LiveServer) -> None:
    bob_id = unique("bob")
    alice, bob, stranger = (
        server.client(unique("a")),
        server.client(bob_id),
        server.client(unique("s")),
    )
    public = await room_with(alice, bob)
    private = await room_with(alice, private=True)

    error = await stranger.error(START, roomId=public)
    assert error.code == "FORBIDDEN"
    assert public in str(error)
    error = await stranger.error(START, roomId=private)
    assert error.code == "NOT_FOUND"
    assert private in str(error)
    for query in (TYPING_USERS, STOP):
        error = await stranger.error(query, roomId=private)
        assert error.code == "NOT_FOUND"
    error = await stranger.error(START, roomId=unique("nope"))
    assert error.code == "NOT_FOUND"

    # Nothing changed: nobody is typing and the subscriber sees only the member.
    assert await typing_users(alice, public) == []
    assert await typing_users(alice, private) == []
    async with ws_connect(server, alice.token) as ws:
        sub = await ws.subscribe(WATCH, roomId=public)
        await server.wait_subscribers(1)
        assert (await stranger.error(START, roomId=public)).code == "FORBIDDEN"
        await start_then_stop(bob, bob_id, public, sub)
        await sub.complete()
        await server.wait_subscribers(0)


async def test_non_member_cannot_watch_a_private_room(server: LiveServer) -> None:
    alice, stranger = server.client(unique("alice")), server.client(unique("stranger"))
    private = await room_with(alice, private=True)
    async with ws_connect(server, stranger.token) as ws:
        sub = await ws.subscribe(WATCH, roomId=private)
        frame = await sub.frame()
        assert frame["type"] == "next"
        [err] = frame["payload"]["errors"]
        assert err["extensions"]["code"] == "NOT_FOUND"
        assert private in err["message"]
        assert (await sub.frame())["type"] == "complete"
    await server.wait_subscribers(0)
