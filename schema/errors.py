"""What clients see of errors: API errors as they are, backend faults by
code, and everything else masked (the log keeps the detail)."""

from __future__ import annotations

import logging

from graphql import GraphQLError
from strawberry.extensions import MaskErrors
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

from backends import errors as backend_errors
from backends.hub import HubClosed, SlowConsumer
from resolvers.errors import (
    ApiError,
    BadUserInput,
    LimitExceeded,
    NotFound,
    Overloaded,
    Unavailable,
)

log = logging.getLogger("forge_streaming.errors")

_TRANSLATED: tuple[tuple[type[BaseException], type[ApiError], str], ...] = (
    (backend_errors.LimitReached, LimitExceeded, ""),
    (backend_errors.Missing, NotFound, ""),
    # Before Unavailable, its base class: load is not an outage.
    (backend_errors.Overloaded, Overloaded, "the server is overloaded, try again shortly"),
    (backend_errors.Unavailable, Unavailable, "the backend is unavailable, try again"),
    (ConnectionError, Unavailable, "the backend is unavailable, try again"),
    (TimeoutError, Unavailable, "the backend did not answer in time, try again"),
    (SlowConsumer, LimitExceeded, "subscription cut off: the client did not keep up"),
    (HubClosed, Unavailable, "the server is shutting down, reconnect"),
    (
        InvalidOperationTypeError,
        BadUserInput,
        "this operation type is not allowed here (mutations need POST)",
    ),
)


def is_client_error(error: GraphQLError) -> bool:
    """Errors the client caused or can act on: validation, API errors."""
    return error.original_error is None or isinstance(error.original_error, ApiError)


def _replacement(original: BaseException | None) -> ApiError | None:
    if isinstance(original, CannotGetOperationTypeError):
        # `operationName` names no operation of the document (or it has
        # several and none is named): the client's doing.
        return BadUserInput(original.as_http_error_reason(), argument="operationName")
    for source, target, message in _TRANSLATED:
        if isinstance(original, source):
            return target(message or str(original))
    return None


class ApiErrors(MaskErrors):
    """Pass API errors through; translate backend faults; mask the rest."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=lambda e: not is_client_error(e))

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        return [_with_code(e) for e in super()._process_errors(errors)]

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        replacement = _replacement(error.original_error)
        if replacement is None:
            return GraphQLError(
                message="Internal server error",
                nodes=error.nodes,
                source=error.source,
                positions=error.positions,
                path=error.path,
                extensions={"code": "INTERNAL_SERVER_ERROR"},
            )
        return GraphQLError(
            message=replacement.message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            original_error=replacement,
            extensions=replacement.extensions,
        )


def _with_code(error: GraphQLError) -> GraphQLError:
    """Give the document's own errors (parse, validation, limits) a code too."""
    if error.extensions and "code" in error.extensions:
        return error
    error.extensions = {**(error.extensions or {}), "code": "GRAPHQL_VALIDATION_FAILED"}
    return error


def log_unexpected(errors: list[GraphQLError]) -> None:
    """Log only what is not the client's doing; never the variables."""
    for error in errors:
        if is_client_error(error):
            continue
        original = error.original_error
        replacement = _replacement(original)
        if isinstance(replacement, BadUserInput):
            continue
        if replacement is not None:
            log.warning("backend fault at %s: %r", error.path, original)
        else:
            log.error("unexpected error at %s", error.path, exc_info=original)
