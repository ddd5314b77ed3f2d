"""Server processes under test: start one, wait for it, watch its CPU and memory, stop it.

CPU is the user+system time of the whole process tree (children included: MLServer's workers, anything a
server forks), sampled at the window's edges; a child that exits mid-window takes its time with it, which is
why the tree is also sampled while polling memory. Peak RSS is the largest sum of the tree's RSS seen by a
poller thread during the window.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil


def free_port() -> int:
    """A port free on 127.0.0.1 right now (for servers that cannot report a port 0 binding)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tree(process: psutil.Process) -> list[psutil.Process]:
    try:
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


# Each server gets its own process group (stop() signals the group, so MLServer's workers go too) but
# stays in the load generator's session: with the kernel's sched_autogroup (on here), every session is a
# scheduling group of its own, and the two cores were split between the load generator's group and the
# server's, capping whichever server needed more CPU than the load generator (docs/performance.md item 12).
NEW_PROCESS_GROUP: dict = (
    {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}  # noqa: PLW1509
)


class TreeMonitor:
    """CPU seconds and peak RSS of a process tree over a window (start() ... stop()).

    It shares the cores with the servers it watches, so it stays cheap: the tree's member list (a scan of
    every process on the machine, ~4 ms) is refreshed once a second, not at every poll, and each poll reads
    one /proc stat per member. Its own CPU time (`monitor_cpu_s`) is reported so the load generator's CPU can
    leave it out.
    """

    def __init__(self, pid: int, interval_s: float = 0.1, rescan_s: float = 1.0) -> None:
        self._root = psutil.Process(pid)
        self._interval = interval_s
        self._rescan_s = rescan_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._members: list[psutil.Process] = []
        self._scanned = 0.0
        self._start_cpu: dict[int, float] = {}
        self._last_cpu: dict[int, float] = {}
        self._own_cpu = 0.0
        self.peak_rss = 0

    def _sample(self) -> None:
        """One poll: CPU and RSS of each member (rescanning the tree when due); charges its own CPU."""
        began = time.thread_time()
        now = time.monotonic()
        if now - self._scanned >= self._rescan_s:
            self._members = _tree(self._root)
            self._scanned = now
        rss = 0
        for proc in self._members:
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    rss += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            self._last_cpu[proc.pid] = times.user + times.system
        self.peak_rss = max(self.peak_rss, rss)
        self._own_cpu += time.thread_time() - began

    def _poll(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def start(self) -> None:
        self._scanned = 0.0
        self._sample()
        self._start_cpu = dict(self._last_cpu)
        self._own_cpu = 0.0
        self._thread = threading.Thread(target=self._poll, name="tree-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        """CPU seconds used by the tree since start(), its peak RSS in bytes, and the monitor's own CPU."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._scanned = 0.0  # a child started mid-window still counts from its start (0 CPU before it)
        self._sample()
        cpu = sum(self._last_cpu[pid] - self._start_cpu.get(pid, 0.0) for pid in self._last_cpu)
        return {"cpu_s": cpu, "peak_rss_bytes": float(self.peak_rss), "monitor_cpu_s": self._own_cpu}


class ServerProcess:
    """A server subprocess whose readiness is one stdout line matching `ready_pattern` (or a fixed target)."""

    def __init__(
        self,
        name: str,
        command: list[str],
        log_path: Path,
        ready_pattern: str | None = None,
        target: str | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.command = command
        self.log_path = log_path
        self.ready_pattern = re.compile(ready_pattern) if ready_pattern else None
        self.target = target
        self._env = env
        self._cwd = cwd
        self.process: subprocess.Popen | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()

    def start(self, timeout_s: float) -> str:
        """Launch, wait for the ready line (when there is one) and return the gRPC target HOST:PORT."""
        self.launch()
        return self.wait_listening(timeout_s)

    def launch(self) -> None:
        """Start the process without waiting (servers that load in parallel start sooner)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("w", encoding="utf-8")
        env = dict(os.environ, **(self._env or {}))
        self.process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=self._cwd,
            **NEW_PROCESS_GROUP,
        )
        threading.Thread(target=self._pump, name=f"{self.name}-stdout", daemon=True).start()

    def wait_listening(self, timeout_s: float) -> str:
        """Wait for the ready line (when there is one); return the gRPC target HOST:PORT."""
        assert self.process is not None, "launch() first"
        if self.ready_pattern is None:
            if self.target is None:
                raise ValueError(f"{self.name}: needs a ready pattern or a fixed target")
            return self.target
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                raise RuntimeError(
                    f"{self.name} exited ({self.process.poll()}) before it was ready; see {self.log_path}"
                )
            match = self.ready_pattern.search(line)
            if match:
                self.target = match.group(1)
                return self.target
        self.stop()
        raise TimeoutError(f"{self.name} printed no ready line within {timeout_s:.0f}s; see {self.log_path}")

    def _pump(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self._log.write(line)
            self._log.flush()
            self._lines.put(line)
        self._lines.put(None)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the server's process group, SIGKILL it when it does not exit in time."""
        if self.process is None:
            return
        try:
            if self.process.poll() is not None:
                return
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=timeout_s)
        except ProcessLookupError:
            pass
        finally:
            self._log.close()
