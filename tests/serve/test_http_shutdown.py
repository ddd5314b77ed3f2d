"""SIGTERM with a REST request in flight: readiness turns false, the request still gets its answer."""

from __future__ import annotations

import concurrent.futures
import signal
import time

import onnx_models as models
from kserve import sample, scrape
from rest import call
from serverproc import start_server

SIZE = 128
CONFIG = "max_batch_size: 16\ninstance_group [ { count: 1 kind: KIND_CPU } ]\n"


def test_in_flight_rest_request_finishes_after_sigterm(tmp_path):
    depth = models.slow_depth_for(1.0, SIZE, rows=1024, batch=16, threads=0)  # a second, on any machine
    models.write_model(tmp_path, "slow", models.slow(SIZE, rows=1024, depth=depth), CONFIG)
    body = {"inputs": [{"name": "x", "shape": [16, SIZE], "datatype": "FP32", "data": [0.5] * (16 * SIZE)}]}
    with start_server(tmp_path) as server, concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(call, server.http_url, "/v2/models/slow/infer", body, timeout=120)
        deadline = time.monotonic() + 60
        pending = "ortserve_inference_pending_request_count"
        while sample(scrape(server.metrics_url), pending, model="slow") < 1:
            assert not answer.done(), answer.result()  # answered before we looked: the server is too fast
            assert time.monotonic() < deadline, "the request never reached the model"
        server.process.send_signal(signal.SIGTERM)
        result = answer.result(timeout=120)
        assert result.status == 200, result.body
        assert len(result.json()["outputs"][0]["data"]) == 16 * SIZE
        assert server.process.wait(timeout=60) == 0
        assert "shutting down" in server.stderr()
