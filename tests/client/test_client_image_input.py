"""Image preprocessing without a server: the model's image read from a config, pixels, tensors."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format
from PIL import Image

from ortserve.client.image_input import ImageSpec, load_pixels
from ortserve.protos import model_config_pb2


def spec_of(config_text: str) -> ImageSpec:
    return ImageSpec.from_config(text_format.Parse(config_text, model_config_pb2.ModelConfig()))


TRITON_NHWC = """
name: "nhwc" max_batch_size: 0
input [{ name: "in" data_type: TYPE_FP32 dims: [1, 8, 6, 3] }]
output [{ name: "logits" data_type: TYPE_FP32 dims: [1, 5] },
        { name: "probs" data_type: TYPE_FP32 dims: [1, 5] label_filename: "labels.txt" }]
"""


def test_a_triton_config_without_preprocessing_gets_imagenet_defaults():
    spec = spec_of(TRITON_NHWC)
    assert (spec.layout, spec.channels, spec.height, spec.width) == ("NHWC", 3, 8, 6)
    assert spec.output_name == "probs" and spec.datatype == "FP32" and spec.batch_dim
    assert spec.mean == (0.485, 0.456, 0.406) and spec.scale == pytest.approx(1 / 255)
    white = spec.to_tensor([np.full((8, 6, 3), 255, np.uint8)])
    assert white.shape == (1, 8, 6, 3) and white.dtype == np.float32
    np.testing.assert_allclose(white[0, 0, 0], (1 - np.array(spec.mean)) / np.array(spec.std), rtol=1e-6)


def test_dynamic_image_size_is_refused():
    with pytest.raises(ValueError, match="fixed height and width"):
        spec_of('name: "m" max_batch_size: 2 input [{ name: "x" data_type: TYPE_UINT8 dims: [3, -1, -1] }] '
                'output [{ name: "y" data_type: TYPE_FP32 dims: [4] }]')  # fmt: skip


UINT8_SPEC = spec_of(
    'name: "m" max_batch_size: 2 '
    'input [{ name: "x" data_type: TYPE_UINT8 format: FORMAT_NCHW dims: [3, 8, 8] }] '
    'output [{ name: "y" data_type: TYPE_FP32 dims: [4] }]'
)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_model_sized_arrays_skip_pillow_but_match_it(mode: str):
    array = np.asarray(
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 4), np.uint8), "RGBA").convert(mode)
    )
    fast = load_pixels(array, UINT8_SPEC)
    assert fast.shape == (8, 8, 3) and fast.dtype == np.uint8
    np.testing.assert_array_equal(fast, np.asarray(Image.fromarray(array).convert("RGB")))


def test_wide_image_is_resized_on_its_shorter_side_and_centre_cropped():
    wide = np.zeros((4, 16, 3), np.uint8)
    wide[:, 4:12] = 255  # the centre half is white: after 4x16 -> 8x32 and the centre crop, all white
    pixels = load_pixels(wide, UINT8_SPEC)
    assert pixels.shape == (8, 8, 3) and pixels.min() == 255
    tensor = UINT8_SPEC.to_tensor([pixels, pixels])
    assert tensor.shape == (2, 3, 8, 8) and tensor.dtype == np.uint8


def test_float_arrays_hold_0_to_255_values():
    np.testing.assert_array_equal(load_pixels(np.full((8, 8), 254.6), UINT8_SPEC), np.full((8, 8, 3), 255))


def test_unreadable_items_are_refused():
    with pytest.raises(ValueError, match="HxW, HxWx3 or HxWx4"):
        load_pixels(np.zeros((8, 8, 2), np.uint8), UINT8_SPEC)
    with pytest.raises(TypeError, match="cannot read an image from int"):
        load_pixels(3, UINT8_SPEC)
