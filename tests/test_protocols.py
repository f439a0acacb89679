"""The same room subscription over the legacy graphql-ws protocol (raw frames)
and through the `gql` client library; and the exported SDL matches the code."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import warnings
from typing import Any

import graphql
import pytest
import websockets
from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

from schema import SDL_PATH, export_sdl
from tests.live import ROOT, TIMEOUT, GraphQLClient, LiveServer, room_with, unique

# Protocol conformance: also with the library fast paths off (tests/conftest.py).
pytestmark = pytest.mark.both_paths

SEND = """
mutation($roomId: ID!, $text: String!) {
  sendMessage(input: {roomId: $roomId, data: {text: $text}}) { id type userId data cursor }
}
"""
ROOM_MESSAGES = """
subscription($roomId: ID!, $after: String) {
  roomMessages(roomId: $roomId, after: $after) { id type userId data cursor }
}
"""


async def send(client: GraphQLClient, room: str, text: str) -> dict[str, Any]:
    message: dict[str, Any] = (await client.execute(SEND, roomId=room, text=text))["sendMessage"]
    return message


# --- legacy graphql-ws (subscriptions-transport-ws) on raw frames -----------


class Legacy:
    """Frames of the legacy protocol; keep-alives (`ka`) are skipped."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        while True:
            frame: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            if frame["type"] != "ka":
                return frame


async def test_legacy_graphql_ws_protocol(server: LiveServer) -> None:
    alice_id, bob_id = unique("alice"), unique("bob")
    alice, bob = server.client(alice_id), server.client(bob_id)
    room = await room_with(alice, bob)
    async with websockets.connect(
        server.ws_url, subprotocols=[Subprotocol("graphql-ws")], open_timeout=TIMEOUT
    ) as ws:
        assert ws.subprotocol == "graphql-ws"
        legacy = Legacy(ws)
        await legacy.send(
            {"type": "connection_init", "payload": {"Authorization": f"Bearer {bob.token}"}}
        )
        assert await legacy.recv() == {"type": "connection_ack", "payload": {"userId": bob_id}}
        await legacy.send(
            {
                "type": "start",
                "id": "sub-1",
                "payload": {"query": ROOM_MESSAGES, "variables": {"roomId": room}},
            }
        )
        await server.wait_subscribers(1)
        sent = await send(alice, room, "over graphql-ws")
        assert await legacy.recv() == {
            "type": "data",
            "id": "sub-1",
            "payload": {"data": {"roomMessages": sent}},
        }
        assert sent["userId"] == alice_id

        await legacy.send({"type": "stop", "id": "sub-1"})
        assert await legacy.recv() == {"type": "complete", "id": "sub-1"}
        await server.wait_subscribers(0)

        # Errors of a subscription come as data with errors, then complete.
        await legacy.send(
            {
                "type": "start",
                "id": "sub-2",
                "payload": {"query": ROOM_MESSAGES, "variables": {"roomId": unique("nope")}},
            }
        )
        frame = await legacy.recv()
        assert (frame["type"], frame["id"]) == ("data", "sub-2")
        assert frame["payload"]["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        assert await legacy.recv() == {"type": "complete", "id": "sub-2"}

        # Resume after the first message: the one sent while away, then live.
        missed = await send(alice, room, "while away")
        await legacy.send(
            {
                "type": "start",
                "id": "sub-3",
                "payload": {
                    "query": ROOM_MESSAGES,
                    "variables": {"roomId": room, "after": sent["cursor"]},
                },
            }
        )
        replayed = await legacy.recv()
        assert replayed["payload"]["data"]["roomMessages"] == missed
        await legacy.send({"type": "connection_terminate"})
        with pytest.raises(websockets.ConnectionClosedOK):
            await legacy.recv()
    await server.wait_subscribers(0)


async def test_legacy_graphql_ws_rejects_a_bad_token(server: LiveServer) -> None:
    async with websockets.connect(
        server.ws_url, subprotocols=[Subprotocol("graphql-ws")], open_timeout=TIMEOUT
    ) as ws:
        legacy = Legacy(ws)
        await legacy.send({"type": "connection_init", "payload": {"Authorization": "Bearer nope"}})
        frame = await legacy.recv()
        assert frame["type"] == "connection_error", frame
        assert frame["payload"]["extensions"]["code"] == "UNAUTHENTICATED"
        with pytest.raises(websockets.ConnectionClosed):
            await legacy.recv()
    # The server keeps serving.
    client = server.client(unique("u"))
    assert (await client.execute("{ me }"))["me"]


# --- the gql client library -------------------------------------------------


@pytest.mark.parametrize(
    "subprotocol",
    [WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL, WebsocketsTransport.APOLLO_SUBPROTOCOL],
)
async def test_gql_subscribe_send_and_resume(server: LiveServer, subprotocol: str) -> None:
    alice_id, bob_id = unique("alice"), unique("bob")
    alice, bob = server.client(alice_id), server.client(bob_id)
    room = await room_with(alice, bob)
    transport = WebsocketsTransport(
        url=server.ws_url,
        init_payload={"Authorization": f"Bearer {bob.token}"},
        subprotocols=[subprotocol],
    )
    async with Client(transport=transport, fetch_schema_from_transport=False) as session:
        assert transport.subprotocol == subprotocol
        stream = session.subscribe(GraphQLRequest(ROOM_MESSAGES, variable_values={"roomId": room}))
        first = asyncio.ensure_future(stream.__anext__())
        await server.wait_subscribers(1)
        request = GraphQLRequest(SEND, variable_values={"roomId": room, "text": "one"})
        # The mutation goes over the same WebSocket, on both protocols.
        sent = (await session.execute(request))["sendMessage"]
        got = await asyncio.wait_for(first, TIMEOUT)
        assert got == {"roomMessages": sent}
        assert got["roomMessages"]["userId"] == bob_id
        await stream.aclose()
        await server.wait_subscribers(0)

        # Missed while not subscribed; then resume after the last one seen.
        missed = [await send(alice, room, text) for text in ("two", "three")]
        resumed = session.subscribe(
            GraphQLRequest(
                ROOM_MESSAGES,
                variable_values={"roomId": room, "after": got["roomMessages"]["cursor"]},
            )
        )
        replay = [(await asyncio.wait_for(resumed.__anext__(), TIMEOUT)) for _ in missed]
        assert [r["roomMessages"] for r in replay] == missed
        await server.wait_subscribers(1)
        live = await send(alice, room, "four")
        nxt = await asyncio.wait_for(resumed.__anext__(), TIMEOUT)
        assert nxt == {"roomMessages": live}
        await resumed.aclose()
    await server.wait_subscribers(0)


# --- the exported SDL -------------------------------------------------------

# The public contract of the issue (output types and root fields): renaming
# any of these breaks generated clients.
CONTRACT = """
type Message { id: ID! type: MessageType! event: String roomId: ID channelId: ID userId: ID!
               data: JSON metadata: JSON timestamp: DateTime! threadId: ID cursor: String! }
type Room { id: ID! name: String! description: String owner: ID! isPrivate: Boolean! metadata: JSON
            createdAt: DateTime! memberCount: Int! members: [RoomMember!]! myRole: RoomRole }
type RoomMember { userId: ID! role: RoomRole! joinedAt: DateTime! }
type Channel { id: ID! name: String! description: String isPrivate: Boolean! createdBy: ID!
               createdAt: DateTime! }
type Presence { userId: ID! status: PresenceStatus! statusText: String lastSeen: DateTime! }
type TypingEvent { roomId: ID! userId: ID! isTyping: Boolean! expiresAt: DateTime }
type MessageConnection { edges: [MessageEdge!]! pageInfo: PageInfo! }
type MessageEdge { cursor: String! node: Message! }
type PageInfo { hasNextPage: Boolean! hasPreviousPage: Boolean! startCursor: String
                endCursor: String }
type Query {
  me: ID!
  room(id: ID!): Room
  rooms(mine: Boolean): [Room!]!
  history(roomId: ID!, first: Int, after: String, last: Int, before: String, threadId: ID):
    MessageConnection!
  channel(id: ID!): Channel
  channels: [Channel!]!
  presence(userIds: [ID!]!): [Presence!]!
  roomPresence(roomId: ID!): [Presence!]!
  typingUsers(roomId: ID!): [ID!]!
}
type Mutation {
  createRoom(input: CreateRoomInput!): Room!
  updateRoom(id: ID!, input: UpdateRoomInput!): Room!
  deleteRoom(id: ID!): Boolean!
  joinRoom(roomId: ID!): Room!
  leaveRoom(roomId: ID!): Boolean!
  addMember(roomId: ID!, userId: ID!, role: RoomRole): RoomMember!
  removeMember(roomId: ID!, userId: ID!): Boolean!
  setMemberRole(roomId: ID!, userId: ID!, role: RoomRole!): RoomMember!
  banMember(roomId: ID!, userId: ID!): Boolean!
  unbanMember(roomId: ID!, userId: ID!): Boolean!
  sendMessage(input: SendMessageInput!): Message!
  createChannel(input: CreateChannelInput!): Channel!
  deleteChannel(id: ID!): Boolean!
  publish(input: PublishInput!): Message!
  setPresence(status: PresenceStatus!, statusText: String): Presence!
  startTyping(roomId: ID!): Boolean!
  stopTyping(roomId: ID!): Boolean!
}
type Subscription {
  roomMessages(roomId: ID!, after: String, threadId: ID): Message!
  typing(roomId: ID!): TypingEvent!
  presence(roomId: ID, userIds: [ID!]): Presence!
  channelMessages(channelId: ID!, filter: ChannelFilter): Message!
}
"""
ENUMS = {
    "MessageType": ["MESSAGE", "PRESENCE", "TYPING", "SYSTEM", "JOIN", "LEAVE", "ERROR"],
    "RoomRole": ["OWNER", "ADMIN", "MEMBER"],
    "PresenceStatus": ["ONLINE", "AWAY", "BUSY", "OFFLINE"],
}


def test_schema_file_matches_the_code() -> None:
    check = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "schema", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    exported = subprocess.run(
        [sys.executable, "-c", "import schema, sys; sys.stdout.write(schema.export_sdl())"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert exported.stdout == SDL_PATH.read_text()


def test_schema_builds_without_deprecation_warnings() -> None:
    """Building the schema in-process must not warn (filterwarnings = error)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sdl = export_sdl()
    assert sdl == SDL_PATH.read_text()


def test_schema_keeps_the_public_contract() -> None:
    built = graphql.build_schema(SDL_PATH.read_text())
    for definition in graphql.parse(CONTRACT).definitions:
        assert isinstance(definition, graphql.ObjectTypeDefinitionNode)
        type_ = built.get_type(definition.name.value)
        assert isinstance(type_, graphql.GraphQLObjectType), definition.name.value
        for field in definition.fields or ():
            where = f"{definition.name.value}.{field.name.value}"
            actual = type_.fields.get(field.name.value)
            assert actual is not None, f"{where} is missing"
            assert str(actual.type) == graphql.print_ast(field.type), where
            wanted_args = {a.name.value: graphql.print_ast(a.type) for a in field.arguments or ()}
            got_args = {n: str(a.type) for n, a in actual.args.items() if n in wanted_args}
            assert got_args == wanted_args, where
            # Arguments added beyond the contract must be optional.
            extra = [a for n, a in actual.args.items() if n not in wanted_args]
            assert not [a for a in extra if graphql.is_required_argument(a)], where
    for name, values in ENUMS.items():
        enum = built.get_type(name)
        assert isinstance(enum, graphql.GraphQLEnumType)
        assert list(enum.values) == values
    for scalar in ("DateTime", "JSON"):
        assert isinstance(built.get_type(scalar), graphql.GraphQLScalarType)
