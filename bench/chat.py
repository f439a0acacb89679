"""Chat workload: R rooms x N members, every member posts.

    python bench/chat.py --url http://127.0.0.1:8000/graphql --rooms 200 --members 10 \\
        --rates 500 --seconds 10 [--setup rooms --tokens-file F] [--saturate] \\
        [--server-pid PID] [--service-pid PID] [--pin-cpus 1] [--json]

Every member is its own graphql-transport-ws connection (the minimal client of
loadgen.py) that subscribes to `roomMessages` of its room and sends its own
messages over the same socket: a `sendMessage` mutation as a `subscribe`
operation, as graphql-ws allows. A room's members all live in one load
generator process, so a message's send, its answer and every receipt are
seen by the same process.

Each step offers `rate` messages/s for `seconds`: message k is due at
t0 + k / rate and is sent by member k mod (R x N), members interleaved over
the rooms, so the pace is spread evenly over all rooms and members. The pace
is open-loop: a send goes out when it is due whether or not earlier ones were
answered (if the load generator itself runs late, `send lag` shows it).
After the last send a step waits until every acknowledged message reached
every member of its room (or nothing arrived for a while, or `--drain-timeout`).

Measured per step: sends acknowledged / refused (by `extensions.code`),
deliveries expected (acknowledged x N) vs delivered and how long after the
last send the last one arrived, deliveries/s, latency send-to-receipt (send
time in `data.bench_t`, same clock), answer-to-receipt (the time a member got
the message minus the time its sender got the answer; 0 when the message
came first), the send's answer time, server CPU (the server's whole process
group from /proc, so `--workers 2` counts both workers; `--service-pid` adds
Redis' or NATS' own), the load generator's CPU, and `/health` round trips
probed from a separate process every `--health-interval` throughout.

`--saturate` runs the steps in order and stops after the first that did not
keep up: not everything delivered within `--drain` s of the last send, a
send refused, or latency p99 above `--p99-bound-ms`. The highest step that
kept up is the sustained rate.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import multiprocessing as mp
import os
import sys
import time
import uuid
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

import httpx
import loadgen
import orjson

SEND = "mutation Send($input: SendMessageInput!) { sendMessage(input: $input) { id } }"
CREATE_ROOM = (
    "mutation Create($id: ID!, $name: String!) { createRoom(input: {id: $id, name: $name}) { id } }"
)
JOIN_ROOM = "mutation Join($roomId: ID!) { joinRoom(roomId: $roomId) { id } }"
CONNECTIONS_PER_WORKER = 2500
PROBE_WINDOW = 16  # readiness probes in flight per worker
SETUP_ATTEMPTS = 5  # createRoom / joinRoom refused as UNAVAILABLE are retried
HEALTH_TIMEOUT = 10.0


def room_id(prefix: str, r: int) -> str:
    return f"{prefix}-{r:05d}"


def member_index(rooms: int, room: int, slot: int) -> int:
    """Members are numbered slot-major, so consecutive messages go to different rooms."""
    return slot * rooms + room


# --------------------------------------------------------------------------
# One member: a WebSocket that subscribes and sends


@dataclass
class Step:
    """What one worker saw during one step."""

    number: int
    sent: int = 0
    send_ns: dict[int, int] = field(default_factory=dict)
    answered: dict[int, int] = field(default_factory=dict)  # k -> answer time, acknowledged
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    refusal_examples: list[str] = field(default_factory=list)
    latencies: array[int] = field(default_factory=lambda: array("q"))
    receipt_keys: array[int] = field(default_factory=lambda: array("q"))
    receipt_ns: array[int] = field(default_factory=lambda: array("q"))
    lag: array[int] = field(default_factory=lambda: array("q"))
    stale: int = 0  # deliveries of an earlier step's messages
    first_send: int = 0
    last_send: int = 0
    last_receipt: int = 0


class Member(loadgen.WSSubscriber):
    def __init__(
        self,
        sink: loadgen.Sink,
        host: str,
        port: int,
        path: str,
        init: dict[str, Any],
        room: str,
        worker: Worker,
    ) -> None:
        super().__init__(sink, host, port, path, init, room)
        self.room = room
        self.worker = worker
        self.sub_id = self.subscribe["id"]
        self.subscription_failed = False

    def resubscribe(self) -> None:
        self.subscription_failed = False
        self.subscribe["id"] = self.sub_id = str(uuid.uuid4())
        self.send_json(self.subscribe)

    def send_message(self, data: dict[str, Any], op_id: str) -> None:
        self.send_json(
            {
                "id": op_id,
                "type": "subscribe",
                "payload": {
                    "query": SEND,
                    "variables": {"input": {"roomId": self.room, "data": data}},
                },
            }
        )

    def on_message(self, payload: bytes, now: int) -> None:
        message = orjson.loads(payload)
        kind = message.get("type")
        op = message.get("id") or ""
        if kind == "next":
            body = message.get("payload") or {}
            if op == self.sub_id:
                self.on_delivery(body, now)
            else:
                self.worker.on_answer(op, body.get("errors"), now)
        elif kind == "error":
            if op == self.sub_id:
                self.subscription_failed = True
                self.sink.error(f"subscription refused: {payload[:200]!r}")
            else:
                errors = message.get("payload")
                self.worker.on_answer(op, errors if isinstance(errors, list) else [{}], now)
        elif kind == "connection_ack":
            self.send_json(self.subscribe)
            if not self.ready.done():
                self.ready.set_result(None)
        elif kind == "ping":
            self.send_json({"type": "pong"})
        elif kind == "complete" and op == self.sub_id:
            self.subscription_failed = True
            self.sink.error("the subscription completed")

    def on_delivery(self, body: dict[str, Any], now: int) -> None:
        data = body.get("data")
        if not isinstance(data, dict):
            self.sink.error(f"no data: {body}"[:300])
            return
        message = (data.get("roomMessages") or {}).get("data") or {}
        step = self.worker.step
        if "bench_t" in message:
            if step is None or message.get("bench_s") != step.number:
                if step is not None:
                    step.stale += 1
                return
            self.received += 1
            step.latencies.append(now - message["bench_t"])
            step.receipt_keys.append(message["bench_i"])
            step.receipt_ns.append(now)
            step.last_receipt = now
        elif "bench_probe" in message:
            self.saw_probe = True


def error_code(errors: Any) -> str:
    if not isinstance(errors, list) or not errors:
        return "NO_CODE"
    first = errors[0] if isinstance(errors[0], dict) else {}
    code = (first.get("extensions") or {}).get("code")
    return str(code) if code else "NO_CODE"


# --------------------------------------------------------------------------
# A worker process: the members of some rooms


class Worker:
    def __init__(self, conn: Connection, spec: dict[str, Any]) -> None:
        self.conn = conn
        self.spec = spec
        self.sink = loadgen.Sink()
        self.members: dict[int, Member] = {}  # global member index -> member
        self.by_room: dict[str, list[Member]] = collections.defaultdict(list)
        self.step: Step | None = None
        self.probe_errors: list[str] = []
        self.probe_window = asyncio.Semaphore(PROBE_WINDOW)

    def on_answer(self, op: str, errors: Any, now: int) -> None:
        if op.startswith("p"):
            self.probe_window.release()
            if errors and len(self.probe_errors) < 5:
                self.probe_errors.append(json.dumps(errors)[:300])
            return
        step = self.step
        if step is None or not op.startswith(f"s{step.number}:"):
            return
        k = int(op.split(":", 1)[1])
        if errors:
            step.refused[error_code(errors)] += 1
            if len(step.refusal_examples) < 3:
                step.refusal_examples.append(json.dumps(errors)[:300])
        else:
            step.answered[k] = now

    async def open_member(self, index: int, room: str, token: str | None) -> Member:
        """Connect, init and subscribe one member (replacing one that was closed)."""
        loop = asyncio.get_running_loop()
        parts = urlsplit(self.spec["url"])
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        path = parts.path or "/graphql"
        init = {"Authorization": f"Bearer {token}"} if token else {}
        _, member = await asyncio.wait_for(
            loop.create_connection(
                lambda: Member(self.sink, host, port, path, init, room, self), host, port
            ),
            self.spec["connect_timeout"],
        )
        await asyncio.wait_for(member.ready, self.spec["connect_timeout"])
        old = self.members.get(index)
        self.members[index] = member
        members = self.by_room[room]
        if old in members:
            members[members.index(old)] = member
        else:
            members.append(member)
        return member

    async def connect(self) -> dict[str, Any]:
        gate = asyncio.Semaphore(loadgen.CONNECT_CONCURRENCY)
        failures: list[str] = []

        async def open_one(index: int, room: str, token: str | None) -> None:
            for attempt in range(SETUP_ATTEMPTS):
                async with gate:
                    try:
                        await self.open_member(index, room, token)
                        return
                    except Exception as exc:
                        failures.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.2 * (attempt + 1))

        t = time.monotonic()
        await asyncio.gather(*(open_one(i, room, tok) for i, room, tok in self.spec["members"]))
        return {
            "opened": len(self.members),
            "failed": len(self.spec["members"]) - len(self.members),
            "retried": len(failures),
            "errors": failures[:5],
            "seconds": time.monotonic() - t,
        }

    async def repair(self) -> int:
        """Members cut off or refused since they subscribed (a server that fails under
        the setup's own load) connect or subscribe again; how many did."""
        repaired = 0
        for index, room, token in self.spec["members"]:
            member = self.members.get(index)
            if member is None or member.closed:
                with contextlib.suppress(Exception):
                    await self.open_member(index, room, token)
                    repaired += 1
            elif member.subscription_failed:
                member.resubscribe()
                repaired += 1
        return repaired

    async def ready(self, within: float) -> dict[str, Any]:
        """Probe each room (its first member sends) until all its members saw a probe:
        then every subscription is live on the server."""
        deadline = time.monotonic() + within
        repaired = 0
        for n in range(1_000_000):
            if n % 8 == 7:  # every 2 s without all probes seen
                repaired += await self.repair()
            waiting = [
                members
                for members in self.by_room.values()
                if not all(m.saw_probe for m in members)
            ]
            if not waiting or time.monotonic() > deadline:
                break
            # A window of probes in flight, not one per room at once: a burst of
            # hundreds of sends would measure the server's overload, not readiness.
            # (A probe never answered frees its place after a second.)
            self.probe_window = asyncio.Semaphore(PROBE_WINDOW)
            for members in waiting:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.probe_window.acquire(), 1.0)
                members[0].send_message({"bench_probe": n}, f"p{n}")
            await asyncio.sleep(0.25)
        await asyncio.sleep(0.5)  # the last probes drain
        return {
            "probed": sum(m.saw_probe for m in self.members.values()),
            "repaired": repaired,
            "members": len(self.members),
            "errors": (self.probe_errors + self.sink.errors)[:5],
        }

    async def run_step(self, command: dict[str, Any]) -> dict[str, Any]:
        step = Step(command["step"])
        self.step = step
        rate, total, t0 = command["rate"], command["total"], command["t0"]
        n_members = command["n_members"]
        plan = [
            (t0 + int(k * 1e9 / rate), k, self.members[k % n_members])
            for k in range(total)
            if k % n_members in self.members
        ]
        cpu0 = loadgen.cpu_seconds()
        step.first_send = plan[0][0] if plan else t0
        i = 0
        while i < len(plan):
            now = time.time_ns()
            while i < len(plan) and plan[i][0] <= now:
                due, k, member = plan[i]
                step.lag.append(now - due)
                sent = time.time_ns()
                step.send_ns[k] = sent
                member.send_message(
                    {"bench_t": sent, "bench_i": k, "bench_s": step.number}, f"s{step.number}:{k}"
                )
                step.sent += 1
                i += 1
            if i < len(plan):
                await asyncio.sleep(max(0.0, (plan[i][0] - time.time_ns()) / 1e9))
        step.last_send = time.time_ns()
        # Drain: until every acknowledged message reached all its room's members.
        n = command["members_per_room"]
        deadline = time.monotonic() + command["drain_timeout"]
        seen, progress = (-1, -1), time.monotonic()
        while time.monotonic() < deadline:
            answers = len(step.answered) + sum(step.refused.values())
            state = (answers, len(step.latencies))
            if answers >= step.sent and len(step.latencies) >= len(step.answered) * n:
                break
            if state != seen:
                seen, progress = state, time.monotonic()
            elif time.monotonic() - progress > command["idle_give_up"]:
                break
            await asyncio.sleep(0.01)
        self.step = None
        return self.report(step, n, loadgen.cpu_seconds() - cpu0)

    def report(self, step: Step, n: int, cpu: float) -> dict[str, Any]:
        answer_to_receipt = array("q")
        delivered = 0
        for k, at in zip(step.receipt_keys, step.receipt_ns, strict=True):
            answered = step.answered.get(k)
            if answered is not None:
                delivered += 1
                answer_to_receipt.append(max(0, at - answered))
        answer = array("q", (step.answered[k] - step.send_ns[k] for k in step.answered))
        return {
            "sent": step.sent,
            "acknowledged": len(step.answered),
            "refused": dict(step.refused),
            "refusal_examples": step.refusal_examples,
            "unanswered": step.sent - len(step.answered) - sum(step.refused.values()),
            "expected": len(step.answered) * n,
            "delivered": delivered,
            "receipts": len(step.latencies),
            "stale": step.stale,
            "first_send": step.first_send,
            "last_send": step.last_send,
            "last_receipt": step.last_receipt,
            "latencies": step.latencies.tobytes(),
            "answer_to_receipt": answer_to_receipt.tobytes(),
            "answer": answer.tobytes(),
            "lag": step.lag.tobytes(),
            "cpu": cpu,
            "closed": sum(m.closed for m in self.members.values()),
            "errors": self.sink.errors[:5],
        }

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.conn.send(await self.connect())
        while True:
            command = await loop.run_in_executor(None, self.conn.recv)
            if command["cmd"] == "ready":
                self.conn.send(await self.ready(command["timeout"]))
            elif command["cmd"] == "step":
                self.conn.send(await self.run_step(command))
            elif command["cmd"] == "close":
                for member in self.members.values():
                    member.close()
                await asyncio.sleep(0.2)
                self.conn.send({"closed": True})
                return


def _worker(conn: Connection, spec: dict[str, Any]) -> None:
    loadgen.raise_nofile()
    loadgen._run(Worker(conn, spec).serve())


# --------------------------------------------------------------------------
# /health from its own process


def _health_prober(conn: Connection, url: str, interval: float) -> None:
    """GET /health every `interval` s until told to stop; send back (time, seconds) pairs."""
    times, latencies, failed = array("q"), array("d"), array("b")
    with httpx.Client(timeout=HEALTH_TIMEOUT) as client:
        while not conn.poll():
            at = time.time_ns()
            took, ok = loadgen.timed_get(client, url)
            times.append(at)
            latencies.append(took)
            failed.append(not ok)
            time.sleep(max(0.0, interval - took))
    conn.recv()
    conn.send(
        {"times": times.tobytes(), "latencies": latencies.tobytes(), "failed": failed.tobytes()}
    )


# --------------------------------------------------------------------------
# The coordinator


def _ms(ns_sorted: Any, q: float) -> float:
    value = loadgen.percentile(ns_sorted, q)
    return math.nan if math.isnan(value) else round(value / 1e6, 2)


def proc_group_cpu_seconds(pid: int) -> float:
    """CPU of the server process and, when it leads a process group (bench/run.py starts
    every server in its own session), of every process in that group: its workers."""
    if os.getpgid(pid) != pid:
        return loadgen.proc_cpu_seconds(pid)
    pgid = pid
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


class Coordinator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.n_members = args.rooms * args.members
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        self.health: tuple[Connection, Any] | None = None

    def cpu_server(self) -> float:
        if not self.args.server_pid:
            return 0.0
        with contextlib.suppress(OSError):
            return proc_group_cpu_seconds(self.args.server_pid)
        return 0.0

    def cpu_service(self) -> float:
        if not self.args.service_pid:
            return 0.0
        with contextlib.suppress(OSError):
            return loadgen.proc_cpu_seconds(self.args.service_pid)
        return 0.0

    async def setup_rooms(self, tokens: list[str | None]) -> None:
        """Member 0 of each room creates it, the others join (ours: members only may post)."""
        args = self.args
        gate = asyncio.Semaphore(16)
        async with httpx.AsyncClient(timeout=60) as client:

            async def call(query: str, variables: dict[str, Any], token: str | None) -> None:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                for attempt in range(SETUP_ATTEMPTS):
                    async with gate:
                        r = await client.post(
                            args.url,
                            json={"query": query, "variables": variables},
                            headers=headers,
                        )
                    errors = r.json().get("errors")
                    if not errors or "taken" in json.dumps(errors):
                        return
                    if error_code(errors) != "UNAVAILABLE" or attempt == SETUP_ATTEMPTS - 1:
                        raise RuntimeError(f"room setup failed: {errors}")
                    await asyncio.sleep(0.2 * (attempt + 1))

            def token(r: int, slot: int) -> str | None:
                return tokens[member_index(args.rooms, r, slot)]

            await asyncio.gather(
                *(
                    call(
                        CREATE_ROOM,
                        {"id": room_id(args.room_prefix, r), "name": f"Chat {r}"},
                        token(r, 0),
                    )
                    for r in range(args.rooms)
                )
            )
            await asyncio.gather(
                *(
                    call(JOIN_ROOM, {"roomId": room_id(args.room_prefix, r)}, token(r, slot))
                    for r in range(args.rooms)
                    for slot in range(1, args.members)
                )
            )

    def start_workers(self, tokens: list[str | None]) -> None:
        args = self.args
        n = args.workers or max(1, min(4, math.ceil(self.n_members / CONNECTIONS_PER_WORKER)))
        n = min(n, args.rooms)
        ctx = mp.get_context("spawn")
        for w in range(n):
            members = [
                (
                    member_index(args.rooms, r, slot),
                    room_id(args.room_prefix, r),
                    tokens[member_index(args.rooms, r, slot)],
                )
                for r in range(w, args.rooms, n)  # whole rooms per worker
                for slot in range(args.members)
            ]
            spec = {"url": args.url, "members": members, "connect_timeout": args.connect_timeout}
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, spec), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)
        if args.health_interval > 0:
            parent, child = ctx.Pipe()
            parts = urlsplit(args.url)
            url = f"{parts.scheme}://{parts.netloc}/health"
            proc = ctx.Process(
                target=_health_prober, args=(child, url, args.health_interval), daemon=True
            )
            proc.start()
            self.health = (parent, proc)

    async def ask_all(self, command: dict[str, Any] | None, wait: float) -> list[dict[str, Any]]:
        return await loadgen.ask_workers(self.pipes, command, wait)

    def health_samples(self) -> tuple[array[int], array[float], array[int]]:
        times, latencies, failed = array("q"), array("d"), array("b")
        if self.health is None:
            return times, latencies, failed
        pipe, proc = self.health
        self.health = None
        with contextlib.suppress(Exception):
            pipe.send("stop")
            if pipe.poll(HEALTH_TIMEOUT + 5):
                reply = pipe.recv()
                times.frombytes(reply["times"])
                latencies.frombytes(reply["latencies"])
                failed.frombytes(reply["failed"])
                proc.join(2)
                return times, latencies, failed
        proc.terminate()
        return times, latencies, failed

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(Exception):
                pipe.send({"cmd": "close"})
        if self.health is not None:
            self.health[1].terminate()
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(2)

    async def step(self, number: int, rate: float, seconds: float) -> dict[str, Any]:
        args = self.args
        total = max(1, round(rate * seconds))
        t0 = time.time_ns() + 300_000_000
        command = {
            "cmd": "step",
            "step": number,
            "rate": rate,
            "total": total,
            "t0": t0,
            "n_members": self.n_members,
            "members_per_room": args.members,
            "drain_timeout": args.drain_timeout,
            "idle_give_up": args.idle_give_up,
        }
        server0, service0, cpu0 = self.cpu_server(), self.cpu_service(), loadgen.cpu_seconds()
        wall0 = time.monotonic()
        replies = await self.ask_all(command, seconds + args.drain_timeout + 60)
        wall = time.monotonic() - wall0
        server_cpu = self.cpu_server() - server0
        service_cpu = self.cpu_service() - service0
        own_cpu = loadgen.cpu_seconds() - cpu0

        def merged(key: str) -> list[int]:
            values = array("q")
            for reply in replies:
                values.frombytes(reply[key])
            return sorted(values)

        latencies, a2r, answer, lag = (
            merged(k) for k in ("latencies", "answer_to_receipt", "answer", "lag")
        )
        refused: collections.Counter[str] = collections.Counter()
        for reply in replies:
            refused.update(reply["refused"])
        sent = sum(r["sent"] for r in replies)
        acknowledged = sum(r["acknowledged"] for r in replies)
        expected = sum(r["expected"] for r in replies)
        delivered = sum(r["delivered"] for r in replies)
        first_send = min(r["first_send"] for r in replies)
        last_send = max(r["last_send"] for r in replies)
        last_receipt = max((r["last_receipt"] for r in replies), default=0)
        span = max(1e-9, (max(last_receipt, last_send) - first_send) / 1e9)
        worker_cpu = [r["cpu"] for r in replies]
        drain_s = round(max(0, last_receipt - last_send) / 1e9, 3) if last_receipt else None
        row: dict[str, Any] = {
            "offered_msg_s": rate,
            "seconds": seconds,
            "sent": sent,
            "sent_msg_s": round(sent / max(1e-9, (last_send - first_send) / 1e9), 1)
            if sent > 1
            else None,
            "acknowledged": acknowledged,
            "refused": sum(refused.values()),
            "refused_by_code": dict(refused),
            "unanswered": sum(r["unanswered"] for r in replies),
            "expected": expected,
            "delivered": delivered,
            "complete": delivered >= expected and acknowledged == sent,
            "drain_s": drain_s,
            "deliveries_per_s": round(delivered / span),
            "p50_ms": _ms(latencies, 0.5),
            "p99_ms": _ms(latencies, 0.99),
            "max_ms": _ms(latencies, 1.0),
            "answer_to_receipt_p50_ms": _ms(a2r, 0.5),
            "answer_to_receipt_p99_ms": _ms(a2r, 0.99),
            "answer_p50_ms": _ms(answer, 0.5),
            "answer_p99_ms": _ms(answer, 0.99),
            "send_lag_p99_ms": _ms(lag, 0.99),
            "stale_deliveries": sum(r["stale"] for r in replies),
            "server_cpu_pct": round(100 * server_cpu / wall, 1) if args.server_pid else None,
            # Per delivered message: a message's worth is N deliveries.
            "server_cpu_us_per_msg": round(1e6 * server_cpu * args.members / delivered, 1)
            if args.server_pid and delivered
            else None,
            "server_cpu_us_per_delivery": round(1e6 * server_cpu / delivered, 2)
            if args.server_pid and delivered
            else None,
            "service_cpu_pct": round(100 * service_cpu / wall, 1) if args.service_pid else None,
            "loadgen_cpu_pct": round(100 * (own_cpu + sum(worker_cpu)) / wall, 1),
            "loadgen_max_proc_cpu_pct": round(100 * max([own_cpu, *worker_cpu]) / wall, 1),
            "closed_connections": max(r["closed"] for r in replies),
            "window": (first_send, max(last_receipt, last_send)),
        }
        examples = [e for r in replies for e in r["refusal_examples"]][:3]
        errors = [e for r in replies for e in r["errors"]][:5]
        if examples:
            row["refusal_examples"] = examples
        if errors:
            row["errors"] = errors
        row["kept_up"] = (
            row["complete"]
            and not row["refused"]
            and drain_s is not None
            and drain_s <= args.drain
            and row["p99_ms"] <= args.p99_bound_ms
        )
        return row

    async def run(self) -> dict[str, Any]:
        args = self.args
        tokens: list[str | None] = list(args.tokens)
        result: dict[str, Any] = {
            "rooms": args.rooms,
            "members": args.members,
            "connections": self.n_members,
        }
        t = time.monotonic()
        if args.setup == "rooms":
            await self.setup_rooms(tokens)
        result["rooms_setup_s"] = round(time.monotonic() - t, 2)
        self.start_workers(tokens)
        result["workers"] = len(self.procs)
        try:
            opened = await self.ask_all(None, args.setup_timeout)
            result["subscribed"] = sum(o["opened"] for o in opened)
            result["connect_failures"] = sum(o["failed"] for o in opened)
            result["connect_retries"] = sum(o["retried"] for o in opened)
            if result["connect_retries"]:
                result["connect_errors"] = [e for o in opened for e in o["errors"]][:5]
            ready = await self.ask_all(
                {"cmd": "ready", "timeout": args.setup_timeout}, args.setup_timeout + 30
            )
            result["ready"] = sum(r["probed"] for r in ready)
            result["setup_repairs"] = sum(r["repaired"] for r in ready)
            result["setup_s"] = round(time.monotonic() - t, 2)
            probe_errors = [e for r in ready for e in r["errors"]]
            if result["ready"] == 0:
                result["error"] = f"no member saw a probe message: {probe_errors[:3]}"
                return result
            if result["ready"] < self.n_members:
                # Measured all the same: what those members miss shows as undelivered.
                result["not_ready"] = self.n_members - result["ready"]
                result["setup_errors"] = probe_errors[:3]
            # The set-up's own work (presence, joins) finishes before the first step.
            cpu0 = self.cpu_server()
            await asyncio.sleep(args.settle)
            if args.server_pid and args.settle > 0:
                result["settle_server_cpu_pct"] = round(
                    100 * (self.cpu_server() - cpu0) / args.settle, 1
                )
            steps: list[dict[str, Any]] = []
            result["steps"] = steps
            for number, rate in enumerate(args.rates):
                row = await self.step(number, rate, args.seconds)
                steps.append(row)
                if args.saturate and not row["kept_up"]:
                    break
        finally:
            times, health, failed = self.health_samples()
            self.stop()
        for row in result.get("steps", []):
            lo, hi = row.pop("window")
            window = [i for i, at in enumerate(times) if lo <= at <= hi]
            inside = sorted(health[i] for i in window)
            row["health_probes"] = len(inside)
            row["health_failures"] = sum(failed[i] for i in window)
            for q, name in ((0.5, "p50"), (0.99, "p99"), (1.0, "max")):
                value = loadgen.percentile(inside, q)
                row[f"health_{name}_ms"] = None if math.isnan(value) else round(value * 1e3, 2)
        kept = [r for r in result.get("steps", []) if r["kept_up"]]
        result["sustained_msg_s"] = kept[-1]["offered_msg_s"] if kept else None
        result["max_deliveries_per_s"] = max(
            (r["deliveries_per_s"] for r in result.get("steps", [])), default=None
        )
        return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--url", required=True, help="GraphQL endpoint, e.g. http://127.0.0.1:8000/graphql"
    )
    p.add_argument("--rooms", "-R", type=int, default=200)
    p.add_argument("--members", "-N", type=int, default=10)
    p.add_argument("--rates", default="500", help="offered messages/s per step, comma-separated")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each step")
    p.add_argument(
        "--saturate", action="store_true", help="stop after the first step that fell behind"
    )
    p.add_argument(
        "--drain",
        type=float,
        default=2.0,
        help="kept up: all delivered within this many s of the last send",
    )
    p.add_argument(
        "--p99-bound-ms", type=float, default=1000.0, help="kept up: latency p99 under this"
    )
    p.add_argument(
        "--drain-timeout", type=float, default=60.0, help="longest wait for deliveries after a step"
    )
    p.add_argument(
        "--setup",
        choices=("rooms", "none"),
        default="none",
        help="rooms: create and join the rooms first (ours)",
    )
    p.add_argument(
        "--idle-give-up",
        type=float,
        default=15.0,
        help="stop waiting after a step when nothing arrived for this many s",
    )
    p.add_argument("--room-prefix", default="chat")
    p.add_argument("--settle", type=float, default=3.0, help="s between set-up and the first step")
    p.add_argument("--tokens-file", help="JSON list of tokens, one per member (R x N)")
    p.add_argument("--server-pid", type=int, help="the server's process group (CPU from /proc)")
    p.add_argument("--service-pid", type=int, help="a Redis or NATS server process (CPU)")
    p.add_argument("--pin-cpus", default="", help="run the load generator on these CPUs, e.g. 1")
    p.add_argument("--workers", type=int, default=0, help="member processes (0: one per 2,500)")
    p.add_argument(
        "--health-interval", type=float, default=0.05, help="s between /health probes (0: none)"
    )
    p.add_argument("--connect-timeout", type=float, default=30)
    p.add_argument("--setup-timeout", type=float, default=180)
    p.add_argument("--json", action="store_true", help="print one JSON line")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if args.pin_cpus:
        # Before the workers start: they inherit it.
        os.sched_setaffinity(0, {int(c) for c in args.pin_cpus.split(",")})
    loadgen.raise_nofile()
    n = args.rooms * args.members
    if args.tokens_file:
        with open(args.tokens_file) as f:
            args.tokens = list(json.load(f))[:n]
        if len(args.tokens) < n:
            raise SystemExit(f"{args.tokens_file} has fewer than {n} tokens")
    else:
        args.tokens = [None] * n
    result = loadgen._run(Coordinator(args).run())
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=1))
    steps = result.get("steps") or []
    return 0 if steps and all(s["complete"] for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
