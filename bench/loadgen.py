"""Fan-out load generator: S subscribers in one room, M messages from P publishers.

    python bench/loadgen.py --url http://127.0.0.1:8000 --subscribers 2000 \\
        --messages 250 --publishers 4 [--transport ws|sse] [--ready metrics|probe] \\
        [--tokens-file F --publish-token T] [--metrics-token M] [--server-pid PID] \\
        [--workers N] [--json]

Subscribers speak graphql-transport-ws (or, with `--transport sse`, a POST with
`Accept: text/event-stream`) through a minimal client written for this
benchmark: one `asyncio.Protocol` per socket that parses frames itself, so
that the load generator costs a few microseconds per delivery and is not the
bottleneck. They are spread over `--workers` processes (default: one per
2,000 subscribers). Publishers send `sendMessage` mutations over HTTP, each
carrying its send time (`time.time_ns()`) in `data.bench_t`.

Readiness: `--ready metrics` waits until the server's `/metrics` gauge
`streaming_subscriptions_active` has grown by S (Forge Streaming; /metrics
wants `--metrics-token`);
`--ready probe` sends probe messages until every subscriber has seen one
(servers without such a gauge); probes are not counted.

Measured: deliveries per second (deliveries / time from the first send to the
last delivery), latency from send to receipt (p50 / p99 / max), server RSS
from /proc before subscribing and after (per subscriber), server CPU and the
load generator's own CPU (all its processes) over the send phase.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import math
import multiprocessing as mp
import os
import resource
import sys
import time
import uuid
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

SUBSCRIPTION = (
    "subscription Bench($roomId: ID!) { roomMessages(roomId: $roomId) "
    "{ id type roomId userId data timestamp cursor } }"
)
SEND = "mutation Send($input: SendMessageInput!) { sendMessage(input: $input) { id } }"
CONNECT_CONCURRENCY = 64
IDLE_GIVE_UP = 15.0  # seconds without a new delivery before a worker stops waiting


def raise_nofile() -> int:
    """Raise the soft limit on open files to the hard one (as far as allowed)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    return soft


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def timed_get(client: httpx.Client, url: str) -> tuple[float, bool]:
    """One GET (of /health, by the probers): (seconds it took, answered 200)."""
    started = time.perf_counter()
    try:
        ok = client.get(url).status_code == 200
    except httpx.HTTPError:
        ok = False
    return time.perf_counter() - started, ok


def percentile(sorted_values: Any, q: float) -> float:
    if not len(sorted_values):
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return float(sorted_values[index])


# --------------------------------------------------------------------------
# Subscribers (run inside worker processes)


@dataclass
class Sink:
    """What one worker's subscribers received."""

    latencies: array = field(default_factory=lambda: array("q"))
    first: int = 0
    last: int = 0
    errors: list[str] = field(default_factory=list)

    def record(self, latency: int, now: int) -> None:
        self.latencies.append(latency)
        if not self.first:
            self.first = now
        self.last = now

    def error(self, text: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(text[:300])


def _client_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    if n:
        key = (mask * (n // 4 + 1))[:n]
        payload = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return header + mask + payload


class Subscriber(asyncio.Protocol):
    """Base: keeps the receive side cheap; subclasses parse their protocol."""

    def __init__(self, sink: Sink, request: bytes) -> None:
        self.sink = sink
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.head_done = False
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.received = 0
        self.saw_probe = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        self.buf += data
        if not self.head_done:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end])
            del self.buf[: end + 4]
            if not self.head_accepted(head):
                return
            self.head_done = True
        self.body_received(now)

    def head_accepted(self, head: bytes) -> bool:
        """Check the response head (fail if refused); start the protocol."""
        raise NotImplementedError

    def body_received(self, now: int) -> None:
        """Parse what `buf` holds of the body, consuming what is complete."""
        raise NotImplementedError

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before ready: {exc}"))

    def fail(self, text: str) -> None:
        self.sink.error(text)
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(text))
        if self.transport is not None:
            self.transport.close()

    def on_payload(self, message: dict[str, Any], now: int) -> None:
        data = message.get("data")
        if not isinstance(data, dict):
            self.sink.error(f"no data: {message}")
            return
        body = (data.get("roomMessages") or {}).get("data") or {}
        sent = body.get("bench_t")
        if sent is not None:
            self.received += 1
            self.sink.record(now - sent, now)
        elif "bench_probe" in body:
            self.saw_probe = True

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()


class WSSubscriber(Subscriber):
    """graphql-transport-ws over a hand-rolled WebSocket client."""

    def __init__(
        self, sink: Sink, host: str, port: int, path: str, init: dict[str, Any], room: str
    ) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
        ).encode()
        super().__init__(sink, request)
        self.init = init
        self.subscribe = {
            # A UUID, as graphql-ws's client makes its ids.
            "id": str(uuid.uuid4()),
            "type": "subscribe",
            "payload": {"query": SUBSCRIPTION, "variables": {"roomId": room}},
        }

    def send_json(self, value: Any) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(_client_frame(0x1, orjson.dumps(value)))

    def head_accepted(self, head: bytes) -> bool:
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            self.fail(f"handshake refused: {status.decode(errors='replace')}")
            return False
        self.send_json({"type": "connection_init", "payload": self.init})
        return True

    def body_received(self, now: int) -> None:
        buf = self.buf
        pos, n = 0, len(buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, head = b1 & 0x7F, 2
            if length == 126:
                if n - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if b1 & 0x80:
                head += 4  # servers do not mask; skip a key if one does
            if n - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
            pos += head + length
            opcode = b0 & 0x0F
            if opcode == 0x1 or opcode == 0x2:
                self.on_message(payload, now)
            elif opcode == 0x9 and self.transport is not None:
                self.transport.write(_client_frame(0xA, payload))
            elif opcode == 0x8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 0
                self.fail(f"closed by server: {code} {payload[2:].decode(errors='replace')}")
                break
        del buf[:pos]

    def on_message(self, payload: bytes, now: int) -> None:
        message = orjson.loads(payload)
        kind = message.get("type")
        if kind == "next":
            self.on_payload(message.get("payload") or {}, now)
        elif kind == "connection_ack":
            self.send_json(self.subscribe)
            if not self.ready.done():
                self.ready.set_result(None)
        elif kind == "ping":
            self.send_json({"type": "pong"})
        elif kind in ("error", "complete"):
            self.sink.error(f"{kind}: {payload[:200]!r}")


class SSESubscriber(Subscriber):
    """A subscription over HTTP: POST with Accept: text/event-stream."""

    def __init__(
        self, sink: Sink, host: str, port: int, path: str, init: dict[str, Any], room: str
    ) -> None:
        body = orjson.dumps({"query": SUBSCRIPTION, "variables": {"roomId": room}})
        auth = init.get("Authorization")
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\n"
            + (f"Authorization: {auth}\r\n" if auth else "")
            + "\r\n"
        ).encode() + body
        super().__init__(sink, request)
        self.chunked = False
        self.events = bytearray()

    def head_accepted(self, head: bytes) -> bool:
        status, *headers = head.decode("latin-1").split("\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in headers)}
        if " 200" not in status or "text/event-stream" not in fields.get("content-type", ""):
            self.fail(f"no event stream: {status} {fields.get('content-type', '')}")
            return False
        self.chunked = "chunked" in fields.get("transfer-encoding", "")
        if not self.ready.done():
            self.ready.set_result(None)
        return True

    def body_received(self, now: int) -> None:
        buf = self.buf
        if self.chunked:
            while True:
                line_end = buf.find(b"\r\n")
                if line_end < 0:
                    break
                size = int(bytes(buf[:line_end]).split(b";")[0], 16)
                if len(buf) < line_end + 2 + size + 2:
                    break
                self.events += buf[line_end + 2 : line_end + 2 + size]
                del buf[: line_end + 2 + size + 2]
        else:
            self.events += buf
            buf.clear()
        events = self.events
        while True:
            end = events.find(b"\n\n")
            if end < 0:
                break
            block = bytes(events[:end])
            del events[: end + 2]
            name, data = b"message", []
            for line in block.split(b"\n"):
                if line.startswith(b"event:"):
                    name = line[6:].strip()
                elif line.startswith(b"data:"):
                    data.append(line[5:].strip())
            if name in (b"next", b"message") and data:
                self.on_payload(orjson.loads(b"\n".join(data)), now)
            elif name == b"complete":
                self.sink.error("complete")


async def _worker_main(conn: Connection, spec: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    sink = Sink()
    parts = urlsplit(spec["url"])
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    cls = SSESubscriber if spec["transport"] == "sse" else WSSubscriber
    subscribers: list[Subscriber] = []
    failures: list[str] = []
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def open_one(token: str | None) -> None:
        init = {"Authorization": f"Bearer {token}"} if token else {}
        async with gate:
            try:
                _, sub = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: cls(sink, host, port, spec["path"], init, spec["room"]), host, port
                    ),
                    spec["connect_timeout"],
                )
                await asyncio.wait_for(sub.ready, spec["connect_timeout"])
                subscribers.append(sub)
            except Exception as exc:
                if len(failures) < 20:
                    failures.append(f"{type(exc).__name__}: {exc}")
                failures.append("")

    start = time.monotonic()
    await asyncio.gather(*(open_one(t) for t in spec["tokens"]))
    failed = sum(1 for f in failures if f == "")
    conn.send(
        {
            "opened": len(subscribers),
            "failed": failed,
            "errors": [f for f in failures if f][:5],
            "seconds": time.monotonic() - start,
        }
    )
    while True:
        command = await loop.run_in_executor(None, conn.recv)
        if command["cmd"] == "status":
            conn.send(
                {
                    "probed": sum(s.saw_probe for s in subscribers),
                    "closed": sum(s.closed for s in subscribers),
                }
            )
        elif command["cmd"] == "measure":
            cpu0 = cpu_seconds()
            expected = command["messages"] * len(subscribers)
            deadline = time.monotonic() + command["timeout"]
            seen, progress = -1, time.monotonic()
            while time.monotonic() < deadline:
                count = len(sink.latencies)
                if count >= expected:
                    break
                if count != seen:
                    seen, progress = count, time.monotonic()
                elif count and time.monotonic() - progress > IDLE_GIVE_UP:
                    break
                await asyncio.sleep(0.02)
            short = [s.received for s in subscribers if s.received < command["messages"]]
            conn.send(
                {
                    "deliveries": len(sink.latencies),
                    "expected": expected,
                    "latencies": sink.latencies.tobytes(),
                    "first": sink.first,
                    "last": sink.last,
                    "cpu": cpu_seconds() - cpu0,
                    "short": len(short),
                    "closed": sum(s.closed for s in subscribers),
                    "errors": sink.errors[:5],
                }
            )
        elif command["cmd"] == "close":
            for s in subscribers:
                s.close()
            await asyncio.sleep(0.2)
            conn.send({"closed": True})
            return


def _run(main: Any) -> Any:
    """asyncio.run on uvloop where it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _worker(conn: Connection, spec: dict[str, Any]) -> None:
    raise_nofile()
    _run(_worker_main(conn, spec))


# --------------------------------------------------------------------------
# The coordinator: publishers, readiness, measurement


async def ask_workers(
    pipes: list[Connection], command: dict[str, Any] | None, wait: float
) -> list[dict[str, Any]]:
    """Send `command` (None: only listen) to every worker process and gather
    one reply from each, waiting at most `wait` seconds for each."""
    loop = asyncio.get_running_loop()

    def one(pipe: Connection) -> dict[str, Any]:
        if command is not None:
            pipe.send(command)
        if not pipe.poll(wait):
            raise TimeoutError(f"a load generator worker did not answer in {wait:.0f} s")
        reply: dict[str, Any] = pipe.recv()
        return reply

    return list(await asyncio.gather(*(loop.run_in_executor(None, one, p) for p in pipes)))


class Workers:
    def __init__(self, specs: list[dict[str, Any]]) -> None:
        ctx = mp.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        for spec in specs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, spec), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

    async def ask_all(self, command: dict[str, Any] | None, wait: float) -> list[dict[str, Any]]:
        return await ask_workers(self.pipes, command, wait)

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(Exception):
                pipe.send({"cmd": "close"})
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(2)


async def _metric(client: httpx.AsyncClient, name: str, token: str | None) -> float:
    r = await client.get("/metrics", headers={"Authorization": f"Bearer {token or ''}"})
    r.raise_for_status()
    for line in r.text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(f"{name} not in /metrics")


async def _subscriptions(client: httpx.AsyncClient, args: argparse.Namespace) -> float:
    return await _metric(client, "streaming_subscriptions_active", args.metrics_token)


async def _post_message(client: httpx.AsyncClient, room: str, data: dict[str, Any]) -> str | None:
    body = orjson.dumps({"query": SEND, "variables": {"input": {"roomId": room, "data": data}}})
    r = await client.post("/graphql", content=body)
    if r.status_code != 200:
        return f"HTTP {r.status_code}: {r.text[:200]}"
    reply = r.json()
    if reply.get("errors"):
        return json.dumps(reply["errors"])[:300]
    return None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tokens: list[str | None] = args.tokens
    n_workers = args.workers or max(1, min(4, math.ceil(args.subscribers / 2000)))
    parts = urlsplit(args.url)
    path = parts.path or "/graphql"
    base = f"{parts.scheme}://{parts.netloc}"
    publish_base = args.publish_url or base
    headers = {"Content-Type": "application/json"}
    if args.publish_token:
        headers["Authorization"] = f"Bearer {args.publish_token}"
    result: dict[str, Any] = {
        "transport": args.transport,
        "subscribers": args.subscribers,
        "messages": args.messages,
        "publishers": args.publishers,
        "workers": n_workers,
    }
    limits = httpx.Limits(max_connections=args.publishers + 2)
    async with (
        httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as probe_client,
        httpx.AsyncClient(
            base_url=publish_base, headers=headers, timeout=60, limits=limits
        ) as publisher,
    ):
        base_subs = 0.0
        if args.ready == "metrics":
            base_subs = await _subscriptions(probe_client, args)
        rss0 = proc_rss_bytes(args.server_pid) if args.server_pid else 0
        specs = [
            {
                "url": args.url if "://" in args.url else base,
                "path": path,
                "room": args.room,
                "transport": args.transport,
                "tokens": tokens[i::n_workers],
                "connect_timeout": args.connect_timeout,
            }
            for i in range(n_workers)
        ]
        t_setup = time.monotonic()
        workers = Workers(specs)
        try:
            opened = await workers.ask_all(None, args.setup_timeout)
            result["subscribed"] = sum(o["opened"] for o in opened)
            result["connect_failures"] = sum(o["failed"] for o in opened)
            errors = [e for o in opened for e in o["errors"]]
            if errors:
                result["connect_errors"] = errors[:5]
            if result["subscribed"] == 0:
                result["error"] = "no subscriber could subscribe"
                return result
            await _wait_ready(args, result, workers, probe_client, publisher, base_subs)
            result["setup_s"] = round(time.monotonic() - t_setup, 2)
            await asyncio.sleep(0.5)
            rss1 = proc_rss_bytes(args.server_pid) if args.server_pid else 0
            if args.server_pid:
                result["rss_before_mb"] = round(rss0 / 2**20, 1)
                result["rss_after_mb"] = round(rss1 / 2**20, 1)
                result["mem_per_sub_kb"] = round((rss1 - rss0) / 1024 / result["subscribed"], 1)
            await _measure(args, result, workers, publisher)
        finally:
            workers.stop()
    return result


async def _wait_ready(
    args: argparse.Namespace,
    result: dict[str, Any],
    workers: Workers,
    probe_client: httpx.AsyncClient,
    publisher: httpx.AsyncClient,
    base_subs: float,
) -> None:
    deadline = time.monotonic() + args.setup_timeout
    want = result["subscribed"]
    if args.ready == "metrics":
        while time.monotonic() < deadline:
            active = await _subscriptions(probe_client, args) - base_subs
            if active >= want:
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"only {active:.0f} of {want} subscriptions became active")
    for k in itertools.count():
        error = await _post_message(publisher, args.room, {"bench_probe": k})
        if error:
            raise RuntimeError(f"probe message failed: {error}")
        await asyncio.sleep(0.25)
        status = await workers.ask_all({"cmd": "status"}, 30)
        if sum(s["probed"] for s in status) >= want:
            await asyncio.sleep(0.5)  # let the last probes drain
            return
        if time.monotonic() > deadline:
            raise TimeoutError("not every subscriber saw a probe message")


async def _measure(
    args: argparse.Namespace, result: dict[str, Any], workers: Workers, publisher: httpx.AsyncClient
) -> None:
    loop = asyncio.get_running_loop()
    for pipe in workers.pipes:
        pipe.send({"cmd": "measure", "messages": args.messages, "timeout": args.timeout})
    server_cpu0 = proc_cpu_seconds(args.server_pid) if args.server_pid else 0.0
    cpu0, wall0 = cpu_seconds(), time.monotonic()
    counter = itertools.count()
    errors: list[str] = []
    interval = args.publishers / args.rate if args.rate else 0.0

    async def publish() -> None:
        while (k := next(counter)) < args.messages:
            started = time.monotonic()
            error = await _post_message(
                publisher, args.room, {"bench_t": time.time_ns(), "bench_i": k}
            )
            if error and len(errors) < 5:
                errors.append(error)
            if interval:
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    first_send = time.time_ns()
    await asyncio.gather(*(publish() for _ in range(args.publishers)))
    result["publish_s"] = round(time.monotonic() - wall0, 3)
    publisher_cpu = cpu_seconds() - cpu0
    replies = list(
        await asyncio.gather(
            *(loop.run_in_executor(None, _recv, pipe, args.timeout + 30) for pipe in workers.pipes)
        )
    )
    wall = time.monotonic() - wall0
    server_cpu = (proc_cpu_seconds(args.server_pid) - server_cpu0) if args.server_pid else 0.0
    latencies = array("q")
    for reply in replies:
        latencies.frombytes(reply["latencies"])
    ordered = sorted(latencies)
    deliveries = len(ordered)
    last = max((r["last"] for r in replies if r["last"]), default=first_send)
    span = max(1e-9, (last - first_send) / 1e9)
    worker_cpu = [r["cpu"] for r in replies]
    result.update(
        deliveries=deliveries,
        expected=sum(r["expected"] for r in replies),
        complete=deliveries == sum(r["expected"] for r in replies),
        short_subscribers=sum(r["short"] for r in replies),
        closed_subscribers=sum(r["closed"] for r in replies),
        seconds=round(span, 3),
        deliveries_per_s=round(deliveries / span),
        p50_ms=round(percentile(ordered, 0.50) / 1e6, 2),
        p99_ms=round(percentile(ordered, 0.99) / 1e6, 2),
        max_ms=round(percentile(ordered, 1.0) / 1e6, 2),
        loadgen_cpu_pct=round(100 * (publisher_cpu + sum(worker_cpu)) / wall, 1),
        loadgen_max_proc_cpu_pct=round(100 * max([publisher_cpu, *worker_cpu]) / wall, 1),
        server_cpu_pct=round(100 * server_cpu / wall, 1) if args.server_pid else None,
    )
    sub_errors = [e for r in replies for e in r["errors"]]
    if errors or sub_errors:
        result["errors"] = (errors + sub_errors)[:5]


def _recv(pipe: Connection, timeout: float) -> dict[str, Any]:
    if not pipe.poll(timeout):
        raise TimeoutError("a load generator worker did not report")
    reply: dict[str, Any] = pipe.recv()
    return reply


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--url", required=True, help="the GraphQL endpoint, e.g. http://127.0.0.1:8000/graphql"
    )
    p.add_argument("--publish-url", help="another server's base URL to send the mutations to")
    p.add_argument("--room", default="bench")
    p.add_argument("--subscribers", "-S", type=int, default=500)
    p.add_argument("--messages", "-M", type=int, default=100)
    p.add_argument("--publishers", "-P", type=int, default=4)
    p.add_argument(
        "--rate", type=float, default=0, help="messages/s in all (0: as fast as replies come)"
    )
    p.add_argument("--transport", choices=("ws", "sse"), default="ws")
    p.add_argument("--ready", choices=("metrics", "probe"), default="probe")
    p.add_argument("--tokens-file", help="JSON list of tokens, one per subscriber")
    p.add_argument("--publish-token", help="token for the mutations")
    p.add_argument("--metrics-token", help="bearer token for /metrics (with --ready metrics)")
    p.add_argument("--server-pid", type=int, help="server process to read RSS and CPU from")
    p.add_argument("--workers", type=int, default=0, help="subscriber processes (0: auto)")
    p.add_argument("--connect-timeout", type=float, default=30)
    p.add_argument("--setup-timeout", type=float, default=180)
    p.add_argument("--timeout", type=float, default=180, help="seconds to wait for deliveries")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    raise_nofile()
    if args.tokens_file:
        with open(args.tokens_file) as f:
            args.tokens = list(json.load(f))[: args.subscribers]
        if len(args.tokens) < args.subscribers:
            raise SystemExit(f"{args.tokens_file} has fewer than {args.subscribers} tokens")
    else:
        args.tokens = [None] * args.subscribers
    result = _run(run(args))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value}")
    return 0 if result.get("complete") else 1


if __name__ == "__main__":
    sys.exit(main())
