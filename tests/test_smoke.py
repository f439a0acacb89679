"""The quick start works: a room, a message, a live subscriber."""

from __future__ import annotations

from tests.live import LiveServer, unique, ws_connect

SEND = """
mutation($id: ID!) { sendMessage(input: {roomId: $id, data: {text: "hi"}}) { cursor } }
"""
ROOM_MESSAGES = """
subscription($roomId: ID!, $after: String) {
  roomMessages(roomId: $roomId, after: $after) { type event userId data cursor }
}
"""


async def test_two_users_see_each_others_messages(server: LiveServer) -> None:
    room = unique("room")
    alice, bob = server.client(unique("alice")), server.client(unique("bob"))
    await alice.execute(
        'mutation($id: ID!) { createRoom(input: {name: "x", id: $id}) { id } }', id=room
    )
    await bob.execute("mutation($id: ID!) { joinRoom(roomId: $id) { id } }", id=room)

    async with ws_connect(server, bob.token) as ws:
        sub = await ws.subscribe(ROOM_MESSAGES, roomId=room)
        await server.wait_subscribers(1)
        sent = await alice.execute(SEND, id=room)
        got = (await sub.next())["roomMessages"]
        assert got["data"] == {"text": "hi"}
        assert got["cursor"] == sent["sendMessage"]["cursor"]
        assert got["type"] == "MESSAGE"
