"""JWT authentication: verify bearer tokens, mint tokens, keep a generated secret.

There is always a key: HS256 uses ``jwt_secret`` or, when it is unset, a secret
generated once into ``<data_dir>/jwt-secret``; RS256 uses the configured public key.
Every failure is an :class:`AuthError` whose message says why.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.x509 import load_pem_x509_certificate
from jwt.exceptions import InvalidSubjectError

from resolvers.validation import MAX_USER_ID_LENGTH, user_id_problem

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = [
    "MAX_USER_ID_LENGTH",
    "METRICS_TOKEN_FILE_NAME",
    "SECRET_FILE_NAME",
    "AuthError",
    "Identity",
    "TokenAuthority",
    "bearer_token",
    "check_user_id",
    "load_or_create_secret",
    "user_id_problem",
]

SECRET_FILE_NAME = "jwt-secret"
METRICS_TOKEN_FILE_NAME = "metrics-token"
MAX_TOKEN_LENGTH = 8192
# A streaming session ends when its token expires (each connection's timer,
# transport/connection.py), with this error.
EXPIRED_CODE = "UNAUTHENTICATED"
EXPIRED_MESSAGE = "token expired"
LEEWAY = timedelta(seconds=5)
_REMEMBERED_TOKENS = 4096
_MIN_SECRET_BYTES = 32
_MIN_RSA_BITS = 2048


class AuthError(Exception):
    """Authentication failed or cannot be set up; the message says why."""


ADMIN_ROLE = "admin"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a verified token speaks for, and until when (epoch seconds)."""

    user_id: str
    refused_from: float
    # The token's `roles` claim names ADMIN_ROLE.
    admin: bool = False
    # Its `iat` claim (epoch seconds), if any: a token issued before its
    # user's tokens were revoked is refused (transport/revocations.py).
    issued_at: float | None = None


def _is_admin(claims: dict[str, Any]) -> bool:
    roles = claims.get("roles")
    # Anything but a list of names grants nothing.
    return isinstance(roles, list) and ADMIN_ROLE in roles


def bearer_token(header_value: str | None) -> str | None:
    """The token in ``Authorization: Bearer <token>`` (or a bare token), else ``None``."""
    if header_value is None:
        return None
    parts = header_value.split()
    if len(parts) == 2 and parts[0].lower() == "bearer":
        return parts[1]
    if len(parts) == 1 and parts[0].lower() != "bearer":
        return parts[0]
    return None


def check_user_id(user_id: object) -> str:
    """Return ``user_id`` if it is a usable user id, else raise :class:`AuthError`."""
    problem = user_id_problem(user_id)
    if problem is not None:
        raise AuthError(f"token subject {problem}")
    return str(user_id)


# --- the generated secret --------------------------------------------------------


def _read_secret(path: Path) -> str:
    # A writer without hard links creates the file first and fills it next; wait briefly.
    for _ in range(50):
        secret = path.read_text(encoding="utf-8").strip()
        if secret:
            break
        time.sleep(0.02)
    if len(secret.encode()) < _MIN_SECRET_BYTES:
        raise AuthError(f"{path}: the secret is shorter than {_MIN_SECRET_BYTES} bytes")
    return secret


def load_or_create_secret(data_dir: Path, name: str = SECRET_FILE_NAME) -> str:
    """Read ``data_dir/<name>`` (the JWT secret by default), creating it (mode
    0600, in a folder made 0700) on first use.

    Safe when several processes start at once: the file is written whole under a
    temporary name and linked into place without replacing one that another process
    created first; the loser reads the winner's secret.
    """
    path = data_dir / name
    try:
        with contextlib.suppress(FileNotFoundError):
            secret = _read_secret(path)
            # Written 0600 by any version, unless someone loosened it since.
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
            return secret
        return _create_secret(data_dir, path)
    except OSError as exc:
        raise AuthError(
            f"{path}: cannot read or create the secret: {exc.strerror or exc}"
        ) from None


def _create_secret(data_dir: Path, path: Path) -> str:
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd, tmp_name = tempfile.mkstemp(dir=data_dir, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:  # mkstemp made it 0600
            tmp.write(secret + "\n")
            tmp.flush()
            os.fsync(tmp.fileno())
        try:
            os.link(tmp_name, path)
        except FileExistsError:
            return _read_secret(path)
        except OSError:  # no hard links on this file system
            return _create_exclusive(path, secret)
    finally:
        os.unlink(tmp_name)
    return secret


def _create_exclusive(path: Path, secret: str) -> str:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(secret + "\n")
        file.flush()
        os.fsync(file.fileno())
    return secret


# --- tokens ----------------------------------------------------------------------


def _load_public_key(path: Path) -> RSAPublicKey:
    data = _read_key_file(path, "jwt_public_key_file")
    try:
        key: object = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            key = load_pem_x509_certificate(data).public_key()
        except ValueError:
            raise AuthError(f"{path}: not a PEM public key or certificate") from None
    if not isinstance(key, RSAPublicKey):
        raise AuthError(f"{path}: RS256 needs an RSA key")
    if key.key_size < _MIN_RSA_BITS:
        raise AuthError(f"{path}: RSA key has {key.key_size} bits; at least 2048 are needed")
    return key


def _load_private_key(path: Path, public_key: RSAPublicKey) -> RSAPrivateKey:
    data = _read_key_file(path, "jwt_private_key_file")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:  # TypeError: the key is encrypted
        raise AuthError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, RSAPrivateKey):
        raise AuthError(f"{path}: RS256 needs an RSA key")
    if key.public_key().public_numbers() != public_key.public_numbers():
        raise AuthError(f"{path}: the private key does not match jwt_public_key_file")
    return key


def _read_key_file(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AuthError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from None


_ERRORS: tuple[tuple[type[jwt.InvalidTokenError], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.InvalidSignatureError, "invalid token signature"),
    (jwt.InvalidAlgorithmError, "token algorithm not allowed"),
    (jwt.InvalidIssuerError, "invalid token issuer"),
    (jwt.InvalidAudienceError, "invalid token audience"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidIssuedAtError, "invalid token issue time"),
    (InvalidSubjectError, "token subject must be a non-empty string"),
    (jwt.DecodeError, "malformed token"),
)


class TokenAuthority:
    """Verifies (and, when it holds a signing key, mints) the server's JWTs.

    Only the configured algorithm is accepted, so ``alg: none`` and HS256/RS256
    confusion are refused. Tokens need ``exp`` and a ``sub`` (the user id); ``iss``
    and ``aud`` are checked when configured. Clocks may differ by 5 seconds.
    """

    def __init__(
        self,
        *,
        algorithm: Literal["HS256", "RS256"],
        verify_key: str | RSAPublicKey,
        signing_key: str | RSAPrivateKey | None,
        issuer: str | None = None,
        audience: str | None = None,
        default_ttl: timedelta = timedelta(hours=24),
    ) -> None:
        if algorithm == "HS256" and (
            not isinstance(verify_key, str) or len(verify_key.encode()) < _MIN_SECRET_BYTES
        ):
            raise AuthError(f"HS256 needs a secret of at least {_MIN_SECRET_BYTES} bytes")
        self.algorithm = algorithm
        self.issuer = issuer
        self.audience = audience
        self.default_ttl = default_ttl
        self._verify_key = verify_key
        self._signing_key = signing_key
        self._jwt = jwt.PyJWT(options={"enforce_minimum_key_length": True})
        # Clients send the same token with every request, and checking one
        # costs about half a millisecond. What a check proves holds until
        # `exp`, which verify() compares on every call; refusals are not kept.
        self._verified = lru_cache(maxsize=_REMEMBERED_TOKENS)(self._verify)

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenAuthority:
        """Build from settings; HS256 without ``jwt_secret`` uses the data-folder secret."""
        common: dict[str, Any] = {
            "issuer": settings.jwt_issuer,
            "audience": settings.jwt_audience,
            "default_ttl": settings.token_ttl,
        }
        if settings.jwt_algorithm == "RS256":
            if settings.jwt_public_key_file is None:
                raise AuthError("jwt_public_key_file is required when jwt_algorithm is RS256")
            public_key = _load_public_key(settings.jwt_public_key_file)
            private_key = (
                _load_private_key(settings.jwt_private_key_file, public_key)
                if settings.jwt_private_key_file is not None
                else None
            )
            return cls(algorithm="RS256", verify_key=public_key, signing_key=private_key, **common)
        if settings.jwt_secret is not None:
            secret = settings.jwt_secret.get_secret_value()
        else:
            secret = load_or_create_secret(settings.data_dir)
        return cls(algorithm="HS256", verify_key=secret, signing_key=secret, **common)

    @property
    def can_mint(self) -> bool:
        """Whether this authority holds a key to sign tokens with."""
        return self._signing_key is not None

    def verify(self, token: str | None) -> str:
        """Check ``token`` and return its user id (the ``sub`` claim)."""
        return self.verify_session(token)[0]

    def verify_session(self, token: str | None) -> tuple[str, float]:
        """Like :meth:`verify`, with the moment (seconds since the epoch) from
        which the token is refused: a session opened with it must end then."""
        identity = self.verify_identity(token)
        return identity.user_id, identity.refused_from

    def verify_identity(self, token: str | None) -> Identity:
        """Like :meth:`verify_session`, with whether the token names an admin."""
        if not token:
            raise AuthError("missing token")
        if len(token) > MAX_TOKEN_LENGTH:
            raise AuthError(f"token is longer than {MAX_TOKEN_LENGTH} characters")
        user_id, expires, admin, issued_at = self._verified(token)
        refused_from = expires + LEEWAY.total_seconds()
        # A verified token is remembered (see __init__) until it expires.
        if time.time() > refused_from:
            raise AuthError("token expired")
        return Identity(user_id, refused_from, admin, issued_at)

    def _verify(self, token: str) -> tuple[str, float, bool, float | None]:
        """The token's user id, expiry, admin role and issue time; AuthError
        if it is not valid now."""
        required = ["exp", "sub"]
        if self.issuer is not None:
            required.append("iss")
        if self.audience is not None:
            required.append("aud")
        try:
            claims = self._jwt.decode(
                token,
                self._verify_key,
                algorithms=[self.algorithm],
                issuer=self.issuer,
                audience=self.audience,
                leeway=LEEWAY,
                options={"require": required},
            )
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token has no {exc.claim!r} claim") from None
        except jwt.InvalidTokenError as exc:
            for kind, message in _ERRORS:
                if isinstance(exc, kind):
                    raise AuthError(message) from None
            raise AuthError("invalid token") from None
        iat = claims.get("iat")
        issued_at = float(iat) if isinstance(iat, int | float) else None
        return check_user_id(claims["sub"]), float(claims["exp"]), _is_admin(claims), issued_at

    def mint(self, user_id: str, ttl: timedelta | None = None, *, admin: bool = False) -> str:
        """Sign a token for ``user_id`` valid for ``ttl`` (default: ``token_ttl``);
        ``admin`` adds ``"roles": ["admin"]``."""
        if self._signing_key is None:
            raise AuthError("cannot mint tokens: no private key configured")
        check_user_id(user_id)
        ttl = self.default_ttl if ttl is None else ttl
        if ttl <= timedelta(0):
            raise AuthError("token lifetime must be greater than zero")
        now = datetime.now(UTC)
        # `iat` to the millisecond (a NumericDate may have a fraction): a
        # token minted just after its user's tokens were revoked is accepted.
        claims: dict[str, Any] = {
            "sub": user_id,
            "iat": round(now.timestamp(), 3),
            "exp": now + ttl,
        }
        if admin:
            claims["roles"] = [ADMIN_ROLE]
        if self.issuer is not None:
            claims["iss"] = self.issuer
        if self.audience is not None:
            claims["aud"] = self.audience
        return self._jwt.encode(claims, self._signing_key, algorithm=self.algorithm)
