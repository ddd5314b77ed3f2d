"""Export one benchmark model with random weights through ortserve's exporter (run as a subprocess).

    python -m bench.export_models --name resnet18_uint8 --repository DIR [--image-size 224]

Uses `ortserve.export.api.export_model` (the library behind `ortserve export`), so the ONNX file is exactly
what users get: validated against PyTorch, uint8 models with the normalisation in the graph, fp16 models
(`*_fp16`) computing in float16 behind the same interface, int8 models (`*_int8`) quantized by the exporter
(calibrated on random pixels: the weights are random too, so the agreement proof is waived and only speed is
of interest; the harness measures it). Kept out of the
harness process so that torch's threads and memory never share a process with the load generator.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch


def build_network(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if arch == "lstm":
        from ortserve.export.recipes.models import build_sequence_classifier

        return build_sequence_classifier(cell="lstm", input_size=8, hidden_size=64, num_classes=10)
    import torchvision.models

    return getattr(torchvision.models, arch)(weights=None)


INT8_CALIBRATION_SAMPLES = 32


def int8_options(kind: str, export_spec):
    """Random samples to calibrate (images) and run the proof on; agreement is waived (random weights give
    near-uniform logits) and a slower int8 graph is written too: the benchmark is where speed is judged."""
    from ortserve.export.calibration import Samples
    from ortserve.export.quantize import Int8Options
    from ortserve.export.validate import random_input

    rng = np.random.default_rng(0)
    # 40 samples: 32 calibrate, a fifth (8) is held out for the proof.
    samples = Samples(random_input(rng, (40, *export_spec.example_shape), export_spec))
    if kind == "sequence":
        return Int8Options(validation_data=samples, min_agreement=0.0, allow_slower=True)
    return Int8Options(
        calibration_data=samples,
        calibration_samples=INT8_CALIBRATION_SAMPLES,
        min_agreement=0.0,
        allow_slower=True,
    )


def main(argv: list[str] | None = None) -> int:
    from bench.models import LSTM_FEATURES, LSTM_TIME_STEPS, MODELS
    from ortserve.export.api import export_model
    from ortserve.export.spec import ExportSpec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, choices=sorted(MODELS))
    parser.add_argument("--repository", required=True)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args(argv)
    spec = MODELS[args.name]
    if spec.kind == "sequence":
        export_spec = ExportSpec.sequence(LSTM_TIME_STEPS, LSTM_FEATURES, precision=spec.precision)
    else:
        export_spec = ExportSpec.image(
            args.image_size, input_dtype=spec.input_dtype, precision=spec.precision
        )
    result = export_model(
        build_network(spec.arch),
        export_spec,
        repository=args.repository,
        name=args.name,
        source="random",
        int8=int8_options(spec.kind, export_spec) if spec.precision == "int8" else None,
    )
    sys.stdout.write(f"{result.model_path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
