"""The search role's indexing lag beside Redis: send, then search at once.

    python bench/search_lag.py --sends 200

A real server (Redis for rooms, history and fan-out; `role_urls: {search:
sqlite file}`); each round sends a message with a new word over HTTP, then
searches for that word until it is found. The node that stores a message
indexes it before the send is answered, so the first search is expected to
find it: the report gives how many needed more than one, the lag (send's
answer to first successful search), and the send's latency with and without
the search role, which is where indexing's cost shows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import TEST_SETTINGS
from tests.live import LiveServer, unique

SEND = """mutation($room: ID!, $data: JSON) {
  sendMessage(input: {roomId: $room, data: $data}) { id }
}"""
CREATE = 'mutation($id: ID!) { createRoom(input: {id: $id, name: "Lag"}) { id } }'
SEARCH = """query($q: String!, $room: ID) {
  searchMessages(query: $q, roomId: $room) { edges { node { id } } }
}"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def measure(live: LiveServer, sends: int, *, search: bool) -> dict[str, Any]:
    client = live.client(unique("lag"))
    room = unique("lag-room")
    await client.execute(CREATE, id=room)
    send_ms, lag_ms, retries = [], [], 0
    for i in range(sends):
        word = f"lagword{i}x{room.replace('-', '')}"
        began = time.perf_counter()
        await client.execute(SEND, room=room, data=f"{word} measured")
        answered = time.perf_counter()
        send_ms.append((answered - began) * 1000)
        if not search:
            continue
        while True:
            found = await client.execute(SEARCH, q=word, room=room)
            if found["searchMessages"]["edges"]:
                break
            retries += 1
        lag_ms.append((time.perf_counter() - answered) * 1000)
    report: dict[str, Any] = {
        "send_p50_ms": round(statistics.median(send_ms), 2),
        "send_p99_ms": round(percentile(send_ms, 99), 2),
    }
    if search:
        report |= {
            "lag_p50_ms": round(statistics.median(lag_ms), 2),
            "lag_p99_ms": round(percentile(lag_ms, 99), 2),
            "searches_that_missed": retries,
        }
    return report


async def main(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="forge-lag-"))
    redis_url = f"redis://127.0.0.1:6379/0?namespace=lag{unique('n').replace('-', '')}"
    base = {
        **TEST_SETTINGS,
        "backend": "redis",
        "backend_urls": [redis_url],
        "max_messages_per_second": 100_000,
    }
    report: dict[str, Any] = {"sends": args.sends}
    for label, settings in (
        ("without_search", base),
        (
            "with_search",
            {**base, "role_urls": {"search": f"sqlite:///{folder / 'index' / 'search.db'}"}},
        ),
    ):
        live = LiveServer(folder / label, settings).start()
        try:
            report[label] = await measure(live, args.sends, search=label == "with_search")
        finally:
            live.stop()
    shutil.rmtree(folder)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=200)
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
