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
from collections.abc import Awaitable, Callable, Iterator
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
    sockets = [await open_ws(node, token) for _ in range(3)]
    try:
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
    finally:
        for ws in sockets:
            await ws.close()


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
