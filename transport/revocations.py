"""Tokens refused because their user's tokens were revoked
(Mutation.disconnectUser with revokeTokens), checked on every HTTP request
and every WebSocket connect, on every node (the record is in the backend,
read through resolvers/revocations.py's short cache)."""

from __future__ import annotations

from resolvers.services import Services

from .auth import AuthError


async def check_not_revoked(services: Services, user_id: str, issued_at: float | None) -> None:
    """AuthError if the user's tokens issued before some moment are refused
    and this one was (a token without `iat` cannot show it was not)."""
    revoked_before = await services.revocations.revoked_before(user_id)
    if revoked_before is not None and (issued_at is None or issued_at < revoked_before):
        raise AuthError("token revoked")
