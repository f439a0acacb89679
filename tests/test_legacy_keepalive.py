"""Legacy graphql-ws `ka` keep-alives go out on their own interval.

subscriptions-transport-ws clients drop a connection that has had no `ka`
within their timeout (30 s by default); `ka` came every `ping_interval`
(30 s) and real clients reconnected every 30 to 90 s. Now `ka` comes every
`legacy_keepalive_interval`, from the connection's heartbeat.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from pathlib import Path

import websockets
from websockets.typing import Subprotocol

from core.settings import Settings
from tests.conftest import TEST_SETTINGS
from tests.live import TIMEOUT, LiveServer, unique

INTERVAL = 0.3  # seconds; the server's `ping_interval` stays at a minute


def test_default_interval_is_well_within_the_clients_timeout() -> None:
    default = Settings.model_fields["legacy_keepalive_interval"].default
    assert default <= timedelta(seconds=15)


async def test_ka_goes_out_at_its_own_interval(
    make_server: type[LiveServer], tmp_path: Path
) -> None:
    live = make_server(
        tmp_path / "s",
        {**TEST_SETTINGS, "ping_interval": "60s", "legacy_keepalive_interval": "300ms"},
    ).start()
    user = unique("u")
    async with websockets.connect(
        live.ws_url, subprotocols=[Subprotocol("graphql-ws")], open_timeout=TIMEOUT
    ) as ws:
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"token": live.token(user)}})
        )
        ack = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert ack == {"type": "connection_ack", "payload": {"userId": user}}

        async def keep_alives(count: int) -> list[float]:
            """When each of the next `count` frames came; every one a `ka`."""
            times = []
            for _ in range(count):
                assert json.loads(await ws.recv()) == {"type": "ka"}
                times.append(time.monotonic())
            return times

        # The first at once, as the reference server sends it, then one per
        # interval (at `ping_interval` none would come within the timeout),
        # and no faster: five intervals take at least four (one of slack for
        # frames that arrive bunched on a loaded machine).
        first = await asyncio.wait_for(keep_alives(1), TIMEOUT)
        times = first + await asyncio.wait_for(keep_alives(5), TIMEOUT)
        assert times[-1] - times[0] >= 4 * INTERVAL, times

        # Operations still run in between.
        await ws.send(json.dumps({"id": "1", "type": "start", "payload": {"query": "{ me }"}}))
        frames: list[dict[str, object]] = []
        while len(frames) < 2:
            frame = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            if frame["type"] != "ka":
                frames.append(frame)
        assert frames == [
            {"type": "data", "id": "1", "payload": {"data": {"me": user}}},
            {"type": "complete", "id": "1"},
        ]
