"""The sequence batcher without gRPC: parameters, config checks, order, state, expiry and close, on a real
onnxruntime running sum (total_out = total_in + sum of the chunk) so every answer is exact."""

from __future__ import annotations

import asyncio

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnx_models import _model

from ortserve.protos import grpc_service_pb2 as pb
from ortserve.protos import model_config_pb2 as mc
from ortserve.serve.batcher import Batcher, BatchPolicy
from ortserve.serve.errors import InvalidArgument, ModelLoadError, ResourceExhausted, Unavailable
from ortserve.serve.metrics import ModelMetrics
from ortserve.serve.model_config import OnnxTensor
from ortserve.serve.sequence_state import SequenceFlags, SequencePolicy, sequence_flags, sequence_policy


def running_sum():
    """x [B, T, 1], total_in [B, 1] -> total_out = total_in + sum_t x, out = total_out."""
    return _model(
        [
            helper.make_node("ReduceSum", ["x", "axes"], ["chunk"], keepdims=0),
            helper.make_node("Add", ["total_in", "chunk"], ["total_out"]),
            helper.make_node("Identity", ["total_out"], ["out"]),
        ],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", 1]),
            helper.make_tensor_value_info("total_in", TensorProto.FLOAT, ["batch", 1]),
        ],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 1]) for n in ("out", "total_out")],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )


CONFIG = """max_batch_size: 8
sequence_batching { max_sequence_idle_microseconds: %d oldest { max_candidate_sequences: %d }
  state [ { input_name: "total_in" output_name: "total_out" data_type: TYPE_FP32 dims: [1]
            initial_state { data_type: TYPE_FP32 dims: [1] zero_data: true name: "zeros" } } ] }"""
ONNX_INPUTS = [
    OnnxTensor("x", "tensor(float)", (None, None, 1)),
    OnnxTensor("total_in", "tensor(float)", (None, 1)),
]
ONNX_OUTPUTS = [OnnxTensor(n, "tensor(float)", (None, 1)) for n in ("out", "total_out")]


def policy(text: str) -> SequencePolicy | None:
    from google.protobuf import text_format

    config = text_format.Parse(text, mc.ModelConfig(name="sum"))
    return sequence_policy(config, ONNX_INPUTS, ONNX_OUTPUTS)


def params(**values):
    request = pb.ModelInferRequest()
    for key, value in values.items():
        param = request.parameters[key]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, str):
            param.string_param = value
        elif value < 0:
            param.int64_param = value
        else:
            param.uint64_param = value
    return request.parameters


def test_sequence_parameters():
    assert sequence_flags("m", params(sequence_id=7, sequence_start=True)) == SequenceFlags(7, True, False)
    assert sequence_flags("m", params(sequence_id="a", sequence_end=True)) == SequenceFlags("a", False, True)
    assert sequence_flags("m", params(sequence_id=0)).id is None
    for bad in (params(sequence_start=True), params(sequence_id="", sequence_end=True)):
        with pytest.raises(InvalidArgument, match="non-zero or non-empty sequence_id"):
            sequence_flags("m", bad)
    with pytest.raises(InvalidArgument, match="bool"):
        sequence_flags("m", params(sequence_id=1, sequence_start=3))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (CONFIG.replace("max_batch_size: 8", "max_batch_size: 0") % (1, 4), "max_batch_size > 0"),
        (CONFIG.replace('input_name: "total_in"', 'input_name: "nope"') % (1, 4), "'nope' is not in"),
        (CONFIG.replace("dims: [1]\n", "dims: [2]\n") % (1, 4), "disagree"),
        (CONFIG.replace("TYPE_FP32 dims: [1]\n", "TYPE_INT32 dims: [1]\n") % (1, 4), "data_type"),
        (CONFIG.replace("oldest { max_candidate_sequences: %d }", "direct { }") % 1, "direct"),
        (CONFIG.replace("zero_data: true", 'data_file: "f"') % (1, 4), "zero_data"),
    ],
)
def test_bad_sequence_configs_are_refused_at_load(text, match):
    with pytest.raises(ModelLoadError, match=match):
        policy(text)


def test_policy_defaults():
    seq = policy(CONFIG % (0, 0))
    assert seq.idle_s == 1.0 and seq.max_sequences == 65_536
    assert [p.input_name for p in seq.states] == ["total_in"]


async def _with_batcher(text, body):
    from ortserve.serve.sequences import SequenceBatcher

    session = ort.InferenceSession(running_sum().SerializeToString(), providers=["CPUExecutionProvider"])
    batcher = Batcher("'sum'", [session], BatchPolicy(max_batch_size=8, dynamic=True))
    metrics = ModelMetrics("sum", "1")
    sequences = SequenceBatcher("'sum'", policy(text), batcher, metrics)
    try:
        return await body(sequences, metrics)
    finally:
        await sequences.close()
        await batcher.close()


def chunk(*values):
    return {"x": np.asarray(values, np.float32).reshape(1, -1, 1)}


def test_pipelined_steps_keep_each_sequences_order_and_state():
    async def body(sequences, metrics):
        tasks = []
        for step in range(5):  # every step queued at once, sequences interleaved
            for sid in (1, "b", 3):
                flags = SequenceFlags(sid, step == 0, step == 4)
                values = (step + 1,) * (1 + step % 2) if sid != "b" else (10.0 * (step + 1),)
                tasks.append(asyncio.ensure_future(sequences.run(flags, chunk(*values), 1, ["out"])))
        answers = await asyncio.gather(*tasks)
        assert all(set(answer.outputs) == {"out"} for answer in answers), "state outputs stay inside"
        return [answer.outputs["out"].item() for answer in answers], metrics

    results, metrics = asyncio.run(_with_batcher(CONFIG % (60_000_000, 8), body))
    by_sequence = {sid: results[i::3] for i, sid in enumerate((1, "b", 3))}
    assert by_sequence[1] == by_sequence[3] == [1.0, 5.0, 8.0, 16.0, 21.0]
    assert by_sequence["b"] == [10.0, 30.0, 60.0, 100.0, 150.0]
    assert (metrics.sequence_started, metrics.sequence_ended, metrics.sequences_live) == (3, 3, 0)


def test_errors_leave_the_state_alone_and_the_bound_holds():
    async def body(sequences, metrics):
        await sequences.run(SequenceFlags(1, True, False), chunk(2.0), 1, ["out"])
        with pytest.raises(InvalidArgument, match="no elements"):
            await sequences.run(
                SequenceFlags(1, False, False), {"x": np.zeros((1, 0, 1), np.float32)}, 1, ["out"]
            )
        with pytest.raises(InvalidArgument, match="started with batch size 1"):
            await sequences.run(
                SequenceFlags(1, False, False), {"x": np.zeros((2, 1, 1), np.float32)}, 2, ["out"]
            )
        with pytest.raises(InvalidArgument, match="sequence 9 is not live"):
            await sequences.run(SequenceFlags(9, False, False), chunk(1.0), 1, ["out"])
        with pytest.raises(InvalidArgument, match="needs a sequence_id"):
            await sequences.run(SequenceFlags(None, False, False), chunk(1.0), 1, ["out"])
        await sequences.run(SequenceFlags(2, True, False), chunk(1.0), 1, ["out"])
        with pytest.raises(ResourceExhausted, match="max_candidate_sequences 2"):
            await sequences.run(SequenceFlags(3, True, False), chunk(1.0), 1, ["out"])
        result = await sequences.run(SequenceFlags(1, False, True), chunk(3.0), 1, ["out"])
        return result.outputs["out"].item()

    assert asyncio.run(_with_batcher(CONFIG % (60_000_000, 2), body)) == 5.0


def test_idle_sequences_expire_and_close_fails_waiting_steps():
    async def body(sequences, metrics):
        await sequences.run(SequenceFlags(1, True, False), chunk(1.0), 1, ["out"])
        while metrics.sequence_expired == 0:
            await asyncio.sleep(0.01)
        assert sequences.live == 0
        with pytest.raises(InvalidArgument, match="not live"):
            await sequences.run(SequenceFlags(1, False, False), chunk(1.0), 1, ["out"])
        tasks = [
            asyncio.ensure_future(sequences.run(SequenceFlags(5, t == 0, False), chunk(1.0), 1, ["out"]))
            for t in range(20)
        ]
        await asyncio.sleep(0)  # every step registered; the first is in the batcher, the rest wait
        await sequences.close()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        failed = [o for o in outcomes if isinstance(o, Unavailable)]
        assert failed and all("unloaded while sequence 5 was live" in str(o) for o in failed)
        assert all(isinstance(o, Unavailable) or o.outputs["out"].item() >= 1.0 for o in outcomes)
        with pytest.raises(Unavailable):
            await sequences.run(SequenceFlags(6, True, False), chunk(1.0), 1, ["out"])

    asyncio.run(_with_batcher(CONFIG % (50_000, 8), body))


def test_complete_io_leaves_the_state_out_of_the_clients_tensors():
    from google.protobuf import text_format

    from ortserve.serve.model_config import complete_io

    def completed(text):
        config = text_format.Parse(text, mc.ModelConfig(name="sum"))
        complete_io(
            config,
            ONNX_INPUTS,
            ONNX_OUTPUTS,
            max_batch_size_given=True,
            strict=False,
            default_max_batch_size=8,
        )
        return config

    config = completed(CONFIG % (1, 4))
    assert [t.name for t in config.input] == ["x"] and [t.name for t in config.output] == ["out"]
    listed = CONFIG % (1, 4) + '\ninput [ { name: "total_in" data_type: TYPE_FP32 dims: [1] } ]'
    with pytest.raises(ModelLoadError, match="'total_in' is a sequence_batching state"):
        completed(listed)
    plain = completed("max_batch_size: 8")  # the same file without sequence_batching: state is visible
    assert [t.name for t in plain.input] == ["x", "total_in"]
