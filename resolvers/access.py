"""Who may subscribe to what, checked per subscriber of a shared execution.

A subscription whose identical twin is already running joins it instead of
running again; its own permission is checked here first, exactly as the
subscription's resolver would check it, and then again whenever the topic
returned here announces an access change.
"""

from __future__ import annotations

from typing import Any

from backends import topics
from serving.errors import BadUserInput

from .channels import visible_channel
from .presence import check_user_ids
from .rooms import readable_room
from .services import Services, Viewer


async def may_subscribe(
    services: Services, viewer: Viewer, field: str, args: dict[str, Any]
) -> str | None:
    """Raise the API error the resolver would raise; else the topic on which
    access changes for this subscription are announced (None: never)."""
    match field:
        case "roomMessages":
            if args.get("after") is not None:
                services.require("history")
            await readable_room(services, viewer, args["roomId"])
            return topics.room_messages(args["roomId"])
        case "typing":
            services.require("typing")
            await readable_room(services, viewer, args["roomId"])
            return topics.room_typing(args["roomId"])
        case "presence":
            services.require("presence")
            room_id, user_ids = args.get("roomId"), args.get("userIds")
            if room_id is not None and user_ids is None:
                await readable_room(services, viewer, room_id)
                return topics.room_presence(room_id)
            if user_ids is not None and room_id is None:
                check_user_ids(user_ids)
                return None
            raise BadUserInput("pass exactly one of roomId and userIds", argument="roomId")
        case "channelMessages":
            await visible_channel(services, viewer, args["channelId"])
            return topics.channel_messages(args["channelId"])
    raise ValueError(f"{field} is not a shareable subscription")
