"""Others cannot use up your room quota: `max_rooms_per_user` counts the
rooms you created or joined yourself; rooms others add you to count apart,
against `max_room_additions_per_user`, which is refused to the adder."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import TEST_SETTINGS
from tests.live import LiveServer, unique

CREATE = 'mutation($id: ID!) { createRoom(input: {id: $id, name: "Room"}) { id } }'
ADD = "mutation($room: ID!, $user: ID!) { addMember(roomId: $room, userId: $user) { userId } }"
LEAVE = "mutation($id: ID!) { leaveRoom(roomId: $id) }"
JOIN = "mutation($id: ID!) { joinRoom(roomId: $id) { id } }"
MEMBERS = "query($id: ID!) { room(id: $id) { members { userId } } }"
MY_ROOMS = "query { rooms(mine: true) { id } }"

OWN = 4
ADDITIONS = 3


async def test_others_adding_you_never_use_up_your_own_rooms(
    make_server: type[LiveServer], tmp_path: Path
) -> None:
    server = make_server(
        tmp_path / "server",
        {
            **TEST_SETTINGS,
            "max_rooms_per_user": OWN,
            "max_room_additions_per_user": ADDITIONS,
        },
    ).start()
    victim_id = unique("victim")
    victim = server.client(victim_id)
    adders = [server.client(unique("mallory")) for _ in range(2)]
    theirs = [unique("theirs") for _ in range(ADDITIONS + 1)]
    for i, room_id in enumerate(theirs):
        await adders[i % 2].execute(CREATE, id=room_id)

    for i, room_id in enumerate(theirs[:ADDITIONS]):
        await adders[i % 2].execute(ADD, room=room_id, user=victim_id)
    last = len(theirs) - 1
    error = await adders[last % 2].error(ADD, room=theirs[last], user=victim_id)
    assert error.code == "LIMIT_EXCEEDED"
    assert error.errors[0]["extensions"]["setting"] == "max_room_additions_per_user"
    assert error.errors[0]["extensions"]["limit"] == ADDITIONS
    assert "max_room_additions_per_user" in str(error)
    members = (await adders[last % 2].execute(MEMBERS, id=theirs[last]))["room"]["members"]
    assert victim_id not in {m["userId"] for m in members}

    # The victim's own quota is whole: OWN rooms of their own, then no more.
    mine = [unique("mine") for _ in range(OWN)]
    for room_id in mine:
        await victim.execute(CREATE, id=room_id)
    assert (await victim.error(CREATE, id=unique("extra"))).code == "LIMIT_EXCEEDED"
    joined = {r["id"] for r in (await victim.execute(MY_ROOMS))["rooms"]}
    assert joined == {*mine, *theirs[:ADDITIONS]}

    # Leaving a room one was added to frees an addition, not an own room.
    await victim.execute(LEAVE, id=theirs[0])
    await adders[last % 2].execute(ADD, room=theirs[last], user=victim_id)
    assert (await victim.error(CREATE, id=unique("extra"))).code == "LIMIT_EXCEEDED"
    # Joining a public room oneself is one's own: the quota is full.
    assert (await victim.error(JOIN, id=theirs[0])).code == "LIMIT_EXCEEDED"
