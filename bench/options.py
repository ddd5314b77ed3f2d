"""What one benchmark run is asked to do: its command line and the Options every part of the harness reads."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from bench import mlserver_env, models

BENCH_DIR = Path(__file__).resolve().parent
GRPC_CONTENDERS = (
    "ortserve_batching",
    "ortserve_nobatching",
    "mlserver_batching",
    "mlserver_nobatching",
    "bare",
)
FULL_MODELS = (
    "resnet18_uint8",
    "resnet18_float32",
    "resnet18_uint8_int8",
    "resnet50_uint8",
    "resnet50_float32",
    "resnet50_uint8_int8",
    "lstm",
    "lstm_int8",
)
QUICK_MODELS = ("resnet18_uint8", "lstm")
# --provider: the execution-provider sweep (raw onnxruntime against ortserve, fp32 and fp16 exports).
PROVIDER_MODELS = ("resnet50_uint8", "resnet50_uint8_fp16")
PROVIDER_QUICK_MODELS = ("resnet18_uint8", "resnet18_uint8_fp16")
PROVIDER_CONTENDERS = ("ortserve_batching", "ortserve_nobatching")


@dataclass
class Options:
    """Everything one run depends on (recorded in results.json)."""

    quick: bool
    models: list[str]
    concurrency: list[int]
    rounds: int
    warmup_s: float
    window_s: float
    out: Path
    image_size: int
    intra_op_threads: int
    ortserve_intra_op_threads: int | None
    with_mlserver: bool
    mlserver_parallel_workers: int
    open_loop_fraction: float
    streams_per_channel: int
    max_requests: int
    sweep_batches: list[int]
    sweep_window_s: float
    batching: models.BatchingSettings
    cache: Path
    contenders: list[str]
    server_start_timeout_s: float
    rebuild: bool
    provider: str | None = None
    """None: the contest on the CPU; cpu or cuda: the execution-provider sweep on that provider."""
    batch_concurrency: list[int] = field(default_factory=lambda: [1, 2])
    """Provider sweep: requests of each sweep batch size kept in flight against ortserve (batching off)."""


def _csv(kind):
    return lambda text: [kind(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None, description: str) -> Options:
    """The run's Options from the command line; defaults differ for --quick and the full run."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="resnet18_uint8 + lstm, 1 and 8 in flight, short"
    )
    parser.add_argument("--models", type=_csv(str), help=f"comma list of {', '.join(models.MODELS)}")
    parser.add_argument("--concurrency", type=_csv(int), help="requests in flight, e.g. 1,8,32")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per cell (full 3, quick 1)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per cell (full 2, quick 0.5)")
    parser.add_argument("--window", type=float, help="measured seconds per cell (full 10, quick 2)")
    parser.add_argument("--out", type=Path, help="output folder (bench/results, quick: bench/results/quick)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument(
        "--intra-op-threads",
        type=int,
        default=os.cpu_count() or 1,
        help="raw onnxruntime and MLServer (default: all cores)",
    )
    parser.add_argument(
        "--ortserve-intra-op-threads",
        type=int,
        help="ortserve's intra_op_thread_count (default: unset, i.e. ortserve's default: onnxruntime's, "
        "and 1 for a model whose run takes under 0.5 ms)",
    )
    parser.add_argument(
        "--with-mlserver",
        action="store_true",
        help="include MLServer, creating bench/.venv-mlserver if missing (default: only if it exists)",
    )
    parser.add_argument(
        "--without-mlserver", action="store_true", help="leave MLServer out even if installed"
    )
    parser.add_argument("--mlserver-parallel-workers", type=int, default=1, help="MLServer's default is 1")
    parser.add_argument(
        "--open-loop-fraction",
        type=float,
        help="also run open loop at this fraction of ortserve's closed-loop peak (full 0.5, quick 0)",
    )
    parser.add_argument(
        "--streams-per-channel", type=int, default=8, help="in-flight requests per gRPC channel"
    )
    parser.add_argument("--max-requests", type=int, default=200_000, help="cap on requests per window")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-delay-us", type=int, default=500, help="batcher queue delay, both servers")
    parser.add_argument("--contenders", type=_csv(str), help=f"subset of {', '.join(GRPC_CONTENDERS)}")
    parser.add_argument("--cache", type=Path, default=BENCH_DIR / ".cache", help="exported ONNX files")
    parser.add_argument("--rebuild", action="store_true", help="export the models again")
    parser.add_argument(
        "--provider",
        choices=("cpu", "cuda"),
        help="instead of the contest: raw onnxruntime against ortserve on this execution provider,\n"
        "resnet50 fp32 and fp16 exports, batch 1 to 128 (quick: resnet18, 1,4,16) -> results/<provider>",
    )
    parser.add_argument(
        "--batch-concurrency",
        type=_csv(int),
        help="--provider: batched requests in flight against ortserve, batching off (default 1,2)",
    )
    args = parser.parse_args(argv)
    if args.provider:
        return _provider_options(args, parser)

    quick = args.quick
    chosen_models = args.models or list(QUICK_MODELS if quick else FULL_MODELS)
    unknown = [m for m in chosen_models if m not in models.MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(models.MODELS)}")
    chosen_contenders = args.contenders or list(GRPC_CONTENDERS)
    if any(c not in GRPC_CONTENDERS for c in chosen_contenders):
        parser.error(f"--contenders takes {', '.join(GRPC_CONTENDERS)}")
    with_mlserver = not args.without_mlserver and (args.with_mlserver or mlserver_env.exists())
    if not with_mlserver:
        chosen_contenders = [c for c in chosen_contenders if not c.startswith("mlserver")]
    batching = models.BatchingSettings(max_batch_size=args.max_batch_size, max_delay_us=args.max_delay_us)
    options = Options(
        quick=quick,
        models=chosen_models,
        concurrency=args.concurrency or ([1, 8] if quick else [1, 8, 32]),
        rounds=args.rounds or (1 if quick else 3),
        warmup_s=args.warmup if args.warmup is not None else (0.5 if quick else 2.0),
        window_s=args.window or (2.0 if quick else 10.0),
        out=args.out or (BENCH_DIR / "results" / ("quick" if quick else "")),
        image_size=args.image_size,
        intra_op_threads=args.intra_op_threads,
        ortserve_intra_op_threads=args.ortserve_intra_op_threads,
        with_mlserver=with_mlserver,
        mlserver_parallel_workers=args.mlserver_parallel_workers,
        open_loop_fraction=args.open_loop_fraction
        if args.open_loop_fraction is not None
        else (0 if quick else 0.5),
        streams_per_channel=args.streams_per_channel,
        max_requests=args.max_requests,
        sweep_batches=[1, 4, 16] if quick else [1, 2, 4, 8, 16, 32],
        sweep_window_s=0.3 if quick else 1.5,
        batching=batching,
        cache=args.cache,
        contenders=chosen_contenders,
        server_start_timeout_s=120.0,
        rebuild=args.rebuild,
    )
    if min(options.concurrency) < 1 or options.rounds < 1 or options.window_s <= 0:
        parser.error("concurrency, rounds and window must be positive")
    return options


def _provider_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Options:
    """Options of the execution-provider sweep: ortserve (batching on and off) and raw onnxruntime only."""
    quick = args.quick
    chosen_models = args.models or list(PROVIDER_QUICK_MODELS if quick else PROVIDER_MODELS)
    unknown = [m for m in chosen_models if m not in models.MODELS or models.MODELS[m].kind != "image"]
    if unknown:
        images = [name for name, spec in models.MODELS.items() if spec.kind == "image"]
        parser.error(f"--provider sweeps image models; unknown or not an image model: {unknown} ({images})")
    if args.contenders and any(c not in PROVIDER_CONTENDERS for c in args.contenders):
        parser.error(f"--provider measures only {', '.join(PROVIDER_CONTENDERS)}")
    sweep = [1, 4, 16] if quick else [1, 2, 4, 8, 16, 32, 64, 128]
    batching = models.BatchingSettings(
        max_batch_size=max(sweep),
        max_delay_us=args.max_delay_us,
        preferred_batch_sizes=tuple(size for size in sweep if size >= 4),
    )
    options = Options(
        quick=quick,
        models=chosen_models,
        concurrency=args.concurrency or ([1, 8] if quick else [1, 8, 32, 128]),
        rounds=args.rounds or 1,
        warmup_s=args.warmup if args.warmup is not None else (0.3 if quick else 1.0),
        window_s=args.window or (1.0 if quick else 3.0),
        out=args.out or (BENCH_DIR / "results" / (f"quick-{args.provider}" if quick else args.provider)),
        image_size=args.image_size,
        intra_op_threads=args.intra_op_threads,
        ortserve_intra_op_threads=args.ortserve_intra_op_threads,
        with_mlserver=False,
        mlserver_parallel_workers=args.mlserver_parallel_workers,
        open_loop_fraction=0.0,
        streams_per_channel=args.streams_per_channel,
        max_requests=args.max_requests,
        sweep_batches=sweep,
        sweep_window_s=0.0,
        batching=batching,
        cache=args.cache,
        contenders=list(args.contenders or PROVIDER_CONTENDERS),
        server_start_timeout_s=300.0,  # the CUDA provider's start-up and first runs take a while
        rebuild=args.rebuild,
        provider=args.provider,
        batch_concurrency=args.batch_concurrency or ([1] if quick else [1, 2]),
    )
    if min(options.concurrency + options.batch_concurrency) < 1 or options.window_s <= 0:
        parser.error("concurrency and window must be positive")
    return options
