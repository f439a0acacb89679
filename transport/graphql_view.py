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
from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import ConnectionInitMessage
from strawberry.types.unset import UnsetType

from backends.errors import LimitReached
from resolvers.presence import close_connection, open_connection
from resolvers.services import Services
from schema import Context
from serving.auth import AuthError, TokenAuthority, bearer_token
from serving.graphiql import graphiql_html

log = logging.getLogger(__name__)

_MAX_CLOSE_REASON = 123  # bytes, RFC 6455


class Rejected(ConnectionRejectionError):
    """A refused connection_init, with the API error code and a reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__({"message": message, "extensions": {"code": code}})
        self.code = code
        self.message = message

    @property
    def close_reason(self) -> str:
        reason = f"{self.code}: {self.message}".encode()[:_MAX_CLOSE_REASON]
        return reason.decode(errors="ignore")


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws, closing a refused init with 4403 and a reason
    that says why (Strawberry says only "Forbidden")."""

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        if self.connection_timed_out:
            return
        if self.connection_init_timeout_task:
            self.connection_init_timeout_task.cancel()
        payload = message.get("payload", {})
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            await self.websocket.close(code=4400, reason="Invalid connection init payload")
            return
        if self.connection_init_received:
            await self.websocket.close(code=4429, reason="Too many initialisation requests")
            return
        self.connection_init_received = True
        self.context.connection_params = payload
        try:
            ack = await self.view.on_ws_connect(self.context)
        except Rejected as exc:
            await self.websocket.close(code=4403, reason=exc.close_reason)
            return
        if isinstance(ack, UnsetType) or ack is None:
            await self.send_message({"type": "connection_ack"})
        else:
            await self.send_message({"type": "connection_ack", "payload": ack})
        self.connection_acknowledged = True


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
    graphql_transport_ws_handler_class = TransportWSHandler

    def __init__(self, schema: Any, authority: TokenAuthority, **options: Any) -> None:
        super().__init__(schema, **options)
        self.authority = authority
        # GraphiQL with its assets served by this server (serving/graphiql.py).
        self._graphql_ide_html = (
            graphiql_html() if self.graphql_ide == "graphiql" else super().graphql_ide_html
        )

    @property
    def graphql_ide_html(self) -> str:
        # Strawberry's is a read-only property; render_graphql_ide serves this.
        return self._graphql_ide_html

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
            user_id = self.authority.verify(bearer_token(request.headers.get("authorization")))
        except AuthError as exc:
            return _unauthenticated(str(exc))
        return await super().run(request, context=Context(services=services, user_id=user_id))

    async def on_ws_connect(self, context: Context) -> dict[str, object] | None:
        websocket: WebSocket = context.websocket
        try:
            user_id = self.authority.verify(_token_from(context.connection_params, websocket))
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
        metrics = context.services.metrics
        metrics.connections_total.inc()
        metrics.connections_active.inc()
        return {"userId": user_id}

    async def _release(self, ctx: Context) -> None:
        if ctx.user_id is None or ctx.conn_id is None:
            return
        ctx.services.metrics.connections_active.dec()
        try:
            await close_connection(ctx.services, ctx.user_id, ctx.conn_id)
        except Exception:
            log.exception("could not release a closed connection")
