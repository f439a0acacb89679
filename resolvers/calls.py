"""Calls: WebRTC signaling between the members of a room.

A participant is a session: one connection of a user, bound to it by
`joinCall` over a WebSocket or SSE stream, or by `callSignals(callId,
sessionId:)` for a client that sends its mutations over HTTP. A signal goes
to exactly one session: it is buffered for that session (backends/calls.py)
and published on the session's topic; the session's `callSignals`, on
whichever node, delivers it and acks it, so a session resumed within the
grace gets what it missed, once each, in order.

Only members of the room see, start, join or signal in its calls; losing
membership removes the participant (call_sessions.remove_lost_members) and
ends their subscriptions.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from backends import topics
from backends.calls import Call, CallChange, CallParticipant, CallSignal
from backends.errors import BackendError, LimitReached, Missing
from backends.events import CallEvent, SessionEvent
from backends.hub import RESYNC
from backends.records import RoomRole, utcnow
from resolvers.errors import BadUserInput, Forbidden, LimitExceeded, NotFound

from .call_sessions import publish_changes, track, untrack
from .event_rates import spend_event_budget
from .rooms import membership
from .services import Services, Viewer
from .stream_signals import LIVE, AccessChange, Signal, hub_stream
from .validation import check_payload_size, new_id, required_text

log = logging.getLogger(__name__)

# Ids a client names: bounded before any lookup.
_MAX_ID = 128


def _id(value: str, argument: str) -> str:
    return required_text(value, argument, max_length=_MAX_ID)


async def _member_call(services: Services, viewer: Viewer, call_id: str) -> Call:
    """The call, if the viewer is a member of its room; NOT_FOUND otherwise
    (an outsider learns nothing, not even that the call exists)."""
    services.require("rooms")
    call = await services.backends.calls.get(_id(call_id, "callId"))
    if call is None:
        raise NotFound(f"call {call_id!r} not found", callId=call_id)
    try:
        await membership(services, viewer, call.room_id)
    except (NotFound, Forbidden):
        raise NotFound(f"call {call_id!r} not found", callId=call_id) from None
    return call


def _live(call: Call) -> Call:
    if not call.live:
        raise BadUserInput(f"call {call.id!r} has ended", argument="callId", callId=call.id)
    return call


async def call_of(services: Services, viewer: Viewer, call_id: str) -> Call | None:
    """The `call(id)` query: None for a call that is unknown or not the viewer's to see."""
    try:
        return await _member_call(services, viewer, call_id)
    except NotFound:
        return None


async def calls_in(services: Services, viewer: Viewer, room_id: str) -> list[Call]:
    await membership(services, viewer, _id(room_id, "roomId"))
    return await services.backends.calls.live_in_room(room_id)


async def start_call(services: Services, viewer: Viewer, room_id: str, metadata: Any) -> Call:
    await membership(services, viewer, _id(room_id, "roomId"))
    check_payload_size(services.settings.max_message_size, "metadata", metadata)
    await spend_event_budget(services, viewer, "rooms")
    call = Call(
        id=new_id(),
        room_id=room_id,
        started_by=viewer.user_id,
        started_at=utcnow(),
        metadata=metadata,
    )
    await services.backends.calls.start(call)
    await services.backends.hub.publish(topics.room_calls(room_id), CallEvent("started", call))
    return call


async def join_call(
    services: Services, viewer: Viewer, call_id: str, session_id: str | None
) -> CallParticipant:
    """A new session for this connection, or (with `session_id`) one of the
    viewer's sessions resumed and bound to it."""
    call = _live(await _member_call(services, viewer, call_id))
    settings = services.settings
    now = time.time()
    # Unbound (mutations over HTTP): it lives until callSignals binds it.
    ttl = settings.presence_ttl.total_seconds()
    resume = session_id is not None
    wanted = CallParticipant(
        user_id=viewer.user_id,
        session_id=_id(session_id, "sessionId") if session_id is not None else new_id(),
        joined_at=utcnow(),
        conn_id=viewer.conn_id,
        expires_at=now + ttl,
    )
    try:
        participant = await services.backends.calls.join(
            call.id, wanted, max_participants=settings.max_call_participants, resume=resume
        )
    except LimitReached as exc:
        raise LimitExceeded(
            f"call {call.id!r} is full ({settings.max_call_participants} participants)",
            limit=settings.max_call_participants,
        ) from exc
    except Missing as exc:
        if resume:
            raise NotFound(str(exc), sessionId=session_id) from None
        raise BadUserInput(f"call {call.id!r} has ended", argument="callId") from None
    if viewer.conn_id is not None:
        track(services, viewer.conn_id, participant.session_id, call.id)
    if not resume:
        joined = await services.backends.calls.get(call.id) or call
        await services.backends.hub.publish(
            topics.room_calls(call.room_id), CallEvent("joined", joined, participant)
        )
    return participant


def _sessions_of(call: Call, viewer: Viewer, session_id: str | None) -> list[CallParticipant]:
    """The viewer's sessions meant: the one named, else the one on this
    connection, else (over HTTP) all of theirs in the call."""
    mine = [p for p in call.participants if p.user_id == viewer.user_id]
    if session_id is not None:
        return [p for p in mine if p.session_id == session_id]
    here = [p for p in mine if viewer.conn_id is not None and p.conn_id == viewer.conn_id]
    return here or ([] if viewer.conn_id is not None and len(mine) > 1 else mine)


async def leave_call(
    services: Services, viewer: Viewer, call_id: str, session_id: str | None
) -> bool:
    call = await _member_call(services, viewer, call_id)
    gone = {p.session_id for p in _sessions_of(call, viewer, session_id)}
    if not gone:
        return False
    changes = await services.backends.calls.remove(call.id, lambda p: p.session_id not in gone)
    for session in gone:
        untrack(services, session)
    await publish_changes(services, changes)
    return True


async def end_call(services: Services, viewer: Viewer, call_id: str) -> bool:
    """The starter, or a room ADMIN/OWNER (or a server admin), may end a call."""
    call = await _member_call(services, viewer, call_id)
    if call.started_by != viewer.user_id:
        await membership(services, viewer, call.room_id, at_least=RoomRole.ADMIN, act="endCall")
    ended = await services.backends.calls.end(call.id)
    if ended is None:
        return False
    for p in ended.participants:
        untrack(services, p.session_id)
    await publish_changes(services, [CallChange("ended", ended)])
    return True


async def send_signal(
    services: Services,
    viewer: Viewer,
    *,
    call_id: str,
    to_session_id: str,
    kind: str,
    payload: Any,
    from_session_id: str | None,
) -> bool:
    settings = services.settings
    check_payload_size(settings.max_signal_size, "payload", payload)
    call = _live(await _member_call(services, viewer, call_id))
    senders = _sessions_of(call, viewer, from_session_id and _id(from_session_id, "fromSessionId"))
    if len(senders) != 1:
        raise BadUserInput(
            "join the call first (or name your session in fromSessionId)",
            argument="fromSessionId",
        )
    target = call.participant(_id(to_session_id, "toSessionId"))
    if target is None:
        raise NotFound(f"session {to_session_id!r} is not in the call", toSessionId=to_session_id)
    await spend_event_budget(services, viewer, "signals")
    signal = CallSignal(call.id, viewer.user_id, senders[0].session_id, kind, payload)
    calls = services.backends.calls
    try:
        seq = await calls.push_signal(
            target.session_id, signal, max_buffered=settings.max_buffered_signals
        )
    except LimitReached as exc:
        raise LimitExceeded(
            f"session {to_session_id!r} has {settings.max_buffered_signals} signals undelivered",
            limit=settings.max_buffered_signals,
        ) from exc
    await services.backends.hub.publish(
        topics.call_session(target.session_id), SessionEvent(target.session_id, seq, signal)
    )
    return True


async def signal_session(
    services: Services, viewer: Viewer, call_id: str, session_id: str | None
) -> str:
    """The session whose signals a callSignals subscription reads: the one
    named (bound to this connection), or this connection's in the call."""
    call = await _member_call(services, viewer, call_id)
    sessions = _sessions_of(call, viewer, session_id and _id(session_id, "sessionId"))
    if len(sessions) != 1:
        raise NotFound("no session of this connection in the call", callId=call_id)
    session = sessions[0].session_id
    if viewer.conn_id is not None and sessions[0].conn_id != viewer.conn_id:
        ttl = services.settings.presence_ttl.total_seconds()
        if await services.backends.calls.bind(
            call.id, session, viewer.user_id, viewer.conn_id, ttl=ttl
        ):
            track(services, viewer.conn_id, session, call.id)
    return session


async def authorize_signals(
    services: Services, viewer: Viewer, call_id: str, session_id: str
) -> None:
    """NOT_FOUND unless the session is the viewer's and still in the call."""
    call = await _member_call(services, viewer, call_id)
    mine = call.participant(session_id)
    if mine is None or mine.user_id != viewer.user_id or not call.live:
        raise NotFound(f"session {session_id!r} is not in the call", sessionId=session_id)


class _Acks:
    """Acks a session's delivered signals off the delivery path, coalesced:
    one write drops everything up to the newest delivered, however many
    were delivered while the previous write ran."""

    def __init__(self, services: Services, session_id: str) -> None:
        self._calls = services.backends.calls
        self._session = session_id
        self._delivered = 0
        self._acked = 0
        self._task: asyncio.Task[None] | None = None

    def delivered(self, seq: int) -> None:
        self._delivered = seq
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while self._acked < self._delivered:
            seq = self._delivered
            try:
                await self._calls.ack(self._session, seq)
            except BackendError as exc:
                # Left in the buffer: a resumed session would get it again.
                log.warning("signals of %s not acked: %s", self._session, exc)
                return
            self._acked = seq

    async def flush(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)


async def signal_stream(
    services: Services, session_id: str
) -> AsyncGenerator[CallSignal | Signal, None]:
    """The session's signals: what waited in its buffer, then live ones, in
    order, each once; each acked once its reader took it."""
    calls = services.backends.calls
    acks = _Acks(services, session_id)
    last = 0
    try:
        async with services.backends.hub.subscribe(topics.call_session(session_id)) as live:
            yield LIVE
            for seq, signal in await calls.pending(session_id):
                yield signal
                last = seq
                acks.delivered(seq)
            async for item in live:
                if isinstance(item, SessionEvent):
                    if item.signal is None:
                        yield AccessChange(None)
                    elif item.seq > last:
                        yield item.signal
                        last = item.seq
                        acks.delivered(item.seq)
                elif item is RESYNC:
                    # Missed events in an outage: what is still buffered, in order.
                    for seq, signal in await calls.pending(session_id):
                        if seq > last:
                            yield signal
                            last = seq
                            acks.delivered(seq)
                    yield AccessChange(None)
    finally:
        # The acks of what was delivered land before the stream is over, so
        # a session resumed right after gets none of it again.
        await acks.flush()


async def authorize_call_events(services: Services, viewer: Viewer, room_id: str) -> None:
    await membership(services, viewer, _id(room_id, "roomId"))


def call_event_stream(services: Services, room_id: str) -> AsyncGenerator[CallEvent | Signal, None]:
    return hub_stream(
        services.backends.hub,
        topics.room_calls(room_id),
        lambda item: item if isinstance(item, CallEvent) else None,
    )


@dataclass(frozen=True, slots=True)
class IceServer:
    urls: list[str]
    username: str | None = None
    credential: str | None = None
    expires_at: datetime | None = None


def turn_credential(secret: str, user_id: str, expires: int) -> tuple[str, str]:
    """coturn's use-auth-secret (TURN REST API) form: username
    `<expiry unix time>:<user>`, credential base64(HMAC-SHA1(secret, username))."""
    username = f"{expires}:{user_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


async def ice_servers(services: Services, viewer: Viewer) -> list[IceServer]:
    """STUN for anyone signed in; TURN (a relay: never an open one) only for
    members of a room with a live call."""
    settings = services.settings
    servers = [IceServer(urls=list(settings.stun_urls))] if settings.stun_urls else []
    if not settings.turn_urls or settings.turn_secret is None:
        return servers
    in_call = False
    for room in await services.backends.rooms.list_joined(viewer.user_id):
        if await services.backends.calls.live_in_room(room.id):
            in_call = True
            break
    if in_call:
        expires = int(time.time() + settings.turn_credential_ttl.total_seconds())
        username, credential = turn_credential(
            settings.turn_secret.get_secret_value(), viewer.user_id, expires
        )
        servers.append(
            IceServer(
                urls=list(settings.turn_urls),
                username=username,
                credential=credential,
                expires_at=datetime.fromtimestamp(expires, UTC),
            )
        )
    return servers
