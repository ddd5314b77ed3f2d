"""A bare grpc.aio KServe v2 server: parses each ModelInfer request and answers a canned response of the
right shape without inference. Its request rate is the ceiling of the RPC path in Python.

    python -m bench.bare_server --models models.json [--port 0]

models.json maps model name -> {"output": NAME, "datatype": "FP32", "row_shape": [10]}. Prints one line
`BARE_LISTENING grpc=HOST:PORT` when it serves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from pathlib import Path

import grpc

from ortserve.protos import grpc_service_pb2 as pb
from ortserve.protos import grpc_service_pb2_grpc as pb_grpc
from ortserve.protos.datatypes import KSERVE_TO_NUMPY


class BareServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, models: dict[str, dict]) -> None:
        self._models = models
        self._responses: dict[tuple[str, int], pb.ModelInferResponse] = {}

    def _canned(self, name: str, rows: int) -> pb.ModelInferResponse:
        key = (name, rows)
        if key not in self._responses:
            spec = self._models[name]
            shape = [rows, *spec["row_shape"]]
            response = pb.ModelInferResponse(model_name=name, model_version="1")
            output = response.outputs.add(name=spec["output"], datatype=spec["datatype"])
            output.shape.extend(shape)
            itemsize = KSERVE_TO_NUMPY[spec["datatype"]].itemsize
            response.raw_output_contents.append(bytes(math.prod(shape) * itemsize))
            self._responses[key] = response
        return self._responses[key]

    async def ServerLive(self, request, context):  # noqa: N802 - the gRPC method name
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):  # noqa: N802 - the gRPC method name
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request, context):  # noqa: N802 - the gRPC method name
        return pb.ModelReadyResponse(ready=request.name in self._models)

    async def ModelInfer(self, request, context):  # noqa: N802 - the gRPC method name
        if request.model_name not in self._models or not request.inputs or not request.inputs[0].shape:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.model_name!r}")
        response = self._canned(request.model_name, int(request.inputs[0].shape[0]))
        if request.id:
            response = pb.ModelInferResponse.FromString(response.SerializeToString())
            response.id = request.id
        return response


async def serve(models: dict[str, dict], host: str, port: int) -> None:
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024), ("grpc.so_reuseport", 0)]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(BareServicer(models), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    sys.stdout.write(f"BARE_LISTENING grpc={host}:{bound}\n")
    sys.stdout.flush()
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True, help="JSON: model name -> output spec")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    models = json.loads(args.models.read_text())
    try:
        asyncio.run(serve(models, args.host, args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
