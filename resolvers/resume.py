"""The resume map: where a reconnecting client's roomMessages subscriptions
pick up, sent once per WebSocket connection in its `connection_init` payload.

Stock clients (graphql-ws, Apollo, urql) resubscribe after a reconnect with
the variables they started with, so `after` alone would replay too much or
nothing. Only the client knows what it received: it sends, on every connect,

    "resume": {"version": 1, "roomMessages": [
        {"roomId": "<id>", "threadId": "<id>" (optional), "after": "<cursor>"}, ...]}

and a roomMessages subscription on that connection with the same roomId and
threadId (none for none) starts after that cursor instead of its own `after`,
unless its own is later in the same epoch. Over SSE, a request's
`Last-Event-ID` (an EventSource resends its first request with the id of the
last event it saw, a room message's cursor) replaces the `after` of its
roomMessages subscription, whatever its own. Channel messages are not stored,
so only roomMessages resume. The README ("Resuming after a reconnect") is the
public description; a change of shape gets a new version. The payload is
read and bounded at the edge, in schema/resume_map.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from resolvers.errors import BadUserInput

from .cursors import Cursor, parse_cursor


@dataclass(frozen=True, slots=True)
class ResumeMap:
    """Cursors by (roomId, threadId), as the client last received them."""

    room_messages: Mapping[tuple[str, str | None], Cursor] = field(default_factory=dict)
    # SSE's Last-Event-ID, as the client sent it: a malformed one is the
    # `after` argument's error, as if the client had sent it there.
    last_event_id: str | None = None

    def after(self, room_id: str, thread_id: str | None, after: str | None) -> str | None:
        """The `after` a roomMessages subscription starts from on this connection."""
        if self.last_event_id is not None:
            return self.last_event_id
        resumed = self.room_messages.get((room_id, thread_id))
        if resumed is None:
            return after
        if after is not None:
            # A malformed `after` stays the subscription's own, for its own error.
            try:
                own = parse_cursor(after, argument="after")
            except BadUserInput:
                return after
            if own.epoch == resumed.epoch and own.offset >= resumed.offset:
                return after
        return str(resumed)


NO_RESUME = ResumeMap()
