"""Admission of RPCs, so that shutdown can refuse new ones and wait for the accepted ones to finish."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

from .errors import Unavailable

SHUTTING_DOWN = "server is shutting down"
CUT_SHORT = "server shut down before the request finished (--exit-timeout-secs)"


class Admission:
    """Counts the RPCs in flight. `close()` makes new ones fail with UNAVAILABLE and tells open streams
    to stop reading (each then ends once its accepted requests are answered); `drained()` waits for 0;
    `cut_short()` cancels what is left, which the servicer answers UNAVAILABLE (clients retry that)."""

    def __init__(self) -> None:
        self.closing = False
        self.cut = False
        self._active = 0
        self._tasks: set[asyncio.Task] = set()
        self._drained: asyncio.Event | None = None
        self._stop_readers: set[Callable[[], None]] = set()

    @property
    def active(self) -> int:
        """RPCs admitted and not finished."""
        return self._active

    @contextlib.contextmanager
    def admit(self, stop_reading: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold one RPC in flight; raises Unavailable once closing. Streams pass how to stop reading."""
        if self.closing:
            raise Unavailable(SHUTTING_DOWN)
        self._active += 1
        task = asyncio.current_task()
        self._tasks.add(task)
        if stop_reading is not None:
            self._stop_readers.add(stop_reading)
        try:
            yield
        finally:
            self._active -= 1
            self._tasks.discard(task)
            self._stop_readers.discard(stop_reading)
            if self._active == 0 and self._drained is not None:
                self._drained.set()

    def close(self) -> None:
        """Admit nothing more; open streams stop reading."""
        self.closing = True
        for stop_reading in list(self._stop_readers):
            stop_reading()

    def cut_short(self) -> None:
        """Cancel the RPCs still in flight (the exit timeout passed)."""
        self.cut = True
        for task in list(self._tasks):
            task.cancel()

    async def drained(self, timeout_s: float) -> bool:
        """Wait until no RPC is in flight, at most `timeout_s`; True when none is left."""
        if self._active == 0:
            return True
        self._drained = asyncio.Event()
        try:
            await asyncio.wait_for(self._drained.wait(), max(timeout_s, 0))
        except asyncio.TimeoutError:
            return self._active == 0
        return True
