"""REST repository extension (explicit model control), and REST + gRPC requests sharing one batch."""

from __future__ import annotations

import concurrent.futures

import grpc
import numpy as np
import onnx_models as models
import pytest
from kserve import request, sample, scrape, stub
from rest import call
from serverproc import start_server

from ortserve.protos import grpc_service_pb2 as pb

SLOW_SIZE = 128
SLOW_CONFIG = "max_batch_size: 16\ndynamic_batching {}\ninstance_group [ { count: 1 kind: KIND_CPU } ]\n"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("rest-control") / "models"
    models.write_model(repo, "good", models.linear_classifier(), "max_batch_size: 8")
    models.write_model(repo, "spare", models.linear_classifier(), "max_batch_size: 8")
    models.write_model(repo, "broken", models.BROKEN_MODEL)
    # The blocker (8 rows) runs about a second on any machine, so the two requests queue behind it: at the
    # fixed depth 16 it ran so briefly on an AVX-512 machine that in ten rounds they never both did.
    depth = models.slow_depth_for(1.0, SLOW_SIZE, rows=1024, batch=8, threads=0)
    models.write_model(repo, "slow", models.slow(SLOW_SIZE, rows=1024, depth=depth), SLOW_CONFIG)
    return repo


@pytest.fixture(scope="module")
def server(repo):
    args = ("--model-control-mode", "explicit", "--load-model", "good", "--load-model", "slow")
    with start_server(repo, *args) as process:
        yield process


def _index(base, **body) -> dict[tuple[str, str], str]:
    answer = call(base, "/v2/repository/index", body)
    assert answer.status == 200, answer.body
    return {(row["name"], row["version"]): row["state"] for row in answer.json()}


def test_index_load_and_unload(server):
    base = server.http_url
    index = _index(base)
    assert index[("good", "1")] == "READY" and index[("spare", "")] == "UNAVAILABLE"
    assert set(_index(base, ready=True)) == {("good", "1"), ("slow", "1")}
    assert call(base, "/v2/repository/index", b"").status == 200  # an empty body means {}

    assert call(base, "/v2/repository/models/spare/load", b"").status == 200
    assert call(base, "/v2/models/spare/ready").status == 200
    answer = call(base, "/v2/repository/models/spare/unload", {"parameters": {"unload_dependents": False}})
    assert answer.status == 200, answer.body
    assert call(base, "/v2/models/spare/ready").status == 503
    assert "READY" not in {state for (name, _), state in _index(base).items() if name == "spare"}


def test_load_errors_match_grpc(server):
    base = server.http_url
    client = stub(server.grpc_address)
    for name in ("broken", "no_such_model"):
        answer = call(base, f"/v2/repository/models/{name}/load", {})
        with pytest.raises(grpc.RpcError) as error:
            client.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=name))
        expected = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.NOT_FOUND: 404}
        assert answer.status == expected[error.value.code()], answer.body
        assert answer.error == error.value.details()
    answer = call(base, "/v2/repository/models/good/load", {"parameters": {"config": "{}"}})
    assert answer.status == 400 and "load parameters ['config'] are not supported" in answer.error
    answer = call(base, "/v2/repository/index", {"ready": "yes"})
    assert answer.status == 400 and "'ready' must be a boolean" in answer.error


def _slow_stats(client) -> pb.ModelStatistics:
    return client.ModelStatistics(pb.ModelStatisticsRequest(name="slow")).model_stats[0]


def _pending(server) -> float:
    return sample(scrape(server.metrics_url), "ortserve_inference_pending_request_count", model="slow")


def test_a_rest_and_a_grpc_request_share_one_batch(server):
    """While a blocker runs on the one instance, a REST request (2 rows) and a gRPC request (3 rows) queue;
    the idle worker then takes both at once: a batch of 5 rows can only be theirs together."""
    client, base = stub(server.grpc_address), server.http_url
    rest_rows, grpc_rows = 2, 3
    rest_body = {
        "inputs": [
            {
                "name": "x",
                "shape": [rest_rows, SLOW_SIZE],
                "datatype": "FP32",
                "data": [0.0] * (2 * SLOW_SIZE),
            }
        ]
    }
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for _ in range(10):  # a round where the blocker finished before both queued proves nothing: again
            blocker = client.ModelInfer.future(request("slow", {"x": np.ones((8, SLOW_SIZE), np.float32)}))
            while _pending(server) < 1 and not blocker.done():
                pass  # the blocker has reached the model (queued or running)
            rest = pool.submit(call, base, "/v2/models/slow/infer", rest_body)
            grpc_call = client.ModelInfer.future(
                request("slow", {"x": np.ones((grpc_rows, SLOW_SIZE), np.float32)})
            )
            assert rest.result(timeout=120).status == 200
            assert len(grpc_call.result(timeout=120).outputs) == 1
            blocker.result(timeout=120)
            sizes = {b.batch_size for b in _slow_stats(client).batch_stats}
            if rest_rows + grpc_rows in sizes or rest_rows + grpc_rows + 8 in sizes:
                break
    stats = _slow_stats(client)
    assert {rest_rows + grpc_rows, rest_rows + grpc_rows + 8} & sizes, f"batch sizes seen: {sorted(sizes)}"
    assert stats.inference_count > 0 and stats.execution_count < stats.inference_stats.success.count
