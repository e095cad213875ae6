"""The Ray executor's overhead on one machine: 8 x 64 MiB + 50 small files, local threads vs Ray actors.

One machine cannot show Ray's speed-up (more NICs, disks and cores); it
shows what Ray costs: starting the worker actors each batch, the driver's
polling, and the results crossing processes. The local executor, uploading
the same files to the same server in the same run, is the baseline. Ray
starts once (2 CPUs, like CI); its start-up is noted apart, not in the rounds.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import ray

from benches.conftest import THROUGHPUT, record_note, record_throughput
from synapse_sdk.cli.benchmark import clear_uploads
from synapse_sdk.clients.backend import BackendClient, RayExecutor

MIB = 1024 * 1024
NAME = "8 x 64 MiB + 50 small"
CASES = {
    "local executor, concurrency 4": (None, 4),
    "Ray, 1 worker (one per node) x concurrency 4": (1, 4),
    "Ray, 2 workers x concurrency 2": (2, 2),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[Path]:
    directory = tmp_path_factory.mktemp("ray-bench")
    paths = []
    for i in range(8):
        path = directory / f"big{i}.bin"
        with open(path, "wb") as f:
            for _ in range(4):
                f.write(os.urandom(16 * MIB))
        paths.append(path)
    for i in range(50):
        path = directory / f"small{i:02d}.bin"
        path.write_bytes(os.urandom(1000 + i * 997))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def local_ray():
    started = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=128 * MIB,
    )
    seconds = time.perf_counter() - started
    record_note("Ray executor overhead", f"ray.init (a local Ray, once, not in the rounds): {seconds:.2f} s")
    yield
    ray.shutdown()


@pytest.mark.parametrize("case", list(CASES))
def test_executor(benchmark, files, bench_server, local_ray, case: str) -> None:
    workers, concurrency = CASES[case]
    url, token, data_dir = bench_server
    executor = None if workers is None else RayExecutor(workers=workers)
    with BackendClient(url, access_token=token, journal=False) as client:

        def run() -> None:
            results = client.upload_files(files, concurrency=concurrency, executor=executor)
            assert not results["failed"] and len(results["successful"]) == len(files), results["failed"][:3]

        benchmark.pedantic(run, setup=lambda: clear_uploads(data_dir), rounds=3, iterations=1, warmup_rounds=1)
    record_throughput(f"{NAME}: {case}", benchmark, sum(p.stat().st_size for p in files))
    local = THROUGHPUT.get(f"{NAME}: local executor, concurrency 4")
    if workers is not None and local:
        size = sum(p.stat().st_size for p in files)
        seconds, local_seconds = size / THROUGHPUT[f"{NAME}: {case}"] / 1e6, size / local / 1e6
        record_note(
            "Ray executor overhead",
            f"{case}: {seconds:.2f} s vs local {local_seconds:.2f} s (median),"
            f" {seconds - local_seconds:+.2f} s, x{seconds / local_seconds:.2f}",
        )
