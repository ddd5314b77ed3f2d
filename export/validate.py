"""The promise: the ONNX model reproduces PyTorch at every validated shape, or nothing is written."""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from ortserve.export.errors import ValidationError
from ortserve.export.spec import ExportSpec

logger = logging.getLogger(__name__)

_ORT_NODE = re.compile(r"running (\S+) node\. Name:'([^']*)' Status Message: (.*)", re.DOTALL)
_ORT_CHECK = re.compile(r"^\S+:\d+ .*? was false\.\s*")


@dataclass
class OutputCheck:
    """One output at one input shape: ONNX Runtime against PyTorch."""

    input_shape: list[int]
    output: str
    output_shape: list[int] | None
    max_abs: float | None
    max_rel: float | None
    ok: bool
    problem: str | None = None


@dataclass
class ValidationReport:
    """Every comparison made, with the exporter that produced the model and why (fallbacks, notes)."""

    exporter: str
    atol: float
    rtol: float
    trace_shape: list[int]
    checks: list[OutputCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fallback_reason: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    @property
    def max_abs(self) -> float:
        return max((c.max_abs for c in self.checks if c.max_abs is not None), default=float("nan"))

    @property
    def max_rel(self) -> float:
        return max((c.max_rel for c in self.checks if c.max_rel is not None), default=float("nan"))

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(ok=self.ok, max_abs=self.max_abs, max_rel=self.max_rel)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=True)


def validation_shapes(spec: ExportSpec) -> list[tuple[int, ...]]:
    """Full input shapes to compare at: every batch size (x every time length when time is dynamic)."""
    if spec.kind == "image":
        return [(batch, *spec.example_shape) for batch in spec.batch_sizes]
    time_steps, features = spec.example_shape
    lengths = spec.time_lengths if spec.time_is_dynamic else (time_steps,)
    return [(batch, length, features) for batch in spec.batch_sizes for length in lengths]


def random_input(rng: np.random.Generator, shape: tuple[int, ...], spec: ExportSpec) -> np.ndarray:
    if spec.preprocessing.in_graph:
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    return rng.standard_normal(shape, dtype=np.float32)


def validate_onnx(
    path: Path,
    model: nn.Module,
    spec: ExportSpec,
    *,
    exporter: str,
    trace_shape: tuple[int, ...],
    notes: list[str] | None = None,
) -> ValidationReport:
    """Check the ONNX file and compare it with `model`; raise one ValidationError listing every mismatch."""
    started = time.monotonic()
    report = ValidationReport(
        exporter=exporter,
        atol=spec.tolerance[0],
        rtol=spec.tolerance[1],
        trace_shape=list(trace_shape),
        notes=list(notes or []),
    )
    problems: list[str] = []
    try:
        # full_check runs strict shape inference as well as the structural checks.
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        problems.append(f"onnx.checker/shape inference: {_first_line(exc)}")
    try:
        options = ort.SessionOptions()
        # Failures are collected and reported below; onnxruntime's own log would repeat each one.
        options.log_severity_level = 4
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several untyped errors on load
        problems.append(f"onnxruntime cannot load the model: {_first_line(exc)}")
        _finish(report, started, problems)
    problems += _check_interface(session, spec)
    if problems:
        _finish(report, started, problems)
    # Not fatal: the runs below show what a frozen axis breaks, at which shapes.
    problems += _check_dynamic_axes(session, spec)

    rng = np.random.default_rng(spec.seed)
    model.eval()
    for shape in validation_shapes(spec):
        where = _describe(shape, spec)
        array = random_input(rng, shape, spec)
        try:
            with torch.no_grad():
                expected = flatten_outputs(model(torch.from_numpy(array)))
        except Exception as exc:  # noqa: BLE001 - the user's model failing is reported like any mismatch
            problems.append(f"{where}: the PyTorch model itself failed: {_first_line(exc)}")
            continue
        try:
            got = session.run(None, {spec.input_name: array})
        except Exception as exc:  # noqa: BLE001 - e.g. a Reshape baked with the trace-time length
            problems.append(f"{where}: onnxruntime failed: {_first_line(exc)}")
            report.checks.append(OutputCheck(list(shape), "*", None, None, None, False, _first_line(exc)))
            continue
        names = [o.name for o in session.get_outputs()]
        if len(got) != len(expected):
            problems.append(f"{where}: ONNX returned {len(got)} outputs, PyTorch {len(expected)}")
            continue
        for name, onnx_out, torch_out in zip(names, got, expected, strict=True):
            check = compare(np.asarray(onnx_out), torch_out, spec, list(shape), name)
            report.checks.append(check)
            if not check.ok:
                problems.append(f"{where}, output {name!r}: {check.problem}")
    _finish(report, started, problems)
    return report


def compare(
    onnx_out: np.ndarray, torch_out: np.ndarray, spec: ExportSpec, shape: list[int], name: str
) -> OutputCheck:
    """numpy.allclose-style |onnx - torch| <= atol + rtol * |torch|; max rel is taken where |torch| > atol."""
    if onnx_out.shape != torch_out.shape:
        problem = f"shape {list(onnx_out.shape)} differs from PyTorch's {list(torch_out.shape)}"
        return OutputCheck(shape, name, list(onnx_out.shape), None, None, False, problem)
    atol, rtol = spec.tolerance
    a = onnx_out.astype(np.float64)
    b = torch_out.astype(np.float64)
    diff = np.abs(a - b)
    finite = np.isfinite(diff)
    max_abs = float(diff[finite].max()) if finite.any() else 0.0
    # Relative error only where the reference is not ~0: near zero, atol is what governs.
    scaled = finite & (np.abs(b) > atol)
    max_rel = float((diff[scaled] / np.abs(b[scaled])).max()) if scaled.any() else 0.0
    close = np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
    if close.all():
        return OutputCheck(shape, name, list(onnx_out.shape), max_abs, max_rel, True)
    problem = (
        f"max abs error {max_abs:.3g}, max rel error {max_rel:.3g}: {int((~close).sum())} of {close.size} "
        f"values outside atol={atol:g} + rtol={rtol:g} * |torch|"
    )
    return OutputCheck(shape, name, list(onnx_out.shape), max_abs, max_rel, False, problem)


def _check_interface(session: ort.InferenceSession, spec: ExportSpec) -> list[str]:
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != spec.input_name:
        return [f"expected one input {spec.input_name!r}, the model has {[i.name for i in inputs]}"]
    want = "tensor(uint8)" if spec.preprocessing.in_graph else "tensor(float)"
    if inputs[0].type != want:
        return [f"input {spec.input_name!r} has type {inputs[0].type}, expected {want}"]
    return []


def _check_dynamic_axes(session: ort.InferenceSession, spec: ExportSpec) -> list[str]:
    dims = session.get_inputs()[0].shape
    problems = []
    for axis, name in sorted(spec.resolved_dynamic_axes()[spec.input_name].items()):
        if axis < len(dims) and isinstance(dims[axis], int):
            problems.append(
                f"input {spec.input_name!r} axis {axis} ({name}) should be dynamic but was exported "
                f"with the fixed size {dims[axis]} (the exporter specialised it to the traced shape)"
            )
    return problems


def _finish(report: ValidationReport, started: float, problems: list[str]) -> None:
    report.seconds = time.monotonic() - started
    if problems:
        raise ValidationError(
            problems,
            report,
            header=(
                f"ONNX model from the {report.exporter} exporter failed validation "
                f"({len(problems)} problem(s), traced at {report.trace_shape}):"
            ),
            notes=report.notes,
        )


def _describe(shape: tuple[int, ...], spec: ExportSpec) -> str:
    if spec.kind == "sequence":
        return f"batch {shape[0]}, time length {shape[1]} (input {list(shape)})"
    return f"batch {shape[0]} (input {list(shape)})"


def flatten_outputs(output: object) -> list[np.ndarray]:
    if isinstance(output, torch.Tensor):
        return [output.detach().numpy()]
    if isinstance(output, (tuple, list)):
        return [array for item in output for array in flatten_outputs(item)]
    if isinstance(output, dict):
        return [array for item in output.values() for array in flatten_outputs(item)]
    raise TypeError(f"model returned {type(output).__name__}; expected tensors")


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    node = _ORT_NODE.search(text)
    if node:
        # Keep the operator, its node name and the human part of onnxruntime's message (drop the C++ check).
        detail = _ORT_CHECK.sub("", node.group(3)).strip()
        return f"{node.group(1)} node {node.group(2)!r}: {detail.splitlines()[0][:300] if detail else ''}"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {' '.join(lines[:3])[:400]}"
