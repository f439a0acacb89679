"""Overload is pushed back or refused at once, never queued, never an outage.

A server with a deliberately small in-flight budget (transport/in_flight.py)
takes a burst of sends far beyond it: every member pipelines all its sends
over its own socket at once. Each send is either acknowledged, and then
reaches every member of its room, or refused with OVERLOADED (never
UNAVAILABLE or RATE_LIMITED, never a closed socket), and a refused send was
not stored: nobody receives it. `/health`, asked from another process during
the burst, answers. The load is bounded; nothing is timed.
"""

from __future__ import annotations

import asyncio
import sys
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_SETTINGS
from tests.live import TIMEOUT, LiveServer, unique
from tests.test_redis_load import SEND, codes, members_of_rooms
from transport.in_flight import ConnectionSlots, ProcessBudget

SENDS = 6  # per member, all at once: 300 sends over 50 sockets

OVERLOAD_SETTINGS = {
    **TEST_SETTINGS,
    "max_connections_per_user": 10,
    "max_messages_per_second": 1000,
    "max_operations_in_flight": 2,
    "max_operations_in_flight_per_connection": 1,
}

HEALTH_PROBE = """
import sys, httpx
print(httpx.get(sys.argv[1], timeout=30).status_code)
"""


@pytest.fixture
def small_budget(make_server: type[LiveServer], tmp_path: Path) -> LiveServer:
    return make_server(tmp_path, OVERLOAD_SETTINGS).start()


async def health_from_another_process(live: LiveServer) -> str:
    probe = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HEALTH_PROBE,
        f"{live.url}/health",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(probe.communicate(), TIMEOUT)
    return out.decode().strip()


async def test_a_burst_beyond_the_budget_is_acknowledged_and_delivered_or_refused_overloaded(
    small_budget: LiveServer,
) -> None:
    live = small_budget
    members = await members_of_rooms(live)  # 10 rooms of 5
    try:
        await asyncio.gather(*(m.connect(live) for m in members))
        await asyncio.gather(*(m.subscribe() for m in members))
        await live.wait_subscribers(len(members), timeout=30)
        sends = [
            (m, n, asyncio.create_task(m.send_data({"from": m.user, "n": n}, f"send-{n}")))
            for m in members
            for n in range(SENDS)
        ]
        health = asyncio.create_task(health_from_another_process(live))
        answers = [(m, n, await task) for m, n, task in sends]
        assert await health == "200"

        acknowledged: dict[str, set[tuple[str, int]]] = defaultdict(set)
        refused: dict[str, set[tuple[str, int]]] = defaultdict(set)
        for member, n, answer in answers:
            if answer["type"] == "next" and not codes(answer):
                acknowledged[member.room].add((member.user, n))
            else:
                assert codes(answer) == ["OVERLOADED"], answer
                refused[member.room].add((member.user, n))
        assert sum(map(len, refused.values())) > 0, "the budget never filled: no overload shown"
        assert sum(map(len, acknowledged.values())) > 0

        for member in members:
            await member.wait_for(len(acknowledged[member.room]))
        for member in members:
            assert member.told == [], (member.user, member.told)  # no close, no error
            got = {(d["from"], d["n"]) for d in member.with_key("n")}
            assert got == acknowledged[member.room], (member.user, len(got))
            assert not got & refused[member.room]  # refused: not stored, not sent
    finally:
        await asyncio.gather(*(m.close() for m in members))


async def test_http_operations_beyond_the_budget_are_503_overloaded(
    small_budget: LiveServer,
) -> None:
    live = small_budget
    owner = unique("owner")
    room = unique("room")
    await live.client(owner).execute(
        'mutation($id: ID!) { createRoom(input: {id: $id, name: "r"}) { id } }', id=room
    )
    headers = {"Authorization": f"Bearer {live.token(owner)}"}
    body = {"query": SEND, "variables": {"input": {"roomId": room, "data": {"n": 0}}}}
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(timeout=TIMEOUT, limits=limits) as http:
        responses = await asyncio.gather(
            *(http.post(f"{live.url}/graphql", json=body, headers=headers) for _ in range(60))
        )
    statuses: dict[int, int] = defaultdict(int)
    for response in responses:
        statuses[response.status_code] += 1
        if response.status_code != 200:
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "1"
            error = response.json()["errors"][0]
            assert error["extensions"]["code"] == "OVERLOADED", error
        else:
            assert "errors" not in response.json(), response.text
    assert statuses[503] > 0 and statuses[200] > 0, dict(statuses)


# --- the bounds themselves -------------------------------------------------------------------


def test_the_process_budget_refuses_at_once_when_full_and_takes_again_after() -> None:
    budget = ProcessBudget(2)
    assert budget.try_take() and budget.try_take()
    assert not budget.try_take()
    assert budget.refused == 1
    budget.give_back()
    assert budget.try_take()
    with pytest.raises(ValueError, match="at least 1"):
        ProcessBudget(0)


async def test_a_connection_at_its_cap_waits_for_one_of_its_operations_to_end() -> None:
    slots = ConnectionSlots(2)
    slots.take()
    await asyncio.wait_for(slots.room(), TIMEOUT)  # one of two: room at once
    slots.take()
    waiting = asyncio.create_task(slots.room())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not waiting.done()  # at the cap: the next frame is not read
    slots.give_back()
    await asyncio.wait_for(waiting, TIMEOUT)
    assert slots.running == 1
