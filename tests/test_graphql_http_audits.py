"""graphql-http's GraphQL-over-HTTP server audits, every one (MUST, SHOULD
and MAY), against a live server with a token (tests/audits/)."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.live import ROOT, LiveServer, unique
from tests.tools import node, npm_ci, run

# Protocol conformance: also with the library fast paths off (tests/conftest.py).
pytestmark = pytest.mark.both_paths

AUDITS = ROOT / "tests" / "audits"


async def test_every_graphql_http_audit_passes(server: LiveServer) -> None:
    folder = npm_ci(AUDITS)
    args = [node(), "graphql-http-audit.mjs", "--url", f"{server.url}/graphql"]
    try:
        out = await asyncio.to_thread(
            run, [*args, "--token", server.token(unique("auditor"))], folder, 120
        )
    except AssertionError as error:  # the script exits 1 when an audit fails
        raise AssertionError(f"graphql-http audits failed:\n{error}") from None
    results = [json.loads(line) for line in out.splitlines()]
    failed = [r for r in results if r["status"] != "ok"]
    assert not failed, failed
    # Every level is there, so an audit list that came back short shows.
    levels = {r["name"].split(" ", 1)[0] for r in results}
    assert levels == {"MUST", "SHOULD", "MAY"}, levels
    assert len(results) >= 60, len(results)  # 61 in graphql-http 1.23.1
