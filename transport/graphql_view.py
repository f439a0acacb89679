"""Strawberry's ASGI view with our authentication and connection bookkeeping.

HTTP requests need `Authorization: Bearer <jwt>` (the GraphiQL page itself is
open). WebSockets authenticate in `connection_init`: the payload's
`Authorization` key (as GraphiQL's headers tab sends it), else `token`, else
the upgrade request's own header. Every authenticated WebSocket is a presence
connection, counted against the per-user connection limit.

HTTP answers follow the Accept header (transport/media_types.py): an event
stream (transport/sse/), `application/graphql-response+json` with the
GraphQL-over-HTTP spec's status codes (400 and no `data` when execution did
not start), legacy `application/json` (200), or 406.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any

import orjson
from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.websockets import WebSocket
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.http import GraphQLHTTPResponse
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.types import ExecutionResult

from backends.errors import LimitReached, Unavailable
from resolvers.presence import close_connection, open_connection
from resolvers.services import Services
from schema import ApiSchema, Context, ValidDocuments
from schema.plain_http import refused_for_want_of_a_stream
from transport.admission import TurnAdmission
from transport.api_keys import (
    ACT_AS_HEADER,
    ActAsRefused,
    ApiKeys,
    HttpIdentity,
    authenticate_http,
)
from transport.auth import AuthError, TokenAuthority, bearer_token
from transport.graphiql import graphiql_html
from transport.in_flight import OVERLOADED_MESSAGE, ProcessBudget
from transport.media_types import (
    APPLICATION_JSON,
    EVENT_STREAM,
    GRAPHQL_RESPONSE_JSON,
    JSON_TYPES,
    Accept,
)
from transport.revocations import check_not_revoked
from transport.shared import SharedSubscriptions
from transport.sse.distinct import ServerSentEvents
from transport.sse.events import error_response
from transport.ws.handlers import LegacyWSHandler, Rejected, TransportWSHandler, WebSocketAdapter

log = logging.getLogger(__name__)

_NOT_ACCEPTABLE = (
    f"Not acceptable: this endpoint answers {GRAPHQL_RESPONSE_JSON}, {APPLICATION_JSON} "
    f"or {EVENT_STREAM} (see the Accept header)"
)
# Answers differ by the Accept header: caches must key on it.
_VARY = {"vary": "accept"}


def _unauthenticated(message: str) -> Response:
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"code": "UNAUTHENTICATED"}}]},
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="forge-streaming"'},
    )


def _act_as_refused(exc: ActAsRefused) -> Response:
    code = "FORBIDDEN" if exc.status == 403 else "BAD_USER_INPUT"
    return JSONResponse(
        {"errors": [{"message": str(exc), "extensions": {"code": code}}]},
        status_code=exc.status,
    )


def execution_started(result: ExecutionResult) -> bool:
    """False when the request was refused before execution: a document that
    does not parse or validate, variables that do not coerce, no operation to
    run. Those errors have no `path`; a field error always has one."""
    return result.data is not None or not result.errors or any(e.path for e in result.errors)


def _graphql_response(request: Request) -> bool:
    """Whether this request is answered `application/graphql-response+json`,
    with the GraphQL-over-HTTP spec's status codes (400 when execution did
    not start); `application/json` keeps 200 for those."""
    media_type = getattr(request.state, "response_media_type", APPLICATION_JSON)
    return bool(media_type == GRAPHQL_RESPONSE_JSON)


def _token_from(params: dict[str, Any] | None, websocket: WebSocket) -> str | None:
    for key in ("Authorization", "authorization", "token"):
        value = (params or {}).get(key)
        if isinstance(value, str):
            return bearer_token(value)
    return bearer_token(websocket.headers.get("authorization"))


class GraphQLView(GraphQL[Context, None]):
    # WebSockets: transport/ws/handlers.py (strict frames, pings, timeouts).
    websocket_adapter_class: type[ASGIWebSocketAdapter] = WebSocketAdapter
    graphql_transport_ws_handler_class: type[BaseGraphQLTransportWSHandler[Context, None]] = (
        TransportWSHandler
    )
    graphql_ws_handler_class: type[BaseGraphQLWSHandler[Context, None]] = LegacyWSHandler

    def __init__(
        self,
        schema: ApiSchema,
        authority: TokenAuthority,
        *,
        fast_paths: bool,
        admission: TurnAdmission,
        budget: ProcessBudget | None = None,
        connection_slots: int = 8,
        api_keys: ApiKeys | None = None,
        **options: Any,
    ) -> None:
        super().__init__(schema, **options)
        if not schema.strawberry_adapter.handlers_fit:
            # Our handlers override Strawberry's undocumented handler methods:
            # on a version they were not written for, Strawberry's own serve
            # (the log line of schema/strawberry_adapter.py says so).
            self.websocket_adapter_class = ASGIWebSocketAdapter
            self.graphql_transport_ws_handler_class = BaseGraphQLTransportWSHandler
            self.graphql_ws_handler_class = BaseGraphQLWSHandler
        self.authority = authority
        # Back-end services' keys: plain HTTP only (transport/api_keys.py).
        self.api_keys = api_keys if api_keys is not None else ApiKeys([])
        # Every path checks documents through this (schema/document_cache.py).
        self.documents: ValidDocuments = schema.documents
        self.shared = SharedSubscriptions(schema)
        # Starlette's internals on the WebSocket path (transport/adapters/).
        self.fast_paths = fast_paths
        # Each WebSocket message waits for its turn before it is read
        # (transport/admission.py; HTTP bodies: transport/request_body.py).
        self.admission = admission
        # Queries and mutations at once, in the process and per WebSocket
        # (transport/in_flight.py).
        self.budget = budget if budget is not None else ProcessBudget(128)
        self.connection_slots = connection_slots
        # graphql-sse, both modes (transport/sse/).
        self.sse = ServerSentEvents(self)
        # GraphiQL with its assets served by this server (transport/graphiql.py),
        # built now: a Strawberry page that no longer matches fails at start.
        # On a Strawberry this was not written for, Strawberry's own page.
        page = schema.strawberry_adapter.graphiql_page() if self.graphql_ide == "graphiql" else None
        self._graphiql_page = None if page is None else graphiql_html(page)

    async def render_graphql_ide(self, request: Request) -> Response:
        if self._graphiql_page is not None:
            return HTMLResponse(self._graphiql_page)
        return await super().render_graphql_ide(request)

    def encode_json(self, data: object) -> bytes:
        # orjson, as for every WebSocket frame: faster, and the same bytes
        # over every transport.
        return orjson.dumps(data)

    def decode_json(self, data: str | bytes) -> object:
        # Strict JSON: json.loads would take NaN and Infinity, which no
        # client can read back (they would be stored as null).
        value = orjson.loads(data)
        # orjson reads an integer beyond 64 bits as a float: another number.
        # Only a long run of digits can be one; then Python's parser tells.
        raw = data.encode() if isinstance(data, str) else data
        if _LONG_INTEGER.search(raw):
            try:
                json.loads(raw, parse_int=_int64)
            except RecursionError:  # orjson took the nesting; json refuses it
                raise json.JSONDecodeError("nested too deeply", "", 0) from None
        return value

    async def _refuse_scalar_body(self, request: Request) -> None:
        """400 for a JSON body that is not an object or a list (`1`, `null`):
        Strawberry reads a key of whatever the body decodes to, and a scalar
        has none (a traceback, and a 500). Checked here, on the public path,
        rather than by overriding Strawberry's undocumented `parse_json`. A
        body that is not JSON at all is left to Strawberry, which says so."""
        if request.method != "POST" or APPLICATION_JSON not in request.headers.get(
            "content-type", ""
        ):
            return
        body = await request.body()  # kept by Starlette: Strawberry reads it again
        if body.lstrip(_JSON_SPACE)[:1] in (b"{", b"["):
            return  # the usual body: nothing decoded twice
        try:
            self.decode_json(body)
        except ValueError:  # not JSON (JSONDecodeError is a ValueError)
            return
        raise HTTPException(400, "The request body must be a JSON object.")

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
            identity: HttpIdentity = authenticate_http(
                self.authority,
                self.api_keys,
                bearer_token(request.headers.get("authorization")),
                request.headers.get(ACT_AS_HEADER),
            )
            if identity.api_key is None:
                await check_not_revoked(services, identity.user_id, identity.issued_at)
        except AuthError as exc:
            return _unauthenticated(str(exc))
        except Unavailable:
            # The revocations cannot be read: refused, as every backend call is now.
            return error_response(503, "the backend is unavailable, try again", "UNAVAILABLE")
        except ActAsRefused as exc:
            return _act_as_refused(exc)
        await self._refuse_scalar_body(request)
        accept = Accept.for_graphql(request.headers.get("accept"))
        if identity.api_key is None:
            # A service's key answers plain HTTP only: no stream outlives a request.
            sse_response = await self.sse.handle(
                request,
                accept,
                identity.user_id,
                services,
                identity.refused_from,
                admin=identity.admin,
            )
            if sse_response is not None:
                return sse_response
        media_type = accept.best(JSON_TYPES)
        if media_type is None:
            return error_response(406, _NOT_ACCEPTABLE, "NOT_ACCEPTABLE", headers=_VARY)
        request.state.response_media_type = media_type
        context = Context(
            services=services, user_id=identity.user_id, admin=identity.admin, plain_http=True
        )
        # More at once than the process takes: refused now, not queued behind
        # the others (transport/in_flight.py). Nothing ran, so it may be sent again.
        if not self.budget.try_take():
            return error_response(
                503, OVERLOADED_MESSAGE, "OVERLOADED", headers={"retry-after": "1", **_VARY}
            )
        try:
            response: Response = await super().run(request, context=context)
        finally:
            self.budget.give_back()
        if getattr(request.state, "bad_request", False):
            # Set by process_result: a subscription without a stream, or (as
            # application/graphql-response+json) a request whose execution
            # did not start.
            response.status_code = 400
        if response.headers.get("content-type", "").startswith(APPLICATION_JSON):
            response.headers["content-type"] = media_type
        response.headers.update(_VARY)
        return response

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        payload = await super().process_result(request, result)
        if refused_for_want_of_a_stream(result.errors):
            request.state.bad_request = True
        if _graphql_response(request) and not execution_started(result):
            request.state.bad_request = True
            # GraphQL spec §7.1.2: no `data` entry when execution did not start.
            payload.pop("data", None)
        return payload

    async def on_ws_connect(self, context: Context) -> dict[str, object] | None:
        websocket: WebSocket = context.websocket
        try:
            identity = self.authority.verify_identity(
                _token_from(context.connection_params, websocket)
            )
            await check_not_revoked(context.services, identity.user_id, identity.issued_at)
        except AuthError as exc:
            raise Rejected("UNAUTHENTICATED", str(exc)) from exc
        user_id, ends_at = identity.user_id, identity.refused_from
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
        context.admin = identity.admin
        context.token_issued_at = identity.issued_at
        return {"userId": user_id}

    async def _release(self, ctx: Context) -> None:
        if ctx.user_id is None or ctx.conn_id is None:
            return
        ctx.services.registry.remove(ctx.conn_id)
        try:
            await close_connection(ctx.services, ctx.user_id, ctx.conn_id)
        except Exception:
            log.exception("could not release a closed connection")


# 2**64 has 20 digits; -(2**63) - 1 has 19 after its minus.
_LONG_INTEGER = re.compile(rb"[0-9]{20}|-[0-9]{19}")
# What JSON allows before a value (RFC 8259 section 2).
_JSON_SPACE = b" \t\n\r"
_INT64 = range(-(2**63), 2**64)  # the integers orjson reads as integers


def _int64(text: str) -> int:
    # The length first: int() refuses thousands of digits with a ValueError.
    if len(text.lstrip("-")) > 20 or int(text) not in _INT64:
        raise json.JSONDecodeError("an integer beyond 64 bits", text, 0)
    return int(text)
