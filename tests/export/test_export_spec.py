"""ExportSpec: derived axes, trace shapes kept off validated shapes, and clear errors for bad specs."""

import pytest

from ortserve.export.errors import SpecError
from ortserve.export.spec import ExportSpec, parse_dynamic_axes
from ortserve.export.validate import validation_shapes


def test_image_defaults() -> None:
    spec = ExportSpec.image()
    assert spec.example_shape == (3, 224, 224)
    assert spec.preprocessing.input_dtype == "uint8"
    assert spec.resolved_dynamic_axes() == {"input": {0: "batch"}}
    assert (spec.opset, spec.tolerance, spec.precision) == (18, (1e-4, 1e-3), "fp32")
    assert validation_shapes(spec) == [(b, 3, 224, 224) for b in (1, 2, 7, 32)]
    assert spec.trace_batch_size() == 3


def test_fp16_has_looser_default_tolerance_and_keeps_one_given() -> None:
    assert ExportSpec.image(precision="fp16").tolerance == (0.1, 0.01)
    assert ExportSpec.image(precision="fp16", atol=0.5).tolerance == (0.5, 0.01)
    # Defaults follow the precision, also when it is changed later.
    assert ExportSpec.image().replace(precision="fp16").tolerance == (0.1, 0.01)


def test_sequence_axes_and_shapes() -> None:
    spec = ExportSpec.sequence(10, 6)
    assert spec.resolved_dynamic_axes() == {"input": {0: "batch", 1: "time"}}
    assert spec.time_is_dynamic
    assert len(validation_shapes(spec)) == 16
    assert spec.trace_time_length() == (10, None)


def test_trace_time_moves_off_validated_length() -> None:
    length, note = ExportSpec.sequence(17, 6).trace_time_length()
    assert length == 18
    assert "instead of 17" in note


def test_batch_axis_always_dynamic_and_fixed_time() -> None:
    spec = ExportSpec.sequence(10, 6, dynamic_axes=parse_dynamic_axes('{"input": {"1": "time"}}'))
    assert spec.resolved_dynamic_axes()["input"] == {1: "time", 0: "batch"}
    fixed = ExportSpec.sequence(17, 6, dynamic_axes=parse_dynamic_axes('{"input": {"0": "batch"}}'))
    assert not fixed.time_is_dynamic
    assert validation_shapes(fixed) == [(b, 17, 6) for b in (1, 2, 7, 32)]
    # A fixed time axis can be traced at the given length: it will only ever run at that length.
    assert fixed.trace_time_length() == (17, None)


def test_max_sequence_length_bounds_the_time_axis_only() -> None:
    assert ExportSpec.sequence(10, 6).max_input_dims((-1, 6)) == {"input": (4096, -1)}
    assert ExportSpec.sequence(10, 6, max_sequence_length=100).max_input_dims((-1, 6)) == {"input": (100, -1)}
    assert ExportSpec.sequence(10, 6, max_sequence_length=None).max_input_dims((-1, 6)) == {}
    fixed = ExportSpec.sequence(17, 6, dynamic_axes={"input": {0: "batch"}})
    assert fixed.max_input_dims((17, 6)) == {}
    assert ExportSpec.image(32).max_input_dims((3, 32, 32)) == {}


def test_trace_batch_moves_off_validated_batches() -> None:
    assert ExportSpec.image(32, batch_sizes=(1, 3, 4)).trace_batch_size() == 5


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ExportSpec(kind="audio", example_shape=(1,)), "kind must be one of"),
        (lambda: ExportSpec.sequence(0, 4), "positive ints"),
        (lambda: ExportSpec.image(32, input_dtype="float16"), "input dtype must be one of"),
        (lambda: ExportSpec.image(32, mean=(0.5,)), "mean and std need 3 values"),
        (lambda: ExportSpec.sequence(5, 4, exporter="tflite"), "exporter must be one of"),
        (lambda: ExportSpec.sequence(5, 4, atol=-1.0), "atol and rtol"),
        (lambda: ExportSpec.sequence(5, 4, precision="bf16"), "precision must be one of"),
        (lambda: ExportSpec.sequence(5, 4, dynamic_axes={"input": {3: "x"}}), "outside input rank 3"),
        (lambda: ExportSpec.sequence(5, 4, max_sequence_length=32), "below the longest validated"),
        (lambda: ExportSpec.sequence(100, 4, max_sequence_length=80), "example length 100"),
    ],
)
def test_bad_specs(build, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        build()


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"input": {"a": "batch"}}'])
def test_bad_dynamic_axes(text: str) -> None:
    with pytest.raises(SpecError, match="--dynamic-axes"):
        parse_dynamic_axes(text)


def test_dynamic_axes_list_form() -> None:
    assert parse_dynamic_axes('{"input": [0, 1]}') == {"input": {0: "input_dim0", 1: "input_dim1"}}
