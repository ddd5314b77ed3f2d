"""The bad-input table: name -> (request, expected status code, substrings of the expected message).

Requests are built by the tiny helpers below against the models of bad_input_repo.py.
"""

from __future__ import annotations

import struct

import grpc
import numpy as np
from bad_input_repo import GRU_FEATURES
from kserve import request

from ortserve.protos import grpc_service_pb2 as pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
X = np.zeros((1, 4), np.float32)
HUGE = "n" * 100_000  # a 100 KB client string: never echoed whole
CLIPPED = "chars)"  # what clip() appends to a cut string


def raw(model, tensors, raws, outputs=(), version=""):
    """tensors: (name, datatype, shape) each; raws: the raw_input_contents, as given."""
    message = pb.ModelInferRequest(model_name=model, model_version=version)
    for name, datatype, shape in tensors:
        message.inputs.add(name=name, datatype=datatype, shape=shape)
    message.raw_input_contents.extend(raws)
    for name in outputs:
        message.outputs.add(name=name)
    return message


def one(model, name, datatype, shape, data):
    return raw(model, [(name, datatype, shape)], [data])


def cls(shape, data=None, datatype="FP32", name="input"):
    """A raw classifier request with the given shape (data: zeros of the right size by default)."""
    if data is None:
        data = b"\0" * (4 * max(int(np.prod(shape, dtype=object)), 0)) if len(shape) < 50 else b""
    return one("classifier", name, datatype, shape, data)


def typed(model, name, datatype, shape, field, values, also_raw=None):
    message = pb.ModelInferRequest(model_name=model)
    tensor = message.inputs.add(name=name, datatype=datatype, shape=shape)
    if isinstance(field, str):
        getattr(tensor.contents, field).extend(values)
    else:
        for f, v in zip(field, values, strict=True):
            getattr(tensor.contents, f).extend(v)
    if also_raw is not None:
        message.raw_input_contents.append(also_raw)
    return message


def strings(*items):
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def bytes_in(shape, data):
    return one("identity_bytes", "x", "BYTES", shape, data)


def classify(model, inputs, output, **param):
    message = request(model, inputs, [output])
    for kind, value in param.items():
        setattr(message.outputs[0].parameters["classification"], kind, value)
    if not param:
        message.outputs[0].parameters["classification"].SetInParent()
    return message


def edit(message, change):
    change(message)
    return message


def fp32_zeros(shape) -> bytes:
    """Zeros for an FP32 shape, or nothing where that would pass the message limit (refused before)."""
    count = int(np.prod(shape, dtype=object)) if all(d >= 0 for d in shape) else 0
    return b"\0" * (4 * count) if 0 < count < 2**20 else b""


def gru(shape, fill=True):
    return one("gru", "x", "FP32", shape, fp32_zeros(shape) if fill else b"")


def series(model, shape):
    return one(model, "x", "FP32", shape, fp32_zeros(shape))


ADD = {"a": np.zeros((1, 2), np.float32), "b": np.zeros((1, 2), np.float32)}
BIG = 2**62
WORDS = np.array([["a", "b", "c"]], object)

CASES: dict[str, tuple[pb.ModelInferRequest, grpc.StatusCode, list[str]]] = {
    # model and version
    "unknown model": (pb.ModelInferRequest(model_name="nope"), NOT_FOUND, ["nope"]),
    "empty request": (pb.ModelInferRequest(), NOT_FOUND, ["model ''"]),
    "unknown version": (request("classifier", {"input": X}, version="7"),
        NOT_FOUND, ["classifier", "version 7"]),
    "version not a number": (request("classifier", {"input": X}, version="abc"), INVALID,
                             ["classifier", "version 'abc' is not a version number"]),
    "version ²": (request("classifier", {"input": X}, version="²"), INVALID, ["not a version number"]),
    "100 KB version": (request("classifier", {"input": X}, version=HUGE), INVALID, ["classifier", CLIPPED]),
    "negative version": (request("classifier", {"input": X}, version="-1"), INVALID, ["a version number"]),
    "100 KB model name": (pb.ModelInferRequest(model_name=HUGE), NOT_FOUND, [CLIPPED]),
    "version zero": (request("classifier", {"input": X}, version="0"), NOT_FOUND, ["classifier"]),
    # inputs present or not
    "missing input": (request("add_two", {"a": ADD["a"]}), INVALID, ["add_two", "missing input 'b'"]),
    "missing other input": (request("add_two", {"b": ADD["b"]}), INVALID, ["add_two", "missing input 'a'"]),
    "no inputs": (pb.ModelInferRequest(model_name="classifier"),
        INVALID, ["classifier", "missing input 'input'"]),
    "unexpected input": (request("classifier", {"input": X, "extra": X}), INVALID,
                         ["classifier", "unexpected input 'extra'"]),
    "unexpected input only": (request("classifier", {"extra": X}),
        INVALID, ["classifier", "unexpected input"]),
    "empty input name": (cls((1, 4), name=""), INVALID, ["classifier", "unexpected input ''"]),
    "100 KB input name": (cls((1, 4), name=HUGE), INVALID, ["classifier", "unexpected input", CLIPPED]),
    "duplicated input": (raw("classifier", [("input", "FP32", [1, 4])] * 2, [X.tobytes()] * 2), INVALID,
                         ["classifier", "input 'input'", "more than once"]),
    "duplicated input of two": (raw("add_two", [("a", "FP32", [1, 2])] * 2, [b"\0" * 8] * 2), INVALID,
                                ["add_two", "input 'a'", "more than once"]),
    # datatypes
    "wrong datatype": (request("classifier", {"input": X.astype(np.float64)}), INVALID,
                       ["model 'classifier': input 'input': expected datatype FP32, got FP64"]),
    "no datatype": (cls((1, 4), datatype=""), INVALID, ["classifier", "expected datatype FP32, got (none)"]),
    "lower-case datatype": (cls((1, 4), datatype="fp32"), INVALID, ["expected datatype FP32, got fp32"]),
    "100 KB datatype": (cls((1, 4), datatype=HUGE), INVALID, ["classifier", "input 'input'", CLIPPED]),
    "BYTES for FP32": (cls((1, 4), datatype="BYTES"), INVALID, ["expected datatype FP32, got BYTES"]),
    "INT8 for FP32": (cls((1, 4), datatype="INT8"), INVALID, ["expected datatype FP32, got INT8"]),
    "FP32 for BYTES": (one("identity_bytes", "x", "FP32", (1, 3), b"\0" * 12), INVALID,
                       ["identity_bytes", "input 'x'", "expected datatype BYTES, got FP32"]),
    "UINT8 for INT8": (one("identity_int8", "x", "UINT8", (1, 3), b"\0" * 3), INVALID,
                       ["identity_int8", "expected datatype INT8, got UINT8"]),
    "INT8 for BOOL": (one("identity_bool", "x", "INT8", (1, 3), b"\0" * 3), INVALID,
                      ["identity_bool", "expected datatype BOOL, got INT8"]),
    "FP32 for GRU in FP64": (one("gru", "x", "FP64", (1, 3, 8), b"\0" * 192), INVALID,
                             ["gru", "expected datatype FP32, got FP64"]),
    # shapes
    "wrong shape": (cls((1, 5)), INVALID, ["classifier", "input 'input'", "[-1, 4]", "[1, 5]"]),
    "wrong rank": (cls((4,)), INVALID, ["classifier", "input 'input'", "[-1, 4]", "[4]"]),
    "rank 3": (cls((1, 4, 1)), INVALID, ["classifier", "[1, 4, 1]"]),
    "rank 0": (cls(()), INVALID, ["classifier", "expected shape [-1, 4]", "got []"]),
    "rank 100": (cls((1,) * 100, b""), INVALID, ["classifier", "expected shape [-1, 4]", CLIPPED]),
    "rank 10000": (cls((1,) * 10_000, b""), INVALID, ["classifier", "expected shape [-1, 4]", CLIPPED]),
    "rank 10000 of 2**62": (cls((BIG,) * 10_000, b""), INVALID, ["classifier", CLIPPED]),
    "negative dim": (cls((-1, 4), b""), INVALID, ["classifier", "input 'input'", "got [-1, 4]"]),
    "negative feature dim": (cls((1, -4), b""), INVALID, ["classifier", "got [1, -4]"]),
    "int64 min dim": (cls((-(2**63), 4), b""), INVALID, ["classifier", str(-(2**63))]),
    "zero batch": (cls((0, 4)),
        INVALID, ["classifier", "batch size 0 is outside 1..max_batch_size 8"]),
    "batch above max": (cls((9, 4)),
        INVALID, ["classifier", "input 'input'", "max_batch_size 8", "batch size 9"]),
    "batch 2**62": (cls((BIG, 4), b""), INVALID, ["classifier", f"batch size {BIG}"]),
    "int64 max batch": (cls((2**63 - 1, 4), b""), INVALID, ["classifier", "max_batch_size 8"]),
    "add_two batch above max": (request("add_two", {k: np.zeros((5, 2), np.float32) for k in "ab"}), INVALID,
                                ["add_two", "max_batch_size 4", "batch size 5"]),
    "batch sizes differ": (request("add_two", {"a": ADD["a"], "b": np.zeros((2, 2), np.float32)}), INVALID,
                           ["add_two", "input 'b'", "batch size 1", "batch size 2"]),
    "unbatched model given a batch": (request("fixed", {"x": np.zeros((1, 4), np.float32)}), INVALID,
                                      ["fixed", "input 'x'", "expected shape [4]", "[1, 4]"]),
    "fixed dim wrong": (request("fixed", {"x": np.zeros(5, np.float32)}), INVALID, ["fixed", "[5]"]),
    "fixed dim zero": (one("fixed", "x", "FP32", (0,), b""), INVALID, ["fixed", "expected shape [4]", "[0]"]),
    "series feature dim wrong": (series("time_series", (1, 3, 3)), INVALID, ["time_series", "[-1, -1, 2]"]),
    "gru feature dim wrong": (gru((1, 3, 9)), INVALID, ["gru", "input 'x'", "[1, 3, 9]"]),
    "gru rank 2": (gru((1, GRU_FEATURES)), INVALID, ["gru", "input 'x'", "expected shape [-1, -1, 8]"]),
    "gru batch above max": (gru((5, 3, 8)), INVALID, ["gru", "max_batch_size 4", "batch size 5"]),
    "gru int64 min time": (gru((1, -(2**63), 8)), INVALID, ["gru", "input 'x'"]),
    # zero-sized dims (a [1, 0, 8] sequence aborts onnxruntime on the GRU)
    "gru zero-length sequence": (
        gru((1, 0, 8)), INVALID, ["model 'gru': input 'x'", "zero-sized", "allow_zero_size_dims", "[1, 0, 8]"]
    ),
    "gru zero-length, batch 4": (gru((4, 0, 8)), INVALID, ["gru", "zero-sized", "[4, 0, 8]"]),
    "series zero-length": (series("time_series", (1, 0, 2)),
        INVALID, ["time_series", "zero-sized", "[1, 0, 2]"]),
    "two dynamic zero": (series("two_dynamic", (1, 0, 3)), INVALID, ["two_dynamic", "zero-sized"]),
    "two dynamic 2**62 and 0": (series("two_dynamic", (1, BIG, 0)), INVALID, ["two_dynamic", "zero-sized"]),
    "2**62 and 0 where zero is allowed": (series("two_dynamic_zero_ok", (1, BIG, 0)), INVALID,
                                          ["two_dynamic_zero_ok", "input 'x'", "at most", f"[1, {BIG}, 0]"]),
    "0 and 2**62 where zero is allowed": (series("two_dynamic_zero_ok", (1, 0, BIG)), INVALID,
                                          ["two_dynamic_zero_ok", "at most"]),
    "2**40 x 2**40": (series("two_dynamic", (1, 2**40, 2**40)),
        INVALID, ["two_dynamic", "at most 2147483647 bytes"]),
    "3 GB of FP32": (series("two_dynamic", (1, 2**15, 3 * 2**13)), INVALID, ["two_dynamic", "at most"]),
    "huge time axis": (series("time_series", (1, 2**40, 2)), INVALID, ["time_series", "at most"]),
    # dynamic-axis bounds (max_input_dims "x:64,-1" on the GRU)
    "gru over max_input_dims": (
        gru((1, 65, 8)), INVALID, ["model 'gru': input 'x'", "dim 1 of at most 64", "max_input_dims", "65"]
    ),
    "gru far over max_input_dims": (gru((1, 10_000, 8)), INVALID, ["gru", "at most 64", "got 10000"]),
    "gru 2**40 steps": (gru((1, 2**40, 8)), INVALID, ["gru", "input 'x'", "at most"]),
    # raw contents
    "raw too short": (cls((1, 4), b"\0" * 12),
        INVALID, ["classifier", "input 'input'", "expected 16 bytes", "got 12"]),
    "raw too long": (cls((1, 4), b"\0" * 20), INVALID, ["expected 16 bytes", "got 20"]),
    "raw empty": (cls((1, 4), b""), INVALID, ["expected 16 bytes", "got 0"]),
    "raw one row for two": (cls((2, 4), X.tobytes()), INVALID, ["expected 32 bytes", "got 16"]),
    "raw fp16 size": (one("identity_fp16", "x", "FP16", (1, 3), b"\0" * 5), INVALID,
                      ["identity_fp16", "expected 6 bytes", "got 5"]),
    "raw int64 size": (one("identity_int64", "x", "INT64", (1, 3), b"\0" * 12),
        INVALID, ["expected 24 bytes"]),
    "raw uint64 size": (one("identity_uint64", "x", "UINT64", (1, 3), b"\0" * 25),
        INVALID, ["expected 24 bytes"]),
    "raw bool size": (one("identity_bool", "x", "BOOL", (2, 3), b"\0" * 3),
        INVALID, ["expected 6 bytes", "got 3"]),
    "raw fp64 size": (one("identity_fp64", "x", "FP64", (1, 3), b"\0" * 12), INVALID, ["expected 24 bytes"]),
    "raw gru size": (gru((1, 3, 8), fill=False), INVALID, ["gru", "expected 96 bytes", "got 0"]),
    "raw count 1 for 2 inputs": (edit(request("add_two", ADD), lambda m: m.raw_input_contents.pop()), INVALID,
                                 ["add_two", "expected 2 raw_input_contents", "got 1"]),
    "raw count 3 for 2 inputs": (edit(request("add_two", ADD), lambda m: m.raw_input_contents.append(b"")),
                                 INVALID, ["add_two", "expected 2 raw_input_contents", "got 3"]),
    "raw count 2 for 1 input": (raw("classifier", [("input", "FP32", [1, 4])], [X.tobytes()] * 2), INVALID,
                                ["classifier", "expected 1 raw_input_contents", "got 2"]),
    "raw count 1000 for 1 input": (raw("classifier", [("input", "FP32", [1, 4])], [b""] * 1000), INVALID,
                                   ["expected 1 raw_input_contents", "got 1000"]),
    "raw contents without inputs": (raw("classifier", [], [X.tobytes()]), INVALID,
                                    ["expected 0 raw_input_contents", "got 1"]),
    "raw and typed": (typed("classifier", "input", "FP32", [1, 4], "fp32_contents", [0] * 4, X.tobytes()),
                      INVALID, ["classifier", "input 'input'", "got both"]),
    "raw and typed BYTES": (typed("identity_bytes", "x", "BYTES", [1, 3], "bytes_contents", [b"a"] * 3,
                                  strings(b"a", b"b", b"c")), INVALID, ["identity_bytes", "got both"]),
    # typed contents
    "no data": (raw("classifier", [("input", "FP32", [1, 4])], []), INVALID, ["classifier", "got no data"]),
    "typed wrong field": (typed("classifier", "input", "FP32", [1, 4], "int_contents", [1, 2, 3, 4]), INVALID,
                          ["classifier", "input 'input'", "fp32_contents", "int_contents"]),
    "typed two fields": (typed("classifier", "input", "FP32", [1, 4], ("fp32_contents", "int_contents"),
                               ([1] * 4, [1] * 4)), INVALID, ["fp32_contents", "int_contents"]),
    "typed too few": (typed("classifier", "input", "FP32", [1, 4], "fp32_contents", [1, 2, 3]), INVALID,
                      ["classifier", "input 'input'", "expected 4 values", "got 3"]),
    "typed too many": (typed("classifier", "input", "FP32", [1, 4], "fp32_contents", [1] * 5), INVALID,
                       ["expected 4 values", "got 5"]),
    "typed for a 2**62 batch": (typed("classifier", "input", "FP32", [BIG, 4], "fp32_contents", [1] * 4),
        INVALID,
                                ["classifier", "max_batch_size 8"]),
    "fp16 typed": (typed("identity_fp16", "x", "FP16", [1, 3], "fp32_contents", [1, 2, 3]), INVALID,
                   ["identity_fp16", "input 'x'", "FP16", "raw_input_contents"]),
    "INT8 overflow": (typed("identity_int8", "x", "INT8", [1, 3], "int_contents", [1, 1000, 2]), INVALID,
                      ["identity_int8", "input 'x'", "do not fit INT8"]),
    "INT8 underflow": (typed("identity_int8", "x", "INT8", [1, 3], "int_contents", [-129, 0, 0]), INVALID,
                       ["do not fit INT8"]),
    "UINT8 overflow": (typed("identity_uint8", "x", "UINT8", [1, 3], "uint_contents", [256, 0, 0]), INVALID,
                       ["identity_uint8", "do not fit UINT8"]),
    "INT16 overflow": (typed("identity_int16", "x", "INT16", [1, 3], "int_contents", [40000, 0, 0]), INVALID,
                       ["do not fit INT16"]),
    "UINT16 overflow": (typed("identity_uint16", "x", "UINT16", [1, 3], "uint_contents", [70000, 0, 0]),
        INVALID,
                        ["do not fit UINT16"]),
    "BYTES typed too few": (typed("identity_bytes", "x", "BYTES", [1, 3], "bytes_contents", [b"a"] * 2),
        INVALID,
                            ["identity_bytes", "expected 3 values", "got 2"]),
    "BYTES typed not UTF-8": (typed("identity_bytes", "x", "BYTES", [1, 3], "bytes_contents",
                                    [b"a", b"\xff\xfe", b"c"]), INVALID, ["identity_bytes", "UTF-8"]),
    "BYTES typed in int_contents": (typed("identity_bytes", "x", "BYTES", [1, 3], "int_contents", [1, 2, 3]),
                                    INVALID, ["identity_bytes", "bytes_contents", "int_contents"]),
    "bool typed in fp32": (typed("identity_bool", "x", "BOOL", [1, 3], "fp32_contents", [1, 0, 1]), INVALID,
                           ["identity_bool", "bool_contents", "fp32_contents"]),
    "fixed typed too few": (typed("fixed", "x", "FP32", [4], "fp32_contents", [1.0]), INVALID,
                            ["fixed", "expected 4 values", "got 1"]),
    # BYTES raw contents
    "BYTES item runs past the end": (bytes_in((1, 3), b"\x20\0\0\0" + b"\0" * 8), INVALID,
                                     ["identity_bytes", "input 'x'", "runs past the end"]),
    "BYTES too short for the count": (bytes_in((1, 3), b"\x05\0\0\0ab"), INVALID, ["at least 12 bytes"]),
    "BYTES extra bytes": (bytes_in((1, 3), strings(b"a", b"b", b"c") + b"\0\0"), INVALID, ["2 bytes left"]),
    "BYTES extra item": (bytes_in((1, 3), strings(b"a", b"b", b"c", b"d")),
        INVALID, ["bytes left", "3 items"]),
    "BYTES missing item": (bytes_in((1, 3), strings(b"abcd", b"efgh")),
        INVALID, ["identity_bytes", "item 2"]),
    "BYTES not UTF-8": (bytes_in((1, 3), strings(b"a", b"\xc3\x28", b"c")),
        INVALID, ["identity_bytes", "UTF-8"]),
    "BYTES length 2**32-1": (bytes_in((1, 3), b"\xff\xff\xff\xff" + b"\0" * 8),
        INVALID, ["runs past the end"]),
    "BYTES half a prefix": (bytes_in((1, 3), strings(b"", b"") + b"\0\0\0\0\0\0"),
        INVALID, ["identity_bytes"]),
    "BYTES empty raw": (bytes_in((1, 3), b""), INVALID, ["at least 12 bytes", "got 0"]),
    "BYTES 4M empty items for 3": (bytes_in((1, 3), b"\0" * 16_000_000),
        INVALID, ["bytes left after the 3 items"]),
    "BYTES 4M items for a 2**62 batch": (bytes_in((BIG, 3), b"\0" * 16_000_000), INVALID, ["max_batch_size"]),
    # outputs and classification
    "unknown output": (request("classifier", {"input": X}, ["nope"]), INVALID,
                       ["classifier", "unexpected output 'nope'"]),
    "empty output name": (request("classifier", {"input": X}, [""]), INVALID, ["unexpected output ''"]),
    "100 KB output name": (request("classifier", {"input": X}, [HUGE]),
        INVALID, ["unexpected output", CLIPPED]),
    "duplicate output": (request("classifier", {"input": X}, ["logits", "logits"]), INVALID,
                         ["classifier", "output 'logits'", "more than once"]),
    "unknown output on add_two": (request("add_two", ADD, ["product"]), INVALID, ["add_two", "'product'"]),
    "classification string": (classify("classifier", {"input": X}, "logits", string_param="two"), INVALID,
                               ["classifier", "output 'logits'", "classification", "string_param=two"]),
    "classification 100 KB string": (classify("classifier", {"input": X}, "logits", string_param=HUGE),
        INVALID,
                                     ["classification", CLIPPED]),
    "classification 0": (classify("classifier", {"input": X}, "logits", int64_param=0), INVALID,
                         ["positive int64_param", "int64_param=0"]),
    "classification negative": (classify("classifier", {"input": X}, "logits", int64_param=-3), INVALID,
                                ["int64_param=-3"]),
    "classification bool": (classify("classifier", {"input": X}, "logits", bool_param=True), INVALID,
                            ["bool_param=True"]),
    "classification double": (classify("classifier", {"input": X}, "logits", double_param=2.5), INVALID,
                              ["double_param=2.5"]),
    "classification no value": (classify("classifier", {"input": X}, "logits"), INVALID, ["got no value"]),
    "classification of BYTES": (classify("identity_bytes", {"x": WORDS}, "y", int64_param=2), INVALID,
                                ["identity_bytes", "output 'y'", "numeric output", "BYTES"]),
    "classification of BYTES, uint64": (classify("identity_bytes", {"x": WORDS}, "y", uint64_param=1),
                                        INVALID,
                                        ["numeric output"]),
    "classification of BYTES, bad input": (edit(classify("identity_bytes", {"x": WORDS}, "y", int64_param=1),
                                                lambda m: m.raw_input_contents.__setitem__(0, b"")), INVALID,
                                           ["identity_bytes"]),
}  # fmt: skip
