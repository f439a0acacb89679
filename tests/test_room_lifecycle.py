"""A room's life is atomic: sends racing `deleteRoom` either happened before
it (and succeeded) or after it (NOT_FOUND, and stored nowhere), and a room
made again under the old id shows nothing of the old one: not in `history`,
not in `roomMessages` with or without `after`. Also where rooms and history
live on different servers (`role_urls`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from backends.factory import backend_module
from tests.conftest import TEST_SETTINGS, require_service
from tests.live import GraphQLClient, GraphQLError, LiveServer, unique, ws_connect

CREATE = """
mutation($id: ID, $private: Boolean! = true) {
  createRoom(input: {id: $id, name: "Room", isPrivate: $private}) { id }
}
"""
DELETE = "mutation($id: ID!) { deleteRoom(id: $id) }"
ADD = "mutation($room: ID!, $user: ID!) { addMember(roomId: $room, userId: $user) { userId } }"
SEND = """
mutation($room: ID!, $data: JSON, $cid: String) {
  sendMessage(input: {roomId: $room, data: $data, clientMessageId: $cid}) {
    id userId data cursor
  }
}
"""
HISTORY = """
query($room: ID!) {
  history(roomId: $room, last: 200) { edges { node { id type event userId data cursor } } }
}
"""
ROOM_MESSAGES = """
subscription($room: ID!, $after: String) {
  roomMessages(roomId: $room, after: $after) { id type event userId data cursor }
}
"""

SENDS = 25
TRIALS = 3

_REDIS = ("Redis", 6379)
_NATS = ("NATS", 4222)


def _redis_url() -> str:
    return f"redis://127.0.0.1:6379/0?namespace=t{uuid4().hex[:12]}"


def _nats_url() -> str:
    return f"nats://127.0.0.1:4222?namespace=t{uuid4().hex[:12]}"


def _sqlite(urls: list[str]) -> dict[str, Any]:
    return {"backend": "sqlite"}


def _redis(urls: list[str]) -> dict[str, Any]:
    urls.append(_redis_url())
    return {"backend": "redis", "backend_urls": urls[-1:]}


def _nats(urls: list[str]) -> dict[str, Any]:
    urls.append(_nats_url())
    return {"backend": "nats", "backend_urls": urls[-1:]}


def _rooms_sqlite_history_redis(urls: list[str]) -> dict[str, Any]:
    urls.append(_redis_url())
    return {"backend": "sqlite", "role_urls": {"messages": urls[-1]}}


def _rooms_sqlite_history_nats(urls: list[str]) -> dict[str, Any]:
    urls.append(_nats_url())
    return {"backend": "sqlite", "role_urls": {"messages": urls[-1]}}


def _rooms_redis_history_nats(urls: list[str]) -> dict[str, Any]:
    urls.extend([_redis_url(), _nats_url()])
    return {"backend": "redis", "backend_urls": [urls[-2]], "role_urls": {"messages": urls[-1]}}


SETUPS: dict[str, tuple[Callable[[list[str]], dict[str, Any]], list[tuple[str, int]]]] = {
    "sqlite": (_sqlite, []),
    "redis": (_redis, [_REDIS]),
    "nats": (_nats, [_NATS]),
    "rooms-sqlite+history-redis": (_rooms_sqlite_history_redis, [_REDIS]),
    "rooms-sqlite+history-nats": (_rooms_sqlite_history_nats, [_NATS]),
    "rooms-redis+history-nats": (_rooms_redis_history_nats, [_REDIS, _NATS]),
}


@pytest.fixture(params=sorted(SETUPS))
async def live(
    request: pytest.FixtureRequest, make_server: type[LiveServer], tmp_path: Path
) -> AsyncIterator[LiveServer]:
    make_settings, services = SETUPS[request.param]
    for service in services:
        require_service(*service)
    urls: list[str] = []
    settings = {**TEST_SETTINGS, **make_settings(urls), "max_messages_per_second": 1000}
    server = make_server(tmp_path / "server", settings)
    try:
        yield server.start()
    finally:
        server.stop()  # before its data goes: a server never sees that happen
        for url in urls:
            await backend_module(url).delete_namespace(url)


async def _send(client: GraphQLClient, room_id: str, text: str, cid: str) -> dict[str, Any]:
    data = await client.execute(SEND, room=room_id, data={"text": text}, cid=cid)
    message: dict[str, Any] = data["sendMessage"]
    return message


async def _outcome(client: GraphQLClient, room_id: str, text: str, cid: str) -> Any:
    """The message, or the error code."""
    try:
        return await _send(client, room_id, text, cid)
    except GraphQLError as exc:
        return exc.code


async def _history(client: GraphQLClient, room_id: str) -> list[dict[str, Any]]:
    edges = (await client.execute(HISTORY, room=room_id))["history"]["edges"]
    return [e["node"] for e in edges]


def _secrets(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [n for n in nodes if isinstance(n["data"], dict) and "secret" in str(n["data"])]


async def _race(
    alice: GraphQLClient, bob: GraphQLClient, room_id: str, delete_at: int
) -> tuple[list[Any], list[str]]:
    """Bob's sends, with alice's deleteRoom among them; their outcomes and ids."""
    cids = [unique("cid") for _ in range(SENDS)]
    calls: list[Any] = [_outcome(bob, room_id, f"secret{i}", cid) for i, cid in enumerate(cids)]
    calls.insert(delete_at, alice.execute(DELETE, id=room_id))
    results = await asyncio.gather(*calls)
    deleted = results.pop(delete_at)
    assert deleted == {"deleteRoom": True}
    return results, cids


async def test_sends_racing_delete_never_reach_the_room_made_again(live: LiveServer) -> None:
    alice_id, bob_id, carol_id = unique("alice"), unique("bob"), unique("carol")
    alice, bob, carol = live.client(alice_id), live.client(bob_id), live.client(carol_id)
    for trial in range(TRIALS):
        room_id = unique("race")
        await alice.execute(CREATE, id=room_id)
        await alice.execute(ADD, room=room_id, user=bob_id)
        before = await _send(bob, room_id, "secret-before", unique("cid"))
        results, cids = await _race(alice, bob, room_id, delete_at=2 + trial * 5)
        sent = [r for r in results if isinstance(r, dict)]
        failed = [cid for cid, r in zip(cids, results, strict=True) if not isinstance(r, dict)]
        assert {r for r in results if not isinstance(r, dict)} <= {"NOT_FOUND"}, results

        # Carol makes the id again: nothing of the old room is hers to see.
        await carol.execute(CREATE, id=room_id)
        mine = await _history(carol, room_id)
        assert _secrets(mine) == [], f"trial {trial}: {_secrets(mine)}"
        assert [(n["type"], n["event"], n["userId"]) for n in mine] == [
            ("JOIN", "room.created", carol_id)
        ]

        async with ws_connect(live, carol.token) as ws:
            old_cursor = (sent or [before])[-1]["cursor"]
            resumed = await ws.subscribe(ROOM_MESSAGES, room=room_id, after=old_cursor)
            fresh = await ws.subscribe(ROOM_MESSAGES, room=room_id)
            await live.wait_subscribers(2)
            marker = await _send(carol, room_id, "marker", unique("cid"))
            replayed: list[dict[str, Any]] = []
            while not replayed or replayed[-1]["id"] != marker["id"]:
                replayed.append((await resumed.next())["roomMessages"])
            assert _secrets(replayed) == []
            assert {m["userId"] for m in replayed} <= {carol_id, "system"}
            assert (await fresh.next())["roomMessages"]["id"] == marker["id"]
            await resumed.complete()
            await fresh.complete()
        await live.wait_subscribers(0)

        # Bob's retries: not a member of carol's room, so NOT_FOUND again...
        for cid in failed[:3]:
            assert await _outcome(bob, room_id, "retry", cid) == "NOT_FOUND"
        # ...and once carol adds him, each retried id is stored once, new.
        await carol.execute(ADD, room=room_id, user=bob_id)
        retried = [await _send(bob, room_id, "retry", cid) for cid in failed[:3]]
        again = [await _send(bob, room_id, "retry", cid) for cid in failed[:3]]
        assert [m["id"] for m in again] == [m["id"] for m in retried]
        assert {m["id"] for m in retried}.isdisjoint(m["id"] for m in sent)
        after = await _history(carol, room_id)
        assert _secrets(after) == []
        assert len([n for n in after if n["data"] == {"text": "retry"}]) == len(retried)
        await carol.execute(DELETE, id=room_id)


async def test_create_room_without_id_makes_an_unguessable_one(server: LiveServer) -> None:
    alice = server.client(unique("alice"))
    made = [(await alice.execute(CREATE, id=None))["createRoom"]["id"] for _ in range(3)]
    assert len(set(made)) == 3
    for room_id in made:
        assert len(room_id) == 32
        int(room_id, 16)  # 128 random bits, as hex
