"""The PostgreSQL backend: rooms, channels and history in one database.

    postgresql://[user[:password]@]host:5432/dbname?schema=forge
    postgres://...?sslmode=verify-full&sslrootcert=ca.pem&pool_size=20&pool_wait=2

`schema` (default "forge") is the PostgreSQL schema that holds the tables,
so several deployments (or test runs) can share one database; it is created
and migrated at start (see `migrations`). `pool_size` (default 20) bounds
the connections of one process; a query that finds them all busy waits up to
`pool_wait` seconds (default 2), then fails with `errors.Overloaded`. Other
query parameters go to asyncpg (TLS: `sslmode`, `sslrootcert`, ...).

PostgreSQL keeps the durable roles (messages, rooms, channels) and search
(a tsvector per message with a GIN index, see `search`). The others
are not its job: on its own (`backend: postgresql`) the broker, presence,
typing and rate limits are in process memory, as for sqlite, which fits one
node; for many nodes give those roles to Redis or NATS through `role_urls`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Collection
from datetime import timedelta
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from ..errors import Unavailable
from ..factory import BackendConfigError
from ..opened import Opened
from ..sql_roles import SqlStores, open_sql_stores
from .channels import PostgresChannelStore
from .database import CONNECTION_ERRORS, PostgresDatabase
from .messages import PostgresMessageStore
from .migrations import migrate
from .rooms import PostgresRoomStore
from .search import PostgresMessageSearch

__all__ = ["DEFAULT_SCHEMA", "PostgresUrl", "delete_namespace", "open_stores", "redact"]

SCHEMES = ("postgresql", "postgres")
DEFAULT_SCHEMA = "forge"
SCHEMA_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
POOL_SIZE = 20
POOL_WAIT = 2.0
CONNECT_TIMEOUT = 3.0
# A statement that runs longer than this is taken for a server in trouble.
COMMAND_TIMEOUT = 10.0
OPEN_TIMEOUT = 10.0
N = TypeVar("N", int, float)


def redact(url: str) -> str:
    """The URL with its password (if any) replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{netloc}"))


class PostgresUrl:
    """A postgresql:// URL split into what asyncpg gets and what is ours.

    A bad parameter of ours is a BackendConfigError (a ValueError), which
    stops the start with one line."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.where = redact(url)
        if parts.scheme not in SCHEMES:
            raise BackendConfigError(f"not a PostgreSQL URL: {self.where}")
        self.schema = DEFAULT_SCHEMA
        self.pool_size = POOL_SIZE
        self.pool_wait = POOL_WAIT
        kept: list[tuple[str, str]] = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name == "schema":
                self.schema = value
            elif name == "pool_size":
                self.pool_size = _number(name, value, int, self.where)
            elif name == "pool_wait":
                self.pool_wait = _number(name, value, float, self.where)
            else:
                kept.append((name, value))
        if not SCHEMA_PATTERN.fullmatch(self.schema):
            raise BackendConfigError(
                f"schema={self.schema!r} in {self.where}: use 1-63 letters, digits or '_',"
                " not starting with a digit"
            )
        if self.pool_size < 1 or self.pool_wait <= 0:
            raise BackendConfigError(f"pool_size and pool_wait must be positive in {self.where}")
        self.dsn = urlunsplit(parts._replace(query=urlencode(kept)))


def _number(name: str, value: str, kind: type[N], where: str) -> N:
    try:
        return kind(value)
    except ValueError:
        raise BackendConfigError(f"{name}={value!r} in {where} is not a number") from None


async def _create_pool(url: PostgresUrl) -> asyncpg.Pool:
    try:
        pool = await asyncio.wait_for(
            asyncpg.create_pool(
                url.dsn,
                # No floor: keeping one would log a traceback per retry during an outage.
                min_size=0,
                max_size=url.pool_size,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
                server_settings={
                    "search_path": f'"{url.schema}", public',
                    "application_name": "forge-streaming",
                },
            ),
            OPEN_TIMEOUT,
        )
    except (
        asyncpg.InvalidPasswordError,
        asyncpg.InvalidAuthorizationSpecificationError,
    ) as exc:
        raise Unavailable(f"PostgreSQL at {url.where}: authentication failed ({exc})") from None
    except asyncpg.InvalidCatalogNameError as exc:
        raise Unavailable(f"PostgreSQL at {url.where}: {exc}") from None
    except CONNECTION_ERRORS as exc:
        raise Unavailable(f"cannot reach PostgreSQL at {url.where}: {exc or 'timed out'}") from None
    if pool is None:
        raise Unavailable(f"cannot reach PostgreSQL at {url.where}")
    return pool


async def open_database(url: str) -> PostgresDatabase:
    """Open a pool on `url` and bring its schema up to date."""
    parsed = PostgresUrl(url)
    pool = await _create_pool(parsed)
    db = PostgresDatabase(pool, schema=parsed.schema, where=parsed.where, wait=parsed.pool_wait)
    try:
        async with pool.acquire() as connection:
            await migrate(connection, parsed.schema)
    except CONNECTION_ERRORS as exc:
        await db.close()
        raise Unavailable(f"cannot reach PostgreSQL at {parsed.where}: {exc}") from None
    except BaseException:
        await db.close()
        raise
    return db


async def open_stores(url: str, roles: Collection[str], *, retention: timedelta | None) -> Opened:
    """The durable roles and search on PostgreSQL; the others in memory
    (see the module doc)."""
    stores = SqlStores[PostgresDatabase](
        open_database=lambda: open_database(url),
        search=lambda db, retention, with_messages: PostgresMessageSearch.open(
            db, retention, with_messages=with_messages
        ),
        messages=lambda db, retention, indexed: PostgresMessageStore(
            db, retention, indexed=indexed
        ),
        rooms=PostgresRoomStore,
        channels=PostgresChannelStore,
    )
    return await open_sql_stores(stores, roles, retention=retention)


async def delete_namespace(url: str) -> None:
    """Drop the URL's schema with everything in it (tests; retiring a deployment)."""
    parsed = PostgresUrl(url)
    try:
        connection = await asyncpg.connect(parsed.dsn, timeout=CONNECT_TIMEOUT)
    except CONNECTION_ERRORS as exc:
        raise Unavailable(f"cannot reach PostgreSQL at {parsed.where}: {exc}") from None
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{parsed.schema}" CASCADE')
    finally:
        await connection.close()
