"""The request decoder's checks without a server: limits parameters, BYTES parsing, shape arithmetic."""

from __future__ import annotations

import random

import numpy as np
import pytest

from ortserve.protos import grpc_service_pb2 as pb
from ortserve.protos import model_config_pb2
from ortserve.protos.datatypes import deserialize_bytes_tensor, serialize_bytes_tensor
from ortserve.protos.request_limits import format_max_input_dims, parse_max_input_dims
from ortserve.serve.errors import InvalidArgument, ModelLoadError
from ortserve.serve.model_config import TensorSpec
from ortserve.serve.request_limits import RequestLimits
from ortserve.serve.tensors import decode_request

SEQUENCE = {"x": TensorSpec("x", "FP32", (-1, 8), np.dtype(np.float32))}


def _config(**parameters) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig(name="m")
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    return config


def test_max_input_dims_round_trips():
    bounds = {"input": (4096, -1), "mask": (4096,)}
    text = format_max_input_dims(bounds)
    assert text == "input:4096,-1;mask:4096"
    assert parse_max_input_dims(text) == bounds
    assert parse_max_input_dims(" input : 5 , -1 ; ") == {"input": (5, -1)}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("input", "is not NAME:D1,D2"),
        (":5", "is not NAME:D1,D2"),
        ("input:a,2", "must be integers"),
        ("input:0", "positive or -1"),
        ("input:-2", "positive or -1"),
        ("input:1;input:2", "given twice"),
    ],
)
def test_malformed_max_input_dims_are_refused(text, error):
    with pytest.raises(ValueError, match=error):
        parse_max_input_dims(text)


def test_limits_from_config():
    limits = RequestLimits.from_config(
        _config(max_input_dims="x:64,-1", allow_zero_size_dims="true"), SEQUENCE
    )
    assert limits.allow_zero_size_dims and limits.max_dims == {"x": (64, -1)}
    assert RequestLimits.from_config(_config(), SEQUENCE) == RequestLimits()


@pytest.mark.parametrize(
    ("parameters", "error"),
    [
        ({"max_input_dims": "y:64,-1"}, "names input 'y', not in"),
        ({"max_input_dims": "x:64"}, "gives 1 bounds, expected one per dim"),
        ({"max_input_dims": "x:64,4"}, "bounds a dim of fixed size 8 to 4"),
        ({"max_input_dims": "x"}, "max_input_dims: entry 'x'"),
        ({"allow_zero_size_dims": "yes"}, 'must be "true" or "false"'),
    ],
)
def test_bad_limit_parameters_fail_the_load(parameters, error):
    with pytest.raises(ModelLoadError, match=error):
        RequestLimits.from_config(_config(**parameters), SEQUENCE)


def _request(shape, raw=b"", datatype="FP32", name="x"):
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name=name, datatype=datatype, shape=shape)
    message.raw_input_contents.append(raw)
    return message


@pytest.mark.parametrize("shape", [(1, 2**62, 0), (1, 0, 2**62), (2**62, 0, 8), (1, 2**40, 2**40)])
def test_shapes_numpy_cannot_form_are_refused(shape):
    specs = {"x": TensorSpec("x", "FP32", (-1, -1), np.dtype(np.float32))}
    limits = RequestLimits(allow_zero_size_dims=True)
    with pytest.raises(InvalidArgument, match="model 'm': input 'x'"):
        decode_request("m", specs, {}, 2**62, _request(shape), limits)


def test_zero_sized_dims_are_decoded_when_allowed():
    specs = {"x": TensorSpec("x", "FP32", (-1, 8), np.dtype(np.float32))}
    decoded = decode_request("m", specs, {}, 4, _request((2, 0, 8)), RequestLimits(allow_zero_size_dims=True))
    assert decoded.inputs["x"].shape == (2, 0, 8)
    with pytest.raises(InvalidArgument, match=r"zero-sized dimension .* got shape \[2, 0, 8\]"):
        decode_request("m", specs, {}, 4, _request((2, 0, 8)))


def test_bytes_round_trip_random():
    rng = random.Random(0)
    for trial in range(400):
        items = [rng.randbytes(rng.choice([0, 1, 3, 7])) for _ in range(rng.randrange(6))]
        if trial % 2 and items:
            items = [items[0] or b"z"] * len(items)  # the uniform fast path
        raw = serialize_bytes_tensor(np.array(items, dtype=object).reshape(-1))
        assert list(deserialize_bytes_tensor(raw, len(items))) == items
        assert list(deserialize_bytes_tensor(raw)) == items
        for cut in range(len(raw)):
            with pytest.raises(ValueError):
                deserialize_bytes_tensor(raw[:cut], len(items))
        with pytest.raises(ValueError):
            deserialize_bytes_tensor(raw + b"\0", len(items))


@pytest.mark.parametrize(
    ("raw", "count", "error"),
    [
        (b"\0" * 16_000_000, 3, "15999988 bytes left after the 3 items"),
        (b"\0" * 8, 3, "3 items need at least 12 bytes"),
        (b"\x20\0\0\0" + b"\0" * 8, 3, "item 0 of 32 bytes at offset 0 runs past the end"),
        (b"\x04\0\0\0abcd\x04\0\0\0", 3, "item 1 of 4 bytes at offset 8 runs past the end"),
        (b"\x02\0\0\0ab\x00\x00\x00\x00\x00\x00", 3, "item 2 at offset 10: no room"),
    ],
)
def test_bytes_errors_name_the_item(raw, count, error):
    with pytest.raises(ValueError, match=error):
        deserialize_bytes_tensor(raw, count)


def test_bytes_text_mode_decodes_utf8_and_names_the_bad_item():
    raw = serialize_bytes_tensor(np.array(["a", "é", ""], dtype=object))
    assert list(deserialize_bytes_tensor(raw, 3, text=True)) == ["a", "é", ""]
    assert list(deserialize_bytes_tensor(b"\0\0\0\0" * 5, 5, text=True)) == [""] * 5
    bad = serialize_bytes_tensor(np.array([b"a", b"b", b"\xff"], dtype=object))
    with pytest.raises(ValueError, match="item 2 is not UTF-8"):
        deserialize_bytes_tensor(bad, 3, text=True)


def test_uniform_items_ending_in_nul_keep_it():
    items = [b"a\0", b"b\0"]
    assert list(deserialize_bytes_tensor(serialize_bytes_tensor(np.array(items, dtype=object)), 2)) == items
