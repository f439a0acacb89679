"""Bounded input at the edge: every argument and input field has a declared
bound, checked before any resolver or backend sees the value; malformed
cursors and non-finite JSON numbers are BAD_USER_INPUT; no id can take a
NATS node offline."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from uuid import uuid4

import httpx
import pytest
import strawberry
from graphql import (
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
)
from graphql import build_schema as schema_from_sdl

from backends import topics
from backends.nats.link import key_token
from schema import SDL_PATH
from schema.bounds import BOUNDS, UnboundedArgument, apply_bounds
from tests.conftest import TEST_SETTINGS, require_service
from tests.live import GraphQLClient, LiveServer, ended_with, unique, ws_connect
from tests.sse_client import event_stream
from tests.test_messages import (
    HISTORY,
    ROOM_MESSAGES,
    SEND,
    all_messages,
    new_room,
    send,
    still_serving,
)

LONG_ID = "x" * 4100

# --- every argument has a bound ----------------------------------------------------------


def _needs_bound(type_: Any) -> bool:
    if isinstance(type_, GraphQLNonNull):
        return _needs_bound(type_.of_type)
    if isinstance(type_, GraphQLList):
        return True
    return isinstance(type_, GraphQLScalarType) and type_.name not in ("Int", "Boolean")


def test_every_argument_and_input_field_has_a_bound() -> None:
    """Walks the published schema: an ID, String, JSON or list argument or
    input field anywhere without a declared bound fails this test."""
    sdl = schema_from_sdl(SDL_PATH.read_text())
    coordinates: set[str] = set()
    for type_ in sdl.type_map.values():
        if type_.name.startswith("__"):
            continue
        if isinstance(type_, GraphQLObjectType):
            for field_name, field in type_.fields.items():
                for arg_name, arg in field.args.items():
                    if _needs_bound(arg.type):
                        coordinates.add(f"{type_.name}.{field_name}({arg_name}:)")
        elif isinstance(type_, GraphQLInputObjectType):
            for field_name, input_field in type_.fields.items():
                if _needs_bound(input_field.type):
                    coordinates.add(f"{type_.name}.{field_name}")
    assert coordinates, "the walk found nothing: is the SDL empty?"
    assert sorted(coordinates - set(BOUNDS)) == []
    assert sorted(set(BOUNDS) - coordinates) == []


@strawberry.input
class Nested:
    text: str


@strawberry.type
class EchoQuery:
    @strawberry.field
    def echo(self, word: str, count: int = 1, nested: Nested | None = None) -> str:
        return word * count


def test_a_schema_with_an_unbounded_argument_does_not_build() -> None:
    graphql_schema = strawberry.Schema(query=EchoQuery)._schema
    with pytest.raises(UnboundedArgument, match=r"EchoQuery\.echo\(word:\) has no bound"):
        apply_bounds(graphql_schema, {})
    with pytest.raises(UnboundedArgument, match=r"Nested\.text has no bound"):
        apply_bounds(graphql_schema, {"EchoQuery.echo(word:)": BOUNDS["Query.room(id:)"]})
    with pytest.raises(UnboundedArgument, match=r"bounds for nothing.*EchoQuery\.gone\(x:\)"):
        apply_bounds(
            graphql_schema,
            {
                "EchoQuery.echo(word:)": BOUNDS["Query.room(id:)"],
                "Nested.text": BOUNDS["CreateRoomInput.name"],
                "EchoQuery.gone(x:)": BOUNDS["Query.room(id:)"],
            },
        )


# --- over the wire -------------------------------------------------------------------


def _code_and_argument(body: dict[str, Any]) -> tuple[str, str | None]:
    errors = body.get("errors")
    assert errors, body
    extensions = errors[0].get("extensions", {})
    return extensions.get("code"), extensions.get("argument")


async def _post(client: GraphQLClient, query: str, **variables: Any) -> dict[str, Any]:
    response = await client.post(query, **variables)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _no_traceback(server: LiveServer) -> None:
    log = server.log()
    assert "Traceback" not in log, log[-4000:]


ROOM = "query($id: ID!) { room(id: $id) { id } }"
ADD = "mutation($room: ID!, $user: ID!) { addMember(roomId: $room, userId: $user) { userId } }"
MEMBERS = "query($id: ID!) { room(id: $id) { members { userId } } }"

# (document, variables with "@room" for a room the caller owns, the argument named)
OUT_OF_BOUNDS: list[tuple[str, dict[str, Any], str]] = [
    (ROOM, {"id": LONG_ID}, "id"),
    (ROOM, {"id": "a.b"}, "id"),
    ("query($id: ID!) { channel(id: $id) { id } }", {"id": LONG_ID}, "id"),
    ("query($r: ID!) { history(roomId: $r) { edges { cursor } } }", {"r": LONG_ID}, "roomId"),
    (
        "query($r: ID!, $t: ID) { history(roomId: $r, threadId: $t) { edges { cursor } } }",
        {"r": "@room", "t": "t\u0000"},
        "threadId",
    ),
    ("query($u: [ID!]!) { presence(userIds: $u) { userId } }", {"u": ["u"] * 201}, "userIds"),
    ("query($u: [ID!]!) { presence(userIds: $u) { userId } }", {"u": ["a\u0000b"]}, "userIds"),
    ("query($r: ID!) { roomPresence(roomId: $r) { userId } }", {"r": LONG_ID}, "roomId"),
    ("query($r: ID!) { typingUsers(roomId: $r) }", {"r": LONG_ID}, "roomId"),
    (ADD, {"room": "@room", "user": "victim\u0000"}, "userId"),
    (ADD, {"room": "@room", "user": "tab\there"}, "userId"),
    (ADD, {"room": "@room", "user": "u" * 257}, "userId"),
    (ADD, {"room": "@room", "user": ""}, "userId"),
    (ADD, {"room": LONG_ID, "user": "bob"}, "roomId"),
    (
        "mutation($r: ID!, $u: ID!) { banMember(roomId: $r, userId: $u) }",
        {"r": "@room", "u": "x" * 300},
        "userId",
    ),
    (
        "mutation($c: ID!, $u: ID!) { grantChannel(channelId: $c, userId: $u) }",
        {"c": LONG_ID, "u": "bob"},
        "channelId",
    ),
    (
        "mutation($r: ID!) { sendMessage(input: {roomId: $r, data: 1}) { id } }",
        {"r": LONG_ID},
        "roomId",
    ),
    (
        "mutation($r: ID!, $c: String) "
        "{ sendMessage(input: {roomId: $r, clientMessageId: $c}) { id } }",
        {"r": "@room", "c": "c" * 129},
        "clientMessageId",
    ),
    (
        "mutation($r: ID!, $e: String) { sendMessage(input: {roomId: $r, event: $e}) { id } }",
        {"r": "@room", "e": "e" * 129},
        "event",
    ),
    (
        "mutation($n: String!) { createRoom(input: {name: $n}) { id } }",
        {"n": "n" * 201},
        "name",
    ),
    (
        'mutation($d: String) { createRoom(input: {name: "ok", description: $d}) { id } }',
        {"d": "d" * 2001},
        "description",
    ),
    (
        "mutation($t: String) { setPresence(status: ONLINE, statusText: $t) { userId } }",
        {"t": "t" * 257},
        "statusText",
    ),
    (
        'mutation($id: ID!) { updateRoom(id: $id, input: {name: "x"}) { id } }',
        {"id": LONG_ID},
        "id",
    ),
]


async def _over_the_wire(server: LiveServer) -> None:
    alice = server.client(unique("alice"))
    room_id = await new_room(alice)
    await send(alice, room_id, "keep")
    before = await all_messages(alice, room_id)
    members = await alice.execute(MEMBERS, id=room_id)
    for query, variables, argument in OUT_OF_BOUNDS:
        filled = {k: room_id if v == "@room" else v for k, v in variables.items()}
        body = await _post(alice, query, **filled)
        assert _code_and_argument(body) == ("BAD_USER_INPUT", argument), (query, body)
    async with ws_connect(server, alice.token) as ws:
        subscriptions: list[tuple[str, dict[str, Any], str]] = [
            (ROOM_MESSAGES, {"room": LONG_ID}, "roomId"),
            ("subscription($r: ID!) { typing(roomId: $r) { userId } }", {"r": LONG_ID}, "roomId"),
            (
                "subscription($u: [ID!]) { presence(userIds: $u) { userId } }",
                {"u": ["u"] * 201},
                "userIds",
            ),
            (
                "subscription($c: ID!, $u: [ID!]) "
                "{ channelMessages(channelId: $c, filter: {userIds: $u}) { id } }",
                {"c": "chan", "u": ["bad\u0001"]},
                "userIds",
            ),
            (
                "subscription($c: ID!, $e: [String!]) "
                "{ channelMessages(channelId: $c, filter: {events: $e}) { id } }",
                {"c": "chan", "e": ["e"] * 101},
                "events",
            ),
        ]
        for query, variables, argument in subscriptions:
            error = await ended_with(await ws.subscribe(query, **variables))
            assert error["extensions"]["code"] == "BAD_USER_INPUT", (query, error)
            assert error["extensions"]["argument"] == argument, (query, error)
    await server.wait_subscribers(0)
    assert await all_messages(alice, room_id) == before
    assert await alice.execute(MEMBERS, id=room_id) == members
    await still_serving(server)
    _no_traceback(server)


async def test_out_of_bounds_arguments_are_bad_user_input(server: LiveServer) -> None:
    await _over_the_wire(server)


async def test_every_real_user_stays_addressable(server: LiveServer) -> None:
    """A user id is valid in an argument exactly when it is valid as a token's
    `sub`: the longest and most unusual ones can be added and then read."""
    alice = server.client(unique("alice"))
    room_id = await new_room(alice, private=True)
    for user_id in ("ü" * 256, "carol@example.com", "名前 with spaces", "🙂" * 10):
        await alice.execute(ADD, room=room_id, user=user_id)
        other = server.client(user_id)
        assert (await other.execute(ROOM, id=room_id))["room"] == {"id": room_id}
        await send(other, room_id, f"hello from {len(user_id)}")


# --- cursors ---------------------------------------------------------------------------


def _bad_cursors(epoch: str) -> list[str]:
    return [
        f"{epoch}:²",
        f"{epoch}:١٢",  # Arabic-Indic digits, which int() accepts
        f"{epoch}:{2**63}",
        f"{epoch}:{10**30}",
        f"{epoch}:{2**64 + 1}",
        f"{epoch}:-1",
        f"{epoch}: 1",
        f"ép:{1}",
        f"{epoch}:1\u0000",
    ]


async def _cursor_checks(server: LiveServer) -> None:
    alice = server.client(unique("alice"))
    room_id = await new_room(alice)
    sent = await send(alice, room_id, "keep")
    epoch = sent["cursor"].rsplit(":", 1)[0]
    before = await all_messages(alice, room_id)
    for bad in _bad_cursors(epoch):
        for argument in ("after", "before"):
            error = await alice.error(HISTORY, room=room_id, **{argument: bad})
            assert error.code == "BAD_USER_INPUT", (bad, argument, error.errors)
            assert f"{argument}: malformed cursor" in str(error)
    # The largest offset is a cursor like any other: nothing after it.
    largest = await alice.execute(HISTORY, room=room_id, after=f"{epoch}:{2**63 - 1}")
    assert largest["history"]["edges"] == []
    async with ws_connect(server, alice.token) as ws:
        for bad in _bad_cursors(epoch):
            error_doc = await ended_with(await ws.subscribe(ROOM_MESSAGES, room=room_id, after=bad))
            assert error_doc["extensions"]["code"] == "BAD_USER_INPUT", bad
            assert "after: malformed cursor" in error_doc["message"]
    query = f'subscription {{ roomMessages(roomId: "{room_id}") {{ data }} }}'
    for bad in _bad_cursors(epoch):
        if "\u0000" in bad:
            continue  # not a header value
        # Header values are bytes: a client sends ² as UTF-8.
        header = cast(str, bad.encode())
        async with event_stream(
            server, alice.token, json={"query": query}, headers={"Last-Event-ID": header}
        ) as events:
            event = await events.next()
            assert event.event == "next", event
            errors = event.json()["errors"]
            assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT", (bad, errors)
    await server.wait_subscribers(0)
    assert await all_messages(alice, room_id) == before
    await still_serving(server)
    _no_traceback(server)


async def test_malformed_cursors_everywhere(server: LiveServer) -> None:
    await _cursor_checks(server)


@pytest.fixture
def redis_server(make_server: type[LiveServer], tmp_path: Path) -> LiveServer:
    require_service("Redis", 6379)
    url = f"redis://127.0.0.1:6379/0?namespace=t{uuid4().hex[:12]}"
    settings = {**TEST_SETTINGS, "backend": "redis", "backend_urls": [url]}
    return make_server(tmp_path / "redis-node", settings).start()


@pytest.fixture
def nats_server(make_server: type[LiveServer], tmp_path: Path) -> Iterator[LiveServer]:
    require_service("NATS", 4222)
    url = f"nats://127.0.0.1:4222?namespace=t{uuid4().hex[:12]}"
    settings = {**TEST_SETTINGS, "backend": "nats", "backend_urls": [url]}
    server = make_server(tmp_path / "nats-node", settings).start()
    yield server
    server.stop()  # before its data goes: a server never sees that happen
    from backends.nats.backend import delete_namespace

    asyncio.run(delete_namespace(url))


async def test_malformed_cursors_on_redis(redis_server: LiveServer) -> None:
    await _cursor_checks(redis_server)


# --- JSON numbers ------------------------------------------------------------------------


async def test_non_finite_json_is_refused(server: LiveServer) -> None:
    """`1e400` is infinite as a float, and `NaN` and `Infinity` are not JSON:
    refused, never stored as null."""
    alice = server.client(unique("alice"))
    room_id = await new_room(alice)
    before = await all_messages(alice, room_id)
    for literal in ("1e400", "-1e400", "[1, {a: 1e400}]"):
        query = (
            f'mutation {{ sendMessage(input: {{roomId: "{room_id}", data: {literal}}}) {{ id }} }}'
        )
        body = await _post(alice, query)
        assert _code_and_argument(body) == ("BAD_USER_INPUT", "data"), (literal, body)
        metadata = f"{{x: {literal}}}"
        query = f'mutation {{ createRoom(input: {{name: "n", metadata: {metadata}}}) {{ id }} }}'
        body = await _post(alice, query)
        assert _code_and_argument(body) == ("BAD_USER_INPUT", "metadata"), (literal, body)
    for data in ("1e400", '{"x": [1E400]}', "-1e999", "NaN", '{"x": Infinity}', "-Infinity"):
        template = {
            "query": "mutation($r: ID!, $d: JSON) "
            "{ sendMessage(input: {roomId: $r, data: $d}) { id } }",
            "variables": {"r": room_id, "d": "@DATA@"},
        }
        response = await alice.post_raw(json.dumps(template).replace('"@DATA@"', data))
        if response.status_code == 200:
            assert _code_and_argument(response.json())[0] == "BAD_USER_INPUT", (data, response.text)
        else:
            assert response.status_code == 400, (data, response.text)
    # Large finite numbers are fine.
    stored = await alice.execute(SEND, room=room_id, data={"text": "big", "n": 1e300})
    assert stored["sendMessage"]["data"]["n"] == 1e300
    assert len(await all_messages(alice, room_id)) == len(before) + 1
    _no_traceback(server)


# --- NATS: no id takes the node offline ----------------------------------------------


async def test_long_id_on_nats_is_bad_user_input_and_node_stays_up(
    nats_server: LiveServer,
) -> None:
    alice = nats_server.client(unique("alice"))
    body = await _post(alice, '{ room(id: "' + LONG_ID + '") { id } }')
    assert _code_and_argument(body) == ("BAD_USER_INPUT", "id")
    await _over_the_wire(nats_server)
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(f"{nats_server.url}/ready")).status_code == 200
    await still_serving(nats_server)
    _no_traceback(nats_server)


# --- backends bounded by construction -------------------------------------------------


_KV_KEY = re.compile(r"[-/_=.A-Za-z0-9]+")


def _escaped_as_before(value: str) -> str:
    """`topics.escape_token` as it was before tokens were bounded."""
    safe = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
    if value and all(c in safe for c in value):
        return value
    if not value:
        return "%"
    return "".join(c if c in safe else "".join(f"%{b:02X}" for b in c.encode()) for c in value)


def test_tokens_are_bounded_and_valid_ids_keep_theirs() -> None:
    kept = ["room-1", "a" * 64, "alice@example.com", "ü" * 170, "名前 with spaces", "u" * 256, ""]
    for value in kept:
        assert topics.escape_token(value) == _escaped_as_before(value), value
    long_ones = [LONG_ID, "ü" * 171, "x" * 1025, "🙂" * 300, "a.b*>" * 300]
    tokens = {topics.escape_token(v) for v in long_ones}
    assert len(tokens) == len(long_ones)
    for token in tokens:
        assert token.startswith("%%") and len(token) <= topics.MAX_TOKEN_LENGTH, token
        assert not any(c in token for c in ".*> \t\r\n")
    for value in long_ones:
        assert _KV_KEY.fullmatch(key_token(value)), value
    # Three of the longest tokens kept as they are still fit in a NATS
    # protocol line (4096 bytes) with the stream prefix around them.
    worst = ".".join(topics.escape_token("é" * 170) for _ in range(3))
    assert 3000 < len(worst) < 4096 - 200
