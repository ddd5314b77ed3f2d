"""The proof an int8 graph must pass before it is written: it agrees with the user's float32 PyTorch model on
real held-out samples, and it runs faster than the float32 graph on this machine.

int8 cannot meet fp32's atol, so the check is the one that matters to a classifier: the top-1 class on each
validation sample (at least `min_agreement` of them the same as PyTorch's), with the logit error (max, mean)
and the accuracy of both when labels are known, reported beside it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from ortserve.export.calibration import Samples
from ortserve.export.errors import QuantizationError
from ortserve.export.quantize import Int8Options, quantize
from ortserve.export.spec import ExportSpec
from ortserve.export.validate import flatten_outputs

logger = logging.getLogger(__name__)

PROOF_BATCH = 64
SPEED_BATCH_SIZES = (1, 8)
# Interleaved fp32/int8 runs per batch size: at least MIN_RUNS pairs, more until SPEED_BUDGET_S is spent.
MIN_RUNS = 5
MAX_RUNS = 200
SPEED_BUDGET_S = 2.0


@dataclass
class SpeedCheck:
    """Median latency of the float32 and int8 graphs at one batch size, measured interleaved."""

    batch: int
    runs: int
    fp32_ms: float
    int8_ms: float

    @property
    def speedup(self) -> float:
        return self.fp32_ms / self.int8_ms if self.int8_ms > 0 else float("inf")


@dataclass
class Int8Report:
    """How the int8 graph was made and how it compares with PyTorch (agreement) and fp32 (speed)."""

    scheme: str
    calibration_method: str
    calibration_samples: int
    validation_samples: int = 0
    agreement: float = float("nan")
    min_agreement: float = 0.0
    max_abs: float = float("nan")
    mean_abs: float = float("nan")
    accuracy_fp32: float | None = None
    accuracy_int8: float | None = None
    speed: list[SpeedCheck] = field(default_factory=list)
    allow_slower: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        data = asdict(self)
        for check, row in zip(self.speed, data["speed"], strict=True):
            row["speedup"] = round(check.speedup, 3)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=True)


def prove(
    int8_path: Path,
    fp32_path: Path,
    reference_net: nn.Module,
    spec: ExportSpec,
    validation: Samples,
    report: Int8Report,
) -> Int8Report:
    """Fill `report` (agreement, errors, accuracy, speed); raise one QuantizationError listing every
    failure."""
    problems: list[str] = []
    int8 = _session(int8_path)
    int8_logits, torch_logits = [], []
    reference_net.eval()
    for start in range(0, len(validation), PROOF_BATCH):
        batch = validation.inputs[start : start + PROOF_BATCH]
        with torch.no_grad():
            torch_logits.append(flatten_outputs(reference_net(torch.from_numpy(batch)))[0])
        int8_logits.append(int8.run(None, {spec.input_name: batch})[0])
    got, want = np.concatenate(int8_logits), np.concatenate(torch_logits)
    if got.ndim != 2 or got.shape != want.shape:
        raise QuantizationError(
            [f"the int8 proof needs a [batch, classes] first output; it has shape {list(got.shape)}"], report
        )
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    report.validation_samples = len(validation)
    report.agreement = float(np.mean(got.argmax(1) == want.argmax(1)))
    report.max_abs, report.mean_abs = float(diff.max()), float(diff.mean())
    if validation.labels is not None:
        report.accuracy_fp32 = float(np.mean(want.argmax(1) == validation.labels))
        report.accuracy_int8 = float(np.mean(got.argmax(1) == validation.labels))
    logger.info(
        "int8 vs PyTorch on %d held-out sample(s): top-1 agreement %.2f%%, logit error max %.3g mean %.3g",
        len(validation),
        100 * report.agreement,
        report.max_abs,
        report.mean_abs,
    )
    if report.agreement < report.min_agreement:
        problems.append(
            f"top-1 agreement with the PyTorch model is {report.agreement:.2%} on {len(validation)} "
            f"validation sample(s), below --min-agreement {report.min_agreement:.2%} (logit error max "
            f"{report.max_abs:.3g}, mean {report.mean_abs:.3g}); try --calibration-method entropy or "
            "percentile, more --calibration-samples, or calibration data like what the model will serve"
        )
    report.speed = measure_speed(_session(fp32_path), int8, spec.input_name, validation.inputs)
    for check in report.speed:
        logger.info(
            "batch %d: fp32 %.2f ms, int8 %.2f ms (median of %d interleaved runs): %.2fx",
            check.batch,
            check.fp32_ms,
            check.int8_ms,
            check.runs,
            check.speedup,
        )
    slower = [c for c in report.speed if c.speedup < 1.0]
    if slower:
        text = ", ".join(f"batch {c.batch}: {c.int8_ms:.3g} ms vs {c.fp32_ms:.3g} ms fp32" for c in slower)
        if report.allow_slower:
            report.notes.append(f"int8 is slower than fp32 here ({text}); written because of --allow-slower")
        else:
            problems.append(
                f"the int8 graph runs slower than the float32 one on this machine ({text}); export fp32, "
                "or pass --allow-slower"
            )
    if problems:
        raise QuantizationError(problems, report)
    return report


def measure_speed(
    fp32: ort.InferenceSession, int8: ort.InferenceSession, input_name: str, samples: np.ndarray
) -> list[SpeedCheck]:
    """Median latency of each session at batch 1 and 8 (real samples, repeated to fill a batch): runs
    alternate fp32/int8, the order flipping every pair, so a machine busy with other work slows both alike."""
    checks = []
    for batch in SPEED_BATCH_SIZES:
        rows = np.resize(np.arange(len(samples)), batch)
        feed = {input_name: np.ascontiguousarray(samples[rows])}
        for session in (fp32, int8):
            session.run(None, feed)  # warm-up: first-run allocations and kernel selection
        times: dict[str, list[float]] = {"fp32": [], "int8": []}
        started = time.monotonic()
        runs = 0
        while runs < MIN_RUNS or (time.monotonic() - started < SPEED_BUDGET_S and runs < MAX_RUNS):
            pair = (("fp32", fp32), ("int8", int8))
            for name, session in pair if runs % 2 == 0 else pair[::-1]:
                begin = time.perf_counter()
                session.run(None, feed)
                times[name].append(time.perf_counter() - begin)
            runs += 1
        checks.append(
            SpeedCheck(
                batch=batch,
                runs=runs,
                fp32_ms=1000 * float(np.median(times["fp32"])),
                int8_ms=1000 * float(np.median(times["int8"])),
            )
        )
    return checks


def summary_rows(report: Int8Report) -> list[tuple[str, str]]:
    """Rows for the export summary table."""
    rows = [
        ("quantization", report.scheme),
        (
            "calibration",
            f"{report.calibration_method}, {report.calibration_samples} sample(s)"
            if report.calibration_samples
            else "none (weights only)",
        ),
        (
            "int8 agreement",
            f"{report.agreement:.2%} top-1 with PyTorch on {report.validation_samples} held-out sample(s) "
            f"(min {report.min_agreement:.2%})",
        ),
        ("int8 logit error", f"max {report.max_abs:.3g}, mean {report.mean_abs:.3g}"),
    ]
    if report.accuracy_fp32 is not None and report.accuracy_int8 is not None:
        rows.append(("accuracy", f"fp32 {report.accuracy_fp32:.2%}, int8 {report.accuracy_int8:.2%}"))
    for check in report.speed:
        rows.append(
            (
                f"speed batch {check.batch}",
                f"fp32 {check.fp32_ms:.3g} ms, int8 {check.int8_ms:.3g} ms: {check.speedup:.2f}x",
            )
        )
    rows += [("note", note) for note in report.notes]
    return rows


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = os.cpu_count() or 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def quantize_and_prove(
    fp32_path: Path,
    reference_net: nn.Module,
    spec: ExportSpec,
    calibration: Samples | None,
    validation: Samples,
    options: Int8Options,
) -> tuple[Path, Int8Report]:
    """Quantize the validated float32 graph next to it and prove the result; raise QuantizationError."""
    int8_path = fp32_path.with_name("model.int8.onnx")
    made = quantize(fp32_path, int8_path, spec, calibration, options.calibration_method)
    report = Int8Report(**made, min_agreement=options.min_agreement, allow_slower=options.allow_slower)
    return int8_path, prove(int8_path, fp32_path, reference_net, spec, validation, report)
