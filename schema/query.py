from __future__ import annotations

from datetime import datetime

import strawberry

from backends.search_query import SearchOrder
from resolvers import (
    admin_rooms,
    calls,
    channels,
    cluster,
    messages,
    presence,
    rooms,
    search,
    typing_indicators,
)
from resolvers.errors import NotFound

from .call_types import Call, IceServer
from .cluster_types import AdminRoomPage, Cluster, ConnectionPage
from .context import GraphInfo
from .types import (
    Channel,
    MessageConnection,
    MessageSearchConnection,
    Presence,
    Room,
)


@strawberry.type
class Query:
    @strawberry.field(description="The authenticated user's id.")
    def me(self, info: GraphInfo) -> strawberry.ID:
        return strawberry.ID(info.context.viewer.user_id)

    @strawberry.field(description="A room the viewer may see; null if none.")
    async def room(self, info: GraphInfo, id: strawberry.ID) -> Room | None:
        ctx = info.context
        try:
            return Room(record=await rooms.readable_room(ctx.services, ctx.viewer, id, act="room"))
        except NotFound:
            return None

    @strawberry.field(description="Public rooms and the viewer's private ones; or only joined.")
    async def rooms(self, info: GraphInfo, mine: bool | None = False) -> list[Room]:
        ctx = info.context
        return [
            Room(record=r)
            for r in await rooms.list_rooms(ctx.services, ctx.viewer, mine=bool(mine))
        ]

    @strawberry.field(description="Room history, paged by cursor both ways (Relay).")
    async def history(
        self,
        info: GraphInfo,
        room_id: strawberry.ID,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        thread_id: strawberry.ID | None = None,
        user_ids: list[strawberry.ID] | None = None,
        events: list[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> MessageConnection:
        ctx = info.context
        where = messages.HistoryFilter(
            user_ids=None if user_ids is None else frozenset(user_ids),
            events=None if events is None else frozenset(events),
            since=since,
            until=until,
        )
        with ctx.services.metrics.history_seconds.time():
            page = await messages.history(
                ctx.services,
                ctx.viewer,
                room_id,
                first=first,
                after=after,
                last=last,
                before=before,
                thread_id=thread_id,
                where=where,
            )
            return MessageConnection.of(page)

    @strawberry.field(
        description="Search the history of the rooms the viewer may read (README: Search)."
    )
    async def search_messages(
        self,
        info: GraphInfo,
        query: str,
        room_id: strawberry.ID | None = None,
        user_id: strawberry.ID | None = None,
        event: str | None = None,
        thread_id: strawberry.ID | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        first: int | None = 20,
        after: str | None = None,
        order_by: SearchOrder = SearchOrder.NEWEST,
    ) -> MessageSearchConnection:
        ctx = info.context
        with ctx.services.metrics.search_seconds.time():
            results = await search.search_messages(
                ctx.services,
                ctx.viewer,
                query=query,
                room_id=room_id,
                user_id=user_id,
                event=event,
                thread_id=thread_id,
                since=since,
                until=until,
                first=first,
                after=after or None,
                order=order_by,
            )
            return MessageSearchConnection.of(results)

    @strawberry.field
    async def channel(self, info: GraphInfo, id: strawberry.ID) -> Channel | None:
        ctx = info.context
        try:
            return Channel.of(await channels.visible_channel(ctx.services, ctx.viewer, id))
        except NotFound:
            return None

    @strawberry.field
    async def channels(self, info: GraphInfo) -> list[Channel]:
        ctx = info.context
        return [Channel.of(c) for c in await channels.list_channels(ctx.services, ctx.viewer)]

    @strawberry.field(description="Current presence of the users ever seen, in the order asked.")
    async def presence(self, info: GraphInfo, user_ids: list[strawberry.ID]) -> list[Presence]:
        ctx = info.context
        entries = await presence.presence_of(ctx.services, ctx.viewer, list(user_ids))
        return [Presence.of(p) for p in entries]

    @strawberry.field
    async def room_presence(self, info: GraphInfo, room_id: strawberry.ID) -> list[Presence]:
        ctx = info.context
        entries = await presence.room_presence(ctx.services, ctx.viewer, room_id)
        return [Presence.of(p) for p in entries]

    @strawberry.field
    async def typing_users(self, info: GraphInfo, room_id: strawberry.ID) -> list[strawberry.ID]:
        ctx = info.context
        users = await typing_indicators.typing_users(ctx.services, ctx.viewer, room_id)
        return [strawberry.ID(u) for u in users]

    @strawberry.field(description="Server admins only: every node of the cluster and totals.")
    async def cluster(self, info: GraphInfo) -> Cluster:
        ctx = info.context
        return Cluster.of(await cluster.cluster_view(ctx.services, ctx.viewer))

    @strawberry.field(
        description="Server admins only: the client connections of every node, oldest "
        "first; `after` is a page's endCursor."
    )
    async def connections(
        self,
        info: GraphInfo,
        user_id: strawberry.ID | None = None,
        node_id: strawberry.ID | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> ConnectionPage:
        ctx = info.context
        page = await cluster.list_connections(
            ctx.services,
            ctx.viewer,
            user_id=user_id,
            node_id=node_id,
            first=first,
            after=after or None,
        )
        return ConnectionPage.of(page)

    @strawberry.field(description="A call in a room the viewer is a member of; null if none.")
    async def call(self, info: GraphInfo, id: strawberry.ID) -> Call | None:
        ctx = info.context
        found = await calls.call_of(ctx.services, ctx.viewer, id)
        return None if found is None else Call.of(found)

    @strawberry.field(description="The live calls of a room (members only).")
    async def calls(self, info: GraphInfo, room_id: strawberry.ID) -> list[Call]:
        ctx = info.context
        return [Call.of(c) for c in await calls.calls_in(ctx.services, ctx.viewer, room_id)]

    @strawberry.field(
        description="STUN servers; TURN credentials (coturn use-auth-secret) only for "
        "members of a room with a live call."
    )
    async def ice_servers(self, info: GraphInfo) -> list[IceServer]:
        ctx = info.context
        return [IceServer.of(s) for s in await calls.ice_servers(ctx.services, ctx.viewer)]

    @strawberry.field(
        description="Server admins only: every room, private ones too, a page at a time "
        "(`after` is a page's endCursor); `idPrefix` keeps the rooms whose id starts with it "
        "(a page may then be short while hasNextPage is true)."
    )
    async def admin_rooms(
        self,
        info: GraphInfo,
        first: int | None = None,
        after: str | None = None,
        id_prefix: strawberry.ID | None = None,
    ) -> AdminRoomPage:
        ctx = info.context
        listing = await admin_rooms.list_all_rooms(
            ctx.services, ctx.viewer, first=first, after=after or None, id_prefix=id_prefix
        )
        return AdminRoomPage.of(listing)
