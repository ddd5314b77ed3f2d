"""The inference path: resolve the model, check and decode the request, queue it, encode the answer."""

from __future__ import annotations

import asyncio
import time

from ortserve.protos import grpc_service_pb2

from .classification import classify
from .errors import Cancelled, ServeError
from .repository import ModelRepository
from .scheduling import request_scheduling
from .sequence_state import sequence_flags
from .tensors import decode_request, decode_work, encode_outputs

# Decoding that needs Python work per item (BYTES, typed contents) runs in a thread past this many items,
# so one large string tensor cannot hold the event loop (and ServerLive) for seconds.
INLINE_DECODE_ITEMS = 65536


async def infer(
    repository: ModelRepository, request: grpc_service_pb2.ModelInferRequest, deadline: float | None = None
) -> grpc_service_pb2.ModelInferResponse:
    """Answer one ModelInferRequest; `deadline` is the client's, on the time.monotonic() clock."""
    start = time.perf_counter_ns()
    model = repository.resolve(request.model_name, request.model_version)
    recorder, started = model.recorder, False
    try:
        limits = model.request_limits
        decode_args = (model.name, model.inputs, model.outputs, model.max_batch_size, request, limits)
        if decode_work(request) > INLINE_DECODE_ITEMS:
            decoded = await asyncio.to_thread(decode_request, *decode_args)
        else:
            decoded = decode_request(*decode_args)
        names = [o.name for o in decoded.outputs]
        recorder.request_started()
        started = True
        if model.sequences is not None:
            flags = sequence_flags(model.name, request.parameters)
            result = await model.sequences.run(flags, decoded.inputs, decoded.rows, names, deadline)
        else:  # sequence parameters sent to a stateless model are ignored, as Triton does
            scheduling = request_scheduling(model.name, request.parameters, model.policy)
            result = await model.batcher.submit(decoded.inputs, decoded.rows, names, deadline, scheduling)
        response = grpc_service_pb2.ModelInferResponse(
            model_name=model.name, model_version=model.version_label, id=request.id
        )
        encode_outputs(response, _outputs(model, decoded.outputs, result.outputs))
    except ServeError as exc:
        recorder.request_failed(exc.reason, time.perf_counter_ns() - start, started)
        raise
    except asyncio.CancelledError:
        recorder.request_failed(Cancelled.reason, time.perf_counter_ns() - start, started)
        raise
    except Exception:
        recorder.request_failed("internal", time.perf_counter_ns() - start, started)
        raise
    recorder.request_succeeded(result, time.perf_counter_ns() - start, decoded.rows)
    return response


def _outputs(model, requested, arrays):
    """(name, datatype, array) of each requested output; classification turns an output into strings."""
    specs, batched = model.outputs, model.max_batch_size > 0
    return [
        (o.name, "BYTES", classify(arrays[o.name], o.classification, model.labels.get(o.name, ()), batched))
        if o.classification
        else (o.name, specs[o.name].datatype, arrays[o.name])
        for o in requested
    ]
