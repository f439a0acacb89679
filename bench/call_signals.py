"""Server CPU per call signal: `sendSignal` over one WebSocket, delivered on
another's `callSignals` (buffered, published, delivered, acked).

    python bench/call_signals.py                  # 2,000 signals, embedded backend
    python bench/call_signals.py --backend-url redis://127.0.0.1:6379/0?namespace=bench
    python bench/call_signals.py --count 500

Starts ours (`server.py`, SQLite in a temp dir, or the given Redis/NATS URL)
on a free loopback port; alice and bob join one call over their WebSockets;
alice sends `--count` ICE_CANDIDATE signals to bob, `--window` in flight,
and bob receives each. It prints the server process's CPU seconds (user +
system, from /proc) over the run, per signal, and the signals per CPU
second: CPU time, not wall clock, so a busy machine moves it little.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

import websockets
from websockets.typing import Subprotocol

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from run import free_port, spawn_forge, stop, wait_http  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Socket:
    """graphql-transport-ws on raw frames: results by operation id."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0
        self.waiting: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, port: int, token: str) -> Socket:
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}/graphql",
            subprotocols=[Subprotocol("graphql-transport-ws")],
            max_size=None,
        )
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        return cls(ws)

    async def _read(self) -> None:
        async for raw in self.ws:
            frame = json.loads(raw)
            if frame["type"] == "ping":
                await self.ws.send(json.dumps({"type": "pong"}))
            elif frame.get("id") in self.waiting:
                await self.waiting[frame["id"]].put(frame)

    async def start(self, query: str, **variables: Any) -> asyncio.Queue[dict[str, Any]]:
        self.next_id += 1
        op = str(self.next_id)
        self.waiting[op] = asyncio.Queue()
        payload = {"query": query, "variables": variables}
        await self.ws.send(json.dumps({"id": op, "type": "subscribe", "payload": payload}))
        return self.waiting[op]

    async def execute(self, query: str, **variables: Any) -> dict[str, Any]:
        frames = await self.start(query, **variables)
        frame = await frames.get()
        if frame["type"] != "next" or frame["payload"].get("errors"):
            raise RuntimeError(f"{query.split('(')[0]}: {frame}")
        await frames.get()  # complete
        return frame["payload"]["data"]  # type: ignore[no-any-return]


CANDIDATE = "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host"
SEND = """mutation($call: ID!, $to: ID!, $payload: JSON!) {
  sendSignal(input: {callId: $call, toSessionId: $to, kind: ICE_CANDIDATE, payload: $payload})
}"""


async def measure(port: int, pid: int, tokens: dict[str, str], count: int, window: int) -> None:
    alice = await Socket.open(port, tokens["alice"])
    bob = await Socket.open(port, tokens["bob"])
    room = "bench-" + secrets.token_hex(4)
    await alice.execute(
        'mutation($r: ID!) { createRoom(input: {id: $r, name: "b"}) { id } }', r=room
    )
    await bob.execute("mutation($r: ID!) { joinRoom(roomId: $r) { id } }", r=room)
    call = (await alice.execute("mutation($r: ID!) { startCall(roomId: $r) { id } }", r=room))[
        "startCall"
    ]["id"]
    join = "mutation($c: ID!) { joinCall(callId: $c) { sessionId } }"
    await alice.execute(join, c=call)
    to = (await bob.execute(join, c=call))["joinCall"]["sessionId"]
    received = await bob.start(
        "subscription($c: ID!) { callSignals(callId: $c) { payload } }", c=call
    )
    await alice.execute(SEND, call=call, to=to, payload={"candidate": CANDIDATE, "n": -1})
    await received.get()  # the subscription is live
    before = cpu_seconds(pid)
    slots = asyncio.Semaphore(window)

    async def one(n: int) -> None:
        async with slots:
            await alice.execute(SEND, call=call, to=to, payload={"candidate": CANDIDATE, "n": n})

    async def receive() -> None:
        for _ in range(count):
            frame = await received.get()
            assert frame["type"] == "next", frame

    # Together: a refused send ends the run instead of leaving it waiting.
    await asyncio.gather(receive(), *(one(n) for n in range(count)))
    used = cpu_seconds(pid) - before
    print(
        json.dumps(
            {
                "signals": count,
                "server_cpu_s": round(used, 3),
                "cpu_ms_per_signal": round(1000 * used / count, 3),
                "signals_per_cpu_s": round(count / used) if used else None,
            }
        )
    )
    for s in (alice, bob):
        s.reader.cancel()
        await s.ws.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--window", type=int, default=8, help="signals in flight")
    parser.add_argument("--backend-url", help="redis://… or nats://… (default: embedded SQLite)")
    args = parser.parse_args()

    from core.settings import load_settings
    from transport.auth import TokenAuthority

    tmp = Path(tempfile.mkdtemp(prefix="call-signals-"))
    streaming: dict[str, Any] = {
        "backend": "sqlite",
        "jwt_secret": secrets.token_urlsafe(48),
        "log_level": "warning",
        "max_signals_per_second": 100_000,
        "max_buffered_signals": 10_000,
    }
    if args.backend_url:
        streaming.pop("backend")
        streaming["backend_urls"] = [args.backend_url]
    config = tmp / "config.yaml"
    config.write_text(json.dumps({"extensions": {"streaming": streaming}}))
    authority = TokenAuthority.from_settings(load_settings(str(config), data_dir=tmp))
    tokens = {user: authority.mint(user) for user in ("alice", "bob")}
    port = free_port()
    server = spawn_forge(port, config, tmp)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", server, tmp / "server.log")
        asyncio.run(measure(port, server.pid, tokens, args.count, args.window))
    finally:
        stop(server)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
