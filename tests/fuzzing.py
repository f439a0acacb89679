"""What the fuzz tests share: Hypothesis settings, input strategies, and the
invariant every answer must keep.

The invariant, whatever a client sends: no 5xx, no INTERNAL_SERVER_ERROR in
any error's `extensions.code`, no traceback in the server's log (the suite's
log guard in `tests/conftest.py`), and `/health` still answers afterwards.

Examples are few and derandomized, so a run is quick and the same every
time: these tests look for classes of crash in CI, not for rare ones.
"""

from __future__ import annotations

import json
import math
from typing import Any
from uuid import uuid4

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.conftest import TEST_SETTINGS, require_service
from tests.live import TIMEOUT, LiveServer
from tests.services import PRIVATE_POSTGRES

# No deadline: the server shares two cores with other test runs.
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

BACKENDS = ["sqlite", "redis", "nats", "postgresql"]
# Limits high enough that the fuzzer's own pace is not what it measures.
FUZZ_SETTINGS = {
    **TEST_SETTINGS,
    "max_messages_per_second": 10_000,
    "max_rooms_per_user": 10_000,
    "max_channels_per_user": 10_000,
}


def backend_settings(backend: str) -> dict[str, Any]:
    """Settings of a fuzz server on `backend`, in a namespace of its own."""
    namespace = f"fuzz{uuid4().hex[:10]}"
    if backend == "redis":
        require_service("Redis", 6379)
        urls = [f"redis://127.0.0.1:6379/0?namespace={namespace}"]
    elif backend == "nats":
        require_service("NATS", 4222)
        urls = [f"nats://127.0.0.1:4222?namespace={namespace}"]
    elif backend == "postgresql":
        urls = [f"{PRIVATE_POSTGRES.url()}?schema={namespace}"]
    else:
        return {**FUZZ_SETTINGS, "backend": backend}
    return {**FUZZ_SETTINGS, "backend": backend, "backend_urls": urls}


# --- strategies --------------------------------------------------------------------------

# Any code point, lone surrogates included: JSON carries them as \ud800 escapes.
any_char = st.characters(codec=None, exclude_categories=())
any_text = st.text(any_char, max_size=40)
# Far past every id bound (and the 4096-byte NATS line), yet inside the
# request byte limit even JSON-escaped: ids are fuzzed here, bytes elsewhere.
long_text = st.integers(min_value=200, max_value=5_000).flatmap(
    lambda n: st.sampled_from(["x", "é", "\x00", "😀", ":", "."]).map(lambda c: c * n)
)
# Characters that str.isdigit() or int() accept besides 0-9.
odd_digits = st.sampled_from(
    [
        "\u00b2",
        "\u00b3",
        "\u0661",
        "\u0bed",
        "\U0001d7d7",
        "\u07c1",
        "\u2460",
        "_",
        " 1",
        "+1",
        "-1",
    ]
)

ids = st.one_of(
    any_text,
    long_text,
    st.text(st.sampled_from("\x00\x01\n\r\t *>.$:/\\\"'"), min_size=1, max_size=8),
    st.text("abcXYZ019_-", min_size=1, max_size=300),
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    any_text,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(any_text, inner, max_size=6)
    ),
    max_leaves=30,
)


def _raw_array(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


def _raw_object(items: dict[str, str]) -> str:
    return "{" + ",".join(f"{dumps(key)}:{value}" for key, value in items.items()) + "}"


# JSON text as a client may write it, with numbers no encoder would make.
raw_numbers = st.one_of(
    st.sampled_from(
        [
            *("1e400", "-1e400", "1E+400", "1e-400", "2e308", "4.9e-324"),
            *("-0", "-0.0", "0e0", "1.0"),
            *("18446744073709551615", "18446744073709551616", "-9223372036854775809"),
        ]
    ),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.integers(min_value=1, max_value=5000).map(lambda n: "9" * n),
)
raw_json = st.recursive(
    st.one_of(json_scalars.map(lambda value: dumps(value)), raw_numbers),
    lambda inner: st.one_of(
        st.lists(inner, max_size=6).map(_raw_array),
        st.dictionaries(any_text, inner, max_size=6).map(_raw_object),
        # Deep nesting.
        st.tuples(st.integers(min_value=20, max_value=3000), inner).map(
            lambda depth_inner: "[" * depth_inner[0] + depth_inner[1] + "]" * depth_inner[0]
        ),
    ),
    max_leaves=20,
)


def dumps(value: Any) -> str:
    """JSON as the wire carries it: ASCII, lone surrogates as escapes."""
    return json.dumps(value, ensure_ascii=True, allow_nan=False)


def finite(value: Any) -> bool:
    """Whether a parsed JSON value holds only finite numbers."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(finite(item) for item in value)
    if isinstance(value, dict):
        return all(finite(item) for item in value.values())
    return True


# --- the invariant -----------------------------------------------------------------------


def error_codes(errors: Any) -> list[Any]:
    if not isinstance(errors, list):
        return []
    return [
        (error.get("extensions") or {}).get("code") for error in errors if isinstance(error, dict)
    ]


def assert_no_internal_error(errors: Any) -> None:
    assert "INTERNAL_SERVER_ERROR" not in error_codes(errors), errors


def post_raw(live: LiveServer, token: str, body: str | bytes) -> httpx.Response:
    """POST a request body as it is (raw JSON text) to /graphql."""
    return httpx.post(
        f"{live.url}/graphql",
        content=body.encode() if isinstance(body, str) else body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=TIMEOUT,
    )


def graphql(live: LiveServer, token: str, query: str, **variables: Any) -> dict[str, Any]:
    """POST an operation; the answer's JSON, checked against the invariant."""
    response = post_raw(live, token, dumps({"query": query, "variables": variables}))
    return checked(response)


def checked(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code < 500, f"HTTP {response.status_code}: {response.text[:2000]}"
    try:
        body = response.json()
    except ValueError:
        body = {}
    if isinstance(body, dict):
        assert_no_internal_error(body.get("errors"))
        return body
    return {}


def assert_healthy(live: LiveServer) -> None:
    assert httpx.get(f"{live.url}/health", timeout=TIMEOUT).status_code == 200
