"""Server admins and the server API (issue 13), over the wire.

Admins come from the `admin_users` setting or a token's `"roles": ["admin"]`;
they act in any room as its owner (each such act logged once), and alone
may `broadcastSystemMessage`. Back-end services authenticate with an API key
on HTTP /graphql and may act as a user named in `Forge-Act-As`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import websockets

from core.settings import load_settings
from tests.conftest import TEST_SETTINGS
from tests.live import ROOT, TIMEOUT, GraphQLClient, LiveServer, unique, ws_connect
from tests.sse_client import event_stream
from transport.auth import TokenAuthority

ROOT_ADMIN = "root-admin"
# Keys of back-end services: one given whole, one by its SHA-256 only.
BILLING_KEY = "billing-" + "k" * 40
AUDIT_KEY = "audit-" + "q" * 40
BOT_KEY = "bot-" + "z" * 40
KEYS = (BILLING_KEY, AUDIT_KEY, BOT_KEY)
RATE = 4  # max_messages_per_second on this module's server

CREATE = """
mutation($id: ID!, $private: Boolean!) {
  createRoom(input: {id: $id, name: "Room", isPrivate: $private}) { id }
}
"""
ROOM = "query($id: ID!) { room(id: $id) { id name members { userId role } } }"
HISTORY = """
query($room: ID!) {
  history(roomId: $room, first: 50) { edges { node { type event userId data } } }
}
"""
UPDATE = 'mutation($id: ID!) { updateRoom(id: $id, input: {name: "Renamed"}) { name } }'
DELETE = "mutation($id: ID!) { deleteRoom(id: $id) }"
ADD = """
mutation($room: ID!, $user: ID!, $role: RoomRole) {
  addMember(roomId: $room, userId: $user, role: $role) { userId role }
}
"""
SET_ROLE = """
mutation($room: ID!, $user: ID!, $role: RoomRole!) {
  setMemberRole(roomId: $room, userId: $user, role: $role) { userId role }
}
"""
REMOVE = "mutation($room: ID!, $user: ID!) { removeMember(roomId: $room, userId: $user) }"
BAN = "mutation($room: ID!, $user: ID!) { banMember(roomId: $room, userId: $user) }"
UNBAN = "mutation($room: ID!, $user: ID!) { unbanMember(roomId: $room, userId: $user) }"
SEND = """
mutation($room: ID!, $text: String!) {
  sendMessage(input: {roomId: $room, data: {text: $text}}) { userId }
}
"""
BROADCAST = """
mutation($room: ID!, $data: JSON!) {
  broadcastSystemMessage(roomId: $room, data: $data) { id type event userId data metadata }
}
"""
PUBLISH = """
mutation($channel: ID!) { publish(input: {channelId: $channel, data: {n: 1}}) { userId } }
"""
ROOM_MESSAGES = """
subscription($room: ID!) { roomMessages(roomId: $room) { type event userId data } }
"""


@pytest.fixture(scope="module")
def admin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings: dict[str, Any] = {
        **TEST_SETTINGS,
        "max_messages_per_second": RATE,
        # Debug: whatever the server logs about requests, no key may be in it.
        "log_level": "debug",
        "admin_users": [ROOT_ADMIN],
        "api_keys": [
            {"name": "billing", "key": BILLING_KEY, "act_as": "*"},
            {
                "name": "audit",
                "key_sha256": hashlib.sha256(AUDIT_KEY.encode()).hexdigest(),
                "act_as": ["carol"],
            },
            {"name": "bot", "key": BOT_KEY, "act_as": "*", "admin": False},
        ],
    }
    live = LiveServer(tmp_path_factory.mktemp("admins"), settings).start()
    yield live
    live.stop()


def admin_token(server: LiveServer, user_id: str, **claims: Any) -> str:
    """A token with `roles: ["admin"]`, or with the claims given instead."""
    settings = load_settings(server.data_dir / "config.yaml", data_dir=server.data_dir)
    authority = TokenAuthority.from_settings(settings)
    if not claims:
        return authority.mint(user_id, admin=True)
    now = datetime.now(UTC)
    secret = (server.data_dir / "jwt-secret").read_text().strip()
    payload = {"sub": user_id, "iat": now, "exp": now + timedelta(hours=1), **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


class ServiceClient(GraphQLClient):
    """A back-end service: its API key, and the user it acts as, if any."""

    def __init__(self, server: LiveServer, key: str, act_as: str | None = None) -> None:
        super().__init__(server, key)
        self.act_as = act_as

    @property
    def headers(self) -> dict[str, str]:
        headers = super().headers
        if self.act_as is not None:
            headers["Forge-Act-As"] = self.act_as
        return headers


async def private_room(owner: GraphQLClient) -> str:
    room_id = unique("priv")
    await owner.execute(CREATE, id=room_id, private=True)
    return room_id


def admin_acts(server: LiveServer, room_id: str) -> list[dict[str, str]]:
    return [
        json.loads(line.split("admin act ", 1)[1])
        for line in server.log().splitlines()
        if "admin act " in line and room_id in line
    ]


# --- who is an admin, and what others get ------------------------------------------


async def test_non_admins_are_refused_broadcast_and_learn_nothing(
    admin_server: LiveServer,
) -> None:
    owner = admin_server.client(unique("owner"))
    room_id = await private_room(owner)
    for client in (
        owner,  # the room's own owner is no server admin
        admin_server.client(unique("mallory")),
        GraphQLClient(admin_server, admin_token(admin_server, unique("eve"), roles="admin")),
        GraphQLClient(admin_server, admin_token(admin_server, unique("eve"), role=["admin"])),
        ServiceClient(admin_server, BOT_KEY),  # a key without admin
    ):
        refused = [
            await client.error(BROADCAST, room=room, data={"text": "hi"})
            for room in (room_id, unique("nothing-here"))
        ]
        assert [e.code for e in refused] == ["FORBIDDEN", "FORBIDDEN"]
        # The same answer for a room that exists and one that does not.
        assert refused[0].errors[0]["message"] == refused[1].errors[0]["message"]
        assert room_id not in json.dumps(refused[0].errors)
    assert [e["node"]["event"] for e in await _history(owner, room_id)] == ["room.created"]


async def _history(client: GraphQLClient, room_id: str) -> list[dict[str, Any]]:
    edges: list[dict[str, Any]] = (await client.execute(HISTORY, room=room_id))["history"]["edges"]
    return edges


async def test_admin_by_setting_runs_a_private_room_they_are_not_in(
    admin_server: LiveServer,
) -> None:
    owner_id, bob = unique("owner"), unique("bob")
    owner = admin_server.client(owner_id)
    room_id = await private_room(owner)
    admin = admin_server.client(ROOT_ADMIN)
    # Not a member, yet reads it and its members and history.
    room = (await admin.execute(ROOM, id=room_id))["room"]
    assert room["members"] == [{"userId": owner_id, "role": "OWNER"}]
    assert [e["node"]["event"] for e in await _history(admin, room_id)] == ["room.created"]
    # A member's acts stay a member's.
    assert (await admin.error(SEND, room=room_id, text="hi")).code == "FORBIDDEN"
    # Everything the owner may do.
    assert (await admin.execute(UPDATE, id=room_id))["updateRoom"]["name"] == "Renamed"
    added = await admin.execute(ADD, room=room_id, user=bob, role="ADMIN")
    assert added["addMember"] == {"userId": bob, "role": "ADMIN"}
    changed = await admin.execute(SET_ROLE, room=room_id, user=bob, role="MEMBER")
    assert changed["setMemberRole"]["role"] == "MEMBER"
    # A room keeps its one owner: demoting them is refused, handing on is not.
    demote = await admin.error(SET_ROLE, room=room_id, user=owner_id, role="MEMBER")
    assert demote.code == "BAD_USER_INPUT"
    assert (await admin.execute(BAN, room=room_id, user=bob))["banMember"] is True
    assert (await admin.execute(UNBAN, room=room_id, user=bob))["unbanMember"] is True
    await admin.execute(ADD, room=room_id, user=bob, role="MEMBER")
    assert (await admin.execute(REMOVE, room=room_id, user=bob))["removeMember"] is True
    acts = [a["act"] for a in admin_acts(admin_server, room_id)]
    assert acts == [
        "room",
        "history",
        "updateRoom",
        "addMember",
        "setMemberRole",
        "setMemberRole",
        "banMember",
        "unbanMember",
        "addMember",
        "removeMember",
    ]
    assert {a["admin"] for a in admin_acts(admin_server, room_id)} == {ROOT_ADMIN}
    assert (await admin.execute(DELETE, id=room_id))["deleteRoom"] is True
    assert admin_acts(admin_server, room_id)[-1]["act"] == "deleteRoom"
    assert (await owner.execute(ROOM, id=room_id))["room"] is None


async def test_the_owner_acting_is_not_logged_as_an_admin_act(admin_server: LiveServer) -> None:
    owner = admin_server.client(unique("owner"))
    room_id = await private_room(owner)
    await owner.execute(UPDATE, id=room_id)
    await owner.execute(ADD, room=room_id, user=unique("bob"), role="MEMBER")
    assert admin_acts(admin_server, room_id) == []


async def test_admin_by_token_role_and_the_token_command(admin_server: LiveServer) -> None:
    owner = admin_server.client(unique("owner"))
    room_id = await private_room(owner)
    # Without the role, the same user sees nothing.
    plain = admin_server.client("ops-lead")
    assert (await plain.execute(ROOM, id=room_id))["room"] is None
    assert (await plain.error(UPDATE, id=room_id)).code == "NOT_FOUND"
    minted = subprocess.run(  # noqa: ASYNC221 - the CLI, as an operator runs it
        [
            sys.executable,
            str(ROOT / "server.py"),
            "token",
            "ops-lead",
            "--admin",
            "--config",
            str(admin_server.data_dir / "config.yaml"),
            "--data-dir",
            str(admin_server.data_dir),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert jwt.decode(minted, options={"verify_signature": False})["roles"] == ["admin"]
    admin = GraphQLClient(admin_server, minted)
    assert (await admin.execute(UPDATE, id=room_id))["updateRoom"]["name"] == "Renamed"
    assert admin_acts(admin_server, room_id)[-1] == {
        "admin": "ops-lead",
        "act": "updateRoom",
        "room": room_id,
    }


async def test_broadcast_reaches_subscribers_and_history(admin_server: LiveServer) -> None:
    member_id = unique("member")
    owner = admin_server.client(unique("owner"))
    room_id = await private_room(owner)
    await owner.execute(ADD, room=room_id, user=member_id, role="MEMBER")
    admin_id = unique("ops")
    admin_jwt = admin_token(admin_server, admin_id)
    async with (
        ws_connect(admin_server, admin_server.token(member_id)) as member_ws,
        # An admin by token over a WebSocket reads the private room live too.
        ws_connect(admin_server, admin_jwt) as admin_ws,
    ):
        seen_by_member = await member_ws.subscribe(ROOM_MESSAGES, room=room_id)
        seen_by_admin = await admin_ws.subscribe(ROOM_MESSAGES, room=room_id)
        await admin_server.wait_subscribers(2)
        sent = await GraphQLClient(admin_server, admin_jwt).execute(
            BROADCAST, room=room_id, data={"text": "maintenance at noon"}
        )
        message = sent["broadcastSystemMessage"]
        assert message["type"] == "SYSTEM"
        assert message["userId"] == "forge:system"
        assert message["event"] == "system.broadcast"
        assert message["data"] == {"text": "maintenance at noon"}
        expected = {k: message[k] for k in ("type", "event", "userId", "data")}
        assert (await seen_by_member.next())["roomMessages"] == expected
        assert (await seen_by_admin.next())["roomMessages"] == expected
        await member_ws.close()
        await admin_ws.close()
    assert (await _history(owner, room_id))[-1]["node"] == expected
    # The admin's reading of the private room was logged as theirs.
    assert {"admin": admin_id, "act": "roomMessages", "room": room_id} in admin_acts(
        admin_server, room_id
    )


async def test_broadcast_is_bounded_like_send_message(admin_server: LiveServer) -> None:
    owner = admin_server.client(unique("owner"))
    room_id = await private_room(owner)
    admin = admin_server.client(ROOT_ADMIN)
    too_big = await admin.error(BROADCAST, room=room_id, data={"text": "x" * 5000})
    assert too_big.code == "PAYLOAD_TOO_LARGE"
    missing = await admin.error(BROADCAST, room=unique("gone"), data={})
    assert missing.code == "NOT_FOUND"
    bad_id = await admin.error(BROADCAST, room="no spaces", data={})
    assert bad_id.code == "BAD_USER_INPUT"
    assert [e["node"]["event"] for e in await _history(owner, room_id)] == ["room.created"]


async def test_no_user_may_take_the_server_ids(admin_server: LiveServer) -> None:
    for reserved in ("forge:system", "forge:key:billing"):
        token = admin_token(admin_server, reserved, roles=["admin"])
        response = await GraphQLClient(admin_server, token).post("{ me }")
        assert response.status_code == 401
        assert "forge:" in response.json()["errors"][0]["message"]


# --- the server API -------------------------------------------------------------------


async def test_api_key_runs_admin_mutations_as_itself(admin_server: LiveServer) -> None:
    owner = admin_server.client(unique("owner"))
    room_id = await private_room(owner)
    service = ServiceClient(admin_server, BILLING_KEY)
    assert (await service.execute("{ me }"))["me"] == "forge:key:billing"
    sent = await service.execute(BROADCAST, room=room_id, data={"text": "invoice"})
    assert sent["broadcastSystemMessage"]["metadata"] == {"by": "forge:key:billing"}
    assert (await service.execute(UPDATE, id=room_id))["updateRoom"]["name"] == "Renamed"
    assert admin_acts(admin_server, room_id)[-1]["admin"] == "forge:key:billing"


async def test_api_key_acts_as_a_user_with_their_permissions_and_rate(
    admin_server: LiveServer,
) -> None:
    carol = unique("carol")
    owner = admin_server.client(unique("owner"))
    room_id = await private_room(owner)
    as_carol = ServiceClient(admin_server, BILLING_KEY, act_as=carol)
    assert (await as_carol.execute("{ me }"))["me"] == carol
    # Carol's permissions: not a member, so the private room is not there for her.
    assert (await as_carol.error(SEND, room=room_id, text="hi")).code == "NOT_FOUND"
    assert (await as_carol.error(BROADCAST, room=room_id, data={})).code == "FORBIDDEN"
    await owner.execute(ADD, room=room_id, user=carol, role="MEMBER")
    sent = await as_carol.execute(SEND, room=room_id, text="from billing")
    assert sent["sendMessage"]["userId"] == carol
    channel = unique("chan")
    await admin_server.client(carol).execute(
        'mutation($id: ID!) { createChannel(input: {id: $id, name: "c"}) { id } }', id=channel
    )
    assert (await as_carol.execute(PUBLISH, channel=channel))["publish"]["userId"] == carol
    # A user's own sends and a service's on their behalf share one rate (a
    # sliding second): of RATE + 1 sent at once, half each way, one is
    # refused; a fresh user per attempt starts with all of it.
    for _attempt in range(5):
        user = unique("dan")
        await owner.execute(ADD, room=room_id, user=user, role="MEMBER")
        own = admin_server.client(user)
        on_behalf = ServiceClient(admin_server, BILLING_KEY, act_as=user)
        headers = [own.headers, on_behalf.headers] * RATE
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            await http.get(f"{admin_server.url}/health")  # connected before the clock starts
            started = time.monotonic()
            responses = await asyncio.gather(
                *(
                    http.post(
                        f"{admin_server.url}/graphql",
                        json={"query": SEND, "variables": {"room": room_id, "text": "n"}},
                        headers=h,
                    )
                    for h in headers[: RATE + 1]
                )
            )
            elapsed = time.monotonic() - started
        if elapsed < 1.0:  # every send took its slot inside one window of the rate
            codes = sorted(
                (r.json().get("errors") or [{}])[0].get("extensions", {}).get("code", "OK")
                for r in responses
            )
            assert codes == ["OK"] * RATE + ["RATE_LIMITED"]
            return
    pytest.fail("could not send the rate's messages within one second")


async def test_api_key_refusals(admin_server: LiveServer) -> None:
    since = admin_server.log_size()
    unknown = ServiceClient(admin_server, "not-a-key-" + "x" * 40)
    response = await unknown.post("{ me }")
    assert response.status_code == 401
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    # A key limited to carol may not act as anyone else.
    audit = ServiceClient(admin_server, AUDIT_KEY, act_as="dave")
    response = await audit.post("{ me }")
    assert response.status_code == 403
    assert response.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert "audit" in response.json()["errors"][0]["message"]
    audit.act_as = "carol"  # the key given by its SHA-256 works
    assert (await audit.execute("{ me }"))["me"] == "carol"
    # Nobody acts as the server.
    audit_any = ServiceClient(admin_server, BILLING_KEY, act_as="forge:system")
    assert (await audit_any.post("{ me }")).status_code == 400
    # The act-as header with a user's token: 400, not silently ignored.
    with_jwt = GraphQLClient(admin_server, admin_server.token("erin"))
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        response = await http.post(
            f"{admin_server.url}/graphql",
            json={"query": "{ me }"},
            headers={**with_jwt.headers, "Forge-Act-As": "carol"},
        )
        assert response.status_code == 400
        assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        # API keys answer plain HTTP only: no event stream ...
        response = await http.post(
            f"{admin_server.url}/graphql",
            json={"query": "{ me }"},
            headers={"Authorization": f"Bearer {BILLING_KEY}", "Accept": "text/event-stream"},
        )
        assert response.status_code == 406
    # ... and no WebSocket.
    with pytest.raises((AssertionError, websockets.ConnectionClosed)):
        async with ws_connect(admin_server, BILLING_KEY):
            pass
    admin_server.assert_no_traceback(since)


async def test_a_revoked_key_is_refused(make_server: type[LiveServer], tmp_path: Path) -> None:
    key = "revoke-me-" + "r" * 40
    settings: dict[str, Any] = {**TEST_SETTINGS, "api_keys": [{"name": "old", "key": key}]}
    live = make_server(tmp_path / "revoke", settings).start()
    assert (await ServiceClient(live, key).execute("{ me }"))["me"] == "forge:key:old"
    live.stop()
    live.settings = {**TEST_SETTINGS, "api_keys": []}
    live.start()
    assert (await ServiceClient(live, key).post("{ me }")).status_code == 401


def test_no_key_is_ever_logged(admin_server: LiveServer) -> None:
    """Last in this module: every key has been used (and refused) by now."""
    log = admin_server.log()
    assert "admin act" in log  # the log is the one the tests above wrote
    for key in (*KEYS, "not-a-key-"):
        assert key not in log
        assert hashlib.sha256(key.encode()).hexdigest() not in log
    assert not re.search(r"k{40}|q{40}|z{40}", log)


async def test_admin_by_token_role_reads_a_private_room_over_sse(admin_server: LiveServer) -> None:
    # The role travels with the token on every transport, SSE included.
    owner = admin_server.client(unique("owner"))
    room_id = await private_room(owner)
    body = {"query": ROOM_MESSAGES, "variables": {"room": room_id}}
    outsider = admin_server.token(unique("outsider"))
    async with event_stream(admin_server, outsider, json=body) as events:
        refused = await events.expect("next")
        assert refused["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    admin = unique("ops")
    before = await asyncio.to_thread(admin_server.metric, "streaming_subscriptions_active")
    async with event_stream(admin_server, admin_token(admin_server, admin), json=body) as events:
        assert events.response.status_code == 200
        await admin_server.wait_metric("streaming_subscriptions_active", before + 1)
        await owner.execute(SEND, room=room_id, text="seen by the admin")
        received = await events.expect("next")
        assert received["data"]["roomMessages"]["data"] == {"text": "seen by the admin"}
    assert {"admin": admin, "act": "roomMessages", "room": room_id} in admin_acts(
        admin_server, room_id
    )
