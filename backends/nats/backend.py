"""The NATS backend: every role on one nats-py connection per URL.

URL: `nats://[user:password@|token@]host:port?namespace=forge` or `tls://...`
with TLS options as query parameters (`ca_file`, `cert_file`, `key_file`,
`tls_hostname`). The namespace (default "forge", [A-Za-z0-9_-]) prefixes
every subject, stream and bucket, so several deployments (or test runs) can
share one server:

    core subjects   <ns>.<topic>           fan-out (topics from backends.topics)
    stream          <ns>_history           room history, subjects <ns>.history.<room>
    KV bucket       <ns>_state             rooms, channels, epochs, client ids, statuses
    KV bucket       <ns>_live  (TTL 1 day) presence connections, typing, rate windows

Only what the asked roles need is created. The stores are in
`backends.nats.history` and one module per other role; this module connects,
checks the server, and holds the fan-out `BroadcastBackend`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final
from urllib.parse import parse_qs, urlsplit, urlunsplit

import nats
import nats.errors
import nats.js.errors
from broadcaster import BroadcastBackend, Event
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ..calls import CallStore
from ..errors import Unavailable
from ..hub import RESYNC_CHANNEL
from ..opened import Opened
from .channels import NatsChannelStore
from .cluster import NatsClusterStore
from .documents import NatsDocuments
from .history import NatsMessageStore
from .link import TRANSPORT_ERRORS, NatsLink, redact_url
from .presence import NatsPresenceStore
from .rate_limits import NatsRateLimiter
from .rooms import NatsRoomStore
from .typing_indicators import NatsTypingStore

__all__ = [
    "NatsBroker",
    "NatsTarget",
    "check_server_version",
    "delete_namespace",
    "open_stores",
    "parse_url",
    "redact_url",
]

log = logging.getLogger(__name__)

_NAMESPACE = re.compile(r"^[A-Za-z0-9_-]+$")
_LIVE_TTL: Final = 24 * 3600.0
_CONNECT_TIMEOUT: Final = 1.5

STORE_ROLES: Final = frozenset({"messages", "rooms", "channels", "presence", "typing", "limits"})

# What the stores use from the server, and the release that brought it.
FEATURES: Final = (
    ("JetStream key-value compare-and-set", (2, 6, 2)),
    ("JetStream direct get", (2, 9, 0)),
)


@dataclass(frozen=True)
class NatsTarget:
    """A parsed backend URL."""

    server: str
    """The URL nats-py connects to: scheme, credentials, host, port."""
    namespace: str
    shown: str
    """The URL with its password or token hidden, for messages."""
    tls: ssl.SSLContext | None = None
    tls_hostname: str | None = None
    options: dict[str, str] = field(default_factory=dict)


def parse_url(url: str) -> NatsTarget:
    """Split a nats:// or tls:// URL into what nats-py needs; ValueError if bad."""
    parts = urlsplit(url)
    shown = redact_url(url)
    if parts.scheme not in ("nats", "tls"):
        raise ValueError(f"{shown}: a NATS URL starts with nats:// or tls://")
    if not parts.hostname:
        raise ValueError(f"{shown}: the URL names no host")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    namespace = query.pop("namespace", "forge")
    if not _NAMESPACE.match(namespace):
        raise ValueError(f"{shown}: namespace must match [A-Za-z0-9_-]+, got {namespace!r}")
    ca_file = query.pop("ca_file", None) or query.pop("tls_ca", None)
    cert_file = query.pop("cert_file", None) or query.pop("tls_cert", None)
    key_file = query.pop("key_file", None) or query.pop("tls_key", None)
    tls_hostname = query.pop("tls_hostname", None)
    if query:
        raise ValueError(f"{shown}: unknown URL parameters {', '.join(sorted(query))}")
    context = None
    if parts.scheme == "tls" or ca_file or cert_file:
        context = ssl.create_default_context(cafile=ca_file)
        if cert_file:
            context.load_cert_chain(cert_file, key_file)
    server = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    return NatsTarget(
        server=server, namespace=namespace, shown=shown, tls=context, tls_hostname=tls_hostname
    )


def _version_tuple(version: str) -> tuple[int, int, int]:
    match = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", version.strip())
    if match is None:
        raise ValueError(f"unreadable nats-server version {version!r}")
    major, minor, patch = (int(g) for g in match.groups())
    return (major, minor, patch)


def check_server_version(version: str, roles: Collection[str], *, where: str = "") -> None:
    """Raise Unavailable, naming the feature and the release it needs, when
    the server `version` is too old for the `roles`."""
    wanted = sorted(set(roles) & STORE_ROLES)
    if not wanted:
        return  # the fan-out uses core NATS only: any version
    have = _version_tuple(version)
    for feature, needed in FEATURES:
        if have < needed:
            place = f" at {where}" if where else ""
            raise Unavailable(
                f"nats-server {version}{place} is too old: the {', '.join(wanted)} role(s) need"
                f" {feature}, which needs nats-server >= {'.'.join(map(str, needed))}"
            )


# --- fan-out ----------------------------------------------------------------


class NatsBroker(BroadcastBackend):
    """broadcaster's backend interface on core NATS subjects `<ns>.<topic>`.

    `subscribe` returns once the server registered the subscription (a
    flush), so a publish right after it is delivered. nats-py reconnects by
    itself and re-sends its subscriptions; once it is back, the broker checks
    them with a flush and yields an event on `RESYNC_CHANNEL`, so the hub's
    subscribers catch up from history. `publish` raises Unavailable while the
    connection is down; one made just as the connection drops may sit in
    nats-py's buffer and be lost (history is the source of truth, and the
    RESYNC after the outage covers it).
    """

    QUEUE_LIMIT: Final = 10_000

    def __init__(self, link: NatsLink) -> None:  # no super(): broadcaster's raises
        self._link = link
        self._prefix = f"{link.namespace}."
        self._subs: dict[str, Subscription] = {}
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        link.on_reopened(self.reopened)

    async def connect(self) -> None:
        self._link.check_connected()

    async def disconnect(self) -> None:
        for topic in list(self._subs):
            await self.unsubscribe(topic)

    async def subscribe(self, group: str) -> None:
        async with self._link.guard():
            sub = await self._link.nc.subscribe(self._prefix + group, cb=self._received)
            self._subs[group] = sub
            await self._link.nc.flush(timeout=2)

    async def unsubscribe(self, group: str) -> None:
        sub = self._subs.pop(group, None)
        if sub is not None:
            with contextlib.suppress(*TRANSPORT_ERRORS, nats.errors.BadSubscriptionError):
                await sub.unsubscribe()

    async def publish(self, channel: str, message: str) -> None:
        async with self._link.guard():
            await self._link.nc.publish(self._prefix + channel, message.encode())

    async def next_published(self) -> Event:
        return await self._queue.get()

    async def _received(self, msg: Msg) -> None:
        self._put(Event(msg.subject[len(self._prefix) :], msg.data.decode()))

    def _put(self, event: Event) -> None:
        if self._queue.qsize() >= self.QUEUE_LIMIT:
            # The hub stopped draining: drop what waits and tell everyone to
            # catch up from history rather than grow without bound.
            while not self._queue.empty():
                self._queue.get_nowait()
            event = Event(RESYNC_CHANNEL, "")
        self._queue.put_nowait(event)

    async def reconnected(self) -> None:
        with contextlib.suppress(*TRANSPORT_ERRORS):
            await self._link.nc.flush(timeout=2)
        self._put(Event(RESYNC_CHANNEL, ""))

    async def reopened(self) -> None:
        """A new connection replaced a closed one: subscribe every topic on
        it again, then have subscribers catch up from history."""
        groups = list(self._subs)
        try:
            async with self._link.guard():
                for group in groups:
                    sub = await self._link.nc.subscribe(self._prefix + group, cb=self._received)
                    if group in self._subs:  # not unsubscribed meanwhile
                        self._subs[group] = sub
                    else:
                        await sub.unsubscribe()
                await self._link.nc.flush(timeout=2)
        except Unavailable as exc:
            # Lost again: the link opens another connection and calls this again.
            log.warning("NATS fan-out: cannot subscribe again: %s", exc)
        self._put(Event(RESYNC_CHANNEL, ""))


# --- opening ------------------------------------------------------------------


async def _connect(
    target: NatsTarget,
    on_reconnect: Callable[[], Awaitable[None]],
    on_closed: Callable[[], None] = lambda: None,
) -> Client:
    """Connect once, failing within a few seconds; then reconnect forever
    (until a protocol error closes it: then `on_closed` runs)."""
    connecting = True
    seen: list[BaseException] = []

    async def error_cb(exc: Exception) -> None:
        if connecting:
            seen.append(exc)
        else:
            log.warning("NATS at %s: %s", target.shown, exc)

    async def disconnected_cb() -> None:
        if not connecting:
            log.info("NATS at %s: disconnected", target.shown)

    async def reconnected_cb() -> None:
        log.warning("NATS at %s: reconnected", target.shown)
        await on_reconnect()

    async def closed_cb() -> None:
        if not connecting:
            on_closed()

    try:
        nc = await nats.connect(
            servers=[target.server],
            name="forge-streaming",
            tls=target.tls,
            tls_hostname=target.tls_hostname,
            connect_timeout=_CONNECT_TIMEOUT,
            reconnect_time_wait=0.5,
            # Two tries at start so a bad URL fails fast; forever once connected.
            max_reconnect_attempts=1,
            allow_reconnect=True,
            error_cb=error_cb,
            disconnected_cb=disconnected_cb,
            reconnected_cb=reconnected_cb,
            closed_cb=closed_cb,
        )
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        seen.append(exc)
        if any("authorization" in str(e).lower() for e in seen):
            raise Unavailable(
                f"NATS at {target.shown} refused the connection: authorization violation"
                " (check the user and password or token in the URL)"
            ) from None
        reason = next((e for e in seen if not isinstance(e, nats.errors.NoServersError)), exc)
        raise Unavailable(
            f"cannot connect to NATS at {target.shown}: {type(reason).__name__}: {reason}"
        ) from None
    connecting = False
    nc.options["max_reconnect_attempts"] = -1
    return nc


async def _check_jetstream(link: NatsLink, roles: Collection[str]) -> None:
    wanted = ", ".join(sorted(set(roles) & STORE_ROLES))
    try:
        await link.js.account_info()
    except (*TRANSPORT_ERRORS, nats.js.errors.APIError) as exc:
        raise Unavailable(
            f"JetStream is not enabled on the NATS server at {link.shown_url}: the {wanted}"
            f" role(s) need it (run nats-server >= 2.9.0 with -js): {type(exc).__name__}"
        ) from None


async def open_stores(url: str, roles: Collection[str], *, retention: timedelta | None) -> Opened:
    """Open one connection and the stores for `roles` (see `backends.opened`)."""
    target = parse_url(url)
    brokers: list[NatsBroker] = []

    async def on_reconnect() -> None:
        for broker in brokers:
            await broker.reconnected()

    links: list[NatsLink] = []

    def on_closed() -> None:
        for link in links:
            link.connection_closed()

    async def reopen() -> Client:
        return await _connect(target, on_reconnect, on_closed)

    nc = await _connect(target, on_reconnect, on_closed)
    try:
        link = NatsLink(nc, namespace=target.namespace, url=url, reopen=reopen)
        links.append(link)
        v = nc.connected_server_version
        check_server_version(f"{v.major}.{v.minor}.{v.patch}", roles, where=target.shown)
        ns = target.namespace
        opened = Opened()
        if set(roles) & STORE_ROLES:
            await _check_jetstream(link, roles)
        if set(roles) & {"messages", "rooms", "channels", "presence"}:
            state = await link.ensure_bucket(f"{ns}_state")
        if set(roles) & {"presence", "typing", "limits"}:
            live = await link.ensure_bucket(f"{ns}_live", ttl=_LIVE_TTL)
        if "broker" in roles:
            opened.broker = NatsBroker(link)
            brokers.append(opened.broker)
        if "messages" in roles:
            messages = NatsMessageStore(link, state, retention)
            async with link.guard():
                await messages.ensure_stream()
            opened.messages = messages
        if "rooms" in roles:
            opened.rooms = NatsRoomStore(link, state)
        if "channels" in roles:
            opened.channels = NatsChannelStore(link, state)
        if "presence" in roles:
            opened.presence = NatsPresenceStore(link, state, live)
            opened.cluster = NatsClusterStore(link, state, live)
            opened.calls = CallStore(NatsDocuments(live))
        if "typing" in roles:
            opened.typing = NatsTypingStore(link, live)
        if "limits" in roles:
            opened.limits = NatsRateLimiter(link, live)
    except BaseException:
        links.clear()  # closing on purpose: nothing to open again
        await nc.close()
        raise

    async def close() -> None:
        await link.close()

    opened.ping = link.ping
    opened.close = close
    return opened


async def delete_namespace(url: str) -> None:
    """Delete the streams and buckets of the URL's namespace (for tests)."""
    target = parse_url(url)
    nc = await _connect(target, lambda: asyncio.sleep(0))
    try:
        js = nc.jetstream(timeout=3)
        ns = target.namespace
        for stream in (f"{ns}_history", f"KV_{ns}_state", f"KV_{ns}_live"):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(stream)
    finally:
        await nc.close()
