"""A subscription sent as a plain HTTP request is refused, not run.

Strawberry lets POST and GET carry subscriptions (for its multipart
transport) and `Schema.execute` would run one as a query, answering a masked
internal error. A stream needs a streaming transport, so the operation ends
before execution with an error naming them. Only contexts marked
`plain_http` (the view's own HTTP requests) are refused: WebSockets and SSE
run subscriptions through `Schema.subscribe`.

Public API only: an extension's `on_execute` that sets the execution
context's `result`, as Strawberry's guide on extensions documents, skips the
execution.
"""

from __future__ import annotations

from collections.abc import Iterator

from graphql import ExecutionResult, GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from resolvers.errors import BadUserInput

from .context import Context


class StreamRequired(BadUserInput):
    """A subscription without a stream to send its events down."""


NEEDS_A_STREAM = (
    "A subscription needs a stream: send it with `Accept: text/event-stream` "
    "(graphql-sse) or over a WebSocket (graphql-transport-ws)."
)


class RefuseSubscriptionWithoutStream(SchemaExtension):
    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        ours = context.context
        plain_http = isinstance(ours, Context) and ours.plain_http
        if plain_http and context.operation_type is OperationType.SUBSCRIPTION:
            refusal = StreamRequired(NEEDS_A_STREAM)
            context.result = ExecutionResult(
                data=None,
                errors=[
                    GraphQLError(
                        refusal.message, original_error=refusal, extensions=refusal.extensions
                    )
                ],
            )
        yield


def refused_for_want_of_a_stream(errors: list[GraphQLError] | None) -> bool:
    """Whether these errors say a subscription came without a stream."""
    return any(isinstance(e.original_error, StreamRequired) for e in errors or ())


__all__ = [
    "NEEDS_A_STREAM",
    "RefuseSubscriptionWithoutStream",
    "StreamRequired",
    "refused_for_want_of_a_stream",
]
