"""`ortserve quickstart`: the whole job on real data, offline, in a few minutes on 2 cores.

Trains (or reuses) the digits ResNet and LSTM, exports them with validation into a model repository,
starts the server, sends every held-out digit through the client (`classify`, `predict_sequences`),
and reports served accuracy next to PyTorch's on the same samples, latency and throughput. The LSTM is also
exported as a stateful step model and every held-out sequence is streamed row by row through the server,
each running prediction checked against PyTorch's on that prefix.
The served accuracy must equal PyTorch's within 0.5 points, or the command fails. `--precision int8` adds the
ResNet exported int8 (calibrated on the training digits) beside fp32, held to 1 point (its 99% agreement).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from tqdm import tqdm

from ortserve.client import InferenceClient
from ortserve.export.api import export_model, format_summary
from ortserve.export.calibration import Samples
from ortserve.export.quantize import Int8Options
from ortserve.export.recipes import digits, models
from ortserve.export.recipes.train import (
    TrainResult,
    load_train_result,
    train_digits_resnet,
    train_digits_sequence,
)
from ortserve.export.repository import MODEL_FILENAME, existing_versions
from ortserve.export.spec import ExportSpec
from ortserve.export.streaming import StreamAgreement, stream_rows

logger = logging.getLogger(__name__)

RESNET_NAME = "digits_resnet"
LSTM_NAME = "digits_lstm"
STREAM_NAME = "digits_lstm_stream"
# Server-held state (Triton's sequence batcher): each step sends one row, the server keeps the LSTM's state.
# The same step graph also serves with client-carried state (--state client; docs/streaming.md).
STREAM_STATE = "server"
RESNET_INT8_NAME = "digits_resnet_int8"
ACCURACY_TOLERANCE = 0.005
# int8 is held to its proof (>= 99% top-1 agreement with PyTorch), so its accuracy may move up to 1 point.
INT8_ACCURACY_TOLERANCE = 0.01
LISTENING_PREFIX = "ORTSERVE_LISTENING"


@dataclass(frozen=True)
class ServedAccuracy:
    """One model's accuracy through the server against PyTorch's on the same held-out samples."""

    model: str
    samples: int
    served: float
    pytorch: float
    throughput: float
    """Samples per second through the client, batched requests."""
    latencies_ms: np.ndarray
    """Per-request latency of single-sample requests."""
    tolerance: float = ACCURACY_TOLERANCE
    """How far served accuracy may be from PyTorch's."""

    @property
    def agrees(self) -> bool:
        # Compared in samples: in floats 0.97 - 0.96 is 0.010000000000000009, over a 1-point tolerance.
        return round(abs(self.served - self.pytorch) * self.samples) <= self.tolerance * self.samples + 1e-9


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ortserve quickstart", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repository",
        type=Path,
        default=Path("model_repository"),
        help="model repository to export into (default ./model_repository)",
    )
    parser.add_argument(
        "--checkpoints",
        type=Path,
        default=Path("checkpoints"),
        help="where trained checkpoints are kept and reused (default ./checkpoints)",
    )
    parser.add_argument("--grpc-port", type=int, default=8001, help="server gRPC port (0: any free port)")
    parser.add_argument(
        "--metrics-port", type=int, default=8002, help="server metrics port (0: any free port)"
    )
    parser.add_argument(
        "--keep-serving", action="store_true", help="leave the server up afterwards, until Ctrl-C"
    )
    parser.add_argument(
        "--short",
        action="store_true",
        help="a quick smoke run: short training, 100 held-out samples, 20 latency calls",
    )
    parser.add_argument("--retrain", action="store_true", help="train again even if checkpoints exist")
    parser.add_argument(
        "--precision",
        choices=("fp32", "int8"),
        default="fp32",
        help=f"int8: also export the ResNet int8 ({RESNET_INT8_NAME}) and report it beside fp32",
    )
    return parser


def _trained(path: Path, train: Callable[[], TrainResult], retrain: bool) -> TrainResult:
    reused = None if retrain else load_train_result(path)
    if reused is not None:
        _say(f"reusing {path} (held-out accuracy {reused.accuracy:.2%} at training)")
        # The sidecar names where the checkpoint was trained; it may have been copied here since.
        return dataclasses.replace(reused, checkpoint=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    result = train()
    _say(result.summary())
    return result


def _latest_export_sha(repository: Path, name: str) -> str | None:
    versions = existing_versions(repository / name)
    if not versions:
        return None
    model = onnx.load(str(repository / name / str(versions[-1]) / MODEL_FILENAME), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}.get("source_sha256")


def _export(
    repository: Path,
    name: str,
    trained: TrainResult,
    model: torch.nn.Module,
    spec: ExportSpec,
    int8: Int8Options | None = None,
) -> None:
    """Export the trained `model` unless the latest version already comes from the same checkpoint."""
    if _latest_export_sha(repository, name) == trained.sha256:
        _say(f"{name}: the latest exported version already comes from {trained.checkpoint}; not re-exported")
        return
    _say(f"{name}: exporting and validating against PyTorch ...")
    result = export_model(
        model,
        spec,
        repository=repository,
        name=name,
        labels=trained.label_names,
        source=trained.factory or trained.arch,
        checkpoint_sha256=trained.sha256,
        int8=int8,
    )
    _say(format_summary(result))


def _loaded(model: torch.nn.Module, trained: TrainResult) -> torch.nn.Module:
    model.load_state_dict(torch.load(trained.checkpoint, weights_only=True))
    return model


def _pytorch_predictions(model: torch.nn.Module, inputs: torch.Tensor) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(inputs).argmax(dim=1).numpy()


def _start_server(repository: Path, grpc_port: int, metrics_port: int) -> tuple[subprocess.Popen, str, str]:
    command = [
        sys.executable,
        "-m",
        "ortserve.serve",
        "--model-repository",
        str(repository),
        "--grpc-port",
        str(grpc_port),
        "--metrics-port",
        str(metrics_port),
        "--http-port",  # REST is not used here: any free port, so runs never collide on 8000
        "0",
    ]
    _say("starting the server: " + " ".join(command[1:]))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith(LISTENING_PREFIX):
        process.kill()
        raise RuntimeError(f"the server did not start (exit code {process.wait()}); see its log above")
    fields = dict(part.split("=", 1) for part in line.split()[1:])
    return process, fields["grpc"], fields["metrics"]


def _stop_server(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def _measure(
    name: str,
    run_batched: Callable[[Sequence], np.ndarray],
    run_one: Callable[[object], object],
    samples: Sequence,
    labels: np.ndarray,
    pytorch_predictions: np.ndarray,
    latency_calls: int,
    batch: int = 64,
    tolerance: float = ACCURACY_TOLERANCE,
) -> ServedAccuracy:
    predictions = []
    started = time.perf_counter()
    for start in tqdm(range(0, len(samples), batch), desc=f"{name}: held-out", unit="batch", file=sys.stderr):
        predictions.append(run_batched(samples[start : start + batch]))
    throughput = len(samples) / (time.perf_counter() - started)
    latencies = []
    for sample in tqdm(samples[:latency_calls], desc=f"{name}: latency", unit="req", file=sys.stderr):
        begin = time.perf_counter()
        run_one(sample)
        latencies.append((time.perf_counter() - begin) * 1000.0)
    served = np.concatenate(predictions)
    return ServedAccuracy(
        model=name,
        samples=len(samples),
        served=float(np.mean(served == labels)),
        pytorch=float(np.mean(pytorch_predictions == labels)),
        throughput=throughput,
        latencies_ms=np.asarray(latencies),
        tolerance=tolerance,
    )


def _stream(client: InferenceClient, model: torch.nn.Module, sequences: np.ndarray) -> StreamAgreement:
    """Every held-out sequence row by row through the server, each running prediction against PyTorch's."""
    open_sequence = functools.partial(client.sequence, STREAM_NAME)
    return stream_rows(open_sequence, model, sequences, name=STREAM_NAME, batched=False)


def _report(results: Sequence[ServedAccuracy], grpc_address: str, metrics_address: str) -> str:
    header = (
        f"{'model':<18} {'samples':>7} {'served acc':>10} {'pytorch acc':>11} {'agree':>5} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'samples/s':>9}"
    )
    rows = [header, "-" * len(header)]
    for r in results:
        p50, p99 = np.percentile(r.latencies_ms, [50, 99])
        rows.append(
            f"{r.model:<18} {r.samples:>7} {r.served:>10.2%} {r.pytorch:>11.2%} "
            f"{'yes' if r.agrees else 'NO':>5} {p50:>7.2f} {p99:>7.2f} {r.throughput:>9.0f}"
        )
    rows += [
        "",
        f"gRPC (KServe v2):  {grpc_address}   e.g. ortserve classify --url {grpc_address} "
        f"--model {RESNET_NAME} IMAGE.png",
        f"Prometheus metrics: http://{metrics_address}/metrics",
    ]
    return "\n".join(rows)


def _say(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(os.cpu_count() or 1)
    samples = 100 if args.short else None
    latency_calls = 20 if args.short else 200

    resnet = _trained(
        args.checkpoints / "digits_resnet.pt",
        lambda: train_digits_resnet(
            args.checkpoints / "digits_resnet.pt", **({"epochs": 1} if args.short else {})
        ),
        args.retrain,
    )
    lstm = _trained(
        args.checkpoints / "digits_lstm.pt",
        lambda: train_digits_sequence(
            args.checkpoints / "digits_lstm.pt", cell="lstm", **({"epochs": 3} if args.short else {})
        ),
        args.retrain,
    )
    image_size = resnet.image_size or digits.DEFAULT_IMAGE_SIZE
    resnet_model = _loaded(models.build_digits_resnet(), resnet)
    lstm_model = _loaded(models.build_sequence_classifier(**lstm.factory_kwargs), lstm)
    _export(
        args.repository,
        RESNET_NAME,
        resnet,
        resnet_model,
        ExportSpec.image(image_size, input_dtype="uint8", mean=models.IMAGENET_MEAN, std=models.IMAGENET_STD),
    )
    _export(args.repository, LSTM_NAME, lstm, lstm_model, ExportSpec.sequence(8, 8))
    stream_spec = ExportSpec.sequence(8, 8, stateful=True, state=STREAM_STATE)
    _export(args.repository, STREAM_NAME, lstm, lstm_model, stream_spec)
    images = digits.load_image_split(image_size)
    if args.precision == "int8":
        # allow_slower: the summary prints both timings; a demo on a busy laptop should not fail on them.
        int8 = Int8Options(
            calibration_data=Samples(images.x_train, images.y_train),
            validation_data=Samples(images.x_test, images.y_test),
            allow_slower=True,
        )
        spec = ExportSpec.image(
            image_size, precision="int8", mean=models.IMAGENET_MEAN, std=models.IMAGENET_STD
        )
        _export(args.repository, RESNET_INT8_NAME, resnet, resnet_model, spec, int8)

    grey, labels = digits.heldout_grey_images()
    sequences = digits.load_sequence_split()
    grey, labels = grey[:samples], labels[:samples]
    torch_images = models.normalize_uint8_images(torch.from_numpy(images.x_test[:samples]))
    resnet_torch = _pytorch_predictions(resnet_model, torch_images)
    lstm_torch = _pytorch_predictions(lstm_model, torch.from_numpy(sequences.x_test[:samples]))
    label_index = {label: index for index, label in enumerate(resnet.label_names)}

    process, grpc_address, metrics_address = _start_server(args.repository, args.grpc_port, args.metrics_port)
    try:
        with InferenceClient(grpc_address, timeout=60) as client:

            def classifier(model: str) -> Callable[[Sequence[np.ndarray]], np.ndarray]:
                def classify(batch: Sequence[np.ndarray]) -> np.ndarray:
                    ranked = client.classify(model, list(batch), 1)
                    return np.array([label_index[top[0][0]] for top in ranked])

                return classify

            def predict(batch: Sequence[np.ndarray]) -> np.ndarray:
                return np.array([row.argmax() for row in client.predict_sequences(LSTM_NAME, list(batch))])

            resnets = [(RESNET_NAME, ACCURACY_TOLERANCE)]
            if args.precision == "int8":
                resnets.append((RESNET_INT8_NAME, INT8_ACCURACY_TOLERANCE))
            results = [
                _measure(
                    name,
                    classifier(name),
                    lambda g, name=name: client.classify(name, g, 1),
                    list(grey),
                    labels,
                    resnet_torch,
                    latency_calls,
                    tolerance=tolerance,
                )
                for name, tolerance in resnets
            ]
            results.append(
                _measure(
                    LSTM_NAME,
                    predict,
                    lambda s: client.predict_sequences(LSTM_NAME, [s]),
                    list(sequences.x_test[:samples]),
                    labels,
                    lstm_torch,
                    latency_calls,
                )
            )
            streamed = _stream(client, lstm_model, sequences.x_test[:samples])
        _say("\n" + _report(results, grpc_address, metrics_address))
        _say(streamed.summary())
        if args.keep_serving:
            _say("\nThe server keeps serving; press Ctrl-C to stop it.")
            try:
                process.wait()
            except KeyboardInterrupt:
                pass
    finally:
        code = _stop_server(process)
        _say(f"server stopped (exit code {code})")
    failed = [r.model for r in results if not r.agrees]
    if failed:
        sys.stderr.write(
            f"ortserve quickstart: served accuracy differs from PyTorch's by more than allowed "
            f"({ACCURACY_TOLERANCE:.1%}, int8 {INT8_ACCURACY_TOLERANCE:.1%}) for {', '.join(failed)}\n"
        )
    if not streamed.agrees:
        sys.stderr.write(
            f"ortserve quickstart: streamed {STREAM_NAME} predictions differ from PyTorch's on the prefix\n"
        )
    return 1 if failed or not streamed.agrees else 0


if __name__ == "__main__":
    sys.exit(main())
