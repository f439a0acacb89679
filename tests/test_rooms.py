"""Rooms end to end: roles, privacy, bans, joins and leaves, limits, bad ids.

Every refused request shows its error code and that nothing stored changed,
and the server keeps serving the others.
"""

from __future__ import annotations

from typing import Any

from tests.live import GraphQLClient, LiveServer, assert_not_found, ended_with, unique, ws_connect

ROOM_FIELDS = (
    "id name description owner isPrivate metadata memberCount myRole members { userId role }"
)

CREATE = f"""
mutation($input: CreateRoomInput!) {{ createRoom(input: $input) {{ {ROOM_FIELDS} }} }}
"""
ROOM = f"query($id: ID!) {{ room(id: $id) {{ {ROOM_FIELDS} }} }}"
ROOMS = "query($mine: Boolean) { rooms(mine: $mine) { id } }"
UPDATE = f"""
mutation($id: ID!, $input: UpdateRoomInput!) {{
  updateRoom(id: $id, input: $input) {{ {ROOM_FIELDS} }}
}}
"""
DELETE = "mutation($id: ID!) { deleteRoom(id: $id) }"
JOIN = "mutation($id: ID!) { joinRoom(roomId: $id) { id myRole memberCount } }"
LEAVE = "mutation($id: ID!) { leaveRoom(roomId: $id) }"
ADD = """
mutation($room: ID!, $user: ID!, $role: RoomRole) {
  addMember(roomId: $room, userId: $user, role: $role) { userId role }
}
"""
REMOVE = "mutation($room: ID!, $user: ID!) { removeMember(roomId: $room, userId: $user) }"
SET_ROLE = """
mutation($room: ID!, $user: ID!, $role: RoomRole!) {
  setMemberRole(roomId: $room, userId: $user, role: $role) { userId role }
}
"""
BAN = "mutation($room: ID!, $user: ID!) { banMember(roomId: $room, userId: $user) }"
UNBAN = "mutation($room: ID!, $user: ID!) { unbanMember(roomId: $room, userId: $user) }"
SEND = """
mutation($room: ID!, $text: String!) {
  sendMessage(input: {roomId: $room, data: {text: $text}}) { id cursor }
}
"""
HISTORY = """
query($room: ID!) {
  history(roomId: $room, first: 100) { edges { cursor node { type event userId data } } }
}
"""
ROOM_MESSAGES = """
subscription($room: ID!) { roomMessages(roomId: $room) { type event userId data cursor } }
"""


# --- helpers -------------------------------------------------------------------------


async def create_room(client: GraphQLClient, room_id: str, **fields: Any) -> dict[str, Any]:
    data = await client.execute(CREATE, input={"id": room_id, "name": "Room", **fields})
    room: dict[str, Any] = data["createRoom"]
    return room


async def room_as(client: GraphQLClient, room_id: str) -> dict[str, Any] | None:
    room: dict[str, Any] | None = (await client.execute(ROOM, id=room_id))["room"]
    return room


async def members(owner: GraphQLClient, room_id: str) -> dict[str, str]:
    room = await room_as(owner, room_id)
    assert room is not None
    return {m["userId"]: m["role"] for m in room["members"]}


async def history(client: GraphQLClient, room_id: str) -> list[tuple[str, str | None, str]]:
    data = await client.execute(HISTORY, room=room_id)
    return [
        (e["node"]["type"], e["node"]["event"], e["node"]["userId"])
        for e in data["history"]["edges"]
    ]


async def still_serving(server: LiveServer) -> None:
    """Another user can still create a room and post in it."""
    other = server.client(unique("other"))
    room_id = unique("alive")
    await create_room(other, room_id)
    sent = await other.execute(SEND, room=room_id, text="still here")
    assert sent["sendMessage"]["cursor"].endswith(":2")


# --- create, read, update, delete ------------------------------------------------------


async def test_creator_is_owner(server: LiveServer) -> None:
    alice_id = unique("alice")
    alice = server.client(alice_id)
    room_id = unique("room")
    room = await create_room(
        alice,
        room_id,
        name="  General  ",
        description="talk",
        metadata={"topic": "x", "n": [1, 2]},
    )
    assert room == {
        "id": room_id,
        "name": "General",
        "description": "talk",
        "owner": alice_id,
        "isPrivate": False,
        "metadata": {"topic": "x", "n": [1, 2]},
        "memberCount": 1,
        "myRole": "OWNER",
        "members": [{"userId": alice_id, "role": "OWNER"}],
    }
    assert await room_as(alice, room_id) == room
    # Another user sees the public room, with no role of their own.
    bob = server.client(unique("bob"))
    seen = await room_as(bob, room_id)
    assert seen is not None
    assert seen["myRole"] is None
    assert seen["memberCount"] == 1
    assert room_id in [r["id"] for r in (await bob.execute(ROOMS))["rooms"]]
    assert room_id not in [r["id"] for r in (await bob.execute(ROOMS, mine=True))["rooms"]]
    assert room_id in [r["id"] for r in (await alice.execute(ROOMS, mine=True))["rooms"]]


async def test_generated_id_when_none_given(server: LiveServer) -> None:
    alice = server.client(unique("alice"))
    room = (await alice.execute(CREATE, input={"name": "no id"}))["createRoom"]
    assert isinstance(room["id"], str) and len(room["id"]) >= 8
    assert (await room_as(alice, room["id"])) == room


async def test_update_needs_admin(server: LiveServer) -> None:
    owner_id, admin_id, member_id = unique("owner"), unique("admin"), unique("member")
    owner, admin, member = (server.client(u) for u in (owner_id, admin_id, member_id))
    room_id = unique("room")
    await create_room(owner, room_id, description="before")
    await owner.execute(ADD, room=room_id, user=admin_id, role="ADMIN")
    await member.execute(JOIN, id=room_id)

    error = await member.error(UPDATE, id=room_id, input={"name": "hijacked"})
    assert error.code == "FORBIDDEN"
    assert "ADMIN" in str(error)
    unchanged = await room_as(owner, room_id)
    assert unchanged is not None
    assert (unchanged["name"], unchanged["description"]) == ("Room", "before")

    updated = (await admin.execute(UPDATE, id=room_id, input={"name": "Renamed"}))["updateRoom"]
    assert (updated["name"], updated["description"], updated["owner"]) == (
        "Renamed",
        "before",
        owner_id,
    )
    updated = (
        await owner.execute(
            UPDATE, id=room_id, input={"description": "after", "metadata": {"a": 1}}
        )
    )["updateRoom"]
    assert (updated["name"], updated["description"], updated["metadata"]) == (
        "Renamed",
        "after",
        {"a": 1},
    )
    assert await room_as(member, room_id) == {**updated, "myRole": "MEMBER"}
    assert (await history(owner, room_id))[-2:] == [
        ("SYSTEM", "room.updated", admin_id),
        ("SYSTEM", "room.updated", owner_id),
    ]


async def test_update_with_empty_name_is_refused(server: LiveServer) -> None:
    owner = server.client(unique("owner"))
    room_id = unique("room")
    before = await create_room(owner, room_id)
    error = await owner.error(UPDATE, id=room_id, input={"name": "   "})
    assert error.code == "BAD_USER_INPUT"
    assert "name must not be empty" in str(error)
    assert await room_as(owner, room_id) == before


async def test_delete_only_owner_and_live_subscribers_end(server: LiveServer) -> None:
    owner_id, admin_id, member_id = unique("owner"), unique("admin"), unique("member")
    owner, admin, member = (server.client(u) for u in (owner_id, admin_id, member_id))
    room_id = unique("room")
    await create_room(owner, room_id)
    await owner.execute(ADD, room=room_id, user=admin_id, role="ADMIN")
    await member.execute(JOIN, id=room_id)
    await owner.execute(SEND, room=room_id, text="keep me")

    for client in (admin, member):
        error = await client.error(DELETE, id=room_id)
        assert error.code == "FORBIDDEN"
        assert "OWNER" in str(error)
    assert await members(owner, room_id) == {
        owner_id: "OWNER",
        admin_id: "ADMIN",
        member_id: "MEMBER",
    }
    assert len(await history(owner, room_id)) == 4

    async with ws_connect(server, member.token) as ws:
        sub = await ws.subscribe(ROOM_MESSAGES, room=room_id)
        await server.wait_subscribers(1)
        assert (await owner.execute(DELETE, id=room_id)) == {"deleteRoom": True}
        error_doc = await ended_with(sub)
        assert error_doc["extensions"]["code"] == "NOT_FOUND"
        assert room_id in error_doc["message"]
        await server.wait_subscribers(0)

    assert await room_as(owner, room_id) is None
    assert room_id not in [r["id"] for r in (await member.execute(ROOMS))["rooms"]]
    assert (await owner.error(HISTORY, room=room_id)).code == "NOT_FOUND"
    assert (await member.error(JOIN, id=room_id)).code == "NOT_FOUND"
    assert (await owner.error(DELETE, id=room_id)).code == "NOT_FOUND"
    await still_serving(server)


# --- joining and privacy ---------------------------------------------------------------


async def test_join_public_room(server: LiveServer) -> None:
    owner_id, bob_id = unique("owner"), unique("bob")
    owner, bob = server.client(owner_id), server.client(bob_id)
    room_id = unique("room")
    await create_room(owner, room_id)
    joined = (await bob.execute(JOIN, id=room_id))["joinRoom"]
    assert joined == {"id": room_id, "myRole": "MEMBER", "memberCount": 2}
    # Joining again is idempotent: no second membership, no second JOIN message.
    again = (await bob.execute(JOIN, id=room_id))["joinRoom"]
    assert again == joined
    assert await members(owner, room_id) == {owner_id: "OWNER", bob_id: "MEMBER"}
    assert await history(bob, room_id) == [
        ("JOIN", "room.created", owner_id),
        ("JOIN", "member.joined", bob_id),
    ]


async def test_unknown_room(server: LiveServer) -> None:
    alice = server.client(unique("alice"))
    missing = unique("missing")
    assert await room_as(alice, missing) is None
    operations: list[tuple[str, dict[str, Any]]] = [
        (JOIN, {"id": missing}),
        (HISTORY, {"room": missing}),
        (SEND, {"room": missing, "text": "x"}),
        (LEAVE, {"id": missing}),
    ]
    await assert_not_found(server, alice, missing, operations, (ROOM_MESSAGES, {"room": missing}))
    assert await room_as(alice, missing) is None


async def test_private_room_is_invisible_to_non_members(server: LiveServer) -> None:
    owner_id, eve_id = unique("owner"), unique("eve")
    owner, eve = server.client(owner_id), server.client(eve_id)
    room_id = unique("secret")
    await create_room(owner, room_id, isPrivate=True)
    await owner.execute(SEND, room=room_id, text="secret")

    assert await room_as(eve, room_id) is None
    assert room_id not in [r["id"] for r in (await eve.execute(ROOMS))["rooms"]]
    assert room_id in [r["id"] for r in (await owner.execute(ROOMS))["rooms"]]
    for query, variables in (
        (JOIN, {"id": room_id}),
        (HISTORY, {"room": room_id}),
        (SEND, {"room": room_id, "text": "let me in"}),
        (UPDATE, {"id": room_id, "input": {"name": "mine"}}),
        (ADD, {"room": room_id, "user": eve_id, "role": "MEMBER"}),
    ):
        error = await eve.error(query, **variables)
        assert error.code == "NOT_FOUND", query
        assert error.errors[0]["message"] == f"room {room_id!r} not found"
    async with ws_connect(server, eve.token) as ws:
        error_doc = await ended_with(await ws.subscribe(ROOM_MESSAGES, room=room_id))
        assert error_doc["extensions"]["code"] == "NOT_FOUND"
        assert error_doc["message"] == f"room {room_id!r} not found"

    assert await members(owner, room_id) == {owner_id: "OWNER"}
    assert await history(owner, room_id) == [
        ("JOIN", "room.created", owner_id),
        ("MESSAGE", None, owner_id),
    ]
    room = await room_as(owner, room_id)
    assert room is not None and room["name"] == "Room"
    await still_serving(server)


async def test_invitation_to_private_room(server: LiveServer) -> None:
    owner_id, bob_id = unique("owner"), unique("bob")
    owner, bob = server.client(owner_id), server.client(bob_id)
    room_id = unique("secret")
    await create_room(owner, room_id, isPrivate=True)
    added = (await owner.execute(ADD, room=room_id, user=bob_id, role=None))["addMember"]
    assert added == {"userId": bob_id, "role": "MEMBER"}
    room = await room_as(bob, room_id)
    assert room is not None
    assert (room["myRole"], room["memberCount"], room["isPrivate"]) == ("MEMBER", 2, True)
    assert room_id in [r["id"] for r in (await bob.execute(ROOMS, mine=True))["rooms"]]
    await bob.execute(SEND, room=room_id, text="thanks")
    assert await history(bob, room_id) == [
        ("JOIN", "room.created", owner_id),
        ("JOIN", "member.added", bob_id),
        ("MESSAGE", None, bob_id),
    ]


# --- roles ----------------------------------------------------------------------------


async def test_member_cannot_manage_members(server: LiveServer) -> None:
    owner_id, member_id, other_id, target_id = (
        unique("owner"),
        unique("member"),
        unique("other"),
        unique("target"),
    )
    owner, member = server.client(owner_id), server.client(member_id)
    room_id = unique("room")
    await create_room(owner, room_id)
    await member.execute(JOIN, id=room_id)
    await owner.execute(ADD, room=room_id, user=other_id, role="MEMBER")
    before = await members(owner, room_id)
    before_history = await history(owner, room_id)

    for query, variables in (
        (ADD, {"room": room_id, "user": target_id, "role": "MEMBER"}),
        (REMOVE, {"room": room_id, "user": other_id}),
        (BAN, {"room": room_id, "user": other_id}),
        (UNBAN, {"room": room_id, "user": other_id}),
        (SET_ROLE, {"room": room_id, "user": other_id, "role": "ADMIN"}),
    ):
        error = await member.error(query, **variables)
        assert error.code == "FORBIDDEN", query
        assert room_id in str(error)

    assert await members(owner, room_id) == before
    assert await history(owner, room_id) == before_history
    # The member the refused ban aimed at was not banned: they still post.
    other = server.client(other_id)
    assert (await other.execute(SEND, room=room_id, text="hi"))["sendMessage"]["cursor"]
    await still_serving(server)


async def test_admin_manages_members_but_not_roles(server: LiveServer) -> None:
    owner_id, admin_id, admin2_id, carol_id, dave_id = (
        unique("owner"),
        unique("admin"),
        unique("admin2"),
        unique("carol"),
        unique("dave"),
    )
    owner, admin = server.client(owner_id), server.client(admin_id)
    room_id = unique("room")
    await create_room(owner, room_id)
    await owner.execute(ADD, room=room_id, user=admin_id, role="ADMIN")
    await owner.execute(ADD, room=room_id, user=admin2_id, role="ADMIN")

    # An admin adds and removes members.
    added = (await admin.execute(ADD, room=room_id, user=carol_id, role="MEMBER"))["addMember"]
    assert added == {"userId": carol_id, "role": "MEMBER"}
    await admin.execute(ADD, room=room_id, user=dave_id, role="MEMBER")
    assert (await admin.execute(REMOVE, room=room_id, user=dave_id)) == {"removeMember": True}
    # ...but makes no admins and changes no roles.
    error = await admin.error(ADD, room=room_id, user=unique("x"), role="ADMIN")
    assert error.code == "FORBIDDEN"
    assert "only the owner makes admins" in str(error)
    error = await admin.error(SET_ROLE, room=room_id, user=carol_id, role="ADMIN")
    assert error.code == "FORBIDDEN"
    # ...and cannot act on an equal or the owner.
    for target in (admin2_id, owner_id):
        assert (await admin.error(REMOVE, room=room_id, user=target)).code == "FORBIDDEN"
        assert (await admin.error(BAN, room=room_id, user=target)).code == "FORBIDDEN"
    # Nobody adds a second owner.
    error = await owner.error(ADD, room=room_id, user=unique("y"), role="OWNER")
    assert error.code == "BAD_USER_INPUT"
    assert "setMemberRole" in str(error)

    assert await members(owner, room_id) == {
        owner_id: "OWNER",
        admin_id: "ADMIN",
        admin2_id: "ADMIN",
        carol_id: "MEMBER",
    }
    assert (await history(owner, room_id))[-2:] == [
        ("JOIN", "member.added", dave_id),
        ("LEAVE", "member.removed", dave_id),
    ]


async def test_owner_makes_admins_and_hands_ownership_on(server: LiveServer) -> None:
    owner_id, bob_id, carol_id = unique("owner"), unique("bob"), unique("carol")
    owner, bob, carol = server.client(owner_id), server.client(bob_id), server.client(carol_id)
    room_id = unique("room")
    await create_room(owner, room_id)
    await bob.execute(JOIN, id=room_id)
    await carol.execute(JOIN, id=room_id)

    made = await owner.execute(SET_ROLE, room=room_id, user=bob_id, role="ADMIN")
    assert made == {"setMemberRole": {"userId": bob_id, "role": "ADMIN"}}
    # The new admin can now ban a member.
    assert (await bob.execute(BAN, room=room_id, user=carol_id)) == {"banMember": True}

    # The owner cannot leave without handing ownership on.
    error = await owner.error(LEAVE, id=room_id)
    assert error.code == "FORBIDDEN"
    assert "setMemberRole" in str(error)

    handed = await owner.execute(SET_ROLE, room=room_id, user=bob_id, role="OWNER")
    assert handed == {"setMemberRole": {"userId": bob_id, "role": "OWNER"}}
    room = await room_as(bob, room_id)
    assert room is not None
    assert room["myRole"] == "OWNER"
    assert await members(bob, room_id) == {owner_id: "ADMIN", bob_id: "OWNER"}
    assert (await history(bob, room_id))[-1] == ("SYSTEM", "member.role", owner_id)
    # The old owner is an admin now: no more deleting or making admins.
    assert (await owner.error(DELETE, id=room_id)).code == "FORBIDDEN"
    assert (await owner.error(SET_ROLE, room=room_id, user=bob_id, role="MEMBER")).code == (
        "FORBIDDEN"
    )
    assert (await owner.execute(LEAVE, id=room_id)) == {"leaveRoom": True}
    assert await members(bob, room_id) == {bob_id: "OWNER"}
    # Room.owner names the new owner, for members and for anyone else.
    for viewer in (bob, owner):
        room = await room_as(viewer, room_id)
        assert room is not None
        assert room["owner"] == bob_id
    assert (await bob.execute(DELETE, id=room_id)) == {"deleteRoom": True}


async def test_set_role_of_non_member_is_not_found(server: LiveServer) -> None:
    owner_id = unique("owner")
    owner = server.client(owner_id)
    room_id = unique("room")
    await create_room(owner, room_id)
    stranger = unique("stranger")
    error = await owner.error(SET_ROLE, room=room_id, user=stranger, role="ADMIN")
    assert error.code == "NOT_FOUND"
    assert stranger in str(error)
    assert await members(owner, room_id) == {owner_id: "OWNER"}


# --- bans -----------------------------------------------------------------------------


async def test_banned_user_cannot_rejoin_until_unbanned(server: LiveServer) -> None:
    owner_id, bob_id = unique("owner"), unique("bob")
    owner, bob = server.client(owner_id), server.client(bob_id)
    room_id = unique("room")
    await create_room(owner, room_id)
    await bob.execute(JOIN, id=room_id)
    await bob.execute(SEND, room=room_id, text="before the ban")

    assert (await owner.execute(BAN, room=room_id, user=bob_id)) == {"banMember": True}
    assert await members(owner, room_id) == {owner_id: "OWNER"}
    history_after_ban = await history(owner, room_id)
    assert history_after_ban[-1] == ("LEAVE", "member.banned", bob_id)

    error = await bob.error(JOIN, id=room_id)
    assert error.code == "FORBIDDEN"
    assert "banned" in str(error)
    assert (await bob.error(SEND, room=room_id, text="sneak")).code == "FORBIDDEN"
    assert (await bob.error(HISTORY, room=room_id)).code == "FORBIDDEN"
    # An admin cannot invite them back either while the ban stands.
    error = await owner.error(ADD, room=room_id, user=bob_id, role="MEMBER")
    assert error.code == "FORBIDDEN"
    assert "unban" in str(error)
    assert await members(owner, room_id) == {owner_id: "OWNER"}
    assert await history(owner, room_id) == history_after_ban

    assert (await owner.execute(UNBAN, room=room_id, user=bob_id)) == {"unbanMember": True}
    joined = (await bob.execute(JOIN, id=room_id))["joinRoom"]
    assert joined == {"id": room_id, "myRole": "MEMBER", "memberCount": 2}
    assert (await history(owner, room_id))[-1] == ("JOIN", "member.joined", bob_id)


async def test_ban_ends_live_subscription_to_private_room(server: LiveServer) -> None:
    owner_id, bob_id, carol_id = unique("owner"), unique("bob"), unique("carol")
    owner, bob, carol = server.client(owner_id), server.client(bob_id), server.client(carol_id)
    room_id = unique("secret")
    await create_room(owner, room_id, isPrivate=True)
    await owner.execute(ADD, room=room_id, user=bob_id, role="MEMBER")
    await owner.execute(ADD, room=room_id, user=carol_id, role="MEMBER")

    async with ws_connect(server, bob.token) as bob_ws, ws_connect(server, carol.token) as carol_ws:
        bob_sub = await bob_ws.subscribe(ROOM_MESSAGES, room=room_id)
        carol_sub = await carol_ws.subscribe(ROOM_MESSAGES, room=room_id)
        await server.wait_subscribers(2)
        await owner.execute(BAN, room=room_id, user=bob_id)

        # Bob sees his own ban, then his stream ends: the room is now invisible to him.
        banned = (await bob_sub.next())["roomMessages"]
        assert (banned["type"], banned["event"], banned["userId"]) == (
            "LEAVE",
            "member.banned",
            bob_id,
        )
        error_doc = await ended_with(bob_sub)
        assert error_doc["extensions"]["code"] == "NOT_FOUND"
        await server.wait_subscribers(1)

        # Carol keeps receiving.
        assert (await carol_sub.next())["roomMessages"]["event"] == "member.banned"
        sent = await owner.execute(SEND, room=room_id, text="after the ban")
        got = (await carol_sub.next())["roomMessages"]
        assert (got["data"], got["cursor"]) == (
            {"text": "after the ban"},
            sent["sendMessage"]["cursor"],
        )
        bob_sub.assert_quiet()
        await carol_sub.complete()
        await server.wait_subscribers(0)

    assert await room_as(bob, room_id) is None
    # The private room is invisible to him again, and the ban sticks for invitations.
    assert (await bob.error(JOIN, id=room_id)).code == "NOT_FOUND"
    error = await owner.error(ADD, room=room_id, user=bob_id, role="MEMBER")
    assert error.code == "FORBIDDEN"
    assert "banned" in str(error)
    assert await members(owner, room_id) == {owner_id: "OWNER", carol_id: "MEMBER"}


# --- JOIN and LEAVE live --------------------------------------------------------------


async def test_join_and_leave_appear_live_and_in_history(server: LiveServer) -> None:
    owner_id, bob_id = unique("owner"), unique("bob")
    owner, bob = server.client(owner_id), server.client(bob_id)
    room_id = unique("room")
    created = await create_room(owner, room_id)
    assert created["memberCount"] == 1

    async with ws_connect(server, owner.token) as ws:
        sub = await ws.subscribe(ROOM_MESSAGES, room=room_id)
        await server.wait_subscribers(1)
        await bob.execute(JOIN, id=room_id)
        joined = (await sub.next())["roomMessages"]
        assert (joined["type"], joined["event"], joined["userId"]) == (
            "JOIN",
            "member.joined",
            bob_id,
        )
        assert (await bob.execute(LEAVE, id=room_id)) == {"leaveRoom": True}
        left = (await sub.next())["roomMessages"]
        assert (left["type"], left["event"], left["userId"]) == ("LEAVE", "member.left", bob_id)
        epoch, offset = joined["cursor"].split(":")
        assert left["cursor"] == f"{epoch}:{int(offset) + 1}"
        await sub.complete()
        await server.wait_subscribers(0)

    assert await history(owner, room_id) == [
        ("JOIN", "room.created", owner_id),
        ("JOIN", "member.joined", bob_id),
        ("LEAVE", "member.left", bob_id),
    ]
    assert await members(owner, room_id) == {owner_id: "OWNER"}
    # Leaving again: not a member any more.
    assert (await bob.error(LEAVE, id=room_id)).code == "FORBIDDEN"


# --- limits and bad input -------------------------------------------------------------


async def test_room_limit_per_user(server: LiveServer) -> None:
    user_id = unique("busy")
    owner_id = unique("owner")
    user, owner = server.client(user_id), server.client(owner_id)
    public_room = unique("public")
    await create_room(owner, public_room)
    mine = [unique("mine") for _ in range(10)]
    for room_id in mine:
        await create_room(user, room_id)

    extra = unique("extra")
    error = await user.error(CREATE, input={"id": extra, "name": "one too many"})
    assert error.code == "LIMIT_EXCEEDED"
    assert "10" in str(error)
    error = await user.error(JOIN, id=public_room)
    assert error.code == "LIMIT_EXCEEDED"
    # (Being added by others counts apart: tests/test_room_quota.py.)

    assert await room_as(user, extra) is None
    joined = sorted(r["id"] for r in (await user.execute(ROOMS, mine=True))["rooms"])
    assert joined == sorted(mine)
    assert await members(owner, public_room) == {owner_id: "OWNER"}
    assert await history(owner, public_room) == [("JOIN", "room.created", owner_id)]

    # Leaving one frees a place.
    await user.execute(DELETE, id=mine[0])
    assert (await user.execute(JOIN, id=public_room))["joinRoom"]["myRole"] == "MEMBER"
    await still_serving(server)


async def test_bad_room_ids(server: LiveServer) -> None:
    alice = server.client(unique("alice"))
    before = sorted(r["id"] for r in (await alice.execute(ROOMS, mine=True))["rooms"])
    for bad in ("a.b c", "", "x" * 65, "slash/room", "ünï"):
        error = await alice.error(CREATE, input={"id": bad, "name": "bad"})
        assert error.code == "BAD_USER_INPUT", bad
        assert "ids are 1 to 64 characters" in str(error)
        assert error.errors[0]["extensions"]["argument"] == "id"
    error = await alice.error(CREATE, input={"id": unique("ok"), "name": "  "})
    assert error.code == "BAD_USER_INPUT"
    assert "name must not be empty" in str(error)
    assert sorted(r["id"] for r in (await alice.execute(ROOMS, mine=True))["rooms"]) == before
    assert before == []
    await still_serving(server)


async def test_duplicate_room_id(server: LiveServer) -> None:
    alice_id = unique("alice")
    alice, mallory = server.client(alice_id), server.client(unique("mallory"))
    room_id = unique("room")
    first = await create_room(alice, room_id, name="First", description="original")
    await alice.execute(SEND, room=room_id, text="hello")

    for client in (mallory, alice):
        error = await client.error(
            CREATE, input={"id": room_id, "name": "Second", "isPrivate": True}
        )
        assert error.code == "BAD_USER_INPUT"
        assert f"room id {room_id!r} is taken" in str(error)

    assert await room_as(alice, room_id) == first
    assert await history(alice, room_id) == [
        ("JOIN", "room.created", alice_id),
        ("MESSAGE", None, alice_id),
    ]
    assert room_id not in [r["id"] for r in (await mallory.execute(ROOMS, mine=True))["rooms"]]
    await still_serving(server)
