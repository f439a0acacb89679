"""Flat input objects are built without Strawberry's field-by-field
conversion, into the same objects (schema/input_conversion.py).

The same mutations run on a small schema three times: with Strawberry's own
conversion (before any converter is installed), with the converter of a
schema built with `fast_paths` (which skips the conversion), and under a
schema without it (which converts with Strawberry's `InputContext.convert`).
The results must be the same bytes: every field given, omitted, null, a
default, a JSON value, a list copied, and the errors of a bad value.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import strawberry
from strawberry.scalars import JSON

from schema import build_schema
from schema.input_conversion import FlatInput, install_flat_inputs
from schema.strawberry_adapter import StrawberryAdapter

DOCUMENTS: list[tuple[str, dict[str, Any]]] = [
    ('mutation { echo(input: {roomId: "r"}) }', {}),
    (
        'mutation { echo(input: {roomId: "r", data: {a: [1, "x", null]}, event: "e",'
        ' tags: ["a", "b"], count: 3, flag: true, note: null}) }',
        {},
    ),
    (
        "mutation M($input: EchoInput!) { echo(input: $input) }",
        {"input": {"roomId": "r", "data": {"k": {"n": 1.5}}, "tags": None, "count": None}},
    ),
    (
        "mutation M($input: EchoInput!) { echo(input: $input) again: echo(input: $input) }",
        {"input": {"roomId": "7", "tags": ["x"], "metadata": [1, 2]}},
    ),
    # Errors: a missing required field, a wrong type, an unknown field.
    ("mutation M($input: EchoInput!) { echo(input: $input) }", {"input": {"data": 1}}),
    (
        "mutation M($input: EchoInput!) { echo(input: $input) }",
        {"input": {"roomId": "r", "count": "x"}},
    ),
    ('mutation { echo(input: {roomId: "r", nope: 1}) }', {}),
]


@strawberry.input
class EchoInput:
    room_id: strawberry.ID
    data: JSON | None = None
    event: str | None = None
    tags: list[str] | None = strawberry.field(default_factory=lambda: ["default"])
    count: int | None = strawberry.UNSET
    flag: bool = False
    note: str | None
    metadata: JSON | None = None


@strawberry.type
class Query:
    ok: bool = True


@strawberry.type
class Mutation:
    @strawberry.mutation
    def echo(self, input: EchoInput) -> str:
        assert type(input) is EchoInput
        fields = {k: repr(v) for k, v in vars(input).items()}
        if input.tags is not None:
            input.tags.append("changed")  # must not reach the next request
        return repr(sorted(fields.items()))


def run_all(schema: strawberry.Schema) -> bytes:
    results = []
    for query, variables in DOCUMENTS:
        for _ in range(2):
            result = schema.execute_sync(query, variable_values=variables)
            errors = [e.formatted for e in result.errors or ()]
            results.append({"data": result.data, "errors": errors})
    return orjson.dumps(results)


def test_flat_inputs_give_strawberrys_own_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    schema = strawberry.Schema(query=Query, mutation=Mutation)
    assert schema.get_type_by_name("EchoInput").from_input is None  # type: ignore[union-attr]
    strawberrys = run_all(schema)  # no converter installed yet
    assert b"changed" not in strawberrys  # each request its own list
    core = StrawberryAdapter.choose(True).core_schema(schema)
    install_flat_inputs(schema, core, fast=True)
    definition = schema.get_type_by_name("EchoInput")
    converter = getattr(definition, "from_input", None)
    assert isinstance(converter, FlatInput)
    calls: list[int] = []
    original = FlatInput._converted

    def counted(self: FlatInput, *args: Any) -> Any:
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(FlatInput, "_converted", counted)
    assert run_all(schema) == strawberrys
    assert not calls  # the fast path skipped Strawberry's conversion
    # Another schema of the same classes, without fast paths: Strawberry's
    # conversion, through the same hook.
    public = strawberry.Schema(query=Query, mutation=Mutation)
    install_flat_inputs(public, StrawberryAdapter.choose(True).core_schema(public), fast=False)
    assert run_all(public) == strawberrys
    assert calls


def test_the_api_schemas_inputs() -> None:
    """The API's flat inputs get a converter; one with an enum does not."""
    schema = build_schema()
    names = {
        name
        for name in ("SendMessageInput", "CreateRoomInput", "PublishInput", "SendSignalInput")
        if isinstance(getattr(schema.get_type_by_name(name), "from_input", None), FlatInput)
    }
    assert names == {"SendMessageInput", "CreateRoomInput", "PublishInput"}
