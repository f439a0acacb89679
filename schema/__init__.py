"""The GraphQL schema: Query, Mutation and Subscription over the resolvers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
)
from strawberry.types import ExecutionContext

from .bounds import apply_bounds
from .context import Context
from .document_cache import DocumentCache, ValidDocuments
from .errors import ApiErrors, log_unexpected
from .mutation import Mutation
from .query import Query
from .subscription import Subscription

SDL_PATH = Path(__file__).with_name("schema.graphql")


_CACHED_DOCUMENTS = 512


class _Schema(strawberry.Schema):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # graphql-core's schema is where each field's arguments arrive,
        # coerced, on every path (HTTP, both WebSocket protocols, SSE).
        apply_bounds(self._schema)

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        log_unexpected(errors)


def build_schema(
    *, max_depth: int = 12, max_aliases: int = 30, max_tokens: int = 5000
) -> strawberry.Schema:
    # Factories, not instances: Strawberry keeps an instance's state across
    # requests, so concurrent requests would read each other's results. The
    # limiters' rules are made once, though: each limiter builds its rule
    # class anew when constructed, which costs more than most requests'
    # validation (skipped for a document seen before, see DocumentCache).
    limits = [
        *QueryDepthLimiter(max_depth=max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=max_aliases).validation_rules,
    ]
    documents = ValidDocuments(maxsize=_CACHED_DOCUMENTS)
    extensions: list[Any] = [
        lambda: AddValidationRules(limits),
        lambda: MaxTokensLimiter(max_token_count=max_tokens),
        lambda: DocumentCache(documents),
        ApiErrors,
    ]
    return _Schema(query=Query, mutation=Mutation, subscription=Subscription, extensions=extensions)


def export_sdl() -> str:
    return build_schema().as_str() + "\n"


__all__ = ["SDL_PATH", "Context", "build_schema", "export_sdl"]
