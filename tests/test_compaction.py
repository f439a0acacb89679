"""Compression of old messages on SQLite, Redis and PostgreSQL (issue 15), over the
wire: every read gives the same bytes before and after `server.py compact`,
a killed compaction loses and duplicates nothing, a damaged block is an
error."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg
import httpx
import pytest
import redis

from backends.postgres import delete_namespace
from tests.conftest import TEST_SETTINGS, require_service
from tests.live import ROOT, GraphQLClient, LiveServer, unique, ws_connect

CREATE = 'mutation($id: ID!) { createRoom(input: {id: $id, name: "Room"}) { id } }'
JOIN = "mutation($id: ID!) { joinRoom(roomId: $id) { id } }"
NODE = "id type event roomId channelId userId data metadata timestamp threadId cursor"
SEND = f"""
mutation($room: ID!, $data: JSON, $meta: JSON, $thread: ID, $cid: String, $event: String) {{
  sendMessage(input: {{roomId: $room, data: $data, metadata: $meta, threadId: $thread,
                      clientMessageId: $cid, event: $event}}) {{ {NODE} }}
}}
"""
HISTORY = f"""
query($room: ID!, $first: Int, $after: String, $last: Int, $before: String, $thread: ID,
      $users: [ID!], $events: [String!], $since: DateTime, $until: DateTime) {{
  history(roomId: $room, first: $first, after: $after, last: $last, before: $before,
          threadId: $thread, userIds: $users, events: $events, since: $since, until: $until) {{
    edges {{ cursor node {{ {NODE} }} }}
    pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }}
  }}
}}
"""
SEARCH = f"""
query($q: String!, $room: ID, $first: Int, $after: String, $order: SearchOrder!) {{
  searchMessages(query: $q, roomId: $room, first: $first, after: $after, orderBy: $order) {{
    edges {{ cursor snippet score highlights {{ start end }} node {{ {NODE} }} }}
    pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }}
  }}
}}
"""
REPLAY = f"""
subscription($room: ID!, $after: String, $thread: ID) {{
  roomMessages(roomId: $room, after: $after, threadId: $thread) {{ {NODE} }}
}}
"""

SETTINGS = {
    **TEST_SETTINGS,
    "max_messages_per_second": 100_000,
    # Off in the server: these tests compact with the command, at known moments.
    "compress_after": "0",
}
WORDS = ["alpha", "beta", "gamma", "delta", "launch", "party", "coffee", "deploy", "review"]


@pytest.fixture(params=["sqlite", "redis", "postgres"])
async def any_server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LiveServer]:
    """A server on each history backend that compacts (Redis: a namespace of
    its own; PostgreSQL: a schema of its own in the session's cluster)."""
    live = LiveServer(tmp_path / "data", on_backend(request, request.param, SETTINGS)).start()
    yield live
    live.stop()
    await forget(live)


def on_backend(
    request: pytest.FixtureRequest, backend: str, settings: dict[str, Any]
) -> dict[str, Any]:
    if backend == "sqlite":
        return settings
    if backend == "postgres":
        url = f"{request.getfixturevalue('postgres_cluster')}?schema=c{uuid4().hex[:12]}"
        return {**settings, "backend": "postgresql", "backend_urls": [url]}
    require_service("Redis", 6379)
    url = f"redis://127.0.0.1:6379/0?namespace={unique('c')}"
    return {**settings, "backend": "redis", "backend_urls": [url]}


async def forget(live: LiveServer) -> None:
    """Delete a Redis server's namespace, a PostgreSQL server's schema."""
    if _postgres(live) is not None:
        await delete_namespace(str(_postgres(live)))
    if _namespace(live) is not None:
        with _redis() as r:
            for key in r.scan_iter(match=f"{_namespace(live)}:*", count=1000):
                r.delete(key)


def _postgres(live: LiveServer) -> str | None:
    urls = live.settings.get("backend_urls")
    return str(urls[0]) if urls and str(urls[0]).startswith("postgresql:") else None


async def pg(live: LiveServer, sql: str, *args: Any) -> list[Any]:
    """The rows of one statement in the PostgreSQL server's schema."""
    base, _, schema = str(_postgres(live)).partition("?schema=")
    connection = await asyncpg.connect(base)
    try:
        await connection.execute(f'SET search_path TO "{schema}"')
        return list(await connection.fetch(sql, *args))
    finally:
        await connection.close()


def _redis() -> Any:
    # redis-py types replies as unions over every protocol; these are RESP2 bytes.
    return redis.Redis(host="127.0.0.1", port=6379)


def _namespace(live: LiveServer) -> str | None:
    urls = live.settings.get("backend_urls")
    return str(urls[0]).split("namespace=")[1] if urls and "namespace=" in urls[0] else None


async def uncompacted(live: LiveServer) -> int:
    """Messages still stored row by row (SQLite, PostgreSQL) or in streams (Redis)."""
    if _postgres(live) is not None:
        return int((await pg(live, "SELECT COUNT(*) FROM messages"))[0][0])
    namespace = _namespace(live)
    if namespace is None:
        with db(live) as conn:
            (count,) = conn.execute("SELECT COUNT(*) FROM messages").fetchone()
            return int(count)
    with _redis() as r:
        return sum(int(r.xlen(k)) for k in r.scan_iter(match=f"{namespace}:msg-stream:*"))


async def block_counts(live: LiveServer) -> tuple[int, int]:
    """(blocks, messages in them)."""
    if _postgres(live) is not None:
        blocks, packed = (await pg(live, "SELECT COUNT(*), SUM(count) FROM message_blocks"))[0]
        return int(blocks), int(packed or 0)
    namespace = _namespace(live)
    if namespace is None:
        with db(live) as conn:
            blocks, packed = conn.execute(
                "SELECT COUNT(*), SUM(count) FROM message_blocks"
            ).fetchone()
            return int(blocks), int(packed or 0)
    refs = [
        m.split(b":")
        for k in _redis().scan_iter(match=f"{namespace}:msg-bidx:*")
        for m in _redis().zrange(k, 0, -1)
    ]
    return len(refs), sum(int(r[4]) for r in refs)


def compact(live: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGE_STREAMING_")}
    return subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "compact", *_where(live), *args],
        cwd=ROOT,
        env={**env, "FORGE_STREAMING_COMPRESS_AFTER": "1ms"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def _where(live: LiveServer) -> list[str]:
    return ["--config", str(live.data_dir / "config.yaml"), "--data-dir", str(live.data_dir)]


def db(live: LiveServer) -> sqlite3.Connection:
    return sqlite3.connect(live.data_dir / "forge-streaming.db")


class Http:
    """Queries over one kept-alive HTTP connection (thousands of them here)."""

    def __init__(self, client: GraphQLClient, http: httpx.AsyncClient) -> None:
        self.token = client.token
        self._url = f"{client.server.url}/graphql"
        self._headers = client.headers
        self._http = http

    async def post(self, query: str, **variables: Any) -> httpx.Response:
        return await self._http.post(
            self._url, json={"query": query, "variables": variables}, headers=self._headers
        )

    async def execute(self, query: str, **variables: Any) -> dict[str, Any]:
        body = (await self.post(query, **variables)).json()
        assert not body.get("errors"), body
        data: dict[str, Any] = body["data"]
        return data


def text(i: int) -> str:
    words = " ".join(WORDS[(i * k) % len(WORDS)] for k in (1, 3, 7))
    return f"message {i} {words} @user{i % 5} https://example.com/{i} 🎉"


async def fill(alice: Http, bob: Http, room: str, count: int) -> list[Any]:
    sent = []
    for i in range(count):
        sender = alice if i % 3 else bob
        extra: dict[str, Any] = {}
        if i % 5 == 0:
            extra["thread"] = "t1"
        if i % 7 == 0:
            extra["event"] = "build.done"
        if i % 4 == 0:
            extra["cid"] = f"c{i}"
        data: Any = text(i) if i % 6 else {"text": text(i), "n": i, "tags": ["a", "b"]}
        meta = {"client": "web", "v": i % 3} if i % 2 else None
        sent.append(
            (await sender.execute(SEND, room=room, data=data, meta=meta, **extra))["sendMessage"]
        )
    return sent


async def raw(client: Http, query: str, **variables: Any) -> bytes:
    response = await client.post(query, **variables)
    assert response.status_code == 200, response.text
    assert b'"errors"' not in response.content, response.text
    return response.content


async def pages(client: Http, room: str, **args: Any) -> list[bytes]:
    """Every page in one direction, following the cursors."""
    out: list[bytes] = []
    backward = "last" in args
    cursor: str | None = None
    while True:
        where = {**args, **({"before" if backward else "after": cursor} if cursor else {})}
        body = await raw(client, HISTORY, room=room, **where)
        out.append(body)
        info = json.loads(body)["data"]["history"]["pageInfo"]
        if not info["hasPreviousPage" if backward else "hasNextPage"]:
            return out
        cursor = info["startCursor" if backward else "endCursor"]


async def searches(client: Http, room: str) -> list[bytes]:
    out: list[bytes] = []
    for q in ("launch", "coffee deploy", '"party coffee"', "merg*", "alpha -ship"):
        for order in ("NEWEST", "RELEVANCE"):
            cursor: str | None = None
            for _ in range(3):
                body = await raw(
                    client, SEARCH, q=q, room=room, first=20, order=order, after=cursor
                )
                out.append(body)
                found = json.loads(body)["data"]["searchMessages"]
                if not found["pageInfo"]["hasNextPage"]:
                    break
                cursor = found["pageInfo"]["endCursor"]
    return out


async def replays(live: LiveServer, token: str | None, room: str, sent: list[Any]) -> list[Any]:
    out: list[Any] = []
    async with ws_connect(live, token) as ws:
        for start, thread in ((1, None), (37, None), (len(sent) // 2, None), (1, "t1")):
            expected = [m for m in sent[start:] if thread is None or m["threadId"] == thread]
            cursor = sent[start - 1]["cursor"]
            op = await ws.subscribe(REPLAY, room=room, after=cursor, thread=thread)
            got = [(await op.next())["roomMessages"]]
            while got[-1]["id"] != expected[-1]["id"]:
                got.append((await op.next())["roomMessages"])
            assert len(got) >= len(expected)
            out.append(got)
            await op.complete()
    return out


async def everything(
    live: LiveServer, alice: Http, room: str, sent: list[Any], bob_id: str
) -> list[Any]:
    n = len(sent)
    middle = sent[n // 2]["timestamp"]
    return [
        await pages(alice, room, first=50),
        await pages(alice, room, first=7),
        await pages(alice, room, last=50),
        await pages(alice, room, last=13),
        await pages(alice, room, first=20, thread="t1"),
        await pages(alice, room, last=20, thread="t1"),
        await pages(alice, room, first=30, users=[bob_id]),
        await pages(alice, room, last=30, events=["build.done"]),
        await pages(alice, room, first=40, since=middle),
        await pages(alice, room, last=40, until=middle),
        await pages(
            alice, room, first=25, after=sent[n // 6]["cursor"], before=sent[2 * n // 3]["cursor"]
        ),
        await searches(alice, room) if _namespace(live) is None else [],
        await replays(live, alice.token, room, sent),
    ]


@pytest.mark.timeout(300)
async def test_every_read_is_the_same_after_compaction(any_server: LiveServer) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        alice = Http(any_server.client(unique("alice")), http)
        bob = Http(any_server.client(unique("bob")), http)
        await every_read_is_the_same(any_server, alice, bob)


async def every_read_is_the_same(server: LiveServer, alice: Http, bob: Http) -> None:
    bob_id = (await bob.execute("{ me }"))["me"]
    room, other = unique("room"), unique("room")
    sent: dict[str, list[Any]] = {}
    for r in (room, other):
        await alice.execute(CREATE, id=r)
        await bob.execute(JOIN, id=r)
    sent[room], sent[other] = await asyncio.gather(
        fill(alice, bob, room, 600), fill(alice, bob, other, 200)
    )
    before = {r: await everything(server, alice, r, sent[r], bob_id) for r in (room, other)}

    stored = await uncompacted(server)
    result = compact(server, "--batch", "300")
    assert f"compact: done, {stored} messages" in result.stdout, result.stdout
    assert await uncompacted(server) == 0
    blocks, packed = await block_counts(server)
    assert blocks >= 5 and packed == stored

    after = {r: await everything(server, alice, r, sent[r], bob_id) for r in (room, other)}
    assert after == before

    # A retried send within the idempotency window gets the first message back.
    again = await alice.execute(
        SEND, room=room, data="retry", meta=None, cid="c8", thread=None, event=None
    )
    assert again["sendMessage"] == sent[room][8]
    # New messages go on from there, and read back alongside the old ones.
    new = (await alice.execute(SEND, room=room, data="fresh", meta=None))["sendMessage"]
    last = json.loads((await pages(alice, room, last=2))[0])["data"]["history"]["edges"]
    assert [e["node"] for e in last] == [sent[room][-1], new]


async def whole_history(client: Http, room: str) -> list[Any]:
    return [
        e["node"]
        for body in await pages(client, room, first=100)
        for e in json.loads(body)["data"]["history"]["edges"]
    ]


async def stored_offsets(live: LiveServer) -> dict[str, list[int]]:
    """Each room's offsets, from the rows and from the blocks (decoded)."""
    from backends.blocks import unpack

    found: dict[str, list[int]] = {}
    if _postgres(live) is not None:
        for room, seq in await pg(live, "SELECT room_id, seq FROM messages"):
            found.setdefault(room, []).append(seq)
        dicts = dict(await pg(live, "SELECT id, body FROM block_dicts"))
        for room, body, dict_id in await pg(
            live, "SELECT room_id, body, dict_id FROM message_blocks"
        ):
            found.setdefault(room, []).extend(e[0] for e in unpack(body, dicts.get(dict_id)))
        return {room: sorted(seqs) for room, seqs in found.items()}
    namespace = _namespace(live)
    if namespace is not None:
        r = _redis()
        for key in r.scan_iter(match=f"{namespace}:msg-stream:*"):
            room = key.decode().split(":", 2)[2]
            found.setdefault(room, []).extend(int(i.split(b"-")[0]) for i, _ in r.xrange(key))
        for key in r.scan_iter(match=f"{namespace}:msg-blocks:*"):
            room = key.decode().split(":", 2)[2]
            for field, body in r.hgetall(key).items():
                if not field.startswith(b"c"):
                    found.setdefault(room, []).extend(e[0] for e in unpack(body, None))
        return {room: sorted(seqs) for room, seqs in found.items()}
    with db(live) as conn:
        for room, seq in conn.execute("SELECT room_id, seq FROM messages"):
            found.setdefault(room, []).append(seq)
        dicts = dict(conn.execute("SELECT id, body FROM block_dicts"))
        for room, body, dict_id in conn.execute(
            "SELECT room_id, body, dict_id FROM message_blocks"
        ):
            found.setdefault(room, []).extend(e[0] for e in unpack(body, dicts.get(dict_id)))
    return {room: sorted(seqs) for room, seqs in found.items()}


@pytest.mark.timeout(300)
async def test_a_killed_compaction_loses_and_duplicates_nothing(any_server: LiveServer) -> None:
    server = any_server
    rng = random.Random(15)
    async with httpx.AsyncClient(timeout=10) as http:
        alice = Http(server.client(unique("alice")), http)
        bob = Http(server.client(unique("bob")), http)
        rooms = [unique("room") for _ in range(3)]
        for r in rooms:
            await alice.execute(CREATE, id=r)
            await bob.execute(JOIN, id=r)
        await asyncio.gather(*(fill(alice, bob, r, 200) for r in rooms))
        before = {r: await whole_history(alice, r) for r in rooms}
        offsets = await stored_offsets(server)

        env = {k: v for k, v in os.environ.items() if not k.startswith("FORGE_STREAMING_")}
        killed = 0
        for run in range(20):
            process = subprocess.Popen(  # noqa: ASYNC220 - read line by line below
                [sys.executable, "server.py", "compact", *_where(server), "--batch", "10"],
                cwd=ROOT,
                env={**env, "FORGE_STREAMING_COMPRESS_AFTER": "1ms"},
                stdout=subprocess.PIPE,
                text=True,
            )
            assert process.stdout is not None
            lines = 0
            for line in process.stdout:
                lines += line.startswith("compact: ")
                if lines > run % 3:
                    # Right after a commit, or a moment into the next batch.
                    await asyncio.sleep(rng.choice([0, 0, 0.001, 0.003, 0.01]))
                    process.send_signal(signal.SIGKILL)
                    killed += 1
                    break
            process.stdout.close()
            process.wait(timeout=30)
            # Every read in between sees everything, once.
            assert await stored_offsets(server) == offsets
            assert await whole_history(alice, rooms[run % 3]) == before[rooms[run % 3]]
        assert killed >= 15
        result = compact(server)
        assert "compact: done" in result.stdout
        assert await uncompacted(server) == 0
        assert await stored_offsets(server) == offsets
        assert {r: await whole_history(alice, r) for r in rooms} == before


@pytest.fixture(params=["sqlite", "postgres"])
async def sql_server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LiveServer]:
    """A server on each SQL history backend."""
    live = LiveServer(tmp_path / "data", on_backend(request, request.param, SETTINGS)).start()
    yield live
    live.stop()
    await forget(live)


async def damage(live: LiveServer, damaged: str, undictionaried: str) -> tuple[int, int]:
    """Overwrite 8 bytes of a block of `damaged`, point a block of
    `undictionaried` at a dictionary that does not exist; their ids."""
    if _postgres(live) is not None:
        (block,) = (await pg(live, "SELECT id FROM message_blocks WHERE room_id = $1", damaged))[0]
        await pg(
            live,
            "UPDATE message_blocks SET body = overlay(body placing $1 from 21) WHERE id = $2",
            bytes(8),
            block,
        )
        (other,) = (
            await pg(live, "SELECT id FROM message_blocks WHERE room_id = $1", undictionaried)
        )[0]
        await pg(live, "UPDATE message_blocks SET dict_id = 999 WHERE id = $1", other)
        return block, other
    with db(live) as conn:
        block, blob = conn.execute(
            "SELECT id, body FROM message_blocks WHERE room_id = ?", (damaged,)
        ).fetchone()
        conn.execute(
            "UPDATE message_blocks SET body = ? WHERE id = ?",
            (blob[:20] + bytes(8) + blob[28:], block),
        )
        (other,) = conn.execute(
            "SELECT id FROM message_blocks WHERE room_id = ?", (undictionaried,)
        ).fetchone()
        conn.execute("UPDATE message_blocks SET dict_id = 999 WHERE id = ?", (other,))
    return block, other


async def test_a_damaged_block_is_an_error_naming_room_and_block(sql_server: LiveServer) -> None:
    server = sql_server
    async with httpx.AsyncClient(timeout=10) as http:
        alice = Http(server.client(unique("alice")), http)
        bob = Http(server.client(unique("bob")), http)
        damaged, undictionaried, fine = unique("room"), unique("room"), unique("room")
        for r in (damaged, undictionaried, fine):
            await alice.execute(CREATE, id=r)
            await bob.execute(JOIN, id=r)
            await fill(alice, bob, r, 30)
        fine_before = await whole_history(alice, fine)
        compact(server)
        block, other = await damage(server, damaged, undictionaried)
        for room, block_id, reason in (
            (damaged, block, "Zstd"),
            (undictionaried, other, "dictionary 999 missing"),
        ):
            body = (await alice.post(HISTORY, room=room, first=10)).json()
            assert body["data"] is None or body["data"]["history"] is None
            assert [e["extensions"]["code"] for e in body["errors"]] == ["DATA_CORRUPTED"]
            assert "room" not in body["errors"][0]["message"]  # the detail is the log's
            logged = [
                line
                for line in server.log().splitlines()
                if f"room {room!r} block {block_id}" in line
            ]
            assert len(logged) == 1 and reason in logged[0], logged
        assert await whole_history(alice, fine) == fine_before


async def room_of_two(live: LiveServer, http: httpx.AsyncClient) -> tuple[Http, Http, str]:
    """Alice and Bob, and a room Alice made and Bob joined."""
    alice = Http(live.client(unique("alice")), http)
    bob = Http(live.client(unique("bob")), http)
    room = unique("room")
    await alice.execute(CREATE, id=room)
    await bob.execute(JOIN, id=room)
    return alice, bob, room


@pytest.mark.parametrize("backend", ["sqlite", "redis", "postgres"])
async def test_a_running_server_compacts_in_the_background(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    settings = on_backend(request, backend, {**SETTINGS, "compress_after": "1ms"})
    live = LiveServer(tmp_path / "data", settings).start()
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            alice, bob, room = await room_of_two(live, http)
            await fill(alice, bob, room, 300)
            before = await whole_history(alice, room)
            stored = await uncompacted(live)
            # The first pass runs as the server starts.
            live.stop()
            live.start()
            await live.wait_metric("streaming_compaction_messages_total", stored)
            assert live.metric("streaming_compaction_blocks_total") >= 2
            before_bytes = live.metric("streaming_compaction_bytes_before_total")
            assert live.metric("streaming_compaction_bytes_after_total") * 2 < before_bytes
            assert await uncompacted(live) == 0
            assert await whole_history(alice, room) == before
    finally:
        live.stop()
        await forget(live)


async def launch_hits(client: Http, room: str) -> list[tuple[str, Any]]:
    """(id, data) of every message with "launch", newest first."""
    body = await raw(client, SEARCH, q="launch", room=room, first=100, order="NEWEST", after=None)
    found = json.loads(body)["data"]["searchMessages"]
    assert not found["pageInfo"]["hasNextPage"]
    return [(e["node"]["id"], e["node"]["data"]) for e in found["edges"]]


def with_launch(sent: list[Any]) -> list[tuple[str, Any]]:
    return [(m["id"], m["data"]) for m in reversed(sent) if "launch" in json.dumps(m["data"])]


async def test_messages_sent_after_everything_was_compacted_are_searched_beside_it(
    server: LiveServer,
) -> None:
    """A message sent once every row was compacted away does not get the
    rowid of a compacted message (its FTS row would take that one's place):
    search finds old and new, each with its own body, also after a restart."""
    async with httpx.AsyncClient(timeout=10) as http:
        alice, bob, room = await room_of_two(server, http)
        sent = await fill(alice, bob, room, 30)
        for round_ in range(2):
            compact(server)
            assert await uncompacted(server) == 0
            for i in range(5):
                data = f"fresh launch {round_} {i}"
                sent.append((await alice.execute(SEND, room=room, data=data))["sendMessage"])
            assert await launch_hits(alice, room) == with_launch(sent)
            with db(server) as conn:
                shared = conn.execute(
                    "SELECT rowid FROM searchable_messages GROUP BY rowid HAVING COUNT(*) > 1"
                ).fetchall()
            assert shared == [], "two messages share a rowid"
            server.stop()
            server.start()
            assert await launch_hits(alice, room) == with_launch(sent)
