"""One GraphQL operation sent over graphql-sse, parsed and ready to stream.

It needs only a few members of the GraphQL view (`StreamingView`), so the SSE
package does not import the view that routes to it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import Any, Protocol

import orjson
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from graphql import GraphQLError, get_operation_ast
from graphql import OperationType as AstOperationType
from starlette.requests import Request
from starlette.responses import Response
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.schema.base import BaseSchema
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from schema import Context, ValidDocuments

from ..connection import Connection
from ..frames import Framing, sse_event
from ..shared import SharedSubscriptions
from .events import LAST_EVENT_ID, error_response
from .resume import Resumable, prepare


class StreamingView(Protocol):
    """What SSE needs of the GraphQL view (transport/graphql_view.py)."""

    schema: BaseSchema
    documents: ValidDocuments
    shared: SharedSubscriptions
    fast_paths: bool
    max_subscriptions_per_connection: int | None

    @property
    def request_adapter_class(self) -> Callable[[Request], AsyncHTTPRequestAdapter]: ...

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]: ...

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse: ...


# --- operations -------------------------------------------------------------------


class StreamRequest:
    """One GraphQL operation requested over graphql-sse, parsed, ready to
    stream with `results()` or to `deliver` to a client's connection."""

    def __init__(self, view: StreamingView, request: Request, data: GraphQLRequestData) -> None:
        self.view = view
        self.request = request
        self.data = data
        self.resumable: Resumable = prepare(
            view.documents,
            data.query,
            data.variables,
            data.operation_name,
            request.headers.get(LAST_EVENT_ID),
        )

    def is_subscription(self) -> bool:
        """Whether the operation to run is a subscription (False for a
        document that does not parse: its errors are a single result)."""
        if not self.data.query:
            return False
        try:
            document = self.view.documents.parse(self.data.query)
        except GraphQLError:
            return False
        operation = get_operation_ast(document, self.data.operation_name)
        return operation is not None and operation.operation is AstOperationType.SUBSCRIPTION

    async def results(self, context: Context) -> AsyncGenerator[tuple[dict[str, Any], str | None]]:
        """(payload, event id) per result, from Strawberry's `Schema.stream`."""
        allowed = OperationType.from_http("GET" if self.request.method == "GET" else "POST")
        stream = await self.view.schema.stream(
            self.resumable.query,
            variable_values=self.resumable.variables,
            context_value=context,
            operation_name=self.data.operation_name,
            operation_extensions=self.data.extensions,
            allowed_operation_types=allowed,
        )
        async with contextlib.aclosing(stream):
            async for result in stream:
                payload: dict[str, Any] = dict(
                    await self.view.process_result(self.request, result)  # type: ignore[arg-type]
                )
                yield payload, self.resumable.event_id(payload)

    async def deliver(self, context: Context, connection: Connection, framing: Framing) -> bool:
        """Write each result to `connection` as a `next` event (its data
        `framing`'s frame of the payload); False if the connection refused
        one (gone, or cut off). A subscription that can share an execution
        with identical ones (transport/shared.py) gets each payload written
        as the execution yields it."""
        shared = self.view.shared
        query = self.resumable.query
        plan = (
            None
            if query is None
            else shared.plan(query, self.resumable.variables, self.data.operation_name)
        )
        if plan is not None:

            def frame(payload: bytes) -> bytes:
                body, event_id = self._with_event_id(payload)
                return sse_event("next", framing.frame(body), event_id)

            async with shared.join(plan, context, connection, frame) as member:
                if member is not None:
                    return await member.ended()
        async for result, event_id in self.results(context):
            event = sse_event("next", framing.frame(orjson.dumps(result)), event_id)
            if not await connection.send(event):
                return False
        return True

    def _with_event_id(self, payload: bytes) -> tuple[bytes, str | None]:
        if self.resumable.root_key is None:
            return payload, None
        result = orjson.loads(payload)
        event_id = self.resumable.event_id(result)
        return (orjson.dumps(result) if self.resumable.strip_cursor else payload), event_id


async def parse_operation(
    view: StreamingView, request: Request
) -> tuple[StreamRequest | None, Response | None]:
    """The request's operation, or the 4xx response for a request problem."""
    try:
        data = await view.parse_http_body(view.request_adapter_class(request))
    except HTTPException as exc:
        return None, error_response(exc.status_code, exc.reason, "BAD_USER_INPUT")
    if isinstance(data, list):
        return None, error_response(400, "Batching is not supported for SSE", "BAD_USER_INPUT")
    if not data.query:
        return None, error_response(400, "No GraphQL query found in the request", "BAD_USER_INPUT")
    return StreamRequest(view, request, data), None
