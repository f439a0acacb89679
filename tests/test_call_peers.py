"""Real WebRTC peers connect through the server's call signaling: two aiortc
peers (client-examples/python/call_peer.py), and two headless Chromium pages
of the browser example (on one node, and on two nodes over Redis), exchange a
data-channel message both ways over loopback ICE set up by the server's signals."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tests.conftest import missing
from tests.live import ROOT, LiveServer, unique
from tests.services import ServiceProcess
from tests.test_cluster import node_settings
from tests.tools import EXAMPLES, Script, chromium, node, npm_ci, static_site

PEER = ROOT / "client-examples" / "python" / "call_peer.py"


async def test_two_aiortc_peers_exchange_a_data_channel_message(server: LiveServer) -> None:
    # The peers run as processes of this Python: aiortc must be installed here.
    if importlib.util.find_spec("aiortc") is None:
        missing("aiortc is not installed (it is in the dev extra)")
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


# --- Two Chromium pages: the browser example's call button ---------------------


async def browser_call(folder: Path, page_a: str, page_b: str) -> dict[str, Any]:
    script = await Script.start(
        [node(), "e2e/call.mjs"], folder,
        {"PAGE_A": page_a, "PAGE_B": page_b, "CHROMIUM": chromium()},
    )  # fmt: skip
    try:
        await script.step("waiting")
        done = await script.step("done", timeout=90)
        await script.finish()
    finally:
        await script.kill()
    return done


def page_url(origin: str, server: LiveServer, user: str, room: str) -> str:
    return f"{origin}/?" + urlencode(
        {"url": server.ws_url, "token": server.token(user), "room": room}
    )


def assert_exchanged(done: dict[str, Any]) -> None:
    assert done["a"]["log"] == ["me: hello from a", "them: hello from b"]
    assert done["b"]["log"] == ["them: hello from a", "me: hello from b"]
    assert done["external"] == [] and done["errors"] == [] and done["consoleErrors"] == []


async def test_two_browser_pages_pass_a_data_channel_message(
    make_server: type[LiveServer], tmp_path: Path
) -> None:
    folder = npm_ci(EXAMPLES / "browser")
    room = unique("room")
    with static_site(folder) as origin:
        live = make_server(tmp_path / "server", {"allowed_origins": [origin]}).start()
        done = await browser_call(
            folder,
            page_url(origin, live, unique("alice"), room),
            page_url(origin, live, unique("bob"), room),
        )
    assert_exchanged(done)


async def test_two_browser_pages_on_two_nodes_over_redis(
    make_server: type[LiveServer], tmp_path: Path
) -> None:
    folder = npm_ci(EXAMPLES / "browser")
    room = unique("room")
    redis = ServiceProcess("redis", tmp_path / "redis").start()
    try:
        with static_site(folder) as origin:
            nodes = [
                make_server(
                    tmp_path / f"node{i}",
                    node_settings(redis, node_id=f"node-{i}", allowed_origins=[origin]),
                ).start()
                for i in range(2)
            ]
            done = await browser_call(
                folder,
                page_url(origin, nodes[0], unique("alice"), room),
                page_url(origin, nodes[1], unique("bob"), room),
            )
        assert_exchanged(done)
    finally:
        redis.stop()
