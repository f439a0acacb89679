"""Private Redis, NATS and PostgreSQL servers for tests.

The shared servers on 6379 and 4222 are never stopped: a test that needs an
outage runs its own server on a free port, with its data in a temp folder.
PostgreSQL always runs privately: one cluster per test session
(`PRIVATE_POSTGRES`), each test in a schema of its own.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import missing
from tests.live import end_process, free_port
from tests.tools import require_tool


def _stop_service(
    process: subprocess.Popen[bytes] | None, port: int, sig: int, *, timeout: float
) -> None:
    """End a service's process, if it runs, and wait until its port is closed."""
    if process is None:
        return
    end_process(process, sig, timeout=timeout)
    _wait_port(port, up=False)


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
    binary: str | None = None  # this server binary instead of the one on PATH

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
            self.binary or require_tool("nats-server"),
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
        _stop_service(self.process, self.port, signal.SIGTERM, timeout=10)
        self.process = None


def postgres_bindir() -> Path:
    """Where initdb and postgres are: `pg_config --bindir`, else Debian's
    /usr/lib/postgresql/<version>/bin (newest first)."""
    for found in (shutil.which("pg_config"), "/usr/bin/pg_config"):
        if found and Path(found).exists():
            out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False)
            bindir = Path(out.stdout.strip())
            if (bindir / "initdb").exists() and (bindir / "postgres").exists():
                return bindir
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    for bindir in reversed(versions):
        if (bindir / "initdb").exists():
            return bindir
    missing("PostgreSQL is not installed (Debian: apt-get install postgresql)")


def _postgres_user() -> tuple[int, int] | None:
    """PostgreSQL refuses to run as root: as root, run it as the `postgres`
    account (Debian's package makes one); otherwise as ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        missing("PostgreSQL cannot run as root and there is no 'postgres' account")
    return account.pw_uid, account.pw_gid


@dataclass
class PostgresCluster:
    """A private PostgreSQL cluster: initdb into `data_dir`, its own free
    port, trust authentication for the user `forge`, TCP on 127.0.0.1 only.

    Durability is off (fsync, synchronous_commit, full_page_writes): the
    tests stop it cleanly and do not test power loss."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    database: str = "forge"

    @property
    def url(self) -> str:
        return f"postgresql://forge@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str) -> None:
        owner = _postgres_user()
        subprocess.run(
            args,
            check=True,
            capture_output=True,
            user=None if owner is None else owner[0],
            group=None if owner is None else owner[1],
        )

    def start(self) -> PostgresCluster:
        bindir = postgres_bindir()
        owner = _postgres_user()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cluster = self.data_dir / "cluster"
        if owner is not None:
            os.chown(self.data_dir, *owner)
        if not (cluster / "PG_VERSION").exists():
            self._run(
                str(bindir / "initdb"), "-D", str(cluster), "-U", "forge",
                "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync",
            )  # fmt: skip
        command = [
            str(bindir / "postgres"), "-D", str(cluster), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
            "-c", "fsync=off", "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off", "-c", "max_connections=200",
        ]  # fmt: skip
        log = (self.data_dir / "server.log").open("ab")
        self.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            user=None if owner is None else owner[0],
            group=None if owner is None else owner[1],
        )
        log.close()
        _wait_port(self.port, up=True)
        self._wait_ready(bindir)
        return self

    def _wait_ready(self, bindir: Path, timeout: float = 30.0) -> None:
        """Wait until it accepts connections (it opens its port while still
        starting up), then make the test database once."""
        deadline = time.monotonic() + timeout
        ready = [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        while subprocess.run([*ready, "-U", "forge"], check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL on port {self.port} did not become ready")
            time.sleep(0.05)  # polling a process we cannot subscribe to
        client = ["-h", "127.0.0.1", "-p", str(self.port), "-U", "forge"]
        query = f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"
        exists = subprocess.run(
            [str(bindir / "psql"), *client, "-d", "postgres", "-tAc", query],
            capture_output=True,
            text=True,
            check=True,
        )
        if exists.stdout.strip() != "1":
            subprocess.run(
                [str(bindir / "createdb"), *client, self.database], check=True, capture_output=True
            )

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: it ends client sessions (a
        # server's pool) instead of waiting for them, as SIGTERM would.
        _stop_service(self.process, self.port, signal.SIGINT, timeout=30)
        self.process = None


class LazyPostgres:
    """The session's private PostgreSQL cluster, started on first use.

    Started lazily (not by a fixture) so that a backend's URL maker in the
    contract suites can name it; `tests.conftest` stops it when the session
    ends. Tests keep apart by schema (`?schema=...`)."""

    def __init__(self) -> None:
        self._cluster: PostgresCluster | None = None
        self._folder: Path | None = None

    def url(self) -> str:
        if self._cluster is None:
            # Not pytest's tmp_path: as root the server runs as the `postgres`
            # account, which must be able to reach its folder.
            self._folder = Path(tempfile.mkdtemp(prefix="forge-pg-"))
            cluster = PostgresCluster(self._folder)
            try:
                cluster.start()
            except BaseException:
                cluster.stop()
                shutil.rmtree(self._folder, ignore_errors=True)
                raise
            self._cluster = cluster
        return self._cluster.url

    def stop(self) -> None:
        if self._cluster is not None:
            self._cluster.stop()
            self._cluster = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


PRIVATE_POSTGRES = LazyPostgres()
