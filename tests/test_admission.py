"""A burst of requests starts its work a few at a time (transport/admission.py).

`TurnAdmission` lets `per_turn` requests start in one turn of the event loop
and the others wait, in order, for the following turns; a waiter that is
cancelled takes nobody's place. Against a live server admitting one request
a turn, a burst of every kind (valid and refused, HTTP, WebSocket, SSE) is
answered in full, each with its own answer and code, and the server serves
on. The store of valid documents remembers why a text was refused (every
path of one request reads it) and hands out a new error each time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from graphql import GraphQLError
from websockets.typing import Subprotocol

from schema import build_schema
from tests.conftest import TEST_SETTINGS
from tests.live import TIMEOUT, LiveServer, unique
from tests.sse_client import event_stream
from transport.admission import TurnAdmission

LIMIT = 16 * 1024
MAX_TOKENS = 300
TOKENS_REFUSED = f"Syntax Error: Document contains more than {MAX_TOKENS} tokens. Parsing aborted."


def many_tokens(n: int) -> str:
    return f'subscription {{ typing(roomId: "r{n}") {{ {"userId " * 400} }} }}'


def oversized(n: int) -> str:
    return f"# {n}" + "x" * LIMIT + "\n{ me }"


# --- the admission itself -----------------------------------------------------------------


class Turns:
    """Counts the event loop's turns: a callback that reschedules itself."""

    def __init__(self) -> None:
        self.count = 0
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self.count += 1
        self._handle = self._loop.call_soon(self._tick)

    def stop(self) -> None:
        self._handle.cancel()


async def test_at_most_per_turn_start_in_a_turn_and_the_rest_in_order() -> None:
    admission = TurnAdmission(2)
    turns = Turns()
    started: list[tuple[int, int]] = []

    async def request(n: int) -> None:
        await admission.admit()
        started.append((n, turns.count))

    try:
        await asyncio.wait_for(asyncio.gather(*(request(n) for n in range(7))), TIMEOUT)
    finally:
        turns.stop()
    assert [n for n, _ in started] == list(range(7))
    per_turn: dict[int, int] = {}
    for _, turn in started:
        per_turn[turn] = per_turn.get(turn, 0) + 1
    assert max(per_turn.values()) <= 2, started
    assert len(per_turn) >= 4, started
    assert admission.waiting == 0


async def test_a_cancelled_waiter_takes_nobodys_place() -> None:
    admission = TurnAdmission(1)
    admitted, first, second = (asyncio.create_task(admission.admit()) for _ in range(3))
    await asyncio.sleep(0)  # one turn: one admitted, two waiting
    assert admitted.done()
    assert admission.waiting == 2
    first.cancel()
    await asyncio.wait_for(second, TIMEOUT)
    assert first.cancelled()
    assert admission.waiting == 0
    # And the next turn admits again at once.
    await asyncio.wait_for(admission.admit(), TIMEOUT)


def test_per_turn_must_admit_someone() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        TurnAdmission(0)


# --- refusals remembered ------------------------------------------------------------------


def test_a_refusal_is_remembered_and_never_shared() -> None:
    documents = build_schema(
        max_depth=12, max_aliases=30, max_tokens=MAX_TOKENS, max_bytes=LIMIT
    ).documents
    first = documents.refusal(many_tokens(0))
    again = documents.refusal(many_tokens(0))
    assert isinstance(first, GraphQLError) and isinstance(again, GraphQLError)
    assert first is not again
    assert (first.message, first.locations) == (again.message, again.locations)
    assert first.message == TOKENS_REFUSED
    too_large = documents.refusal(oversized(0))
    assert too_large is not None and too_large.extensions == {"code": "PAYLOAD_TOO_LARGE"}
    too_large.extensions["code"] = "CHANGED"  # one answer's error is its own
    refused = documents.refusal(oversized(0))
    assert refused is not None and refused.extensions == {"code": "PAYLOAD_TOO_LARGE"}
    assert documents.refusal("{ me }") is None
    # A valid document is still parsed, validated and kept.
    checked = documents.check("{ me }")
    assert not isinstance(checked, list)
    assert documents.check("{ me }") is checked


# --- a burst against a live server --------------------------------------------------------


@pytest.fixture
def one_a_turn(make_server: type[LiveServer], tmp_path: Path) -> Iterator[LiveServer]:
    settings = {
        **TEST_SETTINGS,
        "max_request_bytes": LIMIT,
        "max_tokens": MAX_TOKENS,
        "max_admitted_per_turn": 1,
    }
    yield make_server(tmp_path, settings).start()


async def ws_subscribe(live: LiveServer, document: str) -> dict[str, Any]:
    """The first frame after `subscribe` on graphql-transport-ws."""
    async with websockets.connect(
        live.ws_url, subprotocols=[Subprotocol("graphql-transport-ws")], max_size=None
    ) as ws:
        token = live.token(unique("ws"))
        await ws.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert ack["type"] == "connection_ack", ack
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": document}}))
        while True:
            frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            if frame["type"] != "ping":
                return frame


async def test_a_burst_beyond_the_admission_is_answered_in_full(one_a_turn: LiveServer) -> None:
    live = one_a_turn

    async def valid(n: int) -> None:
        user = unique(f"valid{n}")
        assert await live.client(user).execute("{ me }") == {"me": user}

    async def too_many_tokens(n: int) -> None:
        error = await live.client(unique("u")).error(many_tokens(n).replace("subscription", ""))
        assert (error.code, str(error)) == ("GRAPHQL_VALIDATION_FAILED", TOKENS_REFUSED)

    async def too_large(http: httpx.AsyncClient, n: int) -> None:
        response = await http.post(
            f"{live.url}/graphql",
            json={"query": oversized(n)},
            headers={"Authorization": f"Bearer {live.token(unique('u'))}"},
        )
        assert response.status_code == 413, response.text
        assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"

    async def ws_refused(n: int) -> None:
        frame = await ws_subscribe(live, many_tokens(n))
        assert frame["type"] == "error", frame
        assert frame["payload"][0]["message"] == TOKENS_REFUSED

    async def ws_answered(n: int) -> None:
        frame = await ws_subscribe(live, "{ me }")
        assert frame["type"] == "next", frame
        assert frame["payload"]["data"]["me"].startswith("ws")

    async def sse_refused(n: int) -> None:
        token = live.token(unique("sse"))
        async with event_stream(live, token, json={"query": many_tokens(n)}) as events:
            payload = await events.expect("next")
            assert payload["errors"][0]["message"] == TOKENS_REFUSED
            assert (await events.next()).event == "complete"

    async def health(http: httpx.AsyncClient) -> None:
        assert (await http.get(f"{live.url}/health")).status_code == 200

    async with httpx.AsyncClient(timeout=TIMEOUT, limits=httpx.Limits(max_connections=200)) as http:
        await asyncio.wait_for(
            asyncio.gather(
                *(valid(n) for n in range(30)),
                *(too_many_tokens(n) for n in range(20)),
                *(too_large(http, n) for n in range(10)),
                *(ws_refused(n) for n in range(10)),
                *(ws_answered(n) for n in range(10)),
                *(sse_refused(n) for n in range(10)),
                *(health(http) for _ in range(5)),
            ),
            TIMEOUT * 3,
        )
    user = unique("after")
    assert await live.client(user).execute("{ me }") == {"me": user}
    live.wait_idle()
    assert "Traceback" not in live.log()
