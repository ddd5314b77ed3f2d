"""An asyncio event loop that runs callbacks just before it would block waiting for I/O.

The batcher uses it to run quick models: requests that arrive while the loop is busy queue up, and when
the loop has nothing left to do it runs them as one batch. Under load that forms batches without holding
any request back; with one request in flight the batch is that request, run before the loop sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import selectors
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


class _BeforeBlockSelector(selectors.DefaultSelector):  # type: ignore[misc, valid-type]
    """The platform selector; a select() that would wait first runs the loop's idle callbacks."""

    def __init__(self, before_block: Callable[[], bool]):
        super().__init__()
        self._before_block = before_block

    def select(self, timeout: float | None = None):
        # Callbacks scheduled by the idle work must run in this loop iteration: do not wait then.
        if (timeout is None or timeout > 0) and self._before_block():
            timeout = 0
        return super().select(timeout)


class IdleAwareEventLoop(asyncio.SelectorEventLoop):
    """A selector event loop with `when_idle(callback)`: run once, before the loop next waits for I/O."""

    def __init__(self) -> None:
        self._idle_callbacks: list[Callable[[], None]] = []
        super().__init__(_BeforeBlockSelector(self._run_idle_callbacks))

    def when_idle(self, callback: Callable[[], None]) -> None:
        """Run `callback()` on the loop thread when the loop would otherwise wait for I/O or a timer."""
        self._idle_callbacks.append(callback)

    def _run_idle_callbacks(self) -> bool:
        if not self._idle_callbacks:
            return False
        callbacks, self._idle_callbacks = self._idle_callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # noqa: BLE001 - a failing callback must not stop the loop
                log.exception("idle callback %r failed", callback)
        return True


def run(main: Coroutine[Any, Any, int]) -> int:
    """asyncio.run(main) on an IdleAwareEventLoop."""
    runner_class = getattr(asyncio, "Runner", None)
    if runner_class is not None:  # Python 3.11+
        with runner_class(loop_factory=IdleAwareEventLoop) as runner:
            return runner.run(main)
    loop = IdleAwareEventLoop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
