"""CPU per message insert on SQLite: with the kept top rowid (`NEXT_ROWID`,
backends/sqlite_rowids.py) against SQLite's own max(rowid) + 1.

Batches of 256 rows (a full group commit) go into a file made by the
server's schema, one transaction each, the two statements in alternate
rounds; process CPU time, not wall clock (the machine is shared).

    python -m bench.sqlite_rowids [--rounds 20] [--batches 20]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

from backends.sqlite import SqliteDatabase
from backends.sqlite_rowids import NEXT_ROWID

COLUMNS = "room_id, seq, id, kind, user_id, ts, channel_id, event, data, metadata"
MARKS = ", ".join("?" * 10)
PLAIN = f"INSERT INTO messages ({COLUMNS}) VALUES ({MARKS})"
KEPT = f"INSERT INTO messages (rowid, {COLUMNS}) VALUES ({NEXT_ROWID}, {MARKS})"
BATCH = 256


def insert(conn: sqlite3.Connection, sql: str, first: int, batches: int) -> float:
    """CPU seconds for `batches` transactions of BATCH rows."""
    started = time.process_time()
    for b in range(batches):
        base = first + b * BATCH
        rows = [
            ("room-1", base + i, f"m{base + i}", "MESSAGE", "u", 0, None, None, '{"t":1}', "null")
            for i in range(BATCH)
        ]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"
        asyncio.run(_make(path))
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        totals = {"plain": 0.0, "kept": 0.0}
        seq = 0
        for r in range(args.rounds):
            order = [("plain", PLAIN), ("kept", KEPT)]
            for name, sql in order if r % 2 == 0 else reversed(order):
                totals[name] += insert(conn, sql, seq, args.batches)
                seq += args.batches * BATCH
        conn.close()
    rows = args.rounds * args.batches * BATCH
    for name, seconds in totals.items():
        print(f"{name:5}: {seconds / rows * 1e6:6.2f} us CPU per row ({rows} rows)")
    print(f"kept / plain: {totals['kept'] / totals['plain']:.3f}")


async def _make(path: Path) -> None:
    db = await SqliteDatabase.open(path)
    await db.close()


if __name__ == "__main__":
    main()
