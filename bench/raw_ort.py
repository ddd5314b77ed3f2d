"""The ceiling without gRPC: onnxruntime called directly, at batch 1 and at the best batch size.

Runs in its own process (`python -m bench.raw_ort ...`, JSON on stdout), like every server under test, so it
shares no threads, memory or interpreter with the load generator's process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import onnxruntime as ort

from bench.loadgen import latency_summary


@dataclass
class RawResult:
    """One measured window of back-to-back session.run calls at one batch size."""

    batch: int
    window_s: float
    runs: int
    throughput_rps: float  # rows (images / sequences) per second
    latency_ms: dict[str, float]  # per run (per batch)
    cpu_s: float

    def to_dict(self) -> dict:
        return asdict(self)


PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def make_session(path: str, intra_op_threads: int, provider: str = "cpu") -> ort.InferenceSession:
    """The same session options ortserve gets from config.pbtxt (`intra_op_thread_count`), on `provider`
    (cpu or cuda: GPU 0, as ortserve's KIND_GPU); refuses to run anywhere else."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    wanted = PROVIDERS[provider]
    providers = [(wanted, {"device_id": 0}), "CPUExecutionProvider"] if provider == "cuda" else [wanted]
    session = ort.InferenceSession(path, sess_options=options, providers=providers)
    # onnxruntime drops a provider it lacks (or cannot load) with a warning: refuse what it fell back to.
    if session.get_providers()[0] != wanted:
        raise RuntimeError(
            f"asked for {wanted}, the session runs on {session.get_providers()} (onnxruntime "
            f"{ort.__version__} offers {', '.join(ort.get_available_providers())})"
        )
    session.disable_fallback()
    return session


def parse_output(stdout: str) -> dict:
    """What a `python -m bench.raw_ort` process printed: the JSON of its last line."""
    return json.loads(stdout.strip().splitlines()[-1])


def command(model, image_size: int, threads: int, warmup_s: float, window_s: float) -> list[str]:
    """The command line that measures `model` (a bench.models.OnnxModel) in a process of its own."""
    line = [sys.executable, "-m", "bench.raw_ort", "--onnx", str(model.path), "--model", model.spec.name]
    line += ["--input-name", model.input_name, "--image-size", str(image_size)]
    return line + ["--threads", str(threads), "--warmup", str(warmup_s), "--window", str(window_s)]


def measure(
    session: ort.InferenceSession,
    feed: dict[str, np.ndarray],
    warmup_s: float,
    window_s: float,
    max_runs: int = 100_000,
) -> RawResult:
    """Warm up, then run back to back for `window_s` (or `max_runs`), always at least 3 runs."""
    batch = next(iter(feed.values())).shape[0]
    deadline = time.perf_counter() + warmup_s
    session.run(None, feed)
    while time.perf_counter() < deadline:
        session.run(None, feed)
    latencies: list[float] = []
    cpu_start = time.process_time()
    start = time.perf_counter()
    end = start + window_s
    while len(latencies) < max_runs and (time.perf_counter() < end or len(latencies) < 3):
        t0 = time.perf_counter()
        session.run(None, feed)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    return RawResult(
        batch=batch,
        window_s=elapsed,
        runs=len(latencies),
        throughput_rps=batch * len(latencies) / elapsed,
        latency_ms=latency_summary(latencies),
        cpu_s=time.process_time() - cpu_start,
    )


def main(argv: list[str] | None = None) -> int:
    """Optionally sweep batch sizes, then measure batch 1 and the best batch; print JSON."""
    from bench.models import MODELS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--model", required=True, choices=sorted(MODELS), help="what the input looks like")
    parser.add_argument("--input-name", required=True)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, required=True, help="intra-op threads")
    parser.add_argument("--warmup", type=float, required=True)
    parser.add_argument("--window", type=float, required=True)
    parser.add_argument("--best-batch", type=int, help="skip the sweep: the best batch found earlier")
    parser.add_argument("--sweep", default="1,2,4,8,16,32", help="batch sizes to sweep")
    parser.add_argument("--sweep-window", type=float, default=1.0)
    parser.add_argument("--provider", choices=sorted(PROVIDERS), default="cpu")
    parser.add_argument(
        "--curve",
        action="store_true",
        help="a full measurement (warm-up, window, latency) at every --sweep batch size, nothing else",
    )
    args = parser.parse_args(argv)

    spec = MODELS[args.model]
    try:
        session = make_session(args.onnx, args.threads, args.provider)
    except RuntimeError as exc:
        sys.stderr.write(f"raw onnxruntime: {exc}\n")
        return 2

    def feed(batch: int) -> dict[str, np.ndarray]:
        return {args.input_name: spec.sample(batch, args.image_size)}

    if args.curve:
        curve = [
            measure(session, feed(int(batch)), args.warmup, args.window).to_dict()
            for batch in args.sweep.split(",")
        ]
        sys.stdout.write(json.dumps({"provider": session.get_providers()[0], "curve": curve}) + "\n")
        return 0
    sweep: dict[int, float] = {}
    best = args.best_batch
    if best is None:
        for batch in (int(b) for b in args.sweep.split(",")):
            sweep[batch] = measure(session, feed(batch), 0.0, args.sweep_window, max_runs=1000).throughput_rps
        best = max(sweep, key=sweep.get)
    results = {
        "sweep": sweep,
        "best_batch": best,
        "batch1": measure(session, feed(1), args.warmup, args.window).to_dict(),
        "best": measure(session, feed(best), args.warmup, args.window).to_dict(),
    }
    sys.stdout.write(json.dumps(results) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
