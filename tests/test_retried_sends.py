"""A retried send costs nothing: the same `clientMessageId` again answers
with the message stored the first time, without a slot of
`max_messages_per_second`."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import TEST_SETTINGS
from tests.live import LiveServer, unique

CREATE = 'mutation($id: ID!) { createRoom(input: {id: $id, name: "Room"}) { id } }'
SEND = """
mutation($room: ID!, $text: String!, $cid: String) {
  sendMessage(input: {roomId: $room, data: {text: $text}, clientMessageId: $cid}) {
    id cursor data
  }
}
"""
HISTORY = "query($room: ID!) { history(roomId: $room, last: 10) { edges { node { id } } } }"


async def test_a_retry_of_a_stored_message_is_not_rate_limited(
    make_server: type[LiveServer], tmp_path: Path
) -> None:
    server = make_server(
        tmp_path / "server", {**TEST_SETTINGS, "max_messages_per_second": 1}
    ).start()
    alice = server.client(unique("alice"))
    room_id = unique("room")
    await alice.execute(CREATE, id=room_id)

    first = (await alice.execute(SEND, room=room_id, text="one", cid="c1"))["sendMessage"]
    # The rate (1 a second) is used up by that send...
    retried = (await alice.execute(SEND, room=room_id, text="one", cid="c1"))["sendMessage"]
    assert retried == first
    # ...as a new message shows: the retry went through without a slot.
    error = await alice.error(SEND, room=room_id, text="two", cid="c2")
    assert error.code == "RATE_LIMITED"
    history = (await alice.execute(HISTORY, room=room_id))["history"]["edges"]
    assert [e["node"]["id"] for e in history][-1] == first["id"]
    assert [e["node"]["id"] for e in history].count(first["id"]) == 1
