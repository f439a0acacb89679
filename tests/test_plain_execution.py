"""Plain data is completed in one loop, with graphql-core's results exactly
(schema/graphql_core_adapter.py).

The same documents run on one small schema twice, with graphql-core's own
completion (Strawberry's execution context) and with ours: the data and
the errors (messages, paths) must be the same, whatever the document
holds (aliases, `__typename`, fragments, `@include`/`@skip`, a field with
a resolver and arguments, a null where the schema says non-null, an
exception in a resolver). And ours does take its loop: a plain page builds
no resolve info below the root field.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, cast

import pytest
import strawberry
from strawberry.scalars import JSON
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from schema import build_schema
from schema.graphql_core_adapter import PlainDataExecutionContext, execution_context_class


@strawberry.enum
class Kind(enum.Enum):
    MESSAGE = "message"
    SYSTEM = "system"


@strawberry.type
class Leaf:
    id: strawberry.ID
    n: int | None
    when: datetime
    kind: Kind
    data: JSON | None


@strawberry.type
class Node:
    leaf: Leaf
    leaves: list[Leaf]
    maybe: Leaf | None
    name: str

    @strawberry.field
    def doubled(self, x: int = 1) -> int:
        return 2 * x

    @strawberry.field
    def fails(self) -> str | None:
        raise ValueError("no")


def leaf(i: int) -> Leaf:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    kind = Kind.SYSTEM if i % 2 else Kind.MESSAGE
    return Leaf(
        id=strawberry.ID(f"m{i}"),
        n=i if i % 3 else None,
        when=when,
        kind=kind,
        data=cast(JSON, {"i": i, "t": [1, "x"]}),
    )


@strawberry.type
class Query:
    @strawberry.field
    async def node(self, broken: bool = False) -> Node:
        node = Node(leaf=leaf(0), leaves=[leaf(i) for i in range(5)], maybe=None, name="n")
        if broken:
            node.leaves[3].id = None  # type: ignore[assignment]  # null in a non-null field
        return node


DOCUMENTS = [
    "{ node { name leaf { id n when kind data } leaves { id n when kind data } maybe { id } } }",
    "{ a: node { __typename x: leaves { __typename k: kind } leaf { id } } }",
    "query($v: Boolean!) { node { leaves { ...L id @skip(if: $v) } } } "
    "fragment L on Leaf { n kind @include(if: $v) }",
    "{ node { doubled(x: 21) leaves { id } } }",
    "{ node { fails leaves { id } } }",
    "{ node(broken: true) { name leaves { id n } } }",
]


def schema_with(context_class: type[StrawberryGraphQLCoreExecutionContext]) -> strawberry.Schema:
    return strawberry.Schema(query=Query, execution_context_class=context_class)


async def run(schema: strawberry.Schema, document: str) -> tuple[Any, list[Any]]:
    result = await schema.execute(document, variable_values={"v": True})
    return result.data, [error.formatted for error in result.errors or []]


@pytest.mark.parametrize("document", DOCUMENTS)
async def test_the_same_data_and_errors_as_graphql_core(document: str) -> None:
    theirs = await run(schema_with(StrawberryGraphQLCoreExecutionContext), document)
    ours = await run(schema_with(PlainDataExecutionContext), document)
    assert ours == theirs
    assert theirs[0] is not None or theirs[1]


class Counting(PlainDataExecutionContext):
    infos = 0

    def build_resolve_info(self, *args: Any, **kwargs: Any) -> Any:
        Counting.infos += 1
        return super().build_resolve_info(*args, **kwargs)


async def test_a_plain_page_is_completed_without_a_resolve_info_per_field() -> None:
    Counting.infos = 0
    data, errors = await run(schema_with(Counting), DOCUMENTS[0])
    assert errors == [] and data is not None
    assert Counting.infos == 1  # the root field only


async def test_the_readers_kept_across_executions_follow_each_selection() -> None:
    """One schema runs the same document again with `@include` and `@skip`
    the other way (a leaf selects n and kind, then n and id): each
    execution reads what its own selection holds, in our loop."""
    document = next(d for d in DOCUMENTS if "@include" in d)
    theirs, ours = schema_with(StrawberryGraphQLCoreExecutionContext), schema_with(Counting)
    Counting.infos = 0
    for include in (True, False, True, False):
        expected = await theirs.execute(document, variable_values={"v": include})
        result = await ours.execute(document, variable_values={"v": include})
        assert result.errors is None and expected.errors is None
        assert result.data == expected.data
    assert Counting.infos == 4  # the root field of each: never given back to graphql-core


def test_the_schema_uses_it_on_the_fast_path_only() -> None:
    assert build_schema(fast_paths=True).execution_context_class is PlainDataExecutionContext
    assert execution_context_class(False) is StrawberryGraphQLCoreExecutionContext
