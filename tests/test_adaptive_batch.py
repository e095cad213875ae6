"""Adaptive concurrency in a real batch: over a shaped 50 ms path it keeps more files in flight; memory caps it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from engine.concurrency import INITIAL_LIMIT
from engine.transport import Transport
from synapse_sdk.clients.backend import BackendClient
from synapse_sdk.clients.backend.batch import BatchProgress, LocalExecutor
from tests.conftest import ALICE, make_file
from tests.faults.shaper import Shaper

pytestmark = pytest.mark.integration

KIB, MIB = 1024, 1024 * 1024


def small_files(root: Path, count: int) -> dict[Path, bytes]:
    return dict(make_file(root, f"f{i:03}.bin", 1000 + i * 311) for i in range(count))


def check_stored(results, files: dict[Path, bytes]) -> None:
    """Every file succeeded, and the server holds its bytes under its MD5."""
    assert not results["failed"] and results["total"] == len(files)
    assert {r["file_path"] for r in results["successful"]} == set(files)
    for entry in results["successful"]:
        data = files[entry["file_path"]]
        assert entry["result"]["checksum"] == hashlib.md5(data).hexdigest()
        assert Path(entry["result"]["file"]).read_bytes() == data


def test_auto_keeps_more_than_four_small_files_in_flight_over_a_long_path(reference_server, tmp_path: Path) -> None:
    files = small_files(tmp_path, 60)
    executor = LocalExecutor()
    seen: list[BatchProgress] = []
    with (
        Shaper(reference_server.base_url, delay=0.025) as shaper,
        BackendClient(shaper.url, access_token=ALICE) as client,
    ):
        assert client.transport.pool_size == 16
        results = client.upload_files([tmp_path], chunk_size=64 * KIB, executor=executor, on_progress=seen.append)
        assert client.transport.pool_size == len(files)  # one per file the batch may have in flight (at most 64)
    check_stored(results, files)
    # The default is "auto": past the fixed 4 files in flight, as the round trip, not the link, bounds the batch.
    assert executor.peak_in_flight > INITIAL_LIMIT
    assert max(len(p.active) for p in seen) > INITIAL_LIMIT


def test_a_number_keeps_the_concurrency_fixed(reference_server, tmp_path: Path) -> None:
    files = small_files(tmp_path, 12)
    executor = LocalExecutor()
    with (
        Shaper(reference_server.base_url, delay=0.025) as shaper,
        BackendClient(shaper.url, access_token=ALICE) as client,
    ):
        results = client.upload_files([tmp_path], concurrency=2, chunk_size=64 * KIB, executor=executor)
        assert client.transport.pool_size == 16  # as before: a fixed concurrency within the pool changes nothing
    check_stored(results, files)
    # Counted by the threads (``BatchProgress.active`` lags: a file leaves it once the batch hears it finished).
    assert 1 <= executor.peak_in_flight <= 2


def test_the_memory_budget_caps_big_files_in_flight(reference_server, tmp_path: Path) -> None:
    files = dict(make_file(tmp_path, f"big{i}.bin", 3 * MIB + i) for i in range(6))
    # Each maps all of its 3 MiB (under two 8 MiB windows): a 7 MiB budget holds two at a time.
    executor = LocalExecutor(memory_budget=7 * MIB)
    seen: list[BatchProgress] = []
    with BackendClient(reference_server.base_url, access_token=ALICE) as client:
        results = client.upload_files([tmp_path], chunk_size=MIB, executor=executor, on_progress=seen.append)
    check_stored(results, files)
    assert 1 <= executor.peak_in_flight <= 2
    assert max(len(p.active) for p in seen) <= 2


def test_a_file_larger_than_the_budget_still_goes(reference_server, tmp_path: Path) -> None:
    files = dict(make_file(tmp_path, f"big{i}.bin", 2 * MIB + i) for i in range(3))
    executor = LocalExecutor(memory_budget=MIB)
    with BackendClient(reference_server.base_url, access_token=ALICE) as client:
        results = client.upload_files([tmp_path], chunk_size=MIB, executor=executor)
    check_stored(results, files)
    assert executor.peak_in_flight == 1


def test_reserve_grows_the_pools_and_never_shrinks_them() -> None:
    transport = Transport()
    assert transport.pool_size == 16
    transport.reserve(8)
    assert transport.pool_size == 16
    transport.reserve(64)
    assert transport.pool_size == 64
    # urllib3 builds a pool (no connection yet) for the next request to a host: it keeps 64 connections for reuse.
    assert transport._direct.connection_from_url("http://127.0.0.1:9/").pool.maxsize == 64
    transport.reserve(32)
    assert transport.pool_size == 64
    transport.close()
