"""Memory of onnxruntime runs: giving the arena back after outsized runs and after warm-up, and refusing a
request whose intermediate memory would exceed the server's budget.

onnxruntime's CPU (and CUDA) arena keeps every region it ever grew to: one 8 MB sequence left a server
361 MB bigger for good, and warming up at max_batch_size left each model at its peak. A run with the
`memory.enable_memory_arena_shrinkage` run option frees the arena's unused regions when it ends.

Outsized runs shrink the arena as they end. Runs larger than the warm-up's batch 1 but not outsized (the
batches dynamic batching forms under load) regrow it too; shrinking after each would cost every batch an
allocation of its intermediates, so the batcher gives such an instance's arena back only once it has been
idle for IDLE_SHRINK_S: one small shrinking run (batch 1), held like a batch. A steady stream never pays it.
What onnxruntime frees goes back to the C library's heap, which keeps most of it resident (glibc serves
allocations below its adaptive mmap threshold from its heaps): after the idle shrink and after loading, the
heap's free pages are given back too (glibc's malloc_trim; nothing on other C libraries).

The budget check needs a model's memory per request: it is measured once at load, as the growth of the
process's resident memory over a run of the largest warm-up batch or, when the model has dynamic non-batch
dimensions and it is larger, of a longer probe (after a shrink and a heap trim, so that pages the heap kept
are not reused unseen), divided by its input elements. It is an estimate: it assumes memory grows linearly
with the input (true of convolutions and recurrences, not of attention, whose memory grows with the square of
the length), and other threads allocating during the probe make it higher, never lower (model versions load
one at a time for this). Requests no larger than what ran at load are never refused.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from .errors import ResourceExhausted, clip

log = logging.getLogger(__name__)

SHRINK_KEY = "memory.enable_memory_arena_shrinkage"
# A run this many times larger (in input elements) than anything run at load grows the arena beyond what
# ordinary traffic needs: the arena is shrunk when it ends. Shrinking after every run would cost each
# run an allocation of its intermediates.
OUTSIZED_FACTOR = 4
# A dynamic non-batch dimension is probed at this product of lengths (4096 time steps; 64x64 pixels).
PROBE_ELEMENTS_PER_ROW_DIMS = 4096
# ...or the longest length whose run stays under this (ModelVersion._probe_length): no load takes minutes.
PROBE_MAX_S = 2.0
# An instance idle this long after a run that grew its arena is shrunk (serve.batcher). Long enough that a
# stream of batches with pauses between them (a client's think time) does not pay for regrowing it.
IDLE_SHRINK_S = 1.0
# Model versions load one at a time (ModelVersion.load holds it): resident memory is the process's, and a
# probe measured while another model loaded counted that model's memory too (7x the LSTM's estimate).
LOAD_LOCK = threading.Lock()


def resident_bytes() -> int:
    """The process's resident memory (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def trim_heap() -> None:
    """Give the C heap's free pages back to the system (glibc; a no-op elsewhere). Takes milliseconds."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def shrink_options(devices: Sequence[str]) -> ort.RunOptions:
    """RunOptions that shrink these arenas ("cpu:0", "gpu:N") when the run ends."""
    options = ort.RunOptions()
    options.add_run_config_entry(SHRINK_KEY, ";".join(devices))
    return options


def elements_of(feeds: dict[str, np.ndarray]) -> int:
    return sum(array.size for array in feeds.values())


def probe_bytes_per_element(
    session, shrink: ort.RunOptions, small: dict[str, np.ndarray], probes: Sequence[dict[str, np.ndarray]]
) -> tuple[float | None, int]:
    """(resident memory growth per input element over the largest probe that ran, after a shrink, or None
    when nothing could be measured; that probe's input elements). The largest probe, because a small one's
    growth is mostly the arena's granularity. Ends with the arena shrunk."""
    rate, ran = None, elements_of(small)
    for feeds in probes:
        try:
            session.run(None, small, shrink)
            # What the shrink freed stays resident in the C heap, where the probe's run would reuse it
            # unseen (an estimate near 0: no budget at all). Memory other threads' heaps keep can still
            # hide some of the growth.
            trim_heap()
            before = resident_bytes()
            session.run(None, feeds)
            grown = resident_bytes() - before
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types; the probe is optional
            log.debug("memory probe at %s skipped: %s", {k: v.shape for k, v in feeds.items()}, exc)
            continue
        if elements_of(feeds) >= ran:
            ran = elements_of(feeds)
            rate = max(grown, 0) / max(ran, 1) if before else None
    session.run(None, small, shrink)
    return rate, ran


@dataclass(frozen=True)
class MemoryGuard:
    """One model version's memory rules: the budget check at submit, arena shrinkage after outsized runs."""

    model: str
    budget_bytes: int
    """Largest estimated intermediate memory of one request (0 = no limit)."""
    bytes_per_element: float | None
    """Measured at load (an estimate, see the module docstring); None: unknown, nothing is refused."""
    known_elements: int
    """Input elements of the largest run at load: never refused, and no run up to 4x this is outsized."""
    shrink: tuple[ort.RunOptions | None, ...]
    """Per session: the run options that shrink its arenas (None: onnxruntime refused them at load)."""
    small_feeds: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    """The warm-up's batch-1 feeds: an idle arena holds what they need; the idle shrink runs them."""

    def estimate_bytes(self, elements: int) -> float:
        return (self.bytes_per_element or 0.0) * elements

    def check(self, inputs: dict[str, np.ndarray], elements: int) -> None:
        """Raise ResourceExhausted when a request's estimated memory exceeds the budget."""
        if not self.budget_bytes or self.bytes_per_element is None or elements <= self.known_elements:
            return
        estimate = self.estimate_bytes(elements)
        if estimate > self.budget_bytes:
            shapes = clip(", ".join(f"{name} {list(array.shape)}" for name, array in inputs.items()))
            raise ResourceExhausted(
                f"model {self.model}: inputs {shapes} ({elements} elements) would need about "
                f"{_mib(estimate)} of intermediate memory (estimated at load: "
                f"{self.bytes_per_element:.0f} bytes per input element), over the server's budget of "
                f"{_mib(self.budget_bytes)} (--max-request-memory-bytes {self.budget_bytes})"
            )

    def run_options(self, index: int, elements: int) -> ort.RunOptions | None:
        """The shrinking run options for an outsized run on session `index`, else None."""
        return self.shrink[index] if self._outsized(elements) else None

    def _outsized(self, elements: int) -> bool:
        return elements > OUTSIZED_FACTOR * self.known_elements

    def grows_idle_arena(self, index: int, elements: int) -> bool:
        """True when a run of this size leaves session `index`'s arena larger than an idle model's (and
        did not shrink it as it ended): the batcher shrinks it once the instance is idle."""
        if not self.small_feeds or self.shrink[index] is None or self._outsized(elements):
            return False  # nothing to shrink with, or the outsized run shrank the arena as it ended
        return elements > elements_of(self.small_feeds)

    def shrink_idle(self, session, index: int) -> None:
        """Give session `index`'s arena back: one batch-1 run with the shrinking run options, then the
        heap's free pages (blocking)."""
        session.run(None, self.small_feeds, self.shrink[index])
        trim_heap()


def _mib(size: float) -> str:
    return f"{size / 2**20:.0f} MiB" if math.isfinite(size) else "unbounded memory"
