"""Room messages end to end: sending, history paging, resume, ordering,
idempotency, limits, malformed input and persistence across a restart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tests.conftest import TEST_SETTINGS
from tests.live import GraphQLClient, LiveServer, ended_with, unique, ws_connect

CREATE = """
mutation($id: ID!, $private: Boolean! = false) {
  createRoom(input: {id: $id, name: "Room", isPrivate: $private}) { id }
}
"""
JOIN = "mutation($id: ID!) { joinRoom(roomId: $id) { id } }"
SEND = """
mutation($room: ID!, $data: JSON, $thread: ID, $cid: String, $event: String) {
  sendMessage(input: {roomId: $room, data: $data, threadId: $thread,
                      clientMessageId: $cid, event: $event}) {
    id type userId data threadId cursor
  }
}
"""
HISTORY = """
query($room: ID!, $first: Int, $after: String, $last: Int, $before: String, $thread: ID) {
  history(roomId: $room, first: $first, after: $after, last: $last, before: $before,
          threadId: $thread) {
    edges { cursor node { id type event userId data threadId cursor } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""
ROOM_MESSAGES = """
subscription($room: ID!, $after: String, $thread: ID) {
  roomMessages(roomId: $room, after: $after, threadId: $thread) {
    id type event userId data threadId cursor
  }
}
"""


# --- helpers -------------------------------------------------------------------------


async def new_room(client: GraphQLClient, *, private: bool = False) -> str:
    room_id = unique("room")
    await client.execute(CREATE, id=room_id, private=private)
    return room_id


async def send(client: GraphQLClient, room_id: str, text: str, **extra: Any) -> dict[str, Any]:
    data = await client.execute(SEND, room=room_id, data={"text": text}, **extra)
    message: dict[str, Any] = data["sendMessage"]
    return message


async def page(client: GraphQLClient, room_id: str, **args: Any) -> dict[str, Any]:
    history: dict[str, Any] = (await client.execute(HISTORY, room=room_id, **args))["history"]
    return history


async def all_messages(client: GraphQLClient, room_id: str) -> list[dict[str, Any]]:
    return [e["node"] for e in (await page(client, room_id, first=200))["edges"]]


def texts(nodes: list[dict[str, Any]]) -> list[str]:
    return [n["data"]["text"] for n in nodes if n["type"] == "MESSAGE"]


def offset(cursor: str) -> int:
    return int(cursor.rsplit(":", 1)[1])


def epoch(cursor: str) -> str:
    return cursor.rsplit(":", 1)[0]


async def still_serving(server: LiveServer) -> None:
    other = server.client(unique("other"))
    room_id = await new_room(other)
    sent = await send(other, room_id, "still here")
    assert offset(sent["cursor"]) == 2


# --- membership -----------------------------------------------------------------------


async def test_send_requires_membership(server: LiveServer) -> None:
    owner, stranger = server.client(unique("owner")), server.client(unique("stranger"))
    public = await new_room(owner)
    private = await new_room(owner, private=True)
    for room_id in (public, private):
        await send(owner, room_id, "mine")

    error = await stranger.error(SEND, room=public, data={"text": "drive-by"})
    assert error.code == "FORBIDDEN"
    assert "not a member" in str(error)
    error = await stranger.error(SEND, room=private, data={"text": "drive-by"})
    assert error.code == "NOT_FOUND"
    assert str(error) == f"room {private!r} not found"

    for room_id in (public, private):
        assert texts(await all_messages(owner, room_id)) == ["mine"]
    # Reading a public room is open; after joining, posting is too.
    assert texts(await all_messages(stranger, public)) == ["mine"]
    await stranger.execute(JOIN, id=public)
    await send(stranger, public, "joined")
    assert texts(await all_messages(owner, public)) == ["mine", "joined"]


# --- history paging -------------------------------------------------------------------


def page_info(
    room_epoch: str, start: int, end: int, *, more_after: bool, more_before: bool
) -> dict[str, Any]:
    """The pageInfo of a history page from offset `start` to `end` of one epoch."""
    return {
        "hasNextPage": more_after,
        "hasPreviousPage": more_before,
        "startCursor": f"{room_epoch}:{start}",
        "endCursor": f"{room_epoch}:{end}",
    }


async def test_history_pages_forward(server: LiveServer) -> None:
    alice = server.client(unique("alice"))
    room_id = await new_room(alice)  # offset 1 is the JOIN of the creator
    sent = [await send(alice, room_id, f"m{i}") for i in range(2, 9)]  # offsets 2..8
    assert [offset(m["cursor"]) for m in sent] == list(range(2, 9))
    room_epoch = epoch(sent[0]["cursor"])

    first = await page(alice, room_id, first=3)
    assert [offset(e["cursor"]) for e in first["edges"]] == [1, 2, 3]
    assert [e["cursor"] for e in first["edges"]] == [e["node"]["cursor"] for e in first["edges"]]
    assert first["edges"][0]["node"]["type"] == "JOIN"
    assert first["pageInfo"] == page_info(room_epoch, 1, 3, more_after=True, more_before=False)
    second = await page(alice, room_id, first=3, after=first["pageInfo"]["endCursor"])
    assert texts([e["node"] for e in second["edges"]]) == ["m4", "m5", "m6"]
    assert second["pageInfo"] == page_info(room_epoch, 4, 6, more_after=True, more_before=True)
    third = await page(alice, room_id, first=3, after=second["pageInfo"]["endCursor"])
    assert texts([e["node"] for e in third["edges"]]) == ["m7", "m8"]
    assert third["pageInfo"] == page_info(room_epoch, 7, 8, more_after=False, more_before=True)
    past_end = await page(alice, room_id, first=3, after=third["pageInfo"]["endCursor"])
    assert past_end["edges"] == []
    assert past_end["pageInfo"]["hasNextPage"] is False
    assert (past_end["pageInfo"]["startCursor"], past_end["pageInfo"]["endCursor"]) == (None, None)


async def test_history_pages_backward(server: LiveServer) -> None:
    alice = server.client(unique("alice"))
    room_id = await new_room(alice)
    sent = [await send(alice, room_id, f"m{i}") for i in range(2, 9)]
    room_epoch = epoch(sent[0]["cursor"])

    last = await page(alice, room_id, last=3)
    assert texts([e["node"] for e in last["edges"]]) == ["m6", "m7", "m8"]
    assert last["pageInfo"] == page_info(room_epoch, 6, 8, more_after=False, more_before=True)
    earlier = await page(alice, room_id, last=3, before=last["pageInfo"]["startCursor"])
    assert texts([e["node"] for e in earlier["edges"]]) == ["m3", "m4", "m5"]
    assert earlier["pageInfo"] == page_info(room_epoch, 3, 5, more_after=True, more_before=True)
    earliest = await page(alice, room_id, last=3, before=earlier["pageInfo"]["startCursor"])
    assert [offset(e["cursor"]) for e in earliest["edges"]] == [1, 2]
    assert earliest["pageInfo"] == page_info(room_epoch, 1, 2, more_after=True, more_before=False)
    # A window between two cursors.
    window = await page(alice, room_id, first=10, after=f"{room_epoch}:3", before=f"{room_epoch}:6")
    assert texts([e["node"] for e in window["edges"]]) == ["m4", "m5"]


async def test_history_thread_filter(server: LiveServer) -> None:
    alice = server.client(unique("alice"))
    room_id = await new_room(alice)
    thread = unique("thread")
    for i in range(6):
        await send(
            alice, room_id, f"t{i}" if i % 2 else f"main{i}", thread=thread if i % 2 else None
        )

    in_thread = await page(alice, room_id, thread=thread)
    nodes = [e["node"] for e in in_thread["edges"]]
    assert texts(nodes) == ["t1", "t3", "t5"]
    assert {n["threadId"] for n in nodes} == {thread}
    first_two = await page(alice, room_id, thread=thread, first=2)
    assert texts([e["node"] for e in first_two["edges"]]) == ["t1", "t3"]
    assert first_two["pageInfo"]["hasNextPage"] is True
    rest = await page(
        alice, room_id, thread=thread, first=2, after=first_two["pageInfo"]["endCursor"]
    )
    assert texts([e["node"] for e in rest["edges"]]) == ["t5"]
    assert rest["pageInfo"]["hasNextPage"] is False
    assert (await page(alice, room_id, thread=unique("none")))["edges"] == []
    error = await alice.error(SEND, room=room_id, data={"text": "x"}, thread="a.b c")
    assert error.code == "BAD_USER_INPUT"
    assert len(await all_messages(alice, room_id)) == 7


async def test_history_bad_page_arguments(server: LiveServer) -> None:
    alice = server.client(unique("alice"))
    room_id = await new_room(alice)
    await send(alice, room_id, "only")
    for args, argument in (
        ({"first": 1, "last": 1}, "first"),
        ({"first": -1}, "first"),
        ({"first": 201}, "first"),
        ({"last": -5}, "last"),
    ):
        error = await alice.error(HISTORY, room=room_id, **args)
        assert error.code == "BAD_USER_INPUT", args
        assert error.errors[0]["extensions"]["argument"] == argument
    assert texts(await all_messages(alice, room_id)) == ["only"]


# --- live stream: resume, order, idempotency -----------------------------------------


async def test_resume_after_disconnect_gets_exactly_the_missed(server: LiveServer) -> None:
    alice, bob = server.client(unique("alice")), server.client(unique("bob"))
    room_id = await new_room(alice)
    await bob.execute(JOIN, id=room_id)

    async with ws_connect(server, bob.token) as ws:
        sub = await ws.subscribe(ROOM_MESSAGES, room=room_id)
        await server.wait_subscribers(1)
        for i in range(3):
            await send(alice, room_id, f"seen{i}")
        seen = await sub.take(3, "roomMessages")
        assert texts(seen) == ["seen0", "seen1", "seen2"]
    await server.wait_subscribers(0)
    last_cursor = seen[-1]["cursor"]

    missed = [await send(alice, room_id, f"missed{i}") for i in range(5)]

    async with ws_connect(server, bob.token) as ws:
        sub = await ws.subscribe(ROOM_MESSAGES, room=room_id, after=last_cursor)
        replayed = await sub.take(5, "roomMessages")
        assert [(m["id"], m["cursor"]) for m in replayed] == [
            (m["id"], m["cursor"]) for m in missed
        ]
        await server.wait_subscribers(1)
        live = [await send(alice, room_id, f"live{i}") for i in range(2)]
        got = await sub.take(2, "roomMessages")
        assert [m["cursor"] for m in got] == [m["cursor"] for m in live]
        # Nothing in between: the next frame is the next message.
        sentinel = await send(alice, room_id, "sentinel")
        assert (await sub.next())["roomMessages"]["cursor"] == sentinel["cursor"]
        await sub.complete()
        await server.wait_subscribers(0)


async def test_resume_with_thread_replays_only_that_thread(server: LiveServer) -> None:
    alice = server.client(unique("alice"))
    room_id = await new_room(alice)
    thread = unique("thread")
    start = await send(alice, room_id, "start")
    await send(alice, room_id, "t1", thread=thread)
    await send(alice, room_id, "other")
    await send(alice, room_id, "t2", thread=thread)
    async with ws_connect(server, alice.token) as ws:
        sub = await ws.subscribe(ROOM_MESSAGES, room=room_id, after=start["cursor"], thread=thread)
        assert texts(await sub.take(2, "roomMessages")) == ["t1", "t2"]
        await server.wait_subscribers(1)
        await send(alice, room_id, "not in thread")
        t3 = await send(alice, room_id, "t3", thread=thread)
        assert (await sub.next())["roomMessages"]["cursor"] == t3["cursor"]
        await sub.complete()
        await server.wait_subscribers(0)


async def test_concurrent_senders_delivered_once_in_order(server: LiveServer) -> None:
    users = [unique(f"u{i}") for i in range(3)]
    clients = [server.client(u) for u in users]
    room_id = await new_room(clients[0])
    for client in clients[1:]:
        await client.execute(JOIN, id=room_id)
    before = await all_messages(clients[0], room_id)

    async with ws_connect(server, clients[0].token) as ws:
        sub = await ws.subscribe(ROOM_MESSAGES, room=room_id)
        await server.wait_subscribers(1)

        async def burst(client: GraphQLClient, user: str) -> list[dict[str, Any]]:
            return [await send(client, room_id, f"{user}:{n}") for n in range(20)]

        results = await asyncio.gather(*(burst(c, u) for c, u in zip(clients, users, strict=True)))
        received = await sub.take(60, "roomMessages")
        await sub.complete()
        await server.wait_subscribers(0)

    offsets = [offset(m["cursor"]) for m in received]
    assert offsets == sorted(set(offsets)), "not strictly increasing"
    assert offsets == list(range(len(before) + 1, len(before) + 61))
    stored = (await all_messages(clients[0], room_id))[len(before) :]
    assert [(m["id"], m["cursor"]) for m in received] == [(m["id"], m["cursor"]) for m in stored]
    sent_ids = {m["id"] for result in results for m in result}
    assert {m["id"] for m in received} == sent_ids
    # Each sender's own messages keep their order.
    for user in users:
        mine = [t for t in texts(received) if t.startswith(f"{user}:")]
        assert mine == [f"{user}:{n}" for n in range(20)]


async def test_client_message_id_retry_stores_once(server: LiveServer) -> None:
    alice, bob = server.client(unique("alice")), server.client(unique("bob"))
    room_id = await new_room(alice)
    await bob.execute(JOIN, id=room_id)
    cid = unique("cid")
    async with ws_connect(server, bob.token) as ws:
        sub = await ws.subscribe(ROOM_MESSAGES, room=room_id)
        await server.wait_subscribers(1)
        first = await send(alice, room_id, "once", cid=cid)
        retry = await send(alice, room_id, "once", cid=cid)
        assert (retry["id"], retry["cursor"]) == (first["id"], first["cursor"])
        # The same key from another user is another message.
        other = await send(bob, room_id, "once", cid=cid)
        assert other["id"] != first["id"]
        assert offset(other["cursor"]) == offset(first["cursor"]) + 1
        got = await sub.take(2, "roomMessages")
        assert [m["id"] for m in got] == [first["id"], other["id"]]
        await sub.complete()
        await server.wait_subscribers(0)
    stored = [m for m in await all_messages(alice, room_id) if m["type"] == "MESSAGE"]
    assert [m["id"] for m in stored] == [first["id"], other["id"]]


# --- limits ---------------------------------------------------------------------------


async def test_message_over_size_limit(server: LiveServer) -> None:
    alice = server.client(unique("alice"))
    room_id = await new_room(alice)
    await send(alice, room_id, "small")
    before = await all_messages(alice, room_id)

    error = await alice.error(SEND, room=room_id, data={"text": "x" * 5000})
    assert error.code == "PAYLOAD_TOO_LARGE"
    assert "4096" in str(error)
    assert error.errors[0]["extensions"]["limit"] == 4096
    assert await all_messages(alice, room_id) == before

    just_fits = await send(alice, room_id, "y" * 4000)
    assert offset(just_fits["cursor"]) == offset(before[-1]["cursor"]) + 1
    await still_serving(server)


async def test_rate_limit_keeps_only_accepted(server: LiveServer) -> None:
    alice, bob = server.client(unique("alice")), server.client(unique("bob"))
    room_id = await new_room(alice)
    await bob.execute(JOIN, id=room_id)

    responses = await asyncio.gather(
        *(alice.post(SEND, room=room_id, data={"text": f"r{i}"}) for i in range(26))
    )
    accepted: list[str] = []
    limited = 0
    for response in responses:
        body = response.json()
        if body.get("errors"):
            assert body["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
            assert "20 messages per second" in body["errors"][0]["message"]
            limited += 1
        else:
            accepted.append(body["data"]["sendMessage"]["data"]["text"])
    assert (len(accepted), limited) == (20, 6)
    stored = texts(await all_messages(alice, room_id))
    assert sorted(stored) == sorted(accepted)
    # Another user is not limited by alice's burst.
    await send(bob, room_id, "bob is fine")


# --- malformed and foreign cursors ----------------------------------------------------


async def test_malformed_cursors(server: LiveServer) -> None:
    alice = server.client(unique("alice"))
    room_id = await new_room(alice)
    await send(alice, room_id, "keep")
    before = await all_messages(alice, room_id)
    for bad in ("garbage", "abc:xyz", ":5", "abc:-1", "abc:", "x" * 200 + ":1"):
        for argument in ("after", "before"):
            error = await alice.error(HISTORY, room=room_id, **{argument: bad})
            assert error.code == "BAD_USER_INPUT", (bad, argument)
            assert f"{argument}: malformed cursor" in str(error)
    async with ws_connect(server, alice.token) as ws:
        for bad in ("garbage", "abc:xyz", ":5"):
            error_doc = await ended_with(await ws.subscribe(ROOM_MESSAGES, room=room_id, after=bad))
            assert error_doc["extensions"]["code"] == "BAD_USER_INPUT", bad
            assert "after: malformed cursor" in error_doc["message"]
    await server.wait_subscribers(0)
    assert await all_messages(alice, room_id) == before
    await still_serving(server)


async def test_cursor_from_another_epoch(server: LiveServer) -> None:
    alice = server.client(unique("alice"))
    room_id = await new_room(alice)
    sent = [await send(alice, room_id, f"m{i}") for i in range(3)]
    room_epoch = epoch(sent[0]["cursor"])
    assert room_epoch != "deadbeef"

    error = await alice.error(HISTORY, room=room_id, after="deadbeef:3")
    assert error.code == "BAD_USER_INPUT"
    assert "earlier history" in str(error)
    assert error.errors[0]["extensions"]["reason"] == "HISTORY_EPOCH_CHANGED"

    async with ws_connect(server, alice.token) as ws:
        sub = await ws.subscribe(ROOM_MESSAGES, room=room_id, after="deadbeef:3")
        gap = (await sub.next())["roomMessages"]
        assert (gap["type"], gap["event"]) == ("SYSTEM", "history.gap")
        assert gap["data"]["reason"] == "epoch"
        assert gap["data"]["requested"] == "deadbeef:3"
        # Then the whole history of this epoch, from its first message.
        replay = await sub.take(4, "roomMessages")
        assert [offset(m["cursor"]) for m in replay] == [1, 2, 3, 4]
        assert texts(replay) == ["m0", "m1", "m2"]
        await server.wait_subscribers(1)
        live = await send(alice, room_id, "live")
        assert (await sub.next())["roomMessages"]["cursor"] == live["cursor"]
        await sub.complete()
        await server.wait_subscribers(0)


# --- bad request bodies ---------------------------------------------------------------


async def test_invalid_json_body_is_400(server: LiveServer) -> None:
    alice = server.client(unique("alice"))
    room_id = await new_room(alice)
    before = await all_messages(alice, room_id)
    for body in (
        "{not json",
        # Cut off in the middle.
        json.dumps({"query": SEND, "variables": {"room": room_id}})[:-7],
        "",
        "[1, 2]",
    ):
        response = await alice.post_raw(body)
        assert response.status_code == 400, (body, response.text)
    assert await all_messages(alice, room_id) == before
    await still_serving(server)


async def test_json_body_that_is_not_an_object_is_400(server: LiveServer) -> None:
    """A JSON string or number as the whole body is a client error, not a 500."""
    alice = server.client(unique("alice"))
    for body in ('"a string"', "42", "null"):
        response = await alice.post_raw(body)
        assert response.status_code == 400, (body, response.status_code, response.text)
    await still_serving(server)


# --- restart --------------------------------------------------------------------------


async def test_everything_survives_a_restart(tmp_path: Path, make_server: type[LiveServer]) -> None:
    data_dir = tmp_path / "node"
    first = make_server(data_dir, dict(TEST_SETTINGS)).start()
    owner_id, admin_id, member_id, banned_id, guest_id = (
        "owner",
        "admin",
        "member",
        "banned",
        "guest",
    )
    owner, admin, member, banned = (
        first.client(u) for u in (owner_id, admin_id, member_id, banned_id)
    )
    room_query = """
    query($id: ID!) {
      room(id: $id) {
        id name description owner isPrivate metadata createdAt memberCount
        members { userId role joinedAt }
      }
    }
    """
    await owner.execute(
        """mutation { createRoom(input: {id: "pub", name: "Public", description: "d",
                                          metadata: {k: [1, "two"]}}) { id } }"""
    )
    await owner.execute(
        'mutation { createRoom(input: {id: "priv", name: "Private", isPrivate: true}) { id } }'
    )
    await owner.execute(
        'mutation { addMember(roomId: "pub", userId: "admin", role: ADMIN) { role } }'
    )
    await member.execute(JOIN, id="pub")
    await banned.execute(JOIN, id="pub")
    await admin.execute('mutation { banMember(roomId: "pub", userId: "banned") }')
    await owner.execute('mutation { addMember(roomId: "priv", userId: "member") { role } }')
    await owner.execute(
        'mutation { createChannel(input: {id: "news", name: "News", description: "n"}) { id } }'
    )
    await owner.execute(
        'mutation { createChannel(input: {id: "vip", name: "VIP", isPrivate: true}) { id } }'
    )
    await owner.execute('mutation { grantChannel(channelId: "vip", userId: "member") }')
    thread = "t1"
    for i in range(3):
        await send(member, "pub", f"pub{i}", thread=thread if i == 1 else None)
    await send(member, "priv", "secret")

    rooms_before = {r: await owner.execute(room_query, id=r) for r in ("pub", "priv")}
    history_before = {r: await page(owner, r, first=200) for r in ("pub", "priv")}
    channel_query = "{ channels { id name description isPrivate createdBy createdAt } }"
    channels_before = await owner.execute(channel_query)
    member_channels_before = await member.execute(channel_query)
    assert [c["id"] for c in member_channels_before["channels"]] == ["news", "vip"]
    last_pub = history_before["pub"]["pageInfo"]["endCursor"]
    first.stop()

    second = make_server(data_dir, dict(TEST_SETTINGS)).start()
    owner, member, banned, guest = (
        second.client(u) for u in (owner_id, member_id, banned_id, guest_id)
    )
    for room_id in ("pub", "priv"):
        assert await owner.execute(room_query, id=room_id) == rooms_before[room_id]
        assert await page(owner, room_id, first=200) == history_before[room_id]
    assert rooms_before["pub"]["room"]["members"][0]["userId"] == owner_id
    assert {m["userId"]: m["role"] for m in rooms_before["pub"]["room"]["members"]} == {
        owner_id: "OWNER",
        admin_id: "ADMIN",
        member_id: "MEMBER",
    }
    assert await owner.execute(channel_query) == channels_before
    assert await member.execute(channel_query) == member_channels_before
    assert [c["id"] for c in (await guest.execute(channel_query))["channels"]] == ["news"]
    # The ban and the privacy stuck.
    assert (await banned.error(JOIN, id="pub")).code == "FORBIDDEN"
    assert (await guest.error(JOIN, id="priv")).code == "NOT_FOUND"
    assert texts([e["node"] for e in (await page(member, "pub", thread=thread))["edges"]]) == [
        "pub1"
    ]
    # New messages continue the offsets in the same epoch, live and in history.
    async with ws_connect(second, member.token) as ws:
        sub = await ws.subscribe(ROOM_MESSAGES, room="pub", after=last_pub)
        await second.wait_subscribers(1)
        after_restart = await send(member, "pub", "after restart")
        assert after_restart["cursor"] == f"{epoch(last_pub)}:{offset(last_pub) + 1}"
        got = (await sub.next())["roomMessages"]
        assert (got["id"], got["cursor"]) == (after_restart["id"], after_restart["cursor"])
        await sub.complete()
        await second.wait_subscribers(0)
    assert texts(await all_messages(owner, "pub")) == ["pub0", "pub1", "pub2", "after restart"]
