"""Running torch.onnx.export with one exporter into a scratch directory, never into the repository."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ortserve.export.errors import ExporterError
from ortserve.export.spec import ExportSpec

logger = logging.getLogger(__name__)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")

MODEL_FILENAME = "model.onnx"
# Protobuf cannot hold a single message over 2 GiB; above this the weights go to an external data file.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


@dataclass
class ExportAttempt:
    """One exporter's output: where the ONNX file is and what the exporter warned about."""

    exporter: str
    path: Path
    notes: list[str] = field(default_factory=list)


def output_names(spec: ExportSpec, count: int) -> list[str]:
    if count == 1:
        return [spec.output_name]
    return [spec.output_name] + [f"{spec.output_name}_{i}" for i in range(1, count)]


def export_onnx(
    model: nn.Module, example: torch.Tensor, spec: ExportSpec, exporter: str, directory: Path, n_outputs: int
) -> ExportAttempt:
    """Export with `exporter` ("dynamo" or "torchscript") to directory/model.onnx; raises ExporterError."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MODEL_FILENAME
    names = output_names(spec, n_outputs)
    captured = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(captured):
        warnings.simplefilter("always")
        try:
            if exporter == "dynamo":
                _export_dynamo(model, example, spec, path, names)
            elif exporter == "torchscript":
                _export_torchscript(model, example, spec, path, names)
            else:
                raise ValueError(f"unknown exporter {exporter!r}")
        except Exception as exc:  # noqa: BLE001 - any exporter failure is reported, then maybe retried
            logger.debug("%s exporter output:\n%s", exporter, captured.getvalue())
            raise ExporterError(f"{exporter} exporter failed: {_summary(exc)}") from exc
    logger.debug("%s exporter output:\n%s", exporter, captured.getvalue())
    notes = _tracer_notes(caught)
    return ExportAttempt(exporter=exporter, path=path, notes=notes)


def dynamo_dims(axes: dict[int, str]) -> dict:
    """torch.export Dims for named dynamic axes ({axis: name}); axes that share a name share one Dim."""
    from torch.export import Dim

    dims: dict[str, Dim] = {}
    shapes = {}
    for axis, name in axes.items():
        ident = re.sub(r"\W", "_", name) or f"dim{axis}"
        if ident[0].isdigit():
            ident = f"d_{ident}"
        shapes[axis] = dims.setdefault(ident, Dim(ident, min=1))
    return shapes


def _export_dynamo(
    model: nn.Module, example: torch.Tensor, spec: ExportSpec, path: Path, names: list[str]
) -> None:
    shapes = dynamo_dims(spec.resolved_dynamic_axes()[spec.input_name])
    program = torch.onnx.export(
        model,
        (example,),
        None,
        dynamo=True,
        input_names=[spec.input_name],
        output_names=names,
        dynamic_shapes=(shapes,),
        opset_version=spec.opset,
    )
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    program.save(str(path), external_data=size > EXTERNAL_DATA_THRESHOLD)


def _export_torchscript(
    model: nn.Module, example: torch.Tensor, spec: ExportSpec, path: Path, names: list[str]
) -> None:
    axes = spec.resolved_dynamic_axes()
    for name in names:
        axes.setdefault(name, {0: "batch"})
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=False,
        input_names=[spec.input_name],
        output_names=names,
        dynamic_axes=axes,
        opset_version=spec.opset,
    )


def _tracer_notes(caught: list[warnings.WarningMessage]) -> list[str]:
    notes: list[str] = []
    for item in caught:
        if issubclass(item.category, torch.jit.TracerWarning):
            text = str(item.message).strip().splitlines()[0]
            note = f"TracerWarning: {text[:300]}"
            if note not in notes:
                notes.append(note)
    return notes[:10]


def _summary(exc: BaseException) -> str:
    """The line that says what went wrong (torch.onnx wraps the real cause under 'Exception summary')."""
    text = _ANSI.sub("", str(exc))
    if "## Exception summary" in text:
        text = text.split("## Exception summary", 1)[1]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    first = lines[0][:500] if lines else ""
    return f"{type(exc).__name__}: {first}"
