"""The sequence batcher over real gRPC: implicit state per sequence, order, batching across sequences,
protocol errors, idle expiry, unload, and the same file served as a plain model with visible state."""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import rest
import test_tritonclient_conformance as conformance
from kserve import outputs, request, sample, scrape, stub
from sequence_models import FEATURES, HIDDEN, LAYERS, write_step_model

from ortserve.protos import grpc_service_pb2 as pb

CHUNKS = (1, 3, 1, 5, 2)
tritonclient_venv = conformance.tritonclient_python  # the fixture: Python of the tritonclient venv


def step(model, x, sequence_id, start=False, end=False, request_id=""):
    message = request(model, {"input": x}, request_id=request_id)
    if isinstance(sequence_id, str):
        message.parameters["sequence_id"].string_param = sequence_id
    elif sequence_id is not None:
        message.parameters["sequence_id"].uint64_param = sequence_id
    if start:
        message.parameters["sequence_start"].bool_param = True
    if end:
        message.parameters["sequence_end"].bool_param = True
    return message


def chunk_bounds(chunks=CHUNKS):
    ends = list(itertools.accumulate(chunks))
    return list(zip([0, *ends[:-1]], ends, strict=True))


@pytest.fixture(scope="module")
def seq_repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("sequences")
    nets = {
        "lstm_seq": write_step_model(repo, "lstm_seq", "lstm"),
        "gru_seq": write_step_model(repo, "gru_seq", "gru"),
        "few_seq": write_step_model(repo, "few_seq", "gru", max_sequences=2),
        "brief_seq": write_step_model(repo, "brief_seq", "gru", idle_us=200_000),
        "lstm_plain": write_step_model(repo, "lstm_plain", "lstm", idle_us=None),
    }
    return repo, nets


@pytest.fixture(scope="module")
def seq_server(seq_repo, start_ortserve):
    with start_ortserve(seq_repo[0]) as process:
        yield process


@pytest.fixture(scope="module")
def nets(seq_repo):
    return seq_repo[1]


@pytest.fixture(scope="module")
def client(seq_server):
    return stub(seq_server.grpc_address)


def code_of(call, *args):
    with pytest.raises(grpc.RpcError) as caught:
        call(*args)
    return caught.value.code(), caught.value.details()


def test_interleaved_sequences_on_several_connections_match_pytorch_every_prefix(seq_server, nets):
    clients = [stub(seq_server.grpc_address) for _ in range(3)]
    rng = np.random.default_rng(1)
    runs = []
    for index, model in enumerate(["lstm_seq", "gru_seq"] * 3):
        chunks = tuple(rng.permutation(CHUNKS))
        x = rng.standard_normal((1, sum(chunks), FEATURES)).astype(np.float32)
        runs.append((model, 1000 + index if index % 2 else f"stream-{index}", x, chunk_bounds(chunks)))
    for position in range(len(CHUNKS)):
        futures = []
        for index, (model, sequence_id, x, bounds) in enumerate(runs):
            lo, hi = bounds[position]
            message = step(model, x[:, lo:hi], sequence_id, position == 0, position == len(CHUNKS) - 1)
            futures.append(clients[index % 3].ModelInfer.future(message))
        for future, (model, _, x, bounds) in zip(futures, runs, strict=True):
            got = outputs(future.result(timeout=60))
            assert set(got) == {"output"}, "state outputs must stay inside the server"
            want = nets[model].prefix_output(x[:, : bounds[position][1]])
            np.testing.assert_allclose(got["output"], want, rtol=1e-4, atol=1e-5)


def test_a_stream_carries_pipelined_steps_in_order(client, nets):
    rng = np.random.default_rng(2)
    xs = {sid: rng.standard_normal((1, 6, FEATURES)).astype(np.float32) for sid in (7, 8)}
    messages = []
    for t in range(6):  # every step sent at once: order comes from the server alone
        for sid, x in xs.items():
            messages.append(step("gru_seq", x[:, t : t + 1], sid, t == 0, t == 5, request_id=f"{sid}:{t}"))
    answers = list(client.ModelStreamInfer(iter(messages), timeout=60))
    assert len(answers) == len(messages)
    for answer in answers:
        assert not answer.error_message, answer.error_message
        sid, t = map(int, answer.infer_response.id.split(":"))
        want = nets["gru_seq"].prefix_output(xs[sid][:, : t + 1])
        np.testing.assert_allclose(outputs(answer.infer_response)["output"], want, rtol=1e-4, atol=1e-5)


def test_steps_of_different_sequences_share_batched_runs(client, seq_server):
    before = client.ModelStatistics(pb.ModelStatisticsRequest(name="lstm_seq")).model_stats[0]
    rng = np.random.default_rng(3)
    merged = 0
    for round_ in range(5):  # concurrency is not timing: another round if every step happened to run alone
        ids = [5000 + 100 * round_ + i for i in range(32)]
        for t in range(4):
            x = rng.standard_normal((1, 1, FEATURES)).astype(np.float32)
            futures = [client.ModelInfer.future(step("lstm_seq", x, sid, t == 0, t == 3)) for sid in ids]
            for future in futures:
                future.result(timeout=60)
        stats = client.ModelStatistics(pb.ModelStatisticsRequest(name="lstm_seq")).model_stats[0]
        runs = stats.execution_count - before.execution_count
        merged = (stats.inference_count - before.inference_count) - runs
        if merged > 0:
            break
    assert merged > 0, "32 concurrent sequences never shared a run"
    samples = scrape(seq_server.metrics_url)
    assert sample(samples, "ortserve_sequence_ended_total", model="lstm_seq") >= 32


def test_protocol_errors_are_invalid_argument_and_name_the_sequence(client):
    x = np.zeros((1, 1, FEATURES), np.float32)
    start_only = request("gru_seq", {"input": x})
    start_only.parameters["sequence_start"].bool_param = True
    code, details = code_of(client.ModelInfer, start_only)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "sequence_id" in details
    code, details = code_of(client.ModelInfer, step("gru_seq", x, None))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "sequence_id" in details
    code, details = code_of(client.ModelInfer, step("gru_seq", x, 424242))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "424242" in details and "sequence_start" in details
    long_id = "x" * 10_000
    code, details = code_of(client.ModelInfer, step("gru_seq", x, long_id))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and len(details) < 400
    client.ModelInfer(step("gru_seq", x, "ends", start=True, end=True))
    code, details = code_of(client.ModelInfer, step("gru_seq", x, "ends"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "ends" in details


def test_bad_chunks_are_refused_and_the_sequences_continue(client, nets):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 4, FEATURES)).astype(np.float32)
    other = rng.standard_normal((1, 4, FEATURES)).astype(np.float32)
    client.ModelInfer(step("lstm_seq", x[:, :2], 61, start=True))
    client.ModelInfer(step("lstm_seq", other[:, :2], 62, start=True))
    bad = [
        np.zeros((1, 1, FEATURES + 1), np.float32),  # wrong feature size
        np.zeros((1, 0, FEATURES), np.float32),  # zero steps
        np.zeros((1, 1, FEATURES), np.float64),  # wrong dtype
        np.zeros((2, 1, FEATURES), np.float32),  # another batch size than at START
    ]
    for chunk in bad:
        code, details = code_of(client.ModelInfer, step("lstm_seq", chunk, 61))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        assert "lstm_seq" in details
    for sid, data in ((61, x), (62, other)):
        got = outputs(client.ModelInfer(step("lstm_seq", data[:, 2:], sid, end=True)))
        want = nets["lstm_seq"].prefix_output(data)
        np.testing.assert_allclose(got["output"], want, rtol=1e-4, atol=1e-5)


def test_metadata_shows_only_the_users_tensors_and_the_extensions(client):
    metadata = client.ModelMetadata(pb.ModelMetadataRequest(name="lstm_seq"))
    assert [t.name for t in metadata.inputs] == ["input"]
    assert [t.name for t in metadata.outputs] == ["output"]
    config = client.ModelConfig(pb.ModelConfigRequest(name="lstm_seq")).config
    assert [s.input_name for s in config.sequence_batching.state] == ["h_in_0", "c_in_0"]
    extensions = client.ServerMetadata(pb.ServerMetadataRequest()).extensions
    assert "sequence" in extensions and "sequence(string_id)" in extensions


def test_the_live_sequence_bound_is_resource_exhausted(client):
    x = np.zeros((1, 1, FEATURES), np.float32)
    client.ModelInfer(step("few_seq", x, 1, start=True))
    client.ModelInfer(step("few_seq", x, 2, start=True))
    code, details = code_of(client.ModelInfer, step("few_seq", x, 3, start=True))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "2" in details
    client.ModelInfer(step("few_seq", x, 1, end=True))
    client.ModelInfer(step("few_seq", x, 3, start=True, end=True))


def test_idle_sequences_expire_on_a_timer(client, seq_server):
    x = np.zeros((1, 1, FEATURES), np.float32)
    client.ModelInfer(step("brief_seq", x, 77, start=True))
    deadline = time.monotonic() + 60
    while True:
        samples = scrape(seq_server.metrics_url)
        if sample(samples, "ortserve_sequence_expired_total", model="brief_seq") >= 1:
            break
        assert time.monotonic() < deadline, "the idle sequence never expired"
        time.sleep(0.05)
    assert sample(samples, "ortserve_sequences_live", model="brief_seq") == 0
    code, details = code_of(client.ModelInfer, step("brief_seq", x, 77))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "77" in details


def test_the_same_file_without_sequence_batching_shows_its_state(client, nets):
    metadata = client.ModelMetadata(pb.ModelMetadataRequest(name="lstm_plain"))
    assert {t.name for t in metadata.inputs} == {"input", "h_in_0", "c_in_0"}
    x = np.random.default_rng(5).standard_normal((2, 7, FEATURES)).astype(np.float32)
    state = {name: np.zeros((2, LAYERS, HIDDEN), np.float32) for name in ("h_in_0", "c_in_0")}
    for lo, hi in chunk_bounds((2, 1, 4)):
        got = outputs(client.ModelInfer(request("lstm_plain", {"input": x[:, lo:hi], **state})))
        state = {"h_in_0": got["h_out_0"], "c_in_0": got["c_out_0"]}
        want = nets["lstm_plain"].prefix_output(x[:, :hi])
        np.testing.assert_allclose(got["output"], want, rtol=1e-4, atol=1e-5)
    # Sequence parameters sent to a model without sequence_batching are ignored, as Triton does.
    message = request("lstm_plain", {"input": x[:, :1], **state})
    message.parameters["sequence_id"].uint64_param = 5
    message.parameters["sequence_end"].bool_param = True
    assert set(outputs(client.ModelInfer(message))) == {"output", "h_out_0", "c_out_0"}


def test_unload_drops_live_sequences(tmp_path, start_ortserve):
    write_step_model(tmp_path, "gru_seq", "gru")
    x = np.zeros((1, 1, FEATURES), np.float32)
    with start_ortserve(tmp_path, "--model-control-mode", "explicit", "--load-model", "gru_seq") as server:
        client = stub(server.grpc_address)
        for sid in range(3):
            client.ModelInfer(step("gru_seq", x, sid + 1, start=True))
        labels = {"model": "gru_seq"}
        assert sample(scrape(server.metrics_url), "ortserve_sequences_live", **labels) == 3
        pipelined = [step("gru_seq", x, 1, request_id=str(t)) for t in range(50)]
        answers = client.ModelStreamInfer(iter(pipelined), timeout=60)
        first = next(answers)
        client.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="gru_seq"))
        errors = [a.error_message for a in [first, *answers] if a.error_message]
        assert all("unload" in e or "not ready" in e or "unknown" in e for e in errors), errors
        assert sample(scrape(server.metrics_url), "ortserve_sequences_live", **labels) == 0
        client.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="gru_seq"))
        code, details = code_of(client.ModelInfer, step("gru_seq", x, 2))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "sequence_start" in details


def test_tritonclient_sequence_api_streams_with_server_held_state(
    tritonclient_venv,
    seq_server,
    nets,
    tmp_path,  # noqa: F811 - the imported fixture
):
    rng = np.random.default_rng(6)
    sequences = {}
    for name, sequence_id, chunks in (("numbered", 31337, (1, 2, 1)), ("named", "sensor-7", (3, 1))):
        x = rng.standard_normal((sum(chunks), FEATURES)).astype(np.float32)
        pieces = [x[lo:hi].tolist() for lo, hi in chunk_bounds(chunks)]
        sequences[name] = {"id": sequence_id, "chunks": pieces, "x": x, "bounds": chunk_bounds(chunks)}
    spec = {
        "url": seq_server.grpc_address,
        "model": "lstm_seq",
        "sequences": {n: {"id": s["id"], "chunks": s["chunks"]} for n, s in sequences.items()},
    }
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    run = subprocess.run(
        [
            str(tritonclient_venv),
            str(Path(__file__).with_name("tritonclient_sequence_check.py")),
            spec_path,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-5000:]
    report = json.loads(run.stdout)
    for name, sequence in sequences.items():
        for (_, hi), got in zip(sequence["bounds"], report["answers"][name], strict=True):
            want = nets["lstm_seq"].prefix_output(sequence["x"][None, :hi])
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)
    assert "INVALID_ARGUMENT" in report["errors"]["ended"] and "31337" in report["errors"]["ended"]
    assert "INVALID_ARGUMENT" in report["errors"]["no_id"]
    assert {"sequence", "sequence(string_id)"} <= set(report["extensions"])


def test_rest_and_grpc_continue_the_same_sequence(seq_server, client, nets):
    x = np.random.default_rng(7).standard_normal((1, 3, FEATURES)).astype(np.float32)

    def rest_step(t, **parameters):
        body = {
            "parameters": parameters,
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, FEATURES],
                        "data": x[:, t].ravel().tolist()}],
        }  # fmt: skip
        return rest.call(seq_server.http_url, "/v2/models/lstm_seq/infer", body)

    started = rest_step(0, sequence_id="rest-1", sequence_start=True)
    assert started.status == 200, started.body
    middle = outputs(client.ModelInfer(step("lstm_seq", x[:, 1:2], "rest-1")))
    np.testing.assert_allclose(
        middle["output"], nets["lstm_seq"].prefix_output(x[:, :2]), rtol=1e-4, atol=1e-5
    )
    ended = rest_step(2, sequence_id="rest-1", sequence_end=True)
    assert ended.status == 200, ended.body
    got = np.asarray(ended.json()["outputs"][0]["data"], np.float32).reshape(1, -1)
    np.testing.assert_allclose(got, nets["lstm_seq"].prefix_output(x), rtol=1e-4, atol=1e-5)
    refused = rest_step(0, sequence_id="rest-1")
    assert refused.status == 400 and "rest-1" in refused.error and "sequence_start" in refused.error
    largest = 2**64 - 1  # uint64 ids beyond int64 travel as uint64_param
    assert rest_step(0, sequence_id=largest, sequence_start=True, sequence_end=True).status == 200
    refused = rest_step(0, sequence_id=largest)
    assert refused.status == 400 and str(largest) in refused.error
