"""The cluster API (issue 13): Query.cluster, Query.connections,
Subscription.clusterStats and Mutation.disconnectUser, admins only.

The cluster tests run two nodes on a Redis or NATS server of their own
(tests/services.py), with short report intervals so a killed node drops out
within a test.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

from core.settings import load_settings
from tests.conftest import TEST_SETTINGS, cluster_nodes
from tests.live import TIMEOUT, GraphQLClient, LiveServer, unique, ws_connect
from tests.services import ServiceProcess
from tests.sse_client import TOKEN_HEADER, event_stream, request
from transport.auth import TokenAuthority

SECRET = "cluster-api-secret-" + "x" * 40  # every node accepts every token
OPS_KEY = "ops-" + "k" * 40  # a back-end service's API key (an admin)

CLUSTER = """
{ cluster { connections users subscriptions rooms
    nodes { id startedAt version backend connections subscriptions sharedExecutions
            messagesPerSecond deliveriesPerSecond memoryBytes lastSeen } } }
"""
CONNECTIONS = """
query($user: ID, $node: ID, $first: Int, $after: String) {
  connections(userId: $user, nodeId: $node, first: $first, after: $after) {
    edges { id nodeId userId transport protocol connectedAt subscriptions }
    pageInfo { hasNextPage endCursor }
  }
}
"""
DISCONNECT = """
mutation($user: ID!, $reason: String, $revoke: Boolean) {
  disconnectUser(userId: $user, reason: $reason, revokeTokens: $revoke)
}
"""
STATS = "subscription($ms: Int) { clusterStats(intervalMs: $ms) { connections nodes { id } } }"
ME_TYPING = "subscription($id: ID!) { typing(roomId: $id) { userId } }"
CREATE = 'mutation($id: ID!) { createRoom(input: {id: $id, name: "r"}) { id } }'


def mint(server: LiveServer, user_id: str, *, admin: bool = False) -> str:
    settings = load_settings(server.data_dir / "config.yaml", data_dir=server.data_dir)
    return TokenAuthority.from_settings(settings).mint(user_id, admin=admin)


def admin_client(server: LiveServer) -> GraphQLClient:
    return GraphQLClient(server, mint(server, unique("admin"), admin=True))


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = TIMEOUT
) -> None:
    """Wait until `check()` holds: the event (a node's report, its expiry)
    happens in another process, which tells nobody; so ask again."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def wait_closed(ws: ClientConnection) -> tuple[int | None, str | None]:
    """The close code and reason the server closed `ws` with."""
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
    return ws.close_code, ws.close_reason


async def open_ws(
    server: LiveServer, token: str, protocol: str = "graphql-transport-ws"
) -> ClientConnection:
    """A raw, acknowledged WebSocket (the caller closes it)."""
    ws = await websockets.connect(
        server.ws_url, subprotocols=[Subprotocol(protocol)], open_timeout=TIMEOUT
    )
    await ws.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        if frame["type"] == "connection_ack":
            return ws
        if frame["type"] != "ka":
            raise AssertionError(f"expected connection_ack, got {frame}")


@asynccontextmanager
async def open_sockets(server: LiveServer, token: str, count: int) -> AsyncIterator[None]:
    """`count` acknowledged WebSockets of the token's user, open for the block."""
    sockets = [await open_ws(server, token) for _ in range(count)]
    try:
        yield
    finally:
        for ws in sockets:
            await ws.close()


SEND = """mutation($room: ID!, $text: String!) {
  sendMessage(input: {roomId: $room, data: {text: $text}}) { id }
}"""
# The inline fragment keeps the subscription off the shared path
# (transport/shared.py shares only a bare field): each result is written by
# its transport.
UNSHARED_MESSAGES = """subscription($id: ID!) {
  ... on Subscription { roomMessages(roomId: $id) { type data } }
}"""

ADMIN_ROOMS = """
query($first: Int, $after: String, $prefix: ID) {
  adminRooms(first: $first, after: $after, idPrefix: $prefix) {
    edges { id name isPrivate }
    pageInfo { hasNextPage endCursor }
  }
}
"""
CREATE_PRIVATE = """mutation($id: ID!) {
  createRoom(input: {id: $id, name: "secret", isPrivate: true}) { id }
}"""


# --- one node -------------------------------------------------------------------------


@pytest.fixture
def node(make_server: type[LiveServer], tmp_path: Path) -> LiveServer:
    settings = {**TEST_SETTINGS, "node_id": "solo", "api_keys": [{"name": "ops", "key": OPS_KEY}]}
    return make_server(tmp_path / "node", settings).start()


async def test_non_admins_get_forbidden_on_every_admin_field(node: LiveServer) -> None:
    user = unique("mallory")
    client = GraphQLClient(node, mint(node, user))
    victim = unique("victim")
    for query, variables in (
        (CLUSTER, {}),
        (CONNECTIONS, {"user": victim}),
        (DISCONNECT, {"user": victim, "revoke": True}),
        (ADMIN_ROOMS, {}),
    ):
        response = await client.post(query, **variables)
        body = response.json()
        assert body["data"] is None, body
        assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]
        assert body["errors"][0]["message"] == "this needs a server admin"
    async with ws_connect(node, client.token) as ws:
        stats = await ws.subscribe(STATS, ms=1000)
        frame = await stats.frame()
        assert frame["type"] == "next", frame
        assert frame["payload"]["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        assert frame["payload"]["data"] is None
    # The refused disconnect closed nothing.
    async with ws_connect(node, mint(node, victim)):
        admin = admin_client(node)
        page = (await admin.execute(CONNECTIONS, user=victim))["connections"]
        assert len(page["edges"]) == 1


async def test_admins_page_through_every_room_private_ones_too(node: LiveServer) -> None:
    owner = GraphQLClient(node, mint(node, unique("olga")))
    prefix = unique("adm")
    private = [f"{prefix}-p{i}" for i in range(3)]
    public = [f"{prefix}-o{i}" for i in range(2)]
    for room_id in private:
        await owner.execute(CREATE_PRIVATE, id=room_id)
    for room_id in public:
        await owner.execute(CREATE, id=room_id)
    other = unique("zzz")
    await owner.execute(CREATE_PRIVATE, id=other)
    admin = admin_client(node)  # a member of none of them
    assert {r["id"] for r in (await admin.execute("{ rooms { id } }"))["rooms"]} == {*public}

    async def walk(**variables: Any) -> list[dict[str, Any]]:
        rooms, after, pages = [], None, 0
        while True:
            page = (await admin.execute(ADMIN_ROOMS, after=after, **variables))["adminRooms"]
            assert len(page["edges"]) <= variables.get("first", 100)
            rooms += page["edges"]
            pages += 1
            assert pages < 50, "the walk does not end"
            if not page["pageInfo"]["hasNextPage"]:
                assert page["pageInfo"]["endCursor"] is None
                return rooms
            after = page["pageInfo"]["endCursor"]

    everything = await walk(first=2)
    ids = [r["id"] for r in everything]
    assert len(ids) == len(set(ids)) and {*private, *public, other} <= set(ids)
    assert {r["id"]: r["isPrivate"] for r in everything if r["id"] in private} == dict.fromkeys(
        private, True
    )
    assert {r["id"] for r in await walk(first=2, prefix=prefix)} == {*private, *public}
    assert {r["id"] for r in await walk(prefix=f"{prefix}-p")} == {*private}
    assert await walk(prefix=unique("none")) == []
    # The admin reads a private room it is not in.
    room = await admin.execute("query($id: ID!) { room(id: $id) { name } }", id=private[0])
    assert room["room"] == {"name": "secret"}

    for variables, argument in (
        ({"first": 0}, "first"),
        ({"first": 10_000}, "first"),
        ({"after": "not-a-cursor"}, "after"),
        ({"after": "x" * 600}, "after"),
        ({"prefix": "has space"}, "idPrefix"),
        ({"prefix": "p" * 65}, "idPrefix"),
    ):
        error = await admin.error(ADMIN_ROOMS, **variables)
        assert error.code == "BAD_USER_INPUT", (variables, error)
        assert argument in str(error), (variables, error)


async def test_cluster_stats_ticks_and_refuses_bad_intervals(node: LiveServer) -> None:
    admin = admin_client(node)
    async with ws_connect(node, admin.token) as ws:
        stats = await ws.subscribe(STATS, ms=500)
        first = (await stats.next())["clusterStats"]
        started = time.monotonic()
        second = (await stats.next())["clusterStats"]
        assert time.monotonic() - started >= 0.4  # the interval asked, not faster
        for tick in (first, second):
            assert [n["id"] for n in tick["nodes"]] == ["solo"]
            assert tick["connections"] == 1  # this admin's socket
        for bad in (499, 0, -1, 60_001, 2**31 - 1):
            refused = await ws.subscribe(STATS, ms=bad)
            frame = await refused.frame()
            error = frame["payload"]["errors"][0]
            assert error["extensions"]["code"] == "BAD_USER_INPUT", frame
            assert "intervalMs must be between 500 and 60000" in error["message"]
        # The good one still ticks.
        assert (await stats.next())["clusterStats"]["nodes"][0]["id"] == "solo"
        # Another admin's identical subscription shares its execution.
        async with ws_connect(node, admin_client(node).token) as other:
            again = await other.subscribe(STATS, ms=500)
            assert (await again.next())["clusterStats"]["connections"] == 2
            await node.wait_metric("streaming_shared_executions", 1)
            await node.wait_subscribers(2)


async def test_connections_paging_and_bad_arguments(node: LiveServer) -> None:
    admin = admin_client(node)
    user = unique("pager")
    token = mint(node, user)
    async with open_sockets(node, token, 3):
        seen: list[str] = []
        after = None
        for _ in range(3):
            page = (await admin.execute(CONNECTIONS, user=user, first=1, after=after))[
                "connections"
            ]
            assert len(page["edges"]) == 1
            seen.append(page["edges"][0]["id"])
            after = page["pageInfo"]["endCursor"]
            last = page["pageInfo"]["hasNextPage"]
        assert not last and len(set(seen)) == 3
        rest = (await admin.execute(CONNECTIONS, user=user, after=after))["connections"]
        assert rest["edges"] == [] and rest["pageInfo"]["hasNextPage"] is False
        everyone = (await admin.execute(CONNECTIONS, user=user))["connections"]["edges"]
        assert [e["id"] for e in everyone] == seen  # oldest first
        for variables, argument in (
            ({"first": 201}, "first"),
            ({"first": -1}, "first"),
            ({"after": "not-a-cursor"}, "after"),
            ({"after": "x" * 600}, "after"),
            ({"user": "u" * 300}, "userId"),
        ):
            error = await admin.error(CONNECTIONS, **variables)
            assert error.code == "BAD_USER_INPUT", (variables, error.errors)
            assert argument in error.args[0]
        error = await admin.error(DISCONNECT, user=user, reason="r" * 201)
        assert error.code == "BAD_USER_INPUT"
        # Nothing was closed by the refused calls.
        left = (await admin.execute(CONNECTIONS, user=user))["connections"]["edges"]
        assert len(left) == 3


@pytest.fixture
def slow_reporting_node(make_server: type[LiveServer], tmp_path: Path) -> LiveServer:
    """A node whose report (its row in Query.cluster) is an hour old at once."""
    settings = {**TEST_SETTINGS, "node_report_interval": "1h", "node_ttl": "2h"}
    return make_server(tmp_path / "slow", settings).start()


async def test_a_node_row_and_the_totals_count_the_same_moment(
    slow_reporting_node: LiveServer,
) -> None:
    node = slow_reporting_node
    admin = admin_client(node)
    reported = (await admin.execute(CLUSTER))["cluster"]  # the node reports itself now
    assert reported["connections"] == reported["nodes"][0]["connections"] == 0
    user = unique("frank")
    room = unique("room")
    token = mint(node, user)
    await GraphQLClient(node, token).execute(CREATE, id=room)
    async with open_sockets(node, token, 2), ws_connect(node, token) as ws:
        await ws.subscribe(ME_TYPING, id=room)
        await node.wait_subscribers(1)
        cluster = (await admin.execute(CLUSTER))["cluster"]
        row = cluster["nodes"][0]
        assert cluster["connections"] == row["connections"] == 3, cluster
        assert cluster["subscriptions"] == row["subscriptions"] == 1, cluster


@pytest.fixture
def fast_reporting_node(make_server: type[LiveServer], tmp_path: Path) -> LiveServer:
    settings = {**TEST_SETTINGS, "node_report_interval": "200ms", "node_ttl": "1s"}
    return make_server(tmp_path / "fast", settings).start()


async def test_unshared_subscriptions_count_as_deliveries(fast_reporting_node: LiveServer) -> None:
    node = fast_reporting_node
    admin = admin_client(node)
    user = unique("gina")
    room = unique("room")
    token = mint(node, user)
    sender = GraphQLClient(node, token)
    await sender.execute(CREATE, id=room)
    before = node.metric("streaming_deliveries_total")
    body = {"query": UNSHARED_MESSAGES, "variables": {"id": room}}
    legacy = await open_ws(node, token, "graphql-ws")
    try:
        await legacy.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "start",
                    "payload": {"query": UNSHARED_MESSAGES, "variables": {"id": room}},
                }
            )
        )
        async with ws_connect(node, token) as ws, event_stream(node, token, json=body) as stream:
            sub = await ws.subscribe(UNSHARED_MESSAGES, id=room)
            await node.wait_subscribers(3)
            assert node.metric("streaming_shared_executions") == 0
            await sender.execute(SEND, room=room, text="one")
            assert (await sub.next())["roomMessages"]["data"] == {"text": "one"}
            assert (await stream.expect("next"))["data"]["roomMessages"]["data"] == {"text": "one"}
            frame: dict[str, Any] = {"type": "ka"}
            while frame["type"] == "ka":
                frame = json.loads(await asyncio.wait_for(legacy.recv(), TIMEOUT))
            assert frame["type"] == "data", frame
            assert frame["payload"]["data"]["roomMessages"]["data"] == {"text": "one"}
            # One per subscriber: graphql-transport-ws, graphql-ws and SSE.
            await node.wait_metric("streaming_deliveries_total", before + 3)

            async def moving() -> bool:
                await sender.execute(SEND, room=room, text="more")
                rows = (await admin.execute(CLUSTER))["cluster"]["nodes"]
                return bool(rows[0]["deliveriesPerSecond"] > 0)

            await eventually(moving, "deliveriesPerSecond to count unshared deliveries")
    finally:
        await legacy.close()


async def test_disconnecting_a_user_with_no_connections_returns_zero(node: LiveServer) -> None:
    admin = admin_client(node)
    assert (await admin.execute(DISCONNECT, user=unique("nobody")))["disconnectUser"] == 0


async def test_a_service_api_key_uses_the_admin_api(node: LiveServer) -> None:
    service = GraphQLClient(node, OPS_KEY)
    user = unique("erin")
    ws = await open_ws(node, mint(node, user))
    assert [n["id"] for n in (await service.execute(CLUSTER))["cluster"]["nodes"]] == ["solo"]
    assert (await service.execute(DISCONNECT, user=user))["disconnectUser"] == 1
    assert await wait_closed(ws) == (4403, "DISCONNECTED: by a server admin")


async def test_a_single_connection_stream_is_listed_and_disconnected(node: LiveServer) -> None:
    admin = admin_client(node)
    user = unique("frank")
    token = mint(node, user)
    room = unique("room")
    await GraphQLClient(node, token).execute(CREATE, id=room)
    reserved = await request(node, "PUT", token)
    assert reserved.status_code == 201, reserved.text
    stream_token = reserved.text
    async with event_stream(
        node, token, method="GET", headers={TOKEN_HEADER: stream_token}
    ) as events:
        for op_id in ("op-1", "op-2"):
            body = {"query": ME_TYPING, "variables": {"id": room}}
            response = await request(
                node,
                "POST",
                token,
                json={**body, "extensions": {"operationId": op_id}},
                headers={TOKEN_HEADER: stream_token},
            )
            assert response.status_code == 202, response.text
        await node.wait_subscribers(2)
        (edge,) = (await admin.execute(CONNECTIONS, user=user))["connections"]["edges"]
        assert (edge["transport"], edge["protocol"]) == ("sse", "graphql-sse-single")
        assert edge["subscriptions"] == 2 and edge["nodeId"] == "solo"
        assert (await admin.execute(DISCONNECT, user=user, reason="x"))["disconnectUser"] == 1
        ended = {(await events.expect("next"))["id"] for _ in range(2)}
        assert ended == {"op-1", "op-2"}
        await events.ended()
    await node.wait_subscribers(0)


# --- two nodes over Redis or NATS ----------------------------------------------------


@pytest.fixture
def nodes(
    service: ServiceProcess, make_server: type[LiveServer], tmp_path: Path
) -> Iterator[list[LiveServer]]:
    settings: dict[str, Any] = {
        **TEST_SETTINGS,
        "backend": service.kind,
        "backend_urls": [service.url],
        "jwt_secret": SECRET,
        "node_report_interval": "200ms",
        "node_ttl": "1s",
    }
    yield from cluster_nodes(
        make_server, tmp_path, [{**settings, "node_id": f"n{i}"} for i in range(2)]
    )


async def node_ids(admin: GraphQLClient) -> list[str]:
    return [n["id"] for n in (await admin.execute(CLUSTER))["cluster"]["nodes"]]


async def test_cluster_shows_both_nodes_and_drops_a_killed_one(nodes: list[LiveServer]) -> None:
    admin = admin_client(nodes[0])

    async def both() -> bool:
        return await node_ids(admin) == ["n0", "n1"]

    await eventually(both, "both nodes in Query.cluster")
    cluster = (await admin.execute(CLUSTER))["cluster"]
    for status in cluster["nodes"]:
        assert status["backend"] == nodes[0].settings["backend"]
        assert status["memoryBytes"] > 1_000_000
        assert status["version"] and status["startedAt"] <= status["lastSeen"]
        assert status["messagesPerSecond"] >= 0 and status["deliveriesPerSecond"] >= 0

    nodes[1].stop(signal.SIGKILL)

    async def only_n0() -> bool:
        return await node_ids(admin) == ["n0"]

    await eventually(only_n0, "the killed node to drop out")


async def test_connections_across_nodes(nodes: list[LiveServer]) -> None:
    admin = admin_client(nodes[0])
    alice, bob = unique("alice"), unique("bob")
    room = unique("room")
    await GraphQLClient(nodes[0], mint(nodes[0], alice)).execute(CREATE, id=room)
    alice_token = mint(nodes[0], alice)
    body = {"query": ME_TYPING, "variables": {"id": room}}
    async with (
        ws_connect(nodes[0], alice_token) as ws,
        event_stream(nodes[1], alice_token, json=body),
    ):
        await ws.subscribe(ME_TYPING, id=room)
        legacy = await open_ws(nodes[1], mint(nodes[1], bob), "graphql-ws")
        try:
            await nodes[0].wait_subscribers(1)
            await nodes[1].wait_subscribers(1)

            found = (await admin.execute(CONNECTIONS, user=alice))["connections"]["edges"]
            by_node = {e["nodeId"]: e for e in found}
            assert set(by_node) == {"n0", "n1"}, found
            assert by_node["n0"]["transport"] == "websocket"
            assert by_node["n0"]["protocol"] == "graphql-transport-ws"
            assert by_node["n1"]["transport"] == "sse"
            assert by_node["n1"]["protocol"] == "graphql-sse-distinct"
            for edge in found:
                assert edge["userId"] == alice and edge["subscriptions"] == 1
                assert edge["connectedAt"]

            on_n1 = (await admin.execute(CONNECTIONS, node="n1"))["connections"]["edges"]
            assert {(e["userId"], e["protocol"]) for e in on_n1} == {
                (alice, "graphql-sse-distinct"),
                (bob, "graphql-ws"),
            }
            page = (await admin.execute(CONNECTIONS, user=alice, first=1))["connections"]
            assert page["pageInfo"]["hasNextPage"] is True
            after = page["pageInfo"]["endCursor"]
            rest = (await admin.execute(CONNECTIONS, user=alice, after=after))["connections"]
            ids = [e["id"] for e in page["edges"] + rest["edges"]]
            assert sorted(ids) == sorted(e["id"] for e in found) and len(set(ids)) == 2
        finally:
            await legacy.close()


async def test_admin_rooms_walk_the_shared_store_a_few_at_a_time(nodes: list[LiveServer]) -> None:
    # On Redis a store page is a SCAN batch, larger than `first`: a page
    # stops within it and the next goes on from there.
    owner = GraphQLClient(nodes[0], mint(nodes[0], unique("olga")))
    prefix = unique("walk")
    made = {f"{prefix}-{i}" for i in range(7)}
    for i, room_id in enumerate(sorted(made)):
        await owner.execute(CREATE_PRIVATE if i % 2 else CREATE, id=room_id)
    admin = admin_client(nodes[1])
    walks: list[dict[str, Any]] = [{"first": 2}, {"first": 2, "prefix": prefix}, {"first": 3}]
    for variables in walks:
        seen: list[str] = []
        after = None
        for _ in range(100):
            page = (await admin.execute(ADMIN_ROOMS, after=after, **variables))["adminRooms"]
            assert len(page["edges"]) <= variables["first"]
            seen += [r["id"] for r in page["edges"]]
            after = page["pageInfo"]["endCursor"]
            if not page["pageInfo"]["hasNextPage"]:
                break
        assert after is None, "the walk does not end"
        assert len(seen) == len(set(seen)), seen
        if "prefix" in variables:
            assert set(seen) == made
        else:
            assert made <= set(seen)


async def test_disconnect_user_on_both_nodes_and_revoke_tokens(nodes: list[LiveServer]) -> None:
    admin = admin_client(nodes[1])
    user, other = unique("carol"), unique("dave")
    old = mint(nodes[0], user)
    room = unique("room")
    await GraphQLClient(nodes[0], old).execute(CREATE, id=room)
    body = {"query": ME_TYPING, "variables": {"id": room}}
    ws_old = await open_ws(nodes[0], old)
    legacy = await open_ws(nodes[1], old, "graphql-ws")
    bystander = await open_ws(nodes[1], mint(nodes[1], other))
    try:
        async with event_stream(nodes[1], old, json=body) as stream:
            await nodes[1].wait_subscribers(1)
            closed = await admin.execute(DISCONNECT, user=user, reason="bye", revoke=True)
            assert closed["disconnectUser"] == 3
            assert await wait_closed(ws_old) == (4403, "DISCONNECTED: bye")
            assert await wait_closed(legacy) == (4403, "DISCONNECTED: bye")
            last = await stream.expect("next")
            assert last["errors"][0]["extensions"]["code"] == "FORBIDDEN"
            await stream.ended()
        # The other user's connection is untouched.
        await bystander.ping()
        remaining = (await admin.execute(CONNECTIONS, user=user))["connections"]["edges"]
        assert remaining == []

        for live in nodes:
            response = await GraphQLClient(live, old).post("{ me }")
            assert response.status_code == 401, response.text
            assert response.json()["errors"][0]["message"] == "token revoked"
            async with websockets.connect(
                live.ws_url, subprotocols=[Subprotocol("graphql-transport-ws")]
            ) as ws:
                await ws.send(json.dumps({"type": "connection_init", "payload": {"token": old}}))
                code, reason = await wait_closed(ws)
                assert code == 4403 and reason is not None and "token revoked" in reason
        fresh = mint(nodes[0], user)
        for live in nodes:
            assert (await GraphQLClient(live, fresh).execute("{ me }"))["me"] == user
            ws = await open_ws(live, fresh)
            await ws.close()
        # Disconnecting again (nothing open) closes nothing.
        assert (await admin.execute(DISCONNECT, user=user))["disconnectUser"] == 0
    finally:
        for ws in (ws_old, legacy, bystander):
            await ws.close()
