"""The per-request (or per-WebSocket-connection) GraphQL context."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from strawberry.types import Info

from resolvers.errors import Unauthenticated
from resolvers.resume import NO_RESUME, ResumeMap
from resolvers.services import Services, Viewer
from resolvers.subscriptions import SharedHooks


@dataclass(slots=True)
class EventIds:
    """Each event's id, told beside its payload rather than read from it: the
    roomMessages resolver notes a message's cursor as it yields the message,
    and whoever reads the execution takes it with the result made of that
    message (an SSE `id:` line). Executions yield one result per item, in
    order, so the noted id is the next result's; `take` clears it, so a result
    made of no message (an error) has none."""

    _current: str | None = None

    def note(self, event_id: str) -> None:
        self._current = event_id

    def take(self) -> str | None:
        event_id, self._current = self._current, None
        return event_id


@dataclass
class Context:
    services: Services
    user_id: str | None = None
    conn_id: str | None = None
    # Set by Strawberry from the WebSocket connection_init payload.
    connection_params: dict[str, Any] | None = field(default=None)
    websocket: Any = None
    # The connection_init payload's resume map (resolvers/resume.py): where
    # this connection's roomMessages subscriptions pick up.
    resume: ResumeMap = NO_RESUME
    # Set only for a shared execution, which has no viewer: it reads the
    # viewer-independent stream and authorizes its subscribers itself.
    shared: SharedHooks | None = None
    # Where each event's id is noted, for a reader that sends ids (SSE, a
    # shared execution); None: nobody asks.
    event_ids: EventIds | None = None
    # When the token that opened this WebSocket is refused (epoch seconds):
    # the connection ends then (its connection's timer, transport/connection.py).
    session_ends_at: float | None = None
    # The credentials name a server admin (an admin token or API key); the
    # admin_users setting is consulted besides (Services.viewer).
    admin: bool = False
    # The `iat` of the token that opened this WebSocket: checked again once
    # the connection is registered (transport/ws/handlers.py, connection_init).
    token_issued_at: float | None = None
    # A plain HTTP request: one result, no stream to send a subscription's
    # events down (schema/plain_http.py refuses one).
    plain_http: bool = False

    @classmethod
    def for_shared_stream(cls, services: Services, hooks: SharedHooks) -> Context:
        """The context of a shared subscription's one execution."""
        return cls(services=services, shared=hooks, event_ids=EventIds())

    @property
    def viewer(self) -> Viewer:
        if self.user_id is None:
            raise Unauthenticated("authentication required")
        return self.services.viewer(self.user_id, self.conn_id, admin=self.admin)


GraphInfo = Info[Context, None]
