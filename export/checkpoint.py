"""Loading checkpoints safely: weights-only by default; DDP, Lightning and training dicts unwrapped."""

from __future__ import annotations

import hashlib
import logging
import pickle
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ortserve.export.errors import ArchitectureMismatchError, CheckpointError

logger = logging.getLogger(__name__)

# Keys under which training loops commonly nest the weights, most specific first.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")
# Prefixes added by DataParallel/DDP, Lightning modules and torch.compile.
PREFIXES = ("module.", "model.", "_orig_mod.", "net.")


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint file held: either a state_dict or (pickled, trusted) a whole module."""

    path: Path
    sha256: str
    state_dict: dict[str, torch.Tensor] | None = None
    module: nn.Module | None = None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_checkpoint(path: str | Path, *, trust_pickle: bool = False) -> Checkpoint:
    """Load a checkpoint; arbitrary pickled objects (whole modules) only with trust_pickle."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        if not trust_pickle and zipfile.is_zipfile(path) and "Weights only load failed" in str(exc):
            raise CheckpointError(
                f"{path} holds pickled Python objects (e.g. a whole module saved with torch.save(model)), "
                "which can run arbitrary code when loaded; re-run with --trust-pickle only if you trust "
                "its source, or save model.state_dict() instead"
            ) from exc
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {_first_line(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - unpickling arbitrary bytes can raise almost anything
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (truncated or not a checkpoint): {_first_line(exc)}"
        ) from exc
    sha = sha256_file(path)
    if isinstance(obj, nn.Module):
        return Checkpoint(path=path, sha256=sha, module=obj)
    return Checkpoint(path=path, sha256=sha, state_dict=extract_state_dict(obj, path))


def extract_state_dict(obj: object, path: Path | str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the parameter dict inside common checkpoint layouts (raw, {"state_dict": ...}, {"model": ...})."""
    if isinstance(obj, nn.Module):
        return dict(obj.state_dict())
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state_dict or a module")
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {str(k): v for k, v in obj.items()}
    for key in WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, (Mapping, nn.Module)):
            return extract_state_dict(inner, path)
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if tensors:
        return tensors
    raise CheckpointError(
        f"{path} holds no weights: expected a state_dict or a dict with one of {list(WRAPPER_KEYS)}, "
        f"found keys {sorted(map(str, obj))[:10]}"
    )


def _strip_candidates(
    state_dict: dict[str, torch.Tensor], depth: int = 0
) -> Iterator[dict[str, torch.Tensor]]:
    yield state_dict
    if depth >= 3:
        return
    for prefix in PREFIXES:
        stripped = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if stripped:
            yield from _strip_candidates(stripped, depth + 1)


def align_state_dict(state_dict: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes (module., model., ...) so the keys best match the model's keys."""
    best, best_overlap = state_dict, len(expected & state_dict.keys())
    for candidate in _strip_candidates(state_dict):
        overlap = len(expected & candidate.keys())
        if overlap > best_overlap:
            best, best_overlap = candidate, overlap
    return best


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], architecture: str) -> None:
    """Load weights into model, refusing (with every problem listed) unless they fit exactly."""
    target = model.state_dict()
    aligned = align_state_dict(state_dict, set(target))
    mismatched = [
        (key, tuple(value.shape), tuple(target[key].shape))
        for key, value in aligned.items()
        if key in target and isinstance(value, torch.Tensor) and value.shape != target[key].shape
    ]
    loadable = {k: v for k, v in aligned.items() if k not in {m[0] for m in mismatched}}
    result = model.load_state_dict(loadable, strict=False)
    # Mis-shaped keys are reported as shape mismatches, not as missing.
    missing = [k for k in result.missing_keys if k not in {m[0] for m in mismatched}]
    if missing or result.unexpected_keys or mismatched:
        raise ArchitectureMismatchError(missing, list(result.unexpected_keys), mismatched, architecture)
    logger.info("loaded %d tensors into %s", len(loadable), architecture)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
