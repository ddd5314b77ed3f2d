"""The networks the digits recipes train: a torchvision ResNet-18 and a small LSTM/GRU classifier.

The exporter bakes `(x_uint8 / 255 - IMAGENET_MEAN) / IMAGENET_STD` into the ONNX graph for uint8 image
inputs, so the ResNet is trained on exactly that normalisation and its checkpoint is a plain torchvision
`resnet18(num_classes=10)` state_dict taking normalised float input.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ortserve.export.recipes.digits import NUM_CLASSES

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

RESNET_FACTORY = "torchvision.models:resnet18"
RESNET_FACTORY_KWARGS: dict[str, int] = {"num_classes": NUM_CLASSES}
SEQUENCE_FACTORY = "ortserve.export.recipes.models:build_sequence_classifier"
SEQUENCE_INPUT_SIZE = 8

_RNN_CLASSES: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU}


def build_digits_resnet() -> nn.Module:
    """A randomly initialised torchvision ResNet-18 with a 10-way head (what `RESNET_FACTORY` builds)."""
    from torchvision.models import resnet18

    return resnet18(weights=None, **RESNET_FACTORY_KWARGS)


def normalize_uint8_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW RGB -> float NCHW, `(x / 255 - mean) / std`: the preprocessing the exporter bakes in."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.to(torch.float32) / 255.0 - mean) / std


class SequenceClassifier(nn.Module):
    """LSTM or GRU over a batch-first sequence [B, T, F] -> logits [B, num_classes], for any T >= 1.

    The head reads the last layer's final hidden state (both directions' concatenated when bidirectional):
    for the forward direction that is the output at the last time step, for the backward one the state
    after it has read the whole sequence, which the output at the last step is not.
    """

    def __init__(
        self,
        cell: Literal["lstm", "gru"] = "lstm",
        input_size: int = SEQUENCE_INPUT_SIZE,
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        num_classes: int = NUM_CLASSES,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if cell not in _RNN_CLASSES:
            raise ValueError(f"cell must be one of {sorted(_RNN_CLASSES)}, got {cell!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.cell = cell
        self.bidirectional = bidirectional
        # nn.LSTM/GRU apply their dropout only between layers (and warn on one layer).
        self.rnn = _RNN_CLASSES[cell](
            input_size=input_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size * (2 if bidirectional else 1), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, state = self.rnn(x)
        hidden = state[0] if self.cell == "lstm" else state  # [num_layers * directions, B, H]
        final = torch.cat([hidden[-2], hidden[-1]], dim=1) if self.bidirectional else hidden[-1]
        return self.head(self.dropout(final))


def build_sequence_classifier(**kwargs: object) -> SequenceClassifier:
    """Factory for the exporter's `--factory ortserve.export.recipes.models:build_sequence_classifier`."""
    return SequenceClassifier(**kwargs)  # type: ignore[arg-type]
