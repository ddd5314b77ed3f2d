"""Streaming benchmark: N concurrent sequences, one time step per request, against ortserve's sequence
batcher (server-held state), in one interleaved run with the two things a user could do instead.

    python -m bench.sequences                       # 1, 8, 32 sequences, 3 rounds of 5 s windows
    python -m bench.sequences --window 2 --rounds 1 # short
    python -m bench.sequences --hidden 256 --layers 2   # a bigger LSTM: compute, not overhead, dominates

Per concurrency N, each round runs back to back (order rotated each round):
- `stateful`: N sequences, each request one step [1, 1, F] with sequence_id/START/END (64-step sequences),
  one unary ModelInfer call per step.
- `stateful_stream`: the same steps over one ModelStreamInfer stream per sequence (what `client.sequence()`
  does with server-held state), each step sent when the previous one answered.
- `stateless`: the same LSTM without state, one [1, 1, F] request per call (its request rate: goal
  stateful >= 0.8x).
- `prefix`: what a user does today: resend the whole prefix [1, t, F], t = 1..64, every step, unary calls
  (goal: streaming >= 5x steps/s; the table gives it for both transports).
Then memory: RSS of the server before and after opening `--idle-sequences` sequences (one START step each,
never ended): goal at most 2 x their state bytes + 20 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/sequences.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
import numpy as np
import psutil

from bench import procs
from bench.loadgen import MODEL_INFER, latency_summary
from ortserve.protos import grpc_service_pb2 as pb

MODEL_STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"

STEPS = 64
FEATURES = 8
# The benchmark's LSTM (bench/export_models.py): 8 features, hidden 64, one layer.
HIDDEN, LAYERS = 64, 1
READY = r"ORTSERVE_LISTENING grpc=(\S+)"


def state_bytes(hidden: int, layers: int) -> int:
    """Bytes of state one sequence holds (h and c, float32)."""
    return 2 * layers * hidden * 4


def infer_bytes(model: str, x: np.ndarray, sequence_id: int = 0, start=False, end=False) -> bytes:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="input", datatype="FP32", shape=x.shape)
    request.raw_input_contents.append(x.tobytes())
    if sequence_id:
        request.parameters["sequence_id"].uint64_param = sequence_id
        if start:
            request.parameters["sequence_start"].bool_param = True
        if end:
            request.parameters["sequence_end"].bool_param = True
    return request.SerializeToString()


def worker_requests(kind: str, worker: int, rng: np.random.Generator) -> list[bytes]:
    """The cycle of requests one worker sends, in order, again and again."""
    x = rng.standard_normal((1, STEPS, FEATURES)).astype(np.float32)
    if kind in ("stateful", "stateful_stream"):
        sid = worker + 1
        return [infer_bytes("lstm_step", x[:, t : t + 1], sid, t == 0, t == STEPS - 1) for t in range(STEPS)]
    if kind == "stateless":
        return [infer_bytes("lstm", x[:, t : t + 1]) for t in range(STEPS)]
    return [infer_bytes("lstm", np.ascontiguousarray(x[:, : t + 1])) for t in range(STEPS)]


async def closed_loop(target: str, kind: str, concurrency: int, window_s: float) -> dict:
    """N workers, one request in flight each; steps/s counted over the window, latency of those sent in it."""
    identity = lambda data: data  # noqa: E731 - prebuilt bytes
    channels = [grpc.aio.insecure_channel(target) for _ in range(min(concurrency, 4))]
    calls = [
        c.unary_unary(MODEL_INFER, request_serializer=identity, response_deserializer=identity)
        for c in channels
    ]
    rng = np.random.default_rng(concurrency)
    cycles = [worker_requests(kind, w, rng) for w in range(concurrency)]
    warm_until = time.perf_counter() + min(1.0, window_s / 2)
    start, end = warm_until, warm_until + window_s
    latencies, completed = [], 0

    def record(sent: float, done: float) -> None:
        nonlocal completed
        if start <= done <= end:
            completed += 1
        if start <= sent < end:
            latencies.append(done - sent)

    async def work(worker: int) -> None:
        # Prefix workers start at different lengths, as sequences that began at different times would; a
        # stateful worker leaves its last sequence open (its next START on the same id restarts it).
        index = 0 if kind == "stateful" else worker * STEPS // concurrency
        call, cycle = calls[worker % len(calls)], cycles[worker]
        while True:
            sent = time.perf_counter()
            if sent >= end:
                return
            await call(cycle[index % STEPS], timeout=30)
            record(sent, time.perf_counter())
            index += 1

    async def stream_work(worker: int) -> None:
        channel, cycle = channels[worker % len(channels)], cycles[worker]
        stream = channel.stream_stream(
            MODEL_STREAM_INFER,
            request_serializer=identity,
            response_deserializer=pb.ModelStreamInferResponse.FromString,
        )()
        index = 0
        while True:
            sent = time.perf_counter()
            if sent >= end:
                break
            await stream.write(cycle[index % STEPS])
            answer = await stream.read()
            if answer.error_message:
                raise RuntimeError(f"step failed: {answer.error_message}")
            record(sent, time.perf_counter())
            index += 1
        await stream.done_writing()
        if await stream.read() is not grpc.aio.EOF or await stream.code() != grpc.StatusCode.OK:
            raise RuntimeError(f"the stream did not end cleanly: {await stream.details()}")

    runner = stream_work if kind == "stateful_stream" else work
    await asyncio.gather(*(runner(w) for w in range(concurrency)))
    for channel in channels:
        await channel.close()
    return {"steps_per_s": completed / window_s, "latency_ms": latency_summary(latencies)}


async def open_idle(target: str, count: int) -> None:
    """Open `count` sequences (one START step each, never ended), 64 at a time."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = channel.unary_unary(
            MODEL_INFER, request_serializer=lambda d: d, response_deserializer=lambda d: d
        )
        x = np.zeros((1, 1, FEATURES), np.float32)
        for first in range(0, count, 64):
            ids = range(1_000_000 + first, 1_000_000 + min(first + 64, count))
            await asyncio.gather(*(stub(infer_bytes("lstm_step", x, sid, start=True)) for sid in ids))


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--window", type=float, default=5.0, help="seconds measured per cell")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle-sequences", type=int, default=10_000)
    parser.add_argument("--hidden", type=int, default=HIDDEN, help="LSTM hidden size (64: bench's LSTM)")
    parser.add_argument("--layers", type=int, default=LAYERS)
    parser.add_argument("--out", type=Path, help="write results.json here")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="ortserve-seqbench-"))
    repo = workdir / "models"
    export = [sys.executable, "-m", "bench.sequence_models", "--repository", str(repo)]
    subprocess.run([*export, "--hidden", str(args.hidden), "--layers", str(args.layers)], check=True)
    server = procs.ServerProcess(
        "ortserve",
        [sys.executable, "-m", "ortserve.serve", "--model-repository", str(repo), "--grpc-port", "0",
         "--metrics-port", "0"],
        workdir / "server.log",
        ready_pattern=READY,
    )  # fmt: skip
    target = server.start(timeout_s=180)
    kinds = ["stateful", "stateful_stream", "stateless", "prefix"]
    cells: dict[str, dict[str, list[dict]]] = {}
    try:
        for kind in kinds:  # not measured: the first batches of each shape and the batcher's estimates
            asyncio.run(closed_loop(target, kind, max(args.concurrency), min(args.window, 2.0)))
        for round_ in range(args.rounds):
            for concurrency in args.concurrency:
                order = kinds[round_ % len(kinds) :] + kinds[: round_ % len(kinds)]
                for kind in order:
                    result = asyncio.run(closed_loop(target, kind, concurrency, args.window))
                    cells.setdefault(str(concurrency), {}).setdefault(kind, []).append(result)
        before = rss_mb(server.pid)
        asyncio.run(open_idle(target, args.idle_sequences))
        after = rss_mb(server.pid)
    finally:
        server.stop()
    summary = summarize(cells, before, after, args.idle_sequences, state_bytes(args.hidden, args.layers))
    summary["model"] = {"features": FEATURES, "hidden": args.hidden, "layers": args.layers}
    print(render(summary))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps({"summary": summary, "cells": cells}, indent=1))
    return 0


def summarize(cells, before_mb: float, after_mb: float, idle: int, bytes_each: int) -> dict:
    rows = {}
    for concurrency, kinds in cells.items():
        med = {k: float(np.median([r["steps_per_s"] for r in runs])) for k, runs in kinds.items()}
        lat = {k: runs[int(np.argsort([r["steps_per_s"] for r in runs])[len(runs) // 2])]["latency_ms"]
               for k, runs in kinds.items()}  # fmt: skip
        rows[concurrency] = {
            "steps_per_s": med,
            "latency_ms": lat,
            "vs_stateless": med["stateful"] / med["stateless"],
            "vs_prefix": med["stateful"] / med["prefix"],
            "stream_vs_prefix": med["stateful_stream"] / med["prefix"],
        }
    state_mb = idle * bytes_each / 1e6
    return {
        "rows": rows,
        "memory": {
            "idle_sequences": idle,
            "state_mb": state_mb,
            "rss_growth_mb": after_mb - before_mb,
            "limit_mb": 2 * state_mb + 20,
        },
    }


def render(summary: dict) -> str:
    lines = [
        "| sequences | stateful steps/s (unary) | p50 / p99 ms | stateful steps/s (stream) | p50 / p99 ms "
        "| stateless req/s | prefix steps/s | unary vs stateless (>= 0.8) "
        "| vs prefix (>= 5): unary / stream |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for concurrency, row in summary["rows"].items():
        s, lat, slat = row["steps_per_s"], row["latency_ms"]["stateful"], row["latency_ms"]["stateful_stream"]
        lines.append(
            f"| {concurrency} | {s['stateful']:.0f} | {lat['p50']:.2f} / {lat['p99']:.2f} "
            f"| {s['stateful_stream']:.0f} | {slat['p50']:.2f} / {slat['p99']:.2f} "
            f"| {s['stateless']:.0f} | {s['prefix']:.0f} | {row['vs_stateless']:.2f}x "
            f"| {row['vs_prefix']:.1f}x / {row['stream_vs_prefix']:.1f}x |"
        )
    memory = summary["memory"]
    lines.append(
        f"\nmemory: {memory['idle_sequences']} idle sequences: RSS +{memory['rss_growth_mb']:.1f} MB for "
        f"{memory['state_mb']:.1f} MB of state (limit {memory['limit_mb']:.1f} MB)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
