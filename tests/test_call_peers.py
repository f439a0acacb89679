"""Real WebRTC peers connect through the server's call signaling: two aiortc
peers (client-examples/python/call_peer.py) exchange a data-channel message
both ways over a loopback ICE connection set up by the server's signals."""

from __future__ import annotations

import sys

import pytest

from tests.live import ROOT, LiveServer, unique
from tests.tools import Script

pytest.importorskip("aiortc", reason="aiortc is in the dev extra")

PEER = ROOT / "client-examples" / "python" / "call_peer.py"


async def test_two_aiortc_peers_exchange_a_data_channel_message(server: LiveServer) -> None:
    room = unique("room")
    answerer = await Script.start(
        [sys.executable, str(PEER), "--url", server.ws_url, "--token",
         server.token(unique("alice")), "--room", room, "--answer", "--text", "pong"],
        ROOT, {},
    )  # fmt: skip
    caller = None
    try:
        joined = await answerer.step("joined")
        caller = await Script.start(
            [sys.executable, str(PEER), "--url", server.ws_url, "--token",
             server.token(unique("bob")), "--room", room, "--call", joined["callId"], "--offer",
             "--text", "ping"],
            ROOT, {},
        )  # fmt: skip
        await caller.step("joined")
        assert (await answerer.step("received", timeout=60))["text"] == "ping"
        assert (await caller.step("received", timeout=60))["text"] == "pong"
        await answerer.finish()
        await caller.finish()
    finally:
        await answerer.kill()
        if caller is not None:
            await caller.kill()
