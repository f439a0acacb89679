"""The log guard the fuzz tests rely on: it finds every traceback a server
logged after a mark, and only those."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.live import LiveServer

BEFORE = (
    "INFO: started\nERROR x: old failure\nTraceback (most recent call last):\n  ...\nKeyError: 1\n"
)
AFTER = """INFO: a request
ERROR forge_streaming.errors: unexpected error at ['history']
Traceback (most recent call last):
  File "resolvers/cursors.py", line 23, in parse_cursor
ValueError: invalid literal for int() with base 10: '2'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "x.py", line 1, in y
RuntimeError: chained
INFO: next request
ERROR: task failed
  + Exception Group Traceback (most recent call last):
  |   File "z.py", line 2, in w
  | ExceptionGroup: one (1 sub-exception)
  +------------------------------------
INFO: done
"""


def test_tracebacks_after_a_mark(tmp_path: Path) -> None:
    live = LiveServer(tmp_path)
    live.log_path = tmp_path / "server.log"
    live.log_path.write_text(BEFORE)
    mark = live.log_size()
    live.assert_no_traceback(since=mark)
    with live.log_path.open("a") as log:
        log.write(AFTER)

    found = live.tracebacks(since=mark)

    # The chained one counts once per "Traceback" line: both are reported.
    assert len(found) == 3
    assert found[0].startswith("ERROR forge_streaming.errors: unexpected error")
    assert found[0].endswith("RuntimeError: chained")
    assert "ExceptionGroup: one" in found[2]
    assert len(live.tracebacks()) == 4
    with pytest.raises(AssertionError, match="logged 3 traceback"):
        live.assert_no_traceback(since=mark)
