"""One benchmark cell, repeated, for finding where a served request's time goes: ortserve (batching on)
serving one model, a closed loop at N in flight, raw onnxruntime's batch beside it in interleaved rounds.
Each window prints throughput, the instance's busy fraction, the mean batch and the server's CPU per request;
`--py-spy FILE` also records the server with py-spy (native frames) during the last window.

    python -m bench.cell --model resnet18_uint8 --concurrency 8 --rounds 3 --window 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import tempfile
from pathlib import Path

from google.protobuf import text_format

from bench import contenders, loadgen, models, procs, raw_ort, server_stats
from bench.options import BENCH_DIR
from ortserve.protos import model_config_pb2

logger = logging.getLogger("bench")


def _raw(model: models.OnnxModel, batch: int, window_s: float, image_size: int) -> dict:
    command = raw_ort.command(model, image_size, os.cpu_count(), 1, window_s) + ["--best-batch", str(batch)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=contenders.REPO_ROOT)
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return {"b1": results["batch1"], "best": results["best"]}


async def _window(
    target: str, pid: int, model: str, request: bytes, concurrency: int, window_s: float
) -> dict:
    probe = server_stats.Probes(procs.TreeMonitor(pid), server_stats.BatchStatsProbe(target, model))
    channels = loadgen.channels_for(concurrency, 1)
    async with loadgen.LoadGenerator(target, request, 1, channels=channels) as generator:
        result = await generator.closed_loop(concurrency, 1.0, window_s, probe=probe)
    return result.to_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18_uint8", choices=sorted(models.MODELS))
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--raw-batch", type=int, default=8, help="raw onnxruntime's batch (0: skip raw)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config parameter, e.g. allow_spinning=1 or dynamic_block_base=0 (repeatable)",
    )
    parser.add_argument(
        "--instances", type=int, default=1, help="CPU instances of the model (instance_group count)"
    )
    parser.add_argument("--py-spy", type=Path, help="record the server during the last window to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    model = models.export_onnx(models.MODELS[args.model], BENCH_DIR / ".cache", args.image_size)
    workdir = Path(tempfile.mkdtemp(prefix="ortserve-cell-"))
    repository = models.write_ortserve_repository(workdir, [model], models.BatchingSettings(), True, None)
    config = repository / args.model / "config.pbtxt"
    if args.instances != 1:
        parsed = text_format.Parse(config.read_text(), model_config_pb2.ModelConfig())
        parsed.instance_group[0].count = args.instances
        config.write_text(text_format.MessageToString(parsed))
    for key, _, value in (item.partition("=") for item in args.parameter):
        parameter = f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}\n'
        config.write_text(config.read_text() + parameter)
    server = procs.ServerProcess(
        "ortserve", contenders.ortserve_command(repository), workdir / "server.log", contenders.ORTSERVE_READY
    )
    server.launch()
    try:
        target = server.wait_listening(300)
        asyncio.run(loadgen.wait_model_ready(target, args.model, 300))
        sample = model.spec.sample(1, args.image_size)
        request = loadgen.build_request(loadgen.RequestSpec(args.model, model.input_name, sample))
        for index in range(args.rounds):
            raw = _raw(model, args.raw_batch, args.window, args.image_size) if args.raw_batch else None
            spy = None
            if args.py_spy and index == args.rounds - 1:
                spy = subprocess.Popen(
                    [
                        "py-spy",
                        "record",
                        "--native",
                        "--format",
                        "raw",
                        "-r",
                        "250",
                        "-d",
                        str(int(args.window) + 1),
                        "-p",
                        str(server.pid),
                        "-o",
                        str(args.py_spy),
                    ],
                    stdout=subprocess.DEVNULL,
                )
            cell = asyncio.run(
                _window(target, server.pid, args.model, request, args.concurrency, args.window)
            )
            if spy is not None:
                spy.wait()
            rps, s = cell["throughput_rps"], cell["server"]
            busy, batch = s.get("busy_fraction", float("nan")), s.get("mean_batch", float("nan"))
            line = (
                f"round {index}: {rps:6.1f} req/s p50 {cell['latency_ms']['p50']:6.2f} ms busy "
                f"{busy:.3f} mean batch {batch:.2f} run {s.get('run_ms', float('nan')):.2f} ms in server "
                f"{s.get('request_ms', float('nan')):.2f} ms queued {s.get('queue_ms', float('nan')):.2f} ms "
                f"server {1000 * s['cpu_s'] / max(cell['completed'], 1):.2f} ms CPU/req"
            )
            if raw is not None:
                best = raw["best"]
                raw_cpu = 1000 * best["cpu_s"] / max(best["runs"] * best["batch"], 1)
                line += (
                    f" | raw b{best['batch']} {best['throughput_rps']:6.1f} rows/s {raw_cpu:.2f} ms CPU/row"
                    f" (b1 p50 {raw['b1']['latency_ms']['p50']:.2f} ms)"
                    f" -> ratio {rps / best['throughput_rps']:.3f}"
                )
            logger.info("%s", line)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
