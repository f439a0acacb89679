"""GraphQL object types, enums and inputs: the public contract.

Names are what clients generate code from: add, never rename.
"""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from backends import records, search_query
from backends.events import TypingEvent as TypingRecord
from resolvers import rooms as room_resolvers
from resolvers.messages import MessagePage, cursor_of
from resolvers.search import SearchResults

from .context import GraphInfo

# The records' enums, registered under their GraphQL names.
MessageType = strawberry.enum(records.MessageKind, name="MessageType")
RoomRole = strawberry.enum(records.RoomRole, name="RoomRole")
PresenceStatus = strawberry.enum(records.Status, name="PresenceStatus")
SearchOrder = strawberry.enum(search_query.SearchOrder, name="SearchOrder")


@strawberry.type
class Message:
    id: strawberry.ID
    type: records.MessageKind
    event: str | None
    room_id: strawberry.ID | None
    channel_id: strawberry.ID | None
    user_id: strawberry.ID
    data: JSON | None
    metadata: JSON | None
    timestamp: datetime
    thread_id: strawberry.ID | None
    cursor: str = strawberry.field(description="Room history position; pass as `after`.")

    @classmethod
    def of(cls, m: records.Message) -> Message:
        return cls(
            id=strawberry.ID(m.id),
            type=m.kind,
            event=m.event,
            room_id=_id(m.room_id),
            channel_id=_id(m.channel_id),
            user_id=strawberry.ID(m.user_id),
            data=m.data,
            metadata=m.metadata,
            timestamp=m.timestamp,
            thread_id=_id(m.thread_id),
            cursor=cursor_of(m),
        )


def _id(value: str | None) -> strawberry.ID | None:
    return None if value is None else strawberry.ID(value)


@strawberry.type
class RoomMember:
    user_id: strawberry.ID
    role: records.RoomRole
    joined_at: datetime

    @classmethod
    def of(cls, m: records.RoomMember) -> RoomMember:
        return cls(user_id=strawberry.ID(m.user_id), role=m.role, joined_at=m.joined_at)


@strawberry.type
class Room:
    record: strawberry.Private[records.Room]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(self.record.id)

    @strawberry.field
    def name(self) -> str:
        return self.record.name

    @strawberry.field
    def description(self) -> str | None:
        return self.record.description

    @strawberry.field
    def owner(self) -> strawberry.ID:
        return strawberry.ID(self.record.owner)

    @strawberry.field
    def is_private(self) -> bool:
        return self.record.is_private

    @strawberry.field
    def metadata(self) -> JSON | None:
        metadata: JSON | None = self.record.metadata
        return metadata

    @strawberry.field
    def created_at(self) -> datetime:
        return self.record.created_at

    @strawberry.field
    async def member_count(self, info: GraphInfo) -> int:
        return await info.context.services.backends.rooms.member_count(self.record.id)

    @strawberry.field
    async def members(self, info: GraphInfo) -> list[RoomMember]:
        members = await info.context.services.backends.rooms.members(self.record.id)
        return [RoomMember.of(m) for m in members]

    @strawberry.field(description="The viewer's role, null when not a member.")
    async def my_role(self, info: GraphInfo) -> records.RoomRole | None:
        ctx = info.context
        return await room_resolvers.my_role(ctx.services, ctx.viewer, self.record.id)


@strawberry.type
class Channel:
    id: strawberry.ID
    name: str
    description: str | None
    is_private: bool
    created_by: strawberry.ID
    created_at: datetime

    @classmethod
    def of(cls, c: records.Channel) -> Channel:
        return cls(
            id=strawberry.ID(c.id),
            name=c.name,
            description=c.description,
            is_private=c.is_private,
            created_by=strawberry.ID(c.created_by),
            created_at=c.created_at,
        )


@strawberry.type
class Presence:
    user_id: strawberry.ID
    status: records.Status
    status_text: str | None
    last_seen: datetime

    @classmethod
    def of(cls, p: records.PresenceEntry) -> Presence:
        return cls(
            user_id=strawberry.ID(p.user_id),
            status=p.status,
            status_text=p.status_text,
            last_seen=p.last_seen,
        )


@strawberry.type
class TypingEvent:
    room_id: strawberry.ID
    user_id: strawberry.ID
    is_typing: bool
    expires_at: datetime | None

    @classmethod
    def of(cls, t: TypingRecord) -> TypingEvent:
        return cls(
            room_id=strawberry.ID(t.room_id),
            user_id=strawberry.ID(t.user_id),
            is_typing=t.is_typing,
            expires_at=t.expires_at,
        )


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class MessageEdge:
    cursor: str
    node: Message


@strawberry.type
class MessageConnection:
    edges: list[MessageEdge]
    page_info: PageInfo

    @classmethod
    def of(cls, page: MessagePage) -> MessageConnection:
        edges = [MessageEdge(cursor=cursor_of(m), node=Message.of(m)) for m in page.messages]
        start = edges[0].cursor if edges else None
        end = edges[-1].cursor if edges else None
        if page.resume is not None:
            # A filtered page that stopped scanning: continue from where it stopped.
            if page.backwards:
                start = cursor_of(page.resume)
            else:
                end = cursor_of(page.resume)
        return cls(
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next_page,
                has_previous_page=page.has_previous_page,
                start_cursor=start,
                end_cursor=end,
            ),
        )


@strawberry.type(description="A range of characters of a snippet: [start, end).")
class TextRange:
    start: int
    end: int


@strawberry.type
class MessageSearchEdge:
    cursor: str
    node: Message
    snippet: str = strawberry.field(
        description="Plain text (never markup) of the message around the first match."
    )
    highlights: list[TextRange] = strawberry.field(
        description="The matched ranges of `snippet`, in Unicode characters (code points)."
    )
    score: float = strawberry.field(
        description="Relevance; higher is better, comparable within one search only."
    )


@strawberry.type
class MessageSearchConnection:
    edges: list[MessageSearchEdge]
    page_info: PageInfo

    @classmethod
    def of(cls, results: SearchResults) -> MessageSearchConnection:
        edges = [
            MessageSearchEdge(
                cursor=f.cursor,
                node=Message.of(f.message),
                snippet=f.snippet,
                highlights=[TextRange(start=s, end=e) for s, e in f.highlights],
                score=f.score,
            )
            for f in results.found
        ]
        return cls(
            edges=edges,
            page_info=PageInfo(
                has_next_page=results.has_next_page,
                has_previous_page=results.has_previous_page,
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=edges[-1].cursor if edges else None,
            ),
        )


@strawberry.input
class CreateRoomInput:
    name: str
    description: str | None = None
    is_private: bool = False
    metadata: JSON | None = None
    id: strawberry.ID | None = strawberry.field(
        default=None, description="Choose the id (letters, digits, _ and -); generated if null."
    )


@strawberry.input
class UpdateRoomInput:
    name: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    is_private: bool | None = strawberry.UNSET
    metadata: JSON | None = strawberry.UNSET


@strawberry.input
class SendMessageInput:
    room_id: strawberry.ID
    data: JSON | None = None
    event: str | None = None
    metadata: JSON | None = None
    thread_id: strawberry.ID | None = None
    client_message_id: str | None = strawberry.field(
        default=None,
        description="Idempotency key: a retried send with the same key returns the first message.",
    )


@strawberry.input
class CreateChannelInput:
    name: str
    description: str | None = None
    is_private: bool = False
    id: strawberry.ID | None = None


@strawberry.input
class PublishInput:
    channel_id: strawberry.ID
    event: str | None = None
    data: JSON | None = None
    metadata: JSON | None = None


@strawberry.input
class ChannelFilter:
    events: list[str] | None = None
    user_ids: list[strawberry.ID] | None = None
    metadata: JSON | None = strawberry.field(
        default=None, description="Each key must equal the same key of the message's metadata."
    )
