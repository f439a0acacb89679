"""schema/strawberry_adapter.py: Strawberry's internals on the version they
were written for, its public API otherwise; the same schema either way."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pytest
import strawberry.schema.schema as strawberry_schema
from strawberry.types import ExecutionResult

from schema import build_schema, strawberry_adapter
from schema.strawberry_adapter import WRITTEN_FOR, StrawberryAdapter

OUT_OF_BOUNDS = '{ room(id: "not an id!") { id } }'


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
        f"strawberry: 9.9.9 installed, adapter written for {WRITTEN_FOR}: public API only",
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
async def test_both_paths_mask_errors_of_a_stream(fast_paths: bool) -> None:
    schema = build_schema(fast_paths=fast_paths)
    # No server context: the subscription fails as it starts.
    stream = await schema.subscribe('subscription { typing(roomId: "r") { __typename } }')
    assert not isinstance(stream, ExecutionResult)
    results = [result async for result in stream]
    errors = [(e.message, e.extensions) for r in results for e in r.errors or ()]
    assert errors == [("Internal server error", {"code": "INTERNAL_SERVER_ERROR"})]
