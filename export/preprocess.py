"""In-graph image preprocessing: the ONNX model takes uint8 pixels, so clients send 4x fewer bytes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Uint8Normalize(nn.Module):
    """Wrap an image model: uint8 NCHW pixels in [0, 255] -> /255 -> (x - mean) / std -> model."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        channels = len(mean)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, channels, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, channels, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        scaled = pixels.to(torch.float32) * (1.0 / 255.0)
        return self.model((scaled - self.mean) / self.std)


def normalize_pixels(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """The same arithmetic outside the graph, for clients and tests that feed the float model."""
    channels = len(mean)
    mean_t = torch.tensor(list(mean), dtype=torch.float32).view(1, channels, 1, 1)
    std_t = torch.tensor(list(std), dtype=torch.float32).view(1, channels, 1, 1)
    return (pixels.to(torch.float32) * (1.0 / 255.0) - mean_t) / std_t
