"""Resume after a reconnect for gql (WebSockets, either subprotocol).

gql's reconnecting session (`client.connect_async(reconnecting=True)`)
reconnects by itself, but a subscription that was running ends with
`TransportConnectionFailed`, and subscribing again with the same variables
would replay everything since the first `after`, or (without one) nothing
that was missed. `Resume` keeps, per live roomMessages subscription, the
cursor of the last message received, in the `init_payload` dict the
transport sends in every `connection_init`: the server's resume map,
version 1 (README "Resuming after a reconnect"):

    {"Authorization": "Bearer ...",
     "resume": {"version": 1, "roomMessages": [{"roomId": "r1", "after": "<cursor>"}]}}

and `subscribe` subscribes again after a dropped connection: the server
starts it after that cursor, so each message comes exactly once, in order.
Select `cursor` in the subscription; pass ids as literals or variables.

    init_payload = {"Authorization": f"Bearer {token}"}
    resume = Resume(init_payload)
    client = Client(transport=WebsocketsTransport(url=url, init_payload=init_payload))
    session = await client.connect_async(reconnecting=True)
    request = GraphQLRequest(MESSAGES, variable_values={"room": room})
    async for result in resume.subscribe(session, request):
        ...
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from gql import GraphQLRequest
from gql.client import ReconnectingAsyncClientSession
from gql.transport.exceptions import TransportConnectionFailed
from graphql import (
    DocumentNode,
    FieldNode,
    OperationDefinitionNode,
    OperationType,
    value_from_ast_untyped,
)

VERSION = 1
MAX_ENTRIES = 100  # the server refuses a longer map


def room_messages_field(
    document: DocumentNode, variables: dict[str, Any] | None
) -> tuple[str, str, str | None] | None:
    """(result key, roomId, threadId) of a roomMessages subscription, else None."""
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        if definition.operation is not OperationType.SUBSCRIPTION:
            continue
        field = definition.selection_set.selections[0]
        if not isinstance(field, FieldNode) or field.name.value != "roomMessages":
            return None
        args = {
            a.name.value: value_from_ast_untyped(a.value, variables) for a in field.arguments or ()
        }
        if args.get("roomId") is None:
            return None
        key = field.alias.value if field.alias else "roomMessages"
        thread = args.get("threadId")
        return key, str(args["roomId"]), None if thread is None else str(thread)
    return None


class Resume:
    """The cursors of the live subscriptions, kept in `init_payload["resume"]`."""

    def __init__(self, init_payload: dict[str, Any]) -> None:
        self.init_payload = init_payload
        # subscription -> (when updated, roomId, threadId, last cursor)
        self._live: dict[int, tuple[int, str, str | None, str]] = {}
        self._ids = itertools.count()
        self._clock = itertools.count()
        self._update()

    def _update(self) -> None:
        # Two live subscriptions of one room and thread: the one updated
        # longest ago has the older cursor; the other may see a message twice.
        oldest: dict[tuple[str, str | None], tuple[int, str, str | None, str]] = {}
        for entry in self._live.values():
            key = (entry[1], entry[2])
            if key not in oldest or entry[0] < oldest[key][0]:
                oldest[key] = entry
        entries = [
            {"roomId": room, "after": cursor} | ({"threadId": thread} if thread else {})
            for _, room, thread, cursor in list(oldest.values())[:MAX_ENTRIES]
        ]
        self.init_payload["resume"] = {"version": VERSION, "roomMessages": entries}

    async def subscribe(
        self,
        session: ReconnectingAsyncClientSession,
        request: GraphQLRequest,
        *,
        retry_wait: float = 0.25,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """`session.subscribe(request)`, subscribing again (same request)
        whenever the connection drops, until the subscription completes or fails."""
        field = room_messages_field(request.document, request.variable_values)
        me = next(self._ids)
        try:
            while True:
                try:
                    async with aclosing(session.subscribe(request)) as results:
                        async for result in results:
                            cursor = (result.get(field[0]) or {}).get("cursor") if field else None
                            if field and isinstance(cursor, str):
                                self._live[me] = (next(self._clock), field[1], field[2], cursor)
                                self._update()
                            retry_wait = 0.25
                            yield result
                    return
                except TransportConnectionFailed:
                    # The session reconnects by itself; until it has, subscribing fails at once.
                    await asyncio.sleep(retry_wait)
                    retry_wait = min(retry_wait * 2, 2.0)
        finally:
            if self._live.pop(me, None) is not None:
                self._update()
