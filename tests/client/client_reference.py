"""Independent reference preprocessing and scores for the client's classify results (onnxruntime, Pillow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from client_repository import IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD, LABELS
from PIL import Image


def fit(image: Image.Image) -> np.ndarray:
    """RGB, shorter side resized to IMAGE_SIZE (BILINEAR), centre crop: [S, S, 3] uint8."""
    image = image.convert("RGB")
    width, height = image.size
    scale = IMAGE_SIZE / min(width, height)
    size = (round(width * scale), round(height * scale))
    image = image.resize(size, Image.BILINEAR)
    left, top = (size[0] - IMAGE_SIZE) // 2, (size[1] - IMAGE_SIZE) // 2
    return np.asarray(image.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE)))


def top_k(repository: Path, model: str, pixels: np.ndarray, k: int) -> list[tuple[str, float]]:
    """The model's top-k (label, score) for one [S, S, 3] uint8 image, run locally."""
    batch = pixels.transpose(2, 0, 1)[None]
    if model == "image_f32":
        mean = np.asarray(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1)
        batch = (batch.astype(np.float32) * np.float32(1 / 255) - mean) / std
    session = ort.InferenceSession(
        str(repository / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    (scores,) = session.run(None, {"image": batch})
    order = np.argsort(-scores[0], kind="stable")[:k]
    return [(LABELS[i], float(scores[0][i])) for i in order]


def digit_image() -> np.ndarray:
    """A grey 8x8 "digit" (values 0..255) like the digits data set's."""
    grey = np.zeros((8, 8), np.uint8)
    grey[1:7, 3:5] = 255
    grey[1, 2] = 160
    grey[6, 2:6] = 200
    return grey


def photo() -> Image.Image:
    """A 640x480 RGB "photo": gradients and a block, so that resizing and cropping both matter."""
    x = np.linspace(0, 255, 640, dtype=np.float32)[None, :].repeat(480, 0)
    y = np.linspace(0, 255, 480, dtype=np.float32)[:, None].repeat(640, 1)
    rgb = np.stack([x, y, 255 - x], axis=2).astype(np.uint8)
    rgb[100:300, 250:400] = (10, 200, 30)
    return Image.fromarray(rgb, "RGB")
