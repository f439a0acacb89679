from __future__ import annotations

from typing import Any

import strawberry
from strawberry.scalars import JSON

from backends.records import RoomRole, Status
from resolvers import (
    admin,
    calls,
    channels,
    cluster,
    messages,
    presence,
    rooms,
    typing_indicators,
)

from .call_types import Call, CallParticipant, SendSignalInput
from .context import GraphInfo
from .types import (
    Channel,
    CreateChannelInput,
    CreateRoomInput,
    Message,
    Presence,
    PublishInput,
    Room,
    RoomMember,
    SendMessageInput,
    UpdateRoomInput,
)


def _given(value: object) -> bool:
    return value is not strawberry.UNSET


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def create_room(self, info: GraphInfo, input: CreateRoomInput) -> Room:
        ctx = info.context
        room = await rooms.create_room(
            ctx.services,
            ctx.viewer,
            name=input.name,
            description=input.description,
            is_private=input.is_private,
            metadata=input.metadata,
            room_id=input.id,
        )
        return Room(record=room)

    @strawberry.mutation
    async def update_room(self, info: GraphInfo, id: strawberry.ID, input: UpdateRoomInput) -> Room:
        ctx = info.context
        changes: dict[str, Any] = {
            name: value
            for name, value in (
                ("name", input.name),
                ("description", input.description),
                ("is_private", input.is_private),
                ("metadata", input.metadata),
            )
            if _given(value)
        }
        return Room(record=await rooms.update_room(ctx.services, ctx.viewer, id, changes))

    @strawberry.mutation
    async def delete_room(self, info: GraphInfo, id: strawberry.ID) -> bool:
        ctx = info.context
        return await rooms.delete_room(ctx.services, ctx.viewer, id)

    @strawberry.mutation
    async def join_room(self, info: GraphInfo, room_id: strawberry.ID) -> Room:
        ctx = info.context
        return Room(record=await rooms.join_room(ctx.services, ctx.viewer, room_id))

    @strawberry.mutation
    async def leave_room(self, info: GraphInfo, room_id: strawberry.ID) -> bool:
        ctx = info.context
        return await rooms.leave_room(ctx.services, ctx.viewer, room_id)

    @strawberry.mutation
    async def add_member(
        self,
        info: GraphInfo,
        room_id: strawberry.ID,
        user_id: strawberry.ID,
        role: RoomRole | None = RoomRole.MEMBER,
    ) -> RoomMember:
        ctx = info.context
        chosen = RoomRole.MEMBER if role is None else role
        member = await rooms.add_member(ctx.services, ctx.viewer, room_id, user_id, chosen)
        return RoomMember.of(member)

    @strawberry.mutation
    async def remove_member(
        self, info: GraphInfo, room_id: strawberry.ID, user_id: strawberry.ID
    ) -> bool:
        ctx = info.context
        return await rooms.remove_member(ctx.services, ctx.viewer, room_id, user_id)

    @strawberry.mutation(description="OWNER only; making another member OWNER hands ownership on.")
    async def set_member_role(
        self, info: GraphInfo, room_id: strawberry.ID, user_id: strawberry.ID, role: RoomRole
    ) -> RoomMember:
        ctx = info.context
        member = await rooms.set_member_role(ctx.services, ctx.viewer, room_id, user_id, role)
        return RoomMember.of(member)

    @strawberry.mutation
    async def ban_member(
        self, info: GraphInfo, room_id: strawberry.ID, user_id: strawberry.ID
    ) -> bool:
        ctx = info.context
        return await rooms.ban_member(ctx.services, ctx.viewer, room_id, user_id)

    @strawberry.mutation
    async def unban_member(
        self, info: GraphInfo, room_id: strawberry.ID, user_id: strawberry.ID
    ) -> bool:
        ctx = info.context
        return await rooms.unban_member(ctx.services, ctx.viewer, room_id, user_id)

    @strawberry.mutation
    async def send_message(self, info: GraphInfo, input: SendMessageInput) -> Message:
        ctx = info.context
        message = await messages.send_message(
            ctx.services,
            ctx.viewer,
            room_id=input.room_id,
            data=input.data,
            event=input.event,
            metadata=input.metadata,
            thread_id=input.thread_id,
            client_message_id=input.client_message_id,
        )
        return Message.of(message)

    @strawberry.mutation(
        description=(
            "Server admins only: a SYSTEM message in the room, from the user id "
            "`forge:system`, stored and delivered like any message (its metadata "
            "`by` names the admin)."
        )
    )
    async def broadcast_system_message(
        self, info: GraphInfo, room_id: strawberry.ID, data: JSON
    ) -> Message:
        ctx = info.context
        message = await admin.broadcast_system_message(ctx.services, ctx.viewer, room_id, data)
        return Message.of(message)

    @strawberry.mutation(
        description=(
            "Server admins only: close the user's connections on every node (WebSocket "
            "close 4403 `DISCONNECTED: <reason>`, SSE streams end); the number closed. "
            "`revokeTokens`: the user's tokens issued before now are refused on every node."
        )
    )
    async def disconnect_user(
        self,
        info: GraphInfo,
        user_id: strawberry.ID,
        reason: str | None = None,
        revoke_tokens: bool | None = False,
    ) -> int:
        ctx = info.context
        return await cluster.disconnect_user(
            ctx.services, ctx.viewer, user_id, reason, bool(revoke_tokens)
        )

    @strawberry.mutation
    async def create_channel(self, info: GraphInfo, input: CreateChannelInput) -> Channel:
        ctx = info.context
        channel = await channels.create_channel(
            ctx.services,
            ctx.viewer,
            channel_id=input.id,
            name=input.name,
            description=input.description,
            is_private=input.is_private,
        )
        return Channel.of(channel)

    @strawberry.mutation
    async def delete_channel(self, info: GraphInfo, id: strawberry.ID) -> bool:
        ctx = info.context
        return await channels.delete_channel(ctx.services, ctx.viewer, id)

    @strawberry.mutation(description="Creator only: let a user see a private channel.")
    async def grant_channel(
        self, info: GraphInfo, channel_id: strawberry.ID, user_id: strawberry.ID
    ) -> bool:
        ctx = info.context
        return await channels.grant_channel(ctx.services, ctx.viewer, channel_id, user_id)

    @strawberry.mutation(description="Creator only: take a user's access to a private channel.")
    async def revoke_channel(
        self, info: GraphInfo, channel_id: strawberry.ID, user_id: strawberry.ID
    ) -> bool:
        ctx = info.context
        return await channels.revoke_channel(ctx.services, ctx.viewer, channel_id, user_id)

    @strawberry.mutation
    async def publish(self, info: GraphInfo, input: PublishInput) -> Message:
        ctx = info.context
        message = await channels.publish(
            ctx.services,
            ctx.viewer,
            channel_id=input.channel_id,
            event=input.event,
            data=input.data,
            metadata=input.metadata,
        )
        return Message.of(message)

    @strawberry.mutation
    async def set_presence(
        self, info: GraphInfo, status: Status, status_text: str | None = None
    ) -> Presence:
        ctx = info.context
        entry = await presence.set_presence(ctx.services, ctx.viewer, status, status_text)
        return Presence.of(entry)

    @strawberry.mutation
    async def start_typing(self, info: GraphInfo, room_id: strawberry.ID) -> bool:
        ctx = info.context
        return await typing_indicators.start_typing(ctx.services, ctx.viewer, room_id)

    @strawberry.mutation
    async def stop_typing(self, info: GraphInfo, room_id: strawberry.ID) -> bool:
        ctx = info.context
        return await typing_indicators.stop_typing(ctx.services, ctx.viewer, room_id)

    @strawberry.mutation(description="Start a call in a room you are a member of.")
    async def start_call(
        self, info: GraphInfo, room_id: strawberry.ID, metadata: JSON | None = None
    ) -> Call:
        ctx = info.context
        return Call.of(await calls.start_call(ctx.services, ctx.viewer, room_id, metadata))

    @strawberry.mutation(
        description="Join with a new session bound to this connection, or resume one of "
        "yours with `sessionId` (its missed signals follow on callSignals)."
    )
    async def join_call(
        self, info: GraphInfo, call_id: strawberry.ID, session_id: strawberry.ID | None = None
    ) -> CallParticipant:
        ctx = info.context
        joined = await calls.join_call(ctx.services, ctx.viewer, call_id, session_id)
        return CallParticipant.of(joined)

    @strawberry.mutation(
        description="Leave with this connection's session (or the one named); over HTTP "
        "without `sessionId`, with all of yours."
    )
    async def leave_call(
        self, info: GraphInfo, call_id: strawberry.ID, session_id: strawberry.ID | None = None
    ) -> bool:
        ctx = info.context
        return await calls.leave_call(ctx.services, ctx.viewer, call_id, session_id)

    @strawberry.mutation(description="End a call: its starter, or a room ADMIN or OWNER.")
    async def end_call(self, info: GraphInfo, call_id: strawberry.ID) -> bool:
        ctx = info.context
        return await calls.end_call(ctx.services, ctx.viewer, call_id)

    @strawberry.mutation(description="Send an offer, answer, candidate... to one session.")
    async def send_signal(self, info: GraphInfo, input: SendSignalInput) -> bool:
        ctx = info.context
        return await calls.send_signal(
            ctx.services,
            ctx.viewer,
            call_id=input.call_id,
            to_session_id=input.to_session_id,
            kind=input.kind.value,
            payload=input.payload,
            from_session_id=input.from_session_id,
        )
