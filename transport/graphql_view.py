"""Strawberry's ASGI view with our authentication and connection bookkeeping.

HTTP requests need `Authorization: Bearer <jwt>` (the GraphiQL page itself is
open). WebSockets authenticate in `connection_init`: the payload's
`Authorization` key (as GraphiQL's headers tab sends it), else `token`, else
the upgrade request's own header. Every authenticated WebSocket is a presence
connection, counted against the per-user connection limit.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import orjson
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLRequestData
from strawberry.types import ExecutionResult

from backends.errors import LimitReached
from resolvers.presence import close_connection, open_connection
from resolvers.services import Services
from schema import ApiSchema, Context, ValidDocuments
from serving.auth import AuthError, TokenAuthority, bearer_token
from serving.graphiql import graphiql_html
from transport.admission import TurnAdmission
from transport.shared import SharedSubscriptions
from transport.sse import ServerSentEvents, execute_without_stream
from transport.stalled_writers import StalledWriters
from transport.ws_handlers import LegacyWSHandler, Rejected, TransportWSHandler, WebSocketAdapter

log = logging.getLogger(__name__)


def _unauthenticated(message: str) -> Response:
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"code": "UNAUTHENTICATED"}}]},
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="forge-streaming"'},
    )


def _token_from(params: dict[str, Any] | None, websocket: WebSocket) -> str | None:
    for key in ("Authorization", "authorization", "token"):
        value = (params or {}).get(key)
        if isinstance(value, str):
            return bearer_token(value)
    return bearer_token(websocket.headers.get("authorization"))


class GraphQLView(GraphQL[Context, None]):
    # WebSockets: transport/ws_handlers.py (strict frames, pings, timeouts).
    websocket_adapter_class = WebSocketAdapter
    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyWSHandler

    def __init__(
        self,
        schema: ApiSchema,
        authority: TokenAuthority,
        *,
        write_timeout: float,
        max_send_buffer: int,
        admission: TurnAdmission,
        **options: Any,
    ) -> None:
        super().__init__(schema, **options)
        self.authority = authority
        # Every path checks documents through this (schema/document_cache.py).
        self.documents: ValidDocuments = schema.documents
        self.shared = SharedSubscriptions(schema)
        self.stalled_writers = StalledWriters(write_timeout)
        self.max_send_buffer = max_send_buffer
        # Each WebSocket message waits for its turn before it is read
        # (transport/admission.py; HTTP bodies: transport/request_body.py).
        self.admission = admission
        # graphql-sse, both modes (transport/sse.py, transport/sse_single.py).
        self.sse = ServerSentEvents(self)
        # GraphiQL with its assets served by this server (serving/graphiql.py).
        self._graphql_ide_html = (
            graphiql_html() if self.graphql_ide == "graphiql" else super().graphql_ide_html
        )

    @property
    def graphql_ide_html(self) -> str:
        # Strawberry's is a read-only property; render_graphql_ide serves this.
        return self._graphql_ide_html

    def encode_json(self, data: object) -> bytes:
        # orjson, as for every WebSocket frame: faster, and the same bytes
        # over every transport.
        return orjson.dumps(data)

    def decode_json(self, data: str | bytes) -> object:
        # Strict JSON: json.loads would take NaN and Infinity, which no
        # client can read back (they would be stored as null).
        return orjson.loads(data)

    def parse_json(self, data: str | bytes) -> Any:
        value = super().parse_json(data)
        if not isinstance(value, dict | list):
            raise HTTPException(400, "The request body must be a JSON object.")
        return value

    async def run(
        self,
        request: Request | WebSocket,
        context: Any = None,
        root_value: Any = None,
    ) -> Any:
        services: Services = request.state.services
        if isinstance(request, WebSocket):
            ctx = Context(services=services, conn_id=uuid.uuid4().hex, websocket=request)
            try:
                return await super().run(request, context=ctx)
            finally:
                await self._release(ctx)
        if self.should_render_graphql_ide(self.request_adapter_class(request)):
            return await super().run(request)
        try:
            user_id, ends_at = self.authority.verify_session(
                bearer_token(request.headers.get("authorization"))
            )
        except AuthError as exc:
            return _unauthenticated(str(exc))
        sse_response = await self.sse.handle(request, user_id, services, ends_at)
        if sse_response is not None:
            return sse_response
        return await super().run(request, context=Context(services=services, user_id=user_id))

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        # Plain HTTP: a subscription gets a 400 naming the streaming transports.
        return await execute_without_stream(
            self, request_adapter, sub_response, context, request_data
        )

    async def on_ws_connect(self, context: Context) -> dict[str, object] | None:
        websocket: WebSocket = context.websocket
        try:
            user_id, ends_at = self.authority.verify_session(
                _token_from(context.connection_params, websocket)
            )
        except AuthError as exc:
            raise Rejected("UNAUTHENTICATED", str(exc)) from exc
        conn_id = context.conn_id
        if conn_id is None:
            raise RuntimeError("WebSocket context without a connection id")
        try:
            await open_connection(context.services, user_id, conn_id)
        except LimitReached as exc:
            raise Rejected(
                "LIMIT_EXCEEDED", f"too many connections for this user ({exc.limit})"
            ) from exc
        context.user_id = user_id
        context.session_ends_at = ends_at
        return {"userId": user_id}

    async def _release(self, ctx: Context) -> None:
        if ctx.user_id is None or ctx.conn_id is None:
            return
        try:
            await close_connection(ctx.services, ctx.user_id, ctx.conn_id)
        except Exception:
            log.exception("could not release a closed connection")
