"""schema/document_cache.py: valid documents are parsed and validated once
per schema; anything invalid is checked, and refused, every time."""

from __future__ import annotations

from strawberry.types import ExecutionResult

from schema import build_schema

# Depth 4: over the limit of a schema allowing 2, within one allowing 12.
DEEP = '{ history(roomId: "r", last: 1) { edges { node { id } } } }'
TOO_DEEP = "exceeds maximum operation depth"


def depth_refused(result: ExecutionResult) -> bool:
    return any(TOO_DEEP in error.message for error in result.errors or ())


async def test_valid_documents_are_reused_and_invalid_ones_checked_every_time() -> None:
    schema = build_schema()
    for _ in range(3):
        result = await schema.execute("{ __typename }")
        assert result.errors is None and result.data == {"__typename": "Query"}
    for _ in range(3):  # never taken for valid after a first refusal
        result = await schema.execute("{ nope }")
        assert result.errors, result
        assert "Cannot query field 'nope'" in result.errors[0].message
    for _ in range(3):
        result = await schema.execute("{ __typename")
        assert result.errors, result
        assert result.errors[0].message.startswith("Syntax Error")


async def test_each_schema_keeps_its_own_documents() -> None:
    deep, shallow = build_schema(max_depth=12), build_schema(max_depth=2)
    # (Run without a server's context, the resolver fails: not our concern.)
    assert not depth_refused(await deep.execute(DEEP))
    # Valid for the first schema, too deep for the second: its own check.
    assert depth_refused(await shallow.execute(DEEP))
    assert not depth_refused(await deep.execute(DEEP))
    assert depth_refused(await shallow.execute(DEEP))
