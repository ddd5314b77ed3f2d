"""The servers under test: lay out each contender's model repository, start it, check it, load it.

Contenders: ortserve with dynamic batching on and off, MLServer with adaptive batching on and off (in its own
venv), and the bare gRPC server. Each serves every benchmark model from the same exported ONNX files.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from bench import loadgen, mlserver_env, models, procs, server_stats

if TYPE_CHECKING:
    from bench.options import Options

logger = logging.getLogger("bench")

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
NAMES = ("ortserve_batching", "ortserve_nobatching", "mlserver_batching", "mlserver_nobatching", "bare")


ORTSERVE_READY = r"ORTSERVE_LISTENING grpc=(\S+)"


def ortserve_command(repository: Path) -> list[str]:
    """ortserve serving `repository` on loopback, free ports, gRPC only."""
    command = [sys.executable, "-m", "ortserve.serve", "--model-repository", str(repository)]
    command += ["--max-message-bytes", str(loadgen.MAX_MESSAGE_BYTES)]
    command += ["--grpc-address", "127.0.0.1", "--grpc-port", "0"]
    command += ["--metrics-address", "127.0.0.1", "--metrics-port", "0"]
    return command + ["--allow-http", "false"]  # measured over gRPC; no REST listener to collide on 8000


class Contender:
    """A running server under test and what it serves."""

    def __init__(self, name: str, server: procs.ServerProcess) -> None:
        self.name = name
        self.server = server
        self.target: str | None = None
        self.failed: str | None = None


def build(options: Options, exported: list[models.OnnxModel], workdir: Path) -> list[Contender]:
    """Lay out every contender's repository (all models) and its server command; nothing started yet."""
    contenders = []
    python = sys.executable
    for name in options.contenders:
        if name.startswith("ortserve"):
            enabled = name == "ortserve_batching"
            repository = models.write_ortserve_repository(
                workdir / name,
                exported,
                options.batching,
                enabled,
                options.ortserve_intra_op_threads,
                gpu=options.provider == "cuda",
            )
            server = procs.ServerProcess(
                name,
                ortserve_command(repository),
                workdir / f"{name}.log",
                ready_pattern=ORTSERVE_READY,
                cwd=REPO_ROOT,
            )
        elif name == "bare":
            table = models.write_bare_models(workdir / "bare" / "models.json", exported)
            command = [python, "-m", "bench.bare_server", "--models", str(table)]
            server = procs.ServerProcess(
                name, command, workdir / "bare.log", ready_pattern=r"BARE_LISTENING grpc=(\S+)", cwd=REPO_ROOT
            )
        else:
            enabled = name == "mlserver_batching"
            root = models.write_mlserver_repository(
                workdir / name,
                exported,
                options.batching,
                enabled,
                options.intra_op_threads,
                BENCH_DIR / "mlserver_runtime.py",
            )
            grpc_port = procs.free_port()
            mlserver_env.write_settings(
                root, grpc_port, procs.free_port(), procs.free_port(), options.mlserver_parallel_workers
            )
            # MLServer's own environment only: ortserve's venv must not leak into it.
            env = {"PYTHONPATH": str(root), "VIRTUAL_ENV": str(mlserver_env.VENV)}
            server = procs.ServerProcess(
                name,
                mlserver_env.command(root),
                workdir / f"{name}.log",
                target=f"127.0.0.1:{grpc_port}",
                env=env,
                cwd=root,
            )
        contenders.append(Contender(name, server))
    return contenders


async def start(contenders: list[Contender], exported: list[models.OnnxModel], options: Options) -> None:
    """Start all (they load in parallel), wait until each serves each model, check one response each."""
    for contender in contenders:
        try:
            contender.server.launch()
        except OSError as exc:
            contender.failed = f"{contender.name}: failed to start: {exc}"
    for contender in contenders:
        if not contender.failed:
            contender.failed = await _check_serving(contender, exported, options)
        if contender.failed:
            logger.error("%s (log: %s)", contender.failed, contender.server.log_path)
            contender.server.stop()
        else:
            logger.info("%s serving at %s", contender.name, contender.target)


async def _check_serving(
    contender: Contender, exported: list[models.OnnxModel], options: Options
) -> str | None:
    """None once the server listens and answers each model with the right shape, else what went wrong."""
    try:
        contender.target = await asyncio.to_thread(
            contender.server.wait_listening, options.server_start_timeout_s
        )
    except (RuntimeError, TimeoutError) as exc:
        return f"{contender.name}: failed to start: {exc}"
    for model in exported:
        sample = model.spec.sample(1, options.image_size)
        request = loadgen.build_request(loadgen.RequestSpec(model.spec.name, model.input_name, sample))
        try:
            await loadgen.wait_model_ready(contender.target, model.spec.name, options.server_start_timeout_s)
            async with loadgen.LoadGenerator(contender.target, request, 1) as generator:
                await generator.check()
        except (TimeoutError, ValueError, grpc.aio.AioRpcError) as exc:
            detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else exc
            return f"{contender.name}: not serving {model.spec.name} correctly: {detail}"
    return None


def stop_all(contenders: list[Contender], logs: Path, workdir: Path) -> list[str]:
    """Stop every server, keep its log under `logs`, remove `workdir`; what failed along the way."""
    for contender in contenders:
        contender.server.stop()
    logs.mkdir(parents=True, exist_ok=True)
    for contender in contenders:
        if contender.server.log_path.exists():
            shutil.copy2(contender.server.log_path, logs / contender.server.log_path.name)
    shutil.rmtree(workdir, ignore_errors=True)
    return [contender.failed for contender in contenders if contender.failed]


async def measure(
    contender: Contender,
    request: bytes,
    options: Options,
    concurrency: int | None,
    rate: float | None = None,
    model: str | None = None,
) -> dict:
    """One warm-up + window against one contender: closed loop at `concurrency`, or open loop at `rate`.
    ortserve's windows also read `model`'s busy fraction and mean batch from its statistics."""
    probe = procs.TreeMonitor(contender.server.pid)
    if model is not None and contender.name.startswith("ortserve"):
        probe = server_stats.Probes(probe, server_stats.BatchStatsProbe(contender.target, model))
    channels = loadgen.channels_for(concurrency or 32, options.streams_per_channel)
    async with loadgen.LoadGenerator(contender.target, request, 1, channels=channels) as generator:
        if rate is None:
            result = await generator.closed_loop(
                concurrency, options.warmup_s, options.window_s, options.max_requests, probe=probe
            )
        else:
            result = await generator.open_loop(
                rate, options.warmup_s, options.window_s, options.max_requests, probe=probe
            )
    if not contender.server.alive():
        contender.failed = f"{contender.name}: server exited during the run; see {contender.server.log_path}"
    return result.to_dict()
