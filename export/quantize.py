"""int8 graphs made by onnxruntime's quantization tools from the validated float32 export.

Images: static quantization, QDQ format, per-channel int8 weights, uint8 activations calibrated on real
samples (minmax, entropy or percentile), after onnxruntime's pre-processing (shape inference, graph
optimisation). Sequences: dynamic quantization (int8 weights, activations quantized at run time), which
onnxruntime has kernels for on LSTM (DynamicQuantizeLSTM) and MatMul/Gemm; it has none for GRU or plain RNN,
so such graphs are refused rather than shipped with only their head quantized.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ortserve.export.calibration import Samples
from ortserve.export.errors import QuantizationError, SpecError
from ortserve.export.spec import ExportSpec

logger = logging.getLogger(__name__)

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
DEFAULT_CALIBRATION_SAMPLES = 200
DEFAULT_MIN_AGREEMENT = 0.99
CALIBRATION_BATCH = 16
# Recurrent ops onnxruntime cannot run in int8 (its quantizer leaves them float and quantizes around them).
UNQUANTIZABLE_RECURRENT = ("GRU", "RNN")


@dataclass(frozen=True)
class Int8Options:
    """How an int8 export is calibrated and what it must prove before it is written."""

    calibration_data: str | Path | Samples | None = None
    """Image folder, .npy or .npz of model inputs (or Samples); images need it, sequences may prove on it."""
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES
    """Samples used to calibrate activation ranges (image models)."""
    calibration_method: str = "minmax"
    """minmax, entropy or percentile (onnxruntime's calibrators)."""
    validation_data: str | Path | Samples | None = None
    """Samples the proof runs on; None: a held-out part of the calibration data."""
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    """Least fraction of validation samples whose top-1 class int8 and PyTorch must share."""
    allow_slower: bool = False
    """Write an int8 graph even when it runs slower than the float32 one (at batch 1 or 8)."""
    seed: int = 0
    """Seed of the calibration/validation split."""

    def __post_init__(self) -> None:
        if self.calibration_method not in CALIBRATION_METHODS:
            raise SpecError(
                f"calibration method must be one of {CALIBRATION_METHODS}, got {self.calibration_method!r}"
            )
        if self.calibration_samples < 1:
            raise SpecError(f"--calibration-samples must be >= 1, got {self.calibration_samples}")
        if not self.min_agreement >= 0:
            raise SpecError(f"--min-agreement must be a fraction >= 0 (0.99 = 99%), got {self.min_agreement}")


def quantize(
    fp32_path: Path, out_path: Path, spec: ExportSpec, calibration: Samples | None, method: str
) -> dict:
    """Write the int8 graph of `fp32_path` to `out_path`; return how it was made (for metadata)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out_path.with_name("prepared.onnx")
    try:
        with _quiet():
            quant_pre_process(str(fp32_path), str(prepared))
    except Exception as exc:  # noqa: BLE001 - onnxruntime's tools raise many kinds; all mean "cannot"
        raise QuantizationError([f"onnxruntime's quantization pre-processing failed: {_line(exc)}"]) from exc
    if spec.kind == "image":
        if calibration is None:
            raise SpecError("int8 image export needs calibration data (--calibration-data)")
        return _static(prepared, out_path, spec, calibration, method)
    return _dynamic(prepared, out_path)


def _static(prepared: Path, out_path: Path, spec: ExportSpec, calibration: Samples, method: str) -> dict:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }

    # Equal batches: onnxruntime's histogram calibrators (entropy, percentile) fail on a short last batch.
    batch = max(size for size in range(1, CALIBRATION_BATCH + 1) if len(calibration) % size == 0)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(
                calibration.inputs[start : start + batch] for start in range(0, len(calibration), batch)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {spec.input_name: batch}

    logger.info("calibrating on %d sample(s) (%s), quantizing (QDQ, per-channel)", len(calibration), method)
    try:
        with _quiet():
            quantize_static(
                str(prepared),
                str(out_path),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                # uint8 activations x int8 weights: the combination onnxruntime's x86 kernels are fastest at.
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=methods[method],
            )
    except Exception as exc:  # noqa: BLE001 - see quant_pre_process above
        raise QuantizationError([f"onnxruntime's static quantization failed: {_line(exc)}"]) from exc
    return {
        "scheme": "static QDQ, per-channel int8 weights, uint8 activations",
        "calibration_method": method,
        "calibration_samples": len(calibration),
    }


def _dynamic(prepared: Path, out_path: Path) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    ops = {node.op_type for node in onnx.load(str(prepared), load_external_data=False).graph.node}
    refused = sorted(ops.intersection(UNQUANTIZABLE_RECURRENT))
    if refused:
        raise QuantizationError(
            [
                f"the graph's recurrent layer ({', '.join(refused)}) has no int8 kernel in onnxruntime: only "
                "the layers around it would be quantized, for no speed-up; export it as fp32 "
                "(onnxruntime quantizes LSTM, MatMul and Gemm)"
            ]
        )
    logger.info("quantizing weights to int8 (dynamic quantization)")
    try:
        with _quiet():
            quantize_dynamic(str(prepared), str(out_path), weight_type=QuantType.QInt8)
    except Exception as exc:  # noqa: BLE001 - see quant_pre_process above
        raise QuantizationError([f"onnxruntime's dynamic quantization failed: {_line(exc)}"]) from exc
    quantized = {node.op_type for node in onnx.load(str(out_path), load_external_data=False).graph.node}
    if "LSTM" in quantized:
        raise QuantizationError(["onnxruntime left the LSTM in float32 (its weights are not constants)"])
    return {"scheme": "dynamic, int8 weights", "calibration_method": "none", "calibration_samples": 0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `ortserve export` flags of an int8 export (used only with --precision int8)."""
    group = parser.add_argument_group("int8 (--precision int8)")
    group.add_argument(
        "--calibration-data",
        type=Path,
        metavar="PATH",
        help="folder of images (decoded as the client does; class subfolders give labels), or .npy/.npz "
        "of model inputs ('inputs', optional 'labels')",
    )
    group.add_argument(
        "--calibration-samples",
        type=int,
        default=DEFAULT_CALIBRATION_SAMPLES,
        help=f"samples to calibrate on (default {DEFAULT_CALIBRATION_SAMPLES})",
    )
    group.add_argument(
        "--calibration-method", choices=CALIBRATION_METHODS, default="minmax", help="default minmax"
    )
    group.add_argument(
        "--validation-data",
        type=Path,
        metavar="PATH",
        help="samples for the proof, same forms (default: a held-out fifth of the calibration data)",
    )
    group.add_argument(
        "--min-agreement",
        type=float,
        default=DEFAULT_MIN_AGREEMENT,
        help="least top-1 agreement with the PyTorch model (default 0.99)",
    )
    group.add_argument(
        "--allow-slower", action="store_true", help="write the int8 graph even if it runs slower than fp32"
    )


def options_from_args(args: argparse.Namespace) -> Int8Options | None:
    """Int8Options for --precision int8; int8 flags given without it are an error."""
    if args.precision != "int8":
        given = [
            flag
            for flag, value, default in (
                ("--calibration-data", args.calibration_data, None),
                ("--validation-data", args.validation_data, None),
                ("--calibration-samples", args.calibration_samples, DEFAULT_CALIBRATION_SAMPLES),
                ("--min-agreement", args.min_agreement, DEFAULT_MIN_AGREEMENT),
                ("--allow-slower", args.allow_slower, False),
            )
            if value != default
        ]
        if given:
            raise SpecError(f"{', '.join(given)} only apply to --precision int8")
        return None
    return Int8Options(
        calibration_data=args.calibration_data,
        calibration_samples=args.calibration_samples,
        calibration_method=args.calibration_method,
        validation_data=args.validation_data,
        min_agreement=args.min_agreement,
        allow_slower=args.allow_slower,
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's quantization tools print and log advice meant for interactive use; keep it at debug."""
    captured = io.StringIO()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(captured):
            yield
    finally:
        root.setLevel(level)
        if captured.getvalue().strip():
            logger.debug("onnxruntime quantization output:\n%s", captured.getvalue())


def _line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:400]}"
