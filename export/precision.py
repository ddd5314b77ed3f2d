"""fp16 export: the network's weights and arithmetic in float16 behind the interface the fp32 model has."""

from __future__ import annotations

import copy

import torch
from torch import nn


class HalfPrecision(nn.Module):
    """A float16 copy of `model`: float inputs are cast to float16 on the way in and float outputs back to
    float32 on the way out, so clients, config.pbtxt and in-graph uint8 preprocessing stay as for fp32.

    The casts live in the graph: float16 is what a GPU computes fastest, while clients keep sending the
    tensors they already send (uint8 pixels or float32).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        # A copy: the caller's model stays float32 (it is the reference the export is validated against).
        self.model = copy.deepcopy(model).half().eval()

    def forward(self, inputs: torch.Tensor) -> object:
        if inputs.is_floating_point():
            inputs = inputs.to(torch.float16)
        return _to_float32(self.model(inputs))


def _to_float32(output: object) -> object:
    if isinstance(output, torch.Tensor):
        return output.to(torch.float32) if output.is_floating_point() else output
    if isinstance(output, (tuple, list)):
        return type(output)(_to_float32(item) for item in output)
    if isinstance(output, dict):
        return {key: _to_float32(value) for key, value in output.items()}
    return output
