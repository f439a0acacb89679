"""Channels: pub/sub apart from rooms, with server-side filters, private
channels with grants, deletion, and the limits that apply to rooms."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import pytest

from tests.live import (
    GraphQLClient,
    LiveServer,
    Operation,
    assert_not_found,
    ended_with,
    unique,
    ws_connect,
)

CHANNEL_FIELDS = "id name description isPrivate createdBy createdAt"
CREATE = f"""
mutation($id: ID, $name: String!, $description: String, $private: Boolean!) {{
  createChannel(input: {{id: $id, name: $name, description: $description,
                         isPrivate: $private}}) {{ {CHANNEL_FIELDS} }}
}}
"""
CHANNEL = f"query($id: ID!) {{ channel(id: $id) {{ {CHANNEL_FIELDS} }} }}"
CHANNELS = "{ channels { id } }"
DELETE = "mutation($id: ID!) { deleteChannel(id: $id) }"
GRANT = "mutation($c: ID!, $u: ID!) { grantChannel(channelId: $c, userId: $u) }"
REVOKE = "mutation($c: ID!, $u: ID!) { revokeChannel(channelId: $c, userId: $u) }"
MESSAGE_FIELDS = "id type event channelId roomId userId data metadata cursor timestamp"
PUBLISH = f"""
mutation($c: ID!, $event: String, $data: JSON, $metadata: JSON) {{
  publish(input: {{channelId: $c, event: $event, data: $data, metadata: $metadata}}) {{
    {MESSAGE_FIELDS}
  }}
}}
"""
WATCH = f"""
subscription($c: ID!, $filter: ChannelFilter) {{
  channelMessages(channelId: $c, filter: $filter) {{ {MESSAGE_FIELDS} }}
}}
"""


async def create(
    client: GraphQLClient, *, private: bool = False, name: str = "news"
) -> dict[str, Any]:
    data = await client.execute(CREATE, id=unique("ch"), name=name, private=private)
    channel: dict[str, Any] = data["createChannel"]
    return channel


async def publish(client: GraphQLClient, channel: str, **fields: Any) -> dict[str, Any]:
    message: dict[str, Any] = (await client.execute(PUBLISH, c=channel, **fields))["publish"]
    return message


async def channel_ids(client: GraphQLClient) -> set[str]:
    return {c["id"] for c in (await client.execute(CHANNELS))["channels"]}


async def received(sub: Operation) -> dict[str, Any]:
    message: dict[str, Any] = (await sub.next())["channelMessages"]
    return message


class Watching(NamedTuple):
    alice: GraphQLClient
    bob: GraphQLClient
    channel: str
    sub: Operation  # Bob's


@asynccontextmanager
async def bob_watches_a_channel_of_alice(
    server: LiveServer, channel_filter: dict[str, Any] | None = None
) -> AsyncIterator[Watching]:
    """Alice (a fresh user) creates a channel; Bob's WebSocket subscribes to it,
    with `channel_filter` if given, and is live. Leaving completes Bob's
    subscription and waits until the server has let it go."""
    alice, bob = server.client(unique("alice")), server.client(unique("bob"))
    channel = (await create(alice))["id"]
    variables = {} if channel_filter is None else {"filter": channel_filter}
    async with ws_connect(server, bob.token) as ws:
        sub = await ws.subscribe(WATCH, c=channel, **variables)
        await server.wait_subscribers(1)
        yield Watching(alice, bob, channel, sub)
        await sub.complete()
        await server.wait_subscribers(0)


async def test_create_get_and_list_channels(server: LiveServer) -> None:
    alice_id = unique("alice")
    alice, bob = server.client(alice_id), server.client(unique("bob"))
    channel_id = unique("ch")
    created = (
        await alice.execute(
            CREATE, id=channel_id, name="Announcements", description="all hands", private=False
        )
    )["createChannel"]
    assert {k: v for k, v in created.items() if k != "createdAt"} == {
        "id": channel_id,
        "name": "Announcements",
        "description": "all hands",
        "isPrivate": False,
        "createdBy": alice_id,
    }
    assert (await bob.execute(CHANNEL, id=channel_id))["channel"] == created
    assert channel_id in await channel_ids(bob)
    generated = await create(alice)
    assert generated["id"] and generated["id"] != channel_id
    assert {channel_id, generated["id"]} <= await channel_ids(alice)


async def test_bad_channel_input_is_rejected(server: LiveServer) -> None:
    bob_id = unique("bob")
    alice, bob = server.client(unique("alice")), server.client(bob_id)
    taken = await create(alice, name="first")
    error = await bob.error(CREATE, id=taken["id"], name="thief", private=False)
    assert error.code == "BAD_USER_INPUT"
    assert "taken" in str(error)
    error = await bob.error(CREATE, id=unique("ch"), name="", private=False)
    assert error.code == "BAD_USER_INPUT"
    error = await bob.error(CREATE, id="has spaces/slash", name="x", private=False)
    assert error.code == "BAD_USER_INPUT"
    # The taken channel is untouched; bob created nothing.
    assert (await bob.execute(CHANNEL, id=taken["id"]))["channel"] == taken
    listed = (await bob.execute("{ channels { createdBy } }"))["channels"]
    assert [c for c in listed if c["createdBy"] == bob_id] == []


async def test_publish_reaches_subscribers(server: LiveServer) -> None:
    alice_id, bob_id = unique("alice"), unique("bob")
    alice, bob = server.client(alice_id), server.client(bob_id)
    channel = (await create(alice))["id"]
    async with ws_connect(server, bob.token) as ws:
        sub = await ws.subscribe(WATCH, c=channel)
        await server.wait_subscribers(1)
        sent = await publish(
            alice, channel, event="price", data={"eur": 1.5}, metadata={"market": "x"}
        )
        assert sent["type"] == "MESSAGE"
        assert sent["channelId"] == channel
        assert sent["roomId"] is None
        assert sent["userId"] == alice_id
        got = await received(sub)
        assert got == sent
        # Subscribers may publish too, and see their own messages.
        own = await publish(bob, channel, data=[1, 2, 3])
        assert await received(sub) == own
        assert (own["userId"], own["event"], own["data"], own["metadata"]) == (
            bob_id,
            None,
            [1, 2, 3],
            None,
        )
        await sub.complete()
        await server.wait_subscribers(0)


@pytest.mark.parametrize(
    ("channel_filter", "miss", "hit"),
    [
        ({"events": ["buy", "sell"]}, {"event": "hold"}, {"event": "sell"}),
        (
            {"metadata": {"market": "eu", "tier": 1}},
            {"event": "x", "metadata": {"market": "eu", "tier": 2}},
            {"event": "x", "metadata": {"market": "eu", "tier": 1, "extra": True}},
        ),
        (
            {"metadata": {"market": "eu"}},
            {"event": "x"},  # no metadata at all
            {"event": "x", "metadata": {"market": "eu"}},
        ),
        (
            {"events": ["buy"], "metadata": {"market": "eu"}},
            {"event": "buy", "metadata": {"market": "us"}},
            {"event": "buy", "metadata": {"market": "eu"}},
        ),
    ],
    ids=["events", "metadata", "metadata-missing", "events-and-metadata"],
)
async def test_filters_apply_on_the_server(
    server: LiveServer,
    channel_filter: dict[str, Any],
    miss: dict[str, Any],
    hit: dict[str, Any],
) -> None:
    async with bob_watches_a_channel_of_alice(server, channel_filter) as (alice, _, channel, sub):
        await publish(alice, channel, data="miss", **miss)
        wanted = await publish(alice, channel, data="hit", **hit)
        assert await received(sub) == wanted


async def test_user_ids_filter(server: LiveServer) -> None:
    alice_id, carol_id = unique("alice"), unique("carol")
    alice, bob, carol = (
        server.client(alice_id),
        server.client(unique("bob")),
        server.client(carol_id),
    )
    channel = (await create(alice))["id"]
    async with ws_connect(server, bob.token) as ws:
        only_carol = await ws.subscribe(WATCH, c=channel, filter={"userIds": [carol_id]})
        everyone = await ws.subscribe(WATCH, c=channel)
        await server.wait_subscribers(2)
        from_alice = await publish(alice, channel, data="a")
        from_carol = await publish(carol, channel, data="c")
        assert await received(only_carol) == from_carol
        assert await received(everyone) == from_alice
        assert await received(everyone) == from_carol
        only_carol.assert_quiet()
        await only_carol.complete()
        await everyone.complete()
        await server.wait_subscribers(0)


async def test_metadata_filter_must_be_an_object(server: LiveServer) -> None:
    alice, bob = server.client(unique("alice")), server.client(unique("bob"))
    channel = (await create(alice))["id"]
    async with ws_connect(server, bob.token) as ws:
        for bad in ([1, 2], "eu", 3):
            error = await ended_with(await ws.subscribe(WATCH, c=channel, filter={"metadata": bad}))
            assert error["extensions"]["code"] == "BAD_USER_INPUT"
            assert error["message"] == "filter.metadata must be an object"
        await server.wait_subscribers(0)
        # The connection keeps working with a good filter.
        sub = await ws.subscribe(WATCH, c=channel, filter={"metadata": {"k": "v"}})
        await server.wait_subscribers(1)
        sent = await publish(alice, channel, metadata={"k": "v"})
        assert await received(sub) == sent
        await sub.complete()
        await server.wait_subscribers(0)


async def test_private_channel_is_invisible_until_granted(server: LiveServer) -> None:
    alice_id, bob_id = unique("alice"), unique("bob")
    alice, bob = server.client(alice_id), server.client(bob_id)
    channel = await create(alice, private=True, name="secret")
    cid = channel["id"]
    assert channel["isPrivate"] is True

    assert (await bob.execute(CHANNEL, id=cid))["channel"] is None
    assert cid not in await channel_ids(bob)
    error = await bob.error(PUBLISH, c=cid, data="hi")
    assert error.code == "NOT_FOUND"
    assert cid in str(error)
    for mutation in (GRANT, REVOKE):
        assert (await bob.error(mutation, c=cid, u=bob_id)).code == "NOT_FOUND"
    assert (await bob.error(DELETE, id=cid)).code == "NOT_FOUND"
    async with ws_connect(server, bob.token) as ws:
        error_frame = await ended_with(await ws.subscribe(WATCH, c=cid))
        assert error_frame["extensions"]["code"] == "NOT_FOUND"
    await server.wait_subscribers(0)
    # Bob's attempts changed nothing: still private, still alice's, still there.
    assert (await alice.execute(CHANNEL, id=cid))["channel"] == channel

    assert (await alice.execute(GRANT, c=cid, u=bob_id)) == {"grantChannel": True}
    assert (await bob.execute(CHANNEL, id=cid))["channel"] == channel
    assert cid in await channel_ids(bob)
    async with ws_connect(server, bob.token) as ws:
        sub = await ws.subscribe(WATCH, c=cid)
        await server.wait_subscribers(1)
        sent = await publish(bob, cid, data="granted")
        assert await received(sub) == sent
        # A grantee is not the creator: no grants of its own.
        carol = unique("carol")
        assert (await bob.error(GRANT, c=cid, u=carol)).code == "FORBIDDEN"
        assert (await server.client(carol).execute(CHANNEL, id=cid))["channel"] is None
        await sub.complete()
        await server.wait_subscribers(0)


async def test_revoke_ends_the_revoked_users_subscription(server: LiveServer) -> None:
    alice_id, bob_id = unique("alice"), unique("bob")
    alice, bob = server.client(alice_id), server.client(bob_id)
    cid = (await create(alice, private=True))["id"]
    await alice.execute(GRANT, c=cid, u=bob_id)
    async with ws_connect(server, alice.token) as wa, ws_connect(server, bob.token) as wb:
        alice_sub = await wa.subscribe(WATCH, c=cid)
        bob_sub = await wb.subscribe(WATCH, c=cid)
        await server.wait_subscribers(2)
        first = await publish(alice, cid, data=1)
        assert await received(alice_sub) == first
        assert await received(bob_sub) == first

        assert (await alice.execute(REVOKE, c=cid, u=bob_id)) == {"revokeChannel": True}
        error = await ended_with(bob_sub)
        assert error["extensions"]["code"] == "NOT_FOUND"
        await server.wait_subscribers(1)

        # The creator's subscription goes on; bob can no longer see or publish.
        second = await publish(alice, cid, data=2)
        assert await received(alice_sub) == second
        assert (await bob.error(PUBLISH, c=cid, data=3)).code == "NOT_FOUND"
        assert (await bob.execute(CHANNEL, id=cid))["channel"] is None
        # Revoking again reports that there was nothing to take.
        assert (await alice.execute(REVOKE, c=cid, u=bob_id)) == {"revokeChannel": False}
        alice_sub.assert_quiet()
        await alice_sub.complete()
        await server.wait_subscribers(0)


async def test_delete_channel_only_by_creator_and_ends_subscriptions(server: LiveServer) -> None:
    alice, bob = server.client(unique("alice")), server.client(unique("bob"))
    channel = await create(alice)
    cid = channel["id"]
    error = await bob.error(DELETE, id=cid)
    assert error.code == "FORBIDDEN"
    assert (await bob.execute(CHANNEL, id=cid))["channel"] == channel

    async with ws_connect(server, bob.token) as ws:
        sub = await ws.subscribe(WATCH, c=cid)
        await server.wait_subscribers(1)
        sent = await publish(alice, cid, data="still here")
        assert await received(sub) == sent
        assert (await alice.execute(DELETE, id=cid)) == {"deleteChannel": True}
        error_frame = await ended_with(sub)
        assert error_frame["extensions"]["code"] == "NOT_FOUND"
        await server.wait_subscribers(0)

    assert (await alice.execute(CHANNEL, id=cid))["channel"] is None
    assert cid not in await channel_ids(alice)
    assert (await alice.error(PUBLISH, c=cid, data="x")).code == "NOT_FOUND"
    assert (await alice.error(DELETE, id=cid)).code == "NOT_FOUND"


async def test_grants_do_not_survive_delete_and_recreate(server: LiveServer) -> None:
    alice, bob_id, carol = server.client(unique("alice")), unique("bob"), server.client(unique("c"))
    bob = server.client(bob_id)
    cid = unique("ch")
    await alice.execute(CREATE, id=cid, name="old", private=True)
    await alice.execute(GRANT, c=cid, u=bob_id)
    assert (await bob.execute(CHANNEL, id=cid))["channel"]["name"] == "old"
    await alice.execute(DELETE, id=cid)
    # Someone else takes the freed id for a private channel of their own.
    await carol.execute(CREATE, id=cid, name="new", private=True)
    assert (await bob.execute(CHANNEL, id=cid))["channel"] is None
    assert (await bob.error(PUBLISH, c=cid, data="x")).code == "NOT_FOUND"


async def test_unknown_channel_is_not_found(server: LiveServer) -> None:
    client = server.client(unique("u"))
    nope = unique("nope")
    assert (await client.execute(CHANNEL, id=nope))["channel"] is None
    operations: list[tuple[str, dict[str, Any]]] = [
        (PUBLISH, {"c": nope, "data": 1}),
        (DELETE, {"id": nope}),
        (GRANT, {"c": nope, "u": "x"}),
        (REVOKE, {"c": nope, "u": "x"}),
    ]
    await assert_not_found(server, client, nope, operations, (WATCH, {"c": nope}))
    assert nope not in await channel_ids(client)


async def test_channels_per_user_limit(server: LiveServer) -> None:
    alice, bob = server.client(unique("alice")), server.client(unique("bob"))
    made = [(await create(alice, name=f"c{i}"))["id"] for i in range(5)]
    extra = unique("ch")
    error = await alice.error(CREATE, id=extra, name="one too many", private=False)
    assert error.code == "LIMIT_EXCEEDED"
    assert (await alice.execute(CHANNEL, id=extra))["channel"] is None
    assert set(made) <= await channel_ids(alice)
    # Others are not limited by alice's channels.
    assert (await create(bob))["id"]
    # Deleting one makes room for another.
    await alice.execute(DELETE, id=made[0])
    replacement = await alice.execute(CREATE, id=extra, name="replacement", private=False)
    assert replacement["createChannel"]["id"] == extra


async def test_limit_error_keeps_its_code_under_concurrent_requests(server: LiveServer) -> None:
    """Error translation (LimitReached -> LIMIT_EXCEEDED) must hold for each of
    many requests in flight at once, not only for a request alone."""
    alice = server.client(unique("alice"))
    for i in range(5):
        await create(alice, name=f"c{i}")
    readers = [server.client(unique("reader")) for _ in range(10)]
    over = 'mutation { createChannel(input: {name: "over"}) { id } }'
    responses = await asyncio.gather(
        *(alice.post(over) for _ in range(10)),
        *(reader.post(CHANNELS) for reader in readers),
    )
    errors = [r.json()["errors"][0] for r in responses[:10]]
    assert [e.get("extensions", {}).get("code") for e in errors] == ["LIMIT_EXCEEDED"] * 10
    assert all(not r.json().get("errors") for r in responses[10:])


async def test_message_size_limit_applies_to_publish(server: LiveServer) -> None:
    async with bob_watches_a_channel_of_alice(server) as (alice, _, cid, sub):
        error = await alice.error(PUBLISH, c=cid, data={"blob": "x" * 5000})
        assert error.code == "PAYLOAD_TOO_LARGE"
        error = await alice.error(PUBLISH, c=cid, data="ok", metadata={"blob": "x" * 5000})
        assert error.code == "PAYLOAD_TOO_LARGE"
        fits = await publish(alice, cid, data={"blob": "x" * 1000})
        # The first thing the subscriber sees is the message that fit.
        assert await received(sub) == fits


async def test_rate_limit_applies_to_publish(server: LiveServer) -> None:
    async with bob_watches_a_channel_of_alice(server) as (alice, bob, cid, sub):
        responses = await asyncio.gather(*(alice.post(PUBLISH, c=cid, data=i) for i in range(30)))
        bodies = [r.json() for r in responses]
        accepted = [b["data"]["publish"] for b in bodies if not b.get("errors")]
        codes = [b["errors"][0]["extensions"]["code"] for b in bodies if b.get("errors")]
        assert len(accepted) == 20  # max_messages_per_second
        assert codes == ["RATE_LIMITED"] * 10
        got = [await received(sub) for _ in accepted]
        assert sorted(m["id"] for m in got) == sorted(m["id"] for m in accepted)
        # Others are not limited by alice's burst, and nothing rejected was delivered.
        other = await publish(bob, cid, data="bob")
        assert await received(sub) == other
