"""One benchmark cell, repeated, for finding where a served request's time goes: ortserve (batching on)
serving one model, a closed loop at N in flight, raw onnxruntime's batch beside it in interleaved rounds.
Each window prints throughput, the instance's busy fraction, the mean batch and the server's CPU per request;
`--py-spy FILE` also records the server with py-spy (native frames) during the last window.

`--variant` compares configurations of the same model in one run: each variant gets its own server (started
once, idle between its windows) and every round measures raw onnxruntime and then each variant, in an order
that rotates, so that the machine's drift falls on all of them alike. The summary gives each variant's median
ratio to raw.

    python -m bench.cell --model resnet18_uint8 --concurrency 8 --rounds 3 --window 5
    python -m bench.cell --rounds 8 --variant default --variant instances=2,intra_op_thread_count=1
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from bench import contenders, loadgen, models, procs, raw_ort, server_stats
from bench.options import BENCH_DIR
from ortserve.protos import model_config_pb2

logger = logging.getLogger("bench")


@dataclass
class Variant:
    """One configuration of the model: `instances` CPU instances plus config parameters."""

    name: str
    instances: int
    parameters: dict[str, str]


def _key_values(items: list[str], flag: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{flag}: expected KEY=VALUE, got {item!r}")
        pairs.append((key, value))
    return pairs


def parse_variant(text: str, common: dict[str, str]) -> Variant:
    """'default' or 'KEY=VALUE,...' (the key `instances` sets the instance count, the rest are parameters)."""
    parameters, instances = dict(common), 1
    if text != "default":
        for key, value in _key_values(text.split(","), f"--variant {text!r}"):
            if key == "instances":
                instances = int(value)
            else:
                parameters[key] = value
    return Variant(text, instances, parameters)


def _write_repository(root: Path, model: models.OnnxModel, variant: Variant) -> Path:
    repository = models.write_ortserve_repository(root, [model], models.BatchingSettings(), True, None)
    config_path = repository / model.spec.name / "config.pbtxt"
    config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
    config.instance_group[0].count = variant.instances
    for key, value in variant.parameters.items():
        config.parameters[key].string_value = value
    config_path.write_text(text_format.MessageToString(config))
    return repository


def _raw(model: models.OnnxModel, batch: int, window_s: float, image_size: int) -> dict:
    command = raw_ort.command(model, image_size, os.cpu_count(), 1, window_s) + ["--best-batch", str(batch)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=contenders.REPO_ROOT)
    results = raw_ort.parse_output(done.stdout)
    return {"b1": results["batch1"], "best": results["best"]}


async def _window(
    target: str, pid: int, model: str, request: bytes, concurrency: int, window_s: float
) -> dict:
    probe = server_stats.Probes(procs.TreeMonitor(pid), server_stats.BatchStatsProbe(target, model))
    channels = loadgen.channels_for(concurrency, 1)
    async with loadgen.LoadGenerator(target, request, 1, channels=channels) as generator:
        result = await generator.closed_loop(concurrency, 1.0, window_s, probe=probe)
    return result.to_dict()


def _py_spy(pid: int, window_s: float, out: Path) -> subprocess.Popen:
    command = ["py-spy", "record", "--native", "--format", "raw", "-r", "250", "-d", str(int(window_s) + 1)]
    return subprocess.Popen(command + ["-p", str(pid), "-o", str(out)], stdout=subprocess.DEVNULL)


def spread(ratios: list[float]) -> str:
    """The per-round ratios' median, min and max, as the summaries print them."""
    return (
        f"median {statistics.median(ratios):.3f}, min {min(ratios):.3f}, max {max(ratios):.3f} "
        f"over {len(ratios)} rounds"
    )


def _describe(cell: dict) -> str:
    rps, s = cell["throughput_rps"], cell["server"]
    nan = float("nan")
    return (
        f"{rps:6.1f} req/s p50 {cell['latency_ms']['p50']:6.2f} ms busy {s.get('busy_fraction', nan):.3f} "
        f"mean batch {s.get('mean_batch', nan):.2f} run {s.get('run_ms', nan):.2f} ms in server "
        f"{s.get('request_ms', nan):.2f} ms queued {s.get('queue_ms', nan):.2f} ms "
        f"server {1000 * s['cpu_s'] / max(cell['completed'], 1):.2f} ms CPU/req"
    )


def _describe_raw(raw: dict) -> str:
    best = raw["best"]
    cpu = 1000 * best["cpu_s"] / max(best["runs"] * best["batch"], 1)
    return (
        f"raw b{best['batch']} {best['throughput_rps']:6.1f} rows/s {cpu:.2f} ms CPU/row "
        f"(b1 p50 {raw['b1']['latency_ms']['p50']:.2f} ms)"
    )


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
        help="config parameter for every variant, e.g. dynamic_block_base=0 (repeatable)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="SPEC",
        help="a configuration to compare: 'default' or KEY=VALUE,... with instances=N for the instance "
        "count (repeatable; none: one 'default')",
    )
    parser.add_argument(
        "--py-spy", type=Path, help="record the first server during the last window to this file"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    common = dict(_key_values(args.parameter, "--parameter"))
    variants = [parse_variant(text, common) for text in args.variant or ["default"]]
    model = models.export_onnx(models.MODELS[args.model], BENCH_DIR / ".cache", args.image_size)
    workdir = Path(tempfile.mkdtemp(prefix="ortserve-cell-"))
    servers = []
    for index, variant in enumerate(variants):
        repository = _write_repository(workdir / f"variant{index}", model, variant)
        command = contenders.ortserve_command(repository)
        log_path = workdir / f"server{index}.log"
        servers.append(procs.ServerProcess("ortserve", command, log_path, contenders.ORTSERVE_READY))
    ratios: dict[str, list[float]] = {variant.name: [] for variant in variants}
    try:
        targets = []
        for server in servers:
            server.launch()
            targets.append(server.wait_listening(300))
            asyncio.run(loadgen.wait_model_ready(targets[-1], args.model, 300))
        sample = model.spec.sample(1, args.image_size)
        request = loadgen.build_request(loadgen.RequestSpec(args.model, model.input_name, sample))
        for round_index in range(args.rounds):
            raw = _raw(model, args.raw_batch, args.window, args.image_size) if args.raw_batch else None
            if raw is not None:
                logger.info("round %d: %s", round_index, _describe_raw(raw))
            order = [(round_index + k) % len(variants) for k in range(len(variants))]
            for index in order:
                spy = None
                if args.py_spy and index == 0 and round_index == args.rounds - 1:
                    spy = _py_spy(servers[index].pid, args.window, args.py_spy)
                cell = asyncio.run(
                    _window(
                        targets[index], servers[index].pid, args.model, request, args.concurrency, args.window
                    )
                )
                if spy is not None:
                    spy.wait()
                line = f"round {round_index} [{variants[index].name}]: {_describe(cell)}"
                if raw is not None:
                    ratio = cell["throughput_rps"] / raw["best"]["throughput_rps"]
                    ratios[variants[index].name].append(ratio)
                    line += f" -> ratio {ratio:.3f}"
                logger.info("%s", line)
    finally:
        for server in servers:
            server.stop()
    for name, values in ratios.items():
        if values:
            logger.info("[%s] ratio to raw: %s", name, spread(values))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
