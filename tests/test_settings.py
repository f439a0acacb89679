from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from core.settings import (
    CONFIG_ENV,
    Settings,
    SettingsError,
    format_duration,
    load_settings,
    parse_duration,
    redacted_url,
)

SEED_YAML = """\
# config.yaml
extensions:
  streaming:
    backend: redis
    backend_urls:
      - redis://localhost:6379
    enable_rooms: true
    enable_channels: true
    enable_presence: true
    enable_typing_indicators: true
    enable_message_history: true
    max_connections_per_user: 5
    max_rooms_per_user: 50
    max_message_size: 65536
    message_retention: 720h # 30 days
"""


pytestmark = pytest.mark.usefixtures("clean_settings_env")


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(exc: pytest.ExceptionInfo[SettingsError]) -> list[str]:
    return exc.value.problems


# --- durations -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("720h", timedelta(hours=720)),
        ("30s", timedelta(seconds=30)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("500ms", timedelta(milliseconds=500)),
        ("1.5h", timedelta(minutes=90)),
        ("2m30s", timedelta(minutes=2, seconds=30)),
        ("1500us", timedelta(microseconds=1500)),
        ("2000ns", timedelta(microseconds=2)),
        ("0", timedelta(0)),
        ("45", timedelta(seconds=45)),
        ("0.25", timedelta(milliseconds=250)),
        (" 10s ", timedelta(seconds=10)),
    ],
)
def test_parse_duration_accepts_go_durations_and_seconds(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abc", "invalid duration 'abc'"),
        ("10", None),
        ("1h 30m", "invalid duration '1h 30m'"),
        ("5x", "invalid duration '5x'"),
        ("h", "invalid duration 'h'"),
        ("", "invalid duration ''"),
        ("-5s", "duration must not be negative, got '-5s'"),
        ("-3", "duration must not be negative, got '-3'"),
        ("inf", "invalid duration 'inf'"),
    ],
)
def test_parse_duration_rejects_malformed_and_negative(text: str, message: str | None) -> None:
    if message is None:
        assert parse_duration(text) == timedelta(seconds=10)
        return
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    for value in (timedelta(hours=720), timedelta(minutes=90), timedelta(milliseconds=1500)):
        assert parse_duration(format_duration(value)) == value
    assert format_duration(timedelta(hours=1, minutes=30)) == "1h30m"
    assert format_duration(timedelta(0)) == "0s"
    assert format_duration(timedelta(microseconds=2500)) == "2ms500us"


def test_duration_fields_accept_numbers_and_timedelta() -> None:
    settings = load_settings(ping_interval=15, pong_timeout=2.5, write_timeout=timedelta(seconds=3))
    assert settings.ping_interval == timedelta(seconds=15)
    assert settings.pong_timeout == timedelta(seconds=2.5)
    assert settings.write_timeout == timedelta(seconds=3)


def test_durations_serialize_as_go_strings_in_json() -> None:
    settings = load_settings(ping_interval="1m30s")
    dumped = settings.model_dump(mode="json")
    assert dumped["ping_interval"] == "1m30s"
    assert dumped["message_retention"] == "720h"
    assert settings.model_dump()["ping_interval"] == timedelta(seconds=90)


# --- defaults and sources --------------------------------------------------------


def test_defaults() -> None:
    settings = load_settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.data_dir == Path("data")
    assert settings.log_level == "info"
    assert settings.backend == "sqlite"
    assert settings.backend_urls == []
    assert settings.backend_username is None
    assert settings.backend_password is None
    assert settings.role_urls == {}
    assert settings.enable_rooms is True
    assert settings.enable_channels is True
    assert settings.enable_presence is True
    assert settings.enable_typing_indicators is True
    assert settings.enable_message_history is True
    assert (
        settings.max_connections_per_user,
        settings.max_rooms_per_user,
        settings.max_channels_per_user,
        settings.max_message_size,
        settings.max_messages_per_second,
    ) == (5, 50, 100, 65536, 100)
    assert settings.ping_interval == timedelta(seconds=30)
    assert settings.pong_timeout == timedelta(seconds=10)
    assert settings.write_timeout == timedelta(seconds=10)
    assert settings.init_timeout == timedelta(seconds=10)
    assert settings.message_retention == timedelta(hours=720)
    assert settings.retention == timedelta(days=30)
    assert (settings.tls_cert_file, settings.tls_key_file, settings.tls_ca_file) == (None,) * 3
    assert settings.jwt_secret is None
    assert settings.jwt_algorithm == "HS256"
    assert settings.token_ttl == timedelta(hours=24)
    assert settings.typing_timeout == timedelta(seconds=5)
    assert settings.presence_ttl == timedelta(seconds=30)
    assert settings.presence_grace == timedelta(seconds=5)
    assert settings.allowed_origins == []
    assert (
        settings.max_query_depth,
        settings.max_aliases,
        settings.max_tokens,
        settings.max_page_size,
        settings.subscriber_queue_size,
    ) == (12, 30, 5000, 200, 1024)


def test_zero_retention_keeps_forever() -> None:
    settings = load_settings(message_retention="0s")
    assert settings.message_retention == timedelta(0)
    assert settings.retention is None


def test_seed_yaml_loads_as_it_is(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, SEED_YAML))
    assert settings.backend == "redis"
    assert settings.backend_urls == ["redis://localhost:6379"]
    assert settings.max_connections_per_user == 5
    assert settings.max_rooms_per_user == 50
    assert settings.max_message_size == 65536
    assert settings.message_retention == timedelta(hours=720)
    assert settings.enable_typing_indicators is True
    assert settings.backend_url("broker") == "redis://localhost:6379"


def test_flat_yaml(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "backend: nats\n"
        "backend_urls: [nats://n1:4222, nats://n2:4222]\n"
        "port: 9001\n"
        "enable_presence: false\n"
        "ping_interval: 1m\n"
        "node_id: 7\n"
        "role_urls:\n  messages: sqlite:///history.db\n",
    )
    settings = load_settings(path)
    assert settings.backend == "nats"
    assert settings.backend_urls == ["nats://n1:4222", "nats://n2:4222"]
    assert settings.port == 9001
    assert settings.enable_presence is False
    assert settings.ping_interval == timedelta(minutes=1)
    assert settings.node_id == "7"
    assert settings.backend_url("messages") == "sqlite:///history.db"
    assert settings.backend_url("broker") == "nats://n1:4222"


def test_empty_yaml_means_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "# nothing yet\n"))
    assert settings.port == 8000
    assert settings.backend == "sqlite"


def test_env_overrides_yaml_and_overrides_override_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, SEED_YAML)
    monkeypatch.setenv("FORGE_STREAMING_MAX_ROOMS_PER_USER", "7")
    monkeypatch.setenv("forge_streaming_max_message_size", "1024")
    monkeypatch.setenv("FORGE_STREAMING_PORT", "9100")
    settings = load_settings(path, port=9200)
    assert settings.max_rooms_per_user == 7  # env beats YAML (50)
    assert settings.max_message_size == 1024  # env names are case-insensitive
    assert settings.port == 9200  # override beats env
    assert settings.backend == "redis"  # untouched YAML value stays
    assert settings.max_connections_per_user == 5


def test_none_overrides_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORGE_STREAMING_PORT", "9100")
    settings = load_settings(port=None, host=None)
    assert settings.port == 9100
    assert settings.host == "127.0.0.1"


def test_env_lists_and_role_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORGE_STREAMING_BACKEND", "redis")
    monkeypatch.setenv("FORGE_STREAMING_BACKEND_URLS", "redis://r1:6379/0, redis://r2:6379/0")
    monkeypatch.setenv("FORGE_STREAMING_ALLOWED_ORIGINS", '["https://app.example.com/"]')
    monkeypatch.setenv("FORGE_STREAMING_ROLE_URLS__MESSAGES", "sqlite:///h.db")
    monkeypatch.setenv("FORGE_STREAMING_BACKEND_PASSWORD", "s3cret")
    settings = load_settings()
    assert settings.backend_urls == ["redis://r1:6379/0", "redis://r2:6379/0"]
    assert settings.allowed_origins == ["https://app.example.com"]
    assert settings.role_urls == {"messages": "sqlite:///h.db"}
    assert settings.backend_password is not None
    assert settings.backend_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(write(tmp_path, "port: 8123\n")))
    assert load_settings().port == 8123


def test_settings_built_directly_use_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORGE_STREAMING_MAX_ALIASES", "3")
    assert Settings(port=8080).max_aliases == 3


# --- errors ----------------------------------------------------------------------


def test_typo_in_yaml_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, SEED_YAML.replace("max_connections_per_user", "max_conections_per_user"))
    with pytest.raises(SettingsError) as exc:
        load_settings(path)
    assert problems(exc) == [
        "config.yaml: unknown setting 'max_conections_per_user' in extensions.streaming "
        "(did you mean 'max_connections_per_user'?)"
    ]


def test_typo_in_flat_yaml_and_unknown_top_level_keys(tmp_path: Path) -> None:
    flat = write(tmp_path, "max_conections_per_user: 3\nport: 8001\n", "flat.yaml")
    with pytest.raises(SettingsError) as exc:
        load_settings(flat)
    assert problems(exc) == [
        "flat.yaml: unknown setting 'max_conections_per_user' "
        "(did you mean 'max_connections_per_user'?)"
    ]

    nested = write(tmp_path, "server: {}\nextensions:\n  auth: {}\n  streaming: {port: 1}\n")
    with pytest.raises(SettingsError) as exc:
        load_settings(nested)
    assert problems(exc) == [
        "config.yaml: unknown setting 'server' (only 'extensions' is read)",
        "config.yaml: unknown setting 'auth' in extensions",
    ]


def test_typo_in_env_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORGE_STREAMING_MAX_CONECTIONS_PER_USER", "3")
    monkeypatch.setenv("FORGE_STREAMING_CONFIG_FILE", "x.yaml")
    with pytest.raises(SettingsError) as exc:
        load_settings()
    assert sorted(problems(exc)) == [
        "environment: unknown setting FORGE_STREAMING_CONFIG_FILE "
        "(did you mean 'FORGE_STREAMING_CONFIG'?)",
        "environment: unknown setting FORGE_STREAMING_MAX_CONECTIONS_PER_USER "
        "(did you mean 'FORGE_STREAMING_MAX_CONNECTIONS_PER_USER'?)",
    ]


def test_unknown_override_is_named() -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings(prot=80)
    assert problems(exc) == ["unknown setting 'prot' (did you mean 'port'?)"]


def test_bad_values_are_all_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        "port: 0\nping_interval: abc\nmessage_retention: -5s\nmax_message_size: 0\nbogus: 1\n",
    )
    monkeypatch.setenv("FORGE_STREAMING_WRITE_TIMEOUT", "-1")
    with pytest.raises(SettingsError) as exc:
        load_settings(path)
    assert problems(exc) == [
        "config.yaml: unknown setting 'bogus'",
        "port: Input should be greater than or equal to 1 (from config.yaml)",
        "max_message_size: Input should be greater than or equal to 1 (from config.yaml)",
        "ping_interval: invalid duration 'abc': use seconds or a Go duration such as "
        "'30s', '1h30m', '500ms', '720h' (from config.yaml)",
        "write_timeout: duration must not be negative, got '-1' "
        "(from environment FORGE_STREAMING_WRITE_TIMEOUT)",
        "message_retention: duration must not be negative, got '-5s' (from config.yaml)",
    ]
    assert str(exc.value) == "\n".join(problems(exc))
    assert isinstance(exc.value, ValueError)


def test_zero_timeouts_are_rejected() -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings(ping_interval=0, port=70000)
    assert problems(exc) == [
        "port: Input should be less than or equal to 65535",
        "ping_interval: duration must be greater than zero",
    ]


def test_missing_file_invalid_yaml_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"missing\.yaml: config file not found"):
        load_settings(tmp_path / "missing.yaml")
    with pytest.raises(SettingsError, match=r"^bad\.yaml: invalid YAML: "):
        load_settings(write(tmp_path, "port: [8000\n", "bad.yaml"))
    with pytest.raises(SettingsError) as exc:
        load_settings(write(tmp_path, "- port\n- 8000\n", "list.yaml"))
    assert problems(exc) == ["list.yaml: expected a mapping of settings, got list"]
    with pytest.raises(SettingsError, match="duplicate key 'port'"):
        load_settings(write(tmp_path, "port: 1\nport: 2\n", "dup.yaml"))
    with pytest.raises(SettingsError) as exc:
        load_settings(write(tmp_path, "extensions:\n  streaming: [1]\n", "shape.yaml"))
    assert problems(exc) == ["shape.yaml: 'extensions.streaming' must be a mapping"]


def test_bad_env_json_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORGE_STREAMING_ROLE_URLS", "not json")
    with pytest.raises(SettingsError, match=r"^environment: .*role_urls"):
        load_settings()


def test_tls_files(tmp_path: Path) -> None:
    cert = write(tmp_path, "cert", "cert.pem")
    key = write(tmp_path, "key", "key.pem")
    settings = load_settings(tls_cert_file=cert, tls_key_file=key)
    assert (settings.tls_cert_file, settings.tls_key_file) == (cert, key)

    with pytest.raises(SettingsError) as exc:
        load_settings(tls_cert_file=cert)
    assert problems(exc) == ["tls_key_file: tls_cert_file and tls_key_file must be given together"]

    with pytest.raises(SettingsError) as exc:
        load_settings(tls_cert_file=cert, tls_key_file="nope.pem", tls_ca_file="ca.pem")
    assert problems(exc) == [
        "tls_key_file: file not found: nope.pem",
        "tls_ca_file: file not found: ca.pem",
    ]


def test_jwt_settings_checked_together(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings(jwt_algorithm="RS256")
    assert problems(exc) == ["jwt_public_key_file: required when jwt_algorithm is RS256"]

    with pytest.raises(SettingsError) as exc:
        load_settings(jwt_secret="short")
    assert problems(exc) == ["jwt_secret: must be at least 32 bytes long"]

    with pytest.raises(SettingsError) as exc:
        load_settings(jwt_public_key_file=write(tmp_path, "k", "pub.pem"))
    assert problems(exc) == ["jwt_public_key_file: only used with RS256; jwt_algorithm is HS256"]

    secret = "x" * 40
    settings = load_settings(jwt_secret=secret, jwt_issuer="forge", token_ttl="1h")
    assert settings.jwt_secret is not None
    assert settings.jwt_secret.get_secret_value() == secret
    assert settings.token_ttl == timedelta(hours=1)
    assert secret not in str(settings)


def test_other_values_validated() -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings(
            log_level="loud",
            node_id="bad id!",
            backend="mysql",
            allowed_origins=["example.com"],
            role_urls={"broker": "http://x", "mailbox": "memory://"},
        )
    found = problems(exc)
    assert "log_level: must be one of critical, error, warning, info, debug, trace" in found
    assert any(p.startswith("node_id: must be 1-64 characters") for p in found)
    assert any(p.startswith("backend: Input should be 'memory', 'sqlite'") for p in found)
    assert any(p.startswith("allowed_origins: 'example.com' is not an origin") for p in found)
    assert any(p.startswith("role_urls.mailbox.[key]: Input should be 'broker'") for p in found)
    assert load_settings(log_level="DEBUG").log_level == "debug"


# --- backend URLs ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "url"),
    [
        ("memory", "memory://"),
        ("sqlite", "sqlite:///data/forge-streaming.db"),
        ("redis", "redis://127.0.0.1:6379/0"),
        ("nats", "nats://127.0.0.1:4222"),
        ("postgresql", "postgresql://127.0.0.1:5432/forge_streaming"),
    ],
)
def test_backend_url_defaults(backend: str, url: str) -> None:
    settings = load_settings(backend=backend)
    for role in ("broker", "messages", "rooms", "channels", "presence", "typing", "limits"):
        assert settings.backend_url(role) == url


def test_sqlite_default_follows_data_dir(tmp_path: Path) -> None:
    assert (
        load_settings(data_dir="var/state").backend_url("messages")
        == "sqlite:///var/state/forge-streaming.db"
    )
    assert (
        load_settings(data_dir=tmp_path).backend_url("messages")
        == f"sqlite:///{tmp_path.as_posix()}/forge-streaming.db"
    )


def test_backend_url_overrides() -> None:
    settings = load_settings(
        backend="redis",
        backend_urls=["redis://cache:6379/1", "redis://cache2:6379/1"],
        role_urls={"messages": "sqlite:///history.db", "presence": "memory://"},
    )
    assert settings.backend_url("broker") == "redis://cache:6379/1"
    assert settings.backend_url("messages") == "sqlite:///history.db"
    assert settings.backend_url("presence") == "memory://"
    with pytest.raises(ValueError, match="unknown backend role 'mailbox'"):
        settings.backend_url("mailbox")


def test_backend_inferred_from_urls_and_mismatch_reported() -> None:
    assert load_settings(backend_urls=["nats://n:4222"]).backend == "nats"
    with pytest.raises(SettingsError) as exc:
        load_settings(backend="redis", backend_urls=["nats://user:pw@n:4222"])
    assert problems(exc) == [
        "backend_urls: 'nats://user:***@n:4222' does not match backend 'redis' "
        "(expected redis:// or rediss://)"
    ]


def test_postgresql_urls_choose_the_backend_and_get_credentials() -> None:
    assert load_settings(backend_urls=["postgres://db/app"]).backend == "postgresql"
    settings = load_settings(
        backend="redis",
        role_urls={"rooms": "postgresql://db/app?schema=forge"},
        backend_username="app",
        backend_password="s3cret",
    )
    assert settings.backend_url("rooms") == "postgresql://app:s3cret@db/app?schema=forge"
    assert settings.backend_url("broker") == "redis://app:s3cret@127.0.0.1:6379/0"


def test_credentials_are_inserted() -> None:
    settings = load_settings(
        backend="redis", backend_username="app", backend_password="p@ss:word/1"
    )
    assert settings.backend_url("broker") == "redis://app:p%40ss%3Aword%2F1@127.0.0.1:6379/0"

    with_userinfo = load_settings(
        backend_urls=["redis://other:pw@r:6379/0"], backend_username="app", backend_password="x"
    )
    assert with_userinfo.backend_url("broker") == "redis://other:pw@r:6379/0"

    password_only = load_settings(backend="nats", backend_password="tok")
    assert password_only.backend_url("broker") == "nats://:tok@127.0.0.1:4222"

    local = load_settings(backend="sqlite", backend_username="app", backend_password="x")
    assert local.backend_url("rooms") == "sqlite:///data/forge-streaming.db"


def test_redacted_url() -> None:
    assert redacted_url("redis://app:secret@r:6379/0") == "redis://app:***@r:6379/0"
    assert redacted_url("redis://:secret@r:6379") == "redis://:***@r:6379"
    assert redacted_url("nats://user@n:4222") == "nats://user@n:4222"
    assert redacted_url("sqlite:///data/x.db") == "sqlite:///data/x.db"
    assert redacted_url("rediss://r:6380/0?password=pw&ssl_cert_reqs=none") == (
        "rediss://r:6380/0?password=***&ssl_cert_reqs=none"
    )
    assert redacted_url("redis://u:p@[::1:6379/0") == "redis://u:***@[::1:6379/0"


# --- node id ---------------------------------------------------------------------


def test_node_id_generated_when_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = load_settings(), load_settings(node_id="")
    assert re.fullmatch(r"node-[0-9a-f]{8}", first.node_id)
    assert re.fullmatch(r"node-[0-9a-f]{8}", second.node_id)
    assert first.node_id != second.node_id
    assert load_settings(node_id="node-1").node_id == "node-1"
    monkeypatch.setenv("FORGE_STREAMING_NODE_ID", "eu-west-2")
    assert load_settings().node_id == "eu-west-2"


# --- sessions, presence, event rates and /metrics (issue 9) ----------------------


def test_security_settings_defaults_are_safe() -> None:
    settings = load_settings()
    assert settings.max_subscriptions_per_connection == 100
    assert settings.max_presence_user_ids == 100
    assert settings.presence_visibility == "rooms"
    assert settings.max_typing_per_second == 3
    assert settings.max_presence_changes_per_minute == 30
    assert settings.max_room_changes_per_minute == 60
    assert settings.metrics_token is None  # generated into the data folder


def test_security_settings_refuse_unsafe_values() -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings(
            metrics_token="short",
            presence_visibility="anyone",
            max_typing_per_second=0,
            max_subscriptions_per_connection=0,
        )
    found = problems(exc)
    assert any(p.startswith("metrics_token: ") and "16 characters" in p for p in found), found
    assert any(p.startswith("presence_visibility: ") for p in found), found
    assert any(p.startswith("max_typing_per_second: ") for p in found), found
    assert any(p.startswith("max_subscriptions_per_connection: ") for p in found), found


def test_metrics_token_is_never_shown() -> None:
    token = "prometheus-scrapes-with-this"
    settings = load_settings(metrics_token=token)
    assert settings.metrics_token is not None
    assert settings.metrics_token.get_secret_value() == token
    assert token not in repr(settings)


def test_compression_settings_are_named_when_bad() -> None:
    assert load_settings().compress_after == timedelta(hours=24)
    assert load_settings(compress_after="0").compress_after == timedelta(0)
    with pytest.raises(SettingsError) as exc:
        load_settings(compress_after="-1h", idempotency_window="soon")
    assert problems(exc) == [
        "compress_after: duration must not be negative, got '-1h'",
        "idempotency_window: invalid duration 'soon': use seconds or a Go duration such as "
        "'30s', '1h30m', '500ms', '720h'",
    ]
