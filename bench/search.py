"""Search on SQLite: build a history, index it, time searches and appends.

    python bench/search.py                       # 1M messages across 1,000 rooms
    python bench/search.py --messages 200000     # shorter
    python bench/search.py --db corpus.db        # build once into corpus.db, reuse it after

Times are inside the server: `SqliteMessageSearch.search` plus the snippet
and highlights the resolver adds, without HTTP. The history is written with
plain SQL (fast), then indexed by the backend's own backfill (that is the
index build rate). Appends are timed through `SqliteMessageStore.append`,
with and without the FTS row, on the same database.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backends.records import MessageKind, NewMessage
from backends.search_query import RoomScope, SearchOrder, SearchRequest
from backends.sqlite import SqliteDatabase, SqliteMessageStore
from backends.sqlite_search import SqliteMessageSearch
from resolvers.search import snippet_of
from resolvers.search_syntax import parse_query

INC = "bench"
VOCABULARY = 20_000


def build(path: Path, messages: int, rooms: int, seed: int) -> None:
    rng = random.Random(seed)
    vocabulary = [f"w{i:05d}" for i in range(VOCABULARY)]
    weights = list(itertools.accumulate(1 / (i + 1) for i in range(VOCABULARY)))
    start = datetime.now(UTC) - timedelta(days=20)
    start_us = int(start.timestamp() * 1e6)
    db = sqlite3.connect(path)
    db.executemany(
        "INSERT INTO streams (room_id, epoch, last_offset, incarnation) VALUES (?, ?, ?, ?)",
        [(f"room{r:04d}", f"{INC}.0", messages // rooms + 1, INC) for r in range(rooms)],
    )
    seqs = [0] * rooms

    def rows() -> Iterator[tuple[Any, ...]]:
        for i in range(messages):
            r = rng.randrange(rooms)
            seqs[r] += 1
            text = " ".join(rng.choices(vocabulary, cum_weights=weights, k=rng.randint(4, 20)))
            if i % 100 == 0:
                text += " release candidate ready"  # the phrase, in 1% of messages
            yield (
                f"room{r:04d}",
                seqs[r],
                uuid.uuid4().hex,
                "MESSAGE",
                f"user{rng.randrange(500)}",
                start_us + i * 1_000,
                json.dumps({"text": text}),
                "null",
            )

    with db:
        db.executemany(
            "INSERT INTO messages (room_id, seq, id, kind, user_id, ts, data, metadata)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows(),
        )
        db.execute(
            "UPDATE streams SET last_offset = (SELECT MAX(seq) FROM messages m"
            " WHERE m.room_id = streams.room_id)"
        )
    db.close()


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def time_searches(
    search: SqliteMessageSearch, rooms: int, repeats: int, rng: random.Random
) -> list[dict[str, Any]]:
    results = []
    cases = [
        ("one word", "w00050"),  # in about 2 % of the messages
        ("common word", "w00001"),  # in about 40 %
        ("phrase", '"release candidate"'),
    ]
    for label, query in cases:
        match = parse_query(query).match
        for width in (1, 50):
            for order in (SearchOrder.NEWEST, SearchOrder.RELEVANCE):
                times = []
                hits = 0
                for _ in range(repeats):
                    chosen = rng.sample(range(rooms), width)
                    request = SearchRequest(
                        match=match,
                        rooms=tuple(RoomScope(f"room{r:04d}", INC) for r in chosen),
                        limit=20,
                        order=order,
                    )
                    began = time.perf_counter()
                    page = await search.search(request)
                    for hit in page.hits:
                        snippet_of(hit.message, match)
                    times.append((time.perf_counter() - began) * 1000)
                    hits += len(page.hits)
                results.append(
                    {
                        "search": label,
                        "rooms": width,
                        "order": order.value,
                        "p50_ms": round(statistics.median(times), 2),
                        "p99_ms": round(percentile(times, 99), 2),
                        "max_ms": round(max(times), 2),
                        "hits_per_page": round(hits / repeats, 1),
                    }
                )
    return results


async def time_appends(db: SqliteDatabase, count: int, *, indexed: bool) -> float:
    store = SqliteMessageStore(db, None, indexed=indexed)
    rng = random.Random(7)
    room = f"append-{'indexed' if indexed else 'plain'}"
    began = time.perf_counter()
    for _ in range(count):
        text = " ".join(f"w{rng.randrange(VOCABULARY):05d}" for _ in range(12))
        await store.append(
            NewMessage(kind=MessageKind.MESSAGE, user_id="u", room_id=room, data={"text": text}),
            incarnation=INC,
        )
    return count / (time.perf_counter() - began)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="forge-search-bench-"))
    path = Path(args.db) if args.db else folder / "bench.db"
    rng = random.Random(args.seed)
    report: dict[str, Any] = {"messages": args.messages, "rooms": args.rooms}
    if not path.exists():
        db = await SqliteDatabase.open(path)  # the schema
        await db.close()
        began = time.perf_counter()
        build(path, args.messages, args.rooms, args.seed)
        report["write_seconds"] = round(time.perf_counter() - began, 1)
        progress(f"wrote {args.messages} messages in {report['write_seconds']} s")
    db = await SqliteDatabase.open(path)
    try:
        began = time.perf_counter()
        search = await SqliteMessageSearch.open(db, None, with_messages=True)
        seconds = time.perf_counter() - began
        if "write_seconds" in report:  # a reused corpus is indexed already
            report["index_seconds"] = round(seconds, 1)
            report["index_messages_per_second"] = round(args.messages / seconds)
            progress(f"indexed in {report['index_seconds']} s")
        report["searches"] = await time_searches(search, args.rooms, args.repeats, rng)
        if args.appends:
            plain = await time_appends(db, args.appends, indexed=False)
            indexed = await time_appends(db, args.appends, indexed=True)
            report["appends_per_second_plain"] = round(plain)
            report["appends_per_second_indexed"] = round(indexed)
            report["indexing_cost_percent"] = round(100 * (1 - indexed / plain), 1)
    finally:
        await db.close()
        shutil.rmtree(folder)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rooms", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--appends", type=int, default=3_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--db", help="the corpus file: built when missing, reused (and kept) after")
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
