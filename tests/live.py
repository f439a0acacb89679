"""Real servers and real clients for end-to-end tests.

`LiveServer` runs `server.py` as its own process on a free port; clients talk
to it over HTTP and WebSockets exactly as any other client would.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

from core.settings import load_settings
from transport.auth import METRICS_TOKEN_FILE_NAME, TokenAuthority

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 10.0
# How Python starts every traceback it prints (plain and exception groups).
TRACEBACK = "Traceback (most recent call last):"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def end_process(process: subprocess.Popen[bytes], sig: int, *, timeout: float) -> None:
    """Send `sig` and wait for the end; kill the process if it takes over `timeout` s."""
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class LiveServer:
    """A server process; `settings` are written to its YAML config file."""

    data_dir: Path
    settings: dict[str, Any] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    def start(self) -> LiveServer:
        self.port = self.port or free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "config.yaml"
        config.write_text(json.dumps({"extensions": {"streaming": self.settings}}))
        self.log_path = self.data_dir / f"server-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FORGE_STREAMING_")}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "server.py"),
                    "--port",
                    str(self.port),
                    "--config",
                    str(config),
                    "--data-dir",
                    str(self.data_dir),
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)  # polling a process we cannot subscribe to
        raise RuntimeError(f"server did not become healthy:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            end_process(self.process, sig, timeout=15)
        self.process = None

    @property
    def metrics_token(self) -> str:
        """The bearer token /metrics wants: the setting, else the generated one."""
        configured = self.settings.get("metrics_token")
        if isinstance(configured, str):
            return configured
        return (self.data_dir / METRICS_TOKEN_FILE_NAME).read_text().strip()

    def metric(self, name: str) -> float:
        response = httpx.get(
            f"{self.url}/metrics",
            headers={"Authorization": f"Bearer {self.metrics_token}"},
            timeout=TIMEOUT,
        )
        response.raise_for_status()
        for line in response.text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        raise KeyError(name)

    async def wait_subscribers(self, count: int, timeout: float = TIMEOUT) -> None:
        """Wait until the server's hub has exactly `count` live subscribers.

        Live events are only delivered to subscriptions the hub holds, so a
        test waits for this before publishing what a subscriber must see.
        """
        await self.wait_metric("streaming_subscriptions_active", count, timeout)

    async def wait_metric(self, name: str, value: float, timeout: float = TIMEOUT) -> None:
        """Wait until the server's metric `name` reads exactly `value`."""
        deadline = time.monotonic() + timeout
        seen = -1.0
        while time.monotonic() < deadline:
            seen = await asyncio.to_thread(self.metric, name)
            if seen == value:
                return
            await asyncio.sleep(0.02)  # polling the server's own count
        raise AssertionError(f"expected {name} {value}, the server has {seen}")

    def wait_idle(self, timeout: float = TIMEOUT) -> None:
        """Wait until the server holds no subscription (all clients gone)."""
        deadline = time.monotonic() + timeout
        while self.metric("streaming_subscriptions_active") != 0:
            if time.monotonic() > deadline:
                raise AssertionError("subscriptions were left running on the server")
            time.sleep(0.02)  # polling the server's own count

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def log_size(self) -> int:
        """Bytes the log holds now: a mark for `tracebacks(since=...)`."""
        if self.log_path is None or not self.log_path.exists():
            return 0
        return self.log_path.stat().st_size

    def tracebacks(self, since: int = 0) -> list[str]:
        """Each Python traceback the log gained after byte `since`, with the
        line that introduced it: none may come from anything a client sends."""
        if self.log_path is None or not self.log_path.exists():
            return []
        with self.log_path.open("rb") as log:
            log.seek(since)
            lines = log.read().decode(errors="replace").splitlines()
        return [_traceback_at(lines, at) for at, line in enumerate(lines) if TRACEBACK in line]

    def assert_no_traceback(self, since: int = 0) -> None:
        if self.process is not None and self.process.poll() is None:
            # One round trip: whatever the server logged before it is written.
            with suppress(httpx.HTTPError):
                httpx.get(f"{self.url}/health", timeout=TIMEOUT)
        found = self.tracebacks(since)
        if found:
            raise AssertionError(
                f"the server on port {self.port} logged {len(found)} traceback(s) "
                f"({self.log_path}); the first:\n{found[0]}"
            )

    def token(self, user_id: str) -> str:
        """A token this server accepts, signed as `server.py token` would."""
        settings = load_settings(self.data_dir / "config.yaml", data_dir=self.data_dir)
        return TokenAuthority.from_settings(settings).mint(user_id)

    def client(self, user_id: str | None) -> GraphQLClient:
        return GraphQLClient(self, None if user_id is None else self.token(user_id))


# The lines that join chained exceptions into one traceback.
_CHAINED = ("During handling", "The above exception", TRACEBACK)


def serve_module(root: Path, settings: dict[str, Any]) -> Iterator[LiveServer]:
    """A module's own server (a module-scoped fixture yields from this):
    started in `root`, stopped after the module's last test."""
    live = LiveServer(root, settings).start()
    yield live
    live.stop()


def one_test(
    live: LiveServer, *, unlogged: tuple[str, ...] = ("Traceback",)
) -> Iterator[LiveServer]:
    """`live` for one test (a fixture yields from this): after it no
    subscription is left on the server, and none of `unlogged` was logged
    during it."""
    mark = len(live.log())
    yield live
    live.wait_idle()
    live.metric("streaming_subscriptions_active")  # a round trip: the log is written up to here
    written = live.log()[mark:]
    for word in unlogged:
        assert word not in written, written


def _traceback_at(lines: list[str], start: int) -> str:
    """The traceback starting at `lines[start]`, with the line before it (the
    log message), up to its exception line (following chained exceptions)."""
    end = start + 1
    while end < len(lines) and end - start < 200:
        line = lines[end]
        end += 1
        if line and not line[0].isspace() and not line.startswith(_CHAINED):
            following = next((x for x in lines[end:] if x.strip()), "")
            if not following.startswith(_CHAINED):
                break
    return "\n".join(lines[max(start - 1, 0) : end])


class GraphQLError(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors[0]["message"])
        self.errors = errors
        self.code = errors[0].get("extensions", {}).get("code")


class GraphQLClient:
    """Queries and mutations over HTTP POST."""

    def __init__(self, server: LiveServer, token: str | None) -> None:
        self.server = server
        self.token = token

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def post(self, query: str, **variables: Any) -> httpx.Response:
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            return await http.post(
                f"{self.server.url}/graphql",
                json={"query": query, "variables": variables},
                headers=self.headers,
            )

    async def post_raw(self, body: str) -> httpx.Response:
        """POST `body` as written, as JSON: what no encoder here would write
        (NaN, 1e400, a body cut off)."""
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            return await http.post(
                f"{self.server.url}/graphql",
                content=body.encode(),
                headers={**self.headers, "Content-Type": "application/json"},
            )

    async def execute(self, query: str, **variables: Any) -> dict[str, Any]:
        """The `data` of a successful result; GraphQLError if it has errors."""
        response = await self.post(query, **variables)
        body = response.json()
        if body.get("errors"):
            raise GraphQLError(body["errors"])
        if response.status_code != 200:
            raise AssertionError(f"HTTP {response.status_code}: {response.text}")
        data: dict[str, Any] = body["data"]
        return data

    async def error(self, query: str, **variables: Any) -> GraphQLError:
        """The error a request must fail with."""
        try:
            data = await self.execute(query, **variables)
        except GraphQLError as exc:
            return exc
        raise AssertionError(f"expected an error, got {data}")


class WsClient:
    """A graphql-transport-ws client on raw frames."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._next_id = 0
        self._queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            frame = json.loads(raw)
            if frame.get("type") == "ping":
                await self.ws.send(json.dumps({"type": "pong"}))
                continue
            op_id = frame.get("id")
            if op_id in self._queues:
                await self._queues[op_id].put(frame)

    async def subscribe(self, query: str, **variables: Any) -> Operation:
        self._next_id += 1
        op_id = str(self._next_id)
        self._queues[op_id] = asyncio.Queue()
        await self.ws.send(
            json.dumps(
                {
                    "id": op_id,
                    "type": "subscribe",
                    "payload": {"query": query, "variables": variables},
                }
            )
        )
        return Operation(self, op_id, self._queues[op_id])

    async def close(self) -> None:
        self._reader.cancel()
        await self.ws.close()
        await asyncio.gather(self._reader, return_exceptions=True)


@dataclass
class Operation:
    client: WsClient
    id: str
    frames: asyncio.Queue[dict[str, Any]]

    async def frame(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        return await asyncio.wait_for(self.frames.get(), timeout)

    async def next(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The data of the next `next` frame; AssertionError on anything else."""
        frame = await self.frame(timeout)
        if frame["type"] != "next" or frame["payload"].get("errors"):
            raise AssertionError(f"expected data, got {frame}")
        data: dict[str, Any] = frame["payload"]["data"]
        return data

    async def take(self, count: int, field: str) -> list[dict[str, Any]]:
        return [(await self.next())[field] for _ in range(count)]

    async def complete(self) -> None:
        await self.client.ws.send(json.dumps({"id": self.id, "type": "complete"}))

    def assert_quiet(self) -> None:
        if not self.frames.empty():
            raise AssertionError(f"unexpected frame {self.frames.get_nowait()}")


CREATE_ROOM = """
mutation($id: ID!, $name: String!, $private: Boolean!) {
  createRoom(input: {name: $name, id: $id, isPrivate: $private}) { id }
}
"""
JOIN_ROOM = "mutation($id: ID!) { joinRoom(roomId: $id) { id } }"


async def room_with(
    owner: GraphQLClient, *members: GraphQLClient, private: bool = False, name: str = "test"
) -> str:
    """A fresh room of `owner`'s that `members` have joined: its id."""
    room = unique("room")
    await owner.execute(CREATE_ROOM, id=room, name=name, private=private)
    for member in members:
        await member.execute(JOIN_ROOM, id=room)
    return room


async def ended_with(op: Operation) -> dict[str, Any]:
    """The error a subscription ends with: one `next` with errors, then `complete`."""
    frame = await op.frame()
    assert frame["type"] == "next", frame
    assert frame["payload"]["data"] is None, frame
    errors: list[dict[str, Any]] = frame["payload"]["errors"]
    assert len(errors) == 1, errors
    assert (await op.frame())["type"] == "complete"
    return errors[0]


@asynccontextmanager
async def ws_connect(
    server: LiveServer,
    token: str | None,
    *,
    subprotocol: str = "graphql-transport-ws",
    init: bool = True,
) -> AsyncIterator[WsClient]:
    async with websockets.connect(
        server.ws_url,
        subprotocols=[Subprotocol(subprotocol)],
        open_timeout=TIMEOUT,
    ) as ws:
        if init:
            payload = {"Authorization": f"Bearer {token}"} if token else {}
            await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
            ack = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            if ack["type"] != "connection_ack":
                raise AssertionError(f"expected connection_ack, got {ack}")
        client = WsClient(ws)
        try:
            yield client
        finally:
            await client.close()


async def assert_not_found(
    server: LiveServer,
    client: GraphQLClient,
    missing: str,
    operations: list[tuple[str, dict[str, Any]]],
    subscription: tuple[str, dict[str, Any]],
) -> None:
    """Each of `operations`, and `subscription`, fails NOT_FOUND (the
    operations' errors naming `missing`)."""
    for query, variables in operations:
        error = await client.error(query, **variables)
        assert error.code == "NOT_FOUND", query
        assert missing in str(error)
    async with ws_connect(server, client.token) as ws:
        query, variables = subscription
        ended = await ended_with(await ws.subscribe(query, **variables))
        assert ended["extensions"]["code"] == "NOT_FOUND"
