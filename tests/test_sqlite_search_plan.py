"""The SQLite search's query plans: FTS5 drives, no table is read whole.

Joining `message_fts` to the `searchable_messages` view (a UNION ALL of
`messages` and `compacted_messages`) made SQLite materialize every message
for every search (seconds at 1M messages, bench/README.md "Search"); a
plan that scans or materializes a history table is that mistake again.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from backends.records import utcnow
from backends.search_query import RoomScope, SearchOrder, SearchRequest
from backends.sqlite import SqliteDatabase
from backends.sqlite_search import SqliteMessageSearch, _newest_candidates, _scored
from resolvers.search_syntax import parse_query

QUERIES = ["deploy", '"release candidate" -staging', "deploy* OR ship"]


def _requests(query: str) -> list[SearchRequest]:
    match = parse_query(query).match
    rooms = tuple(RoomScope(f"room{i}", "inc") for i in range(3))
    plain = [SearchRequest(match=match, rooms=rooms, limit=20, order=o) for o in SearchOrder]
    filtered = SearchRequest(
        match=match,
        rooms=rooms,
        limit=20,
        order=SearchOrder.NEWEST,
        user_ids=frozenset({"alice"}),
        since=utcnow() - timedelta(days=1),
        thread_id="t1",
    )
    return [*plain, filtered]


@pytest.mark.parametrize("query", QUERIES)
async def test_fts5_drives_every_search_plan(tmp_path: Path, query: str) -> None:
    path = tmp_path / "search.db"
    db = await SqliteDatabase.open(path)
    search = SqliteMessageSearch(db, timedelta(days=30), with_messages=True)
    statements = []
    for request in _requests(query):
        filters, params = search._filters(request)
        statements.append(_newest_candidates(request, filters, params)[:2])
        statements.append(_scored(request, filters, params))
    await db.close()
    plans = []
    with sqlite3.connect(path) as conn:
        for sql, params in statements:
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
            plans.append(plan)
            assert plan, sql
            assert not [step for step in plan if step.startswith("MATERIALIZE")], plan
            assert not [
                step
                for step in plan
                if step.startswith(("SCAN messages", "SCAN compacted_messages", "SCAN m "))
            ], plan
            scans = [step for step in plan if step.startswith("SCAN")]
            assert scans[0].startswith("SCAN message_fts VIRTUAL TABLE"), plan
    assert len(plans) == 2 * len(_requests(query))
