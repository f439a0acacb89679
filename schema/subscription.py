"""The subscription fields: each reads its entry in resolvers/subscriptions.py."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, cast

import strawberry

from backends import calls, events, records
from resolvers import calls as call_resolvers
from resolvers import channels, cluster, subscriptions
from resolvers.messages import cursor_of

from .call_types import CallEvent, Signal
from .cluster_types import Cluster
from .context import GraphInfo
from .types import ChannelFilter, Message, Presence, TypingEvent


def _items(info: GraphInfo, field: str, args: dict[str, Any]) -> AsyncGenerator[object, None]:
    """The viewer's authorized stream; in a shared execution, the stream its
    subscribers were each authorized for (transport/shared.py)."""
    ctx = info.context
    if ctx.shared is not None:
        return subscriptions.shared_stream(ctx.services, field, args, ctx.shared)
    # A shared execution is never resumed: a resumed subscription runs alone.
    resumed = subscriptions.FIELDS[field].resumed(args, ctx.resume)
    return subscriptions.authorized_stream(ctx.services, ctx.viewer, field, resumed)


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="MESSAGE, SYSTEM, JOIN and LEAVE messages of a room. With `after`, "
        "first replays what followed that cursor, then goes live: no gap, no duplicate. "
        "Over WebSockets a resume map in `connection_init` may move `after` forward "
        "(README: Resuming after a reconnect)."
    )
    async def room_messages(
        self,
        info: GraphInfo,
        room_id: strawberry.ID,
        after: str | None = None,
        thread_id: strawberry.ID | None = None,
    ) -> AsyncGenerator[Message, None]:
        args = {"roomId": room_id, "after": after, "threadId": thread_id}
        event_ids = info.context.event_ids
        async with aclosing(_items(info, "roomMessages", args)) as items:
            async for m in items:
                message = cast(records.Message, m)
                if event_ids is not None:
                    # The SSE id, whether or not the client selected `cursor`.
                    event_ids.note(cursor_of(message))
                yield Message.of(message)

    @strawberry.subscription
    async def typing(
        self, info: GraphInfo, room_id: strawberry.ID
    ) -> AsyncGenerator[TypingEvent, None]:
        async with aclosing(_items(info, "typing", {"roomId": room_id})) as items:
            async for event in items:
                yield TypingEvent.of(cast(events.TypingEvent, event))

    @strawberry.subscription(description="Changes for a room's members, or for the given users.")
    async def presence(
        self,
        info: GraphInfo,
        room_id: strawberry.ID | None = None,
        user_ids: list[strawberry.ID] | None = None,
    ) -> AsyncGenerator[Presence, None]:
        ids = None if user_ids is None else [str(u) for u in user_ids]
        async with aclosing(_items(info, "presence", {"roomId": room_id, "userIds": ids})) as items:
            async for entry in items:
                yield Presence.of(cast(records.PresenceEntry, entry))

    @strawberry.subscription
    async def channel_messages(
        self, info: GraphInfo, channel_id: strawberry.ID, filter: ChannelFilter | None = None
    ) -> AsyncGenerator[Message, None]:
        message_filter = channels.MessageFilter()
        if filter is not None:
            message_filter = channels.MessageFilter(
                events=None if filter.events is None else frozenset(filter.events),
                user_ids=None if filter.user_ids is None else frozenset(filter.user_ids),
                metadata=_metadata_filter(filter.metadata),
            )
        args = {"channelId": channel_id, "filter": message_filter}
        async with aclosing(_items(info, "channelMessages", args)) as items:
            async for m in items:
                yield Message.of(cast(records.Message, m))

    @strawberry.subscription(
        description="Server admins only: Query.cluster now and every `intervalMs` (500 to 60000)."
    )
    async def cluster_stats(
        self, info: GraphInfo, interval_ms: int | None = 2000
    ) -> AsyncGenerator[Cluster, None]:
        args = {"intervalMs": interval_ms}
        async with aclosing(_items(info, "clusterStats", args)) as views:
            async for view in views:
                yield Cluster.of(cast(cluster.ClusterView, view))

    @strawberry.subscription(
        description="The signals addressed to this connection's session in the call (or to "
        "`sessionId`, which this binds: for clients sending mutations over HTTP)."
    )
    async def call_signals(
        self, info: GraphInfo, call_id: strawberry.ID, session_id: strawberry.ID | None = None
    ) -> AsyncGenerator[Signal, None]:
        ctx = info.context
        session = await call_resolvers.signal_session(ctx.services, ctx.viewer, call_id, session_id)
        args = {"callId": call_id, "sessionId": session}
        async with aclosing(_items(info, "callSignals", args)) as items:
            async for s in items:
                yield Signal.of(cast(calls.CallSignal, s))

    @strawberry.subscription(description="Calls started, joined, left and ended in a room.")
    async def call_events(
        self, info: GraphInfo, room_id: strawberry.ID
    ) -> AsyncGenerator[CallEvent, None]:
        async with aclosing(_items(info, "callEvents", {"roomId": room_id})) as items:
            async for e in items:
                yield CallEvent.of(cast(events.CallEvent, e))


def _metadata_filter(value: object) -> dict[str, object] | None:
    from resolvers.errors import BadUserInput

    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadUserInput("filter.metadata must be an object", argument="filter")
    return value
