"""Each distinct valid document checked under the limits, and parsed and
validated once.

Every path that reads a document goes through `ValidDocuments`: Strawberry's
execution (through the `DocumentCache` extension), shared-execution planning
(transport/shared.py), graphql-sse's single connection mode
(transport/sse/single.py). In each the limits
(schema/document_limits.py) come first: the size before parsing, the token
limit while parsing, depth and aliases before any other validation rule.

Clients send the same few documents again and again, and validating one
takes longer than running it: about 2 ms for a history page, against well
under a millisecond to execute. Strawberry's own caches do not help here:
`ValidationCache` keys on the document object (a fresh one per request
unless `ParserCache` is on) and on the validation rules; and a syntax error
raised inside `ParserCache` escapes Strawberry's error handling.

So this keeps, per schema, the parsed document of each query text that
passed every check, in an LRU bounded both in entries and in tokens (a
parsed document holds about 400 bytes per token). The key is the text
alone: the limits and the validation rules are fixed for a schema. A
document that fails is never kept; it is checked, and refused, each time.
Why a text was refused unparsed is remembered, for the last
`_REFUSALS_KEPT` texts, by a digest of the text (not the text: a burst of
large refused documents leaves nothing large behind): one request's
document is read by up to three paths in turn (SSE's single connection
mode, then shared-execution planning, then Strawberry's execution, a while
later for an event stream), and counting its tokens again in each cost up to three
times the refusal. A digest costs a tenth of counting the tokens.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, NamedTuple

from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    SourceLocation,
    Token,
    parse,
)
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from .document_limits import DocumentLimits
from .strawberry_adapter import StrawberryAdapter

# Refusals remembered: more than a burst of requests has in flight between
# the first path that reads a document and the last; under 1 KB each.
_REFUSALS_KEPT = 2048


def _digest(query: str) -> bytes:
    return hashlib.blake2b(query.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def token_count(document: DocumentNode) -> int:
    """The tokens of a parsed document (they stay linked from its location)."""
    if document.loc is None:
        return 1
    count = 0
    token: Token | None = document.loc.start_token
    while token is not None:
        count += 1
        token = token.next
    return count


class _Refusal(NamedTuple):
    message: str
    locations: list[SourceLocation] | None
    extensions: dict[str, Any] | None


class ValidDocuments:
    """The checks and the LRU store, shared by every request of one schema."""

    def __init__(
        self,
        limits: DocumentLimits,
        strawberry_adapter: StrawberryAdapter,
        *,
        max_entries: int = 512,
        max_tokens: int = 50_000,
    ) -> None:
        self.limits = limits
        self.strawberry = strawberry_adapter
        self._max_entries = max_entries
        self._max_tokens = max_tokens
        self._tokens = 0
        self._documents: OrderedDict[str, tuple[DocumentNode, int]] = OrderedDict()
        self._refusals: OrderedDict[bytes, _Refusal] = OrderedDict()
        self._schema: GraphQLSchema | None = None

    def bind(self, schema: GraphQLSchema) -> None:
        """The schema documents are validated against (it is built after this)."""
        self._schema = schema

    def get(self, query: str) -> DocumentNode | None:
        entry = self._documents.get(query)
        if entry is None:
            return None
        self._documents.move_to_end(query)
        return entry[0]

    def put(self, query: str, document: DocumentNode) -> None:
        """Keep a document that passed every check."""
        if query in self._documents:
            return
        tokens = token_count(document)
        if tokens > self._max_tokens:
            return
        self._documents[query] = (document, tokens)
        self._tokens += tokens
        while len(self._documents) > self._max_entries or self._tokens > self._max_tokens:
            _, (_, dropped) = self._documents.popitem(last=False)
            self._tokens -= dropped

    def refusal(self, query: str) -> GraphQLError | None:
        """Why `query` is refused unparsed (too many bytes or tokens), or
        None; a new error each time."""
        if len(query) <= self.limits.max_tokens and len(query) * 4 <= self.limits.max_bytes:
            return None  # too short for either limit: no digest needed
        key = _digest(query)
        refused = self._refusals.get(key)
        if refused is None:
            error = self.limits.refusal(query)
            if error is None:
                return None
            refused = _Refusal(error.message, error.locations, error.extensions or None)
            self._refusals[key] = refused
            if len(self._refusals) > _REFUSALS_KEPT:
                self._refusals.popitem(last=False)
        else:
            self._refusals.move_to_end(key)
        fresh = GraphQLError(refused.message, extensions=dict(refused.extensions or {}))
        fresh.locations = refused.locations
        return fresh

    def parse(self, query: str) -> DocumentNode:
        """The document of `query`, kept or parsed under the byte and token
        limits; GraphQLError otherwise. Not validated."""
        document = self.get(query)
        if document is not None:
            return document
        refused = self.refusal(query)
        if refused is not None:
            raise refused
        return parse(query, max_tokens=self.limits.max_tokens)

    def check(self, query: str) -> DocumentNode | list[GraphQLError]:
        """The valid document of `query`, or why it is refused."""
        document = self.get(query)
        if document is not None:
            return document
        try:
            document = self.parse(query)
        except GraphQLError as error:
            return [error]
        errors = self.validate(document)
        if errors:
            return errors
        self.put(query, document)
        return document

    def validate(self, document: DocumentNode) -> list[GraphQLError]:
        """The limits first; only a document within them meets the other rules
        (the ones Strawberry runs)."""
        problems = self.limits.problems(document)
        if problems:
            return problems
        if self._schema is None:
            raise RuntimeError("ValidDocuments used before its schema was bound")
        return self.strawberry.validate(self._schema, document)


_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")
_KINDS = (OperationType.QUERY, OperationType.MUTATION, OperationType.SUBSCRIPTION)


def _stand_in(context: ExecutionContext) -> DocumentNode | None:
    """A tiny document Strawberry takes in place of one refused unparsed
    (it cannot be told "refused" from `on_parse`, where a raise escapes its
    error handling), or, on the public path (schema/strawberry_adapter.py),
    of one refused for its depth or aliases: an operation of an allowed type
    and of the requested name, so it goes on to validation, where the
    refusal is answered."""
    kind = next((k for k in _KINDS if k in context.allowed_operations), None)
    if kind is None:
        return None
    # A requested name that is not a GraphQL name matches no operation of
    # any document: the stand-in has none, and Strawberry says so.
    name = context.operation_name or ""
    return parse(f"{kind.value} {name if _NAME.fullmatch(name) else ''} {{ __typename }}")


class DocumentCache(SchemaExtension):
    """Strawberry's parse and validation under the limits, through the store.

    A document over the byte or token limit is refused before it is parsed
    (Strawberry is handed a stand-in and the refusal as its validation
    errors); the parser enforces the token limit exactly; depth and aliases
    are checked before Strawberry validates, and a document over them is
    refused without the other rules running.
    """

    def __init__(self, documents: ValidDocuments) -> None:
        super().__init__()
        self._documents = documents
        self._hit = False
        self._refused: GraphQLError | None = None

    # No `on_operation`: each hook an extension has costs every operation
    # a wrapper (a chat message runs seven); the parser's token limit is
    # set here, before Strawberry parses, only when it will.
    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.query is not None and context.graphql_document is None:
            document = self._documents.get(context.query)
            if document is not None:
                context.graphql_document = document
                self._hit = True
            else:
                context.parse_options["max_tokens"] = self._documents.limits.max_tokens
                refused = self._documents.refusal(context.query)
                stand_in = None if refused is None else _stand_in(context)
                if stand_in is not None:
                    context.graphql_document = stand_in
                    self._refused = refused
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        strawberry = self._documents.strawberry
        if self._refused is not None:
            strawberry.refuse(context, [self._refused])  # its stand-in is in place
        elif self._hit and strawberry.skip_validation(context):
            pass  # it validated before: Strawberry skips validation
        elif context.graphql_document is not None and strawberry.undecided(context):
            problems = self._documents.limits.problems(context.graphql_document)
            if problems:  # refused: Strawberry then runs no other rule
                strawberry.refuse(context, problems, stand_in=_stand_in)
        query, document = context.query, context.graphql_document
        yield
        passed = strawberry.passed_validation(context)
        if passed and not self._hit and query is not None and document is not None:
            self._documents.put(query, document)
