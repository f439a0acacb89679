"""The GraphQL types of calls (WebRTC signaling): the public contract of
issue 16. Add, never rename."""

from __future__ import annotations

import enum
from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from backends import calls, events
from resolvers import calls as call_resolvers


@strawberry.enum
class SignalKind(enum.Enum):
    OFFER = "OFFER"
    ANSWER = "ANSWER"
    ICE_CANDIDATE = "ICE_CANDIDATE"
    RENEGOTIATE = "RENEGOTIATE"
    HANGUP = "HANGUP"


@strawberry.type
class CallParticipant:
    user_id: strawberry.ID
    session_id: strawberry.ID
    joined_at: datetime

    @classmethod
    def of(cls, p: calls.CallParticipant) -> CallParticipant:
        return cls(
            user_id=strawberry.ID(p.user_id),
            session_id=strawberry.ID(p.session_id),
            joined_at=p.joined_at,
        )


@strawberry.type
class Call:
    id: strawberry.ID
    room_id: strawberry.ID
    started_by: strawberry.ID
    started_at: datetime
    ended_at: datetime | None
    participants: list[CallParticipant]
    metadata: JSON | None

    @classmethod
    def of(cls, c: calls.Call) -> Call:
        return cls(
            id=strawberry.ID(c.id),
            room_id=strawberry.ID(c.room_id),
            started_by=strawberry.ID(c.started_by),
            started_at=c.started_at,
            ended_at=c.ended_at,
            participants=[CallParticipant.of(p) for p in c.participants],
            metadata=c.metadata,
        )


@strawberry.type
class Signal:
    call_id: strawberry.ID
    from_user_id: strawberry.ID
    from_session_id: strawberry.ID
    kind: SignalKind
    payload: JSON

    @classmethod
    def of(cls, s: calls.CallSignal) -> Signal:
        return cls(
            call_id=strawberry.ID(s.call_id),
            from_user_id=strawberry.ID(s.from_user_id),
            from_session_id=strawberry.ID(s.from_session_id),
            kind=SignalKind(s.kind),
            payload=s.payload,
        )


@strawberry.type
class CallEvent:
    type: str = strawberry.field(description="started, joined, left or ended")
    call: Call
    participant: CallParticipant | None

    @classmethod
    def of(cls, e: events.CallEvent) -> CallEvent:
        return cls(
            type=e.type,
            call=Call.of(e.call),
            participant=None if e.participant is None else CallParticipant.of(e.participant),
        )


@strawberry.type
class IceServer:
    urls: list[str]
    username: str | None
    credential: str | None
    expires_at: datetime | None

    @classmethod
    def of(cls, s: call_resolvers.IceServer) -> IceServer:
        return cls(
            urls=s.urls, username=s.username, credential=s.credential, expires_at=s.expires_at
        )


@strawberry.input
class SendSignalInput:
    call_id: strawberry.ID
    to_session_id: strawberry.ID
    kind: SignalKind
    payload: JSON
    from_session_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="Your session sending it; needed only over HTTP when you have several.",
    )
