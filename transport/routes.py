"""Health, readiness and metrics endpoints."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from resolvers.services import Services

_READY_TIMEOUT = 2.0


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


async def metrics(request: Request) -> Response:
    services: Services = request.state.services
    return Response(services.metrics.exposition(), media_type="text/plain; version=0.0.4")


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
