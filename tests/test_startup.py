"""Starting the server: the backends open once, and a backend that cannot be
opened stops the start with one line naming it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from .live import ROOT, free_port

# Runs server.main with open_backends counted, in the server's own process.
COUNTING = """
import sys
import server

opens = 0
real = server.open_backends


async def counted(*args, **kwargs):
    global opens
    opens += 1
    return await real(*args, **kwargs)


server.open_backends = counted
status = server.main(sys.argv[1:])
print(f"opened backends {opens} time(s), status {status}", file=sys.stderr, flush=True)
"""


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FORGE_STREAMING_")}


def test_a_start_opens_the_backends_once(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", COUNTING, "--port", str(free_port()), "--data-dir", str(tmp_path)],
        cwd=ROOT,
        env=environment(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        lines = []
        for line in process.stderr:  # until the server says it is ready
            lines.append(line)
            if " ready on " in line:
                break
        else:
            raise AssertionError(f"the server did not start:\n{''.join(lines)}")
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, rest
    assert "opened backends 1 time(s), status 0" in rest, rest


def test_an_unreachable_backend_stops_the_start_with_one_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    result = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "--data-dir", str(tmp_path)],
        cwd=ROOT,
        env={**environment(), "FORGE_STREAMING_BACKEND_URLS": f"redis://:pw@127.0.0.1:{port}/0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("forge-streaming: cannot open the backend: "), lines
    assert f"redis://:***@127.0.0.1:{port}/0" in lines[0] and "pw" not in lines[0], lines
