"""Browsers may open WebSockets only from the server's own origin or an allowed one."""

from __future__ import annotations

from pathlib import Path

import pytest
import websockets
from websockets.typing import Origin, Subprotocol

from tests.live import LiveServer, unique, ws_connect


async def open_from(server: LiveServer, origin: str) -> None:
    async with websockets.connect(
        server.ws_url,
        subprotocols=[Subprotocol("graphql-transport-ws")],
        origin=Origin(origin),
        open_timeout=10,
    ):
        pass


async def test_foreign_origin_is_refused(server: LiveServer) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        await open_from(server, "http://evil.example")
    assert refused.value.response.status_code == 403
    # The server keeps serving everyone else.
    async with ws_connect(server, server.token(unique("alice"))):
        pass


async def test_own_and_allowed_origins_are_accepted(
    make_server: type[LiveServer], tmp_path: Path
) -> None:
    live = make_server(tmp_path / "s", {"allowed_origins": ["https://chat.example"]}).start()
    await open_from(live, f"http://127.0.0.1:{live.port}")
    await open_from(live, "https://chat.example")
    with pytest.raises(websockets.InvalidStatus):
        await open_from(live, "https://other.example")
