"""int8 calibration and validation samples: model inputs read from an image folder, a .npy or a .npz.

Images are decoded, converted and resized by the client SDK's own code (ortserve.client.image_input), so the
int8 graph is calibrated on exactly the tensors the server will receive; uint8 models get raw pixels (their
normalisation stays in the graph), float32 models the client's normalised floats.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ortserve.client.image_input import ImageSpec, load_pixels
from ortserve.export.errors import CalibrationError
from ortserve.export.spec import ExportSpec

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
# Validation samples kept from a held-out split (the proof runs PyTorch on each; more adds time, not trust).
MAX_VALIDATION_SAMPLES = 1000
INPUT_KEYS = ("inputs", "input", "x")


@dataclass(frozen=True)
class Samples:
    """Model inputs [N, ...] exactly as the graph takes them, and optional int64 class labels [N]."""

    inputs: np.ndarray
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.inputs)

    def take(self, index: np.ndarray) -> Samples:
        return Samples(self.inputs[index], None if self.labels is None else self.labels[index])


def client_image_spec(spec: ExportSpec) -> ImageSpec:
    """What the client SDK would read from this model's config.pbtxt (uint8 or float32 NCHW input)."""
    channels, height, width = spec.example_shape
    pre = spec.preprocessing
    return ImageSpec(
        model="calibration",
        input_name=spec.input_name,
        output_name=spec.output_name,
        datatype="UINT8" if pre.in_graph else "FP32",
        layout="NCHW",
        channels=channels,
        height=height,
        width=width,
        max_batch_size=1,
        batch_dim=True,
        mean=tuple(pre.mean),
        std=tuple(pre.std),
    )


def load_samples(
    source: str | Path | Samples, spec: ExportSpec, what: str, labels: Sequence[str] | None = None
) -> Samples:
    """Read `source` (`what` names the flag in errors) as model inputs for `spec`; refuse an empty set."""
    if isinstance(source, Samples):
        samples = source
    else:
        path = Path(source)
        if not path.exists():
            raise CalibrationError(f"{what} {path} does not exist")
        if path.is_dir():
            samples = _image_folder(path, spec, what, labels)
        elif path.suffix == ".npy":
            samples = Samples(_load_array(path, what))
        elif path.suffix == ".npz":
            samples = _npz(path, spec, what)
        else:
            raise CalibrationError(f"{what} {path} must be a folder of images, a .npy or a .npz file")
    return _checked(samples, spec, what)


def split(samples: Samples, calibration_count: int, seed: int) -> tuple[Samples, Samples]:
    """Shuffle once (seeded), hold out a fifth (at most MAX_VALIDATION_SAMPLES) for validation and take up
    to `calibration_count` of the rest for calibration: the proof never sees a calibration sample."""
    if len(samples) < 2:
        raise CalibrationError(
            f"calibration data has {len(samples)} sample(s): at least 2 are needed to hold one out for "
            "validation (or give --validation-data)"
        )
    order = np.random.default_rng(seed).permutation(len(samples))
    held_out = min(MAX_VALIDATION_SAMPLES, max(1, len(samples) // 5))
    validation, rest = order[:held_out], order[held_out:]
    return samples.take(np.sort(rest[:calibration_count])), samples.take(np.sort(validation))


def first(samples: Samples, count: int, seed: int) -> Samples:
    """Up to `count` samples, a seeded random choice when there are more."""
    if len(samples) <= count:
        return samples
    return samples.take(np.sort(np.random.default_rng(seed).permutation(len(samples))[:count]))


def _image_folder(path: Path, spec: ExportSpec, what: str, labels: Sequence[str] | None) -> Samples:
    if spec.kind != "image":
        raise CalibrationError(f"{what} {path} is a folder of images; a sequence model needs a .npy or .npz")
    files = _images_in(path)
    classes = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    targets: list[int] | None = None
    if classes:
        if files:
            raise CalibrationError(
                f"{what} {path} mixes images ({files[0].name}) with class folders ({classes[0].name}): "
                "use one or the other"
            )
        index = _class_index([c.name for c in classes], labels)
        files, targets = [], []
        for folder in classes:
            inside = _images_in(folder)
            files += inside
            targets += [index[folder.name]] * len(inside)
    if not files:
        raise CalibrationError(f"{what} {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    image_spec = client_image_spec(spec)
    pixels = []
    for file in files:
        try:
            pixels.append(load_pixels(file, image_spec))
        except (OSError, ValueError) as exc:
            raise CalibrationError(f"{what}: cannot decode {file}: {exc}") from exc
    logger.info("%s: %d image(s) from %s, decoded as the client SDK does", what, len(files), path)
    inputs = image_spec.to_tensor(pixels)
    return Samples(inputs, None if targets is None else np.asarray(targets, dtype=np.int64))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _class_index(names: list[str], labels: Sequence[str] | None) -> dict[str, int]:
    """Class folder -> class index: the folder's line in the labels file when every folder is a label,
    else sorted folder order (torchvision's ImageFolder convention)."""
    if labels is not None and all(name in labels for name in names):
        return {name: list(labels).index(name) for name in names}
    return {name: index for index, name in enumerate(names)}


def _load_array(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"{what}: cannot read {path}: {exc}") from exc


def _npz(path: Path, spec: ExportSpec, what: str) -> Samples:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"{what}: cannot read {path}: {exc}") from exc
    key = next((k for k in (spec.input_name, *INPUT_KEYS) if k in arrays), None)
    others = [k for k in arrays if k != "labels"]
    if key is None and len(others) == 1:
        key = others[0]
    if key is None:
        raise CalibrationError(
            f"{what} {path} has arrays {sorted(arrays)}: name the inputs 'inputs' (and the labels 'labels')"
        )
    return Samples(arrays[key], arrays.get("labels"))


def _checked(samples: Samples, spec: ExportSpec, what: str) -> Samples:
    inputs = samples.inputs
    if inputs.ndim == 0 or len(inputs) == 0:
        raise CalibrationError(f"{what} is empty: int8 needs real samples of the model's input")
    want_dtype = np.uint8 if spec.preprocessing.in_graph else np.float32
    rank = len(spec.example_shape) + 1
    if inputs.ndim != rank or not _shape_fits(inputs.shape[1:], spec):
        expected = ["N", *spec.example_shape] if spec.kind == "image" else ["N", "T", spec.example_shape[1]]
        raise CalibrationError(f"{what} has shape {list(inputs.shape)}; the model takes {expected}")
    if inputs.dtype != want_dtype:
        if want_dtype == np.uint8 or not np.issubdtype(inputs.dtype, np.number):
            raise CalibrationError(
                f"{what} has dtype {inputs.dtype}; the model input {spec.input_name!r} is "
                f"{np.dtype(want_dtype).name}"
            )
        inputs = inputs.astype(np.float32)
    labels = samples.labels
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(inputs),) or not np.issubdtype(labels.dtype, np.integer):
            raise CalibrationError(
                f"{what} labels must be {len(inputs)} integer class indices, got {labels.dtype} "
                f"{list(labels.shape)}"
            )
        labels = labels.astype(np.int64)
    return Samples(np.ascontiguousarray(inputs), labels)


def _shape_fits(row_shape: tuple[int, ...], spec: ExportSpec) -> bool:
    if spec.kind == "image":
        return tuple(row_shape) == tuple(spec.example_shape)
    time_ok = spec.time_is_dynamic or row_shape[0] == spec.example_shape[0]
    return time_ok and row_shape[1] == spec.example_shape[1]


def calibration_and_validation(
    calibration_data: str | Path | Samples | None,
    validation_data: str | Path | Samples | None,
    calibration_samples: int,
    spec: ExportSpec,
    labels: Sequence[str] | None,
    seed: int,
) -> tuple[Samples | None, Samples]:
    """The samples to calibrate on (None for sequences: dynamic quantization needs none) and to prove on."""
    if spec.kind == "sequence":
        source = validation_data if validation_data is not None else calibration_data
        if source is None:
            raise CalibrationError(
                "int8 sequence export needs samples to prove it on: --validation-data (or "
                "--calibration-data) with real inputs [N, T, F]"
            )
        what = "--validation-data" if validation_data is not None else "--calibration-data"
        return None, first(load_samples(source, spec, what, labels), MAX_VALIDATION_SAMPLES, seed)
    if calibration_data is None:
        raise CalibrationError(
            "int8 image export needs calibration data: --calibration-data with a folder of images like the "
            "ones the model will serve, or a .npy/.npz of model inputs"
        )
    calibration = load_samples(calibration_data, spec, "--calibration-data", labels)
    if validation_data is None:
        return split(calibration, calibration_samples, seed)
    validation = load_samples(validation_data, spec, "--validation-data", labels)
    return first(calibration, calibration_samples, seed), first(validation, MAX_VALIDATION_SAMPLES, seed)
