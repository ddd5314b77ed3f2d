"""The server's one error hierarchy: every error carries its gRPC status code and a metric reason.

They are mapped in one place, `served_error` (used by the gRPC servicer and the REST API); anything else
becomes INTERNAL.
"""

from __future__ import annotations

import logging

import grpc

CLIENT_TEXT_LIMIT = 80


def clip(value: object, limit: int = CLIENT_TEXT_LIMIT) -> str:
    """A client-supplied value (name, shape, string) for an error message: repr'd and cut to `limit`
    characters, so a 100 KB name or a rank-10000 shape cannot blow the status message past gRPC's limits."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 1]}… ({len(text)} chars)"


class ServeError(Exception):
    """An error the client may see: its message goes out verbatim with `code`."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "internal"


class InvalidArgument(ServeError):  # noqa: N818 - named after the gRPC status
    """The request is malformed or does not match the model (bad input, shape, datatype...)."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "invalid_argument"


class NotFound(ServeError):  # noqa: N818 - named after the gRPC status
    """The model or version does not exist."""

    code = grpc.StatusCode.NOT_FOUND
    reason = "not_found"


class Unavailable(ServeError):  # noqa: N818 - named after the gRPC status
    """The model exists but cannot serve now (not ready, unloading, shutting down)."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "unavailable"


class QueueFull(Unavailable):
    """The model's request queue is at its maximum size (Triton answers UNAVAILABLE)."""

    reason = "queue_full"


class QueueTimeout(Unavailable):
    """The request waited in the queue longer than the queue policy's timeout."""

    reason = "queue_timeout"


class FailedPrecondition(ServeError):  # noqa: N818 - named after the gRPC status
    """The operation is not allowed in the server's current mode."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "failed_precondition"


class DeadlineExceeded(ServeError):  # noqa: N818 - named after the gRPC status
    """The client's deadline passed before the request ran."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "deadline_exceeded"


class Cancelled(ServeError):  # noqa: N818 - named after the gRPC status
    """The client cancelled the request."""

    code = grpc.StatusCode.CANCELLED
    reason = "cancelled"


class ResourceExhausted(ServeError):  # noqa: N818 - named after the gRPC status
    """The request would need more than a configured limit allows (memory budget, live sequences...)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "resource_exhausted"


class InternalError(ServeError):
    """Something broke inside the server; the message sent is generic."""

    code = grpc.StatusCode.INTERNAL
    reason = "internal"


class ModelLoadError(ServeError):
    """A model (version) could not be loaded; the message is its reason in the repository index."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "load_failed"


def served_error(error: Exception, where: str) -> ServeError:
    """The one mapping for every listener (gRPC and REST): ServeErrors go out as they are; anything else is
    logged with its traceback and becomes INTERNAL "internal error"."""
    if isinstance(error, ServeError) and not isinstance(error, InternalError):
        return error
    if not isinstance(error, InternalError):
        logging.getLogger(__name__).error("%s failed", where, exc_info=error)
    return InternalError("internal error")
