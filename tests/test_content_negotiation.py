"""Content negotiation on /graphql, over the wire (RFC 9110, GraphQL over HTTP).

A query or mutation streams only when the client prefers `text/event-stream`
to the JSON types it accepts; a subscription streams when the client accepts
a stream at all; only an actual stream is a presence connection.
`application/graphql-response+json` answers 400 without `data` when
execution did not start; `application/json` keeps 200 and `"data": null`.
Nothing acceptable: 406.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_SETTINGS
from tests.live import TIMEOUT, LiveServer, unique
from tests.sse_client import EventReader, auth, event_stream, request

URQL = (
    "application/graphql-response+json, application/graphql+json, application/json, "
    "text/event-stream, multipart/mixed"
)
GRAPHQL_RESPONSE = "application/graphql-response+json"
CREATE = 'mutation($id: ID!) { createRoom(input: {name: "neg", id: $id}) { id } }'
ROOM = "query($id: ID!) { room(id: $id) { id } }"
TYPING = "subscription($room: ID!) { typing(roomId: $room) { userId } }"


def post(query: str, **variables: Any) -> dict[str, Any]:
    return {"query": query, "variables": variables}


def errors_of(response: httpx.Response) -> list[str]:
    return [e["extensions"]["code"] for e in response.json()["errors"]]


async def room_exists(server: LiveServer, token: str, room: str) -> bool:
    response = await request(server, "POST", token, json=post(ROOM, id=room))
    return bool(response.json()["data"]["room"])


# --- which answer -------------------------------------------------------------------


async def test_query_accepting_json_and_streams_gets_json(server: LiveServer) -> None:
    """The issue's reproduction: this used to be an event stream."""
    user = unique("u")
    response = await request(
        server,
        "GET",
        server.token(user),
        params={"query": "{ me }"},
        headers={"Accept": "application/json, text/event-stream"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"data": {"me": user}}
    assert response.headers["vary"] == "accept"


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (URQL, GRAPHQL_RESPONSE),
        ("application/graphql-response+json,application/json;q=0.9", GRAPHQL_RESPONSE),
        ("application/json", "application/json"),
        ("*/*", "application/json"),
        (None, "application/json"),
        ("text/html;q=0.9, application/*;q=0.8", "application/json"),
    ],
)
async def test_single_result_media_type(
    server: LiveServer, accept: str | None, media_type: str
) -> None:
    user = unique("u")
    headers = {} if accept is None else {"Accept": accept}
    response = await request(
        server, "POST", server.token(user), json=post("{ me }"), headers=headers
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.json() == {"data": {"me": user}}


@pytest.mark.parametrize(
    "accept",
    [
        "text/event-stream",
        "text/event-stream, application/json",
        "application/json;q=0.5, text/event-stream",
    ],
)
async def test_query_streams_when_the_client_prefers_a_stream(
    server: LiveServer, accept: str
) -> None:
    user = unique("u")
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(TIMEOUT, read=None)) as http,
        http.stream(
            "POST",
            f"{server.url}/graphql",
            json=post("{ me }"),
            headers=auth(server.token(user), Accept=accept),
        ) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = EventReader(response)
        try:
            assert await reader.expect("next") == {"data": {"me": user}}
            assert (await reader.next()).event == "complete"
        finally:
            await reader.close()


@pytest.mark.parametrize("accept", [URQL, "*/*", "application/json, text/event-stream;q=0.1"])
async def test_subscription_streams_when_a_stream_is_acceptable(
    server: LiveServer, accept: str
) -> None:
    user = unique("u")
    token = server.token(user)
    room = unique("room")
    await request(server, "POST", token, json=post(CREATE, id=room))
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(TIMEOUT, read=None)) as http,
        http.stream(
            "POST",
            f"{server.url}/graphql",
            json=post(TYPING, room=room),
            headers=auth(token, Accept=accept),
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        await server.wait_subscribers(1)
    await server.wait_subscribers(0)


@pytest.mark.parametrize("accept", [None, "", "application/json", "text/event-stream;q=0, */*"])
async def test_subscription_without_an_acceptable_stream_is_refused(
    server: LiveServer, accept: str | None
) -> None:
    """No Accept header means `application/json` (GraphQL over HTTP)."""
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        del http.headers["accept"]  # httpx sends `*/*` unless told otherwise
        response = await http.post(
            f"{server.url}/graphql",
            json=post(TYPING, room="r"),
            headers=auth(
                server.token(unique("u")), **({} if accept is None else {"Accept": accept})
            ),
        )
        assert ("accept" in response.request.headers) is (accept is not None)
    assert response.status_code == 400
    assert errors_of(response) == ["BAD_USER_INPUT"]
    assert "text/event-stream" in response.json()["errors"][0]["message"]


# --- presence ---------------------------------------------------------------------


async def test_requests_are_not_presence_connections(server: LiveServer) -> None:
    """With every connection the user may hold open as real streams, requests
    with urql's Accept still run: they are not connections. (They were: 12 of
    20 concurrent urql mutations failed with LIMIT_EXCEEDED.)"""
    limit = TEST_SETTINGS["max_connections_per_user"]
    assert isinstance(limit, int)
    user = unique("u")
    token = server.token(user)
    room = unique("room")
    await request(server, "POST", token, json=post(CREATE, id=room))
    subscribe = post(TYPING, room=room)
    streams = [event_stream(server, token, json=subscribe) for _ in range(limit)]
    readers = [await s.__aenter__() for s in streams]
    try:
        await server.wait_subscribers(limit)
        opened = server.metric("streaming_connections_total")
        answers = await asyncio.gather(
            *(
                request(server, "POST", token, json=post("{ me }"), headers={"Accept": URQL})
                for _ in range(10)
            ),
            *(
                request(
                    server,
                    "POST",
                    token,
                    json=post("mutation($room: ID!) { startTyping(roomId: $room) }", room=room),
                    headers={"Accept": URQL},
                )
                for _ in range(2)
            ),
        )
        assert [a.status_code for a in answers] == [200] * 12
        assert all("errors" not in a.json() for a in answers), [a.json() for a in answers]
        # No connection was opened for them (one that opened and closed at once
        # would have made the user flap ONLINE -> OFFLINE for presence subscribers).
        assert server.metric("streaming_connections_total") == opened
        # Real streams are still counted.
        over = await request(server, "POST", token, json=subscribe, headers={"Accept": URQL})
        assert over.status_code == 429
        assert errors_of(over) == ["LIMIT_EXCEEDED"]
    finally:
        for stream in streams:
            await stream.__aexit__(None, None, None)
        del readers
    await server.wait_subscribers(0)


# --- application/graphql-response+json status codes ----------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"query": "{"}, "GRAPHQL_VALIDATION_FAILED"),  # parse
        ({"query": "{ noSuchField }"}, "GRAPHQL_VALIDATION_FAILED"),  # validation
        (  # variable coercion
            {"query": "query($id: ID!) { room(id: $id) { id } }", "variables": {"id": None}},
            None,
        ),
    ],
    ids=["parse", "validation", "coercion"],
)
async def test_refused_before_execution(
    server: LiveServer, body: dict[str, Any], code: str | None
) -> None:
    token = server.token(unique("u"))
    response = await request(server, "POST", token, json=body, headers={"Accept": GRAPHQL_RESPONSE})
    assert response.status_code == 400
    assert response.headers["content-type"] == GRAPHQL_RESPONSE
    payload = response.json()
    assert "data" not in payload  # GraphQL spec §7.1.2
    assert payload["errors"]
    if code is not None:
        assert errors_of(response) == [code]
    # application/json keeps its legacy answer: 200 and `"data": null`.
    legacy = await request(server, "POST", token, json=body, headers={"Accept": "application/json"})
    assert legacy.status_code == 200
    assert legacy.headers["content-type"] == "application/json"
    assert legacy.json() == {**payload, "data": None}


async def test_field_error_is_2xx_with_data(server: LiveServer) -> None:
    token = server.token(unique("u"))
    body = post("query($id: ID!) { history(roomId: $id) { edges { cursor } } }", id="nope")
    response = await request(server, "POST", token, json=body, headers={"Accept": GRAPHQL_RESPONSE})
    assert response.status_code == 200
    payload = response.json()
    assert payload["data"] is None
    assert errors_of(response) == ["NOT_FOUND"]
    assert payload["errors"][0]["path"] == ["history"]


async def test_subscription_over_plain_http_as_graphql_response(server: LiveServer) -> None:
    token = server.token(unique("u"))
    response = await request(
        server, "POST", token, json=post(TYPING, room="r"), headers={"Accept": GRAPHQL_RESPONSE}
    )
    assert response.status_code == 400
    assert "data" not in response.json()
    assert errors_of(response) == ["BAD_USER_INPUT"]


async def test_authentication_and_size_refusals_are_unchanged(server: LiveServer) -> None:
    headers = {"Accept": GRAPHQL_RESPONSE}
    unauthenticated = await request(server, "POST", None, json=post("{ me }"), headers=headers)
    assert unauthenticated.status_code == 401
    assert errors_of(unauthenticated) == ["UNAUTHENTICATED"]
    token = server.token(unique("u"))
    huge = post("query($x: String) { me }", x="x" * 200_000)
    too_large = await request(server, "POST", token, json=huge, headers=headers)
    assert too_large.status_code == 413
    assert errors_of(too_large) == ["PAYLOAD_TOO_LARGE"]


# --- not acceptable -------------------------------------------------------------------


@pytest.mark.parametrize(
    "accept",
    [
        "text/html",
        "application/xml, text/plain;q=0.5",
        "application/json;q=0",
        "*/*;q=0",
        "application/json;q=0, application/graphql-response+json;q=0, text/event-stream;q=0",
        "nonsense",
        "application/json;q=2",
        "*/json",
    ],
)
async def test_nothing_acceptable_is_406_and_runs_nothing(server: LiveServer, accept: str) -> None:
    token = server.token(unique("u"))
    room = unique("room")
    response = await request(
        server, "POST", token, json=post(CREATE, id=room), headers={"Accept": accept}
    )
    assert response.status_code == 406
    assert response.headers["content-type"] == "application/json"
    assert errors_of(response) == ["NOT_ACCEPTABLE"]
    assert "application/graphql-response+json" in response.json()["errors"][0]["message"]
    assert not await room_exists(server, token, room)
