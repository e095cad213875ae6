"""How many files a batch may have in flight: a latency-gradient limit under a memory budget.

A batch of small files over a long path is bound by round trips, not by
bytes: by Little's law, throughput = files in flight / time per file, so
while the time per file stays near what an idle path gives, more files in
flight means more throughput. Once something saturates (the link, the
server, or this machine's CPU hashing), more files in flight only queue, and
the time per file climbs. ``AdaptiveLimit`` watches exactly that.

The model is the gradient limit of Netflix's concurrency-limits
(``Gradient2Limit``; TCP Vegas compares RTTs in the same way), fed with
finished files instead of requests, once per round of ``limit`` files::

    gradient = clamp(tolerance / recent, 0.5, 1)
    target   = limit * gradient + headroom
    limit    = clamp((1 - smoothing) * limit + smoothing * target, 1, maximum)

Each finished file makes ``1 / limit`` of that step (as TCP grows its window
per acknowledgement), so a round of files moves the limit once, however many
there are, and one slow file cannot halve it.

- ``recent`` is a moving average of the latest files' times, each divided
  by its baseline: the shortest time seen for a file of the same size class
  (sizes within a power of two). A file's time depends on its size (more
  chunks, more requests, more bytes), so a file is only ever compared with
  files like it, whatever the protocol's requests per file.
- With latency within ``tolerance`` of the baseline the gradient is 1 and
  the headroom is the limit itself (a probe for twice as many): smoothed, the
  limit grows by half of itself per round of files, as a slow start. Latency
  above it (queueing) gives no headroom and scales the limit down, by a
  quarter at most per round. The limit grows only while the batch uses at
  least half of it (else nothing tests the larger value: a batch's tail, or
  a memory budget that admits fewer files, must not inflate it).
- Failed files feed no sample: their time says nothing about the path.
- The baseline never forgets within a batch (a fresh ``AdaptiveLimit`` per
  batch). A file resumed from the journal sends only its rest and so looks
  fast: it can lower its class's baseline and make the limit back off for
  that class (never below 1). Its cost is throughput, never correctness.

The memory bound is separate from the limit and never relaxed by it: each
upload maps at most two ``WINDOW``-byte windows of its file, so a file in
flight holds ``mapped_bytes(size)``; a file starts only while those of all
files in flight stay within ``memory_budget`` (a single file always may
start, whatever its size, or a batch of huge files would never move).

This module only computes: it opens no socket, starts no thread, reads no
clock. The caller passes the time, so the same samples give the same
limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from engine.source import WINDOW

__all__ = [
    "INITIAL_LIMIT",
    "MAX_IN_FLIGHT",
    "MEMORY_BUDGET",
    "AdaptiveLimit",
    "Flight",
    "mapped_bytes",
    "size_class",
]

#: Files in flight at the start: enough for the batch's hashing service to fill the 16 SIMD lanes of
#: AVX-512 (each file hashes two streams, its own MD5 and its chunk's) before the limit has a sample.
#: A batch of 8 big files would otherwise end before the limit first grows (BENCHMARKS.md, target 8).
INITIAL_LIMIT: Final = 8
#: Files in flight at most, however good the path looks (one thread and one connection each).
MAX_IN_FLIGHT: Final = 64
#: Bytes the files in flight may hold mapped at once: 16 files of two 8 MiB windows.
MEMORY_BUDGET: Final = 256 * 1024 * 1024
#: Times within this factor of the baseline count as "no queueing" (the limit settles about there).
TOLERANCE: Final = 1.5
#: Weight of a new target in the limit, and of a new sample in ``recent``.
SMOOTHING: Final = 0.5
#: Files below this size share one size class (their time is round trips, not bytes).
SMALLEST_CLASS: Final = 64 * 1024


def mapped_bytes(size: int) -> int:
    """Bytes an upload of a ``size``-byte file maps at most at once: two windows, or the whole file if smaller."""
    return min(size, 2 * WINDOW)


def size_class(size: int) -> int:
    """Files whose times compare: sizes within the same power of two (all below ``SMALLEST_CLASS`` together)."""
    return max(size, SMALLEST_CLASS).bit_length()


@dataclass(frozen=True)
class Flight:
    """One file in flight: its size and when it started (by the caller's clock)."""

    size: int
    started_at: float


class AdaptiveLimit:
    """Admits files to a batch: the gradient limit and the memory budget (see the module).

    ``can_start(size)`` says whether a file of ``size`` bytes may start now;
    ``started(size, now)`` records it and returns its ``Flight``;
    ``finished(flight, now, ok=...)`` releases it and, if it succeeded, feeds
    its time to the limit. Not thread-safe: one scheduler thread drives it.
    """

    def __init__(
        self,
        *,
        initial: int = INITIAL_LIMIT,
        maximum: int = MAX_IN_FLIGHT,
        memory_budget: int = MEMORY_BUDGET,
        tolerance: float = TOLERANCE,
        smoothing: float = SMOOTHING,
    ) -> None:
        if not 1 <= initial <= maximum:
            raise ValueError(f"need 1 <= initial <= maximum files in flight, not initial={initial}, maximum={maximum}")
        if memory_budget < 1:
            raise ValueError(f"memory_budget must be a positive number of bytes, not {memory_budget}")
        if tolerance < 1:
            raise ValueError(f"tolerance must be at least 1 (a factor over the baseline), not {tolerance}")
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], not {smoothing}")
        self.maximum = maximum
        self.memory_budget = memory_budget
        self.tolerance = tolerance
        self.smoothing = smoothing
        self._limit = float(initial)
        self._baselines: dict[int, float] = {}
        self._recent: float | None = None  # moving average of time / baseline
        self.in_flight = 0
        self.mapped = 0
        #: The most files that were in flight at once.
        self.peak_in_flight = 0

    @property
    def limit(self) -> int:
        """Files that may be in flight now (memory permitting)."""
        return max(1, min(self.maximum, int(self._limit)))

    def can_start(self, size: int) -> bool:
        """Whether a file of ``size`` bytes may start: under the limit, and within the memory budget."""
        if self.in_flight >= self.limit:
            return False
        return self.in_flight == 0 or self.mapped + mapped_bytes(size) <= self.memory_budget

    def started(self, size: int, now: float) -> Flight:
        """A file of ``size`` bytes started at ``now`` (the caller checked ``can_start``)."""
        self.in_flight += 1
        self.mapped += mapped_bytes(size)
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        return Flight(size, now)

    def finished(self, flight: Flight, now: float, *, ok: bool = True) -> None:
        """``flight`` ended at ``now``; a success (``ok``) is a sample for the limit."""
        if self.in_flight < 1:
            raise ValueError("finished() without a file in flight")
        busy = self.in_flight  # how many were in flight while this one ran (about)
        self.in_flight -= 1
        self.mapped -= mapped_bytes(flight.size)
        if ok:
            self._sample(max(now - flight.started_at, 0.0), flight.size, busy)

    def _sample(self, seconds: float, size: int, busy: int) -> None:
        key = size_class(size)
        baseline = min(self._baselines.get(key, seconds), seconds)
        self._baselines[key] = baseline
        # A zero baseline (a clock too coarse for a tiny file) makes every ratio 1: no evidence of queueing.
        ratio = seconds / baseline if baseline > 0 else 1.0
        recent = ratio if self._recent is None else (1 - self.smoothing) * self._recent + self.smoothing * ratio
        self._recent = recent
        gradient = max(0.5, min(1.0, self.tolerance / recent))
        limit = self._limit
        headroom = limit if gradient == 1.0 and 2 * busy >= self.limit else 0.0
        target = limit * gradient + headroom
        step = self.smoothing * (target - limit)  # a round's step; this file is 1/limit of the round
        self._limit = max(1.0, min(float(self.maximum), limit + step / limit))
