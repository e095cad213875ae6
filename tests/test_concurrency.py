"""The adaptive limit of files in flight, driven by synthetic samples and a simulated path (no sockets, no clock)."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable

import pytest

from engine.concurrency import (
    INITIAL_LIMIT,
    MAX_IN_FLIGHT,
    MEMORY_BUDGET,
    AdaptiveLimit,
    mapped_bytes,
    size_class,
)
from engine.source import WINDOW

pytestmark = pytest.mark.unit

KIB, MIB = 1024, 1024 * 1024
RTT = 0.05


def simulate(limit: AdaptiveLimit, sizes: list[int], seconds: Callable[[int, int], float]) -> list[int]:
    """Run a batch on a simulated path (``seconds(size, in_flight)``: a file's time); the limit after each file.

    Files start in order whenever the limit admits them; the earliest to end
    finishes next, and the clock jumps to it.
    """
    now = 0.0
    waiting = deque(sizes)
    flying: list[tuple[float, int, object]] = []
    limits = []
    sequence = 0
    while waiting or flying:
        while waiting and limit.can_start(waiting[0]):
            size = waiting.popleft()
            flight = limit.started(size, now)
            sequence += 1
            heapq.heappush(flying, (now + seconds(size, limit.in_flight), sequence, flight))
        now, _, flight = heapq.heappop(flying)
        limit.finished(flight, now)  # type: ignore[arg-type]
        limits.append(limit.limit)
    return limits


def round_trips(size: int, in_flight: int) -> float:
    """A path where nothing saturates: a file takes three round trips, however many are in flight."""
    return 3 * RTT


def saturating_at(capacity: int) -> Callable[[int, int], float]:
    """A path that serves ``capacity`` files at once; past that they queue (time grows with files in flight)."""
    return lambda size, in_flight: 3 * RTT * max(1.0, in_flight / capacity)


def test_it_starts_at_eight() -> None:
    assert AdaptiveLimit().limit == INITIAL_LIMIT == 8


def test_flat_latency_grows_to_the_maximum_and_never_past_it() -> None:
    limit = AdaptiveLimit()
    limits = simulate(limit, [256 * KIB] * 500, round_trips)
    assert limits[0] >= INITIAL_LIMIT
    assert limits == sorted(limits)  # never shrinks while nothing queues
    assert max(limits) == MAX_IN_FLIGHT
    assert limit.peak_in_flight == MAX_IN_FLIGHT
    assert limit.in_flight == 0 and limit.mapped == 0


def test_a_saturated_path_keeps_the_limit_near_its_capacity() -> None:
    limit = AdaptiveLimit()
    limits = simulate(limit, [256 * KIB] * 2000, saturating_at(12))
    # It probed above its start, and settled where time per file stays within the tolerance (1.5x) of the idle one.
    assert max(limits) > INITIAL_LIMIT
    assert 12 <= limits[-1] <= 1.5 * 12 + 2
    assert limit.peak_in_flight < MAX_IN_FLIGHT


def a_round(limit: AdaptiveLimit, now: float, seconds: float, size: int = KIB) -> float:
    """``limit.limit`` files start at ``now`` and all finish ``seconds`` later; returns that time."""
    flights = [limit.started(size, now) for _ in range(limit.limit)]
    for flight in flights:
        limit.finished(flight, now + seconds)
    return now + seconds


def test_rising_latency_backs_off_and_flat_latency_recovers() -> None:
    limit = AdaptiveLimit()
    now = 0.0
    for _ in range(20):  # idle path: grows
        now = a_round(limit, now, RTT)
    grown = limit.limit
    assert grown == MAX_IN_FLIGHT

    shrinking = []
    for factor in (3, 4, 6, 8, 8, 8, 8, 8):  # queueing: each round takes longer
        now = a_round(limit, now, factor * RTT)
        shrinking.append(limit.limit)
    assert shrinking == sorted(shrinking, reverse=True) and shrinking[-1] < grown / 4

    low = limit.limit
    for _ in range(5):  # the queue drains: back to the idle time
        now = a_round(limit, now, RTT)
    assert limit.limit > 2 * low


def test_one_slow_file_does_not_halve_the_limit() -> None:
    limit = AdaptiveLimit()
    now = 0.0
    for _ in range(20):
        now = a_round(limit, now, RTT)
    flight = limit.started(KIB, now)
    limit.finished(flight, now + 10 * RTT)
    assert limit.limit >= MAX_IN_FLIGHT - 1


def test_it_never_goes_below_one() -> None:
    limit = AdaptiveLimit()
    flight = limit.started(KIB, 0.0)
    limit.finished(flight, RTT)
    for i in range(100):
        flight = limit.started(KIB, float(i))
        limit.finished(flight, float(i) + 1000 * RTT)
    assert limit.limit == 1
    assert limit.can_start(KIB)


def test_it_grows_only_while_the_batch_uses_it() -> None:
    limit = AdaptiveLimit()
    for i in range(50):  # one file at a time, on an idle path: a limit of 4 is not the constraint
        flight = limit.started(KIB, float(i))
        limit.finished(flight, float(i) + RTT)
    assert limit.limit == INITIAL_LIMIT


def test_bigger_files_are_compared_with_files_like_them() -> None:
    limit = AdaptiveLimit()
    now = 0.0
    for size, seconds in [(KIB, RTT), (64 * MIB, 40 * RTT)] * 5:  # big files take longer: their bytes, not a queue
        now = a_round(limit, now, seconds, size)
    assert limit.limit > INITIAL_LIMIT * 4
    assert size_class(KIB) == size_class(60 * KIB) != size_class(64 * MIB)


def test_failures_feed_no_sample() -> None:
    limit = AdaptiveLimit()
    first = limit.started(KIB, 0.0)
    limit.finished(first, RTT)
    before = limit.limit
    flights = [limit.started(KIB, 1.0) for _ in range(limit.limit)]
    for flight in flights:
        limit.finished(flight, 1.0 + 100 * RTT, ok=False)  # timeouts: no evidence about the path
    assert limit.limit == before and limit.in_flight == 0 and limit.mapped == 0


def test_the_memory_budget_caps_big_files_in_flight() -> None:
    assert mapped_bytes(KIB) == KIB and mapped_bytes(100 * MIB) == 2 * WINDOW == 16 * MIB
    limit = AdaptiveLimit(initial=64, maximum=64)
    started = 0
    while limit.can_start(100 * MIB):
        limit.started(100 * MIB, 0.0)
        started += 1
    assert started == MEMORY_BUDGET // (2 * WINDOW) == 16
    assert limit.mapped == MEMORY_BUDGET
    assert not limit.can_start(KIB)  # the budget is full: even a small file waits


def test_one_file_larger_than_the_budget_still_starts_alone() -> None:
    limit = AdaptiveLimit(memory_budget=MIB)
    assert limit.can_start(50 * MIB)
    flight = limit.started(50 * MIB, 0.0)
    assert not limit.can_start(50 * MIB) and not limit.can_start(KIB)
    limit.finished(flight, 1.0)
    assert limit.can_start(50 * MIB)


def test_the_budget_holds_while_the_limit_adapts() -> None:
    limit = AdaptiveLimit(memory_budget=64 * MIB)
    simulate(limit, [20 * MIB] * 100, round_trips)
    assert limit.peak_in_flight == 64 * MIB // mapped_bytes(20 * MIB) == 4


def test_finishing_nothing_is_an_error_and_changes_nothing() -> None:
    limit = AdaptiveLimit()
    flight = limit.started(KIB, 0.0)
    limit.finished(flight, 1.0)
    with pytest.raises(ValueError, match="without a file in flight"):
        limit.finished(flight, 2.0)
    assert limit.in_flight == 0 and limit.mapped == 0 and limit.limit == INITIAL_LIMIT


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"initial": 0}, "initial <= maximum"),
        ({"initial": 8, "maximum": 4}, "initial <= maximum"),
        ({"memory_budget": 0}, "memory_budget"),
        ({"tolerance": 0.5}, "tolerance"),
        ({"smoothing": 0}, "smoothing"),
    ],
)
def test_bad_settings(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AdaptiveLimit(**options)  # type: ignore[arg-type]


def test_same_samples_same_limits() -> None:
    runs = [simulate(AdaptiveLimit(), [KIB * (1 + i % 300) for i in range(300)], saturating_at(9)) for _ in range(2)]
    assert runs[0] == runs[1]
