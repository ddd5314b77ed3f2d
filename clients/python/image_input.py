"""Image classification input: the model's expected image, read once from its config, and preprocessing.

Pillow is imported only when an image must be decoded or resized: file paths, encoded bytes and PIL
images always need it; numpy arrays that already have the model's height and width do not.
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ortserve.protos import datatypes
from ortserve.protos import model_config_pb2 as mc

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPROCESSING_PARAMETER = "preprocessing"


@dataclass(frozen=True)
class ImageSpec:
    """What one image input of a classification model expects."""

    model: str
    """Model name, for messages."""
    input_name: str
    """The image input tensor."""
    output_name: str
    """The scores output: the one with a label file, else the first."""
    datatype: str
    """KServe datatype of the input: UINT8 gets raw pixels, anything else normalised floats."""
    layout: str
    """NCHW or NHWC."""
    channels: int
    """3 (RGB) or 1 (grey)."""
    height: int
    """Input height in pixels."""
    width: int
    """Input width in pixels."""
    max_batch_size: int
    """Images per request (0: the model does not batch; one image per request)."""
    batch_dim: bool
    """Whether the input tensor has a leading batch dimension."""
    scale: float = 1 / 255
    """Pixel multiplier before mean/std normalisation (float inputs only)."""
    mean: tuple[float, ...] = IMAGENET_MEAN
    """Per-channel mean subtracted after scaling (float inputs only)."""
    std: tuple[float, ...] = IMAGENET_STD
    """Per-channel std divided by after subtracting the mean (float inputs only)."""

    @classmethod
    def from_config(cls, config: mc.ModelConfig) -> ImageSpec:
        """Read the image input from a ModelConfig (ortserve's `preprocessing` parameter when present)."""
        if len(config.input) != 1 or not config.output:
            raise ValueError(
                f"model {config.name!r} is not an image classifier: classify needs one input and an output, "
                f"it has {len(config.input)} inputs and {len(config.output)} outputs"
            )
        tensor = config.input[0]
        dims = list(tensor.dims)
        batch_dim = config.max_batch_size > 0
        if not batch_dim and len(dims) == 4 and dims[0] in (1, -1):
            dims, batch_dim = dims[1:], True
        prep: dict[str, Any] = {}
        if PREPROCESSING_PARAMETER in config.parameters:
            prep = json.loads(config.parameters[PREPROCESSING_PARAMETER].string_value or "{}")
        layout = _layout(tensor, dims, prep)
        if len(dims) != 3:
            raise ValueError(
                f"model {config.name!r} input {tensor.name!r} has dims {dims}; expected an image [C, H, W]"
            )
        channels, height, width = dims if layout == "NCHW" else (dims[2], dims[0], dims[1])
        if channels not in (1, 3) or min(height, width) < 1:
            raise ValueError(
                f"model {config.name!r} input {tensor.name!r} has dims {dims}; classify needs 1 or 3 "
                "channels and a fixed height and width"
            )
        labelled = [output for output in config.output if output.label_filename]
        defaults = cls.__dataclass_fields__
        return cls(
            model=config.name,
            input_name=tensor.name,
            output_name=(labelled or list(config.output))[0].name,
            datatype=datatypes.CONFIG_TO_KSERVE.get(mc.DataType.Name(tensor.data_type), "FP32"),
            layout=layout,
            channels=channels,
            height=height,
            width=width,
            max_batch_size=max(config.max_batch_size, 0),
            batch_dim=batch_dim,
            scale=float(prep.get("scale", defaults["scale"].default)),
            mean=tuple(float(v) for v in prep.get("mean", IMAGENET_MEAN)),
            std=tuple(float(v) for v in prep.get("std", IMAGENET_STD)),
        )

    def to_tensor(self, pixels: list[np.ndarray]) -> np.ndarray:
        """Stack [H, W, C] uint8 images into the model's input tensor (batched when the model batches)."""
        batch = np.stack(pixels)
        if self.layout == "NCHW":
            batch = batch.transpose(0, 3, 1, 2)
        batch = np.ascontiguousarray(batch)
        if self.datatype != "UINT8":
            shape = (1, -1, 1, 1) if self.layout == "NCHW" else (1, 1, 1, -1)
            mean = np.asarray(self.mean, np.float32).reshape(shape)
            std = np.asarray(self.std, np.float32).reshape(shape)
            floats = (batch.astype(np.float32) * np.float32(self.scale) - mean) / std
            batch = floats.astype(datatypes.KSERVE_TO_NUMPY.get(self.datatype, np.float32))
        return batch if self.batch_dim else batch[0]


def _layout(tensor: mc.ModelInput, dims: list[int], prep: dict[str, Any]) -> str:
    if tensor.format == mc.ModelInput.FORMAT_NHWC:
        return "NHWC"
    if tensor.format == mc.ModelInput.FORMAT_NCHW:
        return "NCHW"
    if prep.get("layout") in ("NCHW", "NHWC"):
        return prep["layout"]
    if len(dims) == 3 and dims[-1] in (1, 3) and dims[0] not in (1, 3):
        return "NHWC"
    return "NCHW"


def _pil_image_module():
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(
            "decoding or resizing images needs Pillow: pip install 'ortserve[image]'", name="PIL"
        ) from exc
    return Image


def _is_pil_image(item: object) -> bool:
    # Only a caller that imported Pillow can hand us a PIL image, so look without importing it.
    module = sys.modules.get("PIL.Image")
    return module is not None and isinstance(item, module.Image)


def _array_to_uint8(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"image array must be HxW, HxWx3 or HxWx4, got shape {list(array.shape)}")
    if array.dtype != np.uint8:
        # Pixel values are 0..255 whatever the dtype (documented); floats in 0..1 are not rescaled.
        array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    return array


def _fast_path(array: np.ndarray, spec: ImageSpec) -> np.ndarray | None:
    """[H, W, C] without Pillow when the array already has the model's size and a trivial conversion."""
    if array.shape[:2] != (spec.height, spec.width):
        return None
    if spec.channels == 3:
        if array.ndim == 2:
            return np.repeat(array[:, :, None], 3, axis=2)
        return np.ascontiguousarray(array[:, :, :3])  # Pillow's RGBA -> RGB drops alpha too
    return array[:, :, None] if array.ndim == 2 else None


def _fit(image: Any, spec: ImageSpec) -> np.ndarray:
    """Convert, resize so the image covers HxW (the shorter side meets the target), centre-crop."""
    pil_image = _pil_image_module()
    image = image.convert("RGB" if spec.channels == 3 else "L")
    width, height = image.size
    scale = max(spec.width / width, spec.height / height)
    size = (max(spec.width, round(width * scale)), max(spec.height, round(height * scale)))
    if size != image.size:
        image = image.resize(size, pil_image.BILINEAR)
    left, top = (size[0] - spec.width) // 2, (size[1] - spec.height) // 2
    if size != (spec.width, spec.height):
        image = image.crop((left, top, left + spec.width, top + spec.height))
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def load_pixels(item: object, spec: ImageSpec) -> np.ndarray:
    """One image (path, encoded bytes, PIL image or numpy array) as [H, W, C] uint8 at the model's size."""
    if isinstance(item, np.ndarray):
        array = _array_to_uint8(item)
        fast = _fast_path(array, spec)
        if fast is not None:
            return fast
        return _fit(_pil_image_module().fromarray(array), spec)
    if _is_pil_image(item):
        return _fit(item, spec)
    pil_image = _pil_image_module()
    if isinstance(item, (bytes, bytearray, memoryview)):
        with pil_image.open(io.BytesIO(bytes(item))) as image:
            return _fit(image, spec)
    if isinstance(item, (str, Path)):
        with pil_image.open(item) as image:
            return _fit(image, spec)
    raise TypeError(
        f"cannot read an image from {type(item).__name__}: use a path, bytes, a PIL image or an array"
    )


def is_single_image(images: object) -> bool:
    """Whether `images` is one image rather than a list of them (a numpy array is always one image)."""
    return isinstance(images, (str, Path, bytes, bytearray, memoryview, np.ndarray)) or _is_pil_image(images)
