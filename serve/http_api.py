"""KServe v2 / Open Inference Protocol over HTTP (aiohttp), on the gRPC server's event loop.

Thin like the gRPC servicer: each route converts JSON (or the binary tensor extension) into the same
protobuf messages and calls the same core (`inference.infer`, the repository), so REST and gRPC requests
share the batcher, statistics and metrics, and can share a batch. Errors are mapped in `error_response`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import grpc
from aiohttp import web
from google.protobuf import descriptor, json_format

from ortserve.protos import grpc_service_pb2 as pb

from .errors import FailedPrecondition, InvalidArgument, Unavailable, clip, served_error
from .http_tensors import from_infer_response, parse_header, to_infer_request
from .inference import infer
from .repository import ModelRepository
from .service import EXTENSIONS, SERVER_NAME, server_version

log = logging.getLogger(__name__)

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
# What a body may be sent as: JSON, JSON + binary tensors, or nothing said (curl -d says form-urlencoded).
BODY_TYPES = ("", JSON, OCTET_STREAM, "application/x-www-form-urlencoded")
REST_EXTENSIONS = (*EXTENSIONS, "binary_tensor_data")

# The one ServeError -> HTTP mapping, by the gRPC code each error carries. RESOURCE_EXHAUSTED (a configured
# limit, e.g. too many live sequences) is 429, so that 503 keeps meaning "this replica cannot serve now".
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def error_response(error: Exception, where: str) -> web.Response:
    """`{"error": message}` with the status of the error's gRPC code; the message is gRPC's."""
    if isinstance(error, web.HTTPException):  # aiohttp's own: unknown route, wrong method, body too large
        # 413's text names the limit and the size (numbers only); the others' reason says it all.
        message = error.text if error.status == 413 and error.text else error.reason
        return web.json_response({"error": message}, status=error.status)
    served = served_error(error, where)
    return web.json_response({"error": str(served)}, status=HTTP_STATUS.get(served.code, 500))


@web.middleware
async def _errors(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Exception as exc:  # noqa: BLE001 - mapped in error_response
        return error_response(exc, f"{request.method} {request.path}")


def proto_json(message) -> dict:
    """A protobuf message as Triton's REST JSON: proto field names, defaults shown, 64-bit ints as numbers."""
    value = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _numbers(value, message.DESCRIPTOR)


_INT64 = (descriptor.FieldDescriptor.CPPTYPE_INT64, descriptor.FieldDescriptor.CPPTYPE_UINT64)


def _numbers(value, message_type):
    """Undo proto3 JSON's quoting of 64-bit integers, walking `value` along its message type."""
    for field in message_type.fields:
        if field.name not in value:
            continue
        item = value[field.name]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            inner = field.message_type.fields_by_name["value"]
            if inner.message_type is not None:
                value[field.name] = {k: _numbers(v, inner.message_type) for k, v in item.items()}
            elif inner.cpp_type in _INT64:
                value[field.name] = {k: int(v) for k, v in item.items()}
        elif field.message_type is not None:
            if isinstance(item, list):
                value[field.name] = [_numbers(v, field.message_type) for v in item]
            else:
                value[field.name] = _numbers(item, field.message_type)
        elif field.cpp_type in _INT64:
            value[field.name] = [int(v) for v in item] if isinstance(item, list) else int(item)
    return value


class HttpApi:
    """The REST routes over a ModelRepository; `start` binds them on the running loop."""

    def __init__(
        self,
        repository: ModelRepository,
        explicit_control: bool,
        server_ready: Callable[[], bool],
        max_body_bytes: int,
    ):
        self.repository = repository
        self.explicit_control = explicit_control
        self.server_ready = server_ready
        self.app = web.Application(client_max_size=max_body_bytes, middlewares=[_errors])
        self.runner: web.AppRunner | None = None
        get, post = web.get, web.post
        model = "/v2/models/{name}"
        version = "/v2/models/{name}/versions/{version}"
        self.app.add_routes(
            [
                get("/v2", self.server_metadata),
                get("/v2/health/live", self.live),
                get("/v2/health/ready", self.ready),
                get("/v2/models/stats", self.statistics),
                *(get(base, self.model_metadata) for base in (model, version)),
                *(get(f"{base}/ready", self.model_ready) for base in (model, version)),
                *(get(f"{base}/config", self.model_config) for base in (model, version)),
                *(get(f"{base}/stats", self.statistics) for base in (model, version)),
                *(post(f"{base}/infer", self.infer) for base in (model, version)),
                post("/v2/repository/index", self.repository_index),
                post("/v2/repository/models/{name}/load", self.load),
                post("/v2/repository/models/{name}/unload", self.unload),
            ]
        )

    async def start(self, host: str, port: int, shutdown_timeout: float) -> int:
        """Listen on host:port (0: a free port); return the port bound."""
        self.runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=shutdown_timeout)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port)
        await site.start()
        return self.runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop listening, let in-flight requests finish (up to shutdown_timeout), close connections."""
        if self.runner is not None:
            await self.runner.cleanup()

    # --- health and metadata ---------------------------------------------------------------------------

    async def live(self, request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def ready(self, request: web.Request) -> web.Response:
        if not self.server_ready():
            raise Unavailable("the server is not ready")
        return web.json_response({"ready": True})

    async def server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"name": SERVER_NAME, "version": server_version(), "extensions": list(REST_EXTENSIONS)}
        )

    def _resolve(self, request: web.Request):
        return self.repository.resolve(request.match_info["name"], request.match_info.get("version", ""))

    async def model_ready(self, request: web.Request) -> web.Response:
        model = self._resolve(request)
        return web.json_response({"name": model.name, "ready": True})

    async def model_metadata(self, request: web.Request) -> web.Response:
        model = self._resolve(request)
        batch = [-1] if model.max_batch_size > 0 else []

        def tensors(specs):
            return [{"name": s.name, "datatype": s.datatype, "shape": batch + list(s.dims)} for s in specs]

        return web.json_response(
            {
                "name": model.name,
                "versions": [str(v) for v in self.repository.ready_versions(model.name)],
                "platform": model.config.platform,
                "inputs": tensors(model.inputs.values()),
                "outputs": tensors(model.outputs.values()),
            }
        )

    async def model_config(self, request: web.Request) -> web.Response:
        return web.json_response(proto_json(self._resolve(request).config))

    async def statistics(self, request: web.Request) -> web.Response:
        name, version = request.match_info.get("name", ""), request.match_info.get("version", "")
        stats = pb.ModelStatisticsResponse(
            model_stats=[
                recorder.stats.to_proto(model, str(number))
                for model, number, recorder in self.repository.recorders(name, version)
            ]
        )
        return web.json_response(proto_json(stats))

    # --- inference -------------------------------------------------------------------------------------

    async def infer(self, request: web.Request) -> web.Response:
        name, version = request.match_info["name"], request.match_info.get("version", "")
        length = _header_length(request)
        header, binary = parse_header(await _body(request), length)
        rest = to_infer_request(name, version, header, binary)
        response = await infer(self.repository, rest.request, None)
        body, json_length = from_infer_response(response, rest)
        if json_length is None:
            return web.Response(body=body, content_type=JSON)
        return web.Response(body=body, content_type=OCTET_STREAM, headers={HEADER_LENGTH: str(json_length)})

    # --- repository extension --------------------------------------------------------------------------

    async def repository_index(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        ready = body.get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidArgument(f"repository index: 'ready' must be a boolean, got {clip(ready)}")
        rows = self.repository.index(ready_only=ready)
        return web.json_response(
            [{"name": r.name, "version": r.version, "state": r.state, "reason": r.reason} for r in rows]
        )

    async def load(self, request: web.Request) -> web.Response:
        name = await self._check_control(request, "load")
        await self.repository.load(name)
        return web.json_response({})

    async def unload(self, request: web.Request) -> web.Response:
        name = await self._check_control(request, "unload")
        await self.repository.unload(name)
        return web.json_response({})

    async def _check_control(self, request: web.Request, action: str) -> str:
        """The same rules as gRPC's RepositoryModelLoad / Unload; returns the model name."""
        name = request.match_info["name"]
        body = await _json_object(request)
        if not self.explicit_control:
            raise Unavailable(
                "explicit model load / unload is not allowed if polling is enabled or model control is "
                "'none' (start the server with --model-control-mode explicit)"
            )
        parameters = body.get("parameters", {})
        if not isinstance(parameters, dict):
            raise InvalidArgument(f"model '{clip(name)}': {action} 'parameters' must be an object")
        unsupported = sorted(set(parameters) - {"unload_dependents"})
        if unsupported:
            raise FailedPrecondition(
                f"model '{clip(name)}': {action} parameters {unsupported} are not supported"
            )
        return name


def _content_type(request: web.Request) -> str:
    return request.headers.get("Content-Type", "").split(";")[0].strip().lower()


def _check_content_type(request: web.Request, accepted: tuple[str, ...]) -> None:
    kind = _content_type(request)
    if kind not in accepted:
        raise InvalidArgument(
            f"Content-Type {clip(kind)} is not accepted here, send {' or '.join(a for a in accepted if a)}"
        )


async def _body(request: web.Request) -> bytes:
    _check_content_type(request, BODY_TYPES)
    return await request.read()


def _header_length(request: web.Request) -> int | None:
    text = request.headers.get(HEADER_LENGTH)
    if text is None:
        if _content_type(request) == OCTET_STREAM:
            raise InvalidArgument(f"an {OCTET_STREAM} body needs the {HEADER_LENGTH} header")
        return None
    if not text.strip().isdigit():
        raise InvalidArgument(f"{HEADER_LENGTH} must be a non-negative integer, got {clip(text)}")
    return int(text)


async def _json_object(request: web.Request) -> dict:
    """An optional JSON object body (empty means {})."""
    _check_content_type(request, BODY_TYPES)
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidArgument(f"the request body is not valid JSON: {clip(str(exc))}") from None
    if not isinstance(body, dict):
        raise InvalidArgument(f"the request body must be a JSON object, got {type(body).__name__}")
    return body
