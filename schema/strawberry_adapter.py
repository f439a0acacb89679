"""Every use of Strawberry's private or undocumented API, in one place.

Written for strawberry-graphql 0.341.2 (pyproject.toml pins it). On that
version, with `fast_paths` on, it uses:

- `Schema._schema`, the graphql-core schema Strawberry executes (there is no
  public accessor): read directly;
- `strawberry.schema.schema.validate_document`, Strawberry's validation with
  its own rules added, so a document the store (schema/document_cache.py)
  accepts is exactly one Strawberry would;
- `ExecutionContext.pre_execution_errors`, written in `on_validate`: `[]`
  makes Strawberry skip validating a document that passed before; a list of
  errors refuses a document (over the document limits) before any of
  Strawberry's rules run on it; read after validation, `[]` tells the store
  (schema/document_cache.py) the document passed;
- `strawberry.http.ides.get_graphql_ide_html`, the GraphiQL page whose asset
  URLs transport/graphiql.py points at the vendored copies (whatever
  `fast_paths` says: see below).

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
(a document is validated on every request), not different. A refusal goes
through a validation rule (`Refusals`, added with `AddValidationRules`) that
reports the errors registered for the document being validated; a document
refused for its depth or aliases is swapped for a tiny stand-in first
(`ExecutionContext.graphql_document`, which extensions may set), so the
other rules still never run on it. Without `pre_execution_errors` an
extension cannot tell whether Strawberry's validation passed a document, so
the store keeps only documents checked on the other paths (shared-execution
planning, SSE's single connection mode).

The GraphiQL page is behaviour, not speed: it follows the version only (as
the WebSocket handlers do). On another version `graphiql_page` is None and
Strawberry's own page serves, loading its assets from unpkg.com.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

from graphql import (
    ASTValidationRule,
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    Node,
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
        # Public path: the errors each document in validation is refused
        # with, by the document's id (the document is kept, so its id is
        # not reused while it waits); `Refusals` reports and drops them.
        self._refusals: dict[int, tuple[DocumentNode, list[GraphQLError]]] = {}

    @classmethod
    def choose(cls, fast_paths: bool) -> StrawberryAdapter:
        """The fast path on the version this was written for, when allowed;
        the public path otherwise, said in one log line."""
        installed = version(DISTRIBUTION)
        if installed != WRITTEN_FOR:
            log.warning(
                "strawberry: %s installed, adapter written for %s: public API only,"
                " Strawberry's own WebSocket handlers and GraphiQL page",
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
        refusals = self._refusals

        class Refusals(ASTValidationRule):
            """Reports the errors `refuse` registered for this document."""

            def enter_document(self, node: Node, *_args: Any) -> None:
                registered = refusals.pop(id(node), None)
                if registered is not None and registered[0] is node:
                    for error in registered[1]:
                        self.report_error(error)

        class SchemaProbe(ASTValidationRule):
            """Keeps the schema the first validation runs against."""

            def __init__(self, context: ValidationContext) -> None:
                super().__init__(context)
                if not seen:
                    seen.append(context.schema)

        return [lambda: AddValidationRules([SchemaProbe, Refusals])]

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

    def undecided(self, context: ExecutionContext) -> bool:
        """Whether nothing refused or passed this operation's document yet
        (read in `on_validate`, before Strawberry validates)."""
        if not self.fast:
            return True
        return context.pre_execution_errors is None

    def refuse(
        self,
        context: ExecutionContext,
        errors: list[GraphQLError],
        *,
        stand_in: Callable[[ExecutionContext], DocumentNode | None] | None = None,
    ) -> None:
        """Answer this operation with `errors` as its validation errors,
        without Strawberry's rules running on its document (in `on_validate`).
        `stand_in` makes the tiny document the public path validates instead
        (none, or None from it: the document as it is, which on the public
        path all of Strawberry's rules then meet too)."""
        if self.fast:
            context.pre_execution_errors = errors
            return
        document = context.graphql_document
        replacement = None if stand_in is None else stand_in(context)
        if replacement is not None:
            context.graphql_document = document = replacement
        if document is not None:
            self._refusals[id(document)] = (document, errors)

    def passed_validation(self, context: ExecutionContext) -> bool:
        """Whether Strawberry found this operation's document valid (read in
        `on_validate` after it validated); False where that cannot be told."""
        if not self.fast:
            document = context.graphql_document
            if document is not None:
                self._refusals.pop(id(document), None)  # validation did not run
            return False
        return context.pre_execution_errors == []

    def graphiql_page(self) -> str | None:
        """Strawberry's GraphiQL page on the version this was written for;
        None on another (the view then serves Strawberry's own)."""
        if not self.handlers_fit:
            return None
        # Imported here: on another version it may not exist.
        from strawberry.http.ides import get_graphql_ide_html

        return get_graphql_ide_html("graphiql")


__all__ = ["WRITTEN_FOR", "StrawberryAdapter"]
