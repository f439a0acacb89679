"""Calls across nodes over Redis and NATS: a signal reaches exactly one
session on whichever node it is, a session resumes on another node with what
it missed, and a killed node's participants leave after the TTL.

Each test runs its own Redis or NATS server (tests/services.py).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import cluster_nodes
from tests.live import LiveServer, ws_connect
from tests.services import ServiceProcess
from tests.test_calls import (
    EVENTS,
    JOIN,
    SEND,
    SIGNALS,
    in_call,
    started_call,
    ws_execute,
)
from tests.test_calls import (
    signal as next_signal,
)
from tests.test_cluster import node_settings


@pytest.fixture
def nodes(
    service: ServiceProcess, make_server: type[LiveServer], tmp_path: Path
) -> Iterator[list[LiveServer]]:
    settings = [node_settings(service, node_id=f"node-{i}", presence_grace="3s") for i in range(2)]
    yield from cluster_nodes(make_server, tmp_path, settings)


async def test_a_signal_reaches_exactly_one_session_on_another_node(
    nodes: list[LiveServer],
) -> None:
    alice_id, bob_id, _alice, _bob, _room, call = await started_call(nodes[0], nodes[1])
    async with (
        in_call(nodes[0], alice_id, call) as (a_ws, a_session),
        in_call(nodes[1], bob_id, call) as (far_ws, far_session),
        in_call(nodes[0], bob_id, call) as (near_ws, near_session),
    ):
        far = await far_ws.subscribe(SIGNALS, call=call)
        near = await near_ws.subscribe(SIGNALS, call=call)
        await nodes[0].wait_subscribers(1)
        await nodes[1].wait_subscribers(1)
        offer = {"type": "offer", "sdp": "v=0"}
        await ws_execute(a_ws, SEND, call=call, to=far_session, kind="OFFER", payload=offer)
        got = await next_signal(far)
        assert (got["fromSessionId"], got["payload"]) == (a_session, offer)
        # The marker to the other session on alice's node comes first there:
        # the offer never reached it.
        await ws_execute(a_ws, SEND, call=call, to=near_session, kind="HANGUP", payload={})
        assert (await next_signal(near))["kind"] == "HANGUP"
        far.assert_quiet()
        for sub in (far, near):
            await sub.complete()


async def test_a_session_resumes_on_another_node_with_what_it_missed(
    nodes: list[LiveServer],
) -> None:
    alice_id, bob_id, _alice, bob, _room, call = await started_call(nodes[0], nodes[1])
    async with in_call(nodes[0], alice_id, call) as (a_ws, _):
        async with in_call(nodes[1], bob_id, call) as (_, b_session):
            pass
        sent = [{"candidate": f"c{i}"} for i in range(4)]
        for payload in sent:
            await ws_execute(
                a_ws, SEND, call=call, to=b_session, kind="ICE_CANDIDATE", payload=payload
            )
        async with ws_connect(nodes[0], bob.token) as back:
            await ws_execute(back, JOIN, call=call, session=b_session)
            sub = await back.subscribe(SIGNALS, call=call)
            assert [(await next_signal(sub))["payload"] for _ in sent] == sent
            await ws_execute(a_ws, SEND, call=call, to=b_session, kind="HANGUP", payload={})
            assert (await next_signal(sub))["kind"] == "HANGUP"
            await sub.complete()


async def test_a_killed_nodes_participants_leave_after_the_ttl(nodes: list[LiveServer]) -> None:
    _alice_id, bob_id, alice, _bob, room, call = await started_call(nodes[0])
    async with ws_connect(nodes[0], alice.token) as watcher:
        events = await watcher.subscribe(EVENTS, room=room)
        await nodes[0].wait_subscribers(1)
        async with in_call(nodes[1], bob_id, call):
            assert (await events.next())["callEvents"]["type"] == "joined"
            nodes[1].stop(signal.SIGKILL)
            # No goodbye from the dead node: the session expires by its TTL
            # (presence_ttl 1s), and the call, empty, ends.
            left = (await events.next(timeout=15))["callEvents"]
            assert (left["type"], left["participant"]) == ("left", {"userId": bob_id})
            assert (await events.next(timeout=15))["callEvents"]["type"] == "ended"
        await events.complete()
