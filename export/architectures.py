"""Building the network the weights go into: torchvision ResNets by name, or a user factory."""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable, Mapping

import torch
from torch import nn

from ortserve.export.errors import ArchitectureError

logger = logging.getLogger(__name__)

ARCHITECTURES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "wide_resnet50_2",
    "resnext50_32x4d",
)


def infer_num_classes(state_dict: Mapping[str, torch.Tensor]) -> int | None:
    """Rows of the classifier weight (fc.weight, possibly behind a wrapper prefix), or None."""
    keys = [k for k in state_dict if k == "fc.weight" or k.endswith(".fc.weight")]
    if not keys:
        return None
    weight = state_dict[min(keys, key=len)]
    return int(weight.shape[0]) if weight.ndim == 2 else None


def build_architecture(name: str, num_classes: int = 1000) -> nn.Module:
    """A randomly initialised torchvision model (no download: weights=None)."""
    if name not in ARCHITECTURES:
        raise ArchitectureError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    if num_classes < 1:
        raise ArchitectureError(f"num_classes must be >= 1, got {num_classes}")
    import torchvision.models

    return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)


def load_factory(path: str) -> Callable[..., nn.Module]:
    """Resolve 'package.module:callable' (dotted attributes allowed after the colon)."""
    module_name, sep, attr_path = path.partition(":")
    if not sep or not module_name or not attr_path:
        raise ArchitectureError(f"factory must look like 'package.module:callable', got {path!r}")
    try:
        target: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise ArchitectureError(f"cannot import factory module {module_name!r}: {exc}") from exc
    for attr in attr_path.split("."):
        try:
            target = getattr(target, attr)
        except AttributeError as exc:
            raise ArchitectureError(
                f"factory {path!r}: {module_name} has no attribute {attr_path!r}"
            ) from exc
    if not callable(target):
        raise ArchitectureError(f"factory {path!r} is not callable")
    return target


def build_from_factory(path: str, kwargs: Mapping[str, object] | None = None) -> nn.Module:
    factory = load_factory(path)
    try:
        model = factory(**dict(kwargs or {}))
    except TypeError as exc:
        raise ArchitectureError(f"factory {path!r} rejected kwargs {dict(kwargs or {})}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ArchitectureError(f"factory {path!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def parse_factory_kwargs(text: str | None) -> dict[str, object]:
    if not text:
        return {}
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArchitectureError(f"--factory-kwargs is not valid JSON: {exc}") from exc
    if not isinstance(kwargs, dict):
        raise ArchitectureError("--factory-kwargs must be a JSON object")
    return kwargs
