"""Every use of Strawberry's private or undocumented API, in one place.

Written for strawberry-graphql 0.341.2 (pyproject.toml pins it). On that
version, with `fast_paths` on, it uses:

- `Schema._schema`, the graphql-core schema Strawberry executes (there is no
  public accessor): read directly;
- `strawberry.schema.schema.validate_document`, Strawberry's validation with
  its own rules added, so a document the store (schema/document_cache.py)
  accepts is exactly one Strawberry would;
- `ExecutionContext.pre_execution_errors = []` in `on_validate`, which makes
  Strawberry skip validating a document that passed before.

The WebSocket protocol handlers (transport/ws/handlers.py) subclass
Strawberry's and override methods and read attributes it does not document;
they are behaviour, not speed (strict frames, limits, pings, shared
executions), so `fast_paths` off keeps them, but on another version
`handlers_fit` is False and the view serves WebSockets with Strawberry's own
handlers instead (the same log line says so).

On any other version, or with `fast_paths` off, it takes the public path and
says so in one log line: the graphql-core schema as Strawberry hands it to a
validation rule (`AddValidationRules`, graphql-core's `ValidationContext`),
graphql-core's own `validate` with its specified rules (Strawberry adds
rules for `@oneOf` inputs and `Maybe`, which this schema does not use, so
the two agree), and Strawberry validating every document itself. Slower
(a document is validated on every request), not different.
"""

from __future__ import annotations

import logging
from importlib.metadata import version
from typing import Any

from graphql import (
    ASTValidationRule,
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    ValidationContext,
    specified_rules,
    validate,
)
from strawberry import Schema
from strawberry.extensions import AddValidationRules
from strawberry.types import ExecutionContext

log = logging.getLogger("forge_streaming.adapters")

DISTRIBUTION = "strawberry-graphql"
WRITTEN_FOR = "0.341.2"


class StrawberryAdapter:
    """Strawberry's internals (`fast`) or its public API only; one per schema."""

    def __init__(self, *, fast: bool, handlers_fit: bool = True) -> None:
        self.fast = fast
        # Whether our WebSocket handlers fit the installed Strawberry.
        self.handlers_fit = handlers_fit
        self._seen: list[GraphQLSchema] = []

    @classmethod
    def choose(cls, fast_paths: bool) -> StrawberryAdapter:
        """The fast path on the version this was written for, when allowed;
        the public path otherwise, said in one log line."""
        installed = version(DISTRIBUTION)
        if installed != WRITTEN_FOR:
            log.warning(
                "strawberry: %s installed, adapter written for %s: public API only,"
                " Strawberry's own WebSocket handlers",
                installed,
                WRITTEN_FOR,
            )
            return cls(fast=False, handlers_fit=False)
        if not fast_paths:
            log.info("strawberry: fast paths off (setting fast_paths): public API only")
            return cls(fast=False)
        return cls(fast=True)

    def extensions(self) -> list[Any]:
        """Extensions the schema must be built with for `core_schema`."""
        if self.fast:
            return []
        seen = self._seen

        class SchemaProbe(ASTValidationRule):
            """Keeps the schema the first validation runs against."""

            def __init__(self, context: ValidationContext) -> None:
                super().__init__(context)
                if not seen:
                    seen.append(context.schema)

        return [lambda: AddValidationRules([SchemaProbe])]

    def core_schema(self, schema: Schema) -> GraphQLSchema:
        """The graphql-core schema `schema` executes (built with `extensions()`)."""
        if self.fast:
            core: GraphQLSchema = schema._schema
            return core
        if not self._seen:
            # Any validation Strawberry runs shows its schema to the rules.
            schema.execute_sync("{ __typename }")
        if not self._seen:
            raise RuntimeError("Strawberry ran no validation rule: its schema cannot be found")
        return self._seen[0]

    def validate(self, schema: GraphQLSchema, document: DocumentNode) -> list[GraphQLError]:
        """`document`'s validation errors, as Strawberry would find them."""
        if self.fast:
            # Imported here: on another version it may not exist.
            from strawberry.schema.schema import validate_document

            return validate_document(schema, document, tuple(specified_rules))
        return validate(schema, document, specified_rules)

    def skip_validation(self, context: ExecutionContext) -> bool:
        """Tell Strawberry not to validate this operation's document (known
        valid); False where that cannot be told, and Strawberry validates."""
        if not self.fast:
            return False
        context.pre_execution_errors = []
        return True


__all__ = ["WRITTEN_FOR", "StrawberryAdapter"]
