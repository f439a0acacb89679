"""One PostgreSQL database: the connection pool, its schema, error translation.

Every store of one URL shares one asyncpg pool. A store that needs more than
one statement takes a connection and a transaction (`transaction`); a single
statement runs on any free connection (`fetch`, `fetchrow`, `execute`).
Transactions run at READ COMMITTED: the stores serialise what must be
serialised with row locks (`SELECT ... FOR UPDATE`) and, for per-user quotas
that span many rows, transaction-scoped advisory locks (`lock_key`).

The resolvers know only `backends.errors`: a server that cannot be reached,
or that goes away mid-query, raises `Unavailable`; a pool whose connections
all stay busy past the wait raises `Overloaded`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ..errors import Overloaded, Unavailable

__all__ = [
    "CONNECTION_ERRORS",
    "Connection",
    "Params",
    "PostgresDatabase",
    "changed_rows",
    "lock_for_transaction",
]

# Errors that mean "PostgreSQL could not be reached, or went away".
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, timed out (asyncio's TimeoutError included)
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # the connection was closed under the pool
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up
    asyncpg.exceptions.TooManyConnectionsError,
)


Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
"""A connection of our own, or one taken from the pool."""


class Params:
    """Positional parameters ($1, $2, ...) of a statement being built."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def changed_rows(status: str) -> int:
    """The row count of a command status such as "DELETE 3" or "INSERT 0 1"."""
    tail = status.rpartition(" ")[2]
    return int(tail) if tail.isdigit() else 0


async def lock_for_transaction(connection: Connection, *key: str) -> None:
    """Hold an advisory lock on `key` until the transaction ends.

    For checks that span many rows (a user's rooms or channels against a
    quota), which no single row lock covers. The key is hashed to 64 bits:
    an unrelated key that collides only waits a little, never breaks.
    """
    await connection.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "\x1f".join(key)
    )


class PostgresDatabase:
    """The pool shared by the stores of one URL, and the schema they use."""

    def __init__(self, pool: asyncpg.Pool, *, schema: str, where: str, wait: float) -> None:
        self._pool = pool
        self.schema = schema
        self._where = where
        self._wait = wait
        self._closed = False

    @asynccontextmanager
    async def _translated(self) -> AsyncIterator[None]:
        try:
            yield
        except CONNECTION_ERRORS as exc:
            # One connection found dead: the others (opened before the same
            # restart or failover) are likely dead too. Replace them all on
            # their next use, so that one failed request clears the way.
            await self._pool.expire_connections()
            raise Unavailable(f"PostgreSQL at {self._where} is unavailable: {exc}") from exc

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        async with self._translated():
            try:
                connection = await self._pool.acquire(timeout=self._wait)
            except TimeoutError:
                if self._pool.get_size() < self._pool.get_max_size():
                    # There was room for a new connection: connecting hung.
                    raise Unavailable(
                        f"PostgreSQL at {self._where} did not answer in {self._wait:g}s"
                    ) from None
                raise Overloaded(
                    f"no connection to PostgreSQL at {self._where} came free in {self._wait:g}s"
                ) from None
            try:
                yield connection
            finally:
                await self._pool.release(connection)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A connection in a transaction; committed when the block ends normally."""
        async with self._connection() as connection, connection.transaction():
            yield connection

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self._connection() as connection:
            return list(await connection.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async with self._connection() as connection:
            return await connection.fetchrow(sql, *args)

    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; return the number of rows it changed."""
        async with self._connection() as connection:
            return changed_rows(await connection.execute(sql, *args))

    async def ping(self) -> None:
        """Raise Unavailable if the database cannot answer a query."""
        if await self.fetchrow("SELECT 1") is None:
            raise Unavailable(f"PostgreSQL at {self._where} gave no answer to SELECT 1")

    async def close(self) -> None:
        """Close the pool; later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.wait_for(self._pool.close(), timeout=5)
        except CONNECTION_ERRORS:  # asyncio's TimeoutError is an OSError
            self._pool.terminate()
