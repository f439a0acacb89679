"""The client examples run against a live server, as their READMEs say."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.live import ROOT, LiveServer, unique, ws_connect
from tests.tools import (
    EXAMPLES,
    Script,
    chromium,
    node,
    npm_ci,
    python_codegen_venv,
    run,
    static_site,
)


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


# --- Node: graphql-ws ---------------------------------------------------------


async def test_node_graphql_ws_example(server: LiveServer) -> None:
    folder = npm_ci(EXAMPLES / "node")
    user, out = await run_chat_example(
        server, [node(), "ws-chat.mjs"], folder, url=server.ws_url, text="hi from node"
    )
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(m["type"], m["userId"], m["data"]) for m in lines] == [
        ("MESSAGE", user, {"text": "hi from node"}),
        ("MESSAGE", user, {"text": "hi from node (again)"}),
    ]
    epoch, first = lines[0]["cursor"].split(":")
    assert lines[1]["cursor"] == f"{epoch}:{int(first) + 1}"


@pytest.mark.parametrize("script", ["apollo-chat.mjs", "urql-chat.mjs"])
async def test_node_apollo_and_urql_examples(server: LiveServer, script: str) -> None:
    """Apollo Client 4 and urql, default settings: mutations and queries over
    HTTP, the subscription over graphql-ws (tests/test_client_resume.py
    restarts the server under them)."""
    folder = npm_ci(EXAMPLES / "node")
    user, out = await run_chat_example(
        server, [node(), script], folder, url=f"{server.url}/graphql", text=f"hi from {script}"
    )
    [message] = lines_of(out)
    assert (message["type"], message["userId"], message["data"]) == (
        "MESSAGE",
        user,
        {"text": f"hi from {script}"},
    )
    assert message["cursor"].endswith(":2")  # after the creator's JOIN


# --- Browser page -------------------------------------------------------------

JOIN = "mutation($room: ID!) { joinRoom(roomId: $room) { id } }"
# JSON keeps U+2028 and U+2029 raw; an SSE line ends only at CR or LF.
TEXT_WITH_BREAKS = "hi over SSE \u2028 and \u2029 ☃"
START_TYPING = "mutation($room: ID!) { startTyping(roomId: $room) }"
SEND = """mutation($room: ID!, $text: String!) {
  sendMessage(input: {roomId: $room, data: {text: $text}}) { id }
}"""
LAST_MESSAGES = """query($room: ID!) {
  history(roomId: $room, last: 2) { edges { node { type userId data } } }
}"""


async def test_browser_page(make_server: type[LiveServer], tmp_path: Path) -> None:
    folder = npm_ci(EXAMPLES / "browser")
    alice, bob, room = unique("alice"), unique("bob"), unique("room")
    with static_site(folder) as origin:
        live = make_server(tmp_path / "server", {"allowed_origins": [origin]}).start()
        query = urlencode({"url": live.ws_url, "token": live.token(alice), "room": room})
        script = await Script.start(
            [node(), "e2e/page.mjs"],
            folder,
            {"PAGE_URL": f"{origin}/?{query}", "ME": alice, "OTHER": bob,
             "TEXT": "hi from the browser", "CHROMIUM": chromium()},
        )  # fmt: skip
        try:
            joined = await script.step("live")
            assert joined["status"] == f"live in {room} as {alice}"
            assert joined["presence"] == [[alice, "ONLINE"]]
            # From history: creating the room joined alice.
            assert joined["messages"] == [
                {"type": "JOIN", "user": alice, "text": f"{alice} joined"}
            ]
            # Its three subscriptions (messages, typing, presence) are live.
            await live.wait_subscribers(3)
            other = live.client(bob)
            await other.execute(JOIN, room=room)
            async with ws_connect(live, other.token):  # bob comes online
                await other.execute(START_TYPING, room=room)
                typing = await script.step("typing")
                assert typing["typing"] == f"{bob} is typing…"
                assert typing["presence"] == sorted([[alice, "ONLINE"], [bob, "ONLINE"]])
                await other.execute(SEND, room=room, text="hello from bob")
                done = await script.step("done")
            await script.finish()
        finally:
            await script.kill()
        assert done["messages"] == [
            {"type": "JOIN", "user": alice, "text": f"{alice} joined"},
            {"type": "JOIN", "user": bob, "text": f"{bob} joined"},
            {"type": "MESSAGE", "user": bob, "text": "hello from bob"},
            {"type": "MESSAGE", "user": alice, "text": "hi from the browser"},
        ]
        assert done["typing"] == ""
        assert done["external"] == [] and done["errors"] == [] and done["consoleErrors"] == []
        # What the page sent is stored as alice's.
        history = await other.execute(LAST_MESSAGES, room=room)
        assert [e["node"] for e in history["history"]["edges"]] == [
            {"type": "MESSAGE", "userId": bob, "data": {"text": "hello from bob"}},
            {"type": "MESSAGE", "userId": alice, "data": {"text": "hi from the browser"}},
        ]


# --- Codegen: TypeScript (graphql-codegen) and Python (ariadne-codegen) ------

CODEGEN = EXAMPLES / "codegen"
SCHEMA = ROOT / "schema" / "schema.graphql"


def breaking_schema(tmp_path: Path, change: str) -> Path:
    """A copy of the schema with one change a client would not survive."""
    sdl = SCHEMA.read_text()
    if change == "rename":  # Message.userId -> authorId: operations no longer validate
        body = sdl.split("type Message {", 1)[1].split("}", 1)[0]
        sdl = sdl.replace(body, body.replace("  userId: ID!", "  authorId: ID!"))
    else:  # PageInfo.endCursor becomes an Int: operations validate, code does not type-check
        old, new = "  endCursor: String\n", "  endCursor: Int\n"
        sdl = sdl.replace(old, new)
    assert sdl != SCHEMA.read_text()
    path = tmp_path / f"schema-{change}.graphql"
    path.write_text(sdl)
    return path


def failing(args: list[str], cwd: Path, **env: str) -> str:
    """Run a tool that must fail; its output."""
    done = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )
    assert done.returncode != 0, f"{' '.join(args)} accepted a breaking schema:\n{done.stdout}"
    return done.stdout + done.stderr


async def run_chat_example(
    server: LiveServer,
    command: list[str],
    folder: Path,
    *,
    url: str,
    text: str,
    extra: Sequence[str] = (),
) -> tuple[str, str]:
    """Run a chat example as a new user in a new room, sending `text`: the
    user and the example's output."""
    user, room = unique("alice"), unique("room")
    token = server.token(user)
    args = ["--url", url, "--token", token, "--room", room, "--text", text, *extra]
    return user, await asyncio.to_thread(run, [*command, *args], folder, 30)


def assert_chatted(out: str, user: str, text: str) -> None:
    """A chat example's one output line: the user's message, back with the
    cursor it was sent under."""
    [message] = lines_of(out)
    assert message["type"] == "MESSAGE" and message["userId"] == user
    assert message["data"] == {"text": text}
    assert message["cursor"] == message["sentCursor"]


def lines_of(out: str) -> list[dict[str, Any]]:
    # "\n" only: str.splitlines would also break inside JSON at U+2028.
    return [json.loads(line) for line in out.split("\n") if line]


async def test_codegen_typescript(server: LiveServer) -> None:
    folder = npm_ci(CODEGEN / "typescript")
    bin_ = folder / "node_modules" / ".bin"
    await asyncio.to_thread(run, [str(bin_ / "graphql-codegen"), "--config", "codegen.ts"], folder)
    await asyncio.to_thread(run, [str(bin_ / "tsc")], folder)  # type-check, then compile to dist/
    user, out = await run_chat_example(
        server, [node(), "dist/chat.js"], folder, url=server.ws_url, text="typed hello"
    )
    assert_chatted(out, user, "typed hello")


def test_codegen_typescript_fails_on_a_breaking_schema(tmp_path: Path) -> None:
    folder = npm_ci(CODEGEN / "typescript")
    codegen = [str(folder / "node_modules" / ".bin" / "graphql-codegen"), "--config", "codegen.ts"]
    out = failing(
        codegen,
        folder,
        SCHEMA=str(breaking_schema(tmp_path, "rename")),
        GENERATED=str(tmp_path / "renamed.ts"),
    )
    assert 'Cannot query field "userId" on type "Message"' in out
    # A type change passes codegen but no longer compiles: tsc on a copy of the project.
    project = tmp_path / "project"
    shutil.copytree(folder / "src", project / "src", ignore=shutil.ignore_patterns("generated"))
    shutil.copy(folder / "tsconfig.json", project)
    (project / "node_modules").symlink_to(folder / "node_modules")
    run(
        codegen,
        folder,
        SCHEMA=str(breaking_schema(tmp_path, "retype")),
        GENERATED=str(project / "src" / "generated" / "graphql.ts"),
    )
    tsc = [str(folder / "node_modules" / ".bin" / "tsc"), "--noEmit", "-p", str(project)]
    out = failing(tsc, folder)
    assert "src/chat.ts" in out and "error TS2322" in out, out


def ariadne_config(tmp_path: Path, schema: Path) -> Path:
    """The example's ariadne-codegen settings, pointed at another schema and folder."""
    folder = CODEGEN / "python"
    text = (folder / "pyproject.toml").read_text()
    text = text.replace('"../../../schema/schema.graphql"', json.dumps(str(schema)))
    text = text.replace('"operations.graphql"', json.dumps(str(folder / "operations.graphql")))
    text = text.replace(
        'target_package_path = "."', f"target_package_path = {json.dumps(str(tmp_path))}"
    )
    tmp_path.mkdir()
    config = tmp_path / "pyproject.toml"
    config.write_text(text)
    shutil.copy(folder / "chat.py", tmp_path)
    return config


async def test_codegen_python(server: LiveServer) -> None:
    folder = CODEGEN / "python"
    venv = await asyncio.to_thread(python_codegen_venv, folder / "requirements.txt")
    await asyncio.to_thread(run, [str(venv / "ariadne-codegen")], folder)
    mypy = [sys.executable, "-m", "mypy", "--config-file", "pyproject.toml", "--no-incremental"]
    await asyncio.to_thread(run, mypy, folder)
    user, out = await run_chat_example(
        server,
        [sys.executable, "chat.py"],
        folder,
        url=f"{server.url}/graphql",
        text="generated hello",
        extra=["--ws-url", server.ws_url],
    )
    assert_chatted(out, user, "generated hello")


def test_codegen_python_fails_on_a_breaking_schema(tmp_path: Path) -> None:
    venv = python_codegen_venv(CODEGEN / "python" / "requirements.txt")
    renamed = ariadne_config(tmp_path / "renamed", breaking_schema(tmp_path, "rename"))
    out = failing([str(venv / "ariadne-codegen"), "--config", str(renamed)], renamed.parent)
    assert "Cannot query field 'userId' on type 'Message'" in out, out
    retyped = ariadne_config(tmp_path / "retyped", breaking_schema(tmp_path, "retype"))
    run([str(venv / "ariadne-codegen"), "--config", str(retyped)], retyped.parent)
    mypy = [sys.executable, "-m", "mypy", "--config-file", "pyproject.toml", "--no-incremental"]
    out = failing(mypy, retyped.parent)
    assert "chat.py" in out and '"after"' in out, out


# --- SSE (graphql-sse): Python httpx client, Node graphql-sse in both modes ---
# These need transport/sse/ (distinct connections and single connection mode).


async def test_python_sse_example(server: LiveServer) -> None:
    user, out = await run_chat_example(
        server,
        [sys.executable, str(EXAMPLES / "python" / "sse_chat.py")],
        ROOT,
        url=f"{server.url}/graphql",
        text=TEXT_WITH_BREAKS,
    )
    [message] = lines_of(out)
    assert (message["type"], message["userId"], message["data"]) == (
        "MESSAGE",
        user,
        {"text": TEXT_WITH_BREAKS},
    )
    assert message["id"] == message["cursor"]  # the SSE id: line, for Last-Event-ID


@pytest.mark.parametrize("mode", ["distinct", "single"])
async def test_node_graphql_sse_example(server: LiveServer, mode: str) -> None:
    folder = npm_ci(EXAMPLES / "node")
    user, out = await run_chat_example(
        server,
        [node(), "sse-chat.mjs"],
        folder,
        url=f"{server.url}/graphql",
        text=f"{TEXT_WITH_BREAKS} ({mode})",
        extra=["--mode", mode],
    )
    [message] = lines_of(out)
    assert message == {
        "mode": mode,
        "type": "MESSAGE",
        "userId": user,
        "data": {"text": f"{TEXT_WITH_BREAKS} ({mode})"},
        "cursor": message["cursor"],
    }
    assert message["cursor"].endswith(":2")  # after the creator's JOIN
