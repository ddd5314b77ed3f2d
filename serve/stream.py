"""One ModelStreamInfer stream: read requests, answer each (concurrently, so they can batch), end cleanly.

The rules: every request read is answered, whatever happens after it (a bad message, the client
half-closing, shutdown); the stream always ends with a status; reading stops at the first undecodable
message, at a reader failure or when told to (shutdown), and the stream ends with that status once the
requests read before are answered. Requests are handed to `respond` in arrival order: each gets a task,
created as it is read, and asyncio starts tasks in creation order, so everything `respond` does before its
first suspension (resolving the model and queueing the request in its batcher) happens in arrival order.
Written without asyncio.TaskGroup, which Python 3.10 lacks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from .drain import SHUTTING_DOWN
from .errors import Cancelled, Unavailable
from .wire import Undecodable

MAX_PENDING = 512
"""Requests of one stream answered at a time; past this the stream is not read (HTTP/2 flow control)."""

_READ_DONE = object()


class StreamAnswers:
    """`responses()` yields one response per request read, then ends, or raises the stream's error."""

    def __init__(
        self,
        requests: AsyncIterator[Any],
        respond: Callable[[Any], Awaitable[Any]],
        fail: Callable[[Any, Exception], Any],
    ):
        self._requests = requests
        self._respond = respond  # request -> response
        self._fail = fail  # (request, exception) -> error response (never raises)
        self._answers: asyncio.Queue = asyncio.Queue()
        self._room = asyncio.Semaphore(MAX_PENDING)
        self._pending: set[asyncio.Task] = set()
        self._reader: asyncio.Task | None = None
        self._stopped = False
        self._finished = False
        self.read = 0
        self.end: Exception | None = None

    def stop_reading(self) -> None:
        """Read nothing more; the stream ends UNAVAILABLE once what was read is answered."""
        self._stopped = True
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()

    async def responses(self) -> AsyncIterator[Any]:
        self._reader = asyncio.get_running_loop().create_task(self._read())
        # A done callback runs even for a task cancelled before it started.
        self._reader.add_done_callback(lambda _: self._answers.put_nowait(_READ_DONE))
        reading, answered = True, 0
        try:
            while reading or answered < self.read:
                item = await self._answers.get()
                if item is _READ_DONE:
                    reading = False
                    continue
                answered += 1
                self._room.release()
                yield item
        finally:
            self._finished = True
            self._reader.cancel()
            for task in list(self._pending):
                task.cancel()
        if self.end is not None:
            raise self.end

    async def _read(self) -> None:
        try:
            if self._stopped:
                self.end = Unavailable(SHUTTING_DOWN)
                return
            iterator = self._requests.__aiter__()
            while True:
                await self._room.acquire()
                try:
                    request = await iterator.__anext__()
                except StopAsyncIteration:
                    return
                if isinstance(request, Undecodable):
                    self.end = request.error()
                    return
                self.read += 1
                task = asyncio.get_running_loop().create_task(self._answer(request))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
        except asyncio.CancelledError:
            if not self._stopped:
                raise
            self.end = Unavailable(SHUTTING_DOWN)
        except Exception as exc:  # noqa: BLE001 - a reader failure ends the stream with its status
            self.end = exc

    async def _answer(self, request) -> None:
        try:
            response = await self._respond(request)
        except asyncio.CancelledError:
            if self._finished:
                raise
            response = self._fail(request, Cancelled("request cancelled"))
        except Exception as exc:  # noqa: BLE001 - answered with its status
            response = self._fail(request, exc)
        self._answers.put_nowait(response)
