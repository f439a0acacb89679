"""The GraphQL schema: Query, Mutation and Subscription over the resolvers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import strawberry
from graphql import GraphQLError, GraphQLSchema
from strawberry.types import ExecutionContext

from .bounds import apply_bounds
from .context import Context
from .document_cache import DocumentCache, ValidDocuments
from .document_limits import DocumentLimits
from .errors import ApiErrors, log_unexpected
from .graphql_core_adapter import execution_context_class
from .input_conversion import install_flat_inputs
from .mutation import Mutation
from .plain_http import RefuseSubscriptionWithoutStream
from .query import Query
from .strawberry_adapter import StrawberryAdapter
from .subscription import Subscription

SDL_PATH = Path(__file__).with_name("schema.graphql")


class ApiSchema(strawberry.Schema):
    """The schema, with the store every path checks its documents through
    and the graphql-core schema it executes."""

    documents: ValidDocuments
    graphql_core: GraphQLSchema
    strawberry_adapter: StrawberryAdapter

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        log_unexpected(errors)


def build_schema(
    *,
    max_depth: int = 12,
    max_aliases: int = 30,
    max_tokens: int = 5000,
    max_bytes: int = 256 * 1024,
    fast_paths: bool = True,
) -> ApiSchema:
    """The schema; its documents are checked under these limits on every
    path (schema/document_limits.py) before any other validation.
    `fast_paths` false keeps to Strawberry's public API (strawberry_adapter.py)."""
    limits = DocumentLimits(
        max_bytes=max_bytes, max_tokens=max_tokens, max_depth=max_depth, max_aliases=max_aliases
    )
    strawberry_adapter = StrawberryAdapter.choose(fast_paths)
    documents = ValidDocuments(limits, strawberry_adapter)
    # Factories, not instances: Strawberry keeps an instance's state across
    # requests, so concurrent requests would read each other's results.
    extensions: list[Any] = [
        lambda: DocumentCache(documents),
        ApiErrors,
        RefuseSubscriptionWithoutStream,
        *strawberry_adapter.extensions(),
    ]
    schema = ApiSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        # Plain data (a page of history) completed in one loop (graphql_core_adapter.py).
        execution_context_class=execution_context_class(fast_paths),
    )
    core = strawberry_adapter.core_schema(schema)
    # graphql-core's schema is where each field's arguments arrive,
    # coerced, on every path (HTTP, both WebSocket protocols, SSE).
    apply_bounds(core)
    # Flat inputs (a chat message) built without Strawberry's field-by-field conversion.
    install_flat_inputs(schema, core, fast=fast_paths)
    documents.bind(core)
    schema.documents = documents
    schema.graphql_core = core
    schema.strawberry_adapter = strawberry_adapter
    return schema


def export_sdl() -> str:
    return build_schema().as_str() + "\n"


__all__ = ["SDL_PATH", "ApiSchema", "Context", "ValidDocuments", "build_schema", "export_sdl"]
