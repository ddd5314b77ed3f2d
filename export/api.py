"""export_model: an nn.Module and an ExportSpec become a validated ONNX version in a model repository."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from ortserve.export.calibration import calibration_and_validation
from ortserve.export.errors import ExporterError, ExportError, RepositoryError, SpecError, ValidationError
from ortserve.export.int8_proof import Int8Report, quantize_and_prove, summary_rows
from ortserve.export.onnx_export import export_onnx
from ortserve.export.precision import HalfPrecision
from ortserve.export.preprocess import Uint8Normalize
from ortserve.export.quantize import Int8Options
from ortserve.export.repository import (
    TensorInfo,
    build_config,
    check_model_name,
    graph_tensors,
    write_version,
)
from ortserve.export.spec import ExportSpec
from ortserve.export.validate import ValidationReport, flatten_outputs, random_input, validate_onnx

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportResult:
    """Where the new version lies, which exporter made it and the validation report that admitted it."""

    name: str
    version: int
    model_dir: Path
    version_dir: Path
    model_path: Path
    config_path: Path
    labels_path: Path | None
    exporter: str
    precision: str
    report: ValidationReport
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    seconds: float
    int8: Int8Report | None = None
    """int8 exports: how it was quantized and what it proved (agreement, speed)."""


def export_model(
    model: nn.Module,
    spec: ExportSpec,
    *,
    repository: str | Path,
    name: str,
    labels: Sequence[str] | None = None,
    source: str = "custom",
    checkpoint_sha256: str | None = None,
    max_batch_size: int = 32,
    int8: Int8Options | None = None,
) -> ExportResult:
    """Export `model` (float input; uint8 preprocessing is added here when the spec asks) and validate it.

    Raises an ExportError subclass (ValidationError listing every mismatch, ExporterError, RepositoryError)
    and writes nothing unless the ONNX model agrees with PyTorch at every validated shape. precision int8:
    the validated float32 graph is quantized as `int8` says and must pass its proof (QuantizationError).
    """
    if spec.stateful:
        from ortserve.export.stateful_api import export_stateful  # it imports this module

        return export_stateful(
            model,
            spec,
            repository=repository,
            name=name,
            labels=labels,
            source=source,
            checkpoint_sha256=checkpoint_sha256,
            max_batch_size=max_batch_size,
        )
    started = time.monotonic()
    check_model_name(name)
    if max_batch_size < 1:
        raise RepositoryError(f"--max-batch-size must be >= 1, got {max_batch_size}")
    if int8 is not None and spec.precision != "int8":
        raise SpecError(f"int8 options given for a {spec.precision} export: use ExportSpec(precision='int8')")
    if spec.precision == "int8":
        int8 = int8 or Int8Options()
        # Read before the export: a missing or empty data set should fail in seconds, not after it.
        samples = calibration_and_validation(
            int8.calibration_data, int8.validation_data, int8.calibration_samples, spec, labels, int8.seed
        )
    model.eval()
    pre = spec.preprocessing
    # `reference_net` is what the user trained (float32): an fp16 network is validated against it, not itself.
    reference_net = Uint8Normalize(model, pre.mean, pre.std).eval() if pre.in_graph else model
    core = HalfPrecision(model) if spec.precision == "fp16" else model
    network = Uint8Normalize(core, pre.mean, pre.std).eval() if pre.in_graph else core

    notes: list[str] = []
    time_length, note = spec.trace_time_length() if spec.kind == "sequence" else (None, None)
    if note:
        notes.append(note)
        logger.warning(note)
    trace_shape = (spec.trace_batch_size(), *spec.example_shape)
    if time_length is not None:
        trace_shape = (trace_shape[0], time_length, spec.example_shape[1])
    example = torch.from_numpy(random_input(np.random.default_rng(spec.seed + 1), trace_shape, spec))
    try:
        with torch.no_grad():
            reference = flatten_outputs(reference_net(example))
    except Exception as exc:  # noqa: BLE001 - the user's model failing on the example is a user error
        raise ExportError(f"the model fails on the example input {list(trace_shape)}: {exc}") from exc
    if labels is not None:
        _check_labels(labels, reference[0])

    with tempfile.TemporaryDirectory(prefix="ortserve-export-") as scratch:
        onnx_path, report = _export_and_validate(
            network, reference_net, example, spec, trace_shape, notes, Path(scratch), len(reference)
        )
        int8_report = None
        if spec.precision == "int8":
            onnx_path, int8_report = quantize_and_prove(onnx_path, reference_net, spec, *samples, int8)
        onnx_model = onnx.load(str(onnx_path))
    inputs, outputs = graph_tensors(onnx_model)
    preprocessing = spec.preprocessing.to_dict(spec.kind)
    extra = {"quantization": int8_report.to_json()} if int8_report else {}
    record_provenance(onnx_model, spec, report, source, checkpoint_sha256, preprocessing, **extra)
    config = build_config(
        name,
        inputs,
        outputs,
        max_batch_size=max_batch_size,
        parameters={
            "preprocessing": preprocessing,
            "exporter": report.exporter,
            "kind": spec.kind,
            "precision": spec.precision,
            "source": source,
            **({"quantization": int8_report.to_dict()} if int8_report else {}),
        },
        image_input=spec.kind == "image",
        label_output=outputs[0].name if labels is not None else None,
        max_input_dims=spec.max_input_dims({t.name: t.dims for t in inputs}.get(spec.input_name, ())),
    )
    written = write_version(repository, name, onnx_model, config, labels)
    return ExportResult(
        name=name,
        version=written.version,
        model_dir=written.model_dir,
        version_dir=written.version_dir,
        model_path=written.model_path,
        config_path=written.config_path,
        labels_path=written.labels_path,
        exporter=report.exporter,
        precision=spec.precision,
        report=report,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        seconds=time.monotonic() - started,
        int8=int8_report,
    )


def _export_and_validate(
    network: nn.Module,
    reference_net: nn.Module,
    example: torch.Tensor,
    spec: ExportSpec,
    trace_shape: tuple[int, ...],
    notes: list[str],
    scratch: Path,
    n_outputs: int,
) -> tuple[Path, ValidationReport]:
    """Export `network`, check it against `reference_net` (the same unless fp16); dynamo first,
    TorchScript only if dynamo raised or failed validation (spec.exporter == "auto")."""
    exporters = ["dynamo", "torchscript"] if spec.exporter == "auto" else [spec.exporter]
    failures: list[ExportError] = []
    for exporter in exporters:
        logger.info("exporting with the %s exporter (opset %d)", exporter, spec.opset)
        try:
            attempt = export_onnx(network, example, spec, exporter, scratch / exporter, n_outputs)
        except ExporterError as exc:
            logger.warning("%s", exc)
            failures.append(exc)
            continue
        logger.info("validating the %s export against PyTorch", exporter)
        try:
            report = validate_onnx(
                attempt.path,
                reference_net,
                spec,
                exporter=exporter,
                trace_shape=trace_shape,
                notes=notes + attempt.notes,
            )
        except ValidationError as exc:
            logger.warning("%s export failed validation (%d problem(s))", exporter, len(exc.mismatches))
            failures.append(exc)
            continue
        if failures:
            report.fallback_reason = "; ".join(_one_line(f) for f in failures)
        return attempt.path, report
    raise _combined(failures)


def _combined(failures: list[ExportError]) -> ExportError:
    if not any(isinstance(f, ValidationError) for f in failures):
        return ExporterError("\n".join(str(f) for f in failures))
    problems: list[str] = []
    for failure in failures:
        if isinstance(failure, ValidationError):
            exporter = failure.report.exporter if failure.report is not None else "?"
            problems += [f"[{exporter}] {line}" for line in failure.mismatches]
        else:
            problems.append(str(failure))
    last = next(f for f in reversed(failures) if isinstance(f, ValidationError))
    notes = [note for f in failures if isinstance(f, ValidationError) and f.report for note in f.report.notes]
    return ValidationError(
        problems,
        last.report,
        notes=list(dict.fromkeys(notes)),
        header=f"refusing to write the model: the ONNX export failed validation "
        f"({len(problems)} problem(s), tolerance atol={last.report.atol:g}, rtol={last.report.rtol:g}):",
    )


def _check_labels(labels: Sequence[str], first_output: np.ndarray) -> None:
    if first_output.ndim != 2:
        raise RepositoryError(
            f"labels need a [batch, classes] output; the first output has shape {list(first_output.shape)}"
        )
    if len(labels) != first_output.shape[1]:
        raise RepositoryError(f"{len(labels)} labels given but the model has {first_output.shape[1]} classes")


def record_provenance(
    model: onnx.ModelProto,
    spec: ExportSpec,
    report: ValidationReport,
    source: str,
    checkpoint_sha256: str | None,
    preprocessing: dict,
    **extra: str,
) -> None:
    """Write what every export records in the ONNX metadata: where it came from, how it was made and
    validated (plus `extra` entries: int8's quantization report, a step model's states)."""
    props = {
        "source": source,
        "source_sha256": checkpoint_sha256 or "",
        "kind": spec.kind,
        "precision": spec.precision,
        "exporter": report.exporter,
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "preprocessing": json.dumps(preprocessing, sort_keys=True),
        "validation": report.to_json(),
        **extra,
    }
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


def _one_line(error: ExportError) -> str:
    if isinstance(error, ValidationError):
        exporter = error.report.exporter if error.report else "?"
        more = f" (+{len(error.mismatches) - 1} more)" if len(error.mismatches) > 1 else ""
        return f"{exporter} export failed validation: {error.mismatches[0]}{more}"
    return str(error).splitlines()[0]


def format_summary(result: ExportResult) -> str:
    """A two-column table of what was written and how well it matched PyTorch."""
    report = result.report

    def shape(tensor: TensorInfo) -> str:
        return (
            f"{tensor.name} {tensor.data_type.removeprefix('TYPE_')} [-1, {', '.join(map(str, tensor.dims))}]"
        )

    rows = [
        ("model", result.name),
        ("version", str(result.version)),
        ("path", str(result.model_path)),
        (
            "exporter",
            result.exporter + (f" (fallback: {report.fallback_reason})" if report.fallback_reason else ""),
        ),
        ("precision", result.precision),
        ("input", "; ".join(shape(t) for t in result.inputs)),
        ("output", "; ".join(shape(t) for t in result.outputs)),
        ("validated shapes", str(len({tuple(c.input_shape) for c in report.checks}))),
        ("max abs error", f"{report.max_abs:.3g}"),
        ("max rel error", f"{report.max_rel:.3g}"),
        ("tolerance", f"atol={report.atol:g} rtol={report.rtol:g}"),
        *(summary_rows(result.int8) if result.int8 else []),
        ("time", f"{result.seconds:.1f} s"),
    ]
    width = max(len(key) for key, _ in rows)
    rule = "-" * (width + 2 + max(len(value) for _, value in rows))
    return "\n".join([rule, *(f"{key:<{width}}  {value}" for key, value in rows), rule])
