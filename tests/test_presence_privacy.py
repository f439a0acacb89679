"""Whose presence a user may see, what appearing offline shows, and what
watching many users costs the server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from backends import topics
from tests.conftest import TEST_SETTINGS, require_service
from tests.live import GraphQLClient, LiveServer, room_with, unique, ws_connect

PRESENCE = "query($ids: [ID!]!) { presence(userIds: $ids) { userId status lastSeen } }"
ROOM_PRESENCE = "query($roomId: ID!) { roomPresence(roomId: $roomId) { userId status } }"
SET_PRESENCE = """
mutation($status: PresenceStatus!) { setPresence(status: $status) { userId status lastSeen } }
"""
WATCH_USERS = "subscription($ids: [ID!]) { presence(userIds: $ids) { userId status } }"
WATCH_ROOM = "subscription($roomId: ID) { presence(roomId: $roomId) { userId status } }"
JOIN_ROOM = "mutation($id: ID!) { joinRoom(roomId: $id) { id } }"


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # The default visibility (rooms), said out loud.
    settings = {**TEST_SETTINGS, "presence_visibility": "rooms"}
    live = LiveServer(tmp_path_factory.mktemp("server"), settings).start()
    yield live
    live.stop()


async def seen(client: GraphQLClient, *user_ids: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = (await client.execute(PRESENCE, ids=list(user_ids)))["presence"]
    return entries


async def test_presence_is_seen_only_by_users_sharing_a_room(server: LiveServer) -> None:
    a, b, c = unique("alice"), unique("bob"), unique("carol")
    alice, bob, carol = server.client(a), server.client(b), server.client(c)
    room = await room_with(alice, bob)
    async with ws_connect(server, bob.token), ws_connect(server, carol.token):
        assert [e["userId"] for e in await seen(alice, b)] == [b]
        # To carol, bob looks exactly like a user never seen.
        assert await seen(carol, b) == []
        assert await seen(carol, b, unique("never")) == await seen(carol, unique("never"))
        assert [e["userId"] for e in await seen(carol, b, c)] == [c]  # herself, always
        # A room's presence is its members' to see.
        error = await carol.error(ROOM_PRESENCE, roomId=room)
        assert error.code == "FORBIDDEN"
        assert {
            e["userId"] for e in (await alice.execute(ROOM_PRESENCE, roomId=room))["roomPresence"]
        } == {b}

        # Sharing a room opens it; leaving closes it again.
        await carol.execute(JOIN_ROOM, id=room)
        assert [e["userId"] for e in await seen(carol, b)] == [b]
        await carol.execute("mutation($id: ID!) { leaveRoom(roomId: $id) }", id=room)
        assert await seen(carol, b) == []


async def test_presence_subscriptions_follow_visibility(server: LiveServer) -> None:
    a, b, c = unique("alice"), unique("bob"), unique("carol")
    alice, bob, carol = server.client(a), server.client(b), server.client(c)
    room = await room_with(alice, bob)
    async with ws_connect(server, alice.token) as wa, ws_connect(server, carol.token) as wc:
        friend = await wa.subscribe(WATCH_USERS, ids=[b])
        stranger = await wc.subscribe(WATCH_USERS, ids=[b, c])
        refused = await wc.subscribe(WATCH_ROOM, roomId=room)
        frame = await refused.frame()
        assert frame["payload"]["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        await server.wait_subscribers(2)
        async with ws_connect(server, bob.token):
            assert (await friend.next())["presence"] == {"userId": b, "status": "ONLINE"}
            await bob.execute(SET_PRESENCE, status="BUSY")
            assert (await friend.next())["presence"] == {"userId": b, "status": "BUSY"}
            # Carol's next event is her own change: nothing of bob's came before it.
            await carol.execute(SET_PRESENCE, status="AWAY")
            assert (await stranger.next())["presence"] == {"userId": c, "status": "AWAY"}
        await friend.complete()
        await stranger.complete()


async def test_appearing_offline_freezes_last_seen(server: LiveServer) -> None:
    a, b = unique("alice"), unique("bob")
    alice, bob = server.client(a), server.client(b)
    await room_with(alice, bob)
    async with ws_connect(server, bob.token):
        hidden = (await bob.execute(SET_PRESENCE, status="OFFLINE"))["setPresence"]
        assert hidden["status"] == "OFFLINE"
        # Bob keeps coming and going; alice learns nothing of it.
        for _ in range(3):
            async with ws_connect(server, bob.token):
                [entry] = await seen(alice, b)
                assert entry == {"userId": b, "status": "OFFLINE", "lastSeen": hidden["lastSeen"]}
    [entry] = await seen(alice, b)
    assert entry["lastSeen"] == hidden["lastSeen"]


# --- what watching many users costs ----------------------------------------------------


async def test_watching_many_users_takes_a_bounded_number_of_topics(
    make_server: type[LiveServer], tmp_path: Path
) -> None:
    require_service("Redis", 6379)
    namespace = f"t{uuid.uuid4().hex[:12]}"
    settings = {
        **TEST_SETTINGS,
        "backend": "redis",
        "backend_urls": [f"redis://127.0.0.1:6379/0?namespace={namespace}"],
        "presence_visibility": "everyone",
    }
    server = make_server(tmp_path / "node", settings).start()
    watchers = [server.client(unique("w")) for _ in range(3)]
    groups = [[unique(f"u{n}") for _ in range(100)] for n in range(6)]
    everyone = [u for ids in groups for u in ids]
    async with (
        ws_connect(server, watchers[0].token) as first,
        ws_connect(server, watchers[1].token) as second,
        ws_connect(server, watchers[2].token) as third,
    ):
        subs = [
            await ws.subscribe(WATCH_USERS, ids=ids)
            for ws, ids in zip((first, second, third) * 2, groups, strict=True)
        ]
        # 600 users watched by 6 subscriptions: each is one subscription, and
        # the process holds one topic per shard the users fall in, at most
        # PRESENCE_SHARDS, however many users there are.
        await server.wait_subscribers(len(subs))
        shards = len({topics.user_presence(u) for u in everyone})
        assert server.metric("streaming_presence_topics") == shards <= topics.PRESENCE_SHARDS
        # Upstream too: one Redis subscription per topic.
        redis = Redis(host="127.0.0.1", port=6379)
        try:
            channels = await redis.pubsub_channels(f"{namespace}:users.presence.*")
        finally:
            await redis.aclose()
        assert len(channels) == shards

        # Sharing topics filters right: a watched user's change reaches its
        # watcher only; an unwatched one on the same topic reaches nobody.
        target = groups[1][0]
        bystander = next(
            u
            for u in (unique("x") for _ in range(1000))
            if topics.user_presence(u) == topics.user_presence(target)
        )
        async with ws_connect(server, server.client(bystander).token):
            pass
        async with ws_connect(server, server.client(target).token):
            got = await subs[1].next()
            assert got["presence"] == {"userId": target, "status": "ONLINE"}
        for n, sub in enumerate(subs):
            if n != 1:
                sub.assert_quiet()
        await asyncio.gather(*(sub.complete() for sub in subs))
        await server.wait_subscribers(0)
        await server.wait_metric("streaming_presence_topics", 0)


async def test_a_removed_member_stops_seeing_the_room_presence(server: LiveServer) -> None:
    a, b = unique("alice"), unique("bob")
    alice, bob = server.client(a), server.client(b)
    room = await room_with(alice, bob)  # public: bob could still read it
    async with ws_connect(server, bob.token) as ws:
        sub = await ws.subscribe(WATCH_ROOM, roomId=room)
        await server.wait_subscribers(1)
        await alice.execute(
            "mutation($r: ID!, $u: ID!) { removeMember(roomId: $r, userId: $u) }", r=room, u=b
        )
        frame = await sub.frame()
        assert frame["type"] == "next", frame
        assert frame["payload"]["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        assert (await sub.frame())["type"] == "complete"
        await server.wait_subscribers(0)
    # The query agrees.
    assert (await bob.error(ROOM_PRESENCE, roomId=room)).code == "FORBIDDEN"
