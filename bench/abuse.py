"""Oversized documents against the server: does /health stay fast, does memory settle?

    python bench/abuse.py                 # 1,000 + 1,000 documents (issue 9's measurement)
    python bench/abuse.py --count 200     # a smaller burst
    python bench/abuse.py --per-turn 64   # another max_admitted_per_turn

Starts ours (`server.py`, SQLite in a temp dir, default document limits) on
a free loopback port and a separate prober process that GETs /health every
10 ms on one kept-alive connection. Then, with every connection opened
beforehand (40 % plain HTTP POSTs, 30 % graphql-transport-ws subscriptions,
30 % SSE POSTs, one user each):

0. for comparison, `--count` small valid documents (`{ me }`) all at once:
   what any burst of that many requests costs;
1. `--count` documents over `max_request_bytes`, all sent at once: each must
   be refused (413; WebSocket close 1009);
2. `--count` documents under it but over `max_tokens` (distinct
   subscriptions, the shape shared-execution planning reads first), all at
   once: each must be refused before parsing (a GraphQL error; close 4400).

It prints /health p50/p99/max while each burst is in flight and overall, the
refusals counted, and the server's RSS before the bursts and after them
once settled. Target (issue 9): p99 under 100 ms, RSS less than 50 MB above.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.typing import Subprotocol

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from loadgen import raise_nofile, timed_get  # noqa: E402
from run import free_port, spawn_forge, stop, wait_http  # noqa: E402

PROBE_EVERY = 0.01  # seconds
SETTLE = 5.0  # seconds after a burst before the RSS is read
TIMEOUT = 120.0


def log(text: str) -> None:
    print(f"[abuse {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --- the prober (its own process) ------------------------------------------------------


def probe(url: str, stop_file: Path, out: Path) -> None:
    """GET /health every PROBE_EVERY until `stop_file` exists; write
    [(start time, seconds or None when it failed)]."""
    samples: list[tuple[float, float | None]] = []
    with httpx.Client(timeout=10.0) as http:
        while not stop_file.exists():
            started = time.time()
            took, ok = timed_get(http, url)
            samples.append((started, took if ok else None))
            time.sleep(PROBE_EVERY)
    out.write_text(json.dumps(samples))


# --- documents ---------------------------------------------------------------------------


def over_bytes(limit: int, n: int) -> str:
    return f"# {n} " + "x" * limit + "\n{ me }"


def over_tokens(max_tokens: int, n: int) -> str:
    fields = "userId " * (max_tokens + 100)
    return f'subscription {{ typing(roomId: "r{n}") {{ {fields}}} }}'


# --- clients -----------------------------------------------------------------------------


class HttpPost:
    """A pre-opened connection that sends one POST /graphql when told."""

    def __init__(self, port: int, token: str, sse: bool) -> None:
        self.port, self.token, self.sse = port, token, sse
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def send(self, document: str) -> str:
        if self.reader is None or self.writer is None:
            raise RuntimeError("not open")
        body = json.dumps({"query": document}).encode()
        accept = b"Accept: text/event-stream\r\n" if self.sse else b""
        self.writer.write(
            b"POST /graphql HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            + accept
            + b"Authorization: Bearer "
            + self.token.encode()
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        with contextlib.suppress(ConnectionError):  # refused before it was all sent
            await self.writer.drain()
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return "closed"
        length = next(
            (
                int(v)
                for k, _, v in (line.partition(b":") for line in head.split(b"\r\n"))
                if k.lower() == b"content-length"
            ),
            None,
        )
        answer = bytearray(head)
        if length is not None:
            answer += await self.reader.readexactly(length)
        else:  # an event stream: until it completes
            while b"event: complete" not in answer:
                chunk = await self.reader.read(65536)
                if not chunk:
                    break
                answer += chunk
        self.writer.close()
        if answer.startswith(b"HTTP/1.1 413"):
            return "413"
        if b"more than" in answer and b"tokens" in answer:
            return "sse tokens error" if self.sse else "tokens error"
        if b'"data"' in answer and answer.startswith(b"HTTP/1.1 200"):
            return "sse data" if self.sse else "data"
        return answer[:60].decode(errors="replace") or "closed"


class WsSubscribe:
    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.ws: Any = None

    async def open(self) -> None:
        self.ws = await websockets.connect(
            f"ws://127.0.0.1:{self.port}/graphql",
            subprotocols=[Subprotocol("graphql-transport-ws")],
            max_size=None,
            open_timeout=TIMEOUT,
        )
        await self.ws.send(
            json.dumps({"type": "connection_init", "payload": {"token": self.token}})
        )
        ack = json.loads(await self.ws.recv())
        if ack["type"] != "connection_ack":
            raise RuntimeError(f"not acknowledged: {ack}")

    async def send(self, document: str) -> str:
        frame = {"id": "1", "type": "subscribe", "payload": {"query": document}}
        try:
            await self.ws.send(json.dumps(frame))
            while True:
                got = json.loads(await self.ws.recv())
                if got["type"] != "ping":
                    return f"ws {got['type']}"
        except websockets.ConnectionClosed as closed:
            return f"ws close {closed.rcvd.code if closed.rcvd else None}"
        finally:
            await self.ws.close()


Client = HttpPost | WsSubscribe


async def burst(
    port: int, pid: int, tokens: list[str], document: Callable[[int], str]
) -> tuple[float, float, Counter[str], float]:
    """Open one client per token, then send every document at once; the
    window (start, end) of the sends, what came back, and the server's CPU
    seconds from the first send to the last answer."""
    count = len(tokens)
    clients: list[Client] = []
    for i, token in enumerate(tokens):
        share = i * 10 // count
        if share < 4:
            clients.append(HttpPost(port, token, sse=False))
        elif share < 7:
            clients.append(WsSubscribe(port, token))
        else:
            clients.append(HttpPost(port, token, sse=True))
    await gather_in_batches([c.open() for c in clients])
    documents = [document(i) for i in range(count)]
    cpu = cpu_seconds(pid)
    start = time.time()
    answers = await asyncio.gather(
        *(c.send(d) for c, d in zip(clients, documents, strict=True)), return_exceptions=True
    )
    end = time.time()
    cpu = cpu_seconds(pid) - cpu
    counted = Counter(a if isinstance(a, str) else type(a).__name__ for a in answers)
    return start, end, counted, cpu


async def gather_in_batches(work: list[Awaitable[None]], size: int = 100) -> None:
    for i in range(0, len(work), size):
        await asyncio.gather(*work[i : i + size])


# --- the run -----------------------------------------------------------------------------


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentiles(samples: list[tuple[float, float | None]], start: float, end: float) -> str:
    window = [s for t, s in samples if start <= t <= end]
    failed = sum(1 for s in window if s is None)
    done = sorted(s for s in window if s is not None)
    if not done:
        return f"no probes ({failed} failed)"

    def at(q: float) -> float:
        return done[min(len(done) - 1, int(q * len(done)))] * 1000

    text = f"p50 {at(0.5):.1f} ms, p99 {at(0.99):.1f} ms, max {done[-1] * 1000:.1f} ms"
    return text + f" ({len(done)} probes" + (f", {failed} failed)" if failed else ")")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="documents per burst")
    parser.add_argument(
        "--per-turn",
        type=int,
        help="the server's max_admitted_per_turn (default: the setting's default)",
    )
    parser.add_argument(
        "--probe", nargs=3, metavar=("URL", "STOP_FILE", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.probe:
        probe(args.probe[0], Path(args.probe[1]), Path(args.probe[2]))
        return 0
    raise_nofile()

    from core.settings import load_settings
    from transport.auth import TokenAuthority

    tmp = Path(tempfile.mkdtemp(prefix="abuse-"))
    config = tmp / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "extensions": {
                    "streaming": {
                        "backend": "sqlite",
                        "jwt_secret": secrets.token_urlsafe(48),
                        "log_level": "warning",
                        **(
                            {"max_admitted_per_turn": args.per_turn}
                            if args.per_turn is not None
                            else {}
                        ),
                    }
                }
            }
        )
    )
    settings = load_settings(str(config), data_dir=tmp)
    limit, max_tokens = settings.request_byte_limit, settings.max_tokens
    authority = TokenAuthority.from_settings(settings)
    port = free_port()
    server = spawn_forge(port, config, tmp)
    prober: subprocess.Popen[bytes] | None = None
    stop_file, out = tmp / "stop", tmp / "probes.json"
    try:
        wait_http(f"http://127.0.0.1:{port}/health", server, tmp / "server.log")
        prober = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--probe",
                f"http://127.0.0.1:{port}/health",
                str(stop_file),
                str(out),
            ]
        )
        log(
            f"limits: {limit} bytes, {max_tokens} tokens, "
            f"{settings.max_admitted_per_turn} admitted per turn; {args.count} documents per burst"
        )
        # Warm up every path once, so the RSS before includes what any use loads.
        warm = [authority.mint(f"warm-{i}") for i in range(10)]
        asyncio.run(burst(port, server.pid, warm, lambda n: "{ me }"))
        time.sleep(SETTLE)
        tokens = [authority.mint(f"abuser-{i:05d}") for i in range(args.count)]
        log("burst 0: small valid documents, for comparison")
        b0 = asyncio.run(burst(port, server.pid, tokens, lambda n: "{ me }"))
        log(f"  answers: {dict(b0[2])}")
        time.sleep(SETTLE)
        before = rss(server.pid)
        log("burst 1: documents over the byte limit")
        b1 = asyncio.run(burst(port, server.pid, tokens, lambda n: over_bytes(limit, n)))
        log(f"  answers: {dict(b1[2])}")
        time.sleep(SETTLE)
        middle = rss(server.pid)
        log("burst 2: documents over the token limit")
        b2 = asyncio.run(burst(port, server.pid, tokens, lambda n: over_tokens(max_tokens, n)))
        log(f"  answers: {dict(b2[2])}")
        time.sleep(SETTLE)
        after = rss(server.pid)
        stop_file.touch()
        prober.wait(timeout=30)
        samples = [tuple(s) for s in json.loads(out.read_text())]
        tracebacks = (tmp / "server.log").read_text(errors="replace").count("Traceback")
    finally:
        stop_file.touch()
        if prober is not None and prober.poll() is None:
            prober.kill()
        stop(server)
    rows = [
        (f"small valid documents ({args.count} at once)", b0),
        (f"over the byte limit ({args.count} at once)", b1),
        (f"over the token limit ({args.count} at once)", b2),
    ]
    for label, (start, end, answers, cpu) in rows:
        print(f"{label:<42} /health {percentiles(samples, start, end)}")
        print(f"{'':<42} answers: {dict(answers)}")
        per = cpu / args.count * 1000
        print(
            f"{'':<42} server CPU {cpu:.2f} s, {per:.2f} ms a document; "
            f"all answered in {end - start:.2f} s"
        )
    print(f"{'both oversized bursts':<42} /health {percentiles(samples, b1[0], b2[1])}")
    print(
        f"server RSS: {before / 2**20:.1f} MiB before the oversized bursts, "
        f"{middle / 2**20:.1f} MiB after the first, {after / 2**20:.1f} MiB after both "
        f"(each settled {SETTLE:.0f} s): {(after - before) / 2**20:+.1f} MiB"
    )
    print(f"tracebacks in the server log: {tracebacks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
