"""Several server processes on one Redis or NATS behave as one server.

Each test runs its own Redis or NATS server (tests/services.py), so the
backend can be stopped and started without touching the shared one.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import TEST_SETTINGS, cluster_nodes
from tests.live import TIMEOUT, GraphQLClient, LiveServer, unique, ws_connect
from tests.services import ServiceProcess

SECRET = "cluster-test-secret-" + "x" * 40  # every node must accept every token

CREATE = 'mutation($id: ID!) { createRoom(input: {id: $id, name: "r"}) { id } }'
JOIN = "mutation($id: ID!) { joinRoom(roomId: $id) { id } }"
SEND = """
mutation($id: ID!, $text: String!, $cid: String) {
  sendMessage(input: {roomId: $id, data: {text: $text}, clientMessageId: $cid}) { cursor }
}
"""
HISTORY = """
query($id: ID!, $after: String) {
  history(roomId: $id, first: 200, after: $after) { edges { cursor node { type data } } }
}
"""
LAST_CURSOR = "query($id: ID!) { history(roomId: $id, last: 1) { pageInfo { endCursor } } }"
MESSAGES = """
subscription($id: ID!, $after: String) {
  roomMessages(roomId: $id, after: $after) { type data cursor }
}
"""
PRESENCE = "subscription($id: ID!) { presence(roomId: $id) { userId status } }"
TYPING = "subscription($id: ID!) { typing(roomId: $id) { userId isTyping } }"


def node_settings(service: ServiceProcess, **extra: Any) -> dict[str, Any]:
    return {
        **TEST_SETTINGS,
        "backend": service.kind,
        "backend_urls": [service.url],
        "jwt_secret": SECRET,
        "presence_ttl": "1s",
        "presence_grace": "200ms",
        **extra,
    }


@pytest.fixture
def nodes(
    service: ServiceProcess, make_server: type[LiveServer], tmp_path: Path
) -> Iterator[list[LiveServer]]:
    settings = [node_settings(service, node_id=f"node-{i}") for i in range(3)]
    yield from cluster_nodes(make_server, tmp_path, settings)


async def room_with_members(owner: GraphQLClient, *others: GraphQLClient) -> tuple[str, str]:
    """A new room with members; returns its id and the cursor of its newest message."""
    room = unique("room")
    await owner.execute(CREATE, id=room)
    for member in others:
        await member.execute(JOIN, id=room)
    last = await owner.execute(LAST_CURSOR, id=room)
    return room, last["history"]["pageInfo"]["endCursor"]


async def history_of(client: GraphQLClient, room: str) -> list[tuple[str, Any]]:
    data = await client.execute(HISTORY, id=room)
    return [(e["cursor"], e["node"]["data"]) for e in data["history"]["edges"]]


def offset(cursor: str) -> int:
    return int(cursor.rsplit(":", 1)[1])


async def test_messages_reach_every_node_in_one_order(nodes: list[LiveServer]) -> None:
    users = [unique(n) for n in ("alice", "bob", "carol")]
    clients = [node.client(user) for node, user in zip(nodes, users, strict=True)]
    room, cursor = await room_with_members(*clients)

    async with (
        ws_connect(nodes[0], clients[0].token) as ws_a,
        ws_connect(nodes[1], clients[1].token) as ws_b,
        ws_connect(nodes[2], clients[2].token) as ws_c,
    ):
        subs = [await ws.subscribe(MESSAGES, id=room) for ws in (ws_a, ws_b, ws_c)]
        for node in nodes:
            await node.wait_subscribers(1)
        await asyncio.gather(
            *(
                c.execute(SEND, id=room, text=f"{i}-{n}")
                for i in range(10)
                for n, c in enumerate(clients)
            )
        )
        received = [await sub.take(30, "roomMessages") for sub in subs]

    seen = [[(m["cursor"], m["data"]) for m in got] for got in received]
    assert seen[0] == seen[1] == seen[2]
    offsets = [offset(c) for c, _ in seen[0]]
    assert offsets == sorted(offsets) and len(set(offsets)) == 30
    assert offsets[0] == offset(cursor) + 1
    histories = [await history_of(c, room) for c in clients]
    assert histories[0] == histories[1] == histories[2]
    assert [h for h in histories[0] if offset(h[0]) > offset(cursor)] == seen[0]


async def test_presence_and_typing_cross_nodes(nodes: list[LiveServer]) -> None:
    alice_id, bob_id = unique("alice"), unique("bob")
    alice, bob = nodes[0].client(alice_id), nodes[1].client(bob_id)
    room, _ = await room_with_members(alice, bob)
    async with ws_connect(nodes[2], bob.token) as watcher:
        presence = await watcher.subscribe(PRESENCE, id=room)
        typing = await watcher.subscribe(TYPING, id=room)
        await nodes[2].wait_subscribers(2)
        async with ws_connect(nodes[0], alice.token):
            got = (await presence.next())["presence"]
            assert got == {"userId": alice_id, "status": "ONLINE"}
            await alice.execute("mutation($id: ID!) { startTyping(roomId: $id) }", id=room)
            assert (await typing.next())["typing"] == {"userId": alice_id, "isTyping": True}
        # Alice's only connection closed on node 0: node 2 hears she is gone.
        got = (await presence.next())["presence"]
        assert got == {"userId": alice_id, "status": "OFFLINE"}


async def test_reconnecting_to_another_node_gets_exactly_what_was_missed(
    nodes: list[LiveServer],
) -> None:
    alice, bob = nodes[0].client(unique("alice")), nodes[1].client(unique("bob"))
    room, cursor = await room_with_members(alice, bob)
    async with ws_connect(nodes[1], bob.token) as ws:
        sub = await ws.subscribe(MESSAGES, id=room, after=cursor)
        await alice.execute(SEND, id=room, text="before")
        first = (await sub.next())["roomMessages"]
        assert first["data"] == {"text": "before"}
    missed = [
        (await alice.execute(SEND, id=room, text=f"missed {i}"))["sendMessage"] for i in range(5)
    ]
    async with ws_connect(nodes[2], bob.token) as ws:
        sub = await ws.subscribe(MESSAGES, id=room, after=first["cursor"])
        replay = await sub.take(5, "roomMessages")
        assert [m["cursor"] for m in replay] == [m["cursor"] for m in missed]
        assert [m["data"]["text"] for m in replay] == [f"missed {i}" for i in range(5)]
        await nodes[2].wait_subscribers(1)
        live = await alice.execute(SEND, id=room, text="live")
        got = (await sub.next())["roomMessages"]
        assert (got["cursor"], got["data"]) == (live["sendMessage"]["cursor"], {"text": "live"})


async def test_limits_are_counted_across_nodes(nodes: list[LiveServer]) -> None:
    user = unique("alice")
    token = nodes[0].token(user)
    async with (
        ws_connect(nodes[0], token),
        ws_connect(nodes[1], token),
        ws_connect(nodes[2], token),
    ):
        with pytest.raises(websockets.ConnectionClosedError) as refused:
            async with ws_connect(nodes[1], token):
                pass
        assert refused.value.rcvd is not None
        assert refused.value.rcvd.code == 4403
        assert refused.value.rcvd.reason.startswith("LIMIT_EXCEEDED")

    sender = unique("bob")
    clients = [node.client(sender) for node in nodes]
    room, _ = await room_with_members(clients[0])
    results = await asyncio.gather(
        *(c.post(SEND, id=room, text=str(i)) for i in range(12) for c in clients)
    )
    codes = [r.json().get("errors", [{}])[0].get("extensions", {}).get("code") for r in results]
    accepted = codes.count(None)
    assert accepted <= int(str(TEST_SETTINGS["max_messages_per_second"]))
    assert codes.count("RATE_LIMITED") == len(codes) - accepted
    stored = [h for h in await history_of(clients[1], room) if h[1] is not None]
    assert len(stored) == accepted


async def test_a_killed_node_leaves_no_ghost(nodes: list[LiveServer]) -> None:
    alice_id, bob_id = unique("alice"), unique("bob")
    alice, bob = nodes[0].client(alice_id), nodes[0].client(bob_id)
    room, _ = await room_with_members(alice, bob)
    async with ws_connect(nodes[0], bob.token) as watcher:
        presence = await watcher.subscribe(PRESENCE, id=room)
        await nodes[0].wait_subscribers(1)
        async with ws_connect(nodes[2], alice.token):
            assert (await presence.next())["presence"]["status"] == "ONLINE"
            nodes[2].stop(signal.SIGKILL)
            # No goodbye from the dead node: the entry expires by its TTL.
            got = (await presence.next(timeout=10))["presence"]
            assert got == {"userId": alice_id, "status": "OFFLINE"}


async def ready(node: LiveServer) -> int:
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        return (await http.get(f"{node.url}/ready")).status_code


async def wait_ready(node: LiveServer, status: int) -> None:
    async with asyncio.timeout(30):
        while True:
            if await ready(node) == status:
                return
            await asyncio.sleep(0.1)  # polling the server's own readiness


async def test_backend_outage_loses_nothing_acknowledged(
    service: ServiceProcess, make_server: type[LiveServer], tmp_path: Path
) -> None:
    a, b = (
        make_server(tmp_path / f"n{i}", node_settings(service, node_id=f"n{i}")).start()
        for i in range(2)
    )
    alice, bob = a.client(unique("alice")), b.client(unique("bob"))
    room, cursor = await room_with_members(alice, bob)
    acknowledged: list[str] = []
    async with ws_connect(b, bob.token) as ws:
        sub = await ws.subscribe(MESSAGES, id=room, after=cursor)
        for i in range(5):
            acknowledged.append(
                (await alice.execute(SEND, id=room, text=f"a{i}"))["sendMessage"]["cursor"]
            )

        service.stop()
        await wait_ready(a, 503)
        await wait_ready(b, 503)
        async with asyncio.timeout(10):  # fails fast, never hangs
            error = await alice.error(SEND, id=room, text="during", cid="during-1")
        assert error.code == "UNAVAILABLE"

        service.start()
        await wait_ready(a, 200)
        await wait_ready(b, 200)
        for i in range(5):
            acknowledged.append(
                (await alice.execute(SEND, id=room, text=f"b{i}"))["sendMessage"]["cursor"]
            )

        got: list[str] = []
        while len(got) < len(acknowledged):
            message = (await sub.next(timeout=20))["roomMessages"]
            if message["type"] == "MESSAGE":
                got.append(message["cursor"])
        assert got == acknowledged  # every stored message once, in order
    stored = [c for c, data in await history_of(alice, room) if data is not None]
    assert stored == acknowledged


async def test_unreachable_backend_fails_start_with_a_clear_message(
    make_server: type[LiveServer], tmp_path: Path
) -> None:
    for url in ("redis://user:hunter2@127.0.0.1:1/0", "nats://user:hunter2@127.0.0.1:1"):
        node = make_server(
            tmp_path / url.split(":")[0],
            {"backend": url.split(":")[0], "backend_urls": [url]},
        )
        with pytest.raises(RuntimeError, match="server exited with 2"):
            node.start()
        log = node.log()
        assert "127.0.0.1:1" in log, log
        assert "hunter2" not in log
        assert "Traceback" not in log
