"""Who an HTTP request speaks for: a user's JWT, or a back-end service's API key.

`Authorization: Bearer <api key>` authenticates a service (the `api_keys`
setting). Alone, the request acts as the service itself, `forge:key:<name>`,
a server admin when the key has `admin`. With `Forge-Act-As: <user id>` it
acts as that user, with their permissions and limits, if the key may.

Every key is compared, in constant time, by the SHA-256 of what was sent
against the SHA-256 of each configured key, so neither the time taken nor the
order of keys tells anything about a key. Nothing here puts a key (or what was
sent) into a message: errors name the key's `name` at most.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass

from core.settings import ApiKey, Settings
from resolvers.validation import service_user_id

from .auth import AuthError, TokenAuthority, check_user_id

__all__ = [
    "ACT_AS_HEADER",
    "ActAsRefused",
    "ApiKeys",
    "HttpIdentity",
    "ServiceKey",
    "authenticate_http",
]

ACT_AS_HEADER = "forge-act-as"


class ActAsRefused(Exception):
    """The request may not act as the user it names; the message says why."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class HttpIdentity:
    user_id: str
    admin: bool
    # When a JWT session must end (epoch seconds); never for an API key.
    refused_from: float
    # The name of the API key that authenticated the request, if one did.
    api_key: str | None = None
    # A JWT's `iat` (epoch seconds), checked against revocations.
    issued_at: float | None = None


@dataclass(frozen=True, slots=True)
class ServiceKey:
    name: str
    digest: bytes
    act_as: frozenset[str] | None  # None: anyone
    admin: bool


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def _key(config: ApiKey) -> ServiceKey:
    if config.key is not None:
        digest = _digest(config.key.get_secret_value())
    else:
        assert config.key_sha256 is not None  # the setting requires one of the two
        digest = bytes.fromhex(config.key_sha256.get_secret_value())
    act_as = None if config.act_as == "*" else frozenset(config.act_as)
    return ServiceKey(config.name, digest, act_as, config.admin)


class ApiKeys:
    """The configured keys, by digest."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self._keys = tuple(_key(config) for config in keys)

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys:
        return cls(settings.api_keys)

    def match(self, sent: str | None) -> ServiceKey | None:
        """The key that `sent` is, or None; every key is compared either way."""
        if not sent or not self._keys:
            return None
        digest = _digest(sent)
        found = None
        for key in self._keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found


def authenticate_http(
    authority: TokenAuthority, keys: ApiKeys, token: str | None, act_as: str | None
) -> HttpIdentity:
    """The identity of an HTTP request: AuthError (401) when it has none,
    ActAsRefused (400 or 403) when its `Forge-Act-As` may not be used."""
    key = keys.match(token)
    if key is None:
        identity = authority.verify_identity(token)
        if act_as is not None:
            raise ActAsRefused(
                f"the {ACT_AS_HEADER} header needs an API key; a user's token acts as that user",
                status=400,
            )
        return HttpIdentity(
            identity.user_id, identity.admin, identity.refused_from, issued_at=identity.issued_at
        )
    if act_as is None:
        return HttpIdentity(service_user_id(key.name), key.admin, math.inf, api_key=key.name)
    try:
        user_id = check_user_id(act_as.strip())
    except AuthError:
        raise ActAsRefused(
            f"{ACT_AS_HEADER} must name a user id (non-empty, at most 256 characters)",
            status=400,
        ) from None
    if key.act_as is not None and user_id not in key.act_as:
        raise ActAsRefused(
            f"API key {key.name!r} may not act as this user (see its act_as)", status=403
        )
    return HttpIdentity(user_id, False, math.inf, api_key=key.name)
