"""KServe v2 / Triton gRPC conformance checks, run through Triton's own client (`tritonclient[grpc]`).

A standalone script for a separate virtual environment: tritonclient ships its own generated `inference`
protos (which collide with ortserve's in one process) and pins a different protobuf. It is given a JSON spec
(the server addresses and what the served models compute), runs every check against the live server, prints a
JSON report `[{"name", "ok", "detail"}, ...]` on stdout and exits 1 if any check failed.

The spec (keys marked ? are optional; checks that need a missing key report ok with detail "skipped: ..."):
    url                 HOST:PORT of a server in model-control-mode none serving `linear` (and `two_outputs`)
    explicit_url?       HOST:PORT of a server in model-control-mode explicit whose repository holds `linear`,
                        nothing loaded at start
    linear              {"name", "input", "output", "weight": [[F x C]], "bias": [C], "labels"?: [C],
                         "softmax_output"?: NAME}
                        output = x @ weight + bias (and softmax_output = softmax(output) when named),
                        FP32, batched (max_batch_size > 0), version "1"
    two_outputs?        {"name", "inputs": [A, B], "outputs": [SUM, DIFF], "dims": [N]}
                        SUM = A + B, DIFF = A - B, FP32, batched

The checks live in tritonclient_grpc_checks.py and tritonclient_grpc_error_checks.py (this order), the
registry and report in tritonclient_harness.py. Only tritonclient, grpc and numpy are imported, and
tritonclient only inside `main`, so the test module can read CHECK_NAMES without tritonclient installed.
"""

from __future__ import annotations

import sys

import tritonclient_grpc_error_checks  # noqa: F401 - registers the error and model-control checks
from tritonclient_grpc_checks import CHECKS, Context
from tritonclient_harness import emit, read_spec

CHECK_NAMES = CHECKS.names


def main(argv: list[str] | None = None) -> int:
    spec = read_spec(argv, __doc__.split("\n\n")[0])

    import grpc
    import tritonclient.grpc as grpcclient
    from tritonclient.grpc import service_pb2, service_pb2_grpc
    from tritonclient.utils import InferenceServerException

    with grpcclient.InferenceServerClient(url=spec["url"]) as client:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(spec["url"]))
        ctx = Context(spec, client, grpcclient, service_pb2, stub, InferenceServerException)
        report = CHECKS.run(ctx, InferenceServerException)
    return emit(report)


if __name__ == "__main__":
    sys.exit(main())
