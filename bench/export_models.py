"""Export one benchmark model with random weights through ortserve's exporter (run as a subprocess).

    python -m bench.export_models --name resnet18_uint8 --repository DIR [--image-size 224]

Uses `ortserve.export.api.export_model` (the library behind `ortserve export`), so the ONNX file is exactly
what users get: validated against PyTorch, uint8 models with the normalisation in the graph, fp16 models
(`*_fp16`) computing in float16 behind the same interface. Kept out of the
harness process so that torch's threads and memory never share a process with the load generator.
"""

from __future__ import annotations

import argparse
import sys

import torch


def build_network(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if arch == "lstm":
        from ortserve.export.recipes.models import build_sequence_classifier

        return build_sequence_classifier(cell="lstm", input_size=8, hidden_size=64, num_classes=10)
    import torchvision.models

    return getattr(torchvision.models, arch)(weights=None)


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
        build_network(spec.arch), export_spec, repository=args.repository, name=args.name, source="random"
    )
    sys.stdout.write(f"{result.model_path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
