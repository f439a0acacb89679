"""Versioned schema migrations, run when a node opens the database.

Each migration is a version number and SQL; `schema_migrations` records the
versions applied. A node applies the missing ones in one transaction that
first takes an advisory lock on the schema's name, so two nodes starting at
once never both migrate: the second waits, then finds nothing left to do.
PostgreSQL's DDL is transactional, so a migration that fails leaves nothing
half-done. A database migrated by a newer server (a version this one does
not know) is refused rather than used with a schema it does not understand.

Migrations are append-only: never edit one that has shipped, add the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..errors import Unavailable
from .database import Connection

__all__ = ["MIGRATIONS", "Migration", "migrate"]

# A migration may build an index over the whole history (minutes on
# millions of messages): it is not a statement of a server in trouble.
MIGRATION_TIMEOUT: Final = 3600.0


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "rooms, channels and history",
        """
        CREATE TABLE streams (
            room_id text PRIMARY KEY,
            epoch text NOT NULL,
            last_offset bigint NOT NULL,
            incarnation text NOT NULL
        );
        CREATE TABLE messages (
            room_id text NOT NULL,
            seq bigint NOT NULL,
            id text NOT NULL UNIQUE,
            kind text NOT NULL,
            user_id text NOT NULL,
            ts timestamptz NOT NULL,
            channel_id text,
            event text,
            data text NOT NULL,
            metadata text NOT NULL,
            thread_id text,
            client_message_id text,
            PRIMARY KEY (room_id, seq)
        );
        CREATE UNIQUE INDEX messages_client_id
            ON messages (room_id, user_id, client_message_id)
            WHERE client_message_id IS NOT NULL;
        CREATE INDEX messages_thread ON messages (room_id, thread_id, seq);
        CREATE INDEX messages_ts ON messages (ts);
        CREATE TABLE rooms (
            id text PRIMARY KEY,
            name text NOT NULL,
            owner text NOT NULL,
            is_private boolean NOT NULL,
            description text,
            metadata text NOT NULL,
            created_at timestamptz NOT NULL,
            incarnation text NOT NULL
        );
        CREATE INDEX rooms_created ON rooms (created_at, id);
        CREATE TABLE members (
            room_id text NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
            user_id text NOT NULL,
            role text NOT NULL,
            joined_at timestamptz NOT NULL,
            added boolean NOT NULL,
            PRIMARY KEY (room_id, user_id)
        );
        CREATE INDEX members_user ON members (user_id, added);
        CREATE TABLE bans (
            room_id text NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
            user_id text NOT NULL,
            PRIMARY KEY (room_id, user_id)
        );
        CREATE TABLE channels (
            id text PRIMARY KEY,
            name text NOT NULL,
            created_by text NOT NULL,
            is_private boolean NOT NULL,
            description text,
            created_at timestamptz NOT NULL
        );
        CREATE INDEX channels_creator ON channels (created_by);
        CREATE INDEX channels_created ON channels (created_at, id);
        CREATE TABLE grants (
            channel_id text NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
            user_id text NOT NULL,
            PRIMARY KEY (channel_id, user_id)
        );
        """,
    ),
    Migration(
        2,
        "search",
        # tsv is NULL for a message appended while the search role was
        # elsewhere (or off); the search role indexes those when it opens.
        """
        ALTER TABLE messages ADD COLUMN tsv tsvector;
        CREATE INDEX messages_tsv ON messages USING gin (tsv);
        CREATE INDEX messages_unindexed ON messages (room_id, seq) WHERE tsv IS NULL;
        CREATE INDEX messages_room_ts ON messages (room_id, ts);
        """,
    ),
    Migration(
        3,
        "compressed blocks of old messages",
        # As SQLite's (backends/sqlite_blocks.py), times in the block tables
        # as microseconds; offsets up to streams.compacted_upto are in
        # blocks. compacted_messages keeps what search filters and orders
        # on, the tsvector included, so a search finds the same messages
        # with the same scores; searchable_messages shows both tables as one.
        """
        ALTER TABLE streams ADD COLUMN compacted_upto bigint NOT NULL DEFAULT 0;
        CREATE TABLE message_blocks (
            id bigserial PRIMARY KEY,
            room_id text NOT NULL,
            first_seq bigint NOT NULL,
            last_seq bigint NOT NULL,
            min_ts bigint NOT NULL,
            last_ts bigint NOT NULL,
            count integer NOT NULL,
            dict_id bigint NOT NULL,
            body bytea NOT NULL
        );
        -- zstd bytes: PostgreSQL's own compression would only cost CPU.
        ALTER TABLE message_blocks ALTER COLUMN body SET STORAGE EXTERNAL;
        CREATE INDEX message_blocks_room ON message_blocks (room_id, last_seq);
        CREATE INDEX message_blocks_ts ON message_blocks (last_ts);
        CREATE TABLE block_dicts (
            id bigserial PRIMARY KEY,
            room_id text NOT NULL,
            body bytea NOT NULL
        );
        CREATE INDEX block_dicts_room ON block_dicts (room_id);
        CREATE TABLE compacted_client_ids (
            room_id text NOT NULL,
            user_id text NOT NULL,
            client_message_id text NOT NULL,
            seq bigint NOT NULL,
            ts bigint NOT NULL,
            PRIMARY KEY (room_id, user_id, client_message_id)
        );
        CREATE INDEX compacted_client_ids_ts ON compacted_client_ids (ts);
        CREATE TABLE compacted_messages (
            room_id text NOT NULL,
            seq bigint NOT NULL,
            user_id text NOT NULL,
            ts timestamptz NOT NULL,
            event text,
            thread_id text,
            tsv tsvector,
            PRIMARY KEY (room_id, seq)
        );
        CREATE INDEX compacted_messages_tsv ON compacted_messages USING gin (tsv);
        CREATE INDEX compacted_messages_ts ON compacted_messages (ts);
        CREATE VIEW searchable_messages AS
            SELECT room_id, seq, id, kind, user_id, ts, channel_id, event, data, metadata,
                thread_id, client_message_id, tsv FROM messages
            UNION ALL
            SELECT room_id, seq, NULL::text, NULL::text, user_id, ts, NULL::text, event,
                NULL::text, NULL::text, thread_id, NULL::text, tsv FROM compacted_messages;
        """,
    ),
    Migration(
        4,
        "search by words and rooms in one index",
        # A search names its rooms: with the room in the same GIN index as
        # the words, one index scan finds the matches in those rooms only
        # (`ARRAY[room_id] && $rooms`), instead of fetching every match of
        # the words, or every message of the rooms, and filtering. The
        # index also answers the words alone, so the old one goes.
        """
        CREATE INDEX messages_tsv_room ON messages USING gin (tsv, (ARRAY[room_id]));
        DROP INDEX messages_tsv;
        CREATE INDEX compacted_messages_tsv_room
            ON compacted_messages USING gin (tsv, (ARRAY[room_id]));
        DROP INDEX compacted_messages_tsv;
        """,
    ),
)


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


async def migrate(
    connection: Connection,
    schema: str,
    migrations: tuple[Migration, ...] = MIGRATIONS,
) -> list[int]:
    """Bring `schema` up to the last of `migrations`; return the versions applied now."""
    known = max(m.version for m in migrations)
    applied_now: list[int] = []
    async with connection.transaction():
        await connection.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            f"forge-streaming migrate {schema}",
        )
        await connection.execute(f"CREATE SCHEMA IF NOT EXISTS {_quoted(schema)}")
        await connection.execute(
            f"CREATE TABLE IF NOT EXISTS {_quoted(schema)}.schema_migrations ("
            " version integer PRIMARY KEY,"
            " name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        rows = await connection.fetch(f"SELECT version FROM {_quoted(schema)}.schema_migrations")
        applied = {row["version"] for row in rows}
        newer = sorted(v for v in applied if v > known)
        if newer:
            raise Unavailable(
                f"the PostgreSQL schema {schema!r} is at version {newer[-1]}, newer than this"
                f" server knows ({known}): upgrade the server"
            )
        await connection.execute(f"SET LOCAL search_path TO {_quoted(schema)}, public")
        for migration in sorted(migrations, key=lambda m: m.version):
            if migration.version in applied:
                continue
            await connection.execute(migration.sql, timeout=MIGRATION_TIMEOUT)
            await connection.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            applied_now.append(migration.version)
    return applied_now
