"""API errors: each carries `extensions.code` to the client.

Anything else raised inside a resolver is masked as an internal error.

    ApiError
    ├── Unauthenticated   UNAUTHENTICATED
    ├── Forbidden         FORBIDDEN
    ├── NotFound          NOT_FOUND
    ├── BadUserInput      BAD_USER_INPUT
    ├── RateLimited       RATE_LIMITED
    ├── LimitExceeded     LIMIT_EXCEEDED
    ├── PayloadTooLarge   PAYLOAD_TOO_LARGE
    ├── Unavailable       UNAVAILABLE
    ├── Overloaded        OVERLOADED
    ├── FeatureDisabled   FEATURE_DISABLED
    └── DataCorrupted     DATA_CORRUPTED
"""

from __future__ import annotations

from typing import Any, ClassVar


class ApiError(Exception):
    code: ClassVar[str] = "INTERNAL_SERVER_ERROR"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        # graphql-core copies `extensions` of the original error into the response.
        self.extensions: dict[str, Any] = {"code": self.code, **details}


class Unauthenticated(ApiError):
    code = "UNAUTHENTICATED"


class Forbidden(ApiError):
    code = "FORBIDDEN"


class NotFound(ApiError):
    code = "NOT_FOUND"


class BadUserInput(ApiError):
    code = "BAD_USER_INPUT"


class RateLimited(ApiError):
    code = "RATE_LIMITED"


class LimitExceeded(ApiError):
    code = "LIMIT_EXCEEDED"


class PayloadTooLarge(ApiError):
    code = "PAYLOAD_TOO_LARGE"


class Unavailable(ApiError):
    code = "UNAVAILABLE"


class Overloaded(ApiError):
    """The server is up but has more work than it can take now: try again
    shortly. Not RATE_LIMITED (a user's own quota) nor UNAVAILABLE (an outage)."""

    code = "OVERLOADED"


class FeatureDisabled(ApiError):
    code = "FEATURE_DISABLED"


class DataCorrupted(ApiError):
    """Stored history could not be read back intact (a damaged compressed
    block); the server logged the room and block."""

    code = "DATA_CORRUPTED"
