"""How many queries and mutations run at once: per process and per connection.

Without a bound, an overloaded server takes every operation it is offered:
each becomes a task, and every task waits behind every other one at each
step (the group commit, the hub, the sockets), so under twice the load it
can sustain nothing is answered or delivered for tens of seconds and then
everything arrives late at once. Two bounds keep the work admitted small
enough to finish promptly:

- `ProcessBudget`: operations running in this process. One that finds it
  full is refused at once with OVERLOADED (nothing of it ran, so nothing is
  lost: the client may send it again), never queued.
- `ConnectionSlots`: operations running on one WebSocket. At the cap the
  connection's receive loop waits for one to end before it reads the next
  frame, so a client that pipelines more than it gets answered is slowed by
  TCP itself (uvicorn reads the socket only when the app asks for a frame).

Subscriptions are not counted: they live long and hold nothing while idle
(`max_subscriptions_per_connection` bounds them); what runs for them is
bounded by the hub's queues.
"""

from __future__ import annotations

import asyncio

from graphql import GraphQLError, OperationType, get_operation_ast

from schema import ValidDocuments

OVERLOADED_MESSAGE = "the server is overloaded, try again shortly"


def overloaded_error() -> GraphQLError:
    """The refusal of an operation the process has no room for."""
    return GraphQLError(OVERLOADED_MESSAGE, extensions={"code": "OVERLOADED"})


class ProcessBudget:
    """At most `limit` operations at once in this process; `try_take` says no at once."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.running = 0
        self.refused = 0  # since start, for /metrics

    def try_take(self) -> bool:
        if self.running >= self.limit:
            self.refused += 1
            return False
        self.running += 1
        return True

    def give_back(self) -> None:
        self.running -= 1


class ConnectionSlots:
    """At most `limit` operations at once on one connection; `room` waits for one."""

    __slots__ = ("_free", "limit", "running")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self._free: asyncio.Future[None] | None = None

    async def room(self) -> None:
        """Return once fewer than `limit` run (one reader: the receive loop)."""
        while self.running >= self.limit:
            self._free = asyncio.get_running_loop().create_future()
            try:
                await self._free
            finally:
                self._free = None

    def take(self) -> None:
        self.running += 1

    def give_back(self) -> None:
        self.running -= 1
        if self._free is not None and not self._free.done():
            self._free.set_result(None)


def counted(documents: ValidDocuments, query: str, operation_name: str | None) -> bool:
    """Whether this operation counts against the budgets: a query or a
    mutation. A document that is refused is not (Strawberry answers its
    errors at once; the refusal is kept, so a repeat costs a lookup), nor is
    a subscription."""
    document = documents.check(query)
    if isinstance(document, list):
        return False
    operation = get_operation_ast(document, operation_name)
    return operation is not None and operation.operation is not OperationType.SUBSCRIPTION
