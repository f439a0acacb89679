"""MessageSearch contract: the query language's meaning, filters, order,
paging, incarnations, room drops and retention, on every search backend.

Each backend runs twice: with history on the same URL (the store indexes
its appends itself) and alone (fed through `index`, as beside a Redis or
NATS history). A backend joins by listing "search" in its BackendSpec roles.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backends.factory import backend_module
from backends.opened import Opened
from backends.protocols import MessageSearch, MessageStore
from backends.records import Message, NewMessage
from backends.search_query import RoomScope, SearchOrder, SearchRequest
from resolvers.search_syntax import parse_query

from .conftest import BACKENDS, backends_with, new_message

INC = "inc1"


@dataclass
class Indexed:
    """A history and its search index, however the backend pairs them."""

    messages: MessageStore
    search: MessageSearch
    together: bool

    async def append(self, new: NewMessage, *, incarnation: str = INC) -> Message:
        message, created = await self.messages.append(new, incarnation=incarnation)
        assert created
        if not self.together:
            await self.search.index([message])
        return message

    async def drop_room(self, room_id: str, *, incarnation: str | None = None) -> None:
        await self.messages.drop_room(room_id, incarnation=incarnation)
        if not self.together:
            await self.search.drop_room(room_id, incarnation=incarnation)

    async def trim(self) -> None:
        await self.messages.trim()
        if not self.together:
            await self.search.trim()


CASES = [(name, together) for name in backends_with("search") for together in (True, False)]


async def _open(url: str, roles: list[str], retention: timedelta | None) -> Opened:
    opened: Opened = await backend_module(url).open_stores(url, roles, retention=retention)
    return opened


@pytest.fixture(params=CASES, ids=[f"{n}-{'together' if t else 'apart'}" for n, t in CASES])
async def make_indexed(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    name, together = request.param
    spec = BACKENDS[name]
    opened: list[Opened] = []

    async def make(retention: timedelta | None = None) -> Indexed:
        if together:
            both = await _open(spec.url(tmp_path), ["messages", "search"], retention)
            opened.append(both)
            assert both.messages is not None and both.search is not None
            assert both.search.indexes_on_append
            return Indexed(both.messages, both.search, together=True)
        # History in memory, the index on the backend under test.
        history = await _open("memory://", ["messages"], retention)
        index = await _open(spec.url(tmp_path / "apart"), ["search"], retention)
        opened.extend([history, index])
        assert history.messages is not None and index.search is not None
        assert not index.search.indexes_on_append
        return Indexed(history.messages, index.search, together=False)

    yield make
    for item in reversed(opened):
        for store in (item.messages, item.search):
            if store is not None:
                await store.close()
        await item.close()


@pytest.fixture
async def indexed(make_indexed: Any) -> Indexed:
    made: Indexed = await make_indexed()
    return made


def new(data: Any, *, room_id: str = "r1", **fields: Any) -> NewMessage:
    return new_message(data, room_id=room_id, **fields)


async def found(
    indexed: Indexed, query: str, rooms: tuple[str, ...] = ("r1",), **filters: Any
) -> list[Any]:
    """The `data` of every hit, in order."""
    request = SearchRequest(
        match=parse_query(query).match,
        rooms=tuple(RoomScope(r, INC) for r in rooms),
        limit=100,
        **filters,
    )
    page = await indexed.search.search(request)
    return [hit.message.data for hit in page.hits]


async def test_words_are_case_and_accent_insensitive(indexed: Indexed) -> None:
    await indexed.append(new("Un Café au lait"))
    await indexed.append(new("CAFE NOIR"))
    await indexed.append(new("tea"))
    assert await found(indexed, "cafe") == ["CAFE NOIR", "Un Café au lait"]
    assert await found(indexed, "CAFÉ") == ["CAFE NOIR", "Un Café au lait"]
    assert await found(indexed, "café lait") == ["Un Café au lait"]


async def test_phrases_need_the_words_in_order(indexed: Indexed) -> None:
    await indexed.append(new("the quick brown fox"))
    await indexed.append(new("brown quick"))
    assert await found(indexed, '"quick brown"') == ["the quick brown fox"]
    assert await found(indexed, "quick brown") == ["brown quick", "the quick brown fox"]
    # A word with punctuation inside is a phrase of its parts.
    await indexed.append(new("write an e-mail"))
    await indexed.append(new("mail e"))
    assert await found(indexed, "e-mail") == ["write an e-mail"]


async def test_prefix_exclusion_and_or(indexed: Indexed) -> None:
    await indexed.append(new("deploying today"))
    await indexed.append(new("deployed yesterday"))
    await indexed.append(new("redeploy soon"))
    assert await found(indexed, "deploy*") == ["deployed yesterday", "deploying today"]
    assert await found(indexed, "deploy* -yesterday") == ["deploying today"]
    assert await found(indexed, "today OR soon") == ["redeploy soon", "deploying today"]
    assert await found(indexed, "deploy* today OR yesterday -today") == ["deployed yesterday"]


async def test_json_string_values_and_event_are_searched(indexed: Indexed) -> None:
    await indexed.append(new({"text": "hello", "nested": {"list": ["Zürich"]}, "n": 42}))
    await indexed.append(new({"n": 42}, event="deploy.finished"))
    assert await found(indexed, "zurich") == [
        {"text": "hello", "nested": {"list": ["Zürich"]}, "n": 42}
    ]
    assert await found(indexed, "42") == []  # numbers are not text
    assert await found(indexed, "finished") == [{"n": 42}]


async def test_filters_combine(indexed: Indexed) -> None:
    base = datetime.now(UTC) - timedelta(hours=1)
    await indexed.append(new("ship it", user_id="alice", timestamp=base))
    await indexed.append(
        new("ship it", user_id="bob", thread_id="t1", timestamp=base + timedelta(minutes=1))
    )
    await indexed.append(
        new("ship it", user_id="bob", event="other", timestamp=base + timedelta(minutes=2))
    )
    await indexed.append(new("ship it", room_id="r2", timestamp=base + timedelta(minutes=3)))
    assert len(await found(indexed, "ship")) == 3
    assert len(await found(indexed, "ship", rooms=("r1", "r2"))) == 4
    assert len(await found(indexed, "ship", user_ids=frozenset({"bob"}))) == 2
    assert len(await found(indexed, "ship", events=frozenset({"chat"}))) == 2
    assert len(await found(indexed, "ship", thread_id="t1")) == 1
    assert len(await found(indexed, "ship", has_thread=True)) == 1
    since = base + timedelta(minutes=1)
    assert len(await found(indexed, "ship", since=since)) == 2
    assert len(await found(indexed, "ship", until=since)) == 1
    assert len(await found(indexed, "ship", since=since, until=since)) == 0


async def test_newest_first_pages_without_gaps_or_repeats(indexed: Indexed) -> None:
    base = datetime.now(UTC) - timedelta(hours=1)
    for i in range(7):
        # Two rooms, some at the same instant: the tie-break orders them.
        await indexed.append(
            new(f"page {i}", room_id=f"r{i % 2}", timestamp=base + timedelta(seconds=i // 2))
        )
    rooms = tuple(RoomScope(r, INC) for r in ("r0", "r1"))
    seen: list[Any] = []
    after = None
    for _ in range(5):
        page = await indexed.search.search(
            SearchRequest(match=parse_query("page").match, rooms=rooms, limit=3, after=after)
        )
        seen += [hit.message.data for hit in page.hits]
        if not page.has_more:
            break
        after = page.hits[-1].key
    keys = [(6 - i) // 2 for i in range(7)]
    assert len(seen) == 7 and len(set(seen)) == 7
    assert [int(s.split()[1]) // 2 for s in seen] == keys


async def test_relevance_orders_by_score_and_pages(indexed: Indexed) -> None:
    await indexed.append(new("rust " + "filler " * 30))
    await indexed.append(new("rust rust rust"))
    await indexed.append(new("rust and more " + "words " * 10))
    request = SearchRequest(
        match=parse_query("rust").match,
        rooms=(RoomScope("r1", INC),),
        limit=2,
        order=SearchOrder.RELEVANCE,
    )
    first = await indexed.search.search(request)
    assert first.hits[0].message.data == "rust rust rust"
    assert first.has_more
    scores = [hit.score for hit in first.hits]
    assert scores == sorted(scores, reverse=True)
    rest = await indexed.search.search(
        SearchRequest(
            match=request.match,
            rooms=request.rooms,
            limit=2,
            order=SearchOrder.RELEVANCE,
            after=first.hits[-1].key,
        )
    )
    assert len(rest.hits) == 1 and not rest.has_more
    assert rest.hits[0].message.data == "rust " + "filler " * 30


async def test_relevance_scores_only_the_newest_candidates(indexed: Indexed) -> None:
    await indexed.append(new("lotus lotus lotus"))
    await indexed.append(new("lotus " + "x " * 20))
    page = await indexed.search.search(
        SearchRequest(
            match=parse_query("lotus").match,
            rooms=(RoomScope("r1", INC),),
            limit=10,
            order=SearchOrder.RELEVANCE,
            max_candidates=1,
        )
    )
    assert [hit.message.data for hit in page.hits] == ["lotus " + "x " * 20]


async def test_only_the_rooms_and_incarnation_asked(indexed: Indexed) -> None:
    await indexed.append(new("secret", room_id="private"))
    await indexed.append(new("secret", room_id="r1"))
    assert await found(indexed, "secret") == ["secret"]
    page = await indexed.search.search(
        SearchRequest(match=parse_query("secret").match, rooms=(RoomScope("r1", "other"),), limit=5)
    )
    assert page.hits == []


async def test_dropped_room_is_gone_from_the_index(indexed: Indexed) -> None:
    await indexed.append(new("farewell"))
    await indexed.drop_room("r1", incarnation="not-this-one")
    assert await found(indexed, "farewell") == ["farewell"]
    await indexed.drop_room("r1", incarnation=INC)
    assert await found(indexed, "farewell") == []
    # The room made again: only the new incarnation's messages.
    await indexed.append(new("hello again"), incarnation="inc2")
    page = await indexed.search.search(
        SearchRequest(match=parse_query("again").match, rooms=(RoomScope("r1", "inc2"),), limit=5)
    )
    assert [hit.message.data for hit in page.hits] == ["hello again"]


async def test_retention_hides_then_trims(make_indexed: Any) -> None:
    indexed: Indexed = await make_indexed(retention=timedelta(hours=1))
    await indexed.append(new("ancient", timestamp=datetime.now(UTC) - timedelta(hours=2)))
    await indexed.append(new("recent"))
    assert await found(indexed, "ancient OR recent") == ["recent"]
    await indexed.trim()
    assert await found(indexed, "ancient OR recent") == ["recent"]


async def test_index_is_idempotent(make_indexed: Any) -> None:
    indexed: Indexed = await make_indexed()
    message = await indexed.append(new("once"))
    await indexed.search.index([message])
    assert await found(indexed, "once") == ["once"]


async def test_sqlite_indexes_what_was_stored_without_the_index(tmp_path: Path) -> None:
    """A database from before search (no FTS table), and messages appended
    while the search role was elsewhere, are indexed at the next open."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    plain = await _open(url, ["messages"], None)
    assert plain.messages is not None
    for i in range(5):
        await plain.messages.append(new(f"older {i}"), incarnation=INC)
    await plain.messages.close()
    await plain.close()
    with sqlite3.connect(tmp_path / "old.db") as db:
        db.executescript("DROP TABLE message_fts; DROP TABLE search_state;")
    db.close()

    async def search_all(opened: Opened) -> list[Any]:
        assert opened.search is not None
        page = await opened.search.search(
            SearchRequest(match=parse_query("older").match, rooms=(RoomScope("r1", INC),), limit=50)
        )
        return [hit.message.data for hit in page.hits]

    both = await _open(url, ["messages", "search"], None)
    assert await search_all(both) == [f"older {i}" for i in range(4, -1, -1)]
    assert both.messages is not None
    await both.messages.close()
    await both.close()
    # History alone again (the index elsewhere), then back with the index.
    plain = await _open(url, ["messages"], None)
    assert plain.messages is not None
    await plain.messages.append(new("older 5"), incarnation=INC)
    await plain.close()
    both = await _open(url, ["messages", "search"], None)
    assert (await search_all(both))[0] == "older 5"
    await both.close()


async def test_newest_first_breaks_wide_ties_by_room_then_newest_offset(indexed: Indexed) -> None:
    # More ties than a few pages, appended in the order opposite to the
    # tie-break's (r2 before r1): an index that reads the newest appends
    # first must still give the exact order.
    instant = datetime.now(UTC) - timedelta(minutes=5)
    await indexed.append(new("tie old", room_id="r1", timestamp=instant - timedelta(seconds=1)))
    for i in range(15):
        await indexed.append(new(f"tie {i}", room_id="r2", timestamp=instant))
        await indexed.append(new(f"tie {i}", room_id="r1", timestamp=instant))
    rooms = tuple(RoomScope(r, INC) for r in ("r1", "r2"))
    seen: list[tuple[str, Any]] = []
    after = None
    for _ in range(20):
        page = await indexed.search.search(
            SearchRequest(match=parse_query("tie").match, rooms=rooms, limit=2, after=after)
        )
        seen += [(hit.message.room_id or "", hit.message.data) for hit in page.hits]
        if not page.has_more:
            break
        after = page.hits[-1].key
    expected = [(r, f"tie {i}") for r in ("r1", "r2") for i in reversed(range(15))]
    assert seen == [*expected, ("r1", "tie old")]
