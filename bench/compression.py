"""Compression of old messages on SQLite, Redis and PostgreSQL (issue 15):
bytes, cold pages, compaction rate, and live sends while it runs.

    python bench/compression.py                          # 100k messages, 100 rooms, seed 15
    python bench/compression.py --messages 20000 --rooms 20
    python bench/compression.py --backend redis          # Redis on 127.0.0.1:6379
    python bench/compression.py --backend postgres       # PostgreSQL on 127.0.0.1:5432

The corpus is generated from a fixed seed (parameters below, committed):
sentences of 1-40 words from a Zipf word-frequency model over a 5,000-word
vocabulary, @mentions of other users, links, emoji, and for a fifth of the
messages a JSON object with attachments or reactions, as chat clients send
them; metadata (client, version, locale) on 60 %; threads on 10 %;
clientMessageIds on 70 %. Every message is sent through
`SqliteMessageStore.append` (group commit, FTS index on), two days old.

Bytes are the pages SQLite uses for the history's tables and indexes
(`dbstat`): `messages` and its four indexes before; the blocks, their index
and dictionaries, the clientMessageId table after (all of `messages`
moved). `compacted_messages` (what search needs to resolve an FTS row to a
message) is reported on its own, and the FTS index apart (it is unchanged).
Times are inside the server (the store calls, no HTTP); CPU is the
process's CPU seconds (`time.process_time`), the machine being shared.

With `--backend redis` the same corpus goes through `RedisMessageStore.append`
into a namespace of its own (deleted at the end), and bytes are the sum of
`MEMORY USAGE <key> SAMPLES 0` (exact, not sampled) over every key of every
room's history (`msg-meta`, `msg-stream`, `msg-cid`, `msg-time`, and after
compaction `msg-blocks`, `msg-bidx`), before and after compacting every message
(idempotency window 24 h: the corpus is two days old, so its client ids go).

With `--backend postgres` (`--postgres-url`, default the local server as
`postgres`) the corpus goes through `PostgresMessageStore.append`, search on
(a tsvector per message), into a schema of its own (dropped at the end).
Bytes are `pg_total_relation_size` (heap, TOAST and indexes) of the history
tables: `messages` before (its tsvector column and GIN index included, as
they are stored in that table); `messages`, `message_blocks`, `block_dicts`,
`compacted_client_ids` after, with `compacted_messages` (the searched
columns and tsvectors of compacted messages, and their GIN index) reported
on its own. `VACUUM FULL` runs on every table before each measure, so that
both count live rows only (a plain VACUUM keeps freed pages for reuse).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backends.records import HistoryWindow, MessageKind, NewMessage, utcnow
from backends.sqlite import SqliteDatabase, SqliteMessageStore
from backends.sqlite_blocks import BlockCache

INC = "bench"
SEED = 15
VOCABULARY = 5_000
USERS = 400
EMOJI = ["🎉", "👍", "😂", "🔥", "❤️", "🚀", "👀", "✅", "🙏", "😅"]
DOMAINS = ["github.com", "example.com", "docs.python.org", "youtu.be", "news.ycombinator.com"]
HISTORY_TABLES = {
    "before": ("messages", "sqlite_autoindex_messages_1", "sqlite_autoindex_messages_2",
               "messages_client_id", "messages_thread", "messages_ts"),
    "after": ("messages", "sqlite_autoindex_messages_1", "sqlite_autoindex_messages_2",
              "messages_client_id", "messages_thread", "messages_ts", "message_blocks",
              "message_blocks_room", "message_blocks_ts", "block_dicts", "block_dicts_room",
              "compacted_client_ids"),
}  # fmt: skip


def corpus(messages: int, rooms: int, seed: int) -> list[NewMessage]:
    rng = random.Random(seed)
    # Word-like tokens of 2-10 letters; a Zipf law picks them.
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    vocabulary = [
        "".join(rng.choices(letters[: 8 + i % 18], k=2 + min(8, int(rng.expovariate(0.35)))))
        for i in range(VOCABULARY)
    ]
    weights = list(itertools.accumulate(1 / (i + 1) ** 1.07 for i in range(VOCABULARY)))
    stamp = utcnow() - timedelta(days=2)
    out = []
    for i in range(messages):
        room = f"room-{rng.randrange(rooms):03d}"
        user = f"user-{int(rng.paretovariate(1.2)) % USERS:04d}"
        words = rng.choices(
            vocabulary, cum_weights=weights, k=max(1, int(rng.lognormvariate(2.2, 0.7)))
        )
        if rng.random() < 0.15:
            words.insert(rng.randrange(len(words) + 1), f"@user-{rng.randrange(USERS):04d}")
        if rng.random() < 0.08:
            words.append(f"https://{rng.choice(DOMAINS)}/{rng.getrandbits(40):x}")
        if rng.random() < 0.25:
            words.append(rng.choice(EMOJI))
        text = " ".join(words).capitalize()
        data: Any = text
        if rng.random() < 0.2:
            data = {"text": text, "format": "markdown"}
            if rng.random() < 0.5:
                data["attachments"] = [
                    {"name": f"{rng.choice(vocabulary)}.png", "size": rng.randrange(10**6)}
                ]
            else:
                data["reactions"] = {rng.choice(EMOJI): rng.randrange(1, 9)}
        metadata = (
            {"client": rng.choice(["web", "ios", "android"]), "version": "3.4.1", "locale": "en"}
            if rng.random() < 0.6
            else None
        )
        out.append(
            NewMessage(
                kind=MessageKind.MESSAGE,
                user_id=user,
                room_id=room,
                data=data,
                metadata=metadata,
                thread_id=f"thread-{rng.randrange(50)}" if rng.random() < 0.1 else None,
                client_message_id=f"{rng.getrandbits(64):016x}" if rng.random() < 0.7 else None,
                timestamp=stamp + timedelta(milliseconds=i * 100),
            )
        )
    return out


async def history_bytes(db: SqliteDatabase, names: tuple[str, ...]) -> dict[str, int]:
    rows = await db.fetch("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")
    sizes = {str(name): int(size) for name, size in rows}
    return {
        "history": sum(sizes.get(n, 0) for n in names),
        "search_keys": sizes.get("compacted_messages", 0),
        "fts": sum(v for k, v in sizes.items() if k.startswith("message_fts")),
    }


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def time_pages(
    store: Any,
    rooms: int,
    rng: random.Random,
    *,
    before_each: Callable[[], None] | None = None,
    repeat: bool = False,
    pages: int = 400,
) -> tuple[list[float], list[float]]:
    """Milliseconds of `page(limit=50)` at random places in random rooms:
    wall-clock, and CPU of the process (the machine is shared);
    `repeat` reads each page once untimed first (a client paging back and
    forth), then `before_each` runs, outside the timing."""
    times, cpu = [], []
    for _ in range(pages):
        room = f"room-{rng.randrange(rooms):03d}"
        last = (await store.position(room, incarnation=INC)).last_offset
        before = rng.randint(51, max(51, last))
        window = HistoryWindow(limit=50, before=before, from_end=True)
        if repeat:
            await store.page(room, window, incarnation=INC)
        if before_each is not None:
            before_each()
        start, start_cpu = time.perf_counter(), time.process_time()
        page = await store.page(room, window, incarnation=INC)
        cpu.append((time.process_time() - start_cpu) * 1000)
        times.append((time.perf_counter() - start) * 1000)
        assert len(page.messages) == 50 or before <= 51
    return times, cpu


async def time_sends(store: Any, count: int, rooms: int, prefix: str = "room") -> list[float]:
    times = []
    for i in range(count):
        message = NewMessage(
            kind=MessageKind.MESSAGE, user_id="live", room_id=f"{prefix}-{i % rooms:03d}", data="hi"
        )
        start = time.perf_counter()
        await store.append(message, incarnation=INC)
        times.append((time.perf_counter() - start) * 1000)
        await asyncio.sleep(0.002)  # a paced sender, not a flood
    return times


ROOM_KEYS = ("msg-meta", "msg-stream", "msg-cid", "msg-time", "msg-blocks", "msg-bidx")


async def redis_bytes(client: Any, namespace: str, rooms: int) -> int:
    total = 0
    for r in range(rooms):
        for kind in ROOM_KEYS:
            used = await client.memory_usage(f"{namespace}:{kind}:room-{r:03d}", samples=0)
            total += int(used or 0)
    return total


async def main_redis(args: argparse.Namespace) -> None:
    from redis.asyncio import Redis

    from backends.redis.backend import delete_namespace, open_stores

    namespace = f"bench{random.getrandbits(32):08x}"
    url = f"redis://127.0.0.1:6379/0?namespace={namespace}"
    opened = await open_stores(url, ["messages"], retention=None)
    store: Any = opened.messages
    client = Redis(host="127.0.0.1", port=6379)
    try:
        messages = corpus(args.messages, args.rooms, args.seed)
        for start in range(0, len(messages), 512):
            chunk = messages[start : start + 512]
            await asyncio.gather(*(store.append(m, incarnation=INC) for m in chunk))
        before = await redis_bytes(client, namespace, args.rooms)
        rng = random.Random(args.seed)
        hot, hot_cpu = await time_pages(store, args.rooms, rng)
        # Live sends alone, then while a background-paced compaction runs.
        # (Into rooms of their own, which the byte counts leave out.)
        stats, paced, alone, during = await compact_while_sending(store, args.rooms, "live")
        after = await redis_bytes(client, namespace, args.rooms)
        # Nothing decoded before each page: every page decodes its blocks.
        forget = store.decoded_blocks.clear
        cold, cold_cpu = await time_pages(store, args.rooms, rng, before_each=forget)
        # A page read again: its blocks forgotten in between (as before the
        # cache) or kept, in alternate rounds of 100 pages.
        again: dict[bool, tuple[list[float], list[float]]] = {True: ([], []), False: ([], [])}
        for _ in range(4):
            for kept in (False, True):
                wall_ms, cpu_ms = await time_pages(
                    store, args.rooms, rng, before_each=None if kept else forget,
                    repeat=True, pages=100,
                )  # fmt: skip
                again[kept][0].extend(wall_ms)
                again[kept][1].extend(cpu_ms)
        (forgot, forgot_cpu), (warm, warm_cpu) = again[False], again[True]
    finally:
        await opened.close()
        await delete_namespace(url)
        await client.aclose()
    n, ms = args.messages, statistics.median
    print(f"redis, corpus: {n} messages, {args.rooms} rooms, seed {args.seed}")
    print(f"compacted {stats.messages} messages into {stats.blocks} blocks")
    print(
        f"MEMORY USAGE bytes/message: before {before / n:.1f}, after {after / n:.1f}"
        f" ({before / after:.1f}x smaller)"
    )
    print(
        f"page of 50: hot (stream) p50 {ms(hot):.2f} p99 {pct(hot, 99):.2f} ms;"
        f" cold (blocks, nothing cached) p50 {ms(cold):.2f} p99 {pct(cold, 99):.2f} ms;"
        f" read again p50 {ms(warm):.2f} p99 {pct(warm, 99):.2f} ms"
        f" (blocks forgotten in between: p50 {ms(forgot):.2f} p99 {pct(forgot, 99):.2f} ms)"
    )
    print(
        f"page of 50, CPU: hot p50 {ms(hot_cpu):.2f} p99 {pct(hot_cpu, 99):.2f} ms;"
        f" cold p50 {ms(cold_cpu):.2f} p99 {pct(cold_cpu, 99):.2f} ms;"
        f" read again p50 {ms(warm_cpu):.2f} p99 {pct(warm_cpu, 99):.2f} ms"
        f" (blocks forgotten in between: p50 {ms(forgot_cpu):.2f}"
        f" p99 {pct(forgot_cpu, 99):.2f} ms)"
    )
    report_compaction(stats, paced, alone, during)


POSTGRES_HISTORY = ("messages", "message_blocks", "block_dicts", "compacted_client_ids")


async def postgres_bytes(db: Any) -> tuple[int, int]:
    """(history tables, compacted_messages) bytes after VACUUM FULL."""
    sizes = {}
    for table in (*POSTGRES_HISTORY, "compacted_messages"):
        await db.execute(f"VACUUM FULL {table}")
        row = await db.fetchrow(f"SELECT pg_total_relation_size('{table}')")
        sizes[table] = int(row[0])
    return sum(sizes[t] for t in POSTGRES_HISTORY), sizes["compacted_messages"]


async def main_postgres(args: argparse.Namespace) -> None:
    from backends.postgres import delete_namespace
    from backends.postgres.backend import open_database
    from backends.postgres.messages import PostgresMessageStore

    url = f"{args.postgres_url}?schema=bench{random.getrandbits(32):08x}"
    db = await open_database(url)
    try:
        store = PostgresMessageStore(db, indexed=True)
        messages = corpus(args.messages, args.rooms, args.seed)
        for start in range(0, len(messages), 64):
            chunk = messages[start : start + 64]
            await asyncio.gather(*(store.append(m, incarnation=INC) for m in chunk))
        before, _ = await postgres_bytes(db)
        rng = random.Random(args.seed)
        hot, hot_cpu = await time_pages(store, args.rooms, rng)
        # Live sends into rooms of their own, which stay in rows.
        stats, paced, alone, during = await compact_while_sending(store, args.rooms, "live")
        after, search_keys = await postgres_bytes(db)

        def forget_blocks() -> None:
            store.blocks = BlockCache()  # nothing decoded yet: every page reads its blocks

        cold, cold_cpu = await time_pages(store, args.rooms, rng, before_each=forget_blocks)
        warm, warm_cpu = await time_pages(store, args.rooms, rng)
    finally:
        await db.close()
        await delete_namespace(url)
    n = args.messages
    print(f"postgres, corpus: {n} messages, {args.rooms} rooms, seed {args.seed}")
    print(f"compacted {stats.messages} messages into {stats.blocks} blocks")
    print(
        f"pg_total_relation_size bytes/message: before {before / n:.1f}, after {after / n:.1f}"
        f" ({before / after:.1f}x smaller)"
    )
    print(
        f"  + compacted_messages (search keys, tsvector, GIN) {search_keys / n:.1f}"
        f" bytes/message (with them {before / (after + search_keys):.1f}x)"
    )
    report(stats, paced, (hot, hot_cpu), (cold, cold_cpu), (warm, warm_cpu), alone, during)


async def compact_while_sending(
    store: Any, rooms: int, prefix: str = "room"
) -> tuple[Any, tuple[float, float], list[float], list[float]]:
    """Live sends alone, then while a background-paced compaction (as in the
    server) of everything older than a day runs: the compaction's stats, its
    (wall, CPU) seconds, and the two sets of send times."""
    alone = await time_sends(store, 300, rooms, prefix)
    cpu, wall = time.process_time(), time.perf_counter()
    compaction = asyncio.create_task(
        store.compact(
            older_than=timedelta(hours=24),
            idempotency_window=timedelta(hours=24),
            batch=256,
            pause=0.02,
        )
    )
    during = await time_sends(store, 300, rooms, prefix)
    stats = await compaction
    return stats, (time.perf_counter() - wall, time.process_time() - cpu), alone, during


Times = tuple[list[float], list[float]]


def report_compaction(
    stats: Any, paced: tuple[float, float], alone: list[float], during: list[float]
) -> None:
    """The compaction and live-send lines every backend prints."""
    ms = statistics.median
    print(
        f"compaction: {stats.messages / stats.seconds:.0f} messages/s in its batches"
        f" ({stats.seconds:.1f} s), paced as in the server {paced[0]:.1f} s wall,"
        f" {paced[1]:.1f} s CPU of the process"
    )
    print(
        f"live send: alone p50 {ms(alone):.2f} p99 {pct(alone, 99):.2f} ms;"
        f" during compaction p50 {ms(during):.2f} p99 {pct(during, 99):.2f} ms"
    )


def report(
    stats: Any,
    paced: tuple[float, float],
    hot: Times,
    cold: Times,
    warm: Times,
    alone: list[float],
    during: list[float],
) -> None:
    """The lines on pages, compaction and sends every SQL backend prints."""
    ms = statistics.median
    lines = [f"{ms(t):.2f} p99 {pct(t, 99):.2f} ms" for t in (*hot, *cold, *warm)]
    print(
        f"page of 50: hot p50 {lines[0]}; cold (blocks, nothing cached) p50 {lines[2]};"
        f" blocks cached p50 {lines[4]}"
    )
    print(f"page of 50, CPU: hot p50 {lines[1]}; cold p50 {lines[3]}; blocks cached p50 {lines[5]}")
    report_compaction(stats, paced, alone, during)


async def main(args: argparse.Namespace) -> None:
    if args.backend == "redis":
        await main_redis(args)
        return
    if args.backend == "postgres":
        await main_postgres(args)
        return
    folder = Path(tempfile.mkdtemp(prefix="compression-"))
    db = await SqliteDatabase.open(folder / "bench.db")
    store = SqliteMessageStore(db, indexed=True)
    messages = corpus(args.messages, args.rooms, args.seed)
    for start in range(0, len(messages), 512):
        chunk = messages[start : start + 512]
        await asyncio.gather(*(store.append(m, incarnation=INC) for m in chunk))
    before = await history_bytes(db, HISTORY_TABLES["before"])
    rng = random.Random(args.seed)
    hot, hot_cpu = await time_pages(store, args.rooms, rng)

    stats, paced, alone, during = await compact_while_sending(store, args.rooms)
    after = await history_bytes(db, HISTORY_TABLES["after"])

    def forget_blocks() -> None:
        db.blocks = BlockCache()  # nothing decoded yet: every page reads its blocks

    cold, cold_cpu = await time_pages(store, args.rooms, rng, before_each=forget_blocks)
    warm, warm_cpu = await time_pages(store, args.rooms, rng)
    await db.close()

    n = args.messages
    print(f"corpus: {n} messages, {args.rooms} rooms, seed {args.seed}")
    print(f"compacted {stats.messages} messages into {stats.blocks} blocks")
    print(
        f"history bytes/message: before {before['history'] / n:.1f},"
        f" after {after['history'] / n:.1f} ({before['history'] / after['history']:.1f}x smaller)"
    )
    print(
        f"  + search keys after {after['search_keys'] / n:.1f} bytes/message"
        f" (with them {before['history'] / (after['history'] + after['search_keys']):.1f}x);"
        f" FTS index {before['fts'] / n:.1f} -> {after['fts'] / n:.1f}"
    )
    print(
        f"text moved {stats.bytes_before / n:.1f} -> {stats.bytes_after / n:.1f} bytes/message"
        f" in blocks ({stats.bytes_before / max(1, stats.bytes_after):.1f}x)"
    )
    report(stats, paced, (hot, hot_cpu), (cold, cold_cpu), (warm, warm_cpu), alone, during)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--backend", choices=["sqlite", "redis", "postgres"], default="sqlite")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    asyncio.run(main(parser.parse_args()))
