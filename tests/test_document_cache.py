"""schema/document_cache.py: valid documents are parsed and validated once
per schema; anything invalid is checked, and refused, every time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import strawberry.schema.schema as strawberry_schema
from strawberry.types import ExecutionResult

from schema import build_schema

# Depth 4: over the limit of a schema allowing 2, within one allowing 12.
DEEP = '{ history(roomId: "r", last: 1) { edges { node { id } } } }'
TOO_DEEP = "exceeds maximum operation depth"


def depth_refused(result: ExecutionResult) -> bool:
    return any(TOO_DEEP in error.message for error in result.errors or ())


@pytest.fixture
def strawberry_calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How often Strawberry itself parsed and validated a document (each
    time the cache did not hand it one)."""
    calls: Counter[str] = Counter()

    def counted(name: str) -> Callable[..., Any]:
        original = getattr(strawberry_schema, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return original(*args, **kwargs)

        return wrapper

    for name in ("parse", "validate_document"):
        monkeypatch.setattr(strawberry_schema, name, counted(name))
    return calls


async def test_valid_documents_are_reused_and_invalid_ones_checked_every_time(
    strawberry_calls: Counter[str],
) -> None:
    schema = build_schema()
    for _ in range(3):
        result = await schema.execute("{ __typename }")
        assert result.errors is None and result.data == {"__typename": "Query"}
    # Parsed and validated by the first request only; the others reuse it.
    assert strawberry_calls == {"parse": 1, "validate_document": 1}
    kept = schema.documents.get("{ __typename }")
    assert kept is not None
    await schema.execute("{ __typename }")
    assert schema.documents.get("{ __typename }") is kept

    strawberry_calls.clear()
    for _ in range(3):  # never taken for valid after a first refusal
        result = await schema.execute("{ nope }")
        assert result.errors, result
        assert "Cannot query field 'nope'" in result.errors[0].message
    assert strawberry_calls == {"parse": 3, "validate_document": 3}
    assert schema.documents.get("{ nope }") is None

    strawberry_calls.clear()
    for _ in range(3):
        result = await schema.execute("{ __typename")
        assert result.errors, result
        assert result.errors[0].message.startswith("Syntax Error")
    assert strawberry_calls == {"parse": 3}
    assert schema.documents.get("{ __typename") is None


async def test_each_schema_keeps_its_own_documents() -> None:
    deep, shallow = build_schema(max_depth=12), build_schema(max_depth=2)
    # (Run without a server's context, the resolver fails: not our concern.)
    assert not depth_refused(await deep.execute(DEEP))
    # Valid for the first schema, too deep for the second: its own check.
    assert depth_refused(await shallow.execute(DEEP))
    assert not depth_refused(await deep.execute(DEEP))
    assert depth_refused(await shallow.execute(DEEP))
