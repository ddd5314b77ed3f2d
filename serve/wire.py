"""Registering a servicer with deserializers that never raise, and rate-limited logging of bad clients.

grpc's generated `add_..._to_server` parses each message with `FromString`: bytes that are not a valid
message make grpc answer UNKNOWN and log a traceback per request. Here such bytes become an `Undecodable`
marker that the servicer answers with INVALID_ARGUMENT (unary) or ends the stream with.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import ModuleType

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError

from .errors import InvalidArgument, clip

log = logging.getLogger(__name__)

BAD_MESSAGE_LOG_INTERVAL_S = 10.0


class RateLimitedLog:
    """One warning per `interval_s` at most; the next one says how many were held back meanwhile."""

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._logger, self._interval_s, self._clock = logger, interval_s, clock
        self._last: float | None = None
        self._held_back = 0

    def warning(self, message: str, *args) -> None:
        now = self._clock()
        if self._last is not None and now - self._last < self._interval_s:
            self._held_back += 1
            return
        if self._held_back:
            message += " (and %d more like it in the last %.0f s)"
            args = (*args, self._held_back, now - self._last)
        self._logger.warning(message, *args)
        self._last, self._held_back = now, 0


_bad_messages = RateLimitedLog(log, BAD_MESSAGE_LOG_INTERVAL_S)


class Undecodable:
    """Handed to the servicer instead of a request whose bytes could not be parsed."""

    __slots__ = ("type_name", "reason")

    def __init__(self, type_name: str, reason: str):
        self.type_name, self.reason = type_name, reason

    def error(self) -> InvalidArgument:
        return InvalidArgument(f"cannot parse {self.type_name}: {clip(self.reason)}")


def tolerant_parser(message_class) -> Callable[[bytes], object]:
    """`message_class.FromString`, returning an Undecodable (and logging, rate-limited) instead of raising."""
    type_name = message_class.DESCRIPTOR.name

    def parse(data: bytes):
        try:
            return message_class.FromString(data)
        except DecodeError as exc:
            reason = str(exc) or "not a valid protobuf message"
            _bad_messages.warning("cannot parse %s (%d bytes): %s", type_name, len(data), reason)
            return Undecodable(type_name, reason)

    return parse


_HANDLERS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def add_servicer(servicer, server, service: ServiceDescriptor, messages: ModuleType) -> None:
    """What the generated `add_<Service>Servicer_to_server` does, with tolerant request parsers."""
    handlers = {}
    for method in service.methods:
        request_class = getattr(messages, method.input_type.name)
        response_class = getattr(messages, method.output_type.name)
        handlers[method.name] = _HANDLERS[method.client_streaming, method.server_streaming](
            getattr(servicer, method.name),
            request_deserializer=tolerant_parser(request_class),
            response_serializer=response_class.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
