"""One GraphQL operation sent over graphql-sse, parsed and ready to stream.

Every room message event goes out with its cursor as the SSE event id, so a
client (or a browser's EventSource) that reconnects with the standard
`Last-Event-ID` header resumes exactly after the last message it saw. Both
happen beside the document, never in it: the resolver notes each message's
cursor as it yields it (schema/context.py `EventIds`), and `Last-Event-ID`
replaces the subscription's `after` argument through the resume map
(resolvers/resume.py), as a WebSocket's resume map moves it.

It needs only a few members of the GraphQL view (`StreamingView`), so the SSE
package does not import the view that routes to it."""

from __future__ import annotations

import contextlib
import dataclasses
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

from resolvers.resume import NO_RESUME, ResumeMap
from schema import Context, ValidDocuments
from schema.context import EventIds

from ..connection import Connection
from ..frames import Framing, sse_event
from ..shared import SharedSubscriptions
from .events import LAST_EVENT_ID, error_response


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
    `deliver` to a client's connection."""

    def __init__(self, view: StreamingView, request: Request, data: GraphQLRequestData) -> None:
        self.view = view
        self.request = request
        self.data = data
        last_event_id = request.headers.get(LAST_EVENT_ID)
        self.resume = NO_RESUME if last_event_id is None else ResumeMap(last_event_id=last_event_id)

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

    def _streaming(self, context: Context) -> Context:
        """`context` with this request's resume and a place for event ids."""
        return dataclasses.replace(context, resume=self.resume, event_ids=EventIds())

    async def _results(self, context: Context) -> AsyncGenerator[tuple[dict[str, Any], str | None]]:
        """(payload, event id) per result, from Strawberry's `Schema.stream`."""
        allowed = OperationType.from_http("GET" if self.request.method == "GET" else "POST")
        event_ids = context.event_ids
        stream = await self.view.schema.stream(
            self.data.query,
            variable_values=self.data.variables,
            context_value=context,
            operation_name=self.data.operation_name,
            operation_extensions=self.data.extensions,
            allowed_operation_types=allowed,
        )
        async with contextlib.aclosing(stream):
            async for result in stream:
                event_id = None if event_ids is None else event_ids.take()
                payload: dict[str, Any] = dict(
                    await self.view.process_result(self.request, result)  # type: ignore[arg-type]
                )
                yield payload, event_id

    async def deliver(self, context: Context, connection: Connection, framing: Framing) -> bool:
        """Write each result to `connection` as a `next` event (its data
        `framing`'s frame of the payload, its id the event's); False if the
        connection refused one (gone, or cut off). A subscription that can
        share an execution with identical ones (transport/shared.py) gets
        each payload written as the execution yields it."""
        context = self._streaming(context)
        shared = self.view.shared
        query = self.data.query
        plan = (
            None
            if query is None
            else shared.plan(query, self.data.variables, self.data.operation_name, context.resume)
        )
        if plan is not None:

            def frame(payload: bytes, event_id: str | None) -> bytes:
                return sse_event("next", framing.frame(payload), event_id)

            async with shared.join(plan, context, connection, frame) as member:
                if member is not None:
                    return await member.ended()
        async for result, event_id in self._results(context):
            event = sse_event("next", framing.frame(orjson.dumps(result)), event_id)
            if not await connection.send(event):
                return False
            # Counted as transport/shared.py counts a shared one's.
            context.services.metrics.deliveries.inc()
        return True


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
