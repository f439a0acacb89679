"""The PostgreSQL backend beyond the contract suites: its migrations, one
node on PostgreSQL alone, and two nodes sharing rooms and history in
PostgreSQL with fan-out on Redis (the Many-nodes deployment of the README).

Every test uses the session's private cluster (`postgres_cluster`), each
with a schema of its own.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.errors import Unavailable
from backends.factory import BackendConfigError
from backends.opened import Opened
from backends.postgres import delete_namespace, open_stores
from backends.postgres.migrations import MIGRATIONS, Migration, migrate
from backends.postgres.tsvector import tokens_of
from backends.records import MessageKind, NewMessage
from backends.redis import delete_namespace as delete_redis_namespace
from backends.search_query import RoomScope, SearchRequest
from backends.search_text import tokens
from resolvers.search_syntax import parse_query
from tests.conftest import TEST_SETTINGS, require_service
from tests.live import TIMEOUT, LiveServer, free_port, unique, ws_connect
from tests.services import PostgresCluster
from tests.test_cluster import CREATE, HISTORY, JOIN, MESSAGES, SEND

SECRET = "postgres-test-secret-" + "x" * 40


@pytest.fixture
async def schema_url(postgres_cluster: str) -> AsyncIterator[str]:
    """A URL naming a schema of its own (not yet made); dropped afterwards."""
    url = f"{postgres_cluster}?schema=t{uuid4().hex[:12]}"
    yield url
    await delete_namespace(url)


async def applied_versions(url: str) -> list[int]:
    base, _, query = url.partition("?schema=")
    connection = await asyncpg.connect(base)
    try:
        rows = await connection.fetch(f'SELECT version FROM "{query}".schema_migrations')
    finally:
        await connection.close()
    return sorted(row["version"] for row in rows)


async def test_migrations_run_once_when_nodes_start_together(schema_url: str) -> None:
    roles = ["messages", "rooms", "channels"]
    results = await asyncio.gather(
        *(open_stores(schema_url, roles, retention=None) for _ in range(4)),
        return_exceptions=True,
    )
    opened = [r for r in results if isinstance(r, Opened)]
    for item in opened:
        await item.close()
    assert [r for r in results if not isinstance(r, Opened)] == []
    assert await applied_versions(schema_url) == [m.version for m in MIGRATIONS]


async def test_a_later_migration_is_applied_at_the_next_start(schema_url: str) -> None:
    opened = await open_stores(schema_url, ["rooms"], retention=None)
    await opened.close()
    base, _, schema = schema_url.partition("?schema=")
    later = (
        *MIGRATIONS,
        Migration(MIGRATIONS[-1].version + 1, "a column", "ALTER TABLE rooms ADD COLUMN x int"),
    )
    connection = await asyncpg.connect(base)
    try:
        assert await migrate(connection, schema, later) == [later[-1].version]
        assert await migrate(connection, schema, later) == []
    finally:
        await connection.close()


async def test_a_schema_from_a_newer_server_is_refused(schema_url: str) -> None:
    opened = await open_stores(schema_url, ["rooms"], retention=None)
    await opened.close()
    base, _, schema = schema_url.partition("?schema=")
    connection = await asyncpg.connect(base)
    try:
        await connection.execute(
            f'INSERT INTO "{schema}".schema_migrations (version, name) VALUES (9999, $1)',
            "from the future",
        )
    finally:
        await connection.close()
    with pytest.raises(Unavailable, match="newer than this server knows"):
        await open_stores(schema_url, ["rooms"], retention=None)


async def test_an_unreachable_server_is_unavailable() -> None:
    url = f"postgresql://forge@127.0.0.1:{free_port()}/forge"
    with pytest.raises(Unavailable, match="cannot reach PostgreSQL"):
        await open_stores(url, ["rooms"], retention=None)


async def test_a_bad_schema_name_is_refused() -> None:
    with pytest.raises(BackendConfigError, match="schema="):
        await open_stores('postgresql://h/db?schema=a"b', ["rooms"], retention=None)


def _settings(**backend: Any) -> dict[str, Any]:
    return {**TEST_SETTINGS, "jwt_secret": SECRET, **backend}


async def test_one_node_on_postgresql_alone(
    schema_url: str, make_server: type[LiveServer], tmp_path: Path
) -> None:
    settings = _settings(backend="postgresql", backend_urls=[schema_url])
    node = make_server(tmp_path / "node", settings).start()
    alice = node.client(unique("alice"))
    room = unique("room")
    await alice.execute(CREATE, id=room)
    async with ws_connect(node, alice.token) as ws:
        sub = await ws.subscribe(MESSAGES, id=room)
        await node.wait_subscribers(1)
        sent = await alice.execute(SEND, id=room, text="hello")
        got = (await sub.next())["roomMessages"]
        assert (got["cursor"], got["data"]) == (sent["sendMessage"]["cursor"], {"text": "hello"})
    node.stop()
    node.start()  # the same settings: rooms and history are in PostgreSQL
    history = await alice.execute(HISTORY, id=room)
    assert [e["node"]["data"] for e in history["history"]["edges"]][-1] == {"text": "hello"}


async def test_two_nodes_share_rooms_and_history_in_postgresql_and_fan_out_on_redis(
    schema_url: str, make_server: type[LiveServer], tmp_path: Path
) -> None:
    require_service("Redis", 6379)
    redis_url = f"redis://127.0.0.1:6379/0?namespace=pg{uuid4().hex[:12]}"
    durable = {"messages": schema_url, "rooms": schema_url, "channels": schema_url}
    settings = _settings(backend="redis", backend_urls=[redis_url], role_urls=durable)
    a, b = (make_server(tmp_path / name, settings).start() for name in ("a", "b"))
    alice, bob = a.client(unique("alice")), b.client(unique("bob"))
    room = unique("room")
    await alice.execute(CREATE, id=room)
    await bob.execute(JOIN, id=room)  # B finds the room A made: rooms are shared
    async with ws_connect(b, bob.token) as ws:
        sub = await ws.subscribe(MESSAGES, id=room)
        await b.wait_subscribers(1)
        sent = (await alice.execute(SEND, id=room, text="from A"))["sendMessage"]
        live = (await sub.next())["roomMessages"]
    assert (live["cursor"], live["data"]) == (sent["cursor"], {"text": "from A"})
    history = (await bob.execute(HISTORY, id=room))["history"]["edges"]
    assert (history[-1]["cursor"], history[-1]["node"]["data"]) == (
        sent["cursor"],
        {"text": "from A"},
    )
    a.stop()
    b.stop()
    await delete_redis_namespace(redis_url)


# --- search: what is PostgreSQL's own (the rest is tests/contract) -----------------


async def _hits(opened: Opened, query: str, room: str = "r1") -> list[Any]:
    assert opened.search is not None
    request = SearchRequest(
        match=parse_query(query).match, rooms=(RoomScope(room, "inc"),), limit=50
    )
    return [hit.message.data for hit in (await opened.search.search(request)).hits]


def _new(data: Any) -> NewMessage:
    return NewMessage(kind=MessageKind.MESSAGE, user_id="alice", room_id="r1", data=data)


async def test_history_stored_without_search_is_indexed_when_search_opens(
    schema_url: str,
) -> None:
    plain = await open_stores(schema_url, ["messages"], retention=None)
    assert plain.messages is not None
    for text in ("first café", "second cafe", "unrelated"):
        await plain.messages.append(_new(text), incarnation="inc")
    await plain.close()

    both = await open_stores(schema_url, ["messages", "search"], retention=None)
    try:
        assert both.messages is not None
        await both.messages.append(_new("third Café"), incarnation="inc")
        assert await _hits(both, "cafe") == ["third Café", "second cafe", "first café"]
    finally:
        await both.close()


async def test_huge_tokens_and_many_repeats_are_indexed_and_found(schema_url: str) -> None:
    """Past PostgreSQL's limits of a lexeme (2 KB) and of its positions (256)."""
    opened = await open_stores(schema_url, ["messages", "search"], retention=None)
    try:
        assert opened.messages is not None
        word = "é" * 3000
        await opened.messages.append(_new(f"see {word} here"), incarnation="inc")
        await opened.messages.append(_new("ping " * 5000 + "pong"), incarnation="inc")
        # Queries are bounded (1,000 characters): the long word by a prefix.
        assert await _hits(opened, f"see {word[:900]}*") == [f"see {word} here"]
        assert await _hits(opened, "pong ping") == ["ping " * 5000 + "pong"]
    finally:
        await opened.close()


async def test_nul_in_stored_text_is_refused_at_the_edge(
    schema_url: str, make_server: type[LiveServer], tmp_path: Path
) -> None:
    """PostgreSQL's text cannot hold U+0000: a name with one is BAD_USER_INPUT
    (for every backend), never a database error."""
    node = make_server(
        tmp_path / "node", _settings(backend="postgresql", backend_urls=[schema_url])
    )
    alice = node.start().client(unique("alice"))
    error = await alice.error(
        'mutation($name: String!) { createRoom(input: {id: "nul", name: $name}) { id } }',
        name="bad\u0000name",
    )
    assert error.code == "BAD_USER_INPUT"
    assert "NUL" in str(error)
    room = unique("room")
    await alice.execute(CREATE, id=room)
    sent = await alice.execute(SEND, id=room, text="nul \u0000 inside JSON is fine")
    assert sent["sendMessage"]["cursor"]


async def _ready_status(node: LiveServer) -> int:
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        return (await http.get(f"{node.url}/ready")).status_code


async def test_an_outage_is_unavailable_and_the_node_recovers_when_postgresql_is_back(
    make_server: type[LiveServer], tmp_path: Path
) -> None:
    """Its own cluster, stopped and started again (the session's is shared)."""
    folder = Path(tempfile.mkdtemp(prefix="forge-pg-outage-"))
    cluster = PostgresCluster(folder).start()
    try:
        url = f"{cluster.url}?schema=outage"
        node = make_server(tmp_path / "node", _settings(backend="postgresql", backend_urls=[url]))
        alice = node.start().client(unique("alice"))
        room = unique("room")
        await alice.execute(CREATE, id=room)
        await alice.execute(SEND, id=room, text="before")

        cluster.stop()
        error = await alice.error(SEND, id=room, text="during")
        assert error.code == "UNAVAILABLE"
        assert await _ready_status(node) == 503

        cluster.start()
        # The first request after the restart already succeeds: the failed
        # ones retired every pooled connection of the old server.
        await alice.execute(SEND, id=room, text="after")
        assert await _ready_status(node) == 200
        history = await alice.execute(HISTORY, id=room)
        texts = [e["node"]["data"] for e in history["history"]["edges"]]
        assert texts[-2:] == [{"text": "before"}, {"text": "after"}]
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127)) | st.text(max_size=30))
def test_the_ascii_fast_path_tokenizes_as_the_shared_rules(text: str) -> None:
    assert tokens_of(text) == tokens(text)
