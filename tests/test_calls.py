"""Calls (WebRTC signaling) on one node: addressed delivery, outsiders refused
on every field, resume within the grace gets the missed signals once each and
in order, the bad inputs of issue 16, TURN credentials that coturn accepts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import pytest

from tests.live import (
    GraphQLClient,
    LiveServer,
    Operation,
    WsClient,
    room_with,
    unique,
    ws_connect,
)
from tests.sse_client import TOKEN_HEADER, event_stream
from tests.test_sse import operate, reserve

BAN = "mutation($room: ID!, $user: ID!) { banMember(roomId: $room, userId: $user) }"
START = """
mutation($room: ID!, $meta: JSON) {
  startCall(roomId: $room, metadata: $meta) { id roomId startedBy endedAt metadata }
}
"""
JOIN = """
mutation($call: ID!, $session: ID) {
  joinCall(callId: $call, sessionId: $session) { userId sessionId joinedAt }
}
"""
LEAVE = "mutation($call: ID!) { leaveCall(callId: $call) }"
END = "mutation($call: ID!) { endCall(callId: $call) }"
SEND = """
mutation($call: ID!, $to: ID!, $kind: SignalKind!, $payload: JSON!, $from: ID) {
  sendSignal(input: {callId: $call, toSessionId: $to, kind: $kind, payload: $payload,
                     fromSessionId: $from})
}
"""
SIGNALS = """
subscription($call: ID!, $session: ID) {
  callSignals(callId: $call, sessionId: $session) {
    callId fromUserId fromSessionId kind payload
  }
}
"""
EVENTS = """
subscription($room: ID!) {
  callEvents(roomId: $room) { type call { id participants { sessionId } } participant { userId } }
}
"""
CALL = "query($id: ID!) { call(id: $id) { id participants { userId sessionId } } }"
CALLS = "query($room: ID!) { calls(roomId: $room) { id } }"
ICE = "query { iceServers { urls username credential expiresAt } }"

TURN_SECRET = "turn-test-secret"


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.conftest import TEST_SETTINGS

    settings = {
        **TEST_SETTINGS,
        # Room for a reconnect on a loaded machine (the resume test).
        "presence_grace": "3s",
        "max_call_participants": 3,
        "max_signal_size": 1024,
        "max_signals_per_second": 40,
        "stun_urls": ["stun:stun.example.org:3478"],
        "turn_urls": ["turn:turn.example.org:3478?transport=udp"],
        "turn_secret": TURN_SECRET,
        "turn_credential_ttl": "10m",
    }
    live = LiveServer(tmp_path_factory.mktemp("server"), settings).start()
    yield live
    live.stop()


async def ws_execute(ws: WsClient, query: str, **variables: Any) -> dict[str, Any]:
    """A mutation over the WebSocket (so it binds to that connection)."""
    op = await ws.subscribe(query, **variables)
    data = await op.next()
    done = await op.frame()
    assert done["type"] == "complete", done
    return data


async def ws_error(ws: WsClient, query: str, **variables: Any) -> dict[str, Any]:
    op = await ws.subscribe(query, **variables)
    frame = await op.frame()
    errors = frame["payload"]["errors"] if frame["type"] == "next" else frame["payload"]
    return errors[0]  # type: ignore[no-any-return]


@asynccontextmanager
async def in_call(server: LiveServer, user: str, call: str) -> AsyncIterator[tuple[WsClient, str]]:
    """A WebSocket of `user` joined to the call: (socket, its session)."""
    async with ws_connect(server, server.token(user)) as ws:
        joined = await ws_execute(ws, JOIN, call=call)
        yield ws, joined["joinCall"]["sessionId"]


class StartedCall(NamedTuple):
    alice_id: str
    bob_id: str
    alice: GraphQLClient
    bob: GraphQLClient
    room: str
    call: str


async def started_call(server: LiveServer, bobs: LiveServer | None = None) -> StartedCall:
    """Alice and Bob (fresh users) share a room; Alice has started a call in it.
    Bob's client talks to `bobs` (another node) if given."""
    alice_id, bob_id = unique("alice"), unique("bob")
    alice, bob = server.client(alice_id), (bobs or server).client(bob_id)
    room = await room_with(alice, bob)
    call = (await alice.execute(START, room=room))["startCall"]["id"]
    return StartedCall(alice_id, bob_id, alice, bob, room, call)


async def signal(sub: Operation) -> dict[str, Any]:
    got: dict[str, Any] = (await sub.next())["callSignals"]
    return got


async def test_a_signal_reaches_only_the_session_it_is_addressed_to(server: LiveServer) -> None:
    alice_id, bob_id = unique("alice"), unique("bob")
    alice, bob = server.client(alice_id), server.client(bob_id)
    room = await room_with(alice, bob)
    call = (await alice.execute(START, room=room, meta={"kind": "audio"}))["startCall"]
    assert call["startedBy"] == alice_id and call["metadata"] == {"kind": "audio"}
    async with (
        in_call(server, alice_id, call["id"]) as (a_ws, a_session),
        in_call(server, bob_id, call["id"]) as (b1_ws, b1_session),
        in_call(server, bob_id, call["id"]) as (b2_ws, b2_session),
    ):
        a_sub = await a_ws.subscribe(SIGNALS, call=call["id"])
        b1_sub = await b1_ws.subscribe(SIGNALS, call=call["id"])
        b2_sub = await b2_ws.subscribe(SIGNALS, call=call["id"])
        await server.wait_subscribers(3)
        offer = {"type": "offer", "sdp": "v=0 offer"}
        await ws_execute(a_ws, SEND, call=call["id"], to=b2_session, kind="OFFER", payload=offer)
        assert await signal(b2_sub) == {
            "callId": call["id"],
            "fromUserId": alice_id,
            "fromSessionId": a_session,
            "kind": "OFFER",
            "payload": offer,
        }
        answer = {"type": "answer", "sdp": "v=0 answer"}
        await ws_execute(b2_ws, SEND, call=call["id"], to=a_session, kind="ANSWER", payload=answer)
        got = await signal(a_sub)
        assert (got["fromSessionId"], got["kind"], got["payload"]) == (b2_session, "ANSWER", answer)
        # A marker to b1 proves b1 heard nothing before it (delivery is in order).
        await ws_execute(a_ws, SEND, call=call["id"], to=b1_session, kind="HANGUP", payload={})
        assert (await signal(b1_sub))["kind"] == "HANGUP"
        a_sub.assert_quiet()
        b2_sub.assert_quiet()
        listed = (await bob.execute(CALL, id=call["id"]))["call"]["participants"]
        assert {p["sessionId"] for p in listed} == {a_session, b1_session, b2_session}
        assert (await bob.execute(CALLS, room=room))["calls"] == [{"id": call["id"]}]
        for sub in (a_sub, b1_sub, b2_sub):
            await sub.complete()
    await server.wait_subscribers(0)


async def test_call_events_tell_started_joined_left_ended(server: LiveServer) -> None:
    alice_id, bob_id = unique("alice"), unique("bob")
    alice, bob = server.client(alice_id), server.client(bob_id)
    room = await room_with(alice, bob)
    async with ws_connect(server, bob.token) as watcher:
        events = await watcher.subscribe(EVENTS, room=room)
        await server.wait_subscribers(1)
        call = (await alice.execute(START, room=room))["startCall"]["id"]
        assert (await events.next())["callEvents"]["type"] == "started"
        async with in_call(server, alice_id, call) as (a_ws, _):
            joined = (await events.next())["callEvents"]
            assert (joined["type"], joined["participant"]) == ("joined", {"userId": alice_id})
            assert await ws_execute(a_ws, LEAVE, call=call) == {"leaveCall": True}
            left = (await events.next())["callEvents"]
            assert (left["type"], left["participant"]) == ("left", {"userId": alice_id})
            # The last participant left: the call ends.
            assert (await events.next())["callEvents"]["type"] == "ended"
        await events.complete()
    await server.wait_subscribers(0)


async def test_an_outsider_is_refused_on_every_field(server: LiveServer) -> None:
    alice_id, eve_id = unique("alice"), unique("eve")
    alice, eve = server.client(alice_id), server.client(eve_id)
    for private in (False, True):
        room = await room_with(alice, private=private)
        call = (await alice.execute(START, room=room))["startCall"]["id"]
        async with in_call(server, alice_id, call) as (_, a_session):
            assert (await eve.execute(CALL, id=call)) == {"call": None}
            assert (await eve.error(CALLS, room=room)).code in ("NOT_FOUND", "FORBIDDEN")
            assert (await eve.error(START, room=room)).code in ("NOT_FOUND", "FORBIDDEN")
            assert (await eve.error(JOIN, call=call)).code == "NOT_FOUND"
            assert (await eve.error(LEAVE, call=call)).code == "NOT_FOUND"
            assert (await eve.error(END, call=call)).code == "NOT_FOUND"
            sent = await eve.error(SEND, call=call, to=a_session, kind="OFFER", payload={})
            assert sent.code == "NOT_FOUND"
            async with ws_connect(server, eve.token) as ws:
                err = await ws_error(ws, SIGNALS, call=call, session=a_session)
                assert err["extensions"]["code"] == "NOT_FOUND"
                err = await ws_error(ws, EVENTS, room=room)
                assert err["extensions"]["code"] in ("NOT_FOUND", "FORBIDDEN")
            ice = (await eve.execute(ICE))["iceServers"]
            assert all(s["credential"] is None for s in ice)
    await server.wait_subscribers(0)


async def test_a_banned_participant_is_removed_and_their_signals_end(server: LiveServer) -> None:
    alice_id, bob_id, alice, _bob, room, call = await started_call(server)
    async with in_call(server, alice_id, call), in_call(server, bob_id, call) as (b_ws, b_s):
        sub = await b_ws.subscribe(SIGNALS, call=call)
        await server.wait_subscribers(1)
        await alice.execute(BAN, room=room, user=bob_id)
        frame = await sub.frame()
        assert frame["type"] == "error" or frame["payload"].get("errors"), frame
        listed = (await alice.execute(CALL, id=call))["call"]["participants"]
        assert b_s not in {p["sessionId"] for p in listed}
    await server.wait_subscribers(0)


async def test_resume_within_the_grace_gets_missed_signals_once_in_order(
    server: LiveServer,
) -> None:
    alice_id, bob_id, _alice, bob, _room, call = await started_call(server)
    async with in_call(server, alice_id, call) as (a_ws, _):
        async with in_call(server, bob_id, call) as (b_ws, b_session):
            sub = await b_ws.subscribe(SIGNALS, call=call)
            await server.wait_subscribers(1)
            first = {"candidate": "c0"}
            await ws_execute(
                a_ws, SEND, call=call, to=b_session, kind="ICE_CANDIDATE", payload=first
            )
            assert (await signal(sub))["payload"] == first
        # Bob's socket dropped; within the grace (presence_grace: 3s here)
        # Alice keeps signalling.
        sent = [{"candidate": f"c{i}"} for i in range(1, 6)]
        for payload in sent:
            await ws_execute(
                a_ws, SEND, call=call, to=b_session, kind="ICE_CANDIDATE", payload=payload
            )
        async with ws_connect(server, bob.token) as back:
            resumed = await ws_execute(back, JOIN, call=call, session=b_session)
            assert resumed["joinCall"]["sessionId"] == b_session
            sub = await back.subscribe(SIGNALS, call=call)
            got = [(await signal(sub))["payload"] for _ in sent]
            assert got == sent
            # Once each: a marker sent now is the next thing it gets.
            await ws_execute(a_ws, SEND, call=call, to=b_session, kind="HANGUP", payload={})
            assert (await signal(sub))["kind"] == "HANGUP"
            await sub.complete()
    await server.wait_subscribers(0)


async def test_a_dropped_session_leaves_after_the_grace_and_the_call_ends(
    server: LiveServer,
) -> None:
    alice_id = unique("alice")
    alice = server.client(alice_id)
    room = await room_with(alice)
    call = (await alice.execute(START, room=room))["startCall"]["id"]
    async with ws_connect(server, alice.token) as watcher:
        events = await watcher.subscribe(EVENTS, room=room)
        await server.wait_subscribers(1)
        async with in_call(server, alice_id, call):
            assert (await events.next())["callEvents"]["type"] == "joined"
        assert (await events.next())["callEvents"]["type"] == "left"
        assert (await events.next())["callEvents"]["type"] == "ended"
        await events.complete()
    assert (await alice.execute(CALLS, room=room))["calls"] == []
    await server.wait_subscribers(0)


async def test_bad_signals_are_refused_with_their_codes(server: LiveServer) -> None:
    alice_id, bob_id, alice, bob, _room, call = await started_call(server)
    async with (
        in_call(server, alice_id, call) as (a_ws, a_s),
        in_call(server, bob_id, call) as (_, b_s),
    ):
        nobody = await ws_error(a_ws, SEND, call=call, to="nobody", kind="OFFER", payload={})
        assert nobody["extensions"]["code"] == "NOT_FOUND"
        big = {"sdp": "x" * 2000}
        too_big = await ws_error(a_ws, SEND, call=call, to=b_s, kind="OFFER", payload=big)
        assert too_big["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
        unknown = SEND.replace("kind: $kind", "kind: WHATEVER").replace("$kind: SignalKind!, ", "")
        kind = await alice.error(unknown, call=call, to=b_s, payload={})
        assert "SignalKind" in str(kind.errors)
        # As a variable too: refused with the reason, no internal error.
        kind = await alice.error(SEND, call=call, to=b_s, kind="WHATEVER", payload={})
        assert "does not exist in 'SignalKind'" in kind.errors[0]["message"], kind.errors
        async with in_call(server, bob_id, call):
            full = await alice.error(JOIN, call=call)
            assert full.code == "LIMIT_EXCEEDED"
        assert (await bob.error(END, call=call)).code == "FORBIDDEN"
        assert await ws_execute(a_ws, END, call=call) == {"endCall": True}
        after = await ws_error(a_ws, SEND, call=call, to=b_s, kind="OFFER", payload={})
        assert after["extensions"]["code"] == "BAD_USER_INPUT" and "ended" in after["message"]
        assert a_s
    await server.wait_subscribers(0)


async def test_signals_are_rate_limited(server: LiveServer) -> None:
    alice_id, bob_id, _alice, _bob, _room, call = await started_call(server)
    async with (
        in_call(server, alice_id, call) as (a_ws, _),
        in_call(server, bob_id, call) as (_, b_s),
    ):
        codes = []
        for _ in range(60):
            op = await a_ws.subscribe(SEND, call=call, to=b_s, kind="ICE_CANDIDATE", payload={})
            frame = await op.frame()
            if frame["type"] == "next" and frame["payload"].get("errors"):
                codes.append(frame["payload"]["errors"][0]["extensions"]["code"])
        assert "RATE_LIMITED" in codes


async def test_turn_credentials_only_in_a_live_call_and_coturn_verifies_them(
    server: LiveServer,
) -> None:
    alice_id = unique("alice")
    alice = server.client(alice_id)
    room = await room_with(alice)
    ice = (await alice.execute(ICE))["iceServers"]
    assert ice == [
        {
            "urls": ["stun:stun.example.org:3478"],
            "username": None,
            "credential": None,
            "expiresAt": None,
        }
    ]
    call = (await alice.execute(START, room=room))["startCall"]["id"]
    before = time.time()
    turn = (await alice.execute(ICE))["iceServers"][1]
    assert turn["urls"] == ["turn:turn.example.org:3478?transport=udp"]
    expiry, user = turn["username"].split(":", 1)
    assert user == alice_id
    assert before + 600 - 2 <= int(expiry) <= time.time() + 600 + 1
    digest = hmac.new(TURN_SECRET.encode(), turn["username"].encode(), hashlib.sha1).digest()
    assert turn["credential"] == base64.b64encode(digest).decode()
    await alice.execute(END, call=call)
    assert len((await alice.execute(ICE))["iceServers"]) == 1


def test_turn_urls_without_turn_secret_refuse_to_start(tmp_path: Any) -> None:
    import subprocess
    import sys

    from tests.live import ROOT

    config = tmp_path / "config.yaml"
    config.write_text('turn_urls: ["turn:turn.example.org:3478"]\nbackend: memory\n')
    done = subprocess.run(
        [sys.executable, "server.py", "--config", str(config), "--data-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert b"turn_secret" in done.stderr + done.stdout


async def test_an_http_client_binds_its_session_with_call_signals_over_sse(
    server: LiveServer,
) -> None:
    """Apollo's split link: mutations over HTTP, the subscription over SSE."""
    alice_id, _bob_id, alice, bob, _room, call = await started_call(server)
    b_session = (await bob.execute(JOIN, call=call))["joinCall"]["sessionId"]
    async with in_call(server, alice_id, call) as (a_ws, a_session):
        body = {"query": SIGNALS, "variables": {"call": call, "session": b_session}}
        async with event_stream(server, bob.token, json=body) as events:
            await server.wait_subscribers(1)
            offer = {"type": "offer", "sdp": "v=0"}
            await ws_execute(a_ws, SEND, call=call, to=b_session, kind="OFFER", payload=offer)
            got = (await events.expect("next"))["data"]["callSignals"]
            assert (got["fromSessionId"], got["payload"]) == (a_session, offer)
            # Bob answers over HTTP: his one session is the sender.
            sub = await a_ws.subscribe(SIGNALS, call=call)
            await server.wait_subscribers(2)
            answer = {"type": "answer", "sdp": "v=0"}
            await bob.execute(SEND, call=call, to=a_session, kind="ANSWER", payload=answer)
            got = await signal(sub)
            assert (got["fromSessionId"], got["payload"]) == (b_session, answer)
            await sub.complete()
        # Another user cannot take bob's session.
        async with event_stream(server, alice.token, json=body) as events:
            refused = await events.expect("next")
            assert refused["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    await server.wait_subscribers(0)


async def test_joining_over_an_sse_single_connection_stream_binds_the_session(
    server: LiveServer,
) -> None:
    alice_id, _bob_id, _alice, bob, _room, call = await started_call(server)
    stream_token = await reserve(server, bob.token)
    async with (
        in_call(server, alice_id, call) as (a_ws, _),
        event_stream(server, bob.token, method="GET", headers={TOKEN_HEADER: stream_token}) as ev,
    ):
        joined = await operate(
            server, bob.token, stream_token, "join", {"query": JOIN, "variables": {"call": call}}
        )
        assert joined.status_code == 202, joined.text
        b_session = (await ev.expect("next"))["payload"]["data"]["joinCall"]["sessionId"]
        assert await ev.expect("complete") == {"id": "join"}
        # No sessionId: the stream's own session.
        body = {"query": SIGNALS, "variables": {"call": call}}
        assert (await operate(server, bob.token, stream_token, "sig", body)).status_code == 202
        await server.wait_subscribers(1)
        await ws_execute(a_ws, SEND, call=call, to=b_session, kind="OFFER", payload={"sdp": "x"})
        got = await ev.expect("next")
        assert got["id"] == "sig" and got["payload"]["data"]["callSignals"]["kind"] == "OFFER"
    await server.wait_subscribers(0)
