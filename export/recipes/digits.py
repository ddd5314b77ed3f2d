"""scikit-learn's bundled digits (1,797 8x8 images, values 0..16), split once and viewed two ways.

The held-out split is fixed: stratified by label, 25% test, `random_state=0` (450 test, 1,347 train).
Both views share it, so every recipe reports accuracy on the same 450 digits.

- images: the 8x8 grey digit as uint8 (`round(v * 255 / 16)`), converted to RGB and resized by Pillow
  BILINEAR to SxS, uint8 NCHW. This is exactly what the client SDK does with the 8x8 grey image (its
  centre crop is a no-op for a square), so accuracy served equals accuracy measured here.
- sequences: the 8 rows of 8 pixels as a batch-first sequence, float32 `v / 16` in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

TEST_FRACTION = 0.25
SPLIT_SEED = 0
DEFAULT_IMAGE_SIZE = 32
NUM_CLASSES = 10
LABEL_NAMES: tuple[str, ...] = tuple(str(digit) for digit in range(NUM_CLASSES))
# load_digits pixel values run 0..16.
DIGITS_MAX_VALUE = 16


@dataclass(frozen=True)
class DigitsSplit:
    """One view of the digits, split into train and held-out test arrays (labels are int64)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target.astype(np.int64)


def load_grey_images() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as uint8 8x8 grey images [N, 8, 8] (0..255) and their int64 labels [N]."""
    images, labels = _load()
    # v * 255 / 16 has a .5 fraction only at v = 8 (127.5); half-to-even and half-up both give 128.
    grey = np.rint(images * (255.0 / DIGITS_MAX_VALUE)).astype(np.uint8)
    return grey, labels.copy()


@lru_cache(maxsize=1)
def _split_indices() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    _, labels = _load()
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED
    )
    return np.sort(train_idx), np.sort(test_idx)


def split_indices() -> tuple[np.ndarray, np.ndarray]:
    """Indices of the fixed train and held-out test sets (stratified, 25% test, seed 0), each sorted."""
    train_idx, test_idx = _split_indices()
    return train_idx.copy(), test_idx.copy()


def heldout_grey_images() -> tuple[np.ndarray, np.ndarray]:
    """The 450 held-out digits as the client sees them: uint8 8x8 grey [N, 8, 8], and int64 labels [N]."""
    grey, labels = load_grey_images()
    _, test_idx = _split_indices()
    return grey[test_idx], labels[test_idx]


def grey_to_rgb_resized(grey: np.ndarray, image_size: int = DEFAULT_IMAGE_SIZE) -> np.ndarray:
    """One uint8 grey image [H, W] through the client pipeline (RGB, Pillow BILINEAR to SxS) -> [3, S, S]."""
    from PIL import Image

    if grey.dtype != np.uint8 or grey.ndim != 2:
        raise ValueError(f"expected a uint8 [H, W] grey image, got {grey.dtype} {list(grey.shape)}")
    rgb = Image.fromarray(grey, "L").convert("RGB").resize((image_size, image_size), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy()


def load_image_split(image_size: int = DEFAULT_IMAGE_SIZE) -> DigitsSplit:
    """The image view: uint8 NCHW [N, 3, S, S] exactly as the client would send it, on the fixed split."""
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    grey, labels = load_grey_images()
    images = np.stack([grey_to_rgb_resized(g, image_size) for g in grey])
    train_idx, test_idx = _split_indices()
    return DigitsSplit(images[train_idx], labels[train_idx], images[test_idx], labels[test_idx])


def load_sequence_split() -> DigitsSplit:
    """The sequence view: 8 rows of 8 features, float32 in [0, 1], batch-first [N, 8, 8], fixed split."""
    images, labels = _load()
    rows = (images / DIGITS_MAX_VALUE).astype(np.float32)
    train_idx, test_idx = _split_indices()
    return DigitsSplit(rows[train_idx], labels[train_idx], rows[test_idx], labels[test_idx])
