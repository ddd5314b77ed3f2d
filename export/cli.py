"""`ortserve export`: a checkpoint becomes a validated ONNX model version in a Triton-layout repository."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ortserve.export import quantize
from ortserve.export.api import ExportResult, export_model, format_summary
from ortserve.export.architectures import (
    ARCHITECTURES,
    build_architecture,
    build_from_factory,
    infer_num_classes,
    parse_factory_kwargs,
)
from ortserve.export.checkpoint import load_checkpoint, load_weights
from ortserve.export.errors import ExportError, SpecError
from ortserve.export.repository import read_labels
from ortserve.export.spec import (
    DEFAULT_MAX_SEQUENCE_LENGTH,
    EXPORTERS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRECISIONS,
    STATE_MODES,
    ExportSpec,
    parse_dynamic_axes,
)

logger = logging.getLogger("ortserve.export")

EPILOG = """examples:
  ortserve export --arch resnet50 --checkpoint ck.pt --labels labels.txt --repository models --name resnet50
  ortserve export --factory mypkg.models:make_gru --factory-kwargs '{"hidden": 64}' --checkpoint gru.pt \\
      --input-shape 50,13 --repository models --name keyword_gru
  ortserve export --checkpoint whole_model.pt --trust-pickle --kind image --repository models --name net
  ortserve export --arch resnet18 --checkpoint ck.pt --precision int8 --calibration-data images/ \
      --repository models --name resnet18_int8
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ortserve export",
        description="Export a PyTorch checkpoint to ONNX, validate it against PyTorch at several batch sizes "
        "(and time lengths), and add it as a new version to a Triton-layout model repository.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_argument_group("model source")
    which = source.add_mutually_exclusive_group()
    which.add_argument("--arch", choices=ARCHITECTURES, help="torchvision architecture the checkpoint is for")
    which.add_argument(
        "--factory", metavar="MODULE:CALLABLE", help="importable callable that builds the model"
    )
    source.add_argument(
        "--factory-kwargs", metavar="JSON", help="keyword arguments for --factory, as a JSON object"
    )
    source.add_argument(
        "--checkpoint", type=Path, help="state_dict file (DDP/Lightning/training dicts unwrapped)"
    )
    source.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow arbitrary pickled objects (e.g. torch.save(model)); runs code from the file when loading",
    )
    source.add_argument("--num-classes", type=int, help="classes for --arch (default: rows of fc.weight)")

    shape = parser.add_argument_group("interface")
    shape.add_argument(
        "--kind",
        choices=("image", "sequence"),
        help="image [B,C,H,W] or sequence [B,T,F] (default: image for --arch, sequence for --factory)",
    )
    shape.add_argument("--image-size", type=int, default=224, help="image height and width (default 224)")
    shape.add_argument(
        "--input-shape",
        metavar="DIMS",
        help="example input shape without batch: T,F for sequences (C,H,W for images)",
    )
    shape.add_argument(
        "--input-dtype",
        choices=("uint8", "float32"),
        help="uint8: pixels in [0,255] normalised inside the graph (image default); float32: ready input",
    )
    shape.add_argument("--mean", metavar="M,M,M", help="per-channel mean after /255 (default ImageNet)")
    shape.add_argument("--std", metavar="S,S,S", help="per-channel std after /255 (default ImageNet)")
    shape.add_argument("--input-name", default="input", help="input tensor name (default input)")
    shape.add_argument("--output-name", default="output", help="output tensor name (default output)")
    shape.add_argument(
        "--dynamic-axes",
        metavar="JSON",
        help='dynamic axes per tensor, e.g. \'{"input": {"0": "batch"}}\' (batch is always dynamic)',
    )
    shape.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    shape.add_argument(
        "--max-sequence-length",
        type=int,
        default=DEFAULT_MAX_SEQUENCE_LENGTH,
        help="most time steps the server accepts, 0: no bound (sequence models; default "
        f"{DEFAULT_MAX_SEQUENCE_LENGTH})",
    )

    check = parser.add_argument_group("export and validation")
    check.add_argument(
        "--exporter",
        choices=EXPORTERS,
        default="auto",
        help="auto: dynamo, falling back to torchscript if it fails or mis-validates (default)",
    )
    check.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp16: float16 weights and arithmetic (for GPUs); int8: quantized for CPUs, proven against "
        "PyTorch (see int8 below); inputs and outputs unchanged (default fp32)",
    )
    check.add_argument(
        "--stateful",
        action="store_true",
        help="export a streaming step model: each LSTM/GRU's state is carried between requests, proven by "
        "streaming sequences in chunks against PyTorch on every prefix (sequence models)",
    )
    check.add_argument(
        "--state",
        choices=STATE_MODES,
        default="server",
        help="with --stateful: server (config sequence_batching keeps each sequence's state; default) or "
        "client (state inputs/outputs visible, the client carries the state)",
    )
    check.add_argument("--atol", type=float, help="absolute tolerance (default 1e-4; fp16 0.1)")
    check.add_argument("--rtol", type=float, help="relative tolerance (default 1e-3; fp16 0.01)")

    quantize.add_arguments(parser)

    out = parser.add_argument_group("repository")
    out.add_argument("--repository", type=Path, required=True, help="model repository directory")
    out.add_argument("--name", help="model name (default: the architecture or factory name)")
    out.add_argument("--labels", type=Path, help="class labels, one per line (count must equal the classes)")
    out.add_argument(
        "--max-batch-size", type=int, default=32, help="config.pbtxt max_batch_size (default 32)"
    )

    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (exporter output)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[export] %(message)s"))
    previous_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    try:
        result = run(args, parser)
    except ExportError as exc:
        sys.stderr.write(f"ortserve export: error: {exc}\n")
        return 1
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
    sys.stdout.write(format_summary(result) + "\n")
    return 0


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ExportResult:
    if not (args.arch or args.factory or args.checkpoint):
        raise SpecError("say what to export: --arch with --checkpoint, --factory, or a pickled --checkpoint")
    if args.arch and not args.checkpoint:
        raise SpecError(f"--arch {args.arch} needs --checkpoint (no pretrained weights are downloaded)")
    spec = spec_from_args(args)
    int8 = quantize.options_from_args(args)
    labels = read_labels(args.labels) if args.labels else None

    checkpoint = None
    if args.checkpoint:
        logger.info("loading checkpoint %s", args.checkpoint)
        checkpoint = load_checkpoint(args.checkpoint, trust_pickle=args.trust_pickle)
    weights = None
    if checkpoint is not None:
        weights = checkpoint.state_dict if checkpoint.module is None else dict(checkpoint.module.state_dict())

    if args.arch:
        num_classes = args.num_classes or infer_num_classes(weights) or 1000
        how = (
            "from --num-classes"
            if args.num_classes
            else "from fc.weight"
            if infer_num_classes(weights)
            else "default"
        )
        logger.info("building %s with %d classes (%s)", args.arch, num_classes, how)
        model = build_architecture(args.arch, num_classes)
        load_weights(model, weights, args.arch)
        source = args.arch
    elif args.factory:
        model = build_from_factory(args.factory, parse_factory_kwargs(args.factory_kwargs))
        if weights is not None:
            load_weights(model, weights, args.factory)
        source = f"factory:{args.factory}"
    else:
        if checkpoint.module is None:
            raise SpecError(
                f"{args.checkpoint} holds a state_dict, not a module: say which network it is for with "
                "--arch or --factory"
            )
        model = checkpoint.module
        source = f"pickle:{type(model).__module__}.{type(model).__qualname__}"

    name = args.name or default_name(args)
    return export_model(
        model,
        spec,
        repository=args.repository,
        name=name,
        labels=labels,
        source=source,
        checkpoint_sha256=checkpoint.sha256 if checkpoint else None,
        max_batch_size=args.max_batch_size,
        int8=int8,
    )


def resolve_kind(args: argparse.Namespace) -> str:
    if args.kind:
        return args.kind
    if args.arch:
        return "image"
    if args.factory:
        return "sequence"
    # A pickled module: the shape given says which it is.
    return "sequence" if args.input_shape and len(_ints(args.input_shape, "--input-shape")) == 2 else "image"


def spec_from_args(args: argparse.Namespace) -> ExportSpec:
    kind = resolve_kind(args)
    options = dict(
        input_name=args.input_name,
        output_name=args.output_name,
        opset=args.opset,
        atol=args.atol,
        rtol=args.rtol,
        precision=args.precision,
        exporter=args.exporter,
        dynamic_axes=parse_dynamic_axes(args.dynamic_axes) if args.dynamic_axes else None,
        stateful=args.stateful,
        state=args.state,
        max_sequence_length=args.max_sequence_length or None,
    )
    if kind == "sequence":
        if not args.input_shape:
            raise SpecError(
                "sequence models need --input-shape T,F (time steps, features) for the example input"
            )
        dims = _ints(args.input_shape, "--input-shape")
        if len(dims) != 2:
            raise SpecError(f"--input-shape for a sequence model is T,F; got {args.input_shape!r}")
        if args.input_dtype == "uint8":
            raise SpecError("--input-dtype uint8 (in-graph image normalisation) only applies to --kind image")
        return ExportSpec.sequence(dims[0], dims[1], **options)
    channels, size = 3, (args.image_size, args.image_size)
    if args.input_shape:
        dims = _ints(args.input_shape, "--input-shape")
        if len(dims) != 3:
            raise SpecError(f"--input-shape for an image model is C,H,W; got {args.input_shape!r}")
        channels, size = dims[0], (dims[1], dims[2])
    mean = _floats(args.mean, "--mean") if args.mean else IMAGENET_MEAN
    std = _floats(args.std, "--std") if args.std else IMAGENET_STD
    spec = ExportSpec.image(
        size[0], channels=channels, input_dtype=args.input_dtype or "uint8", mean=mean, std=std, **options
    )
    return spec.replace(example_shape=(channels, *size)) if size[0] != size[1] else spec


def default_name(args: argparse.Namespace) -> str:
    if args.arch:
        return args.arch
    if args.factory:
        return args.factory.rpartition(":")[2].rpartition(".")[2]
    return args.checkpoint.stem


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(part) for part in text.replace("x", ",").split(",") if part.strip()]
    except ValueError as exc:
        raise SpecError(f"{flag} must be comma-separated integers, got {text!r}") from exc


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.replace(" ", ",").split(",") if part.strip())
    except ValueError as exc:
        raise SpecError(f"{flag} must be comma-separated numbers, got {text!r}") from exc
