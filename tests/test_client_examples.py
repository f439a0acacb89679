"""The client examples run against a live server, as their READMEs say."""

from __future__ import annotations

import asyncio
import json
import sys

from tests.live import ROOT, LiveServer, unique


async def test_python_gql_example(server: LiveServer) -> None:
    user, room = unique("alice"), unique("room")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "client-examples" / "python" / "chat.py"),
        "--url", server.ws_url, "--token", server.token(user), "--room", room,
        "--text", "hi",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert [(m["type"], m["userId"], m["data"]) for m in lines] == [
        ("MESSAGE", user, {"text": "hi"}),
        ("MESSAGE", user, {"text": "hi (again)"}),
    ]
    epoch, first = lines[0]["cursor"].split(":")
    assert lines[1]["cursor"] == f"{epoch}:{int(first) + 1}"
