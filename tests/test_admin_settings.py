"""The `admin_users` and `api_keys` settings: every source, every refusal,
and no key in what settings print or complain about."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from core.settings import SettingsError, load_settings
from transport.api_keys import ActAsRefused, ApiKeys, authenticate_http
from transport.auth import AuthError, TokenAuthority

KEY = "service-key-" + "s" * 32


pytestmark = pytest.mark.usefixtures("clean_settings_env")


def test_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORGE_STREAMING_ADMIN_USERS", "alice, bob")
    monkeypatch.setenv(
        "FORGE_STREAMING_API_KEYS",
        f'[{{"name": "billing", "key": "{KEY}", "act_as": "*"}},'
        f' {{"name": "n", "key_sha256": "{"a" * 64}", "act_as": "carol,dave", "admin": false}}]',
    )
    settings = load_settings(None)
    assert settings.admin_users == ["alice", "bob"]
    billing, notifier = settings.api_keys
    assert billing.act_as == "*" and billing.admin
    assert notifier.act_as == ["carol", "dave"] and not notifier.admin
    assert KEY not in str(settings) and KEY not in repr(settings.api_keys)


def test_from_a_file(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "extensions:\n  streaming:\n    admin_users: [root]\n"
        f"    api_keys:\n      - {{name: billing, key: {KEY}, act_as: [alice]}}\n"
    )
    settings = load_settings(config)
    assert settings.admin_users == ["root"]
    assert settings.api_keys[0].act_as == ["alice"]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"name": "a", "key": "short-key"}, "at least 32 characters"),
        ({"name": "a"}, "exactly one of key and key_sha256"),
        ({"name": "a", "key": KEY, "key_sha256": "a" * 64}, "exactly one of key and key_sha256"),
        ({"name": "a", "key_sha256": "xyz"}, "64 hex digits"),
        ({"name": "a b", "key": KEY}, "letters, digits"),
        ({"name": "a", "key": KEY, "scope": "all"}, "scope"),
    ],
)
def test_bad_keys_are_refused_without_showing_them(
    tmp_path: Path, entry: dict[str, object], expected: str
) -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings(None, api_keys=[entry])
    assert expected in str(exc.value)
    assert "short-key" not in str(exc.value) and KEY not in str(exc.value)


def test_key_names_must_differ() -> None:
    with pytest.raises(SettingsError, match="given more than once"):
        load_settings(None, api_keys=[{"name": "a", "key": KEY}, {"name": "a", "key": KEY + "x"}])


def test_who_a_request_speaks_for(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        data_dir=tmp_path,
        api_keys=[
            {"name": "any", "key": KEY, "act_as": "*"},
            {
                "name": "hashed",
                "key_sha256": hashlib.sha256(b"other-" + b"o" * 32).hexdigest(),
                "act_as": ["carol"],
            },
        ],
    )
    authority = TokenAuthority.from_settings(settings)
    keys = ApiKeys.from_settings(settings)
    itself = authenticate_http(authority, keys, KEY, None)
    assert (itself.user_id, itself.admin, itself.api_key) == ("forge:key:any", True, "any")
    acting = authenticate_http(authority, keys, "other-" + "o" * 32, "carol")
    assert (acting.user_id, acting.admin) == ("carol", False)
    with pytest.raises(ActAsRefused) as refused:
        authenticate_http(authority, keys, "other-" + "o" * 32, "dave")
    assert refused.value.status == 403
    with pytest.raises(AuthError):
        authenticate_http(authority, keys, KEY + "x", None)
    admin = authenticate_http(authority, keys, authority.mint("root", admin=True), None)
    assert (admin.user_id, admin.admin, admin.api_key) == ("root", True, None)
    with pytest.raises(ActAsRefused) as refused:
        authenticate_http(authority, keys, authority.mint("root"), "carol")
    assert refused.value.status == 400
