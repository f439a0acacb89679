"""Bounds on every argument and input field, checked before any resolver runs.

Every argument and input field whose type is not bounded by itself (ID,
String, JSON, lists; not Int, Boolean or enums) has a bound in `BOUNDS`,
keyed by its schema coordinate (`Query.room(id:)`, `SendMessageInput.roomId`).
`apply_bounds` compiles one checker per field when the schema is built and
wraps the field's resolver (or, for a subscription, its subscribe function)
with it, so a value out of bounds is BAD_USER_INPUT naming the argument and
no resolver or backend ever sees it. A schema with an argument that has no
bound, or a bound for an argument that does not exist, does not build: a new
field cannot skip the check.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from graphql import (
    GraphQLArgument,
    GraphQLField,
    GraphQLInputField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
)

from backends.search_query import SearchOrder
from resolvers.cursors import parse_cursor
from resolvers.errors import BadUserInput
from resolvers.search import parse_search_cursor
from resolvers.search_syntax import MAX_QUERY_LENGTH
from resolvers.validation import user_id_problem

# Scalars whose coercion already bounds them.
_SELF_BOUNDED: Final = frozenset({"Int", "Boolean"})
_EXTENSION_KEY: Final = "forge_streaming.bounds"

Check = Callable[[Any, str], None]
"""A bound: raise BadUserInput (naming the argument, the second argument) or return."""


# --- the bounds ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ident:
    """A room, channel, thread or message id: 1 to 64 of [A-Za-z0-9_-]."""

    def __call__(self, value: Any, name: str) -> None:
        if not isinstance(value, str) or not _IDENT.fullmatch(value):
            raise BadUserInput(
                f"{name}: ids are 1 to 64 characters of letters, digits, '_' and '-'",
                argument=name,
            )


_IDENT: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True, slots=True)
class UserId:
    """A user id: the rule of a token's `sub` (resolvers/validation.py)."""

    def __call__(self, value: Any, name: str) -> None:
        problem = user_id_problem(value)
        if problem is not None:
            raise BadUserInput(f"{name}: a user id {problem}", argument=name)


@dataclass(frozen=True, slots=True)
class Text:
    """At most `max_length` characters once surrounding whitespace is stripped
    (the resolvers store the stripped text), and no NUL character: no text
    means one, and PostgreSQL's text cannot hold it (JSON values still can)."""

    max_length: int

    def __call__(self, value: Any, name: str) -> None:
        if not isinstance(value, str):
            raise BadUserInput(f"{name} must be a string", argument=name)
        if "\x00" in value:
            raise BadUserInput(f"{name} must not contain NUL (U+0000) characters", argument=name)
        if len(value) > self.max_length and len(value.strip()) > self.max_length:
            raise BadUserInput(f"{name} is longer than {self.max_length} characters", argument=name)


@dataclass(frozen=True, slots=True)
class HistoryCursor:
    """A cursor of room history (resolvers.cursors); "" means none, as before."""

    def __call__(self, value: Any, name: str) -> None:
        if not isinstance(value, str):
            raise BadUserInput(f"{name} must be a string", argument=name)
        if value:
            parse_cursor(value, argument=name)


@dataclass(frozen=True, slots=True)
class Json:
    """A JSON value without NaN or infinities, which JSON cannot carry (they
    would be stored as null). Its size is the resolvers' payload limit."""

    def __call__(self, value: Any, name: str) -> None:
        if not _finite(value):
            raise BadUserInput(
                f"{name}: numbers must be finite (no NaN, Infinity or 1e400)", argument=name
            )


def _finite(value: Any) -> bool:
    # A loop, not recursion: nesting depth is the client's choice.
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True


@dataclass(frozen=True, slots=True)
class ListOf:
    """At most `max_items` items, each within `item` (if the items need one)."""

    max_items: int
    item: Check | None = None

    def __call__(self, value: Any, name: str) -> None:
        if not isinstance(value, list):
            raise BadUserInput(f"{name} must be a list", argument=name)
        if len(value) > self.max_items:
            raise BadUserInput(f"{name}: at most {self.max_items} items", argument=name)
        if self.item is not None:
            for item in value:
                if item is not None:
                    self.item(item, name)


@dataclass(frozen=True, slots=True)
class Moment:
    """A DateTime with a time zone, between 1970 and 9999 (what every store holds)."""

    def __call__(self, value: Any, name: str) -> None:
        if (
            not isinstance(value, datetime)
            or value.utcoffset() is None
            or not _FIRST_MOMENT <= value <= _LAST_MOMENT
        ):
            raise BadUserInput(
                f"{name}: a date and time with a time zone, between 1970 and 9999",
                argument=name,
            )


_FIRST_MOMENT: Final = datetime(1970, 1, 1, tzinfo=UTC)
_LAST_MOMENT: Final = datetime(9999, 12, 30, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class SearchCursor:
    """A cursor of searchMessages: its shape here, its order in the resolver."""

    def __call__(self, value: Any, name: str) -> None:
        if not isinstance(value, str):
            raise BadUserInput(f"{name} must be a string", argument=name)
        if value and not any(_is_search_cursor(value, order) for order in SearchOrder):
            raise BadUserInput(f"{name}: malformed search cursor", argument=name)


def _is_search_cursor(value: str, order: SearchOrder) -> bool:
    try:
        parse_search_cursor(value, order)
    except BadUserInput:
        return False
    return True


NAME: Final = Text(200)
DESCRIPTION: Final = Text(2000)
EVENT: Final = Text(128)
MAX_USER_IDS: Final = 200
MAX_FILTER_EVENTS: Final = 100

BOUNDS: Final[Mapping[str, Check]] = {
    # Query
    "Query.room(id:)": Ident(),
    "Query.history(roomId:)": Ident(),
    "Query.history(after:)": HistoryCursor(),
    "Query.history(before:)": HistoryCursor(),
    "Query.history(threadId:)": Ident(),
    "Query.history(userIds:)": ListOf(MAX_USER_IDS, UserId()),
    "Query.history(events:)": ListOf(MAX_FILTER_EVENTS, EVENT),
    "Query.history(since:)": Moment(),
    "Query.history(until:)": Moment(),
    "Query.searchMessages(query:)": Text(MAX_QUERY_LENGTH),
    "Query.searchMessages(roomId:)": Ident(),
    "Query.searchMessages(userId:)": UserId(),
    "Query.searchMessages(event:)": EVENT,
    "Query.searchMessages(threadId:)": Ident(),
    "Query.searchMessages(since:)": Moment(),
    "Query.searchMessages(until:)": Moment(),
    "Query.searchMessages(after:)": SearchCursor(),
    "Query.channel(id:)": Ident(),
    "Query.presence(userIds:)": ListOf(MAX_USER_IDS, UserId()),
    "Query.roomPresence(roomId:)": Ident(),
    "Query.typingUsers(roomId:)": Ident(),
    "Query.connections(userId:)": UserId(),
    "Query.connections(nodeId:)": Text(64),
    "Query.connections(after:)": Text(512),
    "Query.adminRooms(after:)": Text(512),
    "Query.adminRooms(idPrefix:)": Ident(),
    # Mutation
    "Mutation.updateRoom(id:)": Ident(),
    "Mutation.deleteRoom(id:)": Ident(),
    "Mutation.joinRoom(roomId:)": Ident(),
    "Mutation.leaveRoom(roomId:)": Ident(),
    "Mutation.addMember(roomId:)": Ident(),
    "Mutation.addMember(userId:)": UserId(),
    "Mutation.removeMember(roomId:)": Ident(),
    "Mutation.removeMember(userId:)": UserId(),
    "Mutation.setMemberRole(roomId:)": Ident(),
    "Mutation.setMemberRole(userId:)": UserId(),
    "Mutation.banMember(roomId:)": Ident(),
    "Mutation.banMember(userId:)": UserId(),
    "Mutation.unbanMember(roomId:)": Ident(),
    "Mutation.unbanMember(userId:)": UserId(),
    "Mutation.deleteChannel(id:)": Ident(),
    "Mutation.grantChannel(channelId:)": Ident(),
    "Mutation.grantChannel(userId:)": UserId(),
    "Mutation.revokeChannel(channelId:)": Ident(),
    "Mutation.revokeChannel(userId:)": UserId(),
    "Mutation.setPresence(statusText:)": Text(256),
    "Mutation.broadcastSystemMessage(roomId:)": Ident(),
    "Mutation.broadcastSystemMessage(data:)": Json(),
    "Mutation.startTyping(roomId:)": Ident(),
    "Mutation.disconnectUser(userId:)": UserId(),
    "Mutation.disconnectUser(reason:)": Text(200),
    "Mutation.stopTyping(roomId:)": Ident(),
    # Subscription
    "Subscription.roomMessages(roomId:)": Ident(),
    "Subscription.roomMessages(after:)": HistoryCursor(),
    "Subscription.roomMessages(threadId:)": Ident(),
    "Subscription.typing(roomId:)": Ident(),
    "Subscription.presence(roomId:)": Ident(),
    "Subscription.presence(userIds:)": ListOf(MAX_USER_IDS, UserId()),
    "Subscription.channelMessages(channelId:)": Ident(),
    # Inputs
    "CreateRoomInput.name": NAME,
    "CreateRoomInput.description": DESCRIPTION,
    "CreateRoomInput.metadata": Json(),
    "CreateRoomInput.id": Ident(),
    "UpdateRoomInput.name": NAME,
    "UpdateRoomInput.description": DESCRIPTION,
    "UpdateRoomInput.metadata": Json(),
    "SendMessageInput.roomId": Ident(),
    "SendMessageInput.data": Json(),
    "SendMessageInput.event": EVENT,
    "SendMessageInput.metadata": Json(),
    "SendMessageInput.threadId": Ident(),
    "SendMessageInput.clientMessageId": Text(128),
    "CreateChannelInput.name": NAME,
    "CreateChannelInput.description": DESCRIPTION,
    "CreateChannelInput.id": Ident(),
    "PublishInput.channelId": Ident(),
    "PublishInput.event": EVENT,
    "PublishInput.data": Json(),
    "PublishInput.metadata": Json(),
    "ChannelFilter.events": ListOf(MAX_FILTER_EVENTS, EVENT),
    "ChannelFilter.userIds": ListOf(MAX_USER_IDS, UserId()),
    "ChannelFilter.metadata": Json(),
    "Query.call(id:)": Ident(),
    "Query.calls(roomId:)": Ident(),
    "Mutation.startCall(roomId:)": Ident(),
    "Mutation.startCall(metadata:)": Json(),
    "Mutation.joinCall(callId:)": Ident(),
    "Mutation.joinCall(sessionId:)": Ident(),
    "Mutation.leaveCall(callId:)": Ident(),
    "Mutation.leaveCall(sessionId:)": Ident(),
    "Mutation.endCall(callId:)": Ident(),
    "SendSignalInput.callId": Ident(),
    "SendSignalInput.toSessionId": Ident(),
    "SendSignalInput.fromSessionId": Ident(),
    "SendSignalInput.payload": Json(),
    "Subscription.callSignals(callId:)": Ident(),
    "Subscription.callSignals(sessionId:)": Ident(),
    "Subscription.callEvents(roomId:)": Ident(),
}
"""The bound of every argument and input field that needs one; the README's
"Input bounds" section lists them for clients."""


# --- compiling them into the schema ----------------------------------------------------


class UnboundedArgument(Exception):
    """The schema has an argument without a bound, or a bound for nothing."""


def needs_bound(type_: GraphQLInputType) -> bool:
    """Whether values of this type need a declared bound."""
    if isinstance(type_, GraphQLNonNull):
        return needs_bound(type_.of_type)
    if isinstance(type_, GraphQLList):
        return True
    if isinstance(type_, GraphQLScalarType):
        return type_.name not in _SELF_BOUNDED
    return False  # enums are bounded; input objects by their fields


def _named(type_: GraphQLInputType) -> GraphQLInputType:
    while isinstance(type_, GraphQLNonNull | GraphQLList):
        type_ = type_.of_type
    return type_


class _Compiler:
    def __init__(self, bounds: Mapping[str, Check]) -> None:
        self._bounds = bounds
        self.used: set[str] = set()
        self._inputs: dict[str, _InputCheck] = {}

    def value_check(
        self, coordinate: str, type_: GraphQLInputType, name: str
    ) -> Callable[[Any], None] | None:
        """The check of one argument or input field's value, or None if it needs none."""
        checks: list[Callable[[Any], None]] = []
        if needs_bound(type_):
            bound = self._bounds.get(coordinate)
            if bound is None:
                raise UnboundedArgument(
                    f"{coordinate} has no bound: declare one in schema/bounds.py BOUNDS"
                )
            self.used.add(coordinate)
            checks.append(lambda value: bound(value, name))
        named = _named(type_)
        if isinstance(named, GraphQLInputObjectType):
            inner = self.input_check(named)
            if isinstance(_strip_non_null(type_), GraphQLList):
                checks.append(lambda value: _each(value, inner, name))
            else:
                checks.append(lambda value: inner(value, name))
        if not checks:
            return None
        if len(checks) == 1:
            return checks[0]

        def both(value: Any) -> None:
            for check in checks:
                check(value)

        return both

    def input_check(self, type_: GraphQLInputObjectType) -> _InputCheck:
        found = self._inputs.get(type_.name)
        if found is None:
            found = self._inputs[type_.name] = _InputCheck()
            fields: dict[str, GraphQLInputField] = type_.fields
            for field_name, field in fields.items():
                key = field.out_name or field_name
                check = self.value_check(f"{type_.name}.{field_name}", field.type, field_name)
                if check is not None:
                    found.fields.append((key, check))
        return found


def _strip_non_null(type_: GraphQLInputType) -> GraphQLInputType:
    return type_.of_type if isinstance(type_, GraphQLNonNull) else type_


class _InputCheck:
    """The checks of an input object's fields (filled after creation, so
    recursive input types compile)."""

    def __init__(self) -> None:
        self.fields: list[tuple[str, Callable[[Any], None]]] = []

    def __call__(self, value: Any, name: str) -> None:
        if not isinstance(value, dict):
            return
        for key, check in self.fields:
            item = value.get(key)
            if item is not None:
                check(item)


def _each(value: Any, check: _InputCheck, name: str) -> None:
    if isinstance(value, list):
        for item in value:
            check(item, name)


class ArgumentCheck:
    """The compiled checks of one field's arguments."""

    def __init__(self, checks: list[tuple[str, Callable[[Any], None]]]) -> None:
        self._checks = checks

    def __call__(self, args: Mapping[str, Any]) -> None:
        for key, check in self._checks:
            value = args.get(key)
            if value is not None:
                check(value)


def apply_bounds(schema: GraphQLSchema, bounds: Mapping[str, Check] = BOUNDS) -> None:
    """Wrap every field with arguments in its compiled check (see the module doc)."""
    compiler = _Compiler(bounds)
    for type_ in schema.type_map.values():
        if not isinstance(type_, GraphQLObjectType) or type_.name.startswith("__"):
            continue
        fields: dict[str, GraphQLField] = type_.fields
        for field_name, field in fields.items():
            if field.args:
                _wrap(field, _compile_field(compiler, type_.name, field_name, field.args))
    for type_ in schema.type_map.values():
        # Input types no field uses still get their bounds checked for completeness.
        if isinstance(type_, GraphQLInputObjectType) and not type_.name.startswith("__"):
            compiler.input_check(type_)
    stale = set(bounds) - compiler.used
    if stale:
        raise UnboundedArgument(f"bounds for nothing in the schema: {', '.join(sorted(stale))}")


def _compile_field(
    compiler: _Compiler, type_name: str, field_name: str, args: dict[str, GraphQLArgument]
) -> ArgumentCheck:
    checks = []
    for arg_name, arg in args.items():
        check = compiler.value_check(f"{type_name}.{field_name}({arg_name}:)", arg.type, arg_name)
        if check is not None:
            checks.append((arg.out_name or arg_name, check))
    return ArgumentCheck(checks)


def _wrap(field: GraphQLField, check: ArgumentCheck) -> None:
    field.extensions = {**(field.extensions or {}), _EXTENSION_KEY: check}
    if field.subscribe is not None:
        # A subscription's resolve runs per event on values already checked.
        field.subscribe = _checked_subscribe(field.subscribe, check)
    elif field.resolve is not None:
        field.resolve = _checked(field.resolve, check)


def _checked(resolve: Callable[..., Any], check: ArgumentCheck) -> Callable[..., Any]:
    def checked(source: Any, info: Any, **args: Any) -> Any:
        check(args)
        return resolve(source, info, **args)

    return checked


def _checked_subscribe(subscribe: Callable[..., Any], check: ArgumentCheck) -> Callable[..., Any]:
    def checked(source: Any, info: Any, **args: Any) -> Any:
        try:
            check(args)
        except BadUserInput as exc:
            # Fail as the subscription's own stream would (a result with the
            # error, then the end), not as a document that failed validation.
            return _failing(exc)
        return subscribe(source, info, **args)

    return checked


async def _failing(error: BadUserInput) -> AsyncIterator[Any]:
    raise error
    yield  # an async generator, that raises when first read


def check_arguments(field: GraphQLField, args: Mapping[str, Any]) -> None:
    """Check arguments coerced outside the field's own resolver (the shared
    subscription path), with the same bounds; BAD_USER_INPUT if out of them."""
    check: ArgumentCheck | None = (field.extensions or {}).get(_EXTENSION_KEY)
    if check is None:
        if field.args:
            raise UnboundedArgument("check_arguments on a schema built without bounds")
        return
    check(args)


__all__ = [
    "BOUNDS",
    "Check",
    "UnboundedArgument",
    "apply_bounds",
    "check_arguments",
    "needs_bound",
]
