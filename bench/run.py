"""Forge Streaming's benchmark: ours side by side with two reference servers.

    python bench/run.py            # fan-out S=500,2000,5000 + idle, history, cross-node, chat
    python bench/run.py --quick    # a smoke run: S=200, few messages, small history
    python bench/run.py --sizes 500,2000 --skip idle,history,crossnode,chat
    python bench/run.py --skip fanout,idle,history,crossnode --chat-shapes 200x10

Starts every server itself on free loopback ports (ours on the embedded
default, SQLite, in a temp data dir with the limits raised for the bench; the
Node.js graphql-ws reference; the plain Strawberry + broadcaster reference),
runs bench/loadgen.py (and bench/chat.py for the chat workload: many rooms x
few members, every member posting) against each, and prints the tables. Every phase has a
timeout, and everything started here is stopped at the end, also on Ctrl-C
or an error. See bench/README.md for what each row measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import chat_report  # noqa: E402
import loadgen  # noqa: E402

ROOM = "bench"
PUBLISHER = "bench-publisher"
START_TIMEOUT = 30.0
HISTORY_QUERY = (
    "query H($roomId: ID!) { history(roomId: $roomId, last: 50) "
    "{ edges { cursor node { id type userId data timestamp cursor } } "
    "pageInfo { hasPreviousPage } } }"
)


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --------------------------------------------------------------------------
# Processes


_started: list[subprocess.Popen[bytes]] = []


def spawn(
    cmd: list[str], log_path: Path, cwd: Path = ROOT, cpus: set[int] | None = None
) -> subprocess.Popen[bytes]:
    """Start `cmd` in its own session (so its process group is its workers too);
    on `cpus` only, when given (inherited by everything it starts)."""

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=pin if cpus else None,
        )
    _started.append(proc)
    return proc


def spawn_forge(
    port: int, config: Path, data_dir: Path, *, cpus: set[int] | None = None, workers: int = 1
) -> subprocess.Popen[bytes]:
    """Start this project's server on `port`, its log in data_dir/server.log."""
    cmd = [sys.executable, str(ROOT / "server.py"), "--port", str(port), "--config", str(config)]
    cmd += ["--data-dir", str(data_dir)]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    return spawn(cmd, data_dir / "server.log", cpus=cpus)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    if proc in _started:
        _started.remove(proc)


def stop_all() -> None:
    for proc in list(_started):
        stop(proc)


def measured(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One row of a phase: what `run` returns, or the error it raised (the
    other rows still run); the servers it started are stopped either way."""
    try:
        return run()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        stop_all()


def wait_http(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}): {log_path.read_text()[-800:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer in {START_TIMEOUT:.0f} s")


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    ready: str = "probe"  # how the load generator knows all have subscribed
    publish_token: str | None = None
    tokens_file: Path | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Bench:
    args: argparse.Namespace
    tmp: Path
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    metrics_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    results: dict[str, Any] = field(default_factory=dict)
    _tokens: list[str] = field(default_factory=list)

    # ---- ours

    def our_config(self, data_dir: Path, **extra: Any) -> Path:
        settings = {
            "backend": "sqlite",
            "jwt_secret": self.secret,
            "metrics_token": self.metrics_token,
            "log_level": "warning",
            "max_connections_per_user": 100,
            "max_messages_per_second": 1_000_000,
            "max_rooms_per_user": 1000,
            "subscriber_queue_size": 100_000,
            **extra,
        }
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / "config.yaml"
        path.write_text(json.dumps({"extensions": {"streaming": settings}}, indent=1))
        return path

    def tokens(self, config: Path, count: int) -> list[str]:
        """One user per subscriber (sub-00001, ...), signed with the bench's secret."""
        from core.settings import load_settings
        from transport.auth import TokenAuthority

        if len(self._tokens) < count:
            authority = TokenAuthority.from_settings(load_settings(str(config)))
            self._tokens = [authority.mint(f"sub-{i:05d}") for i in range(count)]
        return self._tokens[:count]

    def start_ours(
        self,
        label: str,
        subscribers: int,
        data_dir: Path | None = None,
        *,
        cpus: set[int] | None = None,
        workers: int = 1,
        **extra: Any,
    ) -> Server:
        from core.settings import load_settings
        from transport.auth import TokenAuthority

        data_dir = data_dir or Path(tempfile.mkdtemp(prefix=f"{label}-", dir=self.tmp))
        config = self.our_config(data_dir, **extra)
        port = free_port()
        log_path = data_dir / "server.log"
        proc = spawn_forge(port, config, data_dir, cpus=cpus, workers=workers)
        wait_http(f"http://127.0.0.1:{port}/health", proc, log_path)
        authority = TokenAuthority.from_settings(load_settings(str(config)))
        publish_token = authority.mint(PUBLISHER)
        tokens_file = data_dir / "tokens.json"
        tokens_file.write_text(json.dumps(self.tokens(config, subscribers)))
        server = Server(label, proc, port, "metrics", publish_token, tokens_file)
        reply = graphql(
            server,
            'mutation { createRoom(input: {id: "' + ROOM + '", name: "Bench"}) { id } }',
        )
        if reply.get("errors") and "taken" not in json.dumps(reply["errors"]):
            raise RuntimeError(f"createRoom failed: {reply['errors']}")
        return server

    def start_node(self, cpus: set[int] | None = None) -> Server:
        ref = BENCH / "node-reference"
        if not (ref / "node_modules" / "graphql-ws").exists():
            log("installing the Node.js reference (npm ci)")
            subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund"], cwd=ref, check=True, timeout=300
            )
        port = free_port()
        log_path = self.tmp / f"node-{port}.log"
        proc = spawn(["node", "server.mjs", "--port", str(port)], log_path, cwd=ref, cpus=cpus)
        wait_http(f"http://127.0.0.1:{port}/health", proc, log_path)
        return Server("node", proc, port)

    def start_strawberry(self) -> Server:
        port = free_port()
        log_path = self.tmp / f"strawberry-{port}.log"
        proc = spawn(
            [sys.executable, str(BENCH / "strawberry-reference" / "app.py"), "--port", str(port)],
            log_path,
        )
        wait_http(f"http://127.0.0.1:{port}/health", proc, log_path)
        return Server("strawberry", proc, port)

    # ---- running the load generator

    def loadgen(
        self,
        server: Server,
        *,
        subscribers: int,
        messages: int,
        publishers: int,
        transport: str = "ws",
        timeout: float,
        extra: list[str] | None = None,
    ) -> dict[str, Any]:
        cmd = [
            sys.executable,
            str(BENCH / "loadgen.py"),
            "--json",
            "--url",
            f"{server.base}/graphql",
            "--room",
            ROOM,
            "-S",
            str(subscribers),
            "-M",
            str(messages),
            "-P",
            str(publishers),
            "--transport",
            transport,
            "--ready",
            server.ready,
            "--server-pid",
            str(server.proc.pid),
            "--timeout",
            str(timeout),
            "--setup-timeout",
            str(timeout),
            *(extra or []),
        ]
        if server.publish_token:
            cmd += ["--publish-token", server.publish_token]
        if server.tokens_file:
            cmd += ["--tokens-file", str(server.tokens_file)]
        if server.ready == "metrics":
            cmd += ["--metrics-token", self.metrics_token]
        if self.args.workers:
            cmd += ["--workers", str(self.args.workers)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=2 * timeout + 60)
        except subprocess.TimeoutExpired:
            return {"error": f"load generator timed out after {2 * timeout + 60:.0f} s"}
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines:
            return {"error": f"load generator failed: {done.stderr.strip()[-600:]}"}
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    # ---- phases

    def fanout(self) -> None:
        rows: dict[str, dict[str, Any]] = {}
        self.results["fanout"] = rows
        for size in self.args.sizes:
            messages = self.args.messages or max(10, self.args.deliveries // size)
            for label in self.args.servers:
                key = f"{size}/{label}"
                log(f"fan-out S={size} M={messages} on {label}")
                rows[key] = measured(partial(self.fanout_one, label, size, messages))
                log(f"  -> {_brief(rows[key])}")

    def fanout_one(self, label: str, size: int, messages: int) -> dict[str, Any]:
        transport = "sse" if label == "ours-sse" else "ws"
        if label.startswith("ours"):
            server = self.start_ours(label, size, backend=self.args.our_backend)
            if transport == "sse" and not sse_supported(server):
                return {"skipped": "no text/event-stream subscriptions on this server yet"}
        elif label == "node":
            server = self.start_node()
        else:
            server = self.start_strawberry()
        return self.loadgen(
            server,
            subscribers=size,
            messages=messages,
            publishers=self.args.publishers,
            transport=transport,
            timeout=self.args.phase_timeout,
            # Paced: no backlog of published messages, so the latency is the
            # delivery path's (unpaced, it is mostly that backlog).
            extra=["--rate", str(self.args.fanout_rate)] if self.args.fanout_rate else None,
        )

    def idle(self) -> None:
        rows: dict[str, dict[str, Any]] = {}
        self.results["idle"] = rows
        size = self.args.idle_subscribers
        for label in [s for s in self.args.servers if s != "ours-sse"]:
            log(f"idle capacity: {size} subscribers on {label}, one broadcast")
            rows[label] = measured(partial(self.idle_one, label, size))
            log(f"  -> {_brief(rows[label])}")

    def idle_one(self, label: str, size: int) -> dict[str, Any]:
        if label == "ours":
            server = self.start_ours(label, size, backend=self.args.our_backend)
        elif label == "node":
            server = self.start_node()
        else:
            server = self.start_strawberry()
        return self.loadgen(
            server, subscribers=size, messages=1, publishers=1, timeout=self.args.phase_timeout
        )

    def history(self) -> None:
        rows: dict[str, dict[str, Any]] = {}
        self.results["history"] = rows
        for backend in self.args.history_backends.split(","):
            log(f"history: {self.args.history_messages} messages on {backend}")
            rows[backend] = measured(partial(self.history_one, backend))
            log(f"  -> {_brief(rows[backend])}")

    def history_one(self, backend: str) -> dict[str, Any]:
        count = self.args.history_messages
        data_dir = Path(tempfile.mkdtemp(prefix=f"history-{backend}-", dir=self.tmp))
        if backend == "sqlite":
            url = f"sqlite:///{data_dir / 'forge-streaming.db'}"
            extra: dict[str, Any] = {"backend": "sqlite"}
        else:
            if importlib.util.find_spec("backends.redis") is None:
                return {"skipped": "backends/redis/ is not built yet"}
            redis = self.start_service("redis", data_dir)
            url = f"redis://127.0.0.1:{redis}/0"
            extra = {"backend": "redis", "backend_urls": [url]}
        t0 = time.monotonic()
        store_times = asyncio.run(
            asyncio.wait_for(fill_history(url, count, backend), self.args.phase_timeout * 3)
        )
        fill_s = time.monotonic() - t0
        server = self.start_ours(f"history-{backend}", 1, data_dir=data_dir, **extra)
        times, server_times = [], []
        with httpx.Client(
            base_url=server.base,
            headers={"Authorization": f"Bearer {server.publish_token}"},
            timeout=30,
        ) as client:
            body = {"query": HISTORY_QUERY, "variables": {"roomId": ROOM}}
            for _ in range(20):  # warm up
                client.post("/graphql", json=body)
            deadline = time.monotonic() + self.args.phase_timeout
            # CPU time, unlike wall time, holds still on a busy machine.
            cpu_before = loadgen.proc_cpu_seconds(server.proc.pid)
            for _ in range(self.args.history_queries):
                t = time.perf_counter()
                response = client.post("/graphql", json=body)
                times.append(time.perf_counter() - t)
                reply = response.json()
                # `Server-Timing: app;dur=<ms>`: the request inside the server.
                server_times.append(float(response.headers["server-timing"].split("=")[1]) / 1e3)
                if reply.get("errors"):
                    raise RuntimeError(f"history failed: {reply['errors']}")
                if time.monotonic() > deadline:
                    break
            cpu_ms = (loadgen.proc_cpu_seconds(server.proc.pid) - cpu_before) * 1e3
        edges = len(reply["data"]["history"]["edges"])
        times.sort()
        server_times.sort()
        return {
            "stored": count,
            "fill_s": round(fill_s, 1),
            "edges": edges,
            "queries": len(times),
            "http_p50_ms": round(loadgen.percentile(times, 0.5) * 1e3, 2),
            "http_p99_ms": round(loadgen.percentile(times, 0.99) * 1e3, 2),
            "server_p50_ms": round(loadgen.percentile(server_times, 0.5) * 1e3, 2),
            "server_p99_ms": round(loadgen.percentile(server_times, 0.99) * 1e3, 2),
            "server_cpu_ms_per_query": round(cpu_ms / len(times), 2),
            "store_p50_ms": round(loadgen.percentile(store_times, 0.5) * 1e3, 2),
            "store_p99_ms": round(loadgen.percentile(store_times, 0.99) * 1e3, 2),
        }

    def crossnode(self) -> None:
        rows: dict[str, dict[str, Any]] = {}
        self.results["crossnode"] = rows
        for backend in ("redis", "nats"):
            log(f"cross-node latency on {backend}")
            if importlib.util.find_spec(f"backends.{backend}") is None:
                rows[backend] = {"skipped": f"backends/{backend}/ is not built yet"}
                log(f"  -> {rows[backend]['skipped']}")
                continue
            rows[backend] = measured(partial(self.crossnode_one, backend))
            log(f"  -> {_brief(rows[backend])}")

    def crossnode_one(self, backend: str) -> dict[str, Any]:
        data_dir = Path(tempfile.mkdtemp(prefix=f"cross-{backend}-", dir=self.tmp))
        port = self.start_service(backend, data_dir)
        extra: dict[str, Any] = {
            "backend": backend,
            "backend_urls": [f"{backend}://127.0.0.1:{port}"],
        }
        a = self.start_ours("node-a", 1, data_dir=data_dir / "a", **extra)
        b = self.start_ours("node-b", 20, data_dir=data_dir / "b", **extra)
        b.publish_token = a.publish_token
        return self.loadgen(
            b,
            subscribers=20,
            messages=self.args.crossnode_messages,
            publishers=1,
            timeout=self.args.phase_timeout,
            extra=["--publish-url", a.base, "--rate", "50"],
        )

    def chat(self) -> None:
        """Many rooms x few members, every member posting over its own socket:
        a paced run, a saturation run (rates stepped up) and an overload run
        (twice the sustained rate), for every shape and server."""
        args = self.args
        rows: dict[str, dict[str, Any]] = {}
        self.results["chat"] = rows
        for shape in args.chat_shapes:
            for target in chat_targets(args):
                sustained: float | None = (
                    args.chat_overload_rate / args.chat_overload_factor or None
                )
                for run in args.chat_runs:
                    key = f"{shape}/{run}/{target}"
                    if run == "overload" and not sustained:
                        rows[key] = {
                            "skipped": "no sustained rate (saturation run skipped or failed)"
                        }
                        continue
                    log(f"chat {shape} {run} on {target}")
                    rows[key] = measured(partial(self.chat_one, shape, run, target, sustained))
                    if run == "saturation" and not args.chat_overload_rate:
                        sustained = rows[key].get("sustained_msg_s") or sustained
                    log(f"  -> {chat_report.brief(rows[key])}")

    def chat_one(
        self, shape: str, run: str, target: str, sustained: float | None
    ) -> dict[str, Any]:
        args = self.args
        rooms, members = (int(x) for x in shape.split("x"))
        pinned = chat_pinned(args)
        server_cpus, loadgen_cpus = ({0}, "1") if pinned else (None, "")
        service_pid = None
        if target == "node":
            server = self.start_node(cpus=server_cpus)
            extra = ["--setup", "none"]
        else:
            backend, _, suffix = target.partition("-w")
            workers = int(suffix or 1)
            if workers > 1:
                # Several processes need both cores: the load generator competes with them.
                server_cpus = None
            settings: dict[str, Any] = {"backend": backend}
            data_dir = Path(tempfile.mkdtemp(prefix=f"chat-{target}-", dir=self.tmp))
            if backend in ("redis", "nats"):
                port = self.start_service(backend, data_dir / backend)
                service_pid = _started[-1].pid  # the service start_service just spawned
                settings["backend_urls"] = [f"{backend}://127.0.0.1:{port}"]
            server = self.start_ours(
                f"chat-{target}",
                rooms * members,
                data_dir=data_dir,
                cpus=server_cpus,
                workers=workers,
                **settings,
            )
            extra = ["--setup", "rooms", "--tokens-file", str(server.tokens_file)]
        drain_timeout = args.chat_drain_timeout
        if run == "paced":
            rates, seconds = args.chat_rates, args.chat_seconds
        elif run == "saturation":
            rates, seconds = args.chat_saturation_rates, args.chat_step_seconds
            extra.append("--saturate")
        else:
            rates = [round(args.chat_overload_factor * (sustained or 0), 1)]
            seconds = args.chat_overload_seconds
            drain_timeout = args.phase_timeout
            # An overloaded server may deliver nothing for a long time, then all of it.
            extra += ["--idle-give-up", str(drain_timeout)]
        cmd = [
            sys.executable,
            str(BENCH / "chat.py"),
            "--json",
            "--url",
            f"{server.base}/graphql",
            "--rooms",
            str(rooms),
            "--members",
            str(members),
            "--rates",
            ",".join(str(r) for r in rates),
            "--seconds",
            str(seconds),
            "--drain",
            str(args.chat_drain),
            "--drain-timeout",
            str(drain_timeout),
            "--p99-bound-ms",
            str(args.chat_p99_bound_ms),
            "--server-pid",
            str(server.proc.pid),
            "--setup-timeout",
            str(args.phase_timeout),
            *extra,
        ]
        if service_pid:
            cmd += ["--service-pid", str(service_pid)]
        if loadgen_cpus:
            cmd += ["--pin-cpus", loadgen_cpus]
        limit = args.phase_timeout * 2 + len(rates) * (seconds + drain_timeout + 10)
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            return {"error": f"chat load generator timed out after {limit:.0f} s"}
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines:
            return {"error": f"chat load generator failed: {done.stderr.strip()[-600:]}"}
        result: dict[str, Any] = json.loads(lines[-1])
        result["pinned"] = pinned and server_cpus is not None
        return result

    def start_service(self, kind: str, data_dir: Path) -> int:
        """A private Redis or NATS server on a free port (the shared ones stay untouched)."""
        port = free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        if kind == "redis":
            binary = shutil.which("redis-server")
            cmd = [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
            cmd += ["--appendonly", "no", "--dir", str(data_dir)]
        else:
            binary = shutil.which("nats-server") or shutil.which(
                "nats-server", path="/usr/sbin:/usr/local/sbin"
            )
            cmd = [str(binary), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(data_dir)]
        if binary is None:
            raise RuntimeError(f"{kind} server is not installed")
        spawn(cmd, data_dir / f"{kind}.log")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return port
            time.sleep(0.05)
        raise TimeoutError(f"{kind} did not start")


def graphql(server: Server, query: str, variables: dict[str, Any] | None = None) -> Any:
    headers = {"Authorization": f"Bearer {server.publish_token}"} if server.publish_token else {}
    r = httpx.post(
        f"{server.base}/graphql",
        json={"query": query, "variables": variables or {}},
        headers=headers,
        timeout=30,
    )
    return r.json()


def sse_supported(server: Server) -> bool:
    body = {"query": loadgen.SUBSCRIPTION, "variables": {"roomId": ROOM}}
    headers = {
        "Authorization": f"Bearer {server.publish_token}",
        "Accept": "text/event-stream",
    }
    try:
        with httpx.stream(
            "POST", f"{server.base}/graphql", json=body, headers=headers, timeout=3
        ) as r:
            return r.status_code == 200 and "text/event-stream" in r.headers.get("content-type", "")
    except httpx.HTTPError:
        return False


async def fill_history(url: str, count: int, backend: str) -> list[float]:
    """Store `count` messages in the bench room through our backend classes;
    returns the in-process times of the store calls behind `history(last: 50)`."""
    from backends.factory import backend_module
    from backends.records import HistoryWindow, MessageKind, NewMessage, Room

    module = backend_module(url)
    roles = ("messages", "rooms")
    opened = await module.open_stores(url, roles, retention=None)
    try:
        room = Room(id=ROOM, name="Bench", owner=PUBLISHER)
        await opened.rooms.create(room)
        incarnation = room.incarnation
        await opened.messages.append(
            NewMessage(kind=MessageKind.MESSAGE, user_id=PUBLISHER, room_id=ROOM, data={"i": 0}),
            incarnation=incarnation,
        )
        if backend == "sqlite":
            await opened.close()
            _bulk_sqlite(url, count)
            opened = await module.open_stores(url, roles, retention=None)
        else:
            gate = asyncio.Semaphore(16)

            async def one(i: int) -> None:
                async with gate:
                    await opened.messages.append(
                        NewMessage(
                            kind=MessageKind.MESSAGE,
                            user_id=PUBLISHER,
                            room_id=ROOM,
                            data={"i": i, "text": "lorem ipsum dolor sit amet"},
                        ),
                        incarnation=incarnation,
                    )

            for start in range(1, count, 10_000):
                await asyncio.gather(*(one(i) for i in range(start, min(count, start + 10_000))))
        times = []
        store = opened.messages
        for _ in range(200):
            t = time.perf_counter()
            await store.position(ROOM, incarnation=incarnation)
            await store.page(ROOM, HistoryWindow(limit=50, from_end=True), incarnation=incarnation)
            times.append(time.perf_counter() - t)
        times.sort()
        return times
    finally:
        await opened.close()


def _bulk_sqlite(url: str, count: int) -> None:
    """Rows 2..count next to the first one, in the schema backends.sqlite made."""
    import sqlite3

    from backends.sqlite import sqlite_path

    db = sqlite3.connect(sqlite_path(url))
    now = int(datetime.now(UTC).timestamp() * 1e6)
    try:
        with db:

            def rows() -> Iterator[tuple[Any, ...]]:
                for seq in range(2, count + 1):
                    yield (
                        ROOM,
                        seq,
                        uuid.uuid4().hex,
                        "MESSAGE",
                        PUBLISHER,
                        now - (count - seq),
                        json.dumps({"i": seq, "text": "lorem ipsum dolor sit amet"}),
                        "null",
                    )

            db.executemany(
                "INSERT INTO messages (room_id, seq, id, kind, user_id, ts, data, metadata)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows(),
            )
            db.execute(
                "UPDATE streams SET last_offset = ? WHERE room_id = ?", (max(count, 1), ROOM)
            )
            # Their search index rows too, as appends write them (the text is
            # the one string in `data`), so the server does not index them at start.
            db.execute(
                "INSERT INTO message_fts (rowid, body, room)"
                " SELECT rowid, json_extract(data, '$.text'), room_id"
                " FROM messages WHERE room_id = ? AND seq >= 2",
                (ROOM,),
            )
            db.execute(
                "INSERT OR REPLACE INTO search_state (key, value)"
                " SELECT 'indexed_upto', MAX(rowid) FROM messages"
            )
    finally:
        db.close()


# --------------------------------------------------------------------------
# The table


def _brief(row: dict[str, Any]) -> str:
    if "skipped" in row:
        return f"skipped: {row['skipped']}"
    if "error" in row:
        return f"ERROR {row['error']}"
    keys = (
        "deliveries_per_s",
        "p50_ms",
        "p99_ms",
        "mem_per_sub_kb",
        "complete",
        "http_p99_ms",
        "store_p99_ms",
    )
    return ", ".join(f"{k}={row[k]}" for k in keys if k in row)


def _num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, int | float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return str(value)


def _cell(row: dict[str, Any] | None, key: str) -> str:
    if row is None:
        return "—"
    if "skipped" in row:
        return "n/a"
    if "error" in row and key not in row:
        return "error"
    text = _num(row.get(key))
    if key == "deliveries_per_s" and row.get("complete") is False:
        text += f" (incomplete: {row.get('deliveries')}/{row.get('expected')})"
    return text


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> str:
    if not a or not b:
        return "—"
    x, y = a.get(key), b.get(key)
    if not isinstance(x, int | float) or not isinstance(y, int | float) or not y:
        return "—"
    return f"{x / y:.2f}x"


FANOUT_METRICS = (
    ("deliveries_per_s", "deliveries/s"),
    ("p50_ms", "latency p50 ms"),
    ("p99_ms", "latency p99 ms"),
    ("max_ms", "latency max ms"),
    ("mem_per_sub_kb", "server kB/subscriber"),
    ("server_cpu_pct", "server CPU %"),
    ("loadgen_cpu_pct", "loadgen CPU % (all procs)"),
    ("loadgen_max_proc_cpu_pct", "loadgen CPU % (busiest proc)"),
)


def _plain_table(
    title: str,
    head: list[str],
    rows: dict[str, dict[str, Any]],
    cells: Callable[[dict[str, Any]], list[Any]],
) -> list[str]:
    """A markdown table under `title`: a row per label, its `cells`, or a note
    across them where the run was skipped or failed."""
    out = [f"\n### {title}\n", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, row in rows.items():
        if "skipped" in row or "error" in row:
            note = row.get("skipped") or f"error: {row['error'][:150]}"
            out.append(f"| {label} | {note} |" + " |" * (len(head) - 2))
        else:
            out.append("| " + " | ".join(str(c) for c in [label, *cells(row)]) + " |")
    return out


def table(results: dict[str, Any], args: argparse.Namespace) -> str:
    out = []
    fanout = results.get("fanout")
    if fanout:
        servers = args.servers
        out.append("### Fan-out (1 room, graphql-transport-ws unless marked)\n")
        head = ["S", "M", "metric", *servers, "ours/node", "ours/strawberry"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for size in args.sizes:
            rows = {s: fanout.get(f"{size}/{s}") for s in servers}
            m = next((r.get("messages") for r in rows.values() if r and "messages" in r), "")
            for key, name in FANOUT_METRICS:
                cells = [_cell(rows[s], key) for s in servers]
                out.append(
                    f"| {size} | {m} | {name} | "
                    + " | ".join(cells)
                    + f" | {_ratio(rows.get('ours'), rows.get('node'), key)}"
                    + f" | {_ratio(rows.get('ours'), rows.get('strawberry'), key)} |"
                )
        notes = [
            f"{key}: {row.get('skipped') or row.get('error') or row.get('errors')}"
            for key, row in fanout.items()
            if row.get("skipped") or row.get("error") or row.get("errors")
        ]
        if notes:
            out.append("\n" + "\n".join(f"- {n}" for n in notes))
    idle = results.get("idle")
    if idle:
        out += _plain_table(
            f"Idle capacity ({args.idle_subscribers} subscribers, one broadcast)",
            [
                "server",
                "subscribed",
                "received the broadcast",
                "server kB/subscriber",
                "server RSS MB",
                "setup s",
            ],
            idle,
            lambda row: [
                row.get("subscribed"),
                row.get("deliveries"),
                _num(row.get("mem_per_sub_kb")),
                _num(row.get("rss_after_mb")),
                _num(row.get("setup_s")),
            ],
        )
    history = results.get("history")
    if history:
        out += _plain_table(
            "History: `history(last: 50)` in one room",
            [
                "backend",
                "stored",
                "server p50 ms",
                "server p99 ms",
                "HTTP p50 ms",
                "HTTP p99 ms",
                "store p50 ms",
                "store p99 ms",
                "server CPU ms/query",
            ],
            history,
            lambda row: [
                f"{row['stored']:,}",
                row["server_p50_ms"],
                row["server_p99_ms"],
                row["http_p50_ms"],
                row["http_p99_ms"],
                row["store_p50_ms"],
                row["store_p99_ms"],
                row.get("server_cpu_ms_per_query"),
            ],
        )
    cross = results.get("crossnode")
    if cross:
        out += _plain_table(
            "Cross-node: sent on one process, received on another",
            ["backend", "p50 ms", "p99 ms", "max ms", "delivered"],
            cross,
            lambda row: [
                row.get("p50_ms"),
                row.get("p99_ms"),
                row.get("max_ms"),
                f"{row.get('deliveries')}/{row.get('expected')}",
            ],
        )
    return "\n".join(out)


def chat_targets(args: argparse.Namespace) -> list[str]:
    """Column names of the chat tables: our backends, `redis-w2` for two workers, node."""
    targets = list(args.chat_backends)
    if args.chat_redis_workers > 1:
        targets.append(f"redis-w{args.chat_redis_workers}")
    if args.chat_node:
        targets.append("node")
    return targets


def chat_pinned(args: argparse.Namespace) -> bool:
    if args.chat_pin == "auto":
        return (os.cpu_count() or 1) >= 2
    return bool(args.chat_pin == "on")


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 1024**2
    node = "none"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs ({model}), {mem} GiB RAM, Linux {platform.release()}, "
        f"Python {platform.python_version()}, Node {node}; load average at the end: {load}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="smoke run: S=200, few messages")
    p.add_argument("--sizes", help="subscriber counts for fan-out (default 500,2000,5000)")
    p.add_argument("--messages", type=int, default=0, help="M per fan-out row (default: auto)")
    p.add_argument("--deliveries", type=int, default=400_000, help="auto M = this / S")
    p.add_argument("--publishers", type=int, default=4)
    p.add_argument(
        "--fanout-rate",
        type=float,
        default=0,
        help="messages/s offered in the fan-out phase, all publishers (0: unpaced)",
    )
    p.add_argument("--servers", default="ours,ours-sse,node,strawberry")
    p.add_argument("--our-backend", default="sqlite", choices=("sqlite", "memory"))
    p.add_argument("--skip", default="", help="phases to skip: fanout,idle,history,crossnode,chat")
    p.add_argument("--idle-subscribers", type=int, default=10_000)
    p.add_argument("--history-messages", type=int, default=1_000_000)
    p.add_argument("--history-backends", default="sqlite,redis")
    p.add_argument("--history-queries", type=int, default=500)
    p.add_argument("--crossnode-messages", type=int, default=200)
    p.add_argument("--workers", type=int, default=0, help="load generator processes (0: auto)")
    chat = p.add_argument_group("chat: many rooms x few members, every member posts")
    chat.add_argument("--chat-shapes", default="200x10,1000x5", help="ROOMSxMEMBERS, ...")
    chat.add_argument("--chat-backends", default="sqlite,memory,redis,nats", help="ours on these")
    chat.add_argument(
        "--chat-node", action=argparse.BooleanOptionalAction, default=True, help="Node column"
    )
    chat.add_argument(
        "--chat-redis-workers",
        type=int,
        default=0,
        help="N > 1: a column for ours on Redis with --workers N (unpinned)",
    )
    chat.add_argument("--chat-runs", default="paced,saturation,overload")
    chat.add_argument("--chat-rates", default="500", help="offered msg/s of the paced run(s)")
    chat.add_argument("--chat-seconds", type=float, default=10.0, help="length of a paced run")
    chat.add_argument(
        "--chat-saturation-rates",
        default="100,150,200,300,400,600,800,1000,1400,2000,2800,4000,5600,8000",
        help="offered msg/s, stepped up until the server falls behind",
    )
    chat.add_argument("--chat-step-seconds", type=float, default=8.0)
    chat.add_argument(
        "--chat-p99-bound-ms",
        type=float,
        default=1000.0,
        help="a step with a higher p99 fell behind",
    )
    chat.add_argument(
        "--chat-drain", type=float, default=2.0, help="kept up: all delivered this soon after"
    )
    chat.add_argument("--chat-drain-timeout", type=float, default=30.0)
    chat.add_argument("--chat-overload-factor", type=float, default=2.0)
    chat.add_argument(
        "--chat-overload-rate",
        type=float,
        default=0.0,
        help="offered msg/s (0: factor x sustained)",
    )
    chat.add_argument("--chat-overload-seconds", type=float, default=8.0)
    chat.add_argument(
        "--chat-pin",
        choices=("auto", "on", "off"),
        default="auto",
        help="server on CPU 0, load generator on CPU 1 (auto: with 2+ CPUs)",
    )
    p.add_argument("--phase-timeout", type=float, default=240.0, help="seconds per phase")
    p.add_argument("--json-out", help="also write the raw results to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = args.sizes or "200"
        args.messages = args.messages or 20
        args.idle_subscribers = min(args.idle_subscribers, 1000)
        args.history_messages = min(args.history_messages, 20_000)
        args.history_queries = min(args.history_queries, 100)
        args.crossnode_messages = min(args.crossnode_messages, 20)
        args.phase_timeout = min(args.phase_timeout, 60)
        args.chat_shapes = "50x5" if args.chat_shapes == "200x10,1000x5" else args.chat_shapes
        args.chat_rates = "100" if args.chat_rates == "500" else args.chat_rates
        args.chat_seconds = min(args.chat_seconds, 5)
        args.chat_saturation_rates = "100,200,400,800"
        args.chat_step_seconds = min(args.chat_step_seconds, 4)
        args.chat_overload_seconds = min(args.chat_overload_seconds, 4)
    args.sizes = [int(s) for s in (args.sizes or "500,2000,5000").split(",")]
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    args.chat_shapes = [s.strip() for s in args.chat_shapes.split(",") if s.strip()]
    args.chat_backends = [s.strip() for s in args.chat_backends.split(",") if s.strip()]
    args.chat_runs = [s.strip() for s in args.chat_runs.split(",") if s.strip()]
    args.chat_rates = [float(r) for r in args.chat_rates.split(",") if r.strip()]
    args.chat_saturation_rates = [
        float(r) for r in args.chat_saturation_rates.split(",") if r.strip()
    ]
    loadgen.raise_nofile()  # inherited by every server and load generator started here

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="forge-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            for phase in ("fanout", "idle", "history", "crossnode", "chat"):
                if phase not in skip:
                    getattr(bench, phase)()
        except KeyboardInterrupt:
            log("interrupted: stopping everything")
            return 130
        finally:
            stop_all()
    print(f"\nForge Streaming bench, {started:%Y-%m-%d %H:%M} UTC — {machine()}\n")
    text = table(bench.results, args)
    if text:
        print(text)
    if bench.results.get("chat"):
        print(chat_report.tables(bench.results["chat"], args))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(bench.results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
