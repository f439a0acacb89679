"""Thread hops per `sendMessage` on SQLite: a count, not a timing.

    python bench/thread_hops.py [--tree DIR] [--sends 50]

Each call aiosqlite hands to its thread is a hop: the coroutine resumes in a
later turn of the event loop, and under fan-out load a turn holds other
work (a room's 2,000 frame writes), so hops set how fast messages get in
ahead of their fan-out. Runs DIR's server.py (default: this checkout; for
another commit, `git archive COMMIT | tar -x -C DIR`) on SQLite with
aiosqlite's `Connection._execute` wrapped to count, sends `--sends`
messages one at a time after a few to warm up, and prints the hops per
send. Loop-side reads (`SqliteDatabase.lookup`) and task hops are not
counted. Measured at 29b376c: 6.0; at 46ba58a (before group commit and
loop-side lookups): 16.0.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SEND = "mutation Send($input: SendMessageInput!) { sendMessage(input: $input) { id } }"


_HOP = "thread-hop"


def serve_counting(tree: str, args: list[str]) -> None:
    """In the server's process: a line on stderr (line-buffered, the
    server's log) for each aiosqlite call."""
    import aiosqlite.core

    sys.argv = [os.path.join(tree, "server.py"), *args]
    sys.path.insert(0, tree)
    os.chdir(tree)
    original = aiosqlite.core.Connection._execute

    async def counted(self: Any, fn: Any, *a: Any, **k: Any) -> Any:
        sys.stderr.write(_HOP + "\n")
        return await original(self, fn, *a, **k)

    aiosqlite.core.Connection._execute = counted  # type: ignore[method-assign]
    runpy.run_path(sys.argv[0], run_name="__main__")


def hops(log_path: Path) -> int:
    return sum(1 for line in log_path.read_text().splitlines() if line == _HOP)


def measure(tree: Path, sends: int) -> float:
    import httpx

    sys.path.insert(0, str(tree))
    from core.settings import load_settings
    from transport.auth import TokenAuthority

    data = Path(tempfile.mkdtemp(prefix="thread-hops-"))
    config = data / "config.yaml"
    streaming = {
        "backend": "sqlite",
        "jwt_secret": secrets.token_hex(32),
        "log_level": "warning",
        "max_messages_per_second": 1_000_000,
    }
    config.write_text(json.dumps({"extensions": {"streaming": streaming}}))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_path = data / "server.log"
    server_args = ["--port", str(port), "--config", str(config), "--data-dir", str(data)]
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(tree), *server_args],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"the server did not start: {log_path}")
            time.sleep(0.1)  # polling a child process's port: nothing to wait on
        token = TokenAuthority.from_settings(load_settings(str(config))).mint("publisher")
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http:
            room = 'mutation { createRoom(input: {id: "hops", name: "Hops"}) { id } }'
            http.post("/graphql", json={"query": room}).raise_for_status()

            def send(i: int) -> None:
                variables = {"input": {"roomId": "hops", "data": {"i": i}}}
                reply = http.post("/graphql", json={"query": SEND, "variables": variables})
                if "errors" in reply.json():
                    raise SystemExit(f"sendMessage failed: {reply.text}")

            for i in range(5):  # warm-up: caches, the room's stream row
                send(i)
            before = hops(log_path)
            for i in range(sends):
                send(100 + i)
            return (hops(log_path) - before) / sends
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve_counting(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="a checkout of the server")
    parser.add_argument("--sends", type=int, default=50)
    args = parser.parse_args()
    hops = measure(args.tree.resolve(), args.sends)
    print(f"{args.tree}: {hops:.1f} aiosqlite thread hops per sendMessage")


if __name__ == "__main__":
    main()
