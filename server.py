"""Forge Streaming: start the server, mint a token, export the schema.

    python server.py [--host H] [--port P] [--workers N] [--config FILE] [--data-dir DIR]
    python server.py token USER [--ttl 1h] [--admin] [--config FILE] [--data-dir DIR]
    python server.py schema [--check]

Settings come from code, a YAML file and FORGE_STREAMING_* variables
(core/settings.py); the command line wins over all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from backends.compaction import COMPACT_BATCH, CompactionStats
from backends.errors import BackendError
from backends.factory import OPTIONAL_ROLES, ROLES, BackendConfigError, Backends, open_backends
from backends.reindex import ReindexCounts, reindex
from core.metrics import Metrics
from core.settings import Settings, SettingsError, load_settings, parse_duration
from resolvers.compaction import run_compaction
from resolvers.housekeeping import run_housekeeping
from resolvers.services import Services
from schema import SDL_PATH, build_schema, export_sdl
from transport import admin_page, graphiql, routes
from transport.adapters import starlette as starlette_adapter
from transport.adapters.uvicorn import LIMITS_KEY, ConnectionLimits, fast_path, protocol_options
from transport.admission import TurnAdmission
from transport.api_keys import ApiKeys
from transport.auth import (
    METRICS_TOKEN_FILE_NAME,
    AuthError,
    TokenAuthority,
    load_or_create_secret,
)
from transport.data_dir import make_private
from transport.graphql_view import GraphQLView
from transport.heap import give_back_freed_memory
from transport.in_flight import ProcessBudget
from transport.request_body import BoundedBody
from transport.server_timing import ServerTiming

log = logging.getLogger("forge_streaming")

_HEAP_LOOK_EVERY = 1.0  # seconds (transport/heap.py)
_GC_YOUNG_THRESHOLD = 10_000  # net allocations between young collections (default 700)


def create_app(settings: Settings, backends: Backends | None = None) -> ASGIApp:
    """The ASGI app. Its lifespan closes the backends: the ones given (opened
    by the caller in the loop the app will run in), else ones it opens."""
    make_private(settings.data_dir)
    authority = TokenAuthority.from_settings(settings)
    metrics_token = (
        settings.metrics_token.get_secret_value()
        if settings.metrics_token is not None
        else load_or_create_secret(settings.data_dir, METRICS_TOKEN_FILE_NAME)
    )
    schema = build_schema(
        max_depth=settings.max_query_depth,
        max_aliases=settings.max_aliases,
        max_tokens=settings.max_tokens,
        max_bytes=settings.request_byte_limit,
        fast_paths=settings.fast_paths,
    )
    # A burst of requests starts its work a few at a time, each turn of the
    # event loop (transport/admission.py): HTTP requests that carry a
    # document (BoundedBody), and every WebSocket message (the view's
    # handlers, transport/ws/handlers.py).
    admission = TurnAdmission(settings.max_admitted_per_turn)
    graphql = GraphQLView(
        schema,
        authority,
        connection_init_wait_timeout=settings.init_timeout,
        fast_paths=starlette_adapter.fast_path(enabled=settings.fast_paths),
        allowed_origins=settings.allowed_origins,
        max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
        admission=admission,
        budget=ProcessBudget(settings.max_operations_in_flight),
        connection_slots=settings.max_operations_in_flight_per_connection,
        api_keys=ApiKeys.from_settings(settings),
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        opened = backends if backends is not None else await _open_backends(settings)
        metrics = Metrics()
        services = Services(settings=settings, backends=opened, metrics=metrics)
        metrics.subscriptions_active.set_function(
            lambda: services.live_subscriptions + graphql.shared.live_members()
        )
        metrics.shared_executions.set_function(graphql.shared.group_count)
        metrics.presence_topics.set_function(services.presence_watch.topic_count)
        housekeeping = asyncio.create_task(run_housekeeping(services), name="housekeeping")
        heap = asyncio.create_task(give_back_freed_memory(_HEAP_LOOK_EVERY), name="heap-trim")
        cluster = asyncio.create_task(services.cluster_link.run(), name="cluster-link")
        compaction = asyncio.create_task(run_compaction(services), name="compaction")
        # What is alive now (the schemas, modules, backends) lives as long as
        # the process: keep it out of the garbage collector's full passes,
        # which otherwise walk it all and stall requests now and then.
        gc.collect()
        gc.freeze()
        # And collect the young generation less often than every 700 net
        # allocations: a chat message allocates thousands of short-lived
        # objects, so at the default the collector ran hundreds of times a
        # second, promoted whatever was in flight, and the full passes that
        # followed walked every connection's objects (0.3 s each with 2,000
        # connections): 14-28 % of the event loop's CPU on the chat bench
        # (bench/README.md). Most of a message's objects are freed by
        # reference counting before the next young pass now.
        _, middle, old = gc.get_threshold()
        gc.set_threshold(_GC_YOUNG_THRESHOLD, middle, old)
        log.info("node %s ready on %s", settings.node_id, settings.backend)
        limits = ConnectionLimits(
            header_timeout=settings.header_timeout.total_seconds(),
            max_connections=settings.max_connections,
        )
        try:
            # The connection limits are read by our uvicorn protocol
            # (transport/adapters/uvicorn.py), which uvicorn hands this state.
            yield {"services": services, LIMITS_KEY: limits}
        finally:
            for task in (housekeeping, heap, cluster, compaction):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await opened.close()

    app = Starlette(
        routes=[
            # PUT and DELETE: graphql-sse single connection mode (transport/sse/single.py).
            Route("/graphql", graphql, methods=["GET", "POST", "PUT", "DELETE"]),
            Mount(graphiql.MOUNT_PATH, app=StaticFiles(directory=graphiql.STATIC_DIR)),
            *routes.build_routes(metrics_token),
            *admin_page.build_routes(),
        ],
        lifespan=lifespan,
    )

    # Every request's bytes bounded before the app reads them.
    timed = BoundedBody(
        ServerTiming(app),
        max_bytes=settings.request_byte_limit,
        timeout=settings.body_timeout.total_seconds(),
        admission=admission,
    )

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        # GraphQL WebSockets go straight to the view: Starlette's middleware
        # and router would hold a coroutine frame each for as long as a
        # connection lives, in every one of thousands. The view needs only
        # the lifespan state, which the server puts in every scope.
        if scope["type"] == "websocket" and scope["path"] == "/graphql":
            await graphql(scope, receive, send)
        else:
            await timed(scope, receive, send)

    return asgi


async def _open_backends(settings: Settings) -> Backends:
    return await open_backends(
        _backend_urls(settings),
        retention=settings.retention,
        subscriber_capacity=settings.subscriber_queue_size,
        insist_on=[role for role in OPTIONAL_ROLES if role in settings.role_urls],
    )


async def _check_backends(settings: Settings) -> None:
    """Open and close the backends, so a bad URL fails the start plainly
    before `--workers` processes are started (each then opens its own)."""
    backends = await _open_backends(settings)
    await backends.close()


async def _with_backends(
    settings: Settings, command: str, work: Callable[[Backends], Awaitable[int]]
) -> int:
    """Run an offline command's `work` on the opened backends, closed after;
    its exit code, or 1 (2 if they cannot be opened) on a backend error."""
    try:
        backends = await _open_backends(settings)
    except (BackendConfigError, BackendError, ImportError) as exc:
        return _cannot_open(exc)
    try:
        return await work(backends)
    except BackendError as exc:
        print(f"forge-streaming: {command} stopped: {exc}", file=sys.stderr)
        return 1
    finally:
        await backends.close()


async def _reindex(backends: Backends) -> int:
    if backends.search is None:
        print(
            "forge-streaming: no backend has the search role: set role_urls.search"
            " (or use the sqlite or postgresql backend)",
            file=sys.stderr,
        )
        return 2
    if backends.search.indexes_on_append:
        # Same store: indexed with each append, and any gap at open.
        print("reindex: the search role indexes with the history itself: nothing to do")
        return 0

    def report(counts: ReindexCounts) -> None:
        if counts.rooms % 100 == 0:
            print(f"reindex: {counts.rooms} rooms, {counts.messages} messages", flush=True)

    counts = await reindex(backends.rooms, backends.messages, backends.search, report=report)
    print(f"reindex: done, {counts.rooms} rooms, {counts.messages} messages", flush=True)
    return 0


async def _compact(settings: Settings, batch: int, backends: Backends) -> int:
    if backends.compactor is None:
        print(f"compact: the {settings.backend} history has no blocks: nothing to do")
        return 0
    if not settings.compress_after:
        print("compact: compress_after is 0 (compression off): nothing to do")
        return 0

    def report(stats: CompactionStats) -> None:
        print(f"compact: {stats.messages} messages, {stats.blocks} blocks", flush=True)

    stats = await backends.compactor.compact(
        older_than=settings.compress_after,
        idempotency_window=settings.idempotency_window,
        batch=batch,
        progress=report,
    )
    print(
        f"compact: done, {stats.messages} messages in {stats.blocks} blocks,"
        f" {stats.bytes_before} bytes -> {stats.bytes_after}, {stats.seconds:.1f} s",
        flush=True,
    )
    return 0


def _cannot_open(exc: Exception) -> int:
    print(f"forge-streaming: cannot open the backend: {exc}", file=sys.stderr)
    return 2


async def _serve(settings: Settings, options: dict[str, Any]) -> int:
    """One process: open the backends in the loop that serves, then serve.

    Opening them here rather than in the app's lifespan keeps a bad URL or
    a too-old server to one line and exit status 2 (a lifespan failure is a
    traceback from uvicorn); opening them in the same loop lets the app use
    them, so each start opens them once."""
    try:
        backends = await _open_backends(settings)
    except (BackendConfigError, BackendError, ImportError) as exc:
        return _cannot_open(exc)
    # From here the app's lifespan closes them.
    server = uvicorn.Server(uvicorn.Config(create_app(settings, backends), **options))
    await server.serve()
    return 0 if server.started else _UVICORN_STARTUP_FAILURE


# uvicorn.run's exit status when the server did not start.
_UVICORN_STARTUP_FAILURE = 3


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where installed, as `uvicorn.run` picks by default."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _backend_urls(settings: Settings) -> dict[str, str]:
    return {role: settings.backend_open_url(role) for role in ROLES}


def app_from_environment() -> ASGIApp:
    """The app of one worker of `--workers N`, with settings from the
    environment the parent process prepared."""
    return create_app(load_settings())


def _as_environment(args: argparse.Namespace) -> dict[str, str]:
    given = {
        "CONFIG": args.config,
        "DATA_DIR": args.data_dir,
        "HOST": args.host,
        "PORT": args.port,
        "WORKERS": args.workers,
    }
    return {f"FORGE_STREAMING_{k}": str(v) for k, v in given.items() if v is not None}


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="YAML settings file (env FORGE_STREAMING_CONFIG)")
    common.add_argument("--data-dir", help="data folder (env FORGE_STREAMING_DATA_DIR)")
    parser = argparse.ArgumentParser(
        prog="forge-streaming",
        description=__doc__,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="address to listen on (env FORGE_STREAMING_HOST)")
    parser.add_argument("--port", type=int, help="port (env FORGE_STREAMING_PORT)")
    parser.add_argument(
        "--workers",
        type=int,
        help="worker processes sharing the port; needs redis or nats (env FORGE_STREAMING_WORKERS)",
    )
    commands = parser.add_subparsers(dest="command")
    token = commands.add_parser("token", parents=[common], help="print a JWT for a user")
    token.add_argument("user")
    token.add_argument("--ttl", help="lifetime, e.g. 1h or 30m (default: the token_ttl setting)")
    token.add_argument(
        "--admin", action="store_true", help='a server admin\'s token ("roles": ["admin"])'
    )
    commands.add_parser(
        "reindex", parents=[common], help="index every room's history for search (idempotent)"
    )
    compact = commands.add_parser(
        "compact",
        parents=[common],
        help="pack messages older than compress_after into compressed blocks now",
    )
    compact.add_argument(
        "--batch",
        type=int,
        default=COMPACT_BATCH,
        help=f"messages per write transaction (default {COMPACT_BATCH})",
    )
    sdl = commands.add_parser("schema", help="write schema/schema.graphql from the code")
    sdl.add_argument("--check", action="store_true", help="fail if the file is out of date")
    return parser


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    overrides = {
        key: value
        for key, value in (("data_dir", args.data_dir), *extra.items())
        if value is not None
    }
    return load_settings(args.config or os.environ.get("FORGE_STREAMING_CONFIG"), **overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "schema":
        current = export_sdl()
        if args.check:
            if not SDL_PATH.exists() or SDL_PATH.read_text() != current:
                print(
                    f"{SDL_PATH.name} is out of date: run `python server.py schema`",
                    file=sys.stderr,
                )
                return 1
            return 0
        SDL_PATH.write_text(current)
        return 0
    try:
        if args.command == "token":
            settings = _settings(args)
            ttl = None if args.ttl is None else parse_duration(args.ttl)
            print(TokenAuthority.from_settings(settings).mint(args.user, ttl, admin=args.admin))
            return 0
        if args.command == "reindex":
            return asyncio.run(_with_backends(_settings(args), "reindex", _reindex))
        if args.command == "compact":
            if args.batch < 1:
                raise ValueError("--batch must be at least 1")
            settings = _settings(args)
            compact = functools.partial(_compact, settings, args.batch)
            return asyncio.run(_with_backends(settings, "compact", compact))
        settings = _settings(args, host=args.host, port=args.port, workers=args.workers)
    except (SettingsError, AuthError, ValueError) as exc:
        print(f"forge-streaming: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if settings.log_level == "trace" else settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    options = _uvicorn_options(settings)
    if settings.workers > 1:
        if settings.backend not in ("redis", "nats"):
            print(
                "forge-streaming: several workers need a shared backend: "
                "set backend to redis or nats",
                file=sys.stderr,
            )
            return 2
        try:
            asyncio.run(_check_backends(settings))
        except (BackendConfigError, BackendError, ImportError) as exc:
            return _cannot_open(exc)
        # Each worker process builds its own app from the same settings.
        os.environ.update(_as_environment(args))
        uvicorn.run(
            "server:app_from_environment", factory=True, workers=settings.workers, **options
        )
        return 0
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(_serve(settings, options))
    except KeyboardInterrupt:  # as uvicorn.run: Ctrl-C is a normal stop
        return 0


def _uvicorn_options(settings: Settings) -> dict[str, Any]:
    http_protocol, ws_protocol = protocol_options(enabled=settings.fast_paths)
    # Our protocol's keepalive ping runs on each connection's one timer
    # (transport/connection.py); uvicorn's own only where ours does not run.
    ours = fast_path(enabled=settings.fast_paths)
    return dict(
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        ws_ping_interval=None if ours else settings.ping_interval.total_seconds(),
        ws_ping_timeout=settings.pong_timeout.total_seconds(),
        ws_per_message_deflate=settings.websocket_compression,
        # A WebSocket message is bounded like an HTTP request (its frame
        # header says the size; over it: close 1009, nothing read).
        ws_max_size=settings.request_byte_limit,
        # Our protocols where uvicorn is the version they were written for:
        # HTTP with a header timeout and the connection cap
        # and the SSE direct writes; uvicorn's sans-I/O WebSocket protocol
        # made lighter, frames written to it directly
        # (transport/adapters/uvicorn.py).
        http=http_protocol,
        ws=ws_protocol,
        timeout_keep_alive=settings.idle_timeout.total_seconds(),
        # uvicorn's own cap (503 once a request's headers are in), which
        # also counts running tasks; ours refuses the connection itself.
        limit_concurrency=settings.max_connections,
        # Open SSE streams never finish by themselves: don't let them hold
        # a shutdown (or a restart) for longer than this.
        timeout_graceful_shutdown=5,
        ssl_certfile=settings.tls_cert_file,
        ssl_keyfile=settings.tls_key_file,
        ssl_ca_certs=settings.tls_ca_file,
    )


if __name__ == "__main__":
    sys.exit(main())
