"""Shared execution of identical subscriptions.

Subscriptions on one topic with the same document, variables and operation
name run once: one execution per event, one encoded payload, handed to every
subscriber as text; a subscriber's frame differs only in its operation id.

Only subscriptions whose payload types are viewer-independent are shared
(`SHAREABLE`; tests/test_shared.py guards that the types reachable from them
have no viewer-dependent field), and only without a replay (`roomMessages`
with `after` runs on its own; so does `presence(userIds:)`). Each
subscriber's permission is checked when it joins (resolvers/access.py) and
again when the access topic announces a change; a subscriber that is not
allowed takes the unshared path, which answers it exactly as before.

A subscriber on a connection that can take frames directly
(transport/direct_frames.py) gets each payload written to its socket as the
execution yields it; any other has a bounded queue of payloads. Either way one
that does not keep up (its connection's unsent bytes over `max_send_buffer`,
or its queue full) is cut off with `SlowConsumer`, never slowing the
execution or the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from graphql import (
    FieldNode,
    GraphQLError,
    GraphQLSchema,
    OperationType,
    get_operation_ast,
)
from graphql.execution.values import get_argument_values, get_variable_values
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError

from backends.events import AccessEvent
from backends.hub import BoundedStream, SlowConsumer, internal_subscriptions
from resolvers.access import may_subscribe
from resolvers.services import KeyedLocks, Services, Viewer
from schema import ApiSchema, Context
from serving.errors import ApiError

from .direct_frames import DirectFrames

log = logging.getLogger(__name__)

SHAREABLE = frozenset({"roomMessages", "typing", "presence", "channelMessages"})


@dataclass(frozen=True)
class Plan:
    """A shareable subscription: what identifies its group, and its root field."""

    key: tuple[str, bytes, str | None]
    query: str
    variables: dict[str, Any] | None
    operation_name: str | None
    field: str
    args: dict[str, Any]


class Member(BoundedStream[bytes]):
    """One subscriber of a group, whose frames are `prefix + payload + }`.

    With `direct` each payload is written to the socket as it comes and
    iterating the member only waits for its end; without, iterate it for the
    payloads to send.
    """

    def __init__(
        self, viewer: Viewer, capacity: int, prefix: bytes, direct: DirectFrames | None
    ) -> None:
        super().__init__(capacity, "results waiting to be sent")
        self.viewer = viewer
        self.prefix = prefix
        self._direct = direct

    def frame(self, payload: bytes) -> str:
        return (self.prefix + payload + b"}").decode()

    def deliver(self, payload: bytes) -> None:
        direct = self._direct
        if direct is None:
            self._deliver(payload)
        elif not self.finished() and not direct.write(self.prefix, payload):
            self._fail(SlowConsumer(f"more than {direct.limit} bytes waiting to be sent"))

    def end(self, last_payload: bytes | None = None) -> None:
        """No more payloads after `last_payload` (an error result, say)."""
        if last_payload is not None and self._direct is not None:
            self.deliver(last_payload)
            last_payload = None
        self._end(*(() if last_payload is None else (last_payload,)))


@dataclass
class _Group:
    plan: Plan
    members: set[Member] = field(default_factory=set)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # Set once the execution holds its hub subscription: from then on no
    # event is missed, so the members count as live subscribers.
    live: asyncio.Event = field(default_factory=asyncio.Event)


def encode_result(result: ExecutionResult) -> bytes:
    """The `payload` of a next frame, as Strawberry's handlers build it."""
    payload: dict[str, Any] = {"data": result.data}
    if result.errors:
        payload["errors"] = [error.formatted for error in result.errors]
    if result.extensions:
        payload["extensions"] = result.extensions
    return orjson.dumps(payload)


class SharedSubscriptions:
    """The groups of one process, keyed by document, variables and operation."""

    def __init__(self, schema: ApiSchema) -> None:
        self._schema = schema
        self._graphql_schema: GraphQLSchema = schema._schema
        self._groups: dict[tuple[str, bytes, str | None], _Group] = {}
        self._locks = KeyedLocks()

    def group_count(self) -> int:
        return len(self._groups)

    def live_members(self) -> int:
        """Subscribers whose group's execution is receiving events."""
        return sum(len(g.members) for g in self._groups.values() if g.live.is_set())

    def plan(
        self, query: str, variables: dict[str, Any] | None, operation_name: str | None
    ) -> Plan | None:
        """The plan if this subscription can be shared, else None (also when
        its document is refused: the unshared path says why)."""
        # Checked under the document limits, and kept only if valid, in the
        # schema's one store of valid documents (schema/document_cache.py).
        document = self._schema.documents.check(query)
        if isinstance(document, list):
            return None
        operation = get_operation_ast(document, operation_name)
        if operation is None or operation.operation is not OperationType.SUBSCRIPTION:
            return None
        selections = operation.selection_set.selections
        if len(selections) != 1 or not isinstance(selections[0], FieldNode):
            return None
        node = selections[0]
        name = node.name.value
        subscription_type = self._graphql_schema.subscription_type
        if name not in SHAREABLE or node.directives or subscription_type is None:
            return None
        coerced = get_variable_values(
            self._graphql_schema, operation.variable_definitions or (), variables or {}
        )
        if isinstance(coerced, list):  # invalid variables: the unshared path says why
            return None
        args = get_argument_values(subscription_type.fields[name], node, coerced)
        if name == "roomMessages" and args.get("after") is not None:
            return None  # a replay is each subscriber's own
        if name == "presence" and args.get("roomId") is None:
            return None  # watching chosen users: rarely identical, not worth a group
        key = (query, orjson.dumps(variables or {}, option=orjson.OPT_SORT_KEYS), operation_name)
        # A subscriber waits in its plan's frame for as long as it stays:
        # the group's own plan spares it a copy of the query and arguments.
        group = self._groups.get(key)
        if group is not None:
            return group.plan
        return Plan(key, query, variables, operation_name, name, args)

    @contextlib.asynccontextmanager
    async def join(
        self, plan: Plan, context: Context, prefix: bytes, direct: DirectFrames | None
    ) -> AsyncIterator[Member | None]:
        """Join the plan's group (starting it if needed), or yield None when
        this subscriber may not subscribe: the unshared path then answers it.
        Its frames are `prefix + payload + }`, written with `direct` if given."""
        services: Services = context.services
        viewer = context.viewer
        try:
            access_topic = await may_subscribe(services, viewer, plan.field, plan.args)
        except ApiError:
            yield None
            return
        member = Member(viewer, services.settings.subscriber_queue_size, prefix, direct)
        async with self._locks.hold(repr(plan.key)):
            group = self._groups.get(plan.key)
            if group is None:
                group = self._groups[plan.key] = _Group(plan)
                # The group's own hub subscriptions are not clients': the
                # members are (see live_members).
                with internal_subscriptions(group.live.set):
                    group.tasks.append(asyncio.create_task(self._run(group, services)))
                with internal_subscriptions(lambda: None):
                    if access_topic is not None:
                        watch = self._watch_access(group, services, access_topic)
                        group.tasks.append(asyncio.create_task(watch))
            group.members.add(member)
        try:
            yield member
        finally:
            async with self._locks.hold(repr(plan.key)):
                group.members.discard(member)
                if not group.members and self._groups.get(plan.key) is group:
                    del self._groups[plan.key]
                    for task in group.tasks:
                        task.cancel()
                    await asyncio.gather(*group.tasks, return_exceptions=True)

    async def _run(self, group: _Group, services: Services) -> None:
        """The group's one execution; its end (or failure) ends every member."""
        plan = group.plan
        last: bytes | None = None
        try:
            results = await self._schema.subscribe(
                plan.query,
                variable_values=plan.variables,
                context_value=Context.for_shared_stream(services),
                operation_name=plan.operation_name,
            )
            async with contextlib.aclosing(results):
                async for result in results:
                    payload = encode_result(result)
                    if isinstance(result, PreExecutionError):  # validated: not expected
                        last = payload
                        break
                    for member in list(group.members):
                        member.deliver(payload)
        except Exception:
            log.exception("shared subscription failed")
            last = encode_result(ExecutionResult(data=None, errors=[_internal()]))
        for member in list(group.members):
            member.end(last)

    async def _watch_access(self, group: _Group, services: Services, topic: str) -> None:
        """End the members who lose access, with the error the resolver gives."""
        plan = group.plan
        async with services.backends.hub.subscribe(topic) as events:
            async for event in events:
                if not isinstance(event, AccessEvent):
                    continue
                for member in list(group.members):
                    if event.user_id not in (None, member.viewer.user_id):
                        continue
                    try:
                        await may_subscribe(services, member.viewer, plan.field, plan.args)
                    except ApiError as denied:
                        member.end(_error_payload(denied))


def _error_payload(error: ApiError) -> bytes:
    """The result a subscriber gets when its access ends mid-stream: built as
    Strawberry builds an error raised by a running subscription."""
    located = GraphQLError(error.message, original_error=error)
    return encode_result(ExecutionResult(data=None, errors=[located]))


def _internal() -> GraphQLError:
    return GraphQLError("Internal server error", extensions={"code": "INTERNAL_SERVER_ERROR"})
