"""GraphQL over Server-Sent Events (graphql-sse protocol), both modes, over the wire.

Distinct connections mode: one request with `Accept: text/event-stream` per
operation. Single connection mode: PUT reserves a token, one stream per
token, operations POSTed with `extensions.operationId`, DELETE stops one.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_SETTINGS
from tests.live import TIMEOUT, GraphQLClient, LiveServer, unique
from tests.sse_client import TOKEN_HEADER, EventReader, event_stream, request

# Protocol conformance: also with the library fast paths off (tests/conftest.py).
pytestmark = pytest.mark.both_paths

ROOM_MESSAGES = """
subscription($roomId: ID!, $after: String) {
  roomMessages(roomId: $roomId, after: $after) { data }
}
"""
ROOM_MESSAGES_WITH_CURSOR = """
subscription($roomId: ID!) { roomMessages(roomId: $roomId) { cursor data } }
"""
SEND = """
mutation($id: ID!, $n: Int!) { sendMessage(input: {roomId: $id, data: {n: $n}}) { cursor } }
"""
CREATE = """
mutation($id: ID!, $p: Boolean) { createRoom(input: {name: "sse", id: $id, isPrivate: $p}) { id } }
"""
SEND_TEXT = """
mutation($id: ID!, $t: String!) { sendMessage(input: {roomId: $id, data: {t: $t}}) { id } }
"""
PRESENCE = "query($ids: [ID!]!) { presence(userIds: $ids) { userId status } }"


async def new_room(client: GraphQLClient, *, private: bool = False) -> str:
    room = unique("room")
    await client.execute(CREATE, id=room, p=private)
    return room


async def send(client: GraphQLClient, room: str, n: int) -> str:
    cursor: str = (await client.execute(SEND, id=room, n=n))["sendMessage"]["cursor"]
    return cursor


def subscribe(room: str, after: str | None = None) -> dict[str, Any]:
    return {"query": ROOM_MESSAGES, "variables": {"roomId": room, "after": after}}


async def missed_then_live(
    server: LiveServer, events: EventReader, client: GraphQLClient, room: str, missed: list[str]
) -> None:
    """The stream resumes with the messages `missed` (n 2 and 3, their
    cursors as event ids), then follows live: n 4 sent now, and no more."""
    assert [await next_message(events) for _ in range(2)] == list(zip((2, 3), missed, strict=True))
    await server.wait_subscribers(1)
    live = await send(client, room, 4)
    assert await next_message(events) == (4, live)
    events.assert_quiet()


async def next_message(reader: EventReader) -> tuple[int, str | None]:
    """(n, event id) of the next room message event."""
    event = await reader.next()
    assert event.event == "next", event
    payload = event.json()
    assert "errors" not in payload, payload
    return payload["data"]["roomMessages"]["data"]["n"], event.id


async def wait_status(client: GraphQLClient, user: str, status: str) -> None:
    """Poll presence until it says `status` (it changes by expiry, not by an event)."""
    deadline = time.monotonic() + TIMEOUT
    seen = None
    while time.monotonic() < deadline:
        entries = (await client.execute(PRESENCE, ids=[user]))["presence"]
        seen = entries[0]["status"] if entries else None
        if seen == status:
            return
        await asyncio.sleep(0.05)  # polling state that changes by expiry
    raise AssertionError(f"{user} is {seen}, expected {status}")


# --- distinct connections mode ---------------------------------------------------


async def test_subscription_streams_next_with_cursor_ids(server: LiveServer) -> None:
    alice = server.client(unique("alice"))
    room = await new_room(alice)
    async with event_stream(server, alice.token, json=subscribe(room)) as events:
        assert events.response.status_code == 200
        assert events.response.headers["content-type"].startswith("text/event-stream")
        await server.wait_subscribers(1)
        cursor = await send(alice, room, 1)
        event = await events.next()
        assert event.event == "next"
        # The id is the message's cursor; the client did not select `cursor`,
        # so the payload is exactly what it asked for.
        assert event.id == cursor
        assert event.json() == {"data": {"roomMessages": {"data": {"n": 1}}}}
    await server.wait_subscribers(0)


async def test_selected_cursor_is_kept_and_is_the_id(server: LiveServer) -> None:
    alice = server.client(unique("alice"))
    room = await new_room(alice)
    body = {"query": ROOM_MESSAGES_WITH_CURSOR, "variables": {"roomId": room}}
    async with event_stream(server, alice.token, json=body) as events:
        await server.wait_subscribers(1)
        cursor = await send(alice, room, 7)
        event = await events.next()
        assert event.id == cursor
        assert event.json()["data"]["roomMessages"] == {"cursor": cursor, "data": {"n": 7}}


async def test_query_over_post_is_one_next_then_complete(server: LiveServer) -> None:
    user = unique("u")
    client = server.client(user)
    async with event_stream(server, client.token, json={"query": "{ me }"}) as events:
        assert await events.expect("next") == {"data": {"me": user}}
        event = await events.next()
        assert (event.event, event.data) == ("complete", "")
        await events.ended()


async def test_get_with_query_params(server: LiveServer) -> None:
    user = unique("u")
    client = server.client(user)
    params = {"query": "query($ids: [ID!]!) { presence(userIds: $ids) { userId } }"}
    params["variables"] = f'{{"ids": ["{user}"]}}'
    async with event_stream(server, client.token, method="GET", params=params) as events:
        # The stream itself is this user's connection: it sees itself online.
        assert await events.expect("next") == {"data": {"presence": [{"userId": user}]}}
        assert (await events.next()).event == "complete"
        await events.ended()


async def test_validation_error_arrives_as_next_then_complete(server: LiveServer) -> None:
    client = server.client(unique("u"))
    body = {"query": "subscription { roomMessages(roomId: 1) { nope } }"}
    async with event_stream(server, client.token, json=body) as events:
        assert events.response.status_code == 200
        payload = await events.expect("next")
        assert payload["data"] is None
        assert "nope" in payload["errors"][0]["message"]
        assert payload["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        assert (await events.next()).event == "complete"
        await events.ended()


async def test_syntax_error_arrives_as_next_then_complete(server: LiveServer) -> None:
    client = server.client(unique("u"))
    async with event_stream(server, client.token, json={"query": "subscription {"}) as events:
        payload = await events.expect("next")
        assert payload["errors"][0]["message"].startswith("Syntax Error")
        assert (await events.next()).event == "complete"


async def test_permission_error_arrives_as_next_then_complete(server: LiveServer) -> None:
    owner, stranger = server.client(unique("owner")), server.client(unique("stranger"))
    room = await new_room(owner, private=True)
    async with event_stream(server, stranger.token, json=subscribe(room)) as events:
        payload = await events.expect("next")
        assert payload["data"] is None
        assert payload["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        assert (await events.next()).event == "complete"
        await events.ended()
    await server.wait_subscribers(0)


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_subscription_without_event_stream_accept_is_400(
    server: LiveServer, method: str
) -> None:
    client = server.client(unique("u"))
    body = subscribe("any-room")
    # Not `*/*` (httpx's default): that accepts a stream, and gets one.
    json_only = {"Accept": "application/json"}
    if method == "POST":
        response = await request(server, "POST", client.token, json=body, headers=json_only)
    else:
        params = {"query": body["query"], "variables": '{"roomId": "any-room"}'}
        response = await request(server, "GET", client.token, params=params, headers=json_only)
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert "text/event-stream" in error["message"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"


async def test_mutation_over_sse_runs_once(server: LiveServer) -> None:
    alice = server.client(unique("alice"))
    room = await new_room(alice)
    body = {"query": SEND, "variables": {"id": room, "n": 3}}
    async with event_stream(server, alice.token, json=body) as events:
        cursor = (await events.expect("next"))["data"]["sendMessage"]["cursor"]
        assert (await events.next()).event == "complete"
    history = await alice.execute(
        "query($id: ID!) { history(roomId: $id) { edges { cursor node { type } } } }", id=room
    )
    sent = [e["cursor"] for e in history["history"]["edges"] if e["node"]["type"] == "MESSAGE"]
    assert sent == [cursor]


async def test_request_problems_are_400_json(server: LiveServer) -> None:
    client = server.client(unique("u"))
    headers = {"Accept": "text/event-stream", "Content-Type": "application/json"}
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        bad_json = await http.post(
            f"{server.url}/graphql",
            content=b"{nope",
            headers={**headers, "Authorization": f"Bearer {client.token}"},
        )
        no_query = await http.post(
            f"{server.url}/graphql",
            json={"variables": {}},
            headers={**headers, "Authorization": f"Bearer {client.token}"},
        )
    for response in (bad_json, no_query):
        assert response.status_code == 400, response.text
        assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_unauthenticated_stream_is_401(server: LiveServer) -> None:
    for token in (None, "not-a-jwt"):
        response = await request(
            server, "POST", token, json={"query": "{ me }"}, headers={"Accept": "text/event-stream"}
        )
        assert response.status_code == 401
        assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_keep_alive_comments(make_server: type[LiveServer], tmp_path: Any) -> None:
    live = make_server(tmp_path / "s", {**TEST_SETTINGS, "ping_interval": "300ms"}).start()
    alice = live.client(unique("alice"))
    room = await new_room(alice)
    async with event_stream(live, alice.token, json=subscribe(room)) as events:
        assert await events.comment() == ""  # the stream opens with an empty comment
        assert await events.comment(timeout=3) == "ping"
        assert await events.comment(timeout=3) == "ping"
        events.assert_quiet()


async def test_stream_is_a_presence_connection_released_on_disconnect(
    server: LiveServer,
) -> None:
    user = unique("u")
    client = server.client(user)
    room = await new_room(client)
    async with event_stream(server, client.token, json=subscribe(room)):
        await server.wait_subscribers(1)
        await wait_status(client, user, "ONLINE")
    # The client closed the connection: the server lets go of everything.
    await server.wait_subscribers(0)
    await wait_status(client, user, "OFFLINE")


async def test_connection_limit_applies_to_streams(server: LiveServer) -> None:
    limit = TEST_SETTINGS["max_connections_per_user"]
    assert isinstance(limit, int)
    client = server.client(unique("u"))
    room = await new_room(client)
    streams = [event_stream(server, client.token, json=subscribe(room)) for _ in range(limit)]
    readers = [await s.__aenter__() for s in streams]
    try:
        await server.wait_subscribers(limit)
        response = await request(
            server,
            "POST",
            client.token,
            json=subscribe(room),
            headers={"Accept": "text/event-stream"},
        )
        assert response.status_code == 429
        [error] = response.json()["errors"]
        assert error["extensions"]["code"] == "LIMIT_EXCEEDED"
        assert all(r.response.status_code == 200 for r in readers)
    finally:
        for s in streams:
            await s.__aexit__(None, None, None)
    await server.wait_subscribers(0)


async def test_resume_with_after_then_live(server: LiveServer) -> None:
    alice = server.client(unique("alice"))
    room = await new_room(alice)
    first = await send(alice, room, 1)
    missed = [await send(alice, room, n) for n in (2, 3)]
    async with event_stream(server, alice.token, json=subscribe(room, after=first)) as events:
        await missed_then_live(server, events, alice, room, missed)


async def test_last_event_id_resumes_and_overrides_after(server: LiveServer) -> None:
    alice = server.client(unique("alice"))
    room = await new_room(alice)
    first = await send(alice, room, 1)
    missed = [await send(alice, room, n) for n in (2, 3)]
    # `after` says "only what follows the 3rd"; the browser's Last-Event-ID wins.
    body = subscribe(room, after=missed[-1])
    async with event_stream(
        server, alice.token, json=body, headers={"Last-Event-ID": first}
    ) as events:
        await missed_then_live(server, events, alice, room, missed)


async def test_last_event_id_without_after_argument(server: LiveServer) -> None:
    alice = server.client(unique("alice"))
    room = await new_room(alice)
    first = await send(alice, room, 1)
    second = await send(alice, room, 2)
    query = f'subscription {{ roomMessages(roomId: "{room}") {{ data }} }}'
    async with event_stream(
        server, alice.token, json={"query": query}, headers={"Last-Event-ID": first}
    ) as events:
        assert await next_message(events) == (2, second)
        await server.wait_subscribers(1)
        events.assert_quiet()


async def test_event_id_is_the_cursor_whatever_the_selection_calls_cursor(
    server: LiveServer,
) -> None:
    # The id comes from the message, not from the payload: a `cursor` key
    # that is another field, or the cursor under another name, changes nothing.
    alice = server.client(unique("alice"))
    room = await new_room(alice)
    query = "subscription($r: ID!) { roomMessages(roomId: $r) { cursor: id c: cursor data } }"
    body = {"query": query, "variables": {"r": room}}
    async with event_stream(server, alice.token, json=body) as events:
        await server.wait_subscribers(1)
        cursor = await send(alice, room, 8)
        event = await events.next()
        assert event.id == cursor
        message = event.json()["data"]["roomMessages"]
        assert message["c"] == cursor
        assert message["cursor"] != cursor  # the message's id, as selected
        assert sorted(message) == ["c", "cursor", "data"]


@pytest.mark.fast_paths_only("the SSE outbox takes no fast path: a second run adds 55 s, no test")
async def test_client_that_never_reads_is_dropped(
    make_server: type[LiveServer], tmp_path: Any
) -> None:
    settings = {
        **TEST_SETTINGS,
        "subscriber_queue_size": 4,
        "write_timeout": "500ms",
        "max_message_size": 65536,
        "max_messages_per_second": 10000,
    }
    live = make_server(tmp_path / "s", settings).start()
    alice = live.client(unique("alice"))
    room = await new_room(alice)
    # A raw socket that sends the request and then never reads a byte.
    body = json.dumps(subscribe(room)).encode()
    sock = socket.create_connection(("127.0.0.1", live.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(
        b"POST /graphql HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
        b"Content-Type: application/json\r\n"
        + f"Authorization: Bearer {alice.token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    try:
        async with event_stream(live, alice.token, json=subscribe(room)) as reader:
            await live.wait_subscribers(2)
            big = "x" * 60000
            sent = 0
            # Publish until the server cuts off the stalled client; the reader
            # keeps up and must see every message.
            while sent < 400:
                await alice.execute(SEND_TEXT, id=room, t=big)
                sent += 1
                event = await reader.next()
                assert event.event == "next" and "errors" not in event.json(), event.data[:200]
                if await asyncio.to_thread(live.metric, "streaming_subscriptions_active") == 1:
                    break
            await live.wait_subscribers(1)
            assert sent < 400, "the stalled client was never dropped"
    finally:
        sock.close()
    await live.wait_subscribers(0)


# --- single connection mode ---------------------------------------------------------


async def reserve(server: LiveServer, token: str | None) -> str:
    response = await request(server, "PUT", token)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text
    return response.text


def open_stream(
    server: LiveServer, token: str | None, stream_token: str
) -> AbstractAsyncContextManager[EventReader]:
    """GET the reserved stream, its token in the header (single connection mode)."""
    return event_stream(server, token, method="GET", headers={TOKEN_HEADER: stream_token})


@asynccontextmanager
async def reserved_stream(
    server: LiveServer, token: str | None
) -> AsyncIterator[tuple[str, EventReader]]:
    """Reserve a stream (PUT) and open it: (its token, its events)."""
    stream_token = await reserve(server, token)
    async with open_stream(server, token, stream_token) as events:
        yield stream_token, events


async def operate(
    server: LiveServer,
    token: str | None,
    stream_token: str,
    op_id: str | None,
    body: dict[str, Any],
) -> httpx.Response:
    extensions = {} if op_id is None else {"operationId": op_id}
    return await request(
        server,
        "POST",
        token,
        json={**body, "extensions": extensions},
        headers={TOKEN_HEADER: stream_token},
    )


async def stop(
    server: LiveServer, token: str | None, stream_token: str | None, op_id: str | None
) -> httpx.Response:
    return await request(
        server,
        "DELETE",
        token,
        params={} if op_id is None else {"operationId": op_id},
        headers={} if stream_token is None else {TOKEN_HEADER: stream_token},
    )


async def test_single_connection_subscribe_receive_stop(server: LiveServer) -> None:
    alice = server.client(unique("alice"))
    room = await new_room(alice)
    async with reserved_stream(server, alice.token) as (stream_token, events):
        assert events.response.status_code == 200
        response = await operate(server, alice.token, stream_token, "op-1", subscribe(room))
        assert response.status_code == 202, response.text
        await server.wait_subscribers(1)
        cursor = await send(alice, room, 5)
        event = await events.next()
        assert event.event == "next"
        assert event.id == cursor
        assert event.json() == {
            "id": "op-1",
            "payload": {"data": {"roomMessages": {"data": {"n": 5}}}},
        }
        assert (await stop(server, alice.token, stream_token, "op-1")).status_code == 200
        assert await events.expect("complete") == {"id": "op-1"}
        await server.wait_subscribers(0)


async def test_single_connection_query_then_complete_via_query_param_token(
    server: LiveServer,
) -> None:
    user = unique("u")
    client = server.client(user)
    stream_token = await reserve(server, client.token)
    async with event_stream(
        server, client.token, method="GET", params={"token": stream_token}
    ) as events:
        response = await operate(server, client.token, stream_token, "q", {"query": "{ me }"})
        assert response.status_code == 202
        assert await events.expect("next") == {"id": "q", "payload": {"data": {"me": user}}}
        assert await events.expect("complete") == {"id": "q"}
        # The operation is over; its id may be used again.
        response = await operate(server, client.token, stream_token, "q", {"query": "{ me }"})
        assert response.status_code == 202
        assert (await events.next()).event == "next"
        assert (await events.next()).event == "complete"


async def test_single_connection_last_event_id_resumes_the_operation(
    server: LiveServer,
) -> None:
    # An operation POSTed with Last-Event-ID starts after that id, its own
    # `after` notwithstanding, and its events carry their cursors as ids.
    alice = server.client(unique("alice"))
    room = await new_room(alice)
    first = await send(alice, room, 1)
    missed = [await send(alice, room, n) for n in (2, 3)]
    async with reserved_stream(server, alice.token) as (stream_token, events):
        response = await request(
            server,
            "POST",
            alice.token,
            json={**subscribe(room, after=missed[-1]), "extensions": {"operationId": "r"}},
            headers={TOKEN_HEADER: stream_token, "Last-Event-ID": first},
        )
        assert response.status_code == 202, response.text
        for n, cursor in zip((2, 3), missed, strict=True):
            event = await events.next()
            assert (event.event, event.id) == ("next", cursor)
            assert event.json() == {
                "id": "r",
                "payload": {"data": {"roomMessages": {"data": {"n": n}}}},
            }
        await server.wait_subscribers(1)
        live = await send(alice, room, 4)
        event = await events.next()
        assert event.id == live
        assert event.json()["payload"]["data"]["roomMessages"] == {"data": {"n": 4}}
        events.assert_quiet()


async def test_operations_before_the_stream_opens_are_delivered(server: LiveServer) -> None:
    user = unique("u")
    client = server.client(user)
    stream_token = await reserve(server, client.token)
    response = await operate(server, client.token, stream_token, "early", {"query": "{ me }"})
    assert response.status_code == 202
    async with open_stream(server, client.token, stream_token) as events:
        assert await events.expect("next") == {"id": "early", "payload": {"data": {"me": user}}}
        assert await events.expect("complete") == {"id": "early"}


async def test_second_stream_on_one_token_is_409(server: LiveServer) -> None:
    client = server.client(unique("u"))
    async with reserved_stream(server, client.token) as (stream_token, first):
        assert first.response.status_code == 200
        async with open_stream(server, client.token, stream_token) as second:
            assert second.response.status_code == 409
            await second.response.aread()
            assert second.response.json()["errors"][0]["message"] == "Stream already open"
        # The first stream is unaffected.
        response = await operate(server, client.token, stream_token, "q", {"query": "{ me }"})
        assert response.status_code == 202
        assert (await first.next()).event == "next"


async def test_duplicate_operation_id_is_409(server: LiveServer) -> None:
    alice = server.client(unique("alice"))
    room = await new_room(alice)
    async with reserved_stream(server, alice.token) as (stream_token, events):
        assert (
            await operate(server, alice.token, stream_token, "a", subscribe(room))
        ).status_code == 202
        await server.wait_subscribers(1)
        again = await operate(server, alice.token, stream_token, "a", subscribe(room))
        assert again.status_code == 409
        assert "already exists" in again.json()["errors"][0]["message"]
        # Still exactly one subscription, and it still delivers.
        await server.wait_subscribers(1)
        await send(alice, room, 1)
        assert (await events.expect("next"))["id"] == "a"
        events.assert_quiet()


async def test_unknown_token_is_404(server: LiveServer) -> None:
    client = server.client(unique("u"))
    async with event_stream(
        server, client.token, method="GET", headers={TOKEN_HEADER: "no-such-token"}
    ) as events:
        assert events.response.status_code == 404
    response = await operate(server, client.token, "no-such-token", "x", {"query": "{ me }"})
    assert response.status_code == 404
    assert response.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert (await stop(server, client.token, "no-such-token", "x")).status_code == 404


async def test_another_users_token_is_404(server: LiveServer) -> None:
    alice, mallory = server.client(unique("alice")), server.client(unique("mallory"))
    stream_token = await reserve(server, alice.token)
    async with open_stream(server, mallory.token, stream_token) as events:
        assert events.response.status_code == 404
    response = await operate(server, mallory.token, stream_token, "x", {"query": "{ me }"})
    assert response.status_code == 404
    assert (await stop(server, mallory.token, stream_token, "x")).status_code == 404
    # The owner's reservation is untouched by the attempts.
    async with open_stream(server, alice.token, stream_token) as events:
        assert events.response.status_code == 200


async def test_missing_token_or_operation_id_is_400(server: LiveServer) -> None:
    client = server.client(unique("u"))
    stream_token = await reserve(server, client.token)
    no_op_id = await operate(server, client.token, stream_token, None, {"query": "{ me }"})
    assert no_op_id.status_code == 400
    assert "Operation ID" in no_op_id.json()["errors"][0]["message"]
    assert (await stop(server, client.token, stream_token, None)).status_code == 400
    assert (await stop(server, client.token, None, "x")).status_code == 400
    empty = await request(server, "DELETE", client.token, params={"token": "", "operationId": "x"})
    assert empty.status_code == 400


async def test_delete_of_unknown_operation_is_200(server: LiveServer) -> None:
    client = server.client(unique("u"))
    stream_token = await reserve(server, client.token)
    response = await stop(server, client.token, stream_token, "never-started")
    assert response.status_code == 200


async def test_unauthenticated_single_connection_requests_are_401(server: LiveServer) -> None:
    client = server.client(unique("u"))
    stream_token = await reserve(server, client.token)
    responses = [
        await request(server, "PUT", None),
        await operate(server, None, stream_token, "x", {"query": "{ me }"}),
        await stop(server, None, stream_token, "x"),
    ]
    async with open_stream(server, None, stream_token) as events:
        responses.append(events.response)
        await events.response.aread()
    for response in responses:
        assert response.status_code == 401
        assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_single_connection_validation_error_is_400_permission_error_on_stream(
    server: LiveServer,
) -> None:
    owner, stranger = server.client(unique("owner")), server.client(unique("stranger"))
    room = await new_room(owner, private=True)
    async with reserved_stream(server, stranger.token) as (stream_token, events):
        invalid = await operate(server, stranger.token, stream_token, "bad", {"query": "{ nope }"})
        assert invalid.status_code == 400
        assert invalid.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        forbidden = await operate(server, stranger.token, stream_token, "p", subscribe(room))
        assert forbidden.status_code == 202
        payload = await events.expect("next")
        assert payload["id"] == "p"
        assert payload["payload"]["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        assert await events.expect("complete") == {"id": "p"}
        events.assert_quiet()  # nothing for the rejected "bad"
    await server.wait_subscribers(0)


async def test_stream_disconnect_releases_operations_presence_and_token(
    server: LiveServer,
) -> None:
    user = unique("u")
    client = server.client(user)
    room = await new_room(client)
    async with reserved_stream(server, client.token) as (stream_token, _):
        for op in ("a", "b"):
            response = await operate(server, client.token, stream_token, op, subscribe(room))
            assert response.status_code == 202
        await server.wait_subscribers(2)
        await wait_status(client, user, "ONLINE")
    await server.wait_subscribers(0)
    await wait_status(client, user, "OFFLINE")
    # The reservation ended with its stream.
    response = await operate(server, client.token, stream_token, "c", {"query": "{ me }"})
    assert response.status_code == 404


async def test_reservation_expires_without_a_stream(
    make_server: type[LiveServer], tmp_path: Any
) -> None:
    # Long enough for the first stop to come in time on a busy machine.
    live = make_server(tmp_path / "s", {**TEST_SETTINGS, "init_timeout": "1s"}).start()
    client = live.client(unique("u"))
    stream_token = await reserve(live, client.token)
    assert (await stop(live, client.token, stream_token, "x")).status_code == 200
    deadline = time.monotonic() + TIMEOUT
    while (status := (await stop(live, client.token, stream_token, "x")).status_code) == 200:
        assert time.monotonic() < deadline, "the reservation never expired"
        await asyncio.sleep(0.05)  # polling for an expiry the server does not announce
    assert status == 404
    async with open_stream(live, client.token, stream_token) as events:
        assert events.response.status_code == 404


async def test_pending_reservations_are_limited(server: LiveServer) -> None:
    limit = TEST_SETTINGS["max_connections_per_user"]
    assert isinstance(limit, int)
    client = server.client(unique("u"))
    for _ in range(limit):
        await reserve(server, client.token)
    response = await request(server, "PUT", client.token)
    assert response.status_code == 429
    assert response.json()["errors"][0]["extensions"]["code"] == "LIMIT_EXCEEDED"
