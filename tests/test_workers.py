"""`--workers N`: several processes on one port, sharing Redis, act as one."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_SETTINGS
from tests.live import ROOT, LiveServer, unique, ws_connect
from tests.services import ServiceProcess

SEND = "mutation($id: ID!) { sendMessage(input: {roomId: $id, data: {n: 1}}) { cursor } }"
WATCH = (
    "subscription($id: ID!, $after: String) { roomMessages(roomId: $id, after: $after) { cursor } }"
)
CREATE = 'mutation($id: ID!) { createRoom(input: {id: $id, name: "w"}) { id } }'
LAST = "query($id: ID!) { history(roomId: $id, last: 1) { pageInfo { endCursor } } }"


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[ServiceProcess]:
    service = ServiceProcess("redis", tmp_path / "redis").start()
    yield service
    service.stop()


async def test_workers_share_one_port(
    redis: ServiceProcess, make_server: type[LiveServer], tmp_path: Path
) -> None:
    settings = {**TEST_SETTINGS, "backend": "redis", "backend_urls": [redis.url], "workers": 2}
    live = make_server(tmp_path / "node", settings).start()
    nodes = set()
    for _ in range(200):  # new connections land on either worker
        async with httpx.AsyncClient(timeout=5) as http:
            nodes.add((await http.get(f"{live.url}/health")).json()["node"])
        if len(nodes) == 2:
            break
    assert len(nodes) == 2

    alice = live.client(unique("alice"))
    room = unique("room")
    await alice.execute(
        'mutation($id: ID!) { createRoom(input: {id: $id, name: "w"}) { id } }', id=room
    )
    # Whichever worker holds the subscriber, a send through any worker reaches it.
    async with ws_connect(live, alice.token) as ws:
        sub = await ws.subscribe(WATCH, id=room)
        sent = []
        for _ in range(6):
            # Each probe its own user: a closed connection is released just
            # after its close handshake, not before, so alice's limit could
            # still count it.
            async with ws_connect(live, live.token(unique("probe"))) as probe:
                await probe.subscribe(WATCH, id=room)
            sent.append((await alice.execute(SEND, id=room))["sendMessage"]["cursor"])
        got = [m["roomMessages"]["cursor"] for m in [await sub.next() for _ in sent]]
        assert got == sent


def test_workers_need_a_shared_backend(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "--workers", "2", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "several workers need a shared backend" in result.stderr
