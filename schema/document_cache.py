"""Each distinct valid document parsed and validated once.

Clients send the same few documents again and again, and validating one
takes longer than running it: about 2 ms for a history page, against well
under a millisecond to execute. Strawberry's own caches do not help here:
`ValidationCache` keys on the document object (a fresh one per request
unless `ParserCache` is on) and on the validation rules, which the limiter
extensions make anew per request; and a syntax error raised inside
`ParserCache` escapes Strawberry's error handling.

So this keeps, per schema, the parsed document of each query text that
validated, in a bounded LRU. The key is the text alone: the parse options
(the token limit) and the validation rules are fixed for a schema. A
document that fails to parse or validate is never kept; Strawberry handles
it as usual each time.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from graphql import DocumentNode
from strawberry.extensions import SchemaExtension


class ValidDocuments:
    """The LRU store, shared by every request of one schema."""

    def __init__(self, maxsize: int) -> None:
        self._maxsize = maxsize
        self._documents: OrderedDict[str, DocumentNode] = OrderedDict()

    def get(self, query: str) -> DocumentNode | None:
        document = self._documents.get(query)
        if document is not None:
            self._documents.move_to_end(query)
        return document

    def put(self, query: str, document: DocumentNode) -> None:
        self._documents[query] = document
        self._documents.move_to_end(query)
        while len(self._documents) > self._maxsize:
            self._documents.popitem(last=False)


class DocumentCache(SchemaExtension):
    def __init__(self, documents: ValidDocuments) -> None:
        super().__init__()
        self._documents = documents
        self._hit = False

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.query is not None and context.graphql_document is None:
            document = self._documents.get(context.query)
            if document is not None:
                context.graphql_document = document
                self._hit = True
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if self._hit:
            context.pre_execution_errors = []  # it validated before: skip validation
        yield
        if (
            not self._hit
            and context.query is not None
            and context.graphql_document is not None
            and context.pre_execution_errors == []
        ):
            self._documents.put(context.query, context.graphql_document)
