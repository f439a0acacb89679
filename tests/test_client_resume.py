"""Resuming after a reconnect: the resume map in connection_init (README
"Resuming after a reconnect") and the client helpers in client-examples/.

Every stock client (Apollo Client, urql, graphql-ws, gql on both
subprotocols) follows a room while the server is killed and restarted
mid-stream; messages sent before the kill, around it and before the client
is back must each arrive exactly once, in order.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from tests.live import TIMEOUT, GraphQLClient, LiveServer, Operation, WsClient, unique
from tests.tools import EXAMPLES, Script, node, npm_ci

CREATE = 'mutation($id: ID!) { createRoom(input: {id: $id, name: "Room"}) { id } }'
SEND = """
mutation($room: ID!, $text: String!, $thread: ID) {
  sendMessage(input: {roomId: $room, data: {text: $text}, threadId: $thread}) { id cursor }
}
"""
ROOM_MESSAGES = """
subscription($room: ID!, $after: String, $thread: ID) {
  roomMessages(roomId: $room, after: $after, threadId: $thread) { type data threadId cursor }
}
"""


async def send_texts(client: GraphQLClient, room: str, texts: list[str]) -> list[str]:
    """Send each text, in order; their cursors."""
    cursors = []
    for text in texts:
        sent = await client.execute(SEND, room=room, text=text)
        cursors.append(sent["sendMessage"]["cursor"])
    return cursors


# --- the resume map over the wire ---------------------------------------------


def resume_map(*entries: dict[str, str]) -> dict[str, Any]:
    return {"version": 1, "roomMessages": list(entries)}


@asynccontextmanager
async def connection(
    live: LiveServer, token: str, resume: object, subprotocol: str = "graphql-transport-ws"
) -> AsyncIterator[ClientConnection]:
    """A WebSocket whose connection_init carries `resume` (the ack not read yet)."""
    async with websockets.connect(
        live.ws_url, subprotocols=[Subprotocol(subprotocol)], open_timeout=TIMEOUT
    ) as ws:
        payload = {"Authorization": f"Bearer {token}", "resume": resume}
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        yield ws


@asynccontextmanager
async def resumed(live: LiveServer, token: str, resume: object) -> AsyncIterator[WsClient]:
    """An acknowledged graphql-transport-ws connection that sent `resume`."""
    async with connection(live, token, resume) as ws:
        ack = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert ack["type"] == "connection_ack", ack
        client = WsClient(ws)
        try:
            yield client
        finally:
            await client.close()


async def texts(operation: Operation, count: int) -> list[str]:
    return [m["data"]["text"] for m in await operation.take(count, "roomMessages")]


async def test_resume_map_moves_after_forward_never_back(server: LiveServer) -> None:
    user, room = unique("alice"), unique("room")
    alice = server.client(user)
    await alice.execute(CREATE, id=room)
    c1, c2, c3, _ = await send_texts(alice, room, ["m1", "m2", "m3", "m4"])
    token = alice.token or ""
    async with resumed(server, token, resume_map({"roomId": room, "after": c2})) as ws:
        # The client last received m2: from there, though it asks from m1.
        behind = await ws.subscribe(ROOM_MESSAGES, room=room, after=c1)
        assert await texts(behind, 2) == ["m3", "m4"]
        # Its own `after` is later: that one counts.
        ahead = await ws.subscribe(ROOM_MESSAGES, room=room, after=c3)
        assert await texts(ahead, 1) == ["m4"]
        # No `after` (live only): from the resume cursor.
        live_only = await ws.subscribe(ROOM_MESSAGES, room=room)
        assert await texts(live_only, 2) == ["m3", "m4"]
        # A thread's entry is not the room's: the room-wide subscription keeps its own.
        await server.wait_subscribers(3)
        await send_texts(alice, room, ["m5"])
        for operation in (behind, ahead, live_only):
            assert await texts(operation, 1) == ["m5"]
            operation.assert_quiet()
    thread_only = resume_map({"roomId": room, "threadId": "t1", "after": c3})
    async with resumed(server, token, thread_only) as ws:
        room_wide = await ws.subscribe(ROOM_MESSAGES, room=room, after=c1)
        assert await texts(room_wide, 4) == ["m2", "m3", "m4", "m5"]


async def test_resumed_subscription_does_not_join_a_live_only_group(server: LiveServer) -> None:
    """The same document and variables as a live-only shared group; resumed,
    it replays on its own (joining, it would have missed m2)."""
    user, room = unique("alice"), unique("room")
    alice = server.client(user)
    await alice.execute(CREATE, id=room)
    token = alice.token or ""
    async with resumed(server, token, None) as first:
        shared = await first.subscribe(ROOM_MESSAGES, room=room)
        await server.wait_subscribers(1)
        c1, _ = await send_texts(alice, room, ["m1", "m2"])
        assert await texts(shared, 2) == ["m1", "m2"]
        async with resumed(server, token, resume_map({"roomId": room, "after": c1})) as second:
            resuming = await second.subscribe(ROOM_MESSAGES, room=room)
            assert await texts(resuming, 1) == ["m2"]
            await server.wait_subscribers(2)
            await send_texts(alice, room, ["m3"])
            assert await texts(resuming, 1) == ["m3"]
            assert await texts(shared, 1) == ["m3"]


async def test_resume_map_is_ignored_without_history(
    make_server: type[LiveServer], tmp_path: Path
) -> None:
    live = make_server(tmp_path / "server", {"enable_message_history": False}).start()
    user, room = unique("alice"), unique("room")
    alice = live.client(user)
    await alice.execute(CREATE, id=room)
    c1, _ = await send_texts(alice, room, ["m1", "m2"])
    async with resumed(live, alice.token or "", resume_map({"roomId": room, "after": c1})) as ws:
        operation = await ws.subscribe(ROOM_MESSAGES, room=room)
        await live.wait_subscribers(1)
        await send_texts(alice, room, ["m3"])
        assert await texts(operation, 1) == ["m3"]  # live, no replay, no error


MALFORMED = {
    "not an object": ("x", "must be an object"),
    "no version": ({"roomMessages": []}, "version must be 1"),
    "another version": ({"version": 2, "roomMessages": []}, "version must be 1"),
    "version true": ({"version": True, "roomMessages": []}, "version must be 1"),
    "unknown key": ({"version": 1, "channelMessages": {}}, "unknown key 'channelMessages'"),
    "not a list": ({"version": 1, "roomMessages": {"r": "e:1"}}, "roomMessages must be a list"),
    "too many": (
        resume_map(*({"roomId": f"r{i}", "after": "e:1"} for i in range(101))),
        "more than 100 entries",
    ),
    "bad room id": (resume_map({"roomId": "r 1", "after": "e:1"}), "ids are 1 to 64"),
    "bad thread id": (
        resume_map({"roomId": "r", "threadId": "x" * 65, "after": "e:1"}),
        "ids are 1 to 64",
    ),
    "bad cursor": (resume_map({"roomId": "r", "after": "e1"}), "malformed cursor"),
    "no cursor": (resume_map({"roomId": "r"}), "roomId and after must be strings"),
    "extra field": (
        resume_map({"roomId": "r", "after": "e:1", "before": "e:2"}),
        "must be an object with roomId",
    ),
    "repeated": (
        resume_map({"roomId": "r", "after": "e:1"}, {"roomId": "r", "after": "e:2"}),
        "roomMessages[1] repeats",
    ),
}


@pytest.mark.parametrize("subprotocol", ["graphql-transport-ws", "graphql-ws"])
@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_resume_map_is_refused(
    server: LiveServer, case: str, subprotocol: str
) -> None:
    resume, problem = MALFORMED[case]
    user = unique("alice")
    token = server.token(user)
    async with connection(server, token, resume, subprotocol) as ws:
        if subprotocol == "graphql-ws":  # the legacy protocol says why in a frame first
            frame = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            assert frame["type"] == "connection_error"
            assert frame["payload"]["extensions"]["code"] == "BAD_USER_INPUT"
            assert problem in frame["payload"]["message"]
        with pytest.raises(ConnectionClosed) as closed:
            raise AssertionError(f"expected a close, got {await ws.recv()!r}")
    rcvd = closed.value.rcvd
    assert rcvd is not None and rcvd.code == 4400
    assert rcvd.reason.startswith("BAD_USER_INPUT: connectionParams.resume"), rcvd.reason
    assert problem in rcvd.reason, rcvd.reason
    # The refused connection held nothing: the user connects again at once.
    async with resumed(server, token, resume_map()):
        pass


# --- stock clients, server killed and restarted mid-stream -------------------

CLIENTS = ["apollo", "urql", "graphql-ws", "gql", "gql-legacy"]


def client_args(
    client: str, live: LiveServer, token: str, room: str, count: int
) -> tuple[list[str], Path]:
    """The example's command line (it prints each message, ends after `count`
    MESSAGE messages) and its folder."""
    common = ["--token", token, "--room", room, "--count", str(count)]
    if client in ("apollo", "urql"):
        script = f"{client}-chat.mjs"
        return [node(), script, "--url", f"{live.url}/graphql", *common], npm_ci(EXAMPLES / "node")
    if client == "graphql-ws":
        return [node(), "ws-follow.mjs", "--url", live.ws_url, *common], npm_ci(EXAMPLES / "node")
    subprotocol = "graphql-ws" if client == "gql-legacy" else "graphql-transport-ws"
    args = [sys.executable, "follow.py", "--url", live.ws_url, *common]
    return [*args, "--subprotocol", subprotocol], EXAMPLES / "python"


async def subscribed(live: LiveServer, script: Script) -> None:
    """Wait until the script's subscription is live; fail at once if it ends."""
    waiting = asyncio.ensure_future(live.wait_subscribers(1, timeout=30))
    ended = asyncio.ensure_future(script.process.wait())
    try:
        await asyncio.wait((waiting, ended), return_when=asyncio.FIRST_COMPLETED)
    finally:
        ended.cancel()
    if not waiting.done():
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        raise AssertionError(f"the client ended before subscribing: {await script.stderr()}")
    waiting.result()


async def messages(script: Script, count: int, timeout: float) -> list[dict[str, Any]]:
    """The next `count` MESSAGE messages the script prints."""
    found: list[dict[str, Any]] = []
    while len(found) < count:
        line = await script.line(timeout)
        if line["type"] == "MESSAGE":
            found.append(line)
    return found


@pytest.mark.parametrize("client", CLIENTS)
async def test_client_resumes_after_a_server_restart(
    make_server: type[LiveServer], tmp_path: Path, client: str
) -> None:
    live = make_server(tmp_path / "server").start()  # sqlite: history survives the restart
    user, room = unique("alice"), unique("room")
    sender = live.client(user)
    await sender.execute(CREATE, id=room)
    before, around, after = ["a1", "a2", "a3"], ["b1", "b2"], ["c1", "c2", "c3"]
    total = len(before) + len(around) + len(after)
    args, folder = client_args(client, live, sender.token or "", room, total)
    script = await Script.start(args, folder, {})
    try:
        await subscribed(live, script)
        cursors = await send_texts(sender, room, before)
        received = await messages(script, len(before), 30)
        # Sent, then the server dies at once: the client may or may not have them.
        cursors += await send_texts(sender, room, around)
        live.stop(signal.SIGKILL)
        live.start()  # same port, same data folder
        # Before the client is back (its retry waits at least a second): only a
        # resume from the last cursor it received gets these to it.
        cursors += await send_texts(sender, room, after)
        received += await messages(script, total - len(before), 60)
        await script.finish()
    except BaseException:
        await script.kill()
        print(await script.stderr(), file=sys.stderr)
        raise
    assert [m["data"]["text"] for m in received] == before + around + after
    assert [m["cursor"] for m in received] == cursors
