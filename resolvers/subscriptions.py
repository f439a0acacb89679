"""Every subscription field as `authorize` + `stream`.

`authorize(services, viewer, args)` raises the API error the viewer gets (a
private room's non-member NOT_FOUND, a banned user FORBIDDEN, ...) and
returns nothing else. `stream(services, args)` is the field's events for any
reader: it takes no viewer, so it cannot depend on one, and it says when
access may have narrowed (stream_signals.py) instead of deciding it.

Two readers put them together, the only two there are:
- `authorized_stream`, one viewer's subscription: authorize, stream, and
  authorize again on every access change that concerns the viewer, ending
  with the error `authorize` raises;
- a shared execution (transport/shared.py), whose one `stream` serves many
  subscribers: it authorizes each one itself, on joining and on every access
  change, through `shared_stream`'s hooks.

Args are keyed by the GraphQL argument names. `authorize` and `shareable` read
only ids, plain values the shared execution's coerced arguments have too.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, cast

from backends.records import PresenceEntry

from . import calls, channels, cluster, messages, presence, typing_indicators
from .resume import ResumeMap
from .services import Services, Viewer
from .stream_signals import LIVE, AccessChange

Args = Mapping[str, Any]


def _as_is(args: Args, resume: ResumeMap) -> Args:
    return args


@dataclass(frozen=True, slots=True)
class SubscriptionField:
    authorize: Callable[[Services, Viewer, Args], Awaitable[None]]
    stream: Callable[[Services, Args], AsyncGenerator[object, None]]
    # Whether identical subscriptions may share one execution: the payload
    # never depends on the viewer, but a replay is each reader's own.
    shareable: Callable[[Args], bool]
    # Whether one payload reaches this viewer, for a stream whose readers may
    # each see only part of it (None: all of it). Only where `shareable` is
    # false or this always admits: a shared execution does not ask.
    admits: Callable[[Services, Viewer, Args, object], Awaitable[bool]] | None = None
    # The args it runs with on a connection that sent a resume map
    # (resume.py): decided before `shareable`, so a resumed one runs alone.
    resumed: Callable[[Args, ResumeMap], Args] = _as_is


def _always(args: Args) -> bool:
    return True


def _resumed_room_messages(args: Args, resume: ResumeMap) -> Args:
    after = resume.after(args["roomId"], args.get("threadId"), args.get("after"))
    return args if after == args.get("after") else {**args, "after": after}


FIELDS: Mapping[str, SubscriptionField] = MappingProxyType(
    {
        "roomMessages": SubscriptionField(
            authorize=lambda services, viewer, args: messages.authorize_room_stream(
                services, viewer, args["roomId"], after=args.get("after")
            ),
            stream=lambda services, args: messages.room_stream(
                services, args["roomId"], after=args.get("after"), thread_id=args.get("threadId")
            ),
            shareable=lambda args: args.get("after") is None,
            resumed=_resumed_room_messages,
        ),
        "typing": SubscriptionField(
            authorize=lambda services, viewer, args: typing_indicators.authorize_typing_stream(
                services, viewer, args["roomId"]
            ),
            stream=lambda services, args: typing_indicators.typing_stream(services, args["roomId"]),
            shareable=_always,
        ),
        "presence": SubscriptionField(
            authorize=lambda services, viewer, args: presence.authorize_presence_stream(
                services, viewer, args.get("roomId"), args.get("userIds")
            ),
            stream=lambda services, args: presence.presence_stream(
                services, args.get("roomId"), args.get("userIds")
            ),
            # Watching chosen users: rarely identical, not worth a group.
            shareable=lambda args: args.get("roomId") is not None,
            # Whose presence the viewer may see (presence_visibility).
            admits=lambda services, viewer, args, entry: presence.admits_presence(
                services, viewer, args.get("roomId"), cast(PresenceEntry, entry)
            ),
        ),
        "channelMessages": SubscriptionField(
            authorize=lambda services, viewer, args: channels.authorize_channel_stream(
                services, viewer, args["channelId"]
            ),
            stream=lambda services, args: channels.channel_stream(
                services, args["channelId"], args.get("filter") or channels.MessageFilter()
            ),
            shareable=_always,
        ),
        "clusterStats": SubscriptionField(
            authorize=cluster.authorize_cluster_stats,
            stream=cluster.cluster_stats,
            shareable=_always,
        ),
        "callSignals": SubscriptionField(
            authorize=lambda services, viewer, args: calls.authorize_signals(
                services, viewer, args["callId"], args["sessionId"]
            ),
            stream=lambda services, args: calls.signal_stream(services, args["sessionId"]),
            # One session's: never identical to another's.
            shareable=lambda args: False,
        ),
        "callEvents": SubscriptionField(
            authorize=lambda services, viewer, args: calls.authorize_call_events(
                services, viewer, args["roomId"]
            ),
            stream=lambda services, args: calls.call_event_stream(services, args["roomId"]),
            shareable=_always,
        ),
    }
)


async def authorized_stream(
    services: Services, viewer: Viewer, field: str, args: Args
) -> AsyncGenerator[object, None]:
    """One viewer's subscription: its payloads while it may read them; the
    API error `authorize` raises once it may not."""
    subscription = FIELDS[field]
    # Before subscribing, so a refused viewer costs no hub subscription.
    await subscription.authorize(services, viewer, args)
    live = False
    try:
        async with aclosing(subscription.stream(services, args)) as items:
            async for item in items:
                if item is LIVE:
                    # Access may have narrowed between the check above and the
                    # stream's subscription, unannounced to it: check again.
                    await subscription.authorize(services, viewer, args)
                    live = True
                    services.live_subscriptions += 1
                elif isinstance(item, AccessChange):
                    if item.concerns(viewer.user_id):
                        await subscription.authorize(services, viewer, args)
                elif subscription.admits is None or await subscription.admits(
                    services, viewer, args, item
                ):
                    yield item
    finally:
        if live:
            services.live_subscriptions -= 1


@dataclass(frozen=True, slots=True)
class SharedHooks:
    """How a shared execution hears what its stream signals."""

    on_live: Callable[[], None]
    # Awaited in order with the payloads: who is refused is ended after the
    # payloads before the change and before any after it.
    on_access_change: Callable[[AccessChange], Awaitable[None]]


async def shared_stream(
    services: Services, field: str, args: Args, hooks: SharedHooks
) -> AsyncGenerator[object, None]:
    """The field's stream for a shared execution, which authorizes each of
    its subscribers itself through `hooks`."""
    async with aclosing(FIELDS[field].stream(services, args)) as items:
        async for item in items:
            if item is LIVE:
                hooks.on_live()
            elif isinstance(item, AccessChange):
                await hooks.on_access_change(item)
            else:
                yield item
