"""Search on SQLite or PostgreSQL: build a history, index it, time searches and appends.

    python bench/search.py                       # 1M messages across 1,000 rooms
    python bench/search.py --messages 200000     # shorter
    python bench/search.py --db corpus.db        # build once into corpus.db, reuse it after
    python bench/search.py --postgres URL        # the same on PostgreSQL, built once into
                                                 # the URL's ?schema=, e.g. postgresql://
                                                 # postgres@127.0.0.1:5432/postgres?schema=bench
    python bench/search.py --postgres URL --drop # drop the schema at the end

Times are inside the server: the backend's `search` plus the snippet and
highlights the resolver adds, without HTTP. The history is written with
plain SQL or COPY (fast), then indexed by the backend's own backfill (that
is the index build rate). Appends are timed through the store's `append`
(group commit on SQLite), with and without indexing, on the same database:
`--writers` tasks append at once (1: one at a time), in alternating rounds
of each; process CPU is this process's (on PostgreSQL the server's is not
in it).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from backends.postgres.backend import PostgresUrl, delete_namespace, open_database
from backends.postgres.messages import PostgresMessageStore
from backends.postgres.search import PostgresMessageSearch
from backends.protocols import MessageSearch, MessageStore
from backends.records import MessageKind, NewMessage
from backends.search_query import RoomScope, SearchOrder, SearchRequest
from backends.sqlite import SqliteDatabase, SqliteMessageStore
from backends.sqlite_search import SqliteMessageSearch
from resolvers.search import snippet_of
from resolvers.search_syntax import parse_query

INC = "bench"
VOCABULARY = 20_000


def corpus(messages: int, rooms: int, seed: int) -> Iterator[tuple[Any, ...]]:
    """The messages of the corpus as (room_id, seq, id, kind, user_id, ts
    in microseconds, data, metadata), in append order: the same for every
    backend with the same arguments."""
    rng = random.Random(seed)
    vocabulary = [f"w{i:05d}" for i in range(VOCABULARY)]
    weights = list(itertools.accumulate(1 / (i + 1) for i in range(VOCABULARY)))
    start_us = int((datetime.now(UTC) - timedelta(days=20)).timestamp() * 1e6)
    seqs = [0] * rooms
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


def build(path: Path, messages: int, rooms: int, seed: int) -> None:
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO messages (room_id, seq, id, kind, user_id, ts, data, metadata)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            corpus(messages, rooms, seed),
        )
        db.execute(
            "INSERT INTO streams (room_id, epoch, last_offset, incarnation)"
            f" SELECT room_id, '{INC}.0', MAX(seq), '{INC}' FROM messages GROUP BY room_id"
        )
    db.close()


async def build_postgres(url: str, messages: int, rooms: int, seed: int) -> None:
    """The corpus COPYed into the URL's schema (migrated by `open_database`)."""
    parsed = PostgresUrl(url)
    connection = await asyncpg.connect(parsed.dsn)
    try:
        await connection.copy_records_to_table(
            "messages",
            schema_name=parsed.schema,
            columns=["room_id", "seq", "id", "kind", "user_id", "ts", "data", "metadata"],
            records=(
                (*row[:5], datetime.fromtimestamp(row[5] / 1e6, UTC), *row[6:])
                for row in corpus(messages, rooms, seed)
            ),
        )
        await connection.execute(
            f'INSERT INTO "{parsed.schema}".streams (room_id, epoch, last_offset, incarnation)'
            f" SELECT room_id, '{INC}.0', MAX(seq), '{INC}' FROM \"{parsed.schema}\".messages"
            " GROUP BY room_id"
        )
        await connection.execute(f'ANALYZE "{parsed.schema}".messages')
    finally:
        await connection.close()


async def vacuum(url: str) -> None:
    """Statistics for the planner and a visibility map, as autovacuum would
    leave them; on a connection of its own (no command timeout)."""
    parsed = PostgresUrl(url)
    connection = await asyncpg.connect(parsed.dsn)
    try:
        await connection.execute(f'VACUUM ANALYZE "{parsed.schema}".messages')
    finally:
        await connection.close()


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def time_searches(
    search: MessageSearch, rooms: int, repeats: int, rng: random.Random
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
                cpu = []
                hits = 0
                for _ in range(repeats):
                    chosen = rng.sample(range(rooms), width)
                    request = SearchRequest(
                        match=match,
                        rooms=tuple(RoomScope(f"room{r:04d}", INC) for r in chosen),
                        limit=20,
                        order=order,
                    )
                    began, began_cpu = time.perf_counter(), time.process_time()
                    page = await search.search(request)
                    for hit in page.hits:
                        snippet_of(hit.message, match)
                    times.append((time.perf_counter() - began) * 1000)
                    cpu.append((time.process_time() - began_cpu) * 1000)
                    hits += len(page.hits)
                results.append(
                    {
                        "search": label,
                        "rooms": width,
                        "order": order.value,
                        "p50_ms": round(statistics.median(times), 2),
                        "p99_ms": round(percentile(times, 99), 2),
                        "max_ms": round(max(times), 2),
                        "cpu_p50_ms": round(statistics.median(cpu), 2),
                        "cpu_p99_ms": round(percentile(cpu, 99), 2),
                        "hits_per_page": round(hits / repeats, 1),
                    }
                )
    return results


async def time_appends(
    store: MessageStore, count: int, writers: int, room: str
) -> tuple[float, float]:
    """Appends per second of wall time and of this process's CPU time;
    each writer appends to a room of its own."""
    rng = random.Random(7)

    async def writer(n: int, room: str) -> None:
        for _ in range(n):
            text = " ".join(f"w{rng.randrange(VOCABULARY):05d}" for _ in range(12))
            await store.append(
                NewMessage(
                    kind=MessageKind.MESSAGE, user_id="u", room_id=room, data={"text": text}
                ),
                incarnation=INC,
            )

    began, began_cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(writer(count // writers, f"{room}-{k}") for k in range(writers)))
    done = writers * (count // writers)
    await store.close()
    return done / (time.perf_counter() - began), done / (time.process_time() - began_cpu)


async def compare_appends(
    make_store: Callable[[bool], MessageStore], count: int, writers: int, rounds: int
) -> dict[str, Any]:
    """Plain and indexed rounds alternately (the machine's load drifts);
    the medians of each, and indexing's cost in throughput."""
    rates: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for n in range(rounds):
        for indexed in (False, True):
            room = f"append-{writers}-{'indexed' if indexed else 'plain'}-{n}"
            rates[indexed].append(await time_appends(make_store(indexed), count, writers, room))
    plain = [statistics.median(r[i] for r in rates[False]) for i in (0, 1)]
    full = [statistics.median(r[i] for r in rates[True]) for i in (0, 1)]
    return {
        "writers": writers,
        "appends_per_second_plain": round(plain[0]),
        "appends_per_second_indexed": round(full[0]),
        "indexing_cost_percent": round(100 * (1 - full[0] / plain[0]), 1),
        "appends_per_cpu_second_plain": round(plain[1]),
        "appends_per_cpu_second_indexed": round(full[1]),
        "indexing_cpu_cost_percent": round(100 * (1 - full[1] / plain[1]), 1),
        "rounds": [
            {"plain": round(p[0]), "indexed": round(i[0])}
            for p, i in zip(rates[False], rates[True], strict=True)
        ],
    }


async def measure(
    search: MessageSearch,
    make_store: Callable[[bool], MessageStore],
    args: argparse.Namespace,
    report: dict[str, Any],
) -> None:
    report["searches"] = await time_searches(
        search, args.rooms, args.repeats, random.Random(args.seed)
    )
    if args.appends:
        report["appends"] = [
            await compare_appends(make_store, args.appends, writers, args.rounds)
            for writers in args.writers
        ]


async def on_sqlite(args: argparse.Namespace, report: dict[str, Any]) -> None:
    folder = Path(tempfile.mkdtemp(prefix="forge-search-bench-"))
    path = Path(args.db) if args.db else folder / "bench.db"
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
        note_index_build(report, args.messages, time.perf_counter() - began)
        await measure(search, lambda on: SqliteMessageStore(db, None, indexed=on), args, report)
    finally:
        await db.close()
        shutil.rmtree(folder)


async def on_postgres(args: argparse.Namespace, report: dict[str, Any]) -> None:
    db = await open_database(args.postgres)  # the schema, migrated
    try:
        if await db.fetchrow("SELECT 1 FROM messages LIMIT 1") is None:
            began = time.perf_counter()
            await build_postgres(args.postgres, args.messages, args.rooms, args.seed)
            report["write_seconds"] = round(time.perf_counter() - began, 1)
            progress(f"wrote {args.messages} messages in {report['write_seconds']} s")
        began = time.perf_counter()
        search = await PostgresMessageSearch.open(db, None, with_messages=True)
        note_index_build(report, args.messages, time.perf_counter() - began)
        await vacuum(args.postgres)
        await measure(search, lambda on: PostgresMessageStore(db, None, indexed=on), args, report)
    finally:
        await db.close()
        if args.drop:
            await delete_namespace(args.postgres)


def note_index_build(report: dict[str, Any], messages: int, seconds: float) -> None:
    if "write_seconds" in report:  # a reused corpus is indexed already
        report["index_seconds"] = round(seconds, 1)
        report["index_messages_per_second"] = round(messages / seconds)
        progress(f"indexed in {report['index_seconds']} s")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "backend": "postgres" if args.postgres else "sqlite",
        "messages": args.messages,
        "rooms": args.rooms,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    await (on_postgres if args.postgres else on_sqlite)(args, report)
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rooms", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--appends", type=int, default=3_000, help="per round; 0: none")
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--db", help="the corpus file: built when missing, reused (and kept) after")
    parser.add_argument("--postgres", help="a postgresql:// URL (its ?schema= holds the corpus)")
    parser.add_argument("--drop", action="store_true", help="drop the PostgreSQL schema at the end")
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
