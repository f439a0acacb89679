"""What clients see of errors: API errors as they are, backend faults by
code, and everything else masked (the log keeps the detail)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

from backends import errors as backend_errors
from backends.hub import HubClosed, SlowConsumer
from resolvers.errors import (
    ApiError,
    BadUserInput,
    DataCorrupted,
    LimitExceeded,
    NotFound,
    Overloaded,
    Unavailable,
)

log = logging.getLogger("forge_streaming.errors")

_TRANSLATED: tuple[tuple[type[BaseException], type[ApiError], str], ...] = (
    (backend_errors.LimitReached, LimitExceeded, ""),
    (backend_errors.Missing, NotFound, ""),
    (backend_errors.DataCorrupted, DataCorrupted, "stored history could not be read back"),
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
    """Errors the client caused or can act on: validation, API errors, and
    graphql-core's own refusals of a variable's value (an enum value that
    does not exist comes wrapped in the GraphQLError the enum raised)."""
    return error.original_error is None or isinstance(error.original_error, ApiError | GraphQLError)


def _replacement(original: BaseException | None) -> ApiError | None:
    if isinstance(original, CannotGetOperationTypeError):
        # `operationName` names no operation of the document (or it has
        # several and none is named): the client's doing.
        return BadUserInput(original.as_http_error_reason(), argument="operationName")
    for source, target, message in _TRANSLATED:
        if isinstance(original, source):
            return target(message or str(original))
    return None


class ApiErrors(SchemaExtension):
    """Pass API errors through; translate backend faults; mask the rest.

    Strawberry's `MaskErrors` with our own replacement, on the public
    extension hooks only: the result of a query or mutation when the
    operation ends, each result of a stream as it is yielded.
    """

    def __init__(self) -> None:
        self._streamed = False

    def on_operation(self) -> Iterator[None]:
        self._streamed = False
        yield
        if self._streamed:  # already done result by result
            return
        result = self.execution_context.result
        self._mask(result)
        self._mask(getattr(result, "initial_result", None))

    def on_stream_result(self, result: object) -> Iterator[None]:
        self._streamed = True
        self._mask(result)
        for part in (
            *(getattr(result, "incremental", None) or ()),
            *(getattr(result, "completed", None) or ()),
        ):
            self._mask(part)
        yield None

    def _mask(self, result: object) -> None:
        errors = _mask_result(result)
        if not errors:
            return
        # Counted by code for the dashboards (core/metrics.py); a context
        # without services (a bare schema in a test) counts nothing.
        services = getattr(self.execution_context.context, "services", None)
        if services is not None:
            for error in errors:
                code = (error.extensions or {}).get("code", "")
                services.metrics.graphql_errors.labels(code=str(code)).inc()


def _mask_result(result: object) -> list[GraphQLError]:
    """Mask the result's errors in place; the errors the client gets."""
    errors = getattr(result, "errors", None)
    if not errors:
        return []
    shown = [_with_code(masked(e)) for e in errors]
    result.errors = shown  # type: ignore[attr-defined]
    return shown


def masked(error: GraphQLError) -> GraphQLError:
    """What a client sees of `error`."""
    if is_client_error(error):
        return error
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
