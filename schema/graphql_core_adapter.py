"""Every use of graphql-core's private execution API, in one place.

Written for graphql-core 3.3.2 (pyproject.toml allows 3.3.x; on any other
version Strawberry's own execution runs, said in one log line at start).
A page of `history` is 50 messages of some eight fields each: graphql-core
completes each field in its own right (a resolve-info object, an awaitable
check, a path, a null check, a leaf coercion), about 5 microseconds a
field, which made the executor 80 % of the request.

`PlainDataExecutionContext` completes an object whose selected fields are
all plain data (Strawberry's default resolvers: an attribute read, no
arguments, no field extension) in one tight loop: read the attribute,
coerce a leaf with its type's own `coerce_output_value`, recurse into
lists and objects. It overrides `execute_collected_subfields`, which
graphql-core documents as private. Anything it does not expect (a null
where the schema says non-null, a resolver, an abstract type, `@defer`,
middleware, any exception) makes it give the object back to graphql-core,
which completes it from the start its own way: plain reads have no side
effects, so reading again is safe, and errors and their paths stay
exactly graphql-core's.

How to read the fields of a selection is worked out once and kept in the
graphql-core schema's `extensions` (bounded), by the selection's field
nodes: each event of a shared subscription is an execution of its own
that selects the same fields of the same document.

On another graphql-core version, or with `fast_paths` off, Strawberry's
own execution context runs unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from importlib.metadata import version
from operator import attrgetter
from typing import Any

from graphql import (
    GraphQLField,
    GraphQLLeafType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
)
from graphql.execution.collect_fields import DeferUsage, FieldDetails
from graphql.pyutils import Path, Undefined
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

log = logging.getLogger("forge_streaming.adapters")

DISTRIBUTION = "graphql-core"
WRITTEN_FOR = "3.3.2"


class _NotPlain(Exception):
    """This object is not plain data after all: graphql-core completes it."""


def _plain_field(field: GraphQLField) -> bool:
    # Strawberry marks the resolver of a field without a resolver of its
    # own, without arguments and without field extensions (schema_converter).
    return getattr(field.resolve, "_is_default", False) is True and not field.args


def _reader(field: GraphQLField) -> Callable[[Any], Any]:
    """What Strawberry's resolver of a plain field does: its default resolver
    (`getattr` unless configured) on its Python name."""
    definition = field.extensions.get("strawberry-definition")
    python_name = getattr(definition, "python_name", None)
    if getattr(definition, "default_resolver", None) is getattr and isinstance(python_name, str):
        return attrgetter(python_name)
    resolve = field.resolve
    return lambda source: resolve(source, None)  # type: ignore[misc]


# A selected field: its response name, how to read it (None: __typename),
# its type and its field nodes (for the selections below it).
_Step = tuple[str, Callable[[Any], Any] | None, Any, list[FieldDetails]]
# How to read a selected field, and its type.
_Read = tuple[Callable[[Any], Any] | None, Any]
# Where the readers of each selection are kept across executions: the
# graphql-core schema's `extensions` (one store per schema), bounded.
_READERS = "forge-plain-readers"
_READERS_KEPT = 1024


class PlainDataExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's execution context, with plain data completed in one loop."""

    def execute_collected_subfields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path,
        grouped_field_set: Any,
        new_defer_usages: Sequence[DeferUsage],
        position_context: Any,
    ) -> Any:
        # Strawberry passes a manager even when no extension wraps resolvers.
        middleware = self.middleware_manager
        if not new_defer_usages and (middleware is None or not middleware.middlewares):
            try:
                return self._plain_object(parent_type, source_value, grouped_field_set)
            except Exception:
                pass
        return super().execute_collected_subfields(
            parent_type, source_value, path, grouped_field_set, new_defer_usages, position_context
        )

    def _plain_object(
        self, parent_type: GraphQLObjectType, source: Any, grouped_field_set: Any
    ) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for response_name, read, return_type, details in self._plan(parent_type, grouped_field_set):
            if read is None:  # __typename
                result[response_name] = parent_type.name
            else:
                result[response_name] = self._plain_value(return_type, details, read(source))
        return result

    def _plan(self, parent_type: GraphQLObjectType, grouped_field_set: Any) -> list[_Step]:
        """How to read each selected field of `parent_type`, worked out once
        per selection and execution (a page repeats it fifty times)."""
        plans: dict[int, tuple[Any, list[_Step]]] = self.__dict__.setdefault("_plain_plans", {})
        kept = plans.get(id(grouped_field_set))
        if kept is not None and kept[0] is grouped_field_set:
            return kept[1]
        plan = [
            (response_name, read, return_type, details)
            for (read, return_type), (response_name, details) in zip(
                self._readers(parent_type, grouped_field_set),
                grouped_field_set.items(),
                strict=True,
            )
        ]
        # The selection is kept alive with its plan, so its id is not reused.
        plans[id(grouped_field_set)] = (grouped_field_set, plan)
        return plan

    def _readers(self, parent_type: GraphQLObjectType, grouped_field_set: Any) -> list[_Read]:
        """How to read each selected field, across executions: each event of
        a shared subscription is an execution of its own, selecting the same
        fields of the same (kept) document again. Kept by the selection's
        field nodes (aliases, fragments and `@include` decide which), with
        the nodes themselves, so their ids are not reused while kept."""
        nodes = tuple(d.node for details in grouped_field_set.values() for d in details)
        key = (parent_type.name, *map(id, nodes))
        readers: dict[tuple[Any, ...], tuple[tuple[Any, ...], GraphQLObjectType, list[_Read]]]
        readers = self.schema.extensions.setdefault(_READERS, {})
        kept = readers.get(key)
        if kept is not None and kept[1] is parent_type and kept[0] == nodes:
            return kept[2]
        if parent_type.is_type_of is not None:
            raise _NotPlain
        found: list[_Read] = []
        for details in grouped_field_set.values():
            name = details[0].node.name.value
            if name == "__typename":
                found.append((None, parent_type))
                continue
            field = parent_type.fields.get(name)
            if field is None or not _plain_field(field):
                raise _NotPlain
            found.append((_reader(field), field.type))
        if len(readers) >= _READERS_KEPT:
            readers.clear()  # a bound; the few selections in use come back at once
        readers[key] = (nodes, parent_type, found)
        return found

    def _plain_value(
        self, return_type: GraphQLOutputType, details: list[FieldDetails], value: Any
    ) -> Any:
        if isinstance(return_type, GraphQLNonNull):
            if value is None:
                raise _NotPlain
            return_type = return_type.of_type
        if value is None:
            return None
        if isinstance(return_type, GraphQLLeafType):
            coerced = return_type.coerce_output_value(value)
            if coerced is None or coerced is Undefined:
                raise _NotPlain
            return coerced
        if isinstance(return_type, GraphQLList):
            if not isinstance(value, list | tuple):
                raise _NotPlain
            item_type = return_type.of_type
            return [self._plain_value(item_type, details, item) for item in value]
        if isinstance(return_type, GraphQLObjectType):
            grouped, new_defer_usages, _ = self.collect_subfields(return_type, details)
            if new_defer_usages:
                raise _NotPlain
            return self._plain_object(return_type, value, grouped)
        raise _NotPlain  # an interface or a union: graphql-core resolves its type


def execution_context_class(fast_paths: bool) -> type[StrawberryGraphQLCoreExecutionContext]:
    """Ours on the version it was written for, when allowed; Strawberry's otherwise."""
    installed = version(DISTRIBUTION)
    if not fast_paths:
        return StrawberryGraphQLCoreExecutionContext
    if installed != WRITTEN_FOR:
        log.warning(
            "graphql-core: %s installed, adapter written for %s: its own execution only",
            installed,
            WRITTEN_FOR,
        )
        return StrawberryGraphQLCoreExecutionContext
    return PlainDataExecutionContext
