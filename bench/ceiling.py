"""The ceiling of any gRPC server on this machine: raw onnxruntime's batch rate alone, and again while the
bare gRPC server (bench/bare_server.py: it parses each request and answers a canned response, no inference)
answers the same requests, from a load generator in this process, at a fraction of raw's rate.

When the load generator runs on the server's cores (as in every benchmark here), the transport alone takes
cores from onnxruntime: a server that answered at raw's rate would need onnxruntime to keep raw's rate while
gRPC's receiving, sending and the clients run beside it. So the second rate, over the first, bounds what a
served model can reach against raw onnxruntime in-process on this machine, before any serving work
(decoding, batching, answering). Rounds interleave the two measurements; each round's load rate is
`--rate-fraction` times raw's rate alone in that round, sent `--raw-batch` requests at a time (what a busy
batching server answers together).

    python -m bench.ceiling --model resnet18_uint8 --rounds 6 --window 6 --raw-batch 4
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from bench import cell, contenders, loadgen, models, procs, raw_ort
from bench.options import BENCH_DIR

logger = logging.getLogger("bench")


def _raw_process(model: models.OnnxModel, batch: int, window_s: float, image_size: int) -> subprocess.Popen:
    """Raw onnxruntime measuring this one batch size only (its --curve at one size: no batch-1 window)."""
    command = raw_ort.command(model, image_size, os.cpu_count(), 1, window_s)
    command += ["--curve", "--sweep", str(batch)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=contenders.REPO_ROOT)


def _raw_rate(process: subprocess.Popen) -> float:
    out, _ = process.communicate()
    if process.returncode:
        raise RuntimeError(f"raw onnxruntime exited with {process.returncode}")
    return raw_ort.parse_output(out)["curve"][0]["throughput_rps"]


async def _paced_load(target: str, request: bytes, group: int, rate: float, stop: asyncio.Event) -> int:
    """`group` requests at once, groups `group / rate` seconds apart, until `stop`; the requests answered."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(loadgen.MODEL_INFER)
        answered, period, due = 0, group / rate, time.monotonic()
        while not stop.is_set():
            await asyncio.gather(*(call(request) for _ in range(group)))
            answered += group
            due += period
            await asyncio.sleep(max(0.0, due - time.monotonic()))
    return answered


async def _raw_under_load(
    model: models.OnnxModel, args: argparse.Namespace, target: str, request: bytes, rate: float
) -> tuple[float, float]:
    """(raw's rate while the bare server answers `rate` requests/s, the rate it answered)."""
    stop = asyncio.Event()
    load = asyncio.create_task(_paced_load(target, request, args.raw_batch, rate, stop))
    started = time.monotonic()
    process = _raw_process(model, args.raw_batch, args.window, args.image_size)
    while process.poll() is None:
        await asyncio.sleep(0.05)
    stop.set()
    answered = await load
    return _raw_rate(process), answered / (time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18_uint8", choices=sorted(models.MODELS))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--window", type=float, default=6.0)
    parser.add_argument(
        "--raw-batch", type=int, default=4, help="raw onnxruntime's batch (requests sent at once)"
    )
    parser.add_argument("--rate-fraction", type=float, default=0.95, help="the load's rate over raw's alone")
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.rounds < 1 or args.raw_batch < 1 or not 0 < args.rate_fraction <= 2:
        parser.error("--rounds and --raw-batch must be >= 1, --rate-fraction in (0, 2]")

    model = models.export_onnx(models.MODELS[args.model], BENCH_DIR / ".cache", args.image_size)
    workdir = Path(tempfile.mkdtemp(prefix="ortserve-ceiling-"))
    table = models.write_bare_models(workdir / "models.json", [model])
    command = [sys.executable, "-m", "bench.bare_server", "--models", str(table)]
    server = procs.ServerProcess("bare", command, workdir / "bare.log", r"BARE_LISTENING grpc=(\S+)")
    sample = model.spec.sample(1, args.image_size)
    request = loadgen.build_request(loadgen.RequestSpec(args.model, model.input_name, sample))
    ratios = []
    try:
        server.launch()
        target = server.wait_listening(120)
        for round_index in range(args.rounds):
            alone = _raw_rate(_raw_process(model, args.raw_batch, args.window, args.image_size))
            loaded, answered = asyncio.run(
                _raw_under_load(model, args, target, request, args.rate_fraction * alone)
            )
            ratios.append(loaded / alone)
            logger.info(
                "round %d: raw b%d alone %.1f rows/s; while the bare server answers %.1f req/s %.1f rows/s "
                "-> %.3f",
                round_index,
                args.raw_batch,
                alone,
                answered,
                loaded,
                ratios[-1],
            )
    finally:
        server.stop()
    logger.info("raw onnxruntime beside the bare gRPC transport, over raw alone: %s", cell.spread(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
