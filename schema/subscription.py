from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry

from resolvers import channels, messages, presence, typing_indicators

from .context import GraphInfo
from .types import ChannelFilter, Message, Presence, TypingEvent


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="MESSAGE, SYSTEM, JOIN and LEAVE messages of a room. With `after`, "
        "first replays what followed that cursor, then goes live: no gap, no duplicate."
    )
    async def room_messages(
        self,
        info: GraphInfo,
        room_id: strawberry.ID,
        after: str | None = None,
        thread_id: strawberry.ID | None = None,
    ) -> AsyncGenerator[Message, None]:
        ctx = info.context
        async for m in messages.room_stream(
            ctx.services, ctx.viewer, room_id, after=after, thread_id=thread_id
        ):
            yield Message.of(m)

    @strawberry.subscription
    async def typing(
        self, info: GraphInfo, room_id: strawberry.ID
    ) -> AsyncGenerator[TypingEvent, None]:
        ctx = info.context
        async for event in typing_indicators.typing_stream(ctx.services, ctx.viewer, room_id):
            yield TypingEvent.of(event)

    @strawberry.subscription(description="Changes for a room's members, or for the given users.")
    async def presence(
        self,
        info: GraphInfo,
        room_id: strawberry.ID | None = None,
        user_ids: list[strawberry.ID] | None = None,
    ) -> AsyncGenerator[Presence, None]:
        ctx = info.context
        ids = None if user_ids is None else [str(u) for u in user_ids]
        async for entry in presence.presence_stream(ctx.services, ctx.viewer, room_id, ids):
            yield Presence.of(entry)

    @strawberry.subscription
    async def channel_messages(
        self, info: GraphInfo, channel_id: strawberry.ID, filter: ChannelFilter | None = None
    ) -> AsyncGenerator[Message, None]:
        ctx = info.context
        message_filter = channels.MessageFilter()
        if filter is not None:
            message_filter = channels.MessageFilter(
                events=None if filter.events is None else frozenset(filter.events),
                user_ids=None if filter.user_ids is None else frozenset(filter.user_ids),
                metadata=_metadata_filter(filter.metadata),
            )
        async for m in channels.channel_stream(
            ctx.services, ctx.viewer, channel_id, message_filter
        ):
            yield Message.of(m)


def _metadata_filter(value: object) -> dict[str, object] | None:
    from serving.errors import BadUserInput

    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadUserInput("filter.metadata must be an object", argument="filter")
    return value
