"""The hashing service: 8 threads' MD5 work (each file's and each chunk's) in SIMD lanes, against the same work
done thread by thread with ``digest_windows``, and against one ``hashlib.md5`` pass over the same bytes.

CPU seconds of this process (``time.process_time``), rounds of the three cases in turn; the ratios are what
counts (the machine is shared). Run: ``.venv/bin/python -m pytest benches/bench_hashing_service.py``.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import threading
import time
from collections.abc import Callable

import pytest

import engine
from benches.conftest import record_note
from engine.hashing_service import HashingService

FILES, FILE_BYTES, ROUNDS = 8, 64 << 20, 5
SECTION = "hashing service (8 threads x 64 MiB, chunk + file MD5 each)"


@pytest.fixture(scope="module")
def files() -> list[bytes]:
    return [os.urandom(FILE_BYTES) for _ in range(FILES)]


def _threads(work: Callable[[bytes], object], files: list[bytes]) -> float:
    threads = [threading.Thread(target=work, args=(data,)) for data in files]
    started = time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.process_time() - started


def test_shared_service_against_threads_and_one_core(benchmark, files: list[bytes]) -> None:
    service = HashingService()
    cases: dict[str, Callable[[], float]] = {
        "hashlib.md5, one pass over all bytes": lambda: _threads(lambda d: hashlib.md5(d).digest(), files),
        "digest_windows per thread": lambda: _threads(
            lambda d: engine.digest_windows([d], engine.Md5(), True, False), files
        ),
        "one HashingService": lambda: _threads(lambda d: service.digest_windows([d], engine.Md5(), True, False), files),
    }
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(ROUNDS):
        for name, case in cases.items():
            seconds[name].append(case())
    benchmark.pedantic(cases["one HashingService"], rounds=1, iterations=1)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    reference = median["hashlib.md5, one pass over all bytes"]
    record_note(SECTION, f"kernel {engine.md5_simd()} ({engine.md5_lanes()} lanes)")
    for name, value in median.items():
        record_note(SECTION, f"{name}: {value:.3f} CPU-s, {value / reference:.2f}x hashlib")
    record_note(
        SECTION,
        f"lanes filled per round: {service.streams / max(service.rounds, 1):.1f} in {service.rounds} rounds;"
        f" {service.alone} streams' slices hashed by their callers alone (too few in the service to combine)",
    )
