"""The errors the client raises: InferenceServerError for a failed call (with its gRPC status code),
SequenceError for a sequence used wrongly."""

from __future__ import annotations

import grpc


class InferenceServerError(Exception):
    """A call failed: `code` is the grpc.StatusCode, `message` the server's details.

    Connection failures surface as UNAVAILABLE and missed deadlines as DEADLINE_EXCEEDED, exactly as gRPC
    reports them; `attempts` says how many tries were made (more than one when the call was retried).
    """

    def __init__(self, code: grpc.StatusCode, message: str, attempts: int = 1) -> None:
        super().__init__(code, message, attempts)
        self.code = code
        self.message = message
        self.attempts = attempts

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class SequenceError(Exception):
    """A sequence was misused on the client side: a step after its end, or a model without sequence state."""


def status_code_of(exc: grpc.RpcError) -> grpc.StatusCode:
    """The status code of a sync or asyncio RpcError (UNKNOWN when it carries none)."""
    code = getattr(exc, "code", None)
    return code() if callable(code) else grpc.StatusCode.UNKNOWN


def from_rpc_error(exc: grpc.RpcError, attempts: int = 1) -> InferenceServerError:
    """Convert a sync or asyncio RpcError; raise the result `from exc`."""
    details = getattr(exc, "details", None)
    message = (details() if callable(details) else None) or str(exc)
    return InferenceServerError(status_code_of(exc), message, attempts)
