"""searchMessages and history's filters over the wire, on a real server per backend:
the query language, what the viewer may read, paging, snippets and bad input."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_SETTINGS, require_service
from tests.live import GraphQLClient, LiveServer, unique
from tests.test_compaction import compact

CREATE = """
mutation($id: ID!, $private: Boolean! = false) {
  createRoom(input: {id: $id, name: "Room", isPrivate: $private}) { id }
}
"""
JOIN = "mutation($id: ID!) { joinRoom(roomId: $id) { id } }"
LEAVE = "mutation($id: ID!) { leaveRoom(roomId: $id) }"
DELETE = "mutation($id: ID!) { deleteRoom(id: $id) }"
SEND = """
mutation($room: ID!, $data: JSON, $thread: ID, $event: String) {
  sendMessage(input: {roomId: $room, data: $data, threadId: $thread, event: $event}) {
    id timestamp cursor
  }
}
"""
SEARCH = """
query($q: String!, $room: ID, $user: ID, $event: String, $thread: ID, $since: DateTime,
      $until: DateTime, $first: Int, $after: String, $order: SearchOrder! = NEWEST) {
  searchMessages(query: $q, roomId: $room, userId: $user, event: $event, threadId: $thread,
                 since: $since, until: $until, first: $first, after: $after, orderBy: $order) {
    edges { cursor snippet score highlights { start end } node { id roomId userId data } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""
HISTORY = """
query($room: ID!, $first: Int, $after: String, $last: Int, $before: String,
      $users: [ID!], $events: [String!], $since: DateTime, $until: DateTime) {
  history(roomId: $room, first: $first, after: $after, last: $last, before: $before,
          userIds: $users, events: $events, since: $since, until: $until) {
    edges { node { userId event data timestamp } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""

SETTINGS = {**TEST_SETTINGS, "max_messages_per_second": 1000, "max_rooms_per_user": 50}


@pytest.fixture(scope="module", params=["sqlite", "memory"])
def search_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    settings = {**SETTINGS, "backend": request.param}
    live = LiveServer(tmp_path_factory.mktemp("search"), settings).start()
    yield live
    live.stop()


@pytest.fixture
def server(search_server: LiveServer) -> Iterator[LiveServer]:
    yield search_server
    search_server.wait_idle()


async def new_room(client: GraphQLClient, *, private: bool = False) -> str:
    room_id = unique("room")
    await client.execute(CREATE, id=room_id, private=private)
    return room_id


async def send(client: GraphQLClient, room: str, data: Any, **extra: Any) -> dict[str, Any]:
    sent: dict[str, Any] = (await client.execute(SEND, room=room, data=data, **extra))[
        "sendMessage"
    ]
    return sent


async def search(client: GraphQLClient, q: str, **args: Any) -> dict[str, Any]:
    found: dict[str, Any] = (await client.execute(SEARCH, q=q, **args))["searchMessages"]
    return found


async def texts(client: GraphQLClient, q: str, **args: Any) -> list[Any]:
    return [e["node"]["data"] for e in (await search(client, q, **args))["edges"]]


# --- the query language -----------------------------------------------------------------


async def test_query_language(server: LiveServer) -> None:
    alice = server.client(unique("alice"))
    room = await new_room(alice)
    for text in ("Un Café au lait", "the quick brown fox", "brown quick", "deploying today"):
        await send(alice, room, text)
    await send(alice, room, {"title": "Réunion", "body": ["ordre du jour"]}, thread="t1")
    await send(alice, room, "nothing here", event="build.finished")
    assert await texts(alice, "CAFE", room=room) == ["Un Café au lait"]
    assert await texts(alice, "café LAIT", room=room) == ["Un Café au lait"]
    assert await texts(alice, '"quick brown"', room=room) == ["the quick brown fox"]
    assert await texts(alice, "deploy*", room=room) == ["deploying today"]
    assert await texts(alice, "quick -fox", room=room) == ["brown quick"]
    assert await texts(alice, "lait OR fox", room=room) == [
        "the quick brown fox",
        "Un Café au lait",
    ]
    assert await texts(alice, "reunion", room=room) == [
        {"title": "Réunion", "body": ["ordre du jour"]}
    ]
    assert await texts(alice, "finished", room=room) == ["nothing here"]
    assert len(await texts(alice, "quick has:thread", room=room)) == 0
    assert len(await texts(alice, "jour has:thread", room=room)) == 1
    assert await texts(alice, "lait", room=room, thread="t1") == []


async def test_modifiers_and_arguments_combine(server: LiveServer) -> None:
    alice, bob = server.client(unique("alice")), server.client(unique("bob"))
    room, other = await new_room(alice), await new_room(alice)
    await bob.execute(JOIN, id=room)
    await send(alice, room, "launch plan")
    await send(bob, room, "launch party", event="fun")
    await send(alice, other, "launch elsewhere")
    assert len(await texts(alice, "launch")) == 3
    assert await texts(alice, f"launch in:{other}") == ["launch elsewhere"]
    assert await texts(alice, "launch from:nobody") == []
    bob_id = (await bob.execute("{ me }"))["me"]
    assert await texts(alice, f"launch from:{bob_id}") == ["launch party"]
    assert await texts(alice, "launch", user=bob_id) == ["launch party"]
    assert await texts(alice, "launch", event="fun") == ["launch party"]
    assert await texts(alice, f"launch in:{other}", room=room) == []
    today = datetime.now(UTC).date()
    tomorrow, yesterday = today + timedelta(days=1), today - timedelta(days=1)
    assert len(await texts(alice, f"launch before:{tomorrow}")) == 3
    assert len(await texts(alice, f"launch after:{yesterday}")) == 3
    assert await texts(alice, f"launch before:{today}") == []
    assert await texts(alice, f"launch after:{today}") == []
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert len(await texts(alice, "launch", since=hour_ago)) == 3
    assert await texts(alice, "launch", until=hour_ago) == []


async def test_snippet_is_plain_text_with_highlights(server: LiveServer) -> None:
    alice = server.client(unique("alice"))
    room = await new_room(alice)
    searches = await asyncio.to_thread(server.metric, "streaming_search_seconds_count")
    long = "<b>x</b> " * 30 + "the Café opens " + "later " * 40
    await send(alice, room, long)
    edge = (await search(alice, "cafe opens", room=room))["edges"][0]
    snippet = edge["snippet"]
    assert snippet.startswith("…") and snippet.endswith("…")
    assert len(snippet) <= 162
    marked = [snippet[h["start"] : h["end"]] for h in edge["highlights"]]
    assert marked == ["Café", "opens"]
    assert "<b>x</b>" in snippet or "Café" in snippet  # markup stays text, never parsed
    assert edge["score"] >= 0
    timed = await asyncio.to_thread(server.metric, "streaming_search_seconds_count")
    assert timed == searches + 1


# --- who may read what --------------------------------------------------------------------


async def test_only_rooms_the_viewer_may_read(server: LiveServer) -> None:
    alice, eve = server.client(unique("alice")), server.client(unique("eve"))
    public, private = await new_room(alice), await new_room(alice, private=True)
    word = unique("w").replace("-", "")
    await send(alice, public, f"{word} public")
    await send(alice, private, f"{word} private")
    assert sorted(await texts(alice, word)) == [f"{word} private", f"{word} public"]
    # Eve joined nothing: nothing without roomId; the public room by name.
    assert await texts(eve, word) == []
    assert await texts(eve, word, room=public) == [f"{word} public"]
    assert await texts(eve, f"{word} in:{public}") == [f"{word} public"]
    # The private room answers exactly like a room that does not exist.
    hidden = await eve.error(SEARCH, q=word, room=private)
    missing = await eve.error(SEARCH, q=word, room="no-such-room")
    assert hidden.code == missing.code == "NOT_FOUND"
    assert hidden.errors[0]["message"].replace(private, "X") == missing.errors[0][
        "message"
    ].replace("no-such-room", "X")
    assert await texts(eve, f"{word} in:{private}") == []
    assert await texts(eve, f"{word} in:no-such-room") == []


async def test_left_and_deleted_rooms_are_gone(server: LiveServer) -> None:
    alice, bob = server.client(unique("alice")), server.client(unique("bob"))
    room = await new_room(alice)
    await bob.execute(JOIN, id=room)
    word = unique("w").replace("-", "")
    await send(alice, room, word)
    assert await texts(bob, word) == [word]
    await bob.execute(LEAVE, id=room)
    assert await texts(bob, word) == []
    await alice.execute(DELETE, id=room)
    assert await texts(alice, word) == []
    # A room made again under the id starts empty.
    await alice.execute(CREATE, id=room)
    assert await texts(alice, word, room=room) == []


# --- paging -----------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["NEWEST", "RELEVANCE"])
async def test_paging_strictly_by_cursor(server: LiveServer, order: str) -> None:
    alice = server.client(unique("alice"))
    room = await new_room(alice)
    for i in range(7):
        await send(alice, room, "page " * (i + 1) + str(i))
    seen: list[str] = []
    after = None
    for _ in range(5):
        page = await search(alice, "page", room=room, first=3, after=after, order=order)
        seen += [e["node"]["data"] for e in page["edges"]]
        assert page["pageInfo"]["hasPreviousPage"] is (after is not None)
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert len(seen) == 7 and len(set(seen)) == 7
    if order == "NEWEST":
        assert [s.rsplit(" ", 1)[1] for s in seen] == [str(i) for i in range(6, -1, -1)]
    other = "RELEVANCE" if order == "NEWEST" else "NEWEST"
    error = await alice.error(SEARCH, q="page", room=room, after=after, order=other)
    assert error.code == "BAD_USER_INPUT"


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "args", "says"),
    [
        ("", {}, "nothing to search for"),
        ("   ", {}, "nothing to search for"),
        ("-only", {}, "nothing to search for"),
        ("from:someone", {}, "nothing to search for"),
        ('"unbalanced', {}, "at position 0"),
        ('ok "unbalanced', {}, "at position 3"),
        (" ".join(["word"] * 10_000), {}, "longer than"),
        (" ".join(f"w{i}" for i in range(40)), {}, "too many words"),
        ("*", {}, "prefix"),
        ("a*b", {}, "'*' may only end a word"),
        ("OR that", {}, "OR needs"),
        ("this OR", {}, "OR needs"),
        ("x before:2024-13-01", {}, "YYYY-MM-DD"),
        ("x after:0001-01-01", {}, "between 1970 and 9999"),
        ("x has:files", {}, "has:thread"),
        ("x in:bad/room", {}, "room id"),
        ("x", {"first": 10_000}, "first must be between"),
        ("x", {"first": -1}, "first must be between"),
        ("x", {"after": "garbage"}, "malformed search cursor"),
        ("x", {"since": "0001-01-01T00:00:00+00:00"}, "between 1970 and 9999"),
        ("x", {"since": "2024-01-01T00:00:00"}, "time zone"),
        ("x", {"room": "bad room"}, "ids are"),
    ],
)
async def test_bad_input_is_a_clear_error(
    server: LiveServer, query: str, args: dict[str, Any], says: str
) -> None:
    alice = server.client(unique("alice"))
    started = time.monotonic()
    error = await alice.error(SEARCH, q=query, **args)
    assert time.monotonic() - started < 5
    assert error.code == "BAD_USER_INPUT", error.errors
    assert says in error.errors[0]["message"]


async def test_unknown_users_and_rooms_find_nothing(server: LiveServer) -> None:
    alice = server.client(unique("alice"))
    room = await new_room(alice)
    await send(alice, room, "something")
    assert await texts(alice, "something from:nobody-at-all") == []
    assert await texts(alice, "something in:never-made") == []
    assert await texts(alice, "something", user="nobody-at-all") == []
    assert await texts(alice, "something", first=0) == []


# --- history's filters -----------------------------------------------------------------------


async def test_history_filters(server: LiveServer) -> None:
    alice, bob = server.client(unique("alice")), server.client(unique("bob"))
    room = await new_room(alice)
    await bob.execute(JOIN, id=room)
    bob_id = (await bob.execute("{ me }"))["me"]
    for i in range(6):
        sender = bob if i % 2 else alice
        await send(sender, room, f"m{i}", event="odd" if i % 3 == 0 else "even")

    async def datas(**args: Any) -> list[Any]:
        history = (await alice.execute(HISTORY, room=room, **args))["history"]
        return [
            e["node"]["data"] for e in history["edges"] if e["node"]["event"] in ("odd", "even")
        ]

    assert await datas(users=[bob_id]) == ["m1", "m3", "m5"]
    assert await datas(events=["odd"]) == ["m0", "m3"]
    assert await datas(users=[bob_id], events=["odd"]) == ["m3"]
    chat = ["odd", "even"]  # not bob's join announcement
    assert await datas(users=[bob_id], events=chat, first=2) == ["m1", "m3"]
    assert await datas(users=[bob_id], last=2) == ["m3", "m5"]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert await datas(since=future) == []
    assert len(await datas(until=future)) == 6
    # Paging with a filter: the end cursor continues after the last match.
    first = (await alice.execute(HISTORY, room=room, users=[bob_id], events=chat, first=1))[
        "history"
    ]
    assert first["pageInfo"]["hasNextPage"]
    rest = await datas(users=[bob_id], first=5, after=first["pageInfo"]["endCursor"])
    assert rest == ["m3", "m5"]
    error = await alice.error(HISTORY, room=room, users=["x" * 500])
    assert error.code == "BAD_USER_INPUT"


# --- deployments without, and beside, a search role ------------------------------------------


@dataclass
class BesideRedis:
    """Servers on one fresh Redis namespace: first without the search role,
    then with it in a SQLite file."""

    make_server: Any
    tmp_path: Path
    settings: dict[str, Any]

    def without_search(self) -> LiveServer:
        live: LiveServer = self.make_server(self.tmp_path / "off", self.settings).start()
        return live

    def with_search(self) -> LiveServer:
        index = f"sqlite:///{self.tmp_path / 'index' / 'search.db'}"
        settings = {**self.settings, "role_urls": {"search": index}}
        live: LiveServer = self.make_server(self.tmp_path / "on", settings).start()
        return live


@pytest.fixture
def beside_redis(make_server: Any, tmp_path: Path) -> BesideRedis:
    require_service("Redis", 6379)
    url = f"redis://127.0.0.1:6379/0?namespace=t{unique('s').replace('-', '')}"
    settings = {**SETTINGS, "backend": "redis", "backend_urls": [url]}
    return BesideRedis(make_server, tmp_path, settings)


async def test_search_role_off_and_on_beside_redis(beside_redis: BesideRedis) -> None:
    off = beside_redis.without_search()
    alice_id = unique("alice")
    alice = off.client(alice_id)
    room = await new_room(alice)
    await send(alice, room, "indexed elsewhere")
    error = await alice.error(SEARCH, q="indexed")
    assert error.code == "FEATURE_DISABLED"
    assert "role_urls.search" in error.errors[0]["message"]
    off.stop()
    # The same Redis, with an index in a SQLite file: new messages are found.
    on = beside_redis.with_search()
    alice = on.client(alice_id)
    await send(alice, room, "indexed now")
    assert await texts(alice, "indexed") == ["indexed now"]
    await alice.execute(DELETE, id=room)
    assert await texts(alice, "indexed") == []


async def test_search_follows_the_history_to_its_own_file(make_server: Any, tmp_path: Any) -> None:
    history = f"sqlite:///{tmp_path / 'history' / 'messages.db'}"
    live = make_server(tmp_path / "split", {**SETTINGS, "role_urls": {"messages": history}}).start()
    alice = live.client(unique("alice"))
    room = await new_room(alice)
    await send(alice, room, "kept beside the history")
    assert await texts(alice, "beside") == ["kept beside the history"]
    live.stop()
    # Indexed in the history's file, in its transaction; no copy beside the rooms.
    for path, indexed in (
        (tmp_path / "history" / "messages.db", True),
        (tmp_path / "split" / "forge-streaming.db", False),
    ):
        with sqlite3.connect(path) as db:
            (rows,) = db.execute("SELECT COUNT(*) FROM message_fts").fetchone()
        db.close()
        assert (rows > 0) is indexed


def run_reindex(live: LiveServer) -> str:
    """`server.py reindex` with the server's own config, beside it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGE_STREAMING_")}
    done = subprocess.run(
        [
            sys.executable,
            "server.py",
            "reindex",
            "--config",
            str(live.data_dir / "config.yaml"),
            "--data-dir",
            str(live.data_dir),
        ],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


async def test_reindex_backfills_what_was_stored_before_the_search_role(
    beside_redis: BesideRedis,
) -> None:
    off = beside_redis.without_search()
    alice_id = unique("alice")
    alice = off.client(alice_id)
    rooms = [await new_room(alice), await new_room(alice, private=True)]
    for i in range(3):
        for room in rooms:
            await send(alice, room, f"backlog {i}")
    off.stop()
    on = beside_redis.with_search()
    alice = on.client(alice_id)
    await send(alice, rooms[0], "backlog live")
    assert await texts(alice, "backlog") == ["backlog live"]
    out = run_reindex(on)
    assert "reindex: done" in out
    expected = ["backlog live", *[f"backlog {i}" for i in (2, 1, 0)]]
    assert await texts(alice, "backlog", room=rooms[0]) == expected
    assert await texts(alice, "backlog", room=rooms[1]) == expected[1:]
    # Again: nothing doubles.
    run_reindex(on)
    assert await texts(alice, "backlog", room=rooms[0]) == expected
    assert len(await texts(alice, "backlog")) == 7


async def test_messages_compacted_while_search_was_elsewhere_are_found_when_it_returns(
    make_server: Any, tmp_path: Any
) -> None:
    index = f"sqlite:///{tmp_path / 'index' / 'search.db'}"
    away = {**SETTINGS, "role_urls": {"search": index}}
    off = make_server(tmp_path / "data", away).start()
    alice_id = unique("alice")
    alice = off.client(alice_id)
    room = await new_room(alice)
    for i in range(3):
        await send(alice, room, f"backlog {i}")
    off.stop()
    # Packed into blocks while the history file has no index of them.
    assert "done, 4 messages" in compact(off).stdout  # and the JOIN
    # The search role back on the history's file: its start-up backfill
    # indexes them from the blocks.
    on = make_server(tmp_path / "data", SETTINGS).start()
    alice = on.client(alice_id)
    assert await texts(alice, "backlog") == [f"backlog {i}" for i in (2, 1, 0)]
