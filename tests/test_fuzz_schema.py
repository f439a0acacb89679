"""Schema-driven fuzzing: Schemathesis writes queries and mutations from
the schema and sends them, with a valid token, to a live server.

Whatever it sends, the server answers without a 5xx, without an
INTERNAL_SERVER_ERROR and without logging a traceback (the suite's log
guard), and `/health` still answers afterwards. Bounded in time: a few
derandomized examples per operation, about a minute in all.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from graphql import build_client_schema, build_schema, get_introspection_query
from graphql.utilities import find_breaking_changes, find_dangerous_changes
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.conftest import TEST_SETTINGS
from tests.live import ROOT, TIMEOUT, LiveServer

SCHEMA_FILE = ROOT / "schema" / "schema.graphql"
EXAMPLES_PER_OPERATION = 25
USER = "fuzzer"

# A required JSON argument (broadcastSystemMessage's `data`) needs values:
# any JSON literal, as a client may write one inline.
_nodes = schemathesis.graphql.nodes
schemathesis.graphql.scalar(
    "JSON",
    st.one_of(
        st.text(max_size=50).map(_nodes.String),
        st.integers(-(2**53), 2**53).map(_nodes.Int),
        st.floats(allow_nan=False, allow_infinity=False).map(_nodes.Float),
        st.booleans().map(_nodes.Boolean),
        st.just(_nodes.Null),
        st.lists(st.text(max_size=20), max_size=5).map(
            lambda items: _nodes.List([_nodes.String(item) for item in items])
        ),
    ),
)

# The committed schema is what the server serves (`server.py schema --check`
# guards that in CI, and `test_the_schema_file_is_the_live_schema` here):
# collecting the tests from it needs no server at import time.
schema = schemathesis.graphql.from_path(SCHEMA_FILE)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("fuzz-schema"), dict(TEST_SETTINGS)).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def auth(fuzz_server: LiveServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {fuzz_server.token(USER)}"}


def assert_no_server_error(status: int, body: Any) -> None:
    """The fuzzing invariant for one HTTP answer."""
    assert status < 500, f"HTTP {status}: {body}"
    errors = body.get("errors") or [] if isinstance(body, dict) else []
    codes = [(error.get("extensions") or {}).get("code") for error in errors]
    assert "INTERNAL_SERVER_ERROR" not in codes, errors


def test_the_schema_file_is_the_live_schema(fuzz_server: LiveServer, auth: dict[str, str]) -> None:
    answer = httpx.post(
        f"{fuzz_server.url}/graphql",
        json={"query": get_introspection_query()},
        headers=auth,
        timeout=TIMEOUT,
    )
    live = build_client_schema(answer.json()["data"])
    committed = build_schema(SCHEMA_FILE.read_text())
    assert find_breaking_changes(committed, live) == []
    assert find_dangerous_changes(committed, live) == []
    assert find_breaking_changes(live, committed) == []


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_generated_operation(
    case: schemathesis.Case[Any], fuzz_server: LiveServer, auth: dict[str, str]
) -> None:
    response = case.call(base_url=f"{fuzz_server.url}/graphql", headers=auth, timeout=TIMEOUT)
    try:
        body = response.json()
    except ValueError:
        body = response.text
    assert_no_server_error(response.status_code, body)
    assert httpx.get(f"{fuzz_server.url}/health", timeout=TIMEOUT).status_code == 200
