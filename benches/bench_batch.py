"""Many files: 200 x 1 MiB and 8 x 256 MiB, engine at concurrency 1 and 4 against the baseline.

The baseline is the published SDK's algorithm run over the files one after
the other, as a script without a batch API would. Same server, same run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

from benches.conftest import record_throughput
from synapse_sdk.cli.benchmark import baseline_upload, clear_uploads
from synapse_sdk.clients.backend import BackendClient

MIB = 1024 * 1024
SETS = {"200 x 1 MiB": (200, MIB), "8 x 256 MiB": (8, 256 * MIB)}


@pytest.fixture(scope="module", params=list(SETS))
def file_set(request, tmp_path_factory) -> tuple[str, list[Path]]:
    count, size = SETS[request.param]
    directory = tmp_path_factory.mktemp("batch")
    block = os.urandom(min(size, 16 * MIB))
    paths = []
    for i in range(count):
        path = directory / f"f{i:03d}.bin"
        with open(path, "wb") as f:
            for _ in range(size // len(block)):
                f.write(block[:-1] + bytes([i % 256]))  # distinct files: no de-duplication
        paths.append(path)
    return request.param, paths


def _total(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


def test_baseline_sequential(benchmark, file_set, bench_server) -> None:
    name, paths = file_set
    url, token, data_dir = bench_server
    with requests.Session() as session:

        def run() -> None:
            for path in paths:
                baseline_upload(session, url, token, path)

        benchmark.pedantic(run, setup=lambda: clear_uploads(data_dir), rounds=3, iterations=1, warmup_rounds=1)
    record_throughput(f"{name}: baseline (published SDK algorithm)", benchmark, _total(paths))


@pytest.mark.parametrize("concurrency", [1, 4])
def test_engine(benchmark, file_set, bench_server, concurrency: int) -> None:
    name, paths = file_set
    url, token, data_dir = bench_server
    with BackendClient(url, access_token=token, journal=False) as client:

        def run() -> None:
            results = client.upload_files(paths, concurrency=concurrency)
            assert not results["failed"], results["failed"][:3]

        benchmark.pedantic(run, setup=lambda: clear_uploads(data_dir), rounds=3, iterations=1, warmup_rounds=1)
    record_throughput(f"{name}: engine, concurrency {concurrency}", benchmark, _total(paths))
