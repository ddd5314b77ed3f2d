"""Train the digits recipes on CPU and write a plain state_dict plus a JSON sidecar (`<checkpoint>.json`).

Runs are seeded and deterministic as far as torch allows on CPU (`torch.use_deterministic_algorithms`
while training, the caller's RNG state and setting restored afterwards). Accuracy is measured once, after
the last epoch, on the fixed held-out split of `digits` (never used to pick epochs or hyper-parameters
per run).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ortserve.export.recipes import digits, models

logger = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".json"


@dataclass(frozen=True)
class Hyperparameters:
    """Optimiser settings for one recipe: AdamW with a one-cycle learning-rate schedule."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float


RESNET_HPARAMS = Hyperparameters(epochs=6, batch_size=64, lr=2e-3, weight_decay=5e-4)
SEQUENCE_HPARAMS = Hyperparameters(epochs=25, batch_size=64, lr=1e-2, weight_decay=1e-4)
# The sequence recipe's model: small enough to train in seconds, large enough for >= 93% held-out.
SEQUENCE_MODEL_KWARGS: dict[str, Any] = {
    "hidden_size": 64,
    "num_layers": 1,
    "bidirectional": False,
    "dropout": 0.0,
}


@dataclass
class TrainResult:
    """What a training run produced; written next to the checkpoint as `<checkpoint>.json`."""

    recipe: str
    arch: str
    accuracy: float
    test_samples: int
    epochs: int
    seconds: float
    checkpoint: str
    sha256: str
    factory: str
    factory_kwargs: dict[str, Any]
    image_size: int | None
    label_names: list[str]
    seed: int
    freeze_backbone: bool = False
    init_checkpoint: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: recipe, held-out accuracy, time and where the checkpoint went."""
        return (
            f"{self.recipe}: held-out accuracy {self.accuracy:.2%} ({self.test_samples} digits), "
            f"{self.epochs} epochs in {self.seconds:.1f} s -> {self.checkpoint} (sha256 {self.sha256[:12]})"
        )


def sidecar_path(checkpoint: str | Path) -> Path:
    """Where the JSON sidecar of a checkpoint lives: the checkpoint path with `.json` appended."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + SIDECAR_SUFFIX)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_train_result(checkpoint: str | Path) -> TrainResult | None:
    """The sidecar's TrainResult if it exists and still matches the checkpoint's sha256, else None."""
    checkpoint = Path(checkpoint)
    sidecar = sidecar_path(checkpoint)
    if not checkpoint.is_file() or not sidecar.is_file():
        return None
    try:
        result = TrainResult(**json.loads(sidecar.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        logger.warning("ignoring unreadable sidecar %s: %s", sidecar, exc)
        return None
    if result.sha256 != file_sha256(checkpoint):
        logger.warning("ignoring sidecar %s: checkpoint %s changed since it was written", sidecar, checkpoint)
        return None
    return result


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch and force deterministic kernels, restoring the caller's RNG and setting afterwards."""
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_deterministic)


def _take(split: digits.DigitsSplit, max_train_samples: int | None, seed: int) -> digits.DigitsSplit:
    if max_train_samples is None or max_train_samples >= len(split.y_train):
        return split
    if max_train_samples < 1:
        raise ValueError(f"max_train_samples must be >= 1, got {max_train_samples}")
    keep = np.sort(np.random.default_rng(seed).permutation(len(split.y_train))[:max_train_samples])
    return dataclasses.replace(split, x_train=split.x_train[keep], y_train=split.y_train[keep])


def _accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, to_model: Callable) -> float:
    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(labels), 256):
            logits = model(to_model(inputs[start : start + 256]))
            correct += int((logits.argmax(dim=1) == labels[start : start + 256]).sum())
    return correct / len(labels)


def _fit(
    model: nn.Module,
    split: digits.DigitsSplit,
    hparams: Hyperparameters,
    *,
    to_model: Callable[[torch.Tensor], torch.Tensor],
    trainable: list[nn.Parameter],
    train_mode: Callable[[], None],
    seed: int,
    desc: str,
    progress: bool,
) -> float:
    """Train in place with AdamW + one-cycle; return held-out accuracy after the last epoch."""
    x_train, y_train = torch.from_numpy(split.x_train), torch.from_numpy(split.y_train)
    # A trailing batch of one sample is skipped: BatchNorm cannot train on it.
    full, rest = divmod(len(y_train), hparams.batch_size)
    batches_per_epoch = full + (rest > 1)
    optimizer = torch.optim.AdamW(trainable, lr=hparams.lr, weight_decay=hparams.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=hparams.lr, total_steps=hparams.epochs * batches_per_epoch
    )
    loss_fn = nn.CrossEntropyLoss()
    shuffler = torch.Generator().manual_seed(seed)
    with tqdm(
        total=hparams.epochs * batches_per_epoch,
        desc=desc,
        unit="batch",
        file=sys.stderr,
        disable=not progress,
        leave=False,
    ) as bar:
        for epoch in range(hparams.epochs):
            train_mode()
            order = torch.randperm(len(y_train), generator=shuffler)
            for batch in range(batches_per_epoch):
                index = order[batch * hparams.batch_size : (batch + 1) * hparams.batch_size]
                loss = loss_fn(model(to_model(x_train[index])), y_train[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                # refresh=False leaves redrawing to tqdm's own rate limit.
                postfix = {"epoch": f"{epoch + 1}/{hparams.epochs}", "loss": f"{loss.item():.3f}"}
                bar.set_postfix(postfix, refresh=False)
                bar.update()
    return _accuracy(model, torch.from_numpy(split.x_test), torch.from_numpy(split.y_test), to_model)


def _save(model: nn.Module, out_path: str | Path) -> tuple[Path, str]:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_path)
    return out_path, file_sha256(out_path)


def _write_sidecar(result: TrainResult) -> None:
    sidecar_path(result.checkpoint).write_text(json.dumps(dataclasses.asdict(result), indent=2) + "\n")
    logger.info("%s", result.summary())


def train_digits_resnet(
    out_path: str | Path,
    epochs: int = RESNET_HPARAMS.epochs,
    freeze_backbone: bool = False,
    seed: int = 0,
    progress: bool = True,
    *,
    init_checkpoint: str | Path | None = None,
    image_size: int = digits.DEFAULT_IMAGE_SIZE,
    max_train_samples: int | None = None,
) -> TrainResult:
    """Train torchvision resnet18(num_classes=10) from random init (or `init_checkpoint`) on digits images.

    Inputs are the uint8 SxS RGB view normalised with ImageNet mean/std, as the exporter's baked-in
    preprocessing does. With `freeze_backbone` only `fc` trains and the backbone stays in eval mode, so
    neither its parameters nor its BatchNorm statistics change (fine-tuning a given checkpoint).
    `max_train_samples` trains on a seeded subset (quick checks); accuracy is always on the full held-out set.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    hparams = dataclasses.replace(RESNET_HPARAMS, epochs=epochs)
    started = time.perf_counter()
    split = _take(digits.load_image_split(image_size), max_train_samples, seed)
    with _seeded(seed):
        model = models.build_digits_resnet()
        if init_checkpoint is not None:
            model.load_state_dict(torch.load(init_checkpoint, map_location="cpu", weights_only=True))
        if freeze_backbone:
            if init_checkpoint is None:
                logger.warning(
                    "freezing a randomly initialised backbone: only fc learns (see init_checkpoint)"
                )
            for name, param in model.named_parameters():
                param.requires_grad_(name.startswith("fc."))

        def train_mode() -> None:
            # A frozen backbone must not update BatchNorm running statistics either.
            model.train(not freeze_backbone)
            model.fc.train()

        accuracy = _fit(
            model,
            split,
            hparams,
            to_model=models.normalize_uint8_images,
            trainable=[p for p in model.parameters() if p.requires_grad],
            train_mode=train_mode,
            seed=seed,
            desc="digits-resnet",
            progress=progress,
        )
    checkpoint, sha256 = _save(model, out_path)
    result = TrainResult(
        recipe="digits-resnet",
        arch="resnet18",
        accuracy=accuracy,
        test_samples=len(split.y_test),
        epochs=epochs,
        seconds=round(time.perf_counter() - started, 2),
        checkpoint=str(checkpoint),
        sha256=sha256,
        factory=models.RESNET_FACTORY,
        factory_kwargs=dict(models.RESNET_FACTORY_KWARGS),
        image_size=image_size,
        label_names=list(digits.LABEL_NAMES),
        seed=seed,
        freeze_backbone=freeze_backbone,
        init_checkpoint=None if init_checkpoint is None else str(init_checkpoint),
        hyperparameters=dataclasses.asdict(hparams),
    )
    _write_sidecar(result)
    return result


def train_digits_sequence(
    out_path: str | Path,
    cell: Literal["lstm", "gru"] = "lstm",
    epochs: int = SEQUENCE_HPARAMS.epochs,
    seed: int = 0,
    progress: bool = True,
    *,
    model_kwargs: dict[str, Any] | None = None,
    max_train_samples: int | None = None,
) -> TrainResult:
    """Train a `SequenceClassifier` (LSTM or GRU) on digits as 8 rows of 8 features in [0, 1].

    `model_kwargs` overrides `SEQUENCE_MODEL_KWARGS` (hidden_size, num_layers, bidirectional, dropout); the
    full kwargs land in the result so `build_sequence_classifier(**result.factory_kwargs)` rebuilds it.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    hparams = dataclasses.replace(SEQUENCE_HPARAMS, epochs=epochs)
    factory_kwargs = {
        "cell": cell,
        "input_size": models.SEQUENCE_INPUT_SIZE,
        **SEQUENCE_MODEL_KWARGS,
        **(model_kwargs or {}),
        "num_classes": digits.NUM_CLASSES,
    }
    recipe = f"digits-{cell}"
    started = time.perf_counter()
    split = _take(digits.load_sequence_split(), max_train_samples, seed)
    with _seeded(seed):
        model = models.build_sequence_classifier(**factory_kwargs)
        accuracy = _fit(
            model,
            split,
            hparams,
            to_model=lambda batch: batch,
            trainable=list(model.parameters()),
            train_mode=model.train,
            seed=seed,
            desc=recipe,
            progress=progress,
        )
    checkpoint, sha256 = _save(model, out_path)
    result = TrainResult(
        recipe=recipe,
        arch=cell,
        accuracy=accuracy,
        test_samples=len(split.y_test),
        epochs=epochs,
        seconds=round(time.perf_counter() - started, 2),
        checkpoint=str(checkpoint),
        sha256=sha256,
        factory=models.SEQUENCE_FACTORY,
        factory_kwargs=factory_kwargs,
        image_size=None,
        label_names=list(digits.LABEL_NAMES),
        seed=seed,
        hyperparameters=dataclasses.asdict(hparams),
    )
    _write_sidecar(result)
    return result
