"""Private Redis and NATS servers for tests that stop and start them.

The shared servers on 6379 and 4222 are never stopped: a test that needs an
outage runs its own server on a free port, with its data in a temp folder.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.live import free_port
from tests.tools import require_tool


def _wait_port(port: int, up: bool, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if (s.connect_ex(("127.0.0.1", port)) == 0) == up:
                return
        time.sleep(0.02)  # polling a process we cannot subscribe to
    raise RuntimeError(f"port {port} did not go {'up' if up else 'down'}")


@dataclass
class ServiceProcess:
    """A private redis-server or nats-server; `stop` and `start` keep its
    port (and, when `persistent` / with JetStream, its data)."""

    kind: str  # "redis" or "nats"
    data_dir: Path
    args: tuple[str, ...] = ()
    persistent: bool = True  # redis: append-only file
    jetstream: bool = True  # nats: -js
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.kind}://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.kind == "redis":
            persistence = ["--appendonly", "yes", "--appendfsync", "always"]
            return [
                require_tool("redis-server"),
                "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                *(persistence if self.persistent else ["--appendonly", "no"]),
                "--dir", str(self.data_dir), *self.args,
            ]  # fmt: skip
        return [
            require_tool("nats-server"),
            "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.data_dir),
            *(["-js"] if self.jetstream else []), *self.args,
        ]  # fmt: skip

    def start(self) -> ServiceProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir / "server.log").open("ab")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        _wait_port(self.port, up=True)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        _wait_port(self.port, up=False)
