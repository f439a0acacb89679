"""A WebRTC peer (aiortc) that signals through the server's calls.

Two roles, as in the README's "Calls" sequence:

- `--answer`: start a call in `--room` (or join `--call`), then answer the
  first OFFER that arrives, and reply to the data-channel message it gets
  with `--text`;
- `--offer --call ID`: join the call, send an OFFER to the session already
  in it, and send `--text` over the data channel once it opens.

Both print one JSON line per step ({"step": "joined", ...}, {"step":
"received", "text": ...}) and exit once they have sent and received one
data-channel message. Over one WebSocket (gql), so the session is bound to
it: `callSignals` gets the signals addressed to this peer only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from contextlib import aclosing
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp
from gql import Client, gql
from gql.client import AsyncClientSession
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport

START = gql("mutation Start($room: ID!) { startCall(roomId: $room) { id } }")
JOIN_ROOM = gql("mutation JoinRoom($room: ID!) { joinRoom(roomId: $room) { id } }")
CREATE_ROOM = gql("""
mutation CreateRoom($room: ID!) { createRoom(input: {id: $room, name: "call"}) { id } }
""")
JOIN = gql("""
mutation Join($call: ID!) { joinCall(callId: $call) { sessionId } }
""")
CALL = gql("""
query Call($call: ID!) { call(id: $call) { participants { sessionId } } }
""")
SEND = gql("""
mutation Send($call: ID!, $to: ID!, $kind: SignalKind!, $payload: JSON!) {
  sendSignal(input: {callId: $call, toSessionId: $to, kind: $kind, payload: $payload})
}
""")
SIGNALS = gql("""
subscription Signals($call: ID!) {
  callSignals(callId: $call) { fromSessionId kind payload }
}
""")


def say(step: str, **fields: Any) -> None:
    print(json.dumps({"step": step, **fields}), flush=True)


class Peer:
    def __init__(self, session: AsyncClientSession, call_id: str, text: str) -> None:
        self.session = session
        self.call_id = call_id
        self.text = text
        self.pc = RTCPeerConnection()
        self.received: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.sent = asyncio.Event()

    async def signal(self, to: str, kind: str, payload: Any) -> None:
        variables = {"call": self.call_id, "to": to, "kind": kind, "payload": payload}
        await self.session.execute(SEND, variable_values=variables)

    def use(self, channel: RTCDataChannel, *, speak_first: bool) -> None:
        def send() -> None:
            channel.send(self.text)
            self.sent.set()

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            if not self.received.done():
                self.received.set_result(str(message))
            if not speak_first:
                send()

        if speak_first:
            if channel.readyState == "open":
                send()
            else:
                channel.on("open", send)

    async def description(self) -> dict[str, str]:
        # aiortc gathers every candidate before it returns: they are in the SDP.
        local = self.pc.localDescription
        return {"type": local.type, "sdp": local.sdp}

    async def on_signal(self, signal: dict[str, Any]) -> bool:
        """Handle one signal; True once the exchange is over."""
        kind, payload, sender = signal["kind"], signal["payload"], signal["fromSessionId"]
        if kind == "OFFER":
            await self.pc.setRemoteDescription(RTCSessionDescription(**payload))
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            await self.signal(sender, "ANSWER", await self.description())
        elif kind == "ANSWER":
            await self.pc.setRemoteDescription(RTCSessionDescription(**payload))
        elif kind == "ICE_CANDIDATE" and payload.get("candidate"):
            candidate = candidate_from_sdp(payload["candidate"].removeprefix("candidate:"))
            candidate.sdpMid = payload.get("sdpMid")
            candidate.sdpMLineIndex = payload.get("sdpMLineIndex")
            await self.pc.addIceCandidate(candidate)
        return kind == "HANGUP"


async def main(args: argparse.Namespace) -> None:
    transport = WebsocketsTransport(
        url=args.url, init_payload={"Authorization": f"Bearer {args.token}"}
    )
    async with Client(transport=transport) as session:
        call_id = args.call
        room = {"room": args.room}
        try:
            await session.execute(JOIN_ROOM, variable_values=room)
        except TransportQueryError:
            await session.execute(CREATE_ROOM, variable_values=room)
        if call_id is None:
            started = await session.execute(START, variable_values={"room": args.room})
            call_id = started["startCall"]["id"]
        joined = await session.execute(JOIN, variable_values={"call": call_id})
        me = joined["joinCall"]["sessionId"]
        peer = Peer(session, call_id, args.text)
        signals = session.subscribe(SIGNALS, variable_values={"call": call_id})
        reader = asyncio.create_task(read_signals(peer, signals))
        say("joined", callId=call_id, sessionId=me)
        if args.offer:
            call = await session.execute(CALL, variable_values={"call": call_id})
            other = next(
                p["sessionId"] for p in call["call"]["participants"] if p["sessionId"] != me
            )
            peer.use(peer.pc.createDataChannel("chat"), speak_first=True)
            await peer.pc.setLocalDescription(await peer.pc.createOffer())
            await peer.signal(other, "OFFER", await peer.description())
        else:

            @peer.pc.on("datachannel")
            def on_channel(channel: RTCDataChannel) -> None:
                peer.use(channel, speak_first=False)

        text = await asyncio.wait_for(peer.received, args.timeout)
        say("received", text=text)
        await asyncio.wait_for(peer.sent.wait(), args.timeout)
        # Let the reply leave before the connection closes.
        await asyncio.sleep(0.5)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await peer.pc.close()


async def read_signals(peer: Peer, signals: Any) -> None:
    async with aclosing(signals) as stream:
        async for result in stream:
            if await peer.on_signal(result["callSignals"]):
                return


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="ws://host:port/graphql")
    parser.add_argument("--token", required=True)
    parser.add_argument("--room", required=True, help="the room: joined, or made if new")
    parser.add_argument("--call", help="the call to join")
    parser.add_argument("--offer", action="store_true", help="call the peer already in --call")
    parser.add_argument("--answer", action="store_true", help="answer the first offer")
    parser.add_argument("--text", default="hello", help="the data-channel message to send")
    parser.add_argument("--timeout", type=float, default=30.0)
    asyncio.run(main(parser.parse_args()))
