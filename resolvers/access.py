"""Who may subscribe to what, checked per subscriber of a shared execution.

A subscription whose identical twin is already running joins it instead of
running again. Its permission is checked here first, by the very functions
the subscription's resolver uses (so the two cannot drift apart), and again
whenever the topic returned here announces an access change.
"""

from __future__ import annotations

from typing import Any

from .channels import may_watch_channel
from .messages import may_read_room_stream
from .presence import may_watch_presence
from .services import Services, Viewer
from .typing_indicators import may_watch_typing


async def may_subscribe(
    services: Services, viewer: Viewer, field: str, args: dict[str, Any]
) -> str | None:
    """Raise the API error the resolver would raise; else the topic on which
    access changes for this subscription are announced (None: never)."""
    match field:
        case "roomMessages":
            if args.get("after") is not None:
                services.require("history")
            return await may_read_room_stream(services, viewer, args["roomId"])
        case "typing":
            return await may_watch_typing(services, viewer, args["roomId"])
        case "presence":
            return await may_watch_presence(
                services, viewer, args.get("roomId"), args.get("userIds")
            )
        case "channelMessages":
            return await may_watch_channel(services, viewer, args["channelId"])
    raise ValueError(f"{field} is not a shareable subscription")
