"""What travels through the fan-out hub, and how it is encoded.

Every backend, memory included, moves events as JSON text through the same
`encode_hub_event`/`decode_hub_event` pair, so a serialization bug cannot
hide behind an in-process shortcut.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from .calls import (
    Call,
    CallParticipant,
    CallSignal,
    call_from_dict,
    call_to_dict,
    participant_from_dict,
    participant_to_dict,
    signal_from_dict,
    signal_to_dict,
)
from .codecs import message_from_dict, message_to_dict
from .records import Message, PresenceEntry, Status


@dataclass(frozen=True, slots=True)
class MessageEvent:
    message: Message


@dataclass(frozen=True, slots=True)
class TypingEvent:
    room_id: str
    user_id: str
    is_typing: bool
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    entry: PresenceEntry


@dataclass(frozen=True, slots=True)
class AccessEvent:
    """A room or channel changed who may read it: live readers re-check.

    `user_id` is the user who lost access, or None when the room or channel
    itself is gone.
    """

    target_id: str
    user_id: str | None


@dataclass(frozen=True, slots=True)
class ClusterEvent:
    """A request from one node to every node, or a node's reply to it
    (resolvers/cluster.py says which kinds there are)."""

    kind: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CallEvent:
    """A call started, was joined or left, or ended (`type`)."""

    type: str
    call: Call
    participant: CallParticipant | None = None


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """A signal for one call session, with its sequence number in the
    session's buffer; or, with `signal` None, the session was removed."""

    session_id: str
    seq: int
    signal: CallSignal | None


Event = (
    MessageEvent
    | TypingEvent
    | PresenceEvent
    | AccessEvent
    | ClusterEvent
    | CallEvent
    | SessionEvent
)


def _optional_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def encode_hub_event(event: Event) -> str:
    body: dict[str, Any]
    match event:
        case MessageEvent(message=m):
            body = {"t": "message", "message": message_to_dict(m)}
        case TypingEvent():
            body = {
                "t": "typing",
                "room_id": event.room_id,
                "user_id": event.user_id,
                "is_typing": event.is_typing,
                "expires_at": event.expires_at.isoformat() if event.expires_at else None,
            }
        case PresenceEvent(entry=e):
            body = {
                "t": "presence",
                "user_id": e.user_id,
                "status": e.status.value,
                "status_text": e.status_text,
                "last_seen": e.last_seen.isoformat(),
            }
        case AccessEvent():
            body = {"t": "access", "target_id": event.target_id, "user_id": event.user_id}
        case ClusterEvent():
            body = {"t": "cluster", "kind": event.kind, "body": event.body}
        case CallEvent(participant=p):
            body = {
                "t": "call",
                "type": event.type,
                "call": call_to_dict(event.call),
                "participant": None if p is None else participant_to_dict(p),
            }
        case SessionEvent(signal=signal):
            body = {
                "t": "session",
                "session_id": event.session_id,
                "seq": event.seq,
                "signal": None if signal is None else signal_to_dict(signal),
            }
    return orjson.dumps(body).decode()


def decode_hub_event(raw: str | bytes) -> Event:
    """Decode what `encode_hub_event` made; ValueError on anything else."""
    try:
        body = orjson.loads(raw)
        match body.get("t"):
            case "message":
                return MessageEvent(message_from_dict(body["message"]))
            case "typing":
                return TypingEvent(
                    room_id=body["room_id"],
                    user_id=body["user_id"],
                    is_typing=body["is_typing"],
                    expires_at=_optional_time(body["expires_at"]),
                )
            case "presence":
                return PresenceEvent(
                    PresenceEntry(
                        user_id=body["user_id"],
                        status=Status(body["status"]),
                        status_text=body["status_text"],
                        last_seen=datetime.fromisoformat(body["last_seen"]),
                    )
                )
            case "access":
                return AccessEvent(target_id=body["target_id"], user_id=body["user_id"])
            case "cluster" if isinstance(body["body"], dict):
                return ClusterEvent(kind=str(body["kind"]), body=body["body"])
            case "call":
                p = body["participant"]
                return CallEvent(
                    type=body["type"],
                    call=call_from_dict(body["call"]),
                    participant=None if p is None else participant_from_dict(p),
                )
            case "session":
                s = body["signal"]
                return SessionEvent(
                    session_id=body["session_id"],
                    seq=body["seq"],
                    signal=None if s is None else signal_from_dict(s),
                )
    except (AttributeError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"undecodable event: {exc}") from exc
    raise ValueError(f"unknown event type {body.get('t')!r}")
