"""GraphiQL that works offline: Strawberry's own page, its assets served by us.

Strawberry's page loads React, js-cookie, GraphiQL and the explorer plugin
from unpkg.com. The same built files are vendored in `static/graphiql/` (see
its README.md) and mounted at `/graphiql` (server.py); `graphiql_html(page)`
is Strawberry's page (read through schema/strawberry_adapter.py, on the
version it was written for) with each unpkg URL pointed at that mount. The
vendored files are byte-identical to what unpkg serves, so the page's
`integrity` hashes stay as they are and still hold.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static" / "graphiql"
MOUNT_PATH = "/graphiql"

# Every URL Strawberry's page loads -> the vendored file under STATIC_DIR.
ASSETS: dict[str, str] = {
    "https://unpkg.com/react@18.2.0/umd/react.production.min.js": "react/react.production.min.js",
    "https://unpkg.com/react-dom@18.2.0/umd/react-dom.production.min.js": (
        "react-dom/react-dom.production.min.js"
    ),
    "https://unpkg.com/js-cookie@3.0.5/dist/js.cookie.min.js": "js-cookie/js.cookie.min.js",
    "https://unpkg.com/graphiql@3.8.3/graphiql.min.css": "graphiql/graphiql.min.css",
    "https://unpkg.com/graphiql@3.8.3/graphiql.min.js": "graphiql/graphiql.min.js",
    "https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/style.css": (
        "plugin-explorer/style.css"
    ),
    "https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/index.umd.js": (
        "plugin-explorer/index.umd.js"
    ),
}

_EXTERNAL = re.compile(r'(?:src|href)="(https?://[^"]+)"')


@functools.cache
def graphiql_html(page: str) -> str:
    """Strawberry's GraphiQL `page`, loading its assets from MOUNT_PATH.

    Raises RuntimeError if Strawberry's page no longer matches the vendored
    files (a Strawberry upgrade changed the versions): refresh them as
    static/graphiql/README.md says rather than silently going online.
    """
    html = page
    for url, local in ASSETS.items():
        if url not in html:
            raise RuntimeError(
                f"Strawberry's GraphiQL page no longer loads {url}: "
                "refresh transport/static/graphiql (see its README.md)"
            )
        html = html.replace(url, f"{MOUNT_PATH}/{local}")
    external = _EXTERNAL.findall(html)
    if external:
        raise RuntimeError(
            f"Strawberry's GraphiQL page loads assets that are not vendored: {external}"
        )
    return html
