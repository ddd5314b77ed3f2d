"""ortserve's memory on the benchmark's models: idle RSS after loading, peak RSS under load, batching on and
off, and what one long LSTM sequence leaves behind.

    python -m bench.memory                       # the five benchmark models, 8 s of load on each
    python -m bench.memory --models lstm,resnet18_uint8 --window 3 --long-steps 250000

For each setting (dynamic batching on, off) it starts `ortserve serve` on the same repository layout as
bench.run, reads the server's RSS once every model is ready and idle, keeps `--concurrency` requests of one
row in flight on each model in turn for `--window` seconds while a poller records the peak RSS, then
(`lstm` loaded) sends one [1, --long-steps, 8] sequence and reads RSS before and after it. Writes
memory.json and memory.md under --out. A point of comparison: MLServer's peak RSS on the same five models
in bench/results/results.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/memory.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
import psutil

from bench import loadgen, models, procs
from bench.options import BENCH_DIR, FULL_MODELS
from ortserve.protos import grpc_service_pb2 as pb
from ortserve.protos import grpc_service_pb2_grpc

logger = logging.getLogger("bench.memory")
REPO_ROOT = Path(__file__).resolve().parent.parent
MIB = 2**20


def _rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def _stub(target: str):
    channel = grpc.insecure_channel(target, options=loadgen.CHANNEL_OPTIONS)
    return channel, grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _wait_ready(stub, names: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for name in names:
        while not stub.ModelReady(pb.ModelReadyRequest(name=name)).ready:
            if time.monotonic() > deadline:
                raise TimeoutError(f"model {name} not ready within {timeout_s:.0f} s")
            time.sleep(0.2)


def _load(target: str, requests: dict[str, bytes], concurrency: int, window_s: float) -> int:
    """Keep `concurrency` requests in flight on every model for `window_s`; return the requests answered."""
    stop = time.monotonic() + window_s
    done = [0]
    lock = threading.Lock()

    def client(name: str, raw: bytes) -> None:
        channel = grpc.insecure_channel(target, options=loadgen.CHANNEL_OPTIONS)
        call = channel.unary_unary(loadgen.MODEL_INFER)  # bytes in, bytes out: the request is prebuilt
        while time.monotonic() < stop:
            call(raw, timeout=120)
            with lock:
                done[0] += 1
        channel.close()

    threads = [
        threading.Thread(target=client, args=(name, raw), daemon=True)
        for name, raw in requests.items()
        for _ in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done[0]


def _long_sequence(stub, pid: int, steps: int) -> dict[str, float]:
    """RSS before and after one [1, steps, 8] LSTM sequence (after a few small requests settle it)."""
    spec = models.MODELS["lstm"]
    small = loadgen.RequestSpec("lstm", "input", spec.sample(1, 0))
    for _ in range(20):
        stub.ModelInfer(pb.ModelInferRequest.FromString(loadgen.build_request(small)))
    before = _rss(pid)
    array = spec.sample(1, 0).repeat(steps // models.LSTM_TIME_STEPS + 1, axis=1)[:, :steps]
    request = pb.ModelInferRequest.FromString(
        loadgen.build_request(loadgen.RequestSpec("lstm", "input", array))
    )
    started = time.monotonic()
    try:
        stub.ModelInfer(request, timeout=600)
        outcome = "ok"
    except grpc.RpcError as error:
        outcome = f"{error.code().name}: {error.details()[:200]}"
    seconds = time.monotonic() - started
    after = _rss(pid)
    return {
        "input_mib": array.nbytes / MIB,
        "outcome": outcome,
        "seconds": seconds,
        "rss_before_mib": before / MIB,
        "rss_after_mib": after / MIB,
        "grown_mib": (after - before) / MIB,
    }


def measure(exported, enabled: bool, args, workdir: Path) -> dict:
    """Start ortserve on the models (batching on or off), measure, stop."""
    name = "ortserve_batching" if enabled else "ortserve"
    batching = models.BatchingSettings(max_batch_size=args.max_batch_size)
    repository = models.write_ortserve_repository(workdir / name, exported, batching, enabled, None)
    command = [sys.executable, "-m", "ortserve.serve", "--model-repository", str(repository)]
    command += ["--max-message-bytes", str(loadgen.MAX_MESSAGE_BYTES), "--grpc-port", "0"]
    command += ["--metrics-port", "0", *args.server_args]
    server = procs.ServerProcess(
        name, command, workdir / f"{name}.log", ready_pattern=r"ORTSERVE_LISTENING grpc=(\S+)", cwd=REPO_ROOT
    )
    target = server.start(timeout_s=1800)
    channel, stub = _stub(target)
    try:
        names = [model.spec.name for model in exported]
        _wait_ready(stub, names, 600)
        time.sleep(args.settle)  # idle: nothing else to wait for; RSS is read once, after load
        idle = _rss(server.pid)
        requests = {
            model.spec.name: loadgen.build_request(
                loadgen.RequestSpec(model.spec.name, model.input_name, model.spec.sample(1, args.image_size))
            )
            for model in exported
        }
        peaks, answered = {}, 0
        for model_name, raw in requests.items():  # one model at a time, as bench.run loads them
            monitor = procs.TreeMonitor(server.pid, interval_s=0.05)
            monitor.start()
            answered += _load(target, {model_name: raw}, args.concurrency, args.window)
            peaks[model_name] = monitor.stop()["peak_rss_bytes"] / MIB
        after_load = _rss(server.pid)
        result = {
            "setting": name,
            "idle_rss_mib": idle / MIB,
            "peak_rss_under_load_mib": max(peaks.values()),
            "peak_rss_by_model_mib": peaks,
            "rss_after_load_mib": after_load / MIB,
            "requests_answered": answered,
        }
        if "lstm" in names and args.long_steps:
            result["long_sequence"] = _long_sequence(stub, server.pid, args.long_steps)
        return result
    finally:
        channel.close()
        server.stop()


def _markdown(results: list[dict], args) -> str:
    lines = [
        f"Models: {', '.join(args.models)}, all loaded; {args.concurrency} request(s) of 1 row in flight on "
        f"each model in turn for {args.window:.0f} s; max_batch_size {args.max_batch_size}.",
        "",
        "| setting | idle RSS MiB | peak RSS under load MiB | RSS after load MiB | requests |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['setting']} | {r['idle_rss_mib']:.0f} | {r['peak_rss_under_load_mib']:.0f} | "
            f"{r['rss_after_load_mib']:.0f} | {r['requests_answered']} |"
        )
    longs = [r for r in results if "long_sequence" in r]
    if longs:
        lines += ["", "| setting | long LSTM input MiB | outcome | s | RSS before | RSS after | grown MiB |"]
        lines.append("|---|---|---|---|---|---|---|")
        for r in longs:
            s = r["long_sequence"]
            lines.append(
                f"| {r['setting']} | {s['input_mib']:.1f} | {s['outcome']} | {s['seconds']:.1f} | "
                f"{s['rss_before_mib']:.0f} | {s['rss_after_mib']:.0f} | {s['grown_mib']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=lambda text: text.split(","), default=list(FULL_MODELS))
    parser.add_argument("--window", type=float, default=8.0, help="seconds of load per setting")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight on the model")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--settle", type=float, default=2.0, help="seconds idle before reading idle RSS")
    parser.add_argument("--long-steps", type=int, default=250_000, help="LSTM time steps (0: skip)")
    parser.add_argument("--cache", type=Path, default=BENCH_DIR / ".cache", help="exported ONNX files")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "memory")
    parser.add_argument("--server-args", nargs=argparse.REMAINDER, default=[], help="more `serve` flags")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    exported = [models.export_onnx(models.MODELS[name], args.cache, args.image_size) for name in args.models]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        for enabled in (True, False):
            results.append(measure(exported, enabled, args, Path(tmp)))
            logger.info("%s", json.dumps(results[-1]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "memory.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "memory.md").write_text(_markdown(results, args))
    print(_markdown(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
