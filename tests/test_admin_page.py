"""The admin dashboard (/admin): its headers over HTTP, and the page in a
real headless Chromium (client-examples/browser/e2e/admin.mjs) against a
real server, with real WebSocket clients playing the users.

Each browser test saves a screenshot of every screen it passes through, in
`$ARTIFACTS_DIR/admin-page` or the test's tmp dir (the path is printed).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt

from core.settings import load_settings
from tests.conftest import TEST_SETTINGS
from tests.live import GraphQLClient, LiveServer, unique, ws_connect
from tests.tools import EXAMPLES, Script, chromium, node, npm_ci
from transport.auth import TokenAuthority

CREATE = """mutation($room: ID!, $name: String!) {
  createRoom(input: {id: $room, name: $name}) { id }
}"""
CREATE_PRIVATE = """mutation($room: ID!) {
  createRoom(input: {id: $room, name: "private", isPrivate: true}) { id }
}"""
JOIN = "mutation($room: ID!) { joinRoom(roomId: $room) { id } }"
SEND = """mutation($room: ID!, $text: String!) {
  sendMessage(input: {roomId: $room, data: {text: $text}}) { id }
}"""
ROOM_MESSAGES = "subscription($room: ID!) { roomMessages(roomId: $room) { type event userId } }"
HOSTILE = '<img src=x onerror=alert(1)> <script>alert("xss")</script> & "quotes"'


def admin_token(server: LiveServer, user_id: str) -> str:
    settings = load_settings(server.data_dir / "config.yaml", data_dir=server.data_dir)
    return TokenAuthority.from_settings(settings).mint(user_id, admin=True)


def expired_admin_token(server: LiveServer, user_id: str) -> str:
    """Signed as the server signs, with `exp` an hour ago."""
    secret = (server.data_dir / "jwt-secret").read_text().strip()
    now = datetime.now(UTC)
    claims = {"sub": user_id, "iat": now - timedelta(hours=2), "exp": now - timedelta(hours=1)}
    return jwt.encode({**claims, "roles": ["admin"]}, secret, algorithm="HS256")


def screenshots(tmp_path: Path) -> Path:
    base = os.environ.get("ARTIFACTS_DIR")
    folder = Path(base) / "admin-page" if base else tmp_path / "admin-page"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"admin page screenshots: {folder}")
    return folder


@contextlib.asynccontextmanager
async def admin_page(
    server: LiveServer, tmp_path: Path, scenario: str, **env: str
) -> AsyncIterator[Script]:
    folder = npm_ci(EXAMPLES / "browser")  # playwright-core lives there
    script = await Script.start(
        [node(), "e2e/admin.mjs"],
        folder,
        {
            "ADMIN_URL": f"{server.url}/admin",
            "SCENARIO": scenario,
            "SHOTS": str(screenshots(tmp_path)),
            "CHROMIUM": chromium(),
            **env,
        },
        stdin=True,
    )
    try:
        yield script
    finally:
        await script.kill()


def passed(line: dict[str, Any]) -> dict[str, Any]:
    """A step's report; no page error, nothing fetched from the internet,
    nothing the Content-Security-Policy had to block."""
    assert line.get("errors", []) == [], line
    assert line.get("external", []) == [], line
    blocked = [e for e in line.get("consoleErrors", []) if "Content Security Policy" in e]
    assert blocked == [], line
    return line


# ---- over HTTP -------------------------------------------------------------


async def test_admin_page_is_served_offline_with_a_strict_policy(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        page = await http.get("/admin")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        directives = {
            name: value
            for name, _, value in (part.strip().partition(" ") for part in policy.split(";"))
        }
        assert directives["default-src"] == "'self'"
        assert directives["script-src"] == "'self'"  # no 'unsafe-inline', no 'unsafe-eval'
        assert directives["frame-ancestors"] == "'none'"
        host = f"127.0.0.1:{server.port}"
        assert directives["connect-src"] == f"'self' ws://{host} wss://{host}"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["cache-control"] == "no-store"
        # No inline script and nothing from elsewhere: every asset is ours.
        assert not re.search(r"<script(?![^>]*\ssrc=)", page.text)
        assets = [a for a in re.findall(r'(?:src|href)="([^"]+)"', page.text) if a != "data:,"]
        assert assets and all(a.startswith("/admin/assets/") for a in assets), assets
        for asset in assets:
            served = await http.get(asset)
            assert served.status_code == 200, asset
            assert served.headers["content-security-policy"] == policy
            assert served.headers["x-content-type-options"] == "nosniff"
        # The vendored files are the published builds: the page pins their
        # hashes (the browser refuses a changed file), and so does this test.
        pinned = re.findall(r'(?:src|href)="([^"]+)" integrity="sha384-([^"]+)"', page.text)
        assert len(pinned) == 5, pinned
        for asset, digest in pinned:
            body = (await http.get(asset)).content
            assert base64.b64encode(hashlib.sha384(body).digest()).decode() == digest, asset
        # A Host header is client input: anything but host[:port] stays out.
        hostile = await http.get("/admin", headers={"Host": "evil; script-src *"})
        assert "evil" not in hostile.headers["content-security-policy"]
        assert hostile.headers["content-security-policy"].endswith("connect-src 'self'")


async def test_an_admin_sees_presence_in_rooms_it_is_not_in(server: LiveServer) -> None:
    """The room page shows members' presence: a server admin reads it as it
    reads the members, where anyone else outside the room is refused."""
    owner_id, bob_id = unique("owner"), unique("bob")
    owner, bob = server.client(owner_id), server.client(bob_id)
    admin = GraphQLClient(server, admin_token(server, unique("ops")))
    room = unique("room")
    await owner.execute(CREATE, room=room, name=room)
    # Seen once (its status is OFFLINE without a connection): now it has presence.
    await owner.execute("mutation { setPresence(status: BUSY) { status } }")
    room_presence = "query($room: ID!) { roomPresence(roomId: $room) { userId status } }"
    seen = await admin.execute(room_presence, room=room)
    assert [p["userId"] for p in seen["roomPresence"]] == [owner_id]
    users = await admin.execute(
        "query($ids: [ID!]!) { presence(userIds: $ids) { userId status } }", ids=[owner_id]
    )
    assert [p["userId"] for p in users["presence"]] == [owner_id]
    refused = await bob.error(room_presence, room=room)
    assert refused.errors[0]["extensions"]["code"] == "FORBIDDEN"
    hidden = await bob.execute(
        "query($ids: [ID!]!) { presence(userIds: $ids) { userId } }", ids=[owner_id]
    )
    assert hidden["presence"] == []


def test_vendored_admin_assets_carry_their_licenses() -> None:
    vendor = Path(__file__).resolve().parent.parent / "transport" / "static" / "admin" / "vendor"
    licenses = {"preact": "MIT License", "htm": "Apache License", "uplot": "MIT License"}
    for package, license in licenses.items():
        assert license in (vendor / package / "LICENSE").read_text(), package


# ---- in the browser ---------------------------------------------------------


async def test_admin_page_room_shows_hostile_text_as_text_and_bans(
    server: LiveServer, tmp_path: Path
) -> None:
    owner_id, bob_id, admin_id = unique("owner"), unique("bob"), unique("ops")
    owner, bob = server.client(owner_id), server.client(bob_id)
    room = unique("room")
    await owner.execute(CREATE, room=room, name=room)
    await bob.execute(JOIN, room=room)
    await owner.execute(SEND, room=room, text=HOSTILE)  # in the history
    hidden = unique("hidden")
    await owner.execute(CREATE_PRIVATE, room=hidden)
    async with (
        ws_connect(server, bob.token) as bob_ws,
        admin_page(
            server,
            tmp_path,
            "room",
            TOKEN=admin_token(server, admin_id),
            ROOM=room,
            MEMBER=bob_id,
            HOSTILE=HOSTILE,
            PRIVATE_ROOM=hidden,
        ) as script,
    ):
        # Listed to the admin, who is not in it (the page reads Query.adminRooms).
        assert (await script.step("private-listed"))["rows"] == [hidden]
        bob_sub = await bob_ws.subscribe(ROOM_MESSAGES, room=room)
        opened = await script.step("room-open")
        assert sorted(opened["members"]) == sorted([owner_id, bob_id])
        await server.wait_subscribers(2)  # bob's and the page's live tail
        await owner.execute(SEND, room=room, text=HOSTILE)  # live
        assert (await bob_sub.next())["roomMessages"]["type"] == "MESSAGE"

        hostile = await script.step("hostile")
        assert hostile["live"] == [HOSTILE]
        assert HOSTILE in hostile["history"]
        # Shown as text: no element was made of it, nothing ran.
        assert (hostile["img"], hostile["script"], hostile["pwned"]) == (0, 0, None)
        assert hostile["dialogs"] == []

        banned = passed(await script.step("banned", timeout=30))
        assert banned["question"] == (
            f"Ban {bob_id} from room {room}? Their subscriptions to it end."
        )
        assert banned["dialogs"] == []
        # Bob's own subscription sees his ban, then ends with an error.
        left = (await bob_sub.next())["roomMessages"]
        assert (left["type"], left["event"], left["userId"]) == ("LEAVE", "member.banned", bob_id)
        end = await bob_sub.frame()
        assert end["type"] == "next" and end["payload"]["errors"], end
        assert (await bob_sub.frame())["type"] == "complete"
        await script.finish()
    # The page acted as an admin, not as the room's owner: logged as such.
    assert f'"act": "banMember", "room": "{room}"' in server.log()


async def test_admin_page_room_actions_ask_first(server: LiveServer, tmp_path: Path) -> None:
    owner_id, bob_id = unique("owner"), unique("bob")
    owner, bob = server.client(owner_id), server.client(bob_id)
    room, channel = unique("room"), unique("channel")
    await owner.execute(CREATE, room=room, name=room)
    await bob.execute(JOIN, room=room)
    await bob.execute("mutation { setPresence(status: AWAY) { status } }")  # seen once
    await owner.execute(
        "mutation($name: String!) { createChannel(input: {name: $name}) { id } }", name=channel
    )
    members = "query($room: ID!) { room(id: $room) { members { userId role } } }"
    text = f"maintenance at noon {unique('m')}"
    async with admin_page(
        server,
        tmp_path,
        "actions",
        TOKEN=admin_token(server, unique("ops")),
        ROOM=room,
        MEMBER=bob_id,
        SYSTEM_TEXT=text,
        CHANNEL=channel,
    ) as script:
        await script.step("cancelled")
        before = (await owner.execute(members, room=room))["room"]["members"]
        assert {"userId": bob_id, "role": "MEMBER"} in before
        await script.send("go on")
        done = passed(await script.step("done", timeout=60))
        await script.finish()
    assert done["questions"] == [
        f"Make {bob_id} ADMIN in room {room}?",
        f"Send this system message to room {room}?",
        f"Remove {bob_id} from room {room}?",
        f"Delete room {room} and its history? This cannot be undone.",
    ]
    assert done["dialogs"] == []
    assert (await owner.execute(members, room=room))["room"] is None
    log = server.log()
    for act in ("setMemberRole", "removeMember", "deleteRoom"):
        assert f'"act": "{act}", "room": "{room}"' in log, act


async def test_admin_page_with_an_expired_token_returns_to_sign_in(
    server: LiveServer, tmp_path: Path
) -> None:
    stale = expired_admin_token(server, unique("ops"))
    async with admin_page(server, tmp_path, "expired", EXPIRED_TOKEN=stale) as script:
        expired = passed(await script.step("expired", timeout=40))
        await script.finish()
    assert "expired" in expired["notice"], expired
    assert expired["saved"] is None  # forgotten, not retried
    assert expired["signedIn"] == 0
    # One refused request on load, one when typed in: no loop.
    assert (expired["afterLoad"], expired["afterTyped"]) == (1, 2)


async def test_admin_page_returns_to_sign_in_when_the_token_expires_while_open(
    make_server: type[LiveServer], tmp_path: Path
) -> None:
    # A server of its own: the live tail must be its only subscription.
    server = make_server(tmp_path / "node", dict(TEST_SETTINGS)).start()
    owner = server.client(unique("owner"))
    room = unique("room")
    await owner.execute(CREATE, room=room, name=room)
    settings = load_settings(server.data_dir / "config.yaml", data_dir=server.data_dir)
    async with admin_page(server, tmp_path, "expires", ROOM=room) as script:
        await script.step("ready", timeout=40)
        # Refused 5 s (the leeway) after it expires: time to sign in and open the
        # room first, also on a loaded machine.
        await script.send(
            TokenAuthority.from_settings(settings).mint(
                unique("ops"), timedelta(seconds=15), admin=True
            )
        )
        await script.step("open", timeout=40)
        await server.wait_subscribers(1)  # the page's live tail
        expired = passed(await script.step("expired", timeout=40))
        await script.finish()
    assert "token expired" in expired["notice"], expired
    assert expired["saved"] is None
    assert expired["later"] == expired["atSignIn"], "the page kept asking after sign-out"


async def test_admin_page_refuses_a_token_that_is_not_an_admins(
    server: LiveServer, tmp_path: Path
) -> None:
    user = unique("mallory")
    async with admin_page(server, tmp_path, "notadmin", TOKEN=server.token(user)) as script:
        refused = passed(await script.step("refused", timeout=40))
        await script.finish()
    assert refused["failure"] == f"{user} is not a server admin: sign in with an admin token."
    assert (refused["signedIn"], refused["saved"]) == (0, None)


async def test_admin_page_overview_shows_the_node_and_a_moving_chart(
    server: LiveServer, tmp_path: Path
) -> None:
    owner = server.client(unique("owner"))
    room = unique("room")
    await owner.execute(CREATE, room=room, name=room)
    async with admin_page(
        server, tmp_path, "overview", TOKEN=admin_token(server, unique("ops"))
    ) as script:
        overview = await script.step("overview")
        assert len(overview["nodes"]) == 1

        async def keep_sending() -> None:
            while True:
                await owner.execute(SEND, room=room, text="tick")
                await asyncio.sleep(0.1)  # a steady rate for the chart, not synchronisation

        sender = asyncio.create_task(keep_sending())
        try:
            moved = passed(await script.step("moved", timeout=40))
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        await script.finish()
    assert moved["last"] > 0 and moved["points"] >= moved["before"] + 2


async def test_admin_page_disconnects_a_user(server: LiveServer, tmp_path: Path) -> None:
    carol_id = unique("carol")
    carol = server.client(carol_id)
    room = unique("room")
    await carol.execute(CREATE, room=room, name=room)
    async with (
        ws_connect(server, carol.token) as carol_ws,
        admin_page(
            server,
            tmp_path,
            "connections",
            TOKEN=admin_token(server, unique("ops")),
            MEMBER=carol_id,
        ) as script,
    ):
        await carol_ws.subscribe(ROOM_MESSAGES, room=room)
        await server.wait_subscribers(1)
        done = passed(await script.step("disconnected", timeout=30))
        assert done["question"].startswith(f"Disconnect every connection of {carol_id}")
        assert done["status"] == f"1 connection(s) of {carol_id} closed."
        await asyncio.wait_for(carol_ws.ws.wait_closed(), 10)
        await script.finish()
