"""The server's plain modules without gRPC: batcher, tensors, model config, repository, classification."""

from __future__ import annotations

import asyncio

import numpy as np
import onnx
import onnx_models as models
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from prometheus_client import CollectorRegistry

from ortserve.protos import grpc_service_pb2 as pb
from ortserve.protos import model_config_pb2
from ortserve.serve.batcher import Batcher, BatchPolicy
from ortserve.serve.classification import classify
from ortserve.serve.errors import (
    InternalError,
    InvalidArgument,
    ModelLoadError,
    NotFound,
    QueueFull,
    Unavailable,
)
from ortserve.serve.metrics import ServerMetrics
from ortserve.serve.model import LoadOptions
from ortserve.serve.model_config import OnnxTensor, TensorSpec, complete_io, read_config
from ortserve.serve.repository import ModelRepository, check_model_name, select_versions
from ortserve.serve.runtime import SLOW_MODEL_BLOCK_BASE, SPIN_IN_RUNS
from ortserve.serve.tensors import decode_request


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _run_batcher(session, policy, submissions, cancel=()):
    """Submit every (inputs, rows) before the worker runs; return (results or exceptions, batch sizes)."""
    sizes = []

    async def main():
        batcher = Batcher("test", [session], policy, lambda size, *_: sizes.append(size))
        futures = [
            batcher.submit(inputs, rows, list(session_outputs(session))) for inputs, rows in submissions
        ]
        for index in cancel:
            futures[index].cancel()
        results = await asyncio.gather(*futures, return_exceptions=True)
        await batcher.close()
        return results

    return asyncio.run(main()), sizes


def session_outputs(session) -> list[str]:
    return [o.name for o in session.get_outputs()]


DYNAMIC = BatchPolicy(max_batch_size=8, dynamic=True)


def test_batcher_merges_requests_and_splits_row_for_row():
    session = _session(models.linear_classifier())
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((rows, 4)).astype(np.float32) for rows in (1, 3, 2)]
    results, sizes = _run_batcher(session, DYNAMIC, [({"input": x}, len(x)) for x in inputs])
    assert sizes == [6]
    for x, result in zip(inputs, results, strict=True):
        np.testing.assert_allclose(
            result.outputs["logits"], models.classifier_reference(x)["logits"], rtol=1e-5
        )
        assert result.batch_size == 6


def test_batcher_never_exceeds_max_batch_size():
    session = _session(models.linear_classifier())
    submissions = [({"input": np.zeros((3, 4), np.float32)}, 3) for _ in range(5)]
    results, sizes = _run_batcher(session, DYNAMIC, submissions)
    assert all(size <= 8 for size in sizes) and sum(sizes) == 15
    assert all(r.outputs["logits"].shape == (3, 3) for r in results)


def test_batcher_keeps_different_shapes_apart():
    session = _session(models.time_series())
    inputs = [np.ones((1, t, 2), np.float32) * t for t in (2, 3, 2, 5)]
    results, sizes = _run_batcher(session, DYNAMIC, [({"x": x}, 1) for x in inputs])
    assert sorted(sizes) == [1, 1, 2]
    for x, result in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(result.outputs["y"], x * 2)


def test_batcher_without_dynamic_batching_runs_requests_alone():
    session = _session(models.linear_classifier())
    results, sizes = _run_batcher(
        session, BatchPolicy(max_batch_size=8), [({"input": np.zeros((2, 4), np.float32)}, 2)] * 3
    )
    assert sizes == [2, 2, 2]


def test_cancelled_requests_are_never_run():
    session = _session(models.linear_classifier())
    submissions = [({"input": np.zeros((1, 4), np.float32)}, 1) for _ in range(3)]
    results, sizes = _run_batcher(session, DYNAMIC, submissions, cancel=[1])
    assert sizes == [2]
    assert isinstance(results[1], asyncio.CancelledError)


def test_full_queue_is_refused():
    session = _session(models.linear_classifier())

    async def main():
        batcher = Batcher("test", [session], BatchPolicy(max_batch_size=8, dynamic=True, max_queue_size=2))
        x = {"input": np.zeros((1, 4), np.float32)}
        futures = [batcher.submit(x, 1, ["logits"]) for _ in range(2)]
        with pytest.raises(QueueFull, match="exceeds maximum queue size"):
            batcher.submit(x, 1, ["logits"])
        await asyncio.gather(*futures)
        await batcher.close()
        with pytest.raises(Unavailable):
            batcher.submit(x, 1, ["logits"])

    asyncio.run(main())


def test_a_failing_batch_fails_every_request():
    # b has 3 columns where the model adds [B, 2] tensors: onnxruntime raises for the whole batch.
    inputs = {"a": np.ones((1, 2), np.float32), "b": np.ones((1, 3), np.float32)}
    results, _ = _run_batcher(_session(models.add_two()), DYNAMIC, [(inputs, 1)] * 2)
    assert all(isinstance(r, InternalError) for r in results)


def test_a_batch_with_the_wrong_number_of_rows_fails():
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [onnx.numpy_helper.from_array(np.array([0], np.int64), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    results, _ = _run_batcher(_session(model), DYNAMIC, [({"x": np.ones((1, 2), np.float32)}, 1)] * 2)
    assert all(isinstance(r, InternalError) for r in results)


SPECS = {"input": TensorSpec("input", "FP32", (4,), np.dtype(np.float32))}
OUT = {"logits": TensorSpec("logits", "FP32", (3,), np.dtype(np.float32))}


def test_raw_inputs_are_not_copied():
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="input", datatype="FP32", shape=[2, 4])
    message.raw_input_contents.append(np.arange(8, dtype=np.float32).tobytes())
    decoded = decode_request("m", SPECS, OUT, 8, message)
    array = decoded.inputs["input"]
    assert not array.flags.owndata
    assert decoded.rows == 2
    np.testing.assert_array_equal(array, np.arange(8, dtype=np.float32).reshape(2, 4))
    assert [o.name for o in decoded.outputs] == ["logits"]


def test_decode_errors_name_model_tensor_expected_and_got():
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="input", datatype="UINT8", shape=[1, 4])
    with pytest.raises(InvalidArgument, match="model 'm': input 'input': expected datatype FP32, got UINT8"):
        decode_request("m", SPECS, OUT, 8, message)


def test_typed_values_that_do_not_fit_are_refused():
    spec = {"x": TensorSpec("x", "INT8", (2,), np.dtype(np.int8))}
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype="INT8", shape=[1, 2]).contents.int_contents.extend([1, 1000])
    with pytest.raises(InvalidArgument, match="do not fit INT8"):
        decode_request("m", spec, {}, 8, message)


def test_classify_sorts_and_formats_like_triton():
    scores = np.array([[0.1, 0.7, 0.2]], np.float32)
    assert classify(scores, 2, ["a", "b", "c"], batched=True).tolist() == [[b"0.700000:1:b", b"0.200000:2:c"]]
    assert classify(scores[0], 5, [], batched=False).tolist() == [b"0.700000:1", b"0.200000:2", b"0.100000:0"]


def _io(model):
    session = _session(model)
    return [OnnxTensor.from_node_arg(a) for a in session.get_inputs()], [
        OnnxTensor.from_node_arg(a) for a in session.get_outputs()
    ]


def test_auto_complete_fills_io_and_batching():
    config = model_config_pb2.ModelConfig(name="c")
    complete_io(config, *_io(models.linear_classifier()), max_batch_size_given=False, strict=False,
                default_max_batch_size=16)  # fmt: skip
    assert config.max_batch_size == 16 and config.HasField("dynamic_batching")
    assert [(i.name, list(i.dims), i.data_type) for i in config.input] == [
        ("input", [4], model_config_pb2.TYPE_FP32)
    ]
    fixed = model_config_pb2.ModelConfig(name="f")
    complete_io(
        fixed, *_io(models.fixed_shape()), max_batch_size_given=False, strict=False, default_max_batch_size=16
    )
    assert fixed.max_batch_size == 0 and list(fixed.input[0].dims) == [4]


def test_config_that_contradicts_the_model_fails_to_load():
    config = model_config_pb2.ModelConfig(name="c", max_batch_size=4)
    config.input.add(name="input", data_type=model_config_pb2.TYPE_INT64)
    with pytest.raises(ModelLoadError, match="input 'input': config.pbtxt says TYPE_INT64"):
        complete_io(config, *_io(models.linear_classifier()), max_batch_size_given=True, strict=False,
                    default_max_batch_size=16)  # fmt: skip
    unbatchable = model_config_pb2.ModelConfig(name="f", max_batch_size=4)
    with pytest.raises(ModelLoadError, match="dynamic first"):
        complete_io(unbatchable, *_io(models.fixed_shape()), max_batch_size_given=True, strict=False,
                    default_max_batch_size=16)  # fmt: skip


def test_explicit_max_batch_size_zero_is_kept(tmp_path):
    model_dir = models.write_model(tmp_path, "m", models.linear_classifier(), "max_batch_size: 0")
    config, given = read_config(model_dir, strict=False)
    assert given and config.max_batch_size == 0
    complete_io(config, *_io(models.linear_classifier()), max_batch_size_given=given, strict=False,
                default_max_batch_size=16)  # fmt: skip
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [-1, 4]


def test_strict_model_config_needs_the_file(tmp_path):
    model_dir = models.write_model(tmp_path, "m", models.linear_classifier())
    with pytest.raises(ModelLoadError, match="required with --strict-model-config"):
        read_config(model_dir, strict=True)


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "/abs", "a/b", "a\\b", ".git"])
def test_check_model_name_rejects_traversal(name):
    with pytest.raises(InvalidArgument):
        check_model_name(name)


def test_version_policies(tmp_path):
    for version in (1, 2, 3):
        (tmp_path / "m" / str(version)).mkdir(parents=True)
    (tmp_path / "m" / "notes").mkdir()
    policy = model_config_pb2.ModelVersionPolicy()
    assert select_versions(tmp_path / "m", policy) == [3]
    policy.latest.num_versions = 2
    assert select_versions(tmp_path / "m", policy) == [2, 3]
    policy.all.SetInParent()
    assert select_versions(tmp_path / "m", policy) == [1, 2, 3]
    policy.specific.versions.extend([1, 7])
    assert select_versions(tmp_path / "m", policy) == [1]
    policy.specific.versions[:] = [7]
    with pytest.raises(ModelLoadError, match="no version directory"):
        select_versions(tmp_path / "m", policy)


def test_repository_loads_resolves_and_isolates_failures(tmp_path):
    models.write_model(tmp_path, "good", models.linear_classifier())
    models.write_model(tmp_path, "bad", models.BROKEN_MODEL)

    async def main():
        repo = ModelRepository(tmp_path, ServerMetrics(CollectorRegistry()), LoadOptions(), lambda: None)
        await repo.load("good")
        with pytest.raises(ModelLoadError, match="bad"):
            await repo.load("bad")
        assert repo.resolve("good").version == 1
        assert repo.resolve("good", "1").config.parameters["execution_provider"].string_value
        with pytest.raises(Unavailable):
            repo.resolve("bad")
        with pytest.raises(NotFound):
            repo.resolve("good", "2")
        with pytest.raises(NotFound):
            repo.resolve("missing")
        states = {(row.name, row.version): row.state for row in repo.index()}
        assert states == {("bad", "1"): "UNAVAILABLE", ("good", "1"): "READY"}
        assert not repo.is_ready()
        await repo.unload_all()

    asyncio.run(main())


def _threads(model) -> int:
    return model.sessions[0].get_session_options().intra_op_num_threads


def _block_base(model) -> str:
    try:
        return model.sessions[0].get_session_options().get_session_config_entry("session.dynamic_block_base")
    except RuntimeError:  # onnxruntime's answer for an entry never set: its default, 0
        return "0"


def test_slow_models_share_parallel_loops_in_dynamic_blocks_unless_told(tmp_path):
    def base(value: str) -> str:
        return f'parameters {{ key: "dynamic_block_base" value: {{ string_value: "{value}" }} }}'

    models.write_model(tmp_path, "slow", models.slow())
    models.write_model(tmp_path, "slow_off", models.slow(), base("0"))
    models.write_model(tmp_path, "slow_8", models.slow(), base("8"))
    models.write_model(tmp_path, "quick", models.linear_classifier())
    models.write_model(tmp_path, "negative", models.linear_classifier(), base("-1"))
    models.write_model(tmp_path, "word", models.linear_classifier(), base("four"))

    async def main():
        repo = ModelRepository(tmp_path, ServerMetrics(CollectorRegistry()), LoadOptions(), lambda: None)
        for name in ("slow", "slow_off", "slow_8", "quick"):
            await repo.load(name)
        assert _block_base(repo.resolve("slow")) == str(SLOW_MODEL_BLOCK_BASE)
        assert _block_base(repo.resolve("slow_off")) == "0"
        assert _block_base(repo.resolve("slow_8")) == "8"
        assert _block_base(repo.resolve("quick")) == "0"  # one thread: nothing to share
        with pytest.raises(ModelLoadError, match="dynamic_block_base -1 is negative"):
            await repo.load("negative")
        with pytest.raises(ModelLoadError, match="not a non-negative integer.*'four'"):
            await repo.load("word")
        await repo.unload_all()

    asyncio.run(main())


def test_slow_models_spin_inside_runs_and_quick_models_run_on_one_quiet_thread(tmp_path):
    spin = 'parameters { key: "allow_spinning" value: { string_value: "1" } }'
    models.write_model(tmp_path, "slow", models.slow())
    models.write_model(tmp_path, "quick", models.linear_classifier())
    models.write_model(tmp_path, "told", models.linear_classifier(), spin)
    models.write_model(tmp_path, "bad", models.linear_classifier(), spin.replace('"1"', '"yes"'))
    two = 'parameters { key: "intra_op_thread_count" value: { string_value: "2" } }'
    models.write_model(tmp_path, "two", models.linear_classifier(), two)

    async def main():
        repo = ModelRepository(tmp_path, ServerMetrics(CollectorRegistry()), LoadOptions(), lambda: None)
        for name in ("slow", "quick", "told", "two"):
            await repo.load(name)
        assert repo.resolve("slow").spinning == SPIN_IN_RUNS
        # A quick model runs on the event loop: its threads never spin, and one is enough unless told.
        assert repo.resolve("quick").spinning == "0"
        assert _threads(repo.resolve("quick")) == 1
        assert repo.resolve("told").spinning == "1" and _threads(repo.resolve("told")) == 1
        assert repo.resolve("two").spinning == "0" and _threads(repo.resolve("two")) == 2
        assert _threads(repo.resolve("slow")) == 0  # onnxruntime's default: one per physical core
        with pytest.raises(ModelLoadError, match="allow_spinning must be one of auto, 0, 1, got 'yes'"):
            await repo.load("bad")
        await repo.unload_all()

    asyncio.run(main())


def test_sessions_never_fall_back_to_another_provider_at_run_time(tmp_path):
    """onnxruntime retries a failed run on CPU (switching the session for good) unless told not to."""
    models.write_model(tmp_path, "quick", models.linear_classifier())

    async def main():
        repo = ModelRepository(tmp_path, ServerMetrics(CollectorRegistry()), LoadOptions(), lambda: None)
        await repo.load("quick")
        # The flag behind InferenceSession.disable_fallback(); there is no public getter.
        assert all(session._enable_fallback is False for session in repo.resolve("quick").sessions)
        await repo.unload_all()

    asyncio.run(main())
