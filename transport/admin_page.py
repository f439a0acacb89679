"""The admin dashboard at `/admin`: a static page and its assets, under a
strict Content-Security-Policy.

The page (static/admin/index.html, app.js) is plain files: Preact, htm and
uPlot are vendored as their published builds (static/admin/README.md), so
nothing is built or fetched when the server runs. Everything it shows comes
from the GraphQL API the page calls with the admin's token; the server gives
the page no data of its own, so the page needs no token to load.

Every response under `/admin` carries the same headers: scripts and styles
from this origin only (no inline script, no eval), connections to this
origin only (HTTP and its WebSocket), never inside a frame, no MIME sniffing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from .response_headers import ResponseHeaders

STATIC_DIR = Path(__file__).resolve().parent / "static" / "admin"
PAGE_PATH = "/admin"
ASSETS_PATH = "/admin/assets"

# A Host header is client input: only a plain host[:port] goes into the
# policy; anything else leaves connect-src at 'self'.
_PLAIN_HOST = re.compile(
    r"^[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?$"
)

_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'; connect-src 'self'{sockets}"
)


def content_security_policy(host: str | None) -> str:
    """The page's policy; `host` (the request's Host header) names its WebSocket origin."""
    sockets = ""
    if host and _PLAIN_HOST.match(host):
        # 'self' covers ws(s) of the same host in CSP 3 browsers; older ones
        # need the origin spelled out.
        sockets = f" ws://{host} wss://{host}"
    return _POLICY.format(sockets=sockets)


def security_headers(host: str | None) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(host),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
    }


class SecureHeaders(ResponseHeaders):
    """Adds security_headers to every HTTP response of the app it wraps."""

    def headers_for(self, scope: Scope) -> Callable[[], dict[str, str]]:
        extra = security_headers(Request(scope).headers.get("host"))
        return lambda: extra


async def _page(scope: Scope, receive: Receive, send: Send) -> None:
    # The page is tiny and changes with the server: never cached, so an
    # upgrade never pairs an old page with new assets.
    page = FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})
    await page(scope, receive, send)


def build_routes() -> list[BaseRoute]:
    """`/admin` (the page) and `/admin/assets/...` (its scripts and styles)."""
    return [
        Route(PAGE_PATH, SecureHeaders(_page), methods=["GET", "HEAD"]),
        Mount(ASSETS_PATH, app=SecureHeaders(StaticFiles(directory=STATIC_DIR))),
    ]
