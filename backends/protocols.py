"""The storage roles, one Protocol each, and the few rules of their
contract that every implementation applies the same way (the page limit,
which quota `add_member` counts against, the order lists come in).

Methods that name a room or channel that does not exist raise
`errors.Missing`, so nothing is ever attached to a missing parent.

Every implementation (memory, sqlite, and later redis and nats) passes the
same contract suite in tests/contract/. Records are in `backends.records`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from .records import (
    NO_QUOTA,
    Channel,
    HistoryPage,
    HistoryWindow,
    MemberQuota,
    Message,
    NewMessage,
    PresenceEntry,
    Room,
    RoomMember,
    RoomRole,
    Status,
    StreamPosition,
    TypingEntry,
)
from .search_query import SearchPage, SearchRequest


class MessageStore(Protocol):
    """Room history. Offsets start at 1 and strictly increase per room.

    A room's history belongs to one incarnation of the room
    (`Room.incarnation`): its epochs are `<incarnation>.<n>`. Every method
    names the incarnation it expects. A read of another incarnation's
    history finds nothing; a write (and `position`, which may start a
    history) raises ForeignStream, so that a room made again under an old id
    never shows, or adds to, anything of the old one.
    """

    publishes_on_append: bool
    """True if `append` also publishes the new message's MessageEvent to
    `topics.room_messages(room)`, atomically with storing it."""

    async def append(self, message: NewMessage, *, incarnation: str) -> tuple[Message, bool]:
        """Store a room message, giving it an id and the room's next offset.

        Returns the message and True; or, when the same user already sent a
        message with this `client_message_id` to this room, that first
        message and False (nothing new is stored). Starts a history of
        `incarnation` if the room has none; raises ForeignStream if it has
        one of another incarnation.
        """
        ...

    async def find_client_message(
        self, room_id: str, user_id: str, client_message_id: str, *, incarnation: str
    ) -> Message | None:
        """The message the user already stored with this client id, if any."""
        ...

    async def page(self, room_id: str, window: HistoryWindow, *, incarnation: str) -> HistoryPage:
        """The retained messages in `window`, oldest first (also with
        `from_end`). `has_more` tells whether more
        matching messages lie beyond the page in the direction of travel.
        Empty if the history belongs to another incarnation.
        """
        ...

    async def position(self, room_id: str, *, incarnation: str) -> StreamPosition:
        """The room's epoch, last offset given, and oldest offset retained.

        Starts a history of `incarnation` if the room has none; raises
        ForeignStream if it has one of another incarnation.
        """
        ...

    async def trim(self) -> int:
        """Delete messages older than the retention; return how many."""
        ...

    async def drop_room(self, room_id: str, *, incarnation: str | None = None) -> None:
        """Forget the room's history if it belongs to `incarnation` (None:
        whichever it belongs to); a history started again gets a new epoch.

        Atomic against appends: a history of another incarnation, or
        messages appended after the check, are never dropped.
        """
        ...

    async def close(self) -> None: ...


class MessageSearch(Protocol):
    """Full-text search over room history (the `search` role).

    What is indexed and how text splits into tokens is `backends.search_text`;
    what a query means is `backends.search_query`. Only retained messages of
    the rooms (and incarnations) a request names are ever returned.

    A backend that stores history and search for the same URL indexes each
    message in the same transaction as its append (`indexes_on_append`), and
    forgets it with the room (`MessageStore.drop_room`) and with retention
    (`MessageStore.trim`). Otherwise the caller indexes what it stored with
    `index`, and calls `drop_room` and `trim` here as well.
    """

    indexes_on_append: bool
    """True if the MessageStore opened with it (same URL) keeps this index
    itself, atomically with its appends, drops and trims."""

    async def index(self, messages: Sequence[Message]) -> None:
        """Add stored room messages; one already indexed (same room and
        offset) is left as it is."""
        ...

    async def search(self, request: SearchRequest) -> SearchPage:
        """One page of hits in the request's order, strictly after
        `request.after`; `has_more` if more match beyond it. Cost bounded by
        the request (its limit and, for RELEVANCE, `max_candidates`)."""
        ...

    async def drop_room(self, room_id: str, *, incarnation: str | None = None) -> None:
        """Forget the room's messages (of `incarnation` only, if given)."""
        ...

    async def trim(self) -> int:
        """Forget messages older than the retention; return how many."""
        ...

    async def close(self) -> None: ...


class RoomStore(Protocol):
    """Rooms, their members with roles, and bans."""

    async def create(self, room: Room, *, max_rooms_per_user: int | None = None) -> RoomMember:
        """Create the room (with its incarnation) and its owner as OWNER
        member, atomically.

        Raises Conflict if the id is taken, LimitReached if the owner is
        already in `max_rooms_per_user` rooms they created or joined
        themselves (rooms others added them to do not count).
        """
        ...

    async def get(self, room_id: str) -> Room | None:
        """The room; one stored before rooms had incarnations has
        LEGACY_INCARNATION."""
        ...

    async def update(self, room: Room) -> None:
        """Replace the room's fields (not its id, owner, created_at or incarnation)."""
        ...

    async def delete(self, room_id: str, *, incarnation: str | None = None) -> bool:
        """Remove the room with its members and bans; False if it did not
        exist (or, with `incarnation`, is another incarnation of the id)."""
        ...

    async def list_visible(self, user_id: str) -> list[Room]:
        """Public rooms and the private rooms the user belongs to, oldest first."""
        ...

    async def list_joined(self, user_id: str) -> list[Room]:
        """The rooms the user is a member of, oldest first."""
        ...

    async def room_id_page(self, cursor: str = "", *, limit: int = 500) -> tuple[list[str], str]:
        """Some ids of every room, and the cursor of the next call ("" when
        there are no more): for operators' walks over all rooms (reindex),
        in bounded memory. About `limit` ids a call; an id may come twice."""
        ...

    async def add_member(
        self, member: RoomMember, quota: MemberQuota = NO_QUOTA
    ) -> tuple[RoomMember, bool]:
        """Add a member; an existing member is returned unchanged with False.

        `MemberQuota.own(n)`: the user joins themselves, LimitReached("rooms")
        if they are already in `n` rooms they created or joined.
        `MemberQuota.added(n)`: another user adds them; such memberships
        count apart (LimitReached("room additions") at `n`), and never
        against the user's own quota. `MemberQuota.of` picks one.
        """
        ...

    async def remove_member(self, room_id: str, user_id: str) -> bool: ...

    async def get_member(self, room_id: str, user_id: str) -> RoomMember | None: ...

    async def members(self, room_id: str) -> list[RoomMember]:
        """Members in the order they joined."""
        ...

    async def member_count(self, room_id: str) -> int: ...

    async def set_role(self, room_id: str, user_id: str, role: RoomRole) -> RoomMember | None: ...

    async def transfer_ownership(self, room_id: str, new_owner: str) -> RoomMember:
        """Make the member `new_owner` the room's owner, atomically: the room's
        `owner` changes, the new owner gets OWNER and the old one ADMIN.

        Raises Missing if the room does not exist or `new_owner` is not a member.
        """
        ...

    async def ban(self, room_id: str, user_id: str) -> None:
        """Ban the user and remove their membership; idempotent."""
        ...

    async def unban(self, room_id: str, user_id: str) -> bool: ...

    async def is_banned(self, room_id: str, user_id: str) -> bool: ...

    async def close(self) -> None: ...


class ChannelStore(Protocol):
    """Pub/sub channels and, for private ones, the users granted access."""

    async def create(self, channel: Channel, *, max_channels_per_user: int | None = None) -> None:
        """Raises Conflict if the id is taken, LimitReached if the creator
        already created `max_channels_per_user` channels."""
        ...

    async def get(self, channel_id: str) -> Channel | None: ...

    async def delete(self, channel_id: str) -> bool: ...

    async def list_all(self) -> list[Channel]:
        """Every channel, oldest first."""
        ...

    async def grant(self, channel_id: str, user_id: str) -> None: ...

    async def revoke(self, channel_id: str, user_id: str) -> bool: ...

    async def is_granted(self, channel_id: str, user_id: str) -> bool: ...

    async def grants(self, channel_id: str) -> list[str]: ...

    async def close(self) -> None: ...


class PresenceStore(Protocol):
    """Who is connected, by connection entries that expire unless refreshed.

    A user is online while any of their connection entries is live; the
    status they chose (ONLINE by default, AWAY, BUSY, or OFFLINE to appear
    offline) applies only then. A closed connection lingers for a grace
    period so that a reload does not flap the user offline and online.
    """

    async def connect(
        self, user_id: str, conn_id: str, *, ttl: float, max_connections: int | None = None
    ) -> bool:
        """Register a live connection; True if the user was offline before.

        Connections in their grace period do not count towards
        `max_connections`; going over it raises LimitReached.
        """
        ...

    async def heartbeat(self, user_id: str, conn_id: str, *, ttl: float) -> bool:
        """Extend a live connection's expiry to now + ttl.

        False if the connection is unknown, closing or already expired (the
        process stalled past its TTL): the caller must `connect` it again.
        """
        ...

    async def disconnect(self, user_id: str, conn_id: str, *, grace: float) -> None:
        """Mark the connection closed; it expires after `grace` seconds."""
        ...

    async def set_status(
        self, user_id: str, status: Status, status_text: str | None
    ) -> PresenceEntry:
        """Store the chosen status; return the effective entry."""
        ...

    async def get(self, user_ids: list[str]) -> list[PresenceEntry]:
        """Effective presence of the users ever seen, in the order asked."""
        ...

    async def sweep(self) -> list[str]:
        """Prune expired connections; return users who went offline by it."""
        ...

    async def close(self) -> None: ...


class TypingStore(Protocol):
    """Who is typing in a room; entries expire after a few seconds."""

    async def start(self, room_id: str, user_id: str, *, ttl: float) -> tuple[TypingEntry, bool]:
        """Mark or refresh; True if the user was not typing before."""
        ...

    async def stop(self, room_id: str, user_id: str) -> bool:
        """True if the user was typing."""
        ...

    async def users(self, room_id: str) -> list[str]:
        """Users typing now, pruned of expired entries."""
        ...

    async def sweep(self) -> list[TypingEntry]:
        """Remove expired entries and return them, each once."""
        ...

    async def close(self) -> None: ...


class ClusterStore(Protocol):
    """What the nodes of a cluster tell each other through the backend: each
    node's self-report, which expires unless renewed, and the users whose
    tokens issued before a moment are refused.

    A report is an opaque JSON object (its `id` names the node); the store
    keeps it `ttl` seconds, so a node that stops reporting (killed) drops
    out of `nodes` after at most that long.
    """

    async def report(self, node_id: str, status: Mapping[str, Any], *, ttl: float) -> None: ...

    async def nodes(self) -> list[dict[str, Any]]:
        """The unexpired reports, in node id order."""
        ...

    async def revoke_tokens(self, user_id: str, before: float) -> None:
        """Refuse `user_id`'s tokens issued before `before` (epoch seconds);
        a later call moves the moment (never back)."""
        ...

    async def tokens_revoked_before(self, user_id: str) -> float | None:
        """The moment set by `revoke_tokens`, or None."""
        ...

    async def close(self) -> None: ...


class RateLimiter(Protocol):
    """Counts actions per key in a sliding window."""

    async def acquire(self, key: str, *, limit: int, per_seconds: float) -> bool:
        """Count one action; False (and not counted) if `limit` were exceeded."""
        ...

    async def close(self) -> None: ...


def room_order(room: Room) -> tuple[datetime, str]:
    """The order of `RoomStore.list_visible` and `list_joined`: oldest first."""
    return (room.created_at, room.id)


def member_order(member: RoomMember) -> tuple[datetime, str]:
    """The order of `RoomStore.members`: as they joined."""
    return (member.joined_at, member.user_id)
