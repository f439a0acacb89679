"""A cheaper conversion of flat input objects (`sendMessage(input:)`).

Strawberry turns an input object's value (a dict graphql-core coerced) into
its Python class field by field: for each field it resolves the field's
type, its GraphQL name and then converts the value, every request. For a
chat message that was a tenth of the mutation.

An input type whose fields are all scalars, or lists of scalars, needs no
converting at all: a scalar is passed as graphql-core coerced it, a list
is copied. For those this sets Strawberry's documented hook
`StrawberryObjectDefinition.from_input` to a converter worked out once,
which builds the same object Strawberry would. A converter serves only the
schemas it was installed for with `fast` (the setting `fast_paths`); under
any other schema it converts each field with `InputContext.convert`, which
is Strawberry's own conversion. Enums, nested inputs, `Maybe` fields,
relay's `GlobalID` and `@oneOf` inputs are left to Strawberry entirely.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any
from weakref import WeakSet

from graphql import (
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    GraphQLSchema,
)
from strawberry import Schema
from strawberry.relay import GlobalID
from strawberry.types.arguments import InputContext
from strawberry.types.base import (
    StrawberryList,
    StrawberryMaybe,
    StrawberryObjectDefinition,
    StrawberryOptional,
)
from strawberry.types.unset import UNSET

# How a field is read: (GraphQL name, Python name, copied as a list).
_Step = tuple[str, str, bool]


def _unwrap(graphql_type: Any) -> Any:
    return graphql_type.of_type if isinstance(graphql_type, GraphQLNonNull) else graphql_type


def _scalar(strawberry_type: object, graphql_type: Any) -> bool:
    if isinstance(strawberry_type, StrawberryOptional):
        strawberry_type = strawberry_type.of_type
    return (
        isinstance(_unwrap(graphql_type), GraphQLScalarType)
        and strawberry_type is not GlobalID
        and not isinstance(strawberry_type, StrawberryMaybe)
    )


class FlatInput:
    """The converter of one flat input type (its `from_input`)."""

    def __init__(
        self, definition: StrawberryObjectDefinition, steps: list[_Step], nulls: dict[str, None]
    ) -> None:
        self.definition = definition
        self.steps = steps
        # Strawberry's implicit None for a field without a default.
        self.nulls = nulls
        # The schemas this converter serves itself.
        self.schemas: WeakSet[Schema] = WeakSet()

    @classmethod
    def of(
        cls,
        definition: StrawberryObjectDefinition,
        core_type: GraphQLInputObjectType,
        schema: Schema,
    ) -> FlatInput | None:
        """The converter of this type, or None when it is not flat."""
        if definition.from_input is not None or definition.is_one_of:
            return None
        steps: list[_Step] = []
        nulls: dict[str, None] = {}
        for field in definition.fields:
            name = schema.config.name_converter.from_field(field)
            core_field = core_type.fields.get(name)
            if core_field is None or isinstance(field.type, StrawberryMaybe):
                return None
            field_type = field.resolve_type(type_definition=definition)
            if isinstance(field_type, StrawberryMaybe):
                return None
            as_list = False
            if isinstance(field_type, StrawberryOptional):
                field_type = field_type.of_type
            core_field_type = _unwrap(core_field.type)
            if isinstance(field_type, StrawberryList):
                if not isinstance(core_field_type, GraphQLList):
                    return None
                field_type, core_field_type, as_list = (
                    field_type.of_type,
                    core_field_type.of_type,
                    True,
                )
            if not _scalar(field_type, core_field_type):
                return None
            steps.append((name, field.python_name, as_list))
            if (
                field.default_value is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                nulls[field.python_name] = None
        return cls(definition, steps, nulls)

    def __call__(self, cls: type, value: Mapping[str, Any], context: InputContext) -> Any:
        info = context.info
        if info is None or info.schema not in self.schemas:
            return self._converted(cls, value, context)
        kwargs: dict[str, Any] = dict(self.nulls)
        for name, python_name, as_list in self.steps:
            if name in value:
                item = value[name]
                if as_list and item is not None and item is not UNSET:
                    item = list(item)  # a copy, as Strawberry's: defaults are shared
                kwargs[python_name] = item
        return cls(**kwargs)

    def _converted(self, cls: type, value: Mapping[str, Any], context: InputContext) -> Any:
        """Strawberry's own conversion, field by field."""
        kwargs: dict[str, Any] = dict(self.nulls)
        definition = self.definition
        for field in definition.fields:
            name = context.config.name_converter.from_field(field)
            if name in value:
                field_type = field.resolve_type(type_definition=definition)
                kwargs[field.python_name] = context.convert(value[name], field_type, name)
        return cls(**kwargs)


def install_flat_inputs(schema: Schema, core: GraphQLSchema, *, fast: bool) -> None:
    """Give every flat input type of `schema` its converter; with `fast`
    the converter skips the conversion for this schema."""
    for core_type in core.type_map.values():
        if not isinstance(core_type, GraphQLInputObjectType):
            continue
        definition = core_type.extensions.get("strawberry-definition")
        if not isinstance(definition, StrawberryObjectDefinition):
            continue
        converter = definition.from_input
        if not isinstance(converter, FlatInput):
            built = FlatInput.of(definition, core_type, schema)
            if built is None:
                continue
            definition.from_input = converter = built
        if fast:
            converter.schemas.add(schema)
