"""The execution-provider sweep: raw onnxruntime against ortserve on one provider, fp32 and fp16 exports of
one network, batch 1 to 128; reported apart from the CPU contest (`bench/results/<provider>/`).

    python -m bench.run --provider cuda           # a GPU machine with onnxruntime-gpu: resnet50, 1..128
    python -m bench.run --provider cpu --quick    # the same code on the CPU: resnet18, 1, 4, 16

Per round and model: raw onnxruntime in its own process, a full window at every batch size (the ceiling);
ortserve with batching off, requests of `batch` images, 1 and 2 in flight (what a client that batches
gets); ortserve with dynamic batching on (max_batch_size = the largest batch), one-image requests at each
--concurrency (what many one-image clients get). Both ortserve servers serve every model from the same
files, each model on one instance of the provider (KIND_GPU on GPU 0 for cuda). Odd rounds measure the
servers before raw onnxruntime, so drift hits both alike.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import onnxruntime as ort

from bench import contenders, loadgen, models, raw_ort, report
from bench.options import Options
from bench.raw_ort import PROVIDERS

logger = logging.getLogger("bench")

REPO_ROOT = Path(__file__).resolve().parent.parent
# A served cell's warm-up lasts at least one of its requests and its window at least this many: the load
# generator counts the requests completed inside the window (a 6.5 s batch of 128 ResNet-50 images on 2 CPU
# cores would complete none in a 3 s window).
REQUESTS_PER_WINDOW = 4


class ProviderMissingError(RuntimeError):
    """The sweep was asked for a provider this onnxruntime does not offer: nothing is measured."""


def check_provider(provider: str) -> None:
    wanted = PROVIDERS[provider]
    available = ort.get_available_providers()
    if wanted not in available:
        raise ProviderMissingError(
            f"--provider {provider} needs onnxruntime's {wanted}, and onnxruntime {ort.__version__} here "
            f"offers {', '.join(available)}: install onnxruntime-gpu (pip install '.[gpu]') on a machine "
            "with an NVIDIA GPU, or use --provider cpu"
        )


def gpu_info() -> list[str]:
    """nvidia-smi's name, driver and memory of each GPU ([] without nvidia-smi)."""
    if shutil.which("nvidia-smi") is None:
        return []
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    try:
        done = subprocess.run(query, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def raw_curve(model: models.OnnxModel, options: Options, round_index: int) -> list[dict]:
    """raw onnxruntime (its own process) on the provider: one full window per sweep batch size."""
    command = [sys.executable, "-m", "bench.raw_ort", "--onnx", str(model.path), "--model", model.spec.name]
    command += ["--input-name", model.input_name, "--image-size", str(options.image_size)]
    command += ["--threads", str(options.intra_op_threads), "--provider", str(options.provider)]
    command += ["--warmup", str(options.warmup_s), "--window", str(options.window_s), "--curve"]
    command += ["--sweep", ",".join(map(str, options.sweep_batches))]
    # Bounded: session start-up (minutes at most for CUDA) plus every window, with room for a slow machine.
    timeout = 600 + 3 * len(options.sweep_batches) * (options.warmup_s + options.window_s)
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout)
    if done.returncode != 0:
        logger.error("raw onnxruntime's output:\n%s", done.stderr[-3000:])
        lines = [line for line in done.stderr.splitlines() if line.strip()] or ["no output"]
        raise RuntimeError(f"raw onnxruntime on {model.spec.name} failed ({done.returncode}): {lines[-1]}")
    result = raw_ort.parse_output(done.stdout)
    records = []
    for point in result["curve"]:
        record = dict(point)
        record.update(
            model=model.spec.name,
            contender="raw_ort",
            mode="direct",
            concurrency=1,
            round=round_index,
            rows_per_s=point["throughput_rps"],
        )
        records.append(record)
        logger.info(
            "%s round %d raw onnxruntime batch %3d: %9.1f rows/s p50 %8.2f ms",
            model.spec.name,
            round_index,
            point["batch"],
            point["throughput_rps"],
            point["latency_ms"]["p50"],
        )
    return records


def stretched(options: Options, request_s: float) -> Options:
    """`options` with warm-up and window long enough for requests that each take about `request_s`."""
    return dataclasses.replace(
        options,
        warmup_s=max(options.warmup_s, request_s),
        window_s=max(options.window_s, REQUESTS_PER_WINDOW * request_s),
    )


def served_rows_per_s(record: dict) -> float:
    """Images per second of a closed-loop cell by Little's law, in flight x batch / mean latency: exact in
    a steady closed loop, where counting the requests that complete inside the window is off by up to one
    request per client (a quarter of the rate when a window holds four 6.5 s requests)."""
    mean_s = record["latency_ms"]["mean"] / 1000
    if not mean_s > 0:  # no request completed (NaN) or nothing measured
        return 0.0
    return record["concurrency"] * record["batch"] / mean_s


async def served_cell(
    contender: contenders.Contender,
    model: models.OnnxModel,
    options: Options,
    batch: int,
    concurrency: int,
    round_index: int,
    request_s: float,
) -> dict:
    """One window of `concurrency` requests of `batch` images in flight against one ortserve server, each
    expected to take about `request_s` (from raw onnxruntime) end to end."""
    options = stretched(options, request_s)
    array = model.spec.sample(batch, options.image_size)
    request = loadgen.build_request(loadgen.RequestSpec(model.spec.name, model.input_name, array))
    if round_index == 0:
        async with loadgen.LoadGenerator(contender.target, request, batch) as generator:
            await generator.check()
    record = await contenders.measure(contender, request, options, concurrency)
    record.update(model=model.spec.name, contender=contender.name, batch=batch, round=round_index)
    record.update(rows_per_s=served_rows_per_s(record), window_rows_per_s=record["throughput_rps"] * batch)
    logger.info(
        "%s round %d %-19s batch %3d c=%-3d %9.1f rows/s p50 %8.2f ms p99 %8.2f ms errors %d",
        model.spec.name,
        round_index,
        contender.name,
        batch,
        concurrency,
        record["rows_per_s"],
        record["latency_ms"]["p50"],
        record["latency_ms"]["p99"],
        record["errors"],
    )
    return record


async def served_records(
    servers: dict[str, contenders.Contender],
    model: models.OnnxModel,
    options: Options,
    round_index: int,
    raw: list[dict],
) -> list[dict]:
    """Every served cell of one model; `raw` (round 0's raw curve) sizes each cell's window."""
    run_s = {r["batch"]: r["latency_ms"]["p50"] / 1000 for r in raw}
    best_rows_per_s = max(r["rows_per_s"] for r in raw)
    records = []
    unbatched = servers.get("ortserve_nobatching")
    if unbatched is not None:
        for batch in options.sweep_batches:
            for concurrency in options.batch_concurrency:
                if not unbatched.failed:
                    request_s = concurrency * run_s[batch]
                    records.append(
                        await served_cell(
                            unbatched, model, options, batch, concurrency, round_index, request_s
                        )
                    )
    batched = servers.get("ortserve_batching")
    if batched is not None:
        for concurrency in options.concurrency:
            if not batched.failed:
                request_s = concurrency / best_rows_per_s
                records.append(
                    await served_cell(batched, model, options, 1, concurrency, round_index, request_s)
                )
    return records


async def run(options: Options, machine: dict) -> dict:
    """Export (cached), start both ortserve servers on the provider, measure every round; the results."""
    check_provider(str(options.provider))
    machine["gpus"] = gpu_info()
    exported = [
        models.export_onnx(models.MODELS[name], options.cache, options.image_size, options.rebuild)
        for name in options.models
    ]
    results: dict = {
        "machine": machine,
        "config": {
            "provider": options.provider,
            "models": options.models,
            "precision": {m.spec.name: m.spec.precision for m in exported},
            "batches": options.sweep_batches,
            "batch_concurrency": options.batch_concurrency,
            "concurrency": options.concurrency,
            "rounds": options.rounds,
            "warmup_s": options.warmup_s,
            "window_s": options.window_s,
            "image_size": options.image_size,
            "max_batch_size": options.batching.max_batch_size,
            "max_delay_us": options.batching.max_delay_us,
        },
        "records": [],
        "failures": [],
    }
    workdir = Path(tempfile.mkdtemp(prefix="ortserve-bench-provider-"))
    servers = contenders.build(options, exported, workdir)
    try:
        await contenders.start(servers, exported, options)
        by_name = {server.name: server for server in servers if not server.failed}
        first_raw: dict[str, list[dict]] = {}
        for round_index in range(options.rounds):
            for model in exported:
                raw_first = round_index % 2 == 0
                if raw_first:
                    raw = raw_curve(model, options, round_index)
                    first_raw.setdefault(model.spec.name, raw)
                    results["records"] += raw
                results["records"] += await served_records(
                    by_name, model, options, round_index, first_raw[model.spec.name]
                )
                if not raw_first:
                    results["records"] += raw_curve(model, options, round_index)
    except RuntimeError as exc:
        # raw onnxruntime could not run on the provider (e.g. CUDA listed but its libraries or GPU missing):
        # nothing more on this provider would mean anything.
        results["failures"].append(str(exc))
        logger.error("%s", exc)
    finally:
        results["failures"] += contenders.stop_all(servers, options.out / "logs", workdir)
    results["summary"] = report.summarize(results["records"])
    return results
