"""One command, every contender: ortserve (batching on/off), MLServer (on/off), a bare gRPC server and raw
onnxruntime, on the same ONNX files, with the same load generator and the same request bytes.

    python -m bench.run                 # the full run (tens of minutes; a quiet machine)
    python -m bench.run --quick         # resnet18 uint8 + LSTM, 1 and 8 in flight, short windows (~1-2 min)
    python -m bench.run --with-mlserver # create bench/.venv-mlserver first if it is missing (PyPI, one time)
    python -m bench.run --provider cuda # instead: raw onnxruntime vs ortserve on CUDA, batch 1-128, fp32/fp16

Per model, over several rounds, each (concurrency) cell runs every contender back to back, the order rotated
each round (A B C, B C A, ...), so slow drift of the machine hits every contender alike. Writes
results.json (every raw number + machine info), results.md (tables + PASS/FAIL per target) and, when
matplotlib imports, plot_<model>.png under --out.
"""

from __future__ import annotations

import asyncio
import datetime
import importlib.metadata
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from bench import contenders, loadgen, mlserver_env, models, provider_report, provider_sweep, raw_ort, report
from bench.options import Options, parse_args

logger = logging.getLogger("bench")

REPO_ROOT = Path(__file__).resolve().parent.parent


def _sched_autogroup() -> str:
    """The kernel's sched_autogroup_enabled ("1": each session is its own scheduling group)."""
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip()
    except OSError:
        return "unknown"


def machine_info() -> dict:
    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version()}
    for package in ("ortserve", "onnxruntime", "grpcio", "protobuf", "numpy", "psutil"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": psutil.virtual_memory().total / 1e9,
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "sched_autogroup": _sched_autogroup(),
        "versions": versions,
        "git_commit": commit,
    }


def wire_sizes(options: Options, exported: dict[str, models.OnnxModel]) -> dict[str, dict]:
    """Serialized batch-1 request size per image model and dtype (both dtypes, exported or not)."""
    sizes = {}
    archs = {models.MODELS[name].arch for name in options.models if models.MODELS[name].kind == "image"}
    for arch in sorted(archs):
        for dtype in ("uint8", "float32"):
            name = f"{arch}_{dtype}"
            input_name = exported[name].input_name if name in exported else "input"
            array = models.MODELS[name].sample(1, options.image_size)
            request = loadgen.build_request(loadgen.RequestSpec(name, input_name, array))
            sizes[name] = {"tensor_bytes": array.nbytes, "request_bytes": len(request)}
    return sizes


def rotate(items: list, offset: int) -> list:
    if not items:
        return items
    offset %= len(items)
    return items[offset:] + items[:offset]


def raw_records(model: models.OnnxModel, options: Options, state: dict, round_index: int) -> list[dict]:
    """Raw onnxruntime (its own process) at batch 1 and at the best batch, swept in the first round."""
    command = raw_ort.command(
        model, options.image_size, options.intra_op_threads, options.warmup_s, options.window_s
    )
    if "best_batch" in state:
        command += ["--best-batch", str(state["best_batch"])]
    else:
        command += ["--sweep", ",".join(map(str, options.sweep_batches))]
        command += ["--sweep-window", str(options.sweep_window_s)]
    # Bounded: a sweep of 6 sizes (at least 3 runs each) plus two windows, with room for a slow machine.
    timeout = 600 + 10 * (options.warmup_s + options.window_s)
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"raw onnxruntime on {model.spec.name} failed:\n{done.stderr[-3000:]}")
    result = raw_ort.parse_output(done.stdout)
    if "best_batch" not in state:
        state["best_batch"] = result["best_batch"]
        state["sweep"] = result["sweep"]
        logger.info(
            "%s: raw onnxruntime sweep %s -> best batch %d",
            model.spec.name,
            result["sweep"],
            result["best_batch"],
        )
    records = []
    for contender, key in (("raw_ort_b1", "batch1"), ("raw_ort_best", "best")):
        record = dict(result[key])
        record.update(
            model=model.spec.name, contender=contender, mode="direct", concurrency=None, round=round_index
        )
        records.append(record)
    return records


async def _cell(
    contender: contenders.Contender,
    request: bytes,
    options: Options,
    where: dict,
    concurrency: int | None,
    rate: float | None = None,
) -> dict:
    """One measured window of one contender, tagged with `where` (model, round, position) and logged."""
    record = await contenders.measure(
        contender, request, options, concurrency, rate=rate, model=where["model"]
    )
    record.update(where, contender=contender.name)
    load = f"c={concurrency}" if rate is None else f"open {rate:.0f}/s"
    logger.info(
        "%s round %d %-12s %-20s %8.1f req/s p50 %8.2f ms p99 %8.2f ms errors %d dropped %d",
        record["model"],
        record["round"],
        load,
        contender.name,
        record["throughput_rps"],
        record["latency_ms"]["p50"],
        record["latency_ms"]["p99"],
        record["errors"],
        record["dropped"],
    )
    return record


async def _windows(
    servers: list[contenders.Contender],
    request: bytes,
    options: Options,
    where: dict,
    offset: int,
    concurrency: int | None,
    rate: float | None = None,
) -> list[dict]:
    """One window per contender still running, back to back, in the order rotated by `offset`."""
    records = []
    active = [c for c in servers if not c.failed]
    for position, contender in enumerate(rotate(active, offset)):
        at = {**where, "position": position}
        records.append(await _cell(contender, request, options, at, concurrency, rate))
    return records


async def run_group(
    group: list[models.OnnxModel], servers: list[contenders.Contender], options: Options
) -> tuple[list, dict]:
    """Models of one architecture (uint8 and float32 inputs) measured side by side, so their ratio holds
    on a drifting machine: every round, raw onnxruntime for each; then per concurrency each model's cell
    with the contenders in rotated order (the models' order rotated too); then the open-loop cells."""
    requests = {
        model.spec.name: loadgen.build_request(
            loadgen.RequestSpec(model.spec.name, model.input_name, model.spec.sample(1, options.image_size))
        )
        for model in group
    }
    records: list[dict] = []
    raw_state: dict[str, dict] = {model.spec.name: {} for model in group}
    open_rate: dict[str, float | None] = {}
    for round_index in range(options.rounds):
        for model in group:
            records += raw_records(model, options, raw_state[model.spec.name], round_index)
        for cell_index, concurrency in enumerate(options.concurrency):
            for model in rotate(group, round_index):
                name = model.spec.name
                where = {"model": name, "round": round_index}
                offset = round_index + cell_index
                records += await _windows(servers, requests[name], options, where, offset, concurrency)
        if options.open_loop_fraction <= 0:
            continue
        for model in group:
            name = model.spec.name
            if name not in open_rate:
                # The same rate for every contender: a fraction of ortserve's best closed-loop rate (round 0).
                peak = [
                    r["throughput_rps"]
                    for r in records
                    if r["model"] == name and r["contender"] == "ortserve_batching"
                ]
                open_rate[name] = options.open_loop_fraction * max(peak) if peak else None
            if open_rate[name]:
                where = {"model": name, "round": round_index}
                records += await _windows(
                    servers, requests[name], options, where, round_index, None, rate=open_rate[name]
                )
    return records, {name: state.get("sweep", {}) for name, state in raw_state.items()}


def estimated_seconds(options: Options) -> float:
    """Measuring time alone (no export, no server start-up): what the run will cost at least."""
    cell = options.warmup_s + options.window_s
    cells_per_round = len(options.concurrency) * len(options.contenders)
    cells_per_round += len(options.contenders) if options.open_loop_fraction > 0 else 0
    raw = 2 * cell + len(options.sweep_batches) * options.sweep_window_s / options.rounds
    return len(options.models) * options.rounds * (cells_per_round * cell + raw)


async def run(options: Options) -> dict:
    machine = machine_info()
    logger.info(
        "%d model(s) x %d round(s) x %s in flight x %s: about %.0f min of measuring",
        len(options.models),
        options.rounds,
        options.concurrency,
        ", ".join(options.contenders),
        estimated_seconds(options) / 60,
    )
    failures = []
    if options.with_mlserver:
        try:
            if not mlserver_env.exists():
                mlserver_env.create()
            machine["versions"]["mlserver (its venv: mlserver onnxruntime)"] = mlserver_env.version()
        except (subprocess.CalledProcessError, OSError) as exc:
            failures.append(f"MLServer left out: creating {mlserver_env.VENV} failed: {exc}")
            logger.error(failures[-1])
            options.contenders = [c for c in options.contenders if not c.startswith("mlserver")]
    exported_by_name = {}
    for name in options.models:
        exported_by_name[name] = models.export_onnx(
            models.MODELS[name], options.cache, options.image_size, options.rebuild
        )
    exported = list(exported_by_name.values())
    results: dict = {
        "machine": machine,
        "config": {
            **{k: v for k, v in asdict(options).items() if k not in ("out", "cache", "batching")},
            "batching": asdict(options.batching),
        },
        "wire": wire_sizes(options, exported_by_name),
        "records": [],
        "raw_sweep": {},
        "failures": [],
    }
    workdir = Path(tempfile.mkdtemp(prefix="ortserve-bench-"))
    servers = contenders.build(options, exported, workdir)
    try:
        await contenders.start(servers, exported, options)
        groups: dict[str, list[models.OnnxModel]] = {}
        for model in exported:
            groups.setdefault(model.spec.arch, []).append(model)
        for group in groups.values():
            records, sweeps = await run_group(group, servers, options)
            results["records"] += records
            results["raw_sweep"].update(sweeps)
    finally:
        results["failures"] = failures + contenders.stop_all(servers, options.out / "logs", workdir)
    results["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    results["summary"] = report.summarize(results["records"])
    results["targets"] = report.evaluate_targets(results["summary"], results["wire"])
    return results


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    options = parse_args(argv, __doc__.splitlines()[0])
    if options.provider:
        return provider_main(options)
    options.out.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(run(options))
    results["plots"] = report.plot(results["summary"], options.out)
    (options.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (options.out / "results.md").write_text(report.markdown(results))
    errors = sum(row["errors"] for row in results["summary"])
    sys.stdout.write(report.markdown(results))
    sys.stdout.write(f"\nwrote {options.out / 'results.json'} and {options.out / 'results.md'}\n")
    return 1 if results["failures"] or errors else 0


def provider_main(options: Options) -> int:
    """The execution-provider sweep (`--provider`): its own results.json and results.md under --out."""
    try:
        provider_sweep.check_provider(str(options.provider))
    except provider_sweep.ProviderMissingError as exc:
        logger.error("%s", exc)
        return 2
    options.out.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(provider_sweep.run(options, machine_info()))
    results["plots"] = provider_report.plot(results, options.out)
    text = provider_report.markdown(results)
    (options.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (options.out / "results.md").write_text(text)
    sys.stdout.write(text + f"\nwrote {options.out / 'results.json'} and {options.out / 'results.md'}\n")
    errors = sum(row["errors"] for row in results["summary"])
    return 1 if results["failures"] or errors else 0


if __name__ == "__main__":
    sys.exit(main())
