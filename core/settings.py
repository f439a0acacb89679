"""Typed server settings, filled from code, environment variables and a YAML file.

Priority, highest first: keyword overrides (code, CLI) > ``FORGE_STREAMING_*``
environment variables > the YAML file > defaults. The YAML file may use the Forge
seed's shape (``extensions: {streaming: {...}}``) or a flat mapping of the same keys.
Start-up code calls :func:`load_settings`; every problem it finds is reported at once
in one :class:`SettingsError`.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import pydantic_settings
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "ApiKey",
    "BackendRole",
    "Duration",
    "PositiveDuration",
    "Settings",
    "SettingsError",
    "format_duration",
    "load_settings",
    "parse_duration",
    "redacted_url",
]

ENV_PREFIX = "FORGE_STREAMING_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
"""Environment variable naming the YAML file when ``load_settings`` gets none."""

BackendRole = Literal[
    "broker", "messages", "rooms", "channels", "presence", "typing", "limits", "search"
]
BackendName = Literal["memory", "sqlite", "redis", "nats", "postgresql"]

_REQUEST_OVERHEAD = 64 * 1024  # bytes of a request besides its message
_MIN_HMAC_SECRET = 32  # bytes; RFC 7518 section 3.2 asks for at least the hash size
_MIN_METRICS_TOKEN = 16  # characters: guessing it must not be practical
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_SCHEMES: dict[str, tuple[str, ...]] = {
    "memory": ("memory",),
    "sqlite": ("sqlite",),
    "redis": ("redis", "rediss"),
    "nats": ("nats", "tls"),
    "postgresql": ("postgresql", "postgres"),
}
_NETWORK_SCHEMES = frozenset({*_SCHEMES["redis"], *_SCHEMES["nats"], *_SCHEMES["postgresql"]})
_SECRET_QUERY_KEYS = frozenset({"password", "pass", "pwd", "secret", "token"})


class SettingsError(ValueError):
    """Invalid configuration; the message names every offending key, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


# --- durations -------------------------------------------------------------------

_UNIT_MICROSECONDS = {
    "ns": Decimal("0.001"),
    "us": Decimal(1),
    "µs": Decimal(1),  # U+00B5 MICRO SIGN
    "μs": Decimal(1),  # U+03BC GREEK SMALL LETTER MU
    "ms": Decimal(1_000),
    "s": Decimal(1_000_000),
    "m": Decimal(60_000_000),
    "h": Decimal(3_600_000_000),
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_HINT = "use seconds or a Go duration such as '30s', '1h30m', '500ms', '720h'"


def parse_duration(text: str) -> timedelta:
    """Parse a Go duration (``"1h30m"``, ``"500ms"``) or a number of seconds (``"30"``)."""
    raw = text.strip()
    body = raw[1:] if raw[:1] in "+-" else raw
    total = Decimal(0)
    try:
        total = Decimal(body) * _UNIT_MICROSECONDS["s"]
        if not total.is_finite():
            raise ValueError(f"invalid duration {text!r}: {_DURATION_HINT}")
    except InvalidOperation:
        pos = 0
        for match in _DURATION_PART.finditer(body):
            if match.start() != pos:
                break
            total += Decimal(match[1]) * _UNIT_MICROSECONDS[match[2]]
            pos = match.end()
        if not body or pos != len(body):
            raise ValueError(f"invalid duration {text!r}: {_DURATION_HINT}") from None
    if raw.startswith("-") and total:
        raise ValueError(f"duration must not be negative, got {text!r}")
    try:
        return timedelta(microseconds=int(total.to_integral_value()))
    except OverflowError:
        raise ValueError(f"duration {text!r} is too large") from None


def format_duration(value: timedelta) -> str:
    """Format a duration the way :func:`parse_duration` reads it (``"1h30m"``)."""
    micros = value // timedelta(microseconds=1)
    if micros == 0:
        return "0s"
    sign, micros = ("-", -micros) if micros < 0 else ("", micros)
    parts = []
    for unit, size in (("h", 3_600_000_000), ("m", 60_000_000), ("s", 1_000_000), ("ms", 1_000)):
        count, micros = divmod(micros, size)
        if count:
            parts.append(f"{count}{unit}")
    if micros:
        parts.append(f"{micros}us")
    return sign + "".join(parts)


def _to_timedelta(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
        if value < 0:
            raise ValueError(f"duration must not be negative, got {value!r}")
        try:
            return timedelta(seconds=value)
        except OverflowError:
            raise ValueError(f"duration {value!r} is too large") from None
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")


def _not_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError(f"duration must not be negative, got {value}")
    return value


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("duration must be greater than zero")
    return value


_serialize_duration = PlainSerializer(format_duration, return_type=str, when_used="json")

Duration = Annotated[
    timedelta, BeforeValidator(_to_timedelta), AfterValidator(_not_negative), _serialize_duration
]
"""A non-negative ``timedelta`` read from ``"720h"``, ``"1h30m"``, ``"500ms"`` or seconds."""

PositiveDuration = Annotated[
    timedelta, BeforeValidator(_to_timedelta), AfterValidator(_positive), _serialize_duration
]
"""A :data:`Duration` that must be greater than zero."""


# --- URLs ------------------------------------------------------------------------


def redacted_url(url: str) -> str:
    """Return ``url`` with its password (and secret query parameters) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return re.sub(r"(//[^/@:]*):[^@/]*@", r"\1:***@", url)
    result = url
    if password is not None:
        userinfo, _, hostport = parts.netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        result = result.replace(f"//{parts.netloc}", f"//{user}:***@{hostport}", 1)
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        if any(key.lower() in _SECRET_QUERY_KEYS for key, _ in pairs):
            query = urlencode(
                [(k, "***" if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs],
                safe="*",
            )
            result = result.replace(f"?{parts.query}", f"?{query}", 1)
    return result


def _scheme(url: str) -> str:
    return url.partition("://")[0].lower() if "://" in url else ""


def _split_list(value: Any) -> Any:
    """Accept a list, a JSON list, or a comma-separated string (handy in env vars)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                raise ValueError("invalid JSON list") from None
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


def _int_to_str(value: Any) -> Any:
    # YAML reads `node_id: 1` as an int; an id is text.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


# --- API keys --------------------------------------------------------------------

_MIN_API_KEY = 32  # characters: a key is a password nobody types
_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class ApiKey(BaseModel):
    """One back-end service's key (the ``api_keys`` setting).

    Give the key itself (``key``) or only its SHA-256 in hex (``key_sha256``), so
    a config file need not hold the secret. ``act_as`` names the users the key
    may act as (``"*"``: anyone); ``admin`` lets it run admin fields as itself.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    key: SecretStr | None = None
    key_sha256: SecretStr | None = None
    act_as: list[str] | Literal["*"] = []
    admin: bool = True

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _KEY_NAME.fullmatch(value):
            raise ValueError("must be 1-64 letters, digits, '.', '_' or '-'")
        return value

    @field_validator("act_as", mode="before")
    @classmethod
    def _split_act_as(cls, value: Any) -> Any:
        return value if value == "*" else _split_list(value)

    @model_validator(mode="after")
    def _check_key(self) -> ApiKey:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError(f"api key {self.name!r}: give exactly one of key and key_sha256")
        if self.key is not None and len(self.key.get_secret_value()) < _MIN_API_KEY:
            raise ValueError(
                f"api key {self.name!r}: key must be at least {_MIN_API_KEY} characters long"
            )
        if self.key_sha256 is not None and not _SHA256_HEX.fullmatch(
            self.key_sha256.get_secret_value().lower()
        ):
            raise ValueError(f"api key {self.name!r}: key_sha256 must be 64 hex digits")
        return self


# --- the settings object ---------------------------------------------------------


class _YamlSource(PydanticBaseSettingsSource):
    """Values loaded from the YAML file, below environment variables in priority."""

    def __init__(self, settings_cls: type[BaseSettings], data: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = dict(data)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


# The data of the YAML file being loaded by `load_settings`, visible only to that call.
_yaml_data: ContextVar[Mapping[str, Any] | None] = ContextVar("forge_streaming_yaml", default=None)


class Settings(BaseSettings):
    """All server options. Build it with :func:`load_settings` (or directly, for tests)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    # server
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8000, ge=1, le=65535)
    data_dir: Path = Path("data")
    log_level: str = "info"

    # backend
    backend: BackendName = "sqlite"
    backend_urls: Annotated[list[str], NoDecode] = []
    backend_username: str | None = None
    backend_password: SecretStr | None = None
    role_urls: dict[BackendRole, str] = {}
    # Redis: connections per process, and how long a request waits for one
    # when all are busy before it fails with OVERLOADED (never UNAVAILABLE:
    # that stays the outage's code). A Redis URL's own `max_connections` and
    # `timeout` query parameters win.
    redis_max_connections: int = Field(default=50, ge=1, le=10_000)
    redis_pool_wait: PositiveDuration = timedelta(seconds=2)

    # features
    enable_rooms: bool = True
    enable_channels: bool = True
    enable_presence: bool = True
    enable_typing_indicators: bool = True
    enable_message_history: bool = True

    # limits
    max_connections_per_user: int = Field(default=5, ge=1)
    max_rooms_per_user: int = Field(default=50, ge=1)
    max_room_additions_per_user: int = Field(default=500, ge=1)
    max_channels_per_user: int = Field(default=100, ge=1)
    max_message_size: int = Field(default=65536, ge=1)
    max_messages_per_second: int = Field(default=100, ge=1)

    # timeouts
    ping_interval: PositiveDuration = timedelta(seconds=30)
    pong_timeout: PositiveDuration = timedelta(seconds=10)
    # subscriptions-transport-ws clients drop a connection after 30 s without `ka`.
    legacy_keepalive_interval: PositiveDuration = timedelta(seconds=10)
    write_timeout: PositiveDuration = timedelta(seconds=10)
    init_timeout: PositiveDuration = timedelta(seconds=10)

    # retention: 0 keeps messages forever
    message_retention: Duration = timedelta(hours=720)
    # compression of old messages: history older than this is packed into
    # zstd blocks (0 turns it off); a clientMessageId stays idempotent for at
    # least idempotency_window after the send, compacted or not
    compress_after: Duration = timedelta(hours=24)
    idempotency_window: Duration = timedelta(hours=24)

    # distributed
    node_id: Annotated[str, BeforeValidator(_int_to_str)] = ""
    # Each node reports itself through the backend every node_report_interval;
    # a report lives node_ttl, so a node that stops (killed) drops out of
    # Query.cluster that long after its last report.
    node_report_interval: PositiveDuration = timedelta(seconds=5)
    node_ttl: PositiveDuration = timedelta(seconds=15)
    # How long a cluster-wide request (connections, disconnectUser) waits
    # for the other nodes' replies.
    cluster_reply_timeout: PositiveDuration = timedelta(seconds=2)

    # TLS
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = None

    # authentication
    jwt_secret: SecretStr | None = None
    jwt_algorithm: Literal["HS256", "RS256"] = "HS256"
    jwt_public_key_file: Path | None = None
    jwt_private_key_file: Path | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    token_ttl: PositiveDuration = timedelta(hours=24)
    # Server admins (besides tokens with "roles": ["admin"]): user ids.
    admin_users: Annotated[list[str], NoDecode] = []
    # Keys of back-end services on /graphql (see ApiKey); a JSON list in the
    # environment: FORGE_STREAMING_API_KEYS='[{"name": "billing", "key": "..."}]'.
    api_keys: list[ApiKey] = []

    # ephemeral state
    typing_timeout: PositiveDuration = timedelta(seconds=5)
    presence_ttl: PositiveDuration = timedelta(seconds=30)
    presence_grace: Duration = timedelta(seconds=5)

    # calls (WebRTC signaling, resolvers/calls.py)
    max_call_participants: int = Field(default=8, ge=2, le=1000)
    # Bytes of one signal's payload as JSON (an SDP offer is a few kB).
    max_signal_size: int = Field(default=16384, ge=256, le=1 << 20)
    # Signals one user may send per second, across nodes.
    max_signals_per_second: int = Field(default=50, ge=1)
    # Signals waiting for one session that is not reading them (a reconnect):
    # beyond this a sender is refused with LIMIT_EXCEEDED, nothing is dropped.
    max_buffered_signals: int = Field(default=256, ge=1, le=10_000)
    # ICE servers handed to clients (iceServers); TURN only with turn_secret
    # (coturn's use-auth-secret), and only to members of a room with a live call.
    stun_urls: Annotated[list[str], NoDecode] = []
    turn_urls: Annotated[list[str], NoDecode] = []
    turn_secret: SecretStr | None = None
    turn_credential_ttl: PositiveDuration = timedelta(hours=1)

    # WebSocket Origin allow-list; empty means same host only
    allowed_origins: Annotated[list[str], NoDecode] = []

    # GraphQL and delivery limits
    max_query_depth: int = Field(default=12, ge=1)
    max_aliases: int = Field(default=30, ge=1)
    max_tokens: int = Field(default=5000, ge=1)
    max_page_size: int = Field(default=200, ge=1)
    subscriber_queue_size: int = Field(default=1024, ge=1)
    # Unsent bytes one WebSocket may hold before it is cut off as a slow
    # consumer; 1 MiB, as Centrifugo's client_queue_max_size.
    max_send_buffer: int = Field(default=1 << 20, ge=1024)
    # Library internals used for speed (uvicorn, Starlette, Strawberry,
    # broadcaster) live in one adapter module per library, used only on the
    # versions they were written for; false takes the public path everywhere.
    fast_paths: bool = True

    # Sessions, presence and user-triggered events
    # Operations one WebSocket or one SSE single-connection stream may run at once.
    max_subscriptions_per_connection: int = Field(default=100, ge=1)
    # Users one presence(userIds:) query or subscription may name.
    max_presence_user_ids: int = Field(default=100, ge=1)
    # Whose presence a user may see: users sharing a room with them, or everyone.
    presence_visibility: Literal["rooms", "everyone"] = "rooms"
    # Typing starts (not refreshes) per user and second; stops follow starts.
    max_typing_per_second: int = Field(default=3, ge=1)
    # Presence changes (setPresence) per user and minute.
    max_presence_changes_per_minute: int = Field(default=30, ge=1)
    # Room changes that notify others (join, leave, update, members) per user and minute.
    max_room_changes_per_minute: int = Field(default=60, ge=1)
    # Bearer token for GET /metrics; unset: generated into <data_dir>/metrics-token.
    metrics_token: SecretStr | None = None

    # Bytes of one request: an HTTP body (with its query string), a
    # WebSocket message, and so a GraphQL document. Unset: derived from
    # max_message_size (see request_byte_limit).
    max_request_bytes: int | None = Field(default=None, ge=1024)

    # connections: cut off clients that hold a socket without using it
    header_timeout: PositiveDuration = timedelta(seconds=10)
    body_timeout: PositiveDuration = timedelta(seconds=30)
    idle_timeout: PositiveDuration = timedelta(seconds=5)
    # Open connections of every kind; twice the 10,000 idle subscribers
    # one node is sized for.
    max_connections: int = Field(default=20_000, ge=1)
    # Requests (HTTP requests carrying a document, WebSocket messages) that
    # may start their work in one turn of the event loop; the rest of a
    # burst waits for later turns (transport/admission.py). A refused
    # document costs about a millisecond: this bounds a turn, and so how
    # long /health waits behind a burst.
    max_admitted_per_turn: int = Field(default=4, ge=1)
    # Queries and mutations running at once (transport/in_flight.py): in the
    # process, where one more is refused at once with OVERLOADED rather than
    # queued behind the others, and on one WebSocket, whose next frame is
    # read only when one of them ends (TCP slows the client down).
    max_operations_in_flight: int = Field(default=128, ge=1)
    max_operations_in_flight_per_connection: int = Field(default=8, ge=1)
    # Per-message deflate costs CPU for every subscriber of every event.
    websocket_compression: bool = False
    workers: int = Field(default=1, ge=1, le=256)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _YamlSource(settings_cls, _yaml_data.get() or {})

    @field_validator(
        "backend_urls", "allowed_origins", "admin_users", "stun_urls", "turn_urls", mode="before"
    )
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("log_level", mode="after")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.strip().lower()
        if level not in _LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(_LOG_LEVELS)}")
        return level

    @field_validator("node_id", mode="after")
    @classmethod
    def _check_node_id(cls, value: str) -> str:
        if value and not _NODE_ID.fullmatch(value):
            raise ValueError(
                "must be 1-64 characters: letters, digits, '.', '_', ':', '-' "
                "(starting with a letter or digit)"
            )
        return value

    @field_validator("role_urls", mode="after")
    @classmethod
    def _check_role_urls(cls, value: dict[BackendRole, str]) -> dict[BackendRole, str]:
        known = sorted({s for schemes in _SCHEMES.values() for s in schemes})
        for role, url in value.items():
            if _scheme(url) not in known:
                raise ValueError(
                    f"{role}: {redacted_url(url)!r} needs a scheme among {', '.join(known)}"
                )
        return value

    @field_validator("allowed_origins", mode="after")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and _scheme(origin) not in ("http", "https"):
                raise ValueError(f"{origin!r} is not an origin like 'https://example.com'")
        return [origin.rstrip("/") for origin in value]

    @field_validator("api_keys", mode="after")
    @classmethod
    def _check_api_keys(cls, value: list[ApiKey]) -> list[ApiKey]:
        names = [key.name for key in value]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"names must differ: {', '.join(twice)} given more than once")
        return value

    @field_validator("jwt_secret", mode="after")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < _MIN_HMAC_SECRET:
            raise ValueError(f"must be at least {_MIN_HMAC_SECRET} bytes long")
        return value

    @field_validator("metrics_token", mode="after")
    @classmethod
    def _check_metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < _MIN_METRICS_TOKEN:
            raise ValueError(f"must be at least {_MIN_METRICS_TOKEN} characters long")
        return value

    @model_validator(mode="after")
    def _check_together(self) -> Settings:
        problems: dict[str, str] = {}
        self._check_backend(problems)
        self._check_tls(problems)
        self._check_jwt(problems)
        if self.node_ttl <= self.node_report_interval:
            problems["node_ttl"] = "must be longer than node_report_interval"
        self._check_ice(problems)
        if problems:
            # one line per key; `load_settings` splits them back into separate problems
            raise ValueError("\n".join(f"{key}: {msg}" for key, msg in problems.items()))
        if not self.node_id:
            self.node_id = "node-" + secrets.token_hex(4)
        return self

    def _check_backend(self, problems: dict[str, str]) -> None:
        if not self.backend_urls:
            return
        schemes = {_scheme(url) for url in self.backend_urls}
        if "backend" not in self.model_fields_set and len(schemes) == 1:
            # Only URLs were given: let them choose the backend.
            for name, allowed in _SCHEMES.items():
                if schemes <= set(allowed):
                    self.backend = name  # type: ignore[assignment]
        allowed = _SCHEMES[self.backend]
        wrong = [redacted_url(url) for url in self.backend_urls if _scheme(url) not in allowed]
        if wrong:
            problems["backend_urls"] = (
                f"{', '.join(map(repr, wrong))} does not match backend {self.backend!r} "
                f"(expected {' or '.join(s + '://' for s in allowed)})"
            )

    def _check_tls(self, problems: dict[str, str]) -> None:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            missing = "tls_key_file" if self.tls_key_file is None else "tls_cert_file"
            problems[missing] = "tls_cert_file and tls_key_file must be given together"
        if self.tls_ca_file is not None and self.tls_cert_file is None:
            problems["tls_ca_file"] = "needs tls_cert_file and tls_key_file"
        for key in ("tls_cert_file", "tls_key_file", "tls_ca_file"):
            _check_file(key, getattr(self, key), problems)

    def _check_jwt(self, problems: dict[str, str]) -> None:
        if self.jwt_algorithm == "RS256":
            if self.jwt_public_key_file is None:
                problems["jwt_public_key_file"] = "required when jwt_algorithm is RS256"
            if self.jwt_secret is not None:
                problems["jwt_secret"] = "only used with HS256; jwt_algorithm is RS256"
        else:
            for key in ("jwt_public_key_file", "jwt_private_key_file"):
                if getattr(self, key) is not None:
                    problems[key] = "only used with RS256; jwt_algorithm is HS256"
        for key in ("jwt_public_key_file", "jwt_private_key_file"):
            _check_file(key, getattr(self, key), problems)

    def _check_ice(self, problems: dict[str, str]) -> None:
        for key, schemes in (
            ("stun_urls", ("stun:", "stuns:")),
            ("turn_urls", ("turn:", "turns:")),
        ):
            wrong = [url for url in getattr(self, key) if not url.startswith(schemes)]
            if wrong:
                problems[key] = f"{wrong[0]!r} does not start with {' or '.join(schemes)}"
        if self.turn_urls and self.turn_secret is None:
            problems["turn_secret"] = "required when turn_urls is set (coturn use-auth-secret)"

    @property
    def request_byte_limit(self) -> int:
        """`max_request_bytes`, or enough for the largest legal message: its
        JSON may triple when a client escapes every character (a 2-byte
        UTF-8 character written as `\\uXXXX` is 6 bytes), plus 64 KiB for
        the document and the other variables."""
        if self.max_request_bytes is not None:
            return self.max_request_bytes
        return 3 * self.max_message_size + _REQUEST_OVERHEAD

    @property
    def retention(self) -> timedelta | None:
        """How long messages are kept; ``None`` keeps them forever."""
        return self.message_retention or None

    def backend_url(self, role: str) -> str:
        """The URL for one backend role, with the configured credentials inserted."""
        if role not in get_args(BackendRole):
            raise ValueError(f"unknown backend role {role!r}")
        url = self.role_urls.get(role)  # type: ignore[call-overload]
        if url is None and role == "search":
            # The index belongs with the history it indexes.
            return self.backend_url("messages")
        if url is None:
            url = self.backend_urls[0] if self.backend_urls else self._default_url()
        return self._with_credentials(url)

    def backend_open_url(self, role: str) -> str:
        """`backend_url` with the pool settings a Redis URL does not name itself."""
        url = self.backend_url(role)
        parts = urlsplit(url)
        if parts.scheme.lower() not in _SCHEMES["redis"]:
            return url
        query = parse_qsl(parts.query, keep_blank_values=True)
        named = {name for name, _ in query}
        pool = {
            "max_connections": str(self.redis_max_connections),
            "timeout": f"{self.redis_pool_wait.total_seconds():g}",
        }
        query += [(name, value) for name, value in pool.items() if name not in named]
        return urlunsplit(parts._replace(query=urlencode(query)))

    def _default_url(self) -> str:
        if self.backend == "memory":
            return "memory://"
        if self.backend == "sqlite":
            return f"sqlite:///{self.data_dir.as_posix()}/forge-streaming.db"
        if self.backend == "redis":
            return "redis://127.0.0.1:6379/0"
        if self.backend == "postgresql":
            return "postgresql://127.0.0.1:5432/forge_streaming"
        return "nats://127.0.0.1:4222"

    def _with_credentials(self, url: str) -> str:
        if self.backend_username is None and self.backend_password is None:
            return url
        parts = urlsplit(url)
        if parts.scheme.lower() not in _NETWORK_SCHEMES or "@" in parts.netloc:
            return url
        userinfo = quote(self.backend_username or "", safe="")
        if self.backend_password is not None:
            userinfo += ":" + quote(self.backend_password.get_secret_value(), safe="")
        return urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc}"))


def _check_file(key: str, path: Path | None, problems: dict[str, str]) -> None:
    if path is not None and key not in problems and not path.is_file():
        problems[key] = f"file not found: {path}"


# --- loading ---------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys instead of keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if not isinstance(key, str | int | float | bool | None):
            continue  # unhashable keys are reported as unknown settings later
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _did_you_mean(name: str, choices: list[str]) -> str:
    match = difflib.get_close_matches(name, choices, n=1, cutoff=0.75)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _read_yaml(path: Path, problems: list[str]) -> dict[str, Any]:
    """Read the config file into a flat mapping of known keys, noting every problem."""
    where = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(f"{path}: config file not found")
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: cannot read config file: {exc}")
        return {}
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        problems.append(f"{where}: invalid YAML: {exc}")
        return {}
    if document is None:  # an empty file, or only comments
        return {}
    if not isinstance(document, dict):
        problems.append(f"{where}: expected a mapping of settings, got {type(document).__name__}")
        return {}

    data: dict[Any, Any] = document
    section = ""
    if "extensions" in document:  # the Forge seed's shape
        for key in document:
            if key != "extensions":
                problems.append(
                    f"{where}: unknown setting {str(key)!r} (only 'extensions' is read)"
                )
        extensions = document["extensions"] or {}
        if not isinstance(extensions, dict):
            problems.append(f"{where}: 'extensions' must be a mapping")
            return {}
        for key in extensions:
            if key != "streaming":
                problems.append(f"{where}: unknown setting {str(key)!r} in extensions")
        data = extensions.get("streaming") or {}
        if not isinstance(data, dict):
            problems.append(f"{where}: 'extensions.streaming' must be a mapping")
            return {}
        section = " in extensions.streaming"

    fields = list(Settings.model_fields)
    known: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(key, str) and key in Settings.model_fields:
            known[key] = value
        else:
            problems.append(
                f"{where}: unknown setting {str(key)!r}{section}{_did_you_mean(str(key), fields)}"
            )
    return known


def _unknown_env(problems: list[str]) -> None:
    fields = list(Settings.model_fields)
    env_names = [CONFIG_ENV, *(ENV_PREFIX + name.upper() for name in fields)]
    for var in os.environ:
        upper = var.upper()
        if not upper.startswith(ENV_PREFIX) or upper == CONFIG_ENV:
            continue
        name = upper[len(ENV_PREFIX) :].lower()
        if name in Settings.model_fields:
            continue
        head, sep, _ = name.partition("__")
        if sep and head == "role_urls":
            continue  # FORGE_STREAMING_ROLE_URLS__BROKER; the role itself is validated
        problems.append(f"environment: unknown setting {var}{_did_you_mean(upper, env_names)}")


def _origin(key: str, overrides: Mapping[str, Any], yaml_keys: set[str], path: Path | None) -> str:
    if key in overrides:
        return ""
    env_name = ENV_PREFIX + key.upper()
    for var in os.environ:
        upper = var.upper()
        if upper == env_name or upper.startswith(env_name + "__"):
            return f" (from environment {var})"
    if key in yaml_keys and path is not None:
        return f" (from {path.name})"
    return ""


@contextmanager
def _yaml_context(data: Mapping[str, Any]) -> Iterator[None]:
    token = _yaml_data.set(data)
    try:
        yield
    finally:
        _yaml_data.reset(token)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings: ``overrides`` > environment > YAML file > defaults.

    ``config_file`` defaults to the ``FORGE_STREAMING_CONFIG`` environment variable; with
    neither, no file is read. Overrides that are ``None`` are ignored, so unset CLI
    flags fall through to the other sources. Raises :class:`SettingsError` naming every
    unknown key and bad value.
    """
    if config_file is None:
        config_file = next(
            (value for var, value in os.environ.items() if var.upper() == CONFIG_ENV and value),
            None,
        )
    path = Path(config_file) if config_file is not None else None
    overrides = {key: value for key, value in overrides.items() if value is not None}

    problems: list[str] = []
    data = _read_yaml(path, problems) if path is not None else {}
    _unknown_env(problems)

    try:
        with _yaml_context(data):
            settings = Settings(**overrides)
    except ValidationError as exc:
        problems.extend(_describe(exc, overrides, set(data), path))
    except pydantic_settings.SettingsError as exc:  # e.g. a JSON env var that is not JSON
        problems.append(f"environment: {exc}")
    if problems:
        raise SettingsError(problems)
    return settings


def _describe(
    exc: ValidationError, overrides: Mapping[str, Any], yaml_keys: set[str], path: Path | None
) -> Iterator[str]:
    fields = list(Settings.model_fields)
    for error in exc.errors(include_url=False, include_input=False):
        loc = [str(part) for part in error["loc"]]
        key = loc[0] if loc else ""
        if error["type"] == "extra_forbidden" and len(loc) == 1:
            yield f"unknown setting {key!r}{_did_you_mean(key, fields)}"
            continue
        message = error["msg"].removeprefix("Value error, ")
        if not loc:  # a model-level check already names its keys
            for part in message.splitlines():
                name = part.partition(":")[0]
                yield part + _origin(name, overrides, yaml_keys, path)
            continue
        yield f"{'.'.join(loc)}: {message}{_origin(key, overrides, yaml_keys, path)}"
