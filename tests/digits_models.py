"""Real digits checkpoints and their exported repository, made once per test session.

Training is the real recipe (about a minute for the ResNet on 2 idle cores, seconds for the RNNs), so
the tests that need trained weights share one run of each instead of training their own.
"""

from __future__ import annotations

import functools
from pathlib import Path

RESNET_NAME = "digits_resnet"
LSTM_NAME = "digits_lstm"
GRU_NAME = "digits_gru"


class TrainedDigits:
    """Lazily trained checkpoints (`resnet`, `lstm`, `gru`: TrainResult) and their exported repository."""

    def __init__(self, root: Path):
        self.root = root
        self.checkpoints = root / "checkpoints"

    @functools.cached_property
    def resnet(self):
        from ortserve.export.recipes import train

        return train.train_digits_resnet(self.checkpoints / "digits_resnet.pt", progress=False)

    @functools.cached_property
    def lstm(self):
        from ortserve.export.recipes import train

        return train.train_digits_sequence(self.checkpoints / "digits_lstm.pt", cell="lstm", progress=False)

    @functools.cached_property
    def gru(self):
        from ortserve.export.recipes import train

        return train.train_digits_sequence(self.checkpoints / "digits_gru.pt", cell="gru", progress=False)

    def torch_model(self, which: str):
        """The trained PyTorch model ("resnet", "lstm" or "gru") in eval mode."""
        import torch

        from ortserve.export.recipes import models

        result = getattr(self, which)
        model = (
            models.build_digits_resnet()
            if which == "resnet"
            else models.build_sequence_classifier(**result.factory_kwargs)
        )
        model.load_state_dict(torch.load(result.checkpoint, weights_only=True))
        return model.eval()

    @functools.cached_property
    def repository(self) -> Path:
        """A model repository with the three trained models exported (with validation) as version 1."""
        from ortserve.export.api import export_model
        from ortserve.export.recipes import models
        from ortserve.export.spec import ExportSpec

        repository = self.root / "model_repository"
        for name, which in ((RESNET_NAME, "resnet"), (LSTM_NAME, "lstm"), (GRU_NAME, "gru")):
            result = getattr(self, which)
            spec = (
                ExportSpec.image(
                    result.image_size, input_dtype="uint8", mean=models.IMAGENET_MEAN, std=models.IMAGENET_STD
                )
                if which == "resnet"
                else ExportSpec.sequence(8, 8)
            )
            export_model(
                self.torch_model(which),
                spec,
                repository=repository,
                name=name,
                labels=result.label_names,
                source=result.factory,
                checkpoint_sha256=result.sha256,
            )
        return repository
