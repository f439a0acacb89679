from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from core.settings import Settings, load_settings
from transport.auth import (
    MAX_USER_ID_LENGTH,
    AuthError,
    TokenAuthority,
    bearer_token,
    load_or_create_secret,
)

SECRET = "s" * 48


pytestmark = pytest.mark.usefixtures("clean_settings_env")


def hs256(**settings: Any) -> TokenAuthority:
    return TokenAuthority.from_settings(load_settings(jwt_secret=SECRET, **settings))


def raw_token(claims: dict[str, object], key: str = SECRET) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


def in_one_hour() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# --- HS256 -----------------------------------------------------------------------


def test_round_trip() -> None:
    authority = hs256()
    token = authority.mint("alice")
    assert authority.verify(token) == "alice"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert claims["exp"] - int(claims["iat"]) == 24 * 3600


def test_mint_uses_token_ttl_and_explicit_ttl() -> None:
    authority = hs256(token_ttl="10m")
    default = jwt.decode(authority.mint("bob"), SECRET, algorithms=["HS256"])
    assert default["exp"] - int(default["iat"]) == 600
    short = jwt.decode(authority.mint("bob", timedelta(seconds=90)), SECRET, algorithms=["HS256"])
    assert short["exp"] - int(short["iat"]) == 90
    with pytest.raises(AuthError, match="token lifetime must be greater than zero"):
        authority.mint("bob", timedelta(0))


def test_missing_token() -> None:
    authority = hs256()
    for token in ("", None):
        with pytest.raises(AuthError, match=r"^missing token$"):
            authority.verify(token)


def test_expired_token_with_leeway() -> None:
    authority = hs256()
    now = datetime.now(UTC)
    with pytest.raises(AuthError, match=r"^token expired$"):
        authority.verify(raw_token({"sub": "alice", "exp": now - timedelta(seconds=30)}))
    # Within the 5 s leeway a just-expired token still passes.
    assert authority.verify(raw_token({"sub": "alice", "exp": now - timedelta(seconds=2)})) == (
        "alice"
    )


def test_a_remembered_token_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    """Verified tokens are remembered; one that was valid is refused once its
    `exp` (plus the leeway) has passed, as if it had never been seen."""
    authority = hs256()
    token = raw_token({"sub": "alice", "exp": datetime.now(UTC) + timedelta(seconds=60)})
    assert authority.verify(token) == "alice"
    assert authority.verify(token) == "alice"  # remembered
    later = datetime.now(UTC).timestamp() + 60 + 6
    # The clock jumps past exp and the leeway (a minute is not worth waiting).
    monkeypatch.setattr("transport.auth.time.time", lambda: later)
    with pytest.raises(AuthError, match=r"^token expired$"):
        authority.verify(token)
    # Refusals are not remembered: a bad token is refused every time.
    forged = raw_token({"sub": "alice", "exp": in_one_hour()}, key="f" * 48)
    for _ in range(2):
        with pytest.raises(AuthError, match=r"^invalid token signature$"):
            authority.verify(forged)


def test_wrong_secret() -> None:
    token = raw_token({"sub": "alice", "exp": in_one_hour()}, key="o" * 48)
    with pytest.raises(AuthError, match=r"^invalid token signature$"):
        hs256().verify(token)


def test_tampered_token() -> None:
    authority = hs256()
    header, _, signature = authority.mint("alice").split(".")
    forged = f"{header}.{b64({'sub': 'admin', 'exp': 9999999999})}.{signature}"
    with pytest.raises(AuthError, match=r"^invalid token signature$"):
        authority.verify(forged)
    with pytest.raises(AuthError, match=r"^malformed token$"):
        authority.verify("not-a-jwt")


def test_alg_none_rejected() -> None:
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({'sub': 'alice', 'exp': 9999999999})}."
    with pytest.raises(AuthError, match=r"^token algorithm not allowed$"):
        hs256().verify(unsigned)


def test_missing_and_bad_claims() -> None:
    authority = hs256()
    with pytest.raises(AuthError, match=r"^token has no 'sub' claim$"):
        authority.verify(raw_token({"exp": in_one_hour()}))
    with pytest.raises(AuthError, match=r"^token has no 'exp' claim$"):
        authority.verify(raw_token({"sub": "alice"}))
    with pytest.raises(AuthError, match=r"^token subject must be a non-empty string$"):
        authority.verify(raw_token({"sub": "", "exp": in_one_hour()}))
    with pytest.raises(AuthError, match=r"^token subject must be a non-empty string$"):
        authority.verify(raw_token({"sub": 42, "exp": in_one_hour()}))
    with pytest.raises(AuthError, match=r"^token subject is longer than 256 characters$"):
        authority.verify(raw_token({"sub": "a" * (MAX_USER_ID_LENGTH + 1), "exp": in_one_hour()}))
    with pytest.raises(AuthError, match=r"^token not yet valid$"):
        authority.verify(raw_token({"sub": "alice", "exp": in_one_hour(), "nbf": in_one_hour()}))
    assert authority.verify(raw_token({"sub": "a" * MAX_USER_ID_LENGTH, "exp": in_one_hour()})) == (
        "a" * MAX_USER_ID_LENGTH
    )


def test_mint_validates_user_id() -> None:
    authority = hs256()
    with pytest.raises(AuthError, match=r"^token subject must be a non-empty string$"):
        authority.mint("")
    with pytest.raises(AuthError, match="longer than 256 characters"):
        authority.mint("x" * 257)
    with pytest.raises(AuthError, match="control characters"):
        authority.mint("bob\nadmin")


def test_issuer_and_audience() -> None:
    authority = hs256(jwt_issuer="forge", jwt_audience="chat")
    token = authority.mint("alice")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="chat")
    assert (claims["iss"], claims["aud"]) == ("forge", "chat")
    assert authority.verify(token) == "alice"

    base = {"sub": "alice", "exp": in_one_hour()}
    with pytest.raises(AuthError, match=r"^invalid token issuer$"):
        authority.verify(raw_token({**base, "iss": "evil", "aud": "chat"}))
    with pytest.raises(AuthError, match=r"^invalid token audience$"):
        authority.verify(raw_token({**base, "iss": "forge", "aud": "other"}))
    with pytest.raises(AuthError, match=r"^token has no 'iss' claim$"):
        authority.verify(raw_token({**base, "aud": "chat"}))
    with pytest.raises(AuthError, match=r"^token has no 'aud' claim$"):
        authority.verify(raw_token({**base, "iss": "forge"}))


def test_token_size_limit() -> None:
    with pytest.raises(AuthError, match="token is longer than 8192 characters"):
        hs256().verify("a" * 9000)


# --- the generated secret --------------------------------------------------------


def test_secret_file_created_once_with_0600(tmp_path: Path) -> None:
    data_dir = tmp_path / "state" / "data"
    secret = load_or_create_secret(data_dir)
    path = data_dir / "jwt-secret"
    assert path.read_text().strip() == secret
    assert len(secret) >= 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(data_dir) == secret
    assert [p.name for p in data_dir.iterdir()] == ["jwt-secret"]  # no temp files left


def test_secret_file_concurrent_creation(tmp_path: Path) -> None:
    results: list[str] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        results.append(load_or_create_secret(tmp_path))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    assert set(results) == {(tmp_path / "jwt-secret").read_text().strip()}


def test_default_authority_uses_data_dir_secret(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    first = TokenAuthority.from_settings(settings)
    token = first.mint("carol")
    # A second process (or a restart) reads the same secret and accepts the token.
    assert TokenAuthority.from_settings(settings).verify(token) == "carol"
    secret = (tmp_path / "data" / "jwt-secret").read_text().strip()
    assert jwt.decode(token, secret, algorithms=["HS256"])["sub"] == "carol"


def test_short_secret_file_refused(tmp_path: Path) -> None:
    (tmp_path / "jwt-secret").write_text("short\n")
    with pytest.raises(AuthError, match="shorter than 32 bytes"):
        load_or_create_secret(tmp_path)


# --- RS256 -----------------------------------------------------------------------


def write_rsa_pair(directory: Path, name: str = "jwt") -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = directory / f"{name}.key"
    public = directory / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def rs256(private: Path | None, public: Path, **settings: Any) -> TokenAuthority:
    return TokenAuthority.from_settings(
        load_settings(
            jwt_algorithm="RS256",
            jwt_public_key_file=public,
            jwt_private_key_file=private,
            **settings,
        )
    )


def test_rs256_round_trip_and_verify_only(tmp_path: Path) -> None:
    private, public = write_rsa_pair(tmp_path)
    signer = rs256(private, public, jwt_issuer="forge")
    token = signer.mint("dave")
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert signer.verify(token) == "dave"

    verifier = rs256(None, public, jwt_issuer="forge")
    assert verifier.can_mint is False
    assert verifier.verify(token) == "dave"
    with pytest.raises(AuthError, match=r"^cannot mint tokens: no private key configured$"):
        verifier.mint("dave")


def test_rs256_rejects_other_keys_and_algorithm_confusion(tmp_path: Path) -> None:
    private, public = write_rsa_pair(tmp_path)
    verifier = rs256(None, public)

    forged = rs256(*write_rsa_pair(tmp_path, "other"))
    with pytest.raises(AuthError, match=r"^invalid token signature$"):
        verifier.verify(forged.mint("dave"))

    # HS256 signed with the public key's PEM text: the classic confusion attack.
    claims = {"sub": "admin", "exp": 9999999999}
    header = b64({"alg": "HS256", "typ": "JWT"})
    signing_input = f"{header}.{b64(claims)}"
    mac = hmac.new(public.read_bytes(), signing_input.encode(), hashlib.sha256).digest()
    confused = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(AuthError, match=r"^token algorithm not allowed$"):
        verifier.verify(confused)

    hs_authority = hs256()
    with pytest.raises(AuthError, match=r"^token algorithm not allowed$"):
        hs_authority.verify(rs256(private, public).mint("dave"))


def test_rs256_key_problems(tmp_path: Path) -> None:
    private, public = write_rsa_pair(tmp_path)
    _, other_public = write_rsa_pair(tmp_path, "other")
    with pytest.raises(AuthError, match="does not match jwt_public_key_file"):
        rs256(private, other_public)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    with pytest.raises(AuthError, match="not a PEM public key or certificate"):
        rs256(None, garbage)
    with pytest.raises(AuthError, match="not an unencrypted PEM private key"):
        rs256(garbage, public)


def test_from_settings_direct_construction(tmp_path: Path) -> None:
    settings = Settings(jwt_secret=SECRET, data_dir=tmp_path)
    authority = TokenAuthority.from_settings(settings)
    assert authority.algorithm == "HS256"
    assert authority.verify(authority.mint("erin")) == "erin"
    assert not (tmp_path / "jwt-secret").exists()  # an explicit secret needs no file


# --- bearer header ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc", "abc"),
        ("BEARER   abc  ", "abc"),
        ("abc.def.ghi", "abc.def.ghi"),
        (None, None),
        ("", None),
        ("   ", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Basic dXNlcjpwdw==", None),
        ("Bearer a b", None),
    ],
)
def test_bearer_token(header: str | None, expected: str | None) -> None:
    assert bearer_token(header) == expected


def test_unusable_secret_location_is_reported(tmp_path: Path) -> None:
    (tmp_path / "jwt-secret").mkdir()
    with pytest.raises(AuthError, match=r"jwt-secret: cannot read or create the secret: "):
        load_or_create_secret(tmp_path)
