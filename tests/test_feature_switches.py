"""The five feature switches: a switched-off feature's fields fail with
FEATURE_DISABLED (queries, mutations, subscriptions); the rest keep working."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.conftest import TEST_SETTINGS
from tests.live import GraphQLClient, LiveServer, unique, ws_connect

ALL_OFF = {
    "enable_rooms": False,
    "enable_channels": False,
    "enable_presence": False,
    "enable_typing_indicators": False,
    "enable_message_history": False,
}

# (feature named in the error, document, variables) for queries and mutations.
OPERATIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("rooms", "query($id: ID!) { room(id: $id) { id } }", {"id": "r"}),
    ("rooms", "{ rooms { id } }", {}),
    ("rooms", 'mutation { createRoom(input: {name: "x"}) { id } }', {}),
    ("rooms", "mutation($id: ID!) { joinRoom(roomId: $id) { id } }", {"id": "r"}),
    ("rooms", "mutation($id: ID!) { leaveRoom(roomId: $id) }", {"id": "r"}),
    ("rooms", "mutation($id: ID!) { deleteRoom(id: $id) }", {"id": "r"}),
    ("rooms", 'mutation($id: ID!) { updateRoom(id: $id, input: {name: "y"}) { id } }', {"id": "r"}),
    ("rooms", 'mutation($id: ID!) { addMember(roomId: $id, userId: "u") { userId } }', {"id": "r"}),
    ("rooms", 'mutation($id: ID!) { banMember(roomId: $id, userId: "u") }', {"id": "r"}),
    (
        "rooms",
        "mutation($id: ID!) { sendMessage(input: {roomId: $id, data: 1}) { id } }",
        {"id": "r"},
    ),
    ("channels", "query($id: ID!) { channel(id: $id) { id } }", {"id": "c"}),
    ("channels", "{ channels { id } }", {}),
    ("channels", 'mutation { createChannel(input: {name: "x"}) { id } }', {}),
    ("channels", "mutation($id: ID!) { deleteChannel(id: $id) }", {"id": "c"}),
    ("channels", 'mutation($id: ID!) { grantChannel(channelId: $id, userId: "u") }', {"id": "c"}),
    ("channels", 'mutation($id: ID!) { revokeChannel(channelId: $id, userId: "u") }', {"id": "c"}),
    (
        "channels",
        "mutation($id: ID!) { publish(input: {channelId: $id, data: 1}) { id } }",
        {"id": "c"},
    ),
    ("presence", '{ presence(userIds: ["u"]) { status } }', {}),
    ("presence", "query($id: ID!) { roomPresence(roomId: $id) { status } }", {"id": "r"}),
    ("presence", "mutation { setPresence(status: AWAY) { status } }", {}),
    ("typing", "query($id: ID!) { typingUsers(roomId: $id) }", {"id": "r"}),
    ("typing", "mutation($id: ID!) { startTyping(roomId: $id) }", {"id": "r"}),
    ("typing", "mutation($id: ID!) { stopTyping(roomId: $id) }", {"id": "r"}),
    ("history", "query($id: ID!) { history(roomId: $id) { edges { cursor } } }", {"id": "r"}),
]

SUBSCRIPTIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("rooms", "subscription($id: ID!) { roomMessages(roomId: $id) { id } }", {"id": "r"}),
    ("channels", "subscription($id: ID!) { channelMessages(channelId: $id) { id } }", {"id": "c"}),
    ("presence", 'subscription { presence(userIds: ["u"]) { status } }', {}),
    ("presence", "subscription($id: ID) { presence(roomId: $id) { status } }", {"id": "r"}),
    ("typing", "subscription($id: ID!) { typing(roomId: $id) { isTyping } }", {"id": "r"}),
]

CREATE_ROOM = 'mutation($id: ID!) { createRoom(input: {name: "x", id: $id}) { id } }'
SEND = """
mutation($id: ID!) { sendMessage(input: {roomId: $id, data: {n: 1}}) { id cursor } }
"""
ROOM_MESSAGES = """
subscription($id: ID!, $after: String) { roomMessages(roomId: $id, after: $after) { id data } }
"""


def start(make_server: type[LiveServer], path: Path, **switches: bool) -> LiveServer:
    return make_server(path, {**TEST_SETTINGS, **switches}).start()


async def assert_healthy(live: LiveServer) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        health = await http.get(f"{live.url}/health")
        assert (health.status_code, health.json()["status"]) == (200, "ok")
        ready = await http.get(f"{live.url}/ready")
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


async def assert_disabled(client: GraphQLClient, feature: str, query: str, **vars: Any) -> None:
    error = await client.error(query, **vars)
    assert (error.code, error.errors[0]["extensions"].get("feature")) == (
        "FEATURE_DISABLED",
        feature,
    ), query
    assert error.errors[0]["message"] == f"{feature} are disabled on this server"


async def assert_subscription_disabled(
    live: LiveServer, client: GraphQLClient, feature: str, query: str, **vars: Any
) -> None:
    async with ws_connect(live, client.token) as ws:
        op = await ws.subscribe(query, **vars)
        frame = await op.frame()
        assert frame["type"] == "next", frame
        [error] = frame["payload"]["errors"]
        assert error["extensions"]["code"] == "FEATURE_DISABLED", query
        assert error["extensions"]["feature"] == feature, query
        assert (await op.frame())["type"] == "complete"


async def test_everything_off(make_server: type[LiveServer], tmp_path: Path) -> None:
    live = start(make_server, tmp_path / "off", **ALL_OFF)
    client = live.client(unique("u"))
    for feature, query, variables in OPERATIONS:
        await assert_disabled(client, feature, query, **variables)
    for feature, query, variables in SUBSCRIPTIONS:
        await assert_subscription_disabled(live, client, feature, query, **variables)
    await live.wait_subscribers(0)
    # What is not a feature still works.
    assert (await client.execute("{ me }"))["me"]
    await assert_healthy(live)


async def test_only_presence_off(make_server: type[LiveServer], tmp_path: Path) -> None:
    live = start(make_server, tmp_path / "no-presence", enable_presence=False)
    alice_id = unique("alice")
    alice = live.client(alice_id)
    for feature, query, variables in OPERATIONS + SUBSCRIPTIONS:
        if feature != "presence":
            continue
        if query.startswith("subscription"):
            await assert_subscription_disabled(live, alice, feature, query, **variables)
        else:
            await assert_disabled(alice, feature, query, **variables)

    # Rooms, messages, history, typing and channels work as usual.
    room = unique("room")
    await alice.execute(CREATE_ROOM, id=room)
    first = (await alice.execute(SEND, id=room))["sendMessage"]
    history = await alice.execute(
        "query($id: ID!) { history(roomId: $id) { edges { node { id type } } } }", id=room
    )
    assert [e["node"]["type"] for e in history["history"]["edges"]] == ["JOIN", "MESSAGE"]
    assert history["history"]["edges"][1]["node"]["id"] == first["id"]
    assert await alice.execute("mutation($id: ID!) { startTyping(roomId: $id) }", id=room) == {
        "startTyping": True
    }
    assert await alice.execute("query($id: ID!) { typingUsers(roomId: $id) }", id=room) == {
        "typingUsers": [alice_id]
    }
    channel = (await alice.execute('mutation { createChannel(input: {name: "c"}) { id } }'))[
        "createChannel"
    ]["id"]
    async with ws_connect(live, alice.token) as ws:
        sub = await ws.subscribe(ROOM_MESSAGES, id=room, after=first["cursor"])
        await live.wait_subscribers(1)
        second = (await alice.execute(SEND, id=room))["sendMessage"]
        assert (await sub.next())["roomMessages"]["id"] == second["id"]
        published = await alice.execute(
            "mutation($c: ID!) { publish(input: {channelId: $c, data: 2}) { data } }", c=channel
        )
        assert published == {"publish": {"data": 2}}
        await sub.complete()
        await live.wait_subscribers(0)
    await assert_healthy(live)


async def test_only_history_off(make_server: type[LiveServer], tmp_path: Path) -> None:
    live = start(make_server, tmp_path / "no-history", enable_message_history=False)
    alice = live.client(unique("alice"))
    room = unique("room")
    await alice.execute(CREATE_ROOM, id=room)
    sent = (await alice.execute(SEND, id=room))["sendMessage"]
    await assert_disabled(
        alice, "history", "query($id: ID!) { history(roomId: $id) { edges { cursor } } }", id=room
    )
    # Resuming with `after` is history; a plain live subscription is not.
    await assert_subscription_disabled(
        live, alice, "history", ROOM_MESSAGES, id=room, after=sent["cursor"]
    )
    async with ws_connect(live, alice.token) as ws:
        sub = await ws.subscribe(ROOM_MESSAGES, id=room)
        await live.wait_subscribers(1)
        live_one = (await alice.execute(SEND, id=room))["sendMessage"]
        assert (await sub.next())["roomMessages"] == {"id": live_one["id"], "data": {"n": 1}}
        await sub.complete()
        await live.wait_subscribers(0)
    await assert_healthy(live)
