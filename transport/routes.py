"""Health, readiness and metrics endpoints.

`/health` and `/ready` are open (load balancers probe them). `/metrics` needs
`Authorization: Bearer <metrics token>`: the `metrics_token` setting, or the
token generated into `<data_dir>/metrics-token` (transport/auth.py), which the
user running the server can read and nobody else.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from resolvers.services import Services
from transport.auth import bearer_token

_READY_TIMEOUT = 2.0
_NO_METRICS = "metrics need the metrics token (Authorization: Bearer)"


async def health(request: Request) -> Response:
    services: Services = request.state.services
    return JSONResponse({"status": "ok", "node": services.settings.node_id})


async def ready(request: Request) -> Response:
    services: Services = request.state.services
    try:
        await asyncio.wait_for(services.backends.ping(), _READY_TIMEOUT)
    except Exception as exc:
        return JSONResponse(
            {"status": "unavailable", "reason": type(exc).__name__}, status_code=503
        )
    return JSONResponse({"status": "ready"})


def metrics_endpoint(token: str) -> Callable[[Request], Awaitable[Response]]:
    """`GET /metrics` for the bearer `token` only (401 otherwise)."""
    expected = token.encode()

    async def metrics(request: Request) -> Response:
        given = bearer_token(request.headers.get("authorization")) or ""
        # Compared in constant time: the answer must not tell how much matched.
        if not hmac.compare_digest(given.encode(), expected):
            return JSONResponse(
                {"errors": [{"message": _NO_METRICS, "extensions": {"code": "UNAUTHENTICATED"}}]},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="forge-streaming-metrics"'},
            )
        services: Services = request.state.services
        return Response(services.metrics.exposition(), media_type="text/plain; version=0.0.4")

    return metrics


def build_routes(metrics_token: str) -> list[Route]:
    return [
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", metrics_endpoint(metrics_token), methods=["GET"]),
    ]
