"""schema/strawberry_adapter.py: Strawberry's internals on the version they
were written for, its public API otherwise; the same schema either way."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import strawberry.schema.schema as strawberry_schema
import uvicorn
import websockets
from strawberry.types import ExecutionResult
from websockets.typing import Subprotocol

from core.settings import load_settings
from schema import build_schema, strawberry_adapter
from schema.strawberry_adapter import WRITTEN_FOR, StrawberryAdapter
from server import create_app
from tests.conftest import TEST_SETTINGS
from tests.live import TIMEOUT, free_port
from transport.auth import TokenAuthority

OUT_OF_BOUNDS = '{ room(id: "not an id!") { id } }'
VALIDATION_FAILED = {"code": "GRAPHQL_VALIDATION_FAILED"}


def test_the_fast_path_only_on_the_version_it_was_written_for(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "forge_streaming.adapters")
    assert StrawberryAdapter.choose(fast_paths=True).fast
    assert not caplog.records
    assert not StrawberryAdapter.choose(fast_paths=False).fast
    monkeypatch.setattr(strawberry_adapter, "version", lambda _: "9.9.9")
    assert not StrawberryAdapter.choose(fast_paths=True).fast
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "strawberry: fast paths off (setting fast_paths): public API only",
        f"strawberry: 9.9.9 installed, adapter written for {WRITTEN_FOR}: public API only,"
        " Strawberry's own WebSocket handlers and GraphiQL page",
    ]


@pytest.mark.parametrize("fast_paths", [True, False], ids=["fast", "public"])
async def test_both_paths_bound_arguments_and_mask_errors(fast_paths: bool) -> None:
    schema = build_schema(fast_paths=fast_paths)
    result = await schema.execute(OUT_OF_BOUNDS)
    assert result.errors is not None
    assert [e.extensions for e in result.errors] == [{"code": "BAD_USER_INPUT", "argument": "id"}]
    # No server context: the resolver fails, and the client sees only a code.
    result = await schema.execute("{ me }")
    assert result.errors is not None
    assert [(e.message, e.extensions) for e in result.errors] == [
        ("Internal server error", {"code": "INTERNAL_SERVER_ERROR"})
    ]
    result = await schema.execute("{ nope }")
    assert result.errors is not None
    assert result.errors[0].extensions == {"code": "GRAPHQL_VALIDATION_FAILED"}


async def test_only_the_fast_path_skips_validating_a_known_document(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    schemas = {fast_paths: build_schema(fast_paths=fast_paths) for fast_paths in (True, False)}
    calls: Counter[bool] = Counter()
    original = strawberry_schema.validate_document
    for fast_paths, schema in schemas.items():

        def counted(*args: Any, path: bool = fast_paths) -> Any:
            calls[path] += 1
            return original(*args)

        monkeypatch.setattr(strawberry_schema, "validate_document", counted)
        for _ in range(3):
            assert (await schema.execute("{ __typename }")).errors is None
    assert calls == {True: 1, False: 3}


@pytest.mark.parametrize("fast_paths", [True, False], ids=["fast", "public"])
async def test_both_paths_refuse_over_the_limits_before_any_other_rule(fast_paths: bool) -> None:
    schema = build_schema(fast_paths=fast_paths, max_depth=2, max_aliases=2, max_tokens=50)
    # Each is also invalid otherwise (`nope` is no field): only the limit is
    # said, so no other rule met the document.
    deep = '{ nope history(roomId: "r") { edges { node { id } } } }'
    aliased = "{ nope a: me b: me c: me }"
    many = "query Q { nope " + "me " * 60 + "}"
    said = {}
    for query in (deep, aliased, many):
        result = await schema.execute(query)
        assert result.errors is not None, query
        said[query] = [(e.message, e.extensions) for e in result.errors]
        assert schema.documents.get(query) is None
    assert said == {
        deep: [
            ("'anonymous' exceeds maximum operation depth of 2", VALIDATION_FAILED),
        ],
        aliased: [("3 aliases found. Allowed: 2", VALIDATION_FAILED)],
        many: [
            (
                "Syntax Error: Document contains more than 50 tokens. Parsing aborted.",
                VALIDATION_FAILED,
            )
        ],
    }
    # A document within them runs; only the fast path learns it is valid
    # from Strawberry's validation (the public path keeps what other paths check).
    assert (await schema.execute("{ __typename }")).data == {"__typename": "Query"}
    assert (schema.documents.get("{ __typename }") is not None) is fast_paths


def test_graphiql_page_only_on_the_version_it_was_written_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    page = StrawberryAdapter.choose(fast_paths=False).graphiql_page()
    assert page is not None and "graphiql" in page
    monkeypatch.setattr(strawberry_adapter, "version", lambda _: "9.9.9")
    assert StrawberryAdapter.choose(fast_paths=True).graphiql_page() is None


@pytest.mark.parametrize("fast_paths", [True, False], ids=["fast", "public"])
async def test_both_paths_mask_errors_of_a_stream(fast_paths: bool) -> None:
    schema = build_schema(fast_paths=fast_paths)
    # No server context: the subscription fails as it starts.
    stream = await schema.subscribe('subscription { typing(roomId: "r") { __typename } }')
    assert not isinstance(stream, ExecutionResult)
    results = [result async for result in stream]
    errors = [(e.message, e.extensions) for r in results for e in r.errors or ()]
    assert errors == [("Internal server error", {"code": "INTERNAL_SERVER_ERROR"})]


@contextlib.asynccontextmanager
async def _serving(app: Any) -> AsyncIterator[str]:
    """`app` on a real uvicorn server in this process (so Strawberry's
    version can be told otherwise): its WebSocket URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + TIMEOUT
        while not server.started:
            if task.done() or time.monotonic() > deadline:
                raise AssertionError("the server did not start")
            await asyncio.sleep(0.01)  # polling uvicorn's own flag
        yield f"ws://127.0.0.1:{port}/graphql"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, TIMEOUT)


async def test_on_another_version_strawberrys_own_websocket_handlers_serve(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Ours override undocumented handler methods; a different installed
    # version is the one fault a test cannot cause, so it is told.
    monkeypatch.setattr(strawberry_adapter, "version", lambda _: "9.9.9")
    caplog.set_level(logging.INFO, "forge_streaming.adapters")
    settings = load_settings(None, data_dir=tmp_path, **TEST_SETTINGS)
    token = TokenAuthority.from_settings(settings).mint("alice")
    protocol = [Subprotocol("graphql-transport-ws")]
    async with _serving(create_app(settings)) as url:
        async with websockets.connect(url, subprotocols=protocol) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
            ack = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            assert ack == {"type": "connection_ack", "payload": {"userId": "alice"}}
            subscribe = {"type": "subscribe", "id": "1", "payload": {"query": "{ me }"}}
            await ws.send(json.dumps(subscribe))
            frames = [json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)) for _ in "12"]
            assert frames == [
                {"type": "next", "id": "1", "payload": {"data": {"me": "alice"}}},
                {"type": "complete", "id": "1"},
            ]
        async with websockets.connect(url, subprotocols=protocol) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {"token": "bad"}}))
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            # Strawberry's own refusal; ours would say UNAUTHENTICATED and why.
            assert (ws.close_code, ws.close_reason) == (4403, "Forbidden")
        async with httpx.AsyncClient() as http:
            page = await http.get(url.replace("ws://", "http://"), headers={"Accept": "text/html"})
        # Strawberry's own GraphiQL page: its assets from unpkg, not ours.
        assert page.status_code == 200 and "https://unpkg.com/graphiql@" in page.text
    said = [r.getMessage() for r in caplog.records if r.name == "forge_streaming.adapters"]
    assert (
        f"strawberry: 9.9.9 installed, adapter written for {WRITTEN_FOR}: public API only,"
        " Strawberry's own WebSocket handlers and GraphiQL page" in said
    )
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
