"""Triton's classification extension: top-k "score:index:label" strings instead of a raw output tensor."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def classify(array: np.ndarray, k: int, labels: Sequence[str], batched: bool) -> np.ndarray:
    """Top-k of each batch row ([batch, k]) or of the whole tensor ([k]), best first, as bytes items."""
    rows = array.reshape(array.shape[0], -1) if batched else array.reshape(1, -1)
    count = min(k, rows.shape[1])
    result = np.empty((rows.shape[0], count), dtype=object)
    for row_index, row in enumerate(rows):
        order = np.argsort(-row.astype(np.float64), kind="stable")[:count]
        for column, index in enumerate(order):
            text = f"{float(row[index]):f}:{index}"
            if index < len(labels):
                text += f":{labels[index]}"
            result[row_index, column] = text.encode("utf-8")
    return result if batched else result.reshape(count)
