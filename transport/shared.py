"""Shared execution of identical subscriptions.

Subscriptions on one topic with the same document, variables and operation
name run once: one execution per event, one encoded payload, handed to every
subscriber as text; a subscriber's frame differs only in its operation id.

Which subscriptions may share says the field's entry in
resolvers/subscriptions.py (tests/test_shared.py guards that the payload
types reachable from them have no viewer-dependent field). The execution
runs the field's viewer-independent stream; each subscriber is authorized
by the field's `authorize` when it joins, and again, in order with the
payloads, wherever the stream signals an access change that concerns it. A
subscriber refused on joining takes the unshared path, which answers it
exactly as before; one refused later is ended with the error the unshared
path would give it, and the others go on.

A payload goes with its event id (a room message's cursor, noted by the
resolver: schema/context.py `EventIds`), for a frame that carries one (an
SSE `id:` line); the payload itself is the same for every subscriber.

Each subscriber's frames go to its client's one outbound connection
(transport/connection.py) as the execution yields them: `write`, which
never waits; a subscriber whose connection is over its byte budget is cut
off there (the connection ends the transport's way), never slowing the
execution or the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
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

from backends.errors import BackendError, Overloaded
from resolvers import errors as api_errors
from resolvers.errors import ApiError
from resolvers.resume import NO_RESUME, ResumeMap
from resolvers.services import KeyedLocks, Services, Viewer
from resolvers.stream_signals import AccessChange
from resolvers.subscriptions import FIELDS, SharedHooks, SubscriptionField
from schema import ApiSchema, Context
from schema.bounds import check_arguments

from .connection import Connection

log = logging.getLogger(__name__)

# What keeps a subscriber out of a group: its own refusal, or a backend fault
# (an outage, or load) while checking it. Either way it takes the unshared
# path, which answers it: with the error, or with its subscription if the
# backend answers this time. Letting a fault escape from `join` ended the
# operation's task with no frame at all: acknowledged, subscribed, and
# silently nothing, ever.
_REFUSALS = (ApiError, BackendError)


# A subscriber's frame of a payload and its event id (None: the event has none).
Frame = Callable[[bytes, str | None], bytes]


@dataclass(frozen=True)
class Plan:
    """A shareable subscription: what identifies its group, and its root field."""

    key: tuple[str, bytes, str | None]
    query: str
    variables: dict[str, Any] | None
    operation_name: str | None
    field: str
    args: dict[str, Any]


class SharedSubscriber:
    """One subscriber of a group: each payload, framed its way (`frame`:
    its operation id, its transport), is written to its connection as the
    execution yields it. Await `ended()` for its end."""

    __slots__ = ("_connection", "_done", "_ended", "_frame", "cut_off", "viewer")

    def __init__(self, viewer: Viewer, connection: Connection, frame: Frame) -> None:
        self.viewer = viewer
        self._connection = connection
        self._frame = frame
        self._done = False
        self._ended = asyncio.Event()
        self.cut_off = False  # its connection refused a frame: closing or over budget

    def finished(self) -> bool:
        return self._done

    def deliver(self, payload: bytes, event_id: str | None = None) -> None:
        if self._done:
            return
        if not self._connection.write(self._frame(payload, event_id)):
            self.cut_off = True
            self.end()

    def end(self, last_payload: bytes | None = None) -> None:
        """No more payloads after `last_payload` (an error result, say)."""
        if last_payload is not None:
            self.deliver(last_payload)
        self._done = True
        self._ended.set()

    async def ended(self) -> bool:
        """Until the subscription ends; False if its connection refused a
        frame (it is closing, or was cut off as a slow consumer)."""
        await self._ended.wait()
        return not self.cut_off


@dataclass
class _Group:
    plan: Plan
    members: set[SharedSubscriber] = field(default_factory=set)
    # Subscribers being authorized to join: the group stays while they are.
    joining: int = 0
    task: asyncio.Task[None] | None = None
    # Set once the execution holds its hub subscription: from then on no
    # event is missed, so the members count as live subscribers.
    live: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when the execution has ended: nobody joins any more.
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    # Access changes the stream signalled: a subscriber authorized while
    # one came must be authorized again.
    access_changes: int = 0


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
        self._graphql_schema: GraphQLSchema = schema.graphql_core
        self._groups: dict[tuple[str, bytes, str | None], _Group] = {}
        self._locks = KeyedLocks()

    def group_count(self) -> int:
        return len(self._groups)

    def live_members(self) -> int:
        """Subscribers whose group's execution is receiving events."""
        return sum(len(g.members) for g in self._groups.values() if g.live.is_set())

    def plan(
        self,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        resume: ResumeMap = NO_RESUME,
    ) -> Plan | None:
        """The plan if this subscription can be shared, else None (also when
        its document is refused: the unshared path says why). `resume` is its
        connection's resume map: a subscription it resumes replays, so it
        runs alone."""
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
        subscription = FIELDS.get(name)
        if subscription is None or node.directives or subscription_type is None:
            return None
        coerced = get_variable_values(
            self._graphql_schema, operation.variable_definitions or (), variables or {}
        )
        if isinstance(coerced, list):  # invalid variables: the unshared path says why
            return None
        args = get_argument_values(subscription_type.fields[name], node, coerced)
        try:
            check_arguments(subscription_type.fields[name], args)
        except ApiError:
            return None  # out of bounds: the unshared path says why
        if not subscription.shareable(subscription.resumed(args, resume)):
            return None
        key = (query, orjson.dumps(variables or {}, option=orjson.OPT_SORT_KEYS), operation_name)
        # A subscriber waits in its plan's frame for as long as it stays:
        # the group's own plan spares it a copy of the query and arguments.
        group = self._groups.get(key)
        if group is not None:
            return group.plan
        return Plan(key, query, variables, operation_name, name, args)

    @contextlib.asynccontextmanager
    async def join(
        self,
        plan: Plan,
        context: Context,
        connection: Connection,
        frame: Frame,
    ) -> AsyncIterator[SharedSubscriber | None]:
        """Join the plan's group (starting it if needed), or yield None when
        this subscriber may not subscribe or the backend failed while checking
        it: the unshared path then answers it.
        Its frames, `frame(payload, event_id)`, are written to `connection`."""
        services: Services = context.services
        viewer = context.viewer
        subscription = FIELDS[plan.field]
        known = self._groups.get(plan.key)
        # With a live group whose stream signals no access change meanwhile,
        # this one check is enough: a later change reaches the member.
        mark = known.access_changes if known is not None and known.live.is_set() else None
        try:
            await subscription.authorize(services, viewer, plan.args)
        except _REFUSALS:
            yield None
            return
        async with self._locks.hold(repr(plan.key)):
            group = self._groups.get(plan.key)
            if group is None or group.ended.is_set():
                group = self._groups[plan.key] = _Group(plan)
                group.task = asyncio.create_task(self._run(group, services))
            group.joining += 1
        member: SharedSubscriber | None = None
        try:
            if group is not known or mark is None or group.access_changes != mark:
                member = await self._admit(group, subscription, services, viewer, connection, frame)
            else:
                member = self._member(group, viewer, connection, frame)
        finally:
            group.joining -= 1
            if member is None:
                await self._leave(group)
        if member is None:
            yield None
            return
        try:
            yield member
        finally:
            group.members.discard(member)
            await self._leave(group)

    def _member(
        self,
        group: _Group,
        viewer: Viewer,
        connection: Connection,
        frame: Frame,
    ) -> SharedSubscriber:
        member = SharedSubscriber(viewer, connection, frame)
        group.members.add(member)
        return member

    async def _admit(
        self,
        group: _Group,
        subscription: SubscriptionField,
        services: Services,
        viewer: Viewer,
        connection: Connection,
        frame: Frame,
    ) -> SharedSubscriber | None:
        """Authorize the subscriber again once the group is live, until no
        access change came meanwhile; None if refused or the group ended."""
        live = asyncio.ensure_future(group.live.wait())
        ended = asyncio.ensure_future(group.ended.wait())
        try:
            await asyncio.wait((live, ended), return_when=asyncio.FIRST_COMPLETED)
        finally:
            live.cancel()
            ended.cancel()
        while not group.ended.is_set():
            seen = group.access_changes
            try:
                await subscription.authorize(services, viewer, group.plan.args)
            except _REFUSALS:
                return None
            if group.access_changes == seen and not group.ended.is_set():
                return self._member(group, viewer, connection, frame)
        return None

    async def _leave(self, group: _Group) -> None:
        """Stop the group's execution once nobody is in it or joining it."""
        key = group.plan.key
        async with self._locks.hold(repr(key)):
            if group.members or group.joining:
                return
            if self._groups.get(key) is group:
                del self._groups[key]
            task = group.task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self, group: _Group, services: Services) -> None:
        """The group's one execution; its end (or failure) ends every member."""
        plan = group.plan

        async def on_access_change(change: AccessChange) -> None:
            group.access_changes += 1
            await self._recheck(group, services, change)

        hooks = SharedHooks(on_live=group.live.set, on_access_change=on_access_change)
        context = Context.for_shared_stream(services, hooks)
        event_ids = context.event_ids
        last: bytes | None = None
        try:
            results = await self._schema.subscribe(
                plan.query,
                variable_values=plan.variables,
                context_value=context,
                operation_name=plan.operation_name,
            )
            async with contextlib.aclosing(results):
                async for result in results:
                    payload = encode_result(result)
                    if isinstance(result, PreExecutionError):  # validated: not expected
                        last = payload
                        break
                    event_id = None if event_ids is None else event_ids.take()
                    members = list(group.members)
                    for member in members:
                        member.deliver(payload, event_id)
                    services.metrics.deliveries.inc(len(members))
        except Exception:
            log.exception("shared subscription failed")
            last = encode_result(ExecutionResult(data=None, errors=[_internal()]))
        finally:
            group.ended.set()
        for member in list(group.members):
            member.end(last)

    async def _recheck(self, group: _Group, services: Services, change: AccessChange) -> None:
        """End the members the change refuses, with the error the resolver gives."""
        subscription = FIELDS[group.plan.field]
        verdicts: dict[str, bytes | None] = {}  # one check per user
        for member in list(group.members):
            user_id = member.viewer.user_id
            if not change.concerns(user_id) or member.finished():
                continue
            if user_id not in verdicts:
                try:
                    await subscription.authorize(services, member.viewer, group.plan.args)
                    verdicts[user_id] = None
                except ApiError as denied:
                    verdicts[user_id] = _error_payload(denied)
                except BackendError as fault:
                    # Access unknown: end the member (it may have lost it),
                    # saying why, rather than fail the whole group.
                    verdicts[user_id] = _error_payload(_backend_fault(fault))
            refusal = verdicts[user_id]
            if refusal is not None:
                member.end(refusal)


def _error_payload(error: ApiError) -> bytes:
    """The result a subscriber gets when its access ends mid-stream: built as
    Strawberry builds an error raised by a running subscription."""
    located = GraphQLError(error.message, original_error=error)
    return encode_result(ExecutionResult(data=None, errors=[located]))


def _backend_fault(fault: BackendError) -> ApiError:
    if isinstance(fault, Overloaded):
        return api_errors.Overloaded("the server is overloaded, try again shortly")
    return api_errors.Unavailable("the backend is unavailable, try again")


def _internal() -> GraphQLError:
    return GraphQLError("Internal server error", extensions={"code": "INTERNAL_SERVER_ERROR"})
